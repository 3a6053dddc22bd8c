//! What a chaos run records: every operation with when it was invoked and completed (one
//! clock, the runner's, in milliseconds since the run started) and its typed outcome; every
//! write the fenced resource saw; every fault with the clients it touched.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// How long before its `member unreachable` line was read a declaration may already have
/// been acted on (the line and the release race).
pub const DECLARATION_LEAD_MS: u64 = 500;

/// What a client was asked to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Register a fresh local process under `name` in the Consistent scope.
    Register {
        /// The name.
        name: String,
    },
    /// Release `name` if a process of the client holds it.
    Unregister {
        /// The name.
        name: String,
    },
    /// Resolve `name` on the client (its local view of the registry).
    Read {
        /// The name.
        name: String,
    },
    /// Resolve `name` linearizably (`Node::whereis_consistent`): checked against the model
    /// like any write.
    ReadConsistent {
        /// The name.
        name: String,
    },
    /// Take the consensus lock `name`, write twice to the fenced resource with the token,
    /// `hold_ms` apart, and unlock.
    Lock {
        /// The lock.
        name: String,
        /// How long to hold it between the two writes.
        hold_ms: u64,
    },
    /// Add a fresh local process to the Eventual group `group`.
    Join {
        /// The group.
        group: String,
    },
    /// Set `key` of the replicated key-value store on grains (`atoll_cli::kv`) to `value`
    /// (unique in the run), reading the value it replaces.
    KvSet {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Read `key` of the key-value store.
    KvGet {
        /// The key.
        key: String,
    },
}

impl Request {
    /// The name, lock or group the request is about.
    pub fn key(&self) -> &str {
        match self {
            Request::Register { name }
            | Request::Unregister { name }
            | Request::Read { name }
            | Request::ReadConsistent { name }
            | Request::Lock { name, .. } => name,
            Request::Join { group } => group,
            Request::KvSet { key, .. } | Request::KvGet { key } => key,
        }
    }

    /// A short word for summaries.
    pub fn label(&self) -> &'static str {
        match self {
            Request::Register { .. } => "register",
            Request::Unregister { .. } => "unregister",
            Request::Read { .. } => "read",
            Request::ReadConsistent { .. } => "read_consistent",
            Request::Lock { .. } => "lock",
            Request::Join { .. } => "join",
            Request::KvSet { .. } => "kv_set",
            Request::KvGet { .. } => "kv_get",
        }
    }
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// The registration committed.
    Registered,
    /// The name was held by `owner`; nothing changed.
    Taken {
        /// The holder.
        owner: String,
    },
    /// The unregistration ran: `pid` is the local process that held the name, if any.
    Unregistered {
        /// The process that lost the name.
        pid: Option<String>,
    },
    /// What the client's view resolved the name to.
    Found {
        /// The holder, if any.
        pid: Option<String>,
    },
    /// The lock was granted with `token`, held and released.
    Locked {
        /// The fencing token.
        token: u64,
    },
    /// The process joined the group.
    Joined,
    /// The key-value write was saved on two nodes; `previous` is the value it replaced.
    Stored {
        /// The value before.
        previous: Option<String>,
    },
    /// What a key-value read found.
    Value {
        /// The value, if the key is set.
        value: Option<String>,
    },
    /// A typed error (`Consensus::Timeout`, `Timeout`, `Unlock::Consensus::NoLeader`...):
    /// the operation may or may not have taken effect.
    Failed {
        /// The error's variant path.
        kind: String,
    },
}

impl Outcome {
    /// Whether the operation succeeded (a `Taken` answer or a `None` unregistration counts:
    /// the registry answered).
    pub fn is_ok(&self) -> bool {
        !matches!(self, Outcome::Failed { .. })
    }
}

/// A lock grant as the holder saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    /// The fencing token granted.
    pub token: u64,
    /// When the grant reached the runner.
    pub granted_ms: u64,
    /// When the holder started to unlock, once it did.
    pub unlock_ms: Option<u64>,
    /// Whether the unlock succeeded, once it finished.
    pub unlocked: Option<bool>,
}

/// One operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// Unique in the run.
    pub id: u64,
    /// The client (1-based, co-located with node `client`).
    pub client: usize,
    /// Which process of that client: 0 for the first, one more after each kill
    /// ([`client_name`]).
    #[serde(default)]
    pub incarnation: u32,
    /// What was asked.
    pub request: Request,
    /// The process the client acted for (registered, locked, joined), when it made one.
    pub pid: Option<String>,
    /// When the request was sent.
    pub invoke_ms: u64,
    /// When the answer arrived; `None` while pending.
    pub complete_ms: Option<u64>,
    /// The answer.
    pub outcome: Option<Outcome>,
    /// For a lock request that was granted: the grant.
    pub hold: Option<Hold>,
}

/// A write offered to the fenced resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Write {
    /// When it arrived.
    pub at_ms: u64,
    /// The lock operation that wrote.
    pub op: u64,
    /// The lock (one resource per lock).
    pub lock: String,
    /// The token it carried.
    pub token: u64,
    /// Whether the resource accepted it.
    pub accepted: bool,
}

/// One fault the nemesis injected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// Its kind (`kill9`, `pause-leader`, `partition-leader-minority`...).
    pub kind: String,
    /// What exactly was done, for the report.
    pub detail: String,
    /// The clients whose network or process it touched: their names and locks may be
    /// released by the cluster (their node declared unreachable) during the window.
    pub clients: BTreeSet<usize>,
    /// Whether it stopped client processes (their operations may take as long as it lasts).
    pub paused_clients: BTreeSet<usize>,
    /// The nodes it stopped: what they report about others they may report late, after
    /// the fault (histories written before this field read as none).
    #[serde(default)]
    pub paused_nodes: BTreeSet<usize>,
    /// When it began.
    pub start_ms: u64,
    /// When it was healed.
    pub end_ms: u64,
}

/// A node's membership declared a client's node unreachable (its `member unreachable cI`
/// line): from then the Raft leader may release what that client held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Declaration {
    /// When the line was read.
    pub at_ms: u64,
    /// The node that printed it.
    pub by: String,
    /// The client declared.
    pub client: usize,
    /// Which of its processes ([`client_name`]).
    #[serde(default)]
    pub incarnation: u32,
}

/// A client process the nemesis killed (SIGKILL): its operations then in flight never
/// complete, and each may or may not have taken effect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kill {
    /// The client.
    pub client: usize,
    /// The process killed.
    pub incarnation: u32,
    /// When (just before the signal).
    pub at_ms: u64,
}

/// The node name of incarnation `incarnation` of client `client`: `c3` first, then `c3-1`,
/// `c3-2`... Each is a node of its own (its own key, so its own node id).
pub fn client_name(client: usize, incarnation: u32) -> String {
    match incarnation {
        0 => format!("c{client}"),
        k => format!("c{client}-{k}"),
    }
}

/// The client and incarnation a node name of [`client_name`]'s form names.
pub fn parse_client_name(name: &str) -> Option<(usize, u32)> {
    let rest = name.strip_prefix('c')?;
    match rest.split_once('-') {
        None => Some((rest.parse().ok()?, 0)),
        Some((c, k)) => Some((c.parse().ok()?, k.parse().ok()?)),
    }
}

/// What one client resolves after the final heal.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The client.
    pub client: usize,
    /// When it answered.
    pub at_ms: u64,
    /// Each name asked about, and its holder in the client's view.
    pub names: BTreeMap<String, Option<String>>,
    /// Each group asked about, and its members in the client's view.
    pub groups: BTreeMap<String, BTreeSet<String>>,
}

/// A whole run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// Every operation, in invocation order.
    pub ops: Vec<Op>,
    /// Every write the fenced resource saw, in arrival order.
    pub writes: Vec<Write>,
    /// Every fault, in order.
    pub faults: Vec<Fault>,
    /// Every time a node declared a client unreachable, in order.
    pub declarations: Vec<Declaration>,
    /// Every client process the nemesis killed, in order.
    #[serde(default)]
    pub kills: Vec<Kill>,
    /// When the workload stopped starting operations, just after the last fault's end (0 in
    /// histories saved before this was recorded).
    #[serde(default)]
    pub stopped_ms: u64,
    /// When the last fault was healed (and every node was running again).
    pub healed_ms: u64,
    /// Rounds of snapshots (one per client each) taken after the heal, in order.
    pub snapshots: Vec<Vec<Snapshot>>,
}

impl History {
    /// Where the workload's figures end: when it stopped starting operations (or, for a
    /// history without that time, the final heal). After it nothing is tried, so nothing
    /// can show the cluster available.
    pub fn workload_end_ms(&self) -> u64 {
        match self.stopped_ms {
            0 => self.healed_ms,
            stopped => stopped,
        }
    }

    /// Whether some node declared incarnation `incarnation` of client `c` unreachable at a time that lets the cluster
    /// release what `c` held during `[from, to]`: from `grace_ms` before `from` (a
    /// declaration acted on late) to [`DECLARATION_LEAD_MS`] after `to` (a release applied
    /// before its line was read).
    pub fn touched(&self, c: usize, incarnation: u32, from: u64, to: u64, grace_ms: u64) -> bool {
        self.declarations.iter().any(|d| {
            d.client == c
                && d.incarnation == incarnation
                && d.at_ms + grace_ms >= from
                && d.at_ms <= to + DECLARATION_LEAD_MS
        })
    }

    /// When incarnation `incarnation` of client `c` was killed, if it was.
    pub fn killed(&self, c: usize, incarnation: u32) -> Option<u64> {
        self.kills
            .iter()
            .find(|k| k.client == c && k.incarnation == incarnation)
            .map(|k| k.at_ms)
    }

    /// Whether client `c` was stopped (SIGSTOP) at some time in `[from, to]`.
    pub fn paused(&self, c: usize, from: u64, to: u64) -> bool {
        self.faults
            .iter()
            .any(|f| f.paused_clients.contains(&c) && f.start_ms <= to && f.end_ms >= from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_names_round_trip() {
        for (c, k) in [(1, 0), (3, 1), (5, 12)] {
            assert_eq!(parse_client_name(&client_name(c, k)), Some((c, k)));
        }
        assert_eq!(client_name(2, 0), "c2");
        assert_eq!(client_name(2, 3), "c2-3");
        assert_eq!(parse_client_name("n2"), None);
        assert_eq!(parse_client_name("c2-x"), None);
    }
}
