//! What the runner and a client process say to each other: one JSON object per line, the
//! runner's on the client's stdin, the client's on its stdout.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::history::{Outcome, Request};

/// Runner to client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "to", rename_all = "snake_case")]
pub enum ToClient {
    /// Do `request`; answer with events about `id`.
    Op {
        /// The operation.
        id: u64,
        /// What to do.
        request: Request,
    },
    /// Migrate these shards of the key-value store to node `target`, one after another.
    Migrate {
        /// The shards (`KvShard` grain keys).
        shards: Vec<usize>,
        /// The target node's name.
        target: String,
    },
    /// Resolve these names and groups locally.
    Snapshot {
        /// Names to resolve.
        names: Vec<String>,
        /// Groups to list.
        groups: Vec<String>,
    },
}

/// Client to runner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "snake_case")]
pub enum FromClient {
    /// The client's node runs.
    Ready {
        /// Its name.
        name: String,
    },
    /// Operation `id` acts for the fresh process `pid`.
    Spawned {
        /// The operation.
        id: u64,
        /// The process.
        pid: String,
    },
    /// Lock operation `id` was granted `token`.
    Granted {
        /// The operation.
        id: u64,
        /// The fencing token.
        token: u64,
        /// When the client learned it, in µs since the Unix epoch (every process of a run
        /// shares the machine's clock; the runner reads each client's lines when it gets to
        /// them, which may be later).
        at_us: u64,
    },
    /// Lock operation `id` writes to the fenced resource of `lock` with `token`.
    Write {
        /// The operation.
        id: u64,
        /// The lock.
        lock: String,
        /// The token.
        token: u64,
    },
    /// Lock operation `id` starts to unlock.
    Unlocking {
        /// The operation.
        id: u64,
        /// When, in µs since the Unix epoch.
        at_us: u64,
    },
    /// Operation `id` finished.
    Done {
        /// The operation.
        id: u64,
        /// How.
        outcome: Outcome,
        /// For a granted lock: whether the unlock succeeded.
        unlocked: Option<bool>,
    },
    /// The outcome of each migration asked: `moved`, or the error's kind.
    Migrated {
        /// One per shard, in order.
        results: Vec<String>,
    },
    /// The answer to a snapshot request.
    Snapshot {
        /// Each name's holder.
        names: BTreeMap<String, Option<String>>,
        /// Each group's members.
        groups: BTreeMap<String, BTreeSet<String>>,
    },
}

/// The variant path of a typed error, from its `Debug` form:
/// `Consensus(Unreachable { leader: .. })` is `Consensus::Unreachable`.
pub fn kind(e: &impl std::fmt::Debug) -> String {
    let text = format!("{e:?}");
    let mut parts = Vec::new();
    let mut rest = text.as_str();
    loop {
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let word = &rest[..end];
        if !word.starts_with(char::is_uppercase) {
            break;
        }
        parts.push(word);
        match rest[end..].strip_prefix('(') {
            Some(inner) => rest = inner,
            None => break,
        }
    }
    parts.join("::")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    #[allow(dead_code)]
    enum Inner {
        Unreachable { leader: u32 },
        Timeout,
    }

    #[derive(Debug)]
    #[allow(dead_code)]
    enum Outer {
        Consensus(Inner),
    }

    #[test]
    fn kinds_are_variant_paths() {
        let e = Outer::Consensus(Inner::Unreachable { leader: 3 });
        assert_eq!(kind(&e), "Consensus::Unreachable");
        assert_eq!(
            kind(&Outer::Consensus(Inner::Timeout)),
            "Consensus::Timeout"
        );
    }

    #[test]
    fn messages_survive_a_round_trip() {
        let m = ToClient::Op {
            id: 7,
            request: Request::Lock {
                name: "l".into(),
                hold_ms: 20,
            },
        };
        let line = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<ToClient>(&line).unwrap(), m);
    }
}
