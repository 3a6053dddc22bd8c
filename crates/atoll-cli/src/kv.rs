//! A replicated key-value store on grains: get, set, delete and range over keys.
//!
//! Keys are spread over [`SHARDS`] shards by hash; each shard is one [`KvShard`] grain
//! whose state (its keys and values) is `Replicated`: a change is saved in the host's
//! redb store and [`crate::grains::REPLICAS`] other node's before the caller hears of it.
//! When the host is lost, the next call reactivates the shard on a survivor, which restores
//! the freshest copy: every acknowledged write is still there. A range asks every shard.
//!
//! A read (get or range) is answered only by an activation that has just confirmed through
//! consensus that it still holds its shard ([`KvError::Unconfirmed`] otherwise): one left
//! on a node cut off from the majority, which gave the shard to a new activation, does not
//! answer from its outdated memory.

use atoll_grain::{GrainError, Grains};

use crate::grains::{KvMsg, KvReply, KvShard};

/// Shards the keys are spread over.
pub const SHARDS: usize = 8;

/// A key-value operation that did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// The shard could not be reached or did not answer.
    #[error("shard {shard}: {source}")]
    Grain {
        /// The shard.
        shard: usize,
        /// What went wrong.
        source: GrainError,
    },
    /// The shard took the write but could not save it: it is not acknowledged.
    #[error("shard {shard} did not save the write: {reason}")]
    NotSaved {
        /// The shard.
        shard: usize,
        /// Why.
        reason: String,
    },
    /// The shard's activation could not confirm it still holds the shard (cut off from the
    /// majority, or deposed by a newer activation): the read was not answered.
    #[error("shard {shard} did not answer the read: {reason}")]
    Unconfirmed {
        /// The shard.
        shard: usize,
        /// Why.
        reason: String,
    },
    /// The shard answered something else than asked.
    #[error("shard {0} answered out of turn")]
    Protocol(usize),
}

/// A handle on the store, for any node with a grain service (hosting or only calling).
#[derive(Debug, Clone)]
pub struct KvStore {
    grains: Grains,
}

/// The shard of `key` (FNV-1a, so every process agrees).
pub fn shard_of(key: &str) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % SHARDS as u64) as usize
}

/// A write's id: random per process, then counted, so ids from any two callers differ
/// (with overwhelming probability) and a shard can tell a resend from a new write.
fn request_id() -> u64 {
    use std::hash::BuildHasher;
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static BASE: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let base = *BASE.get_or_init(|| std::collections::hash_map::RandomState::new().hash_one(0u8));
    base.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed))
}

impl KvStore {
    /// The store, through `grains`.
    pub fn new(grains: Grains) -> Self {
        KvStore { grains }
    }

    async fn ask(&self, shard: usize, msg: KvMsg) -> Result<KvReply, KvError> {
        let grain = self
            .grains
            .get::<KvShard>(&shard.to_string())
            .map_err(|source| KvError::Grain { shard, source })?;
        match grain.call(msg).await {
            Ok(KvReply::NotSaved(reason)) => Err(KvError::NotSaved { shard, reason }),
            Ok(KvReply::Unconfirmed(reason)) => Err(KvError::Unconfirmed { shard, reason }),
            Ok(reply) => Ok(reply),
            Err(source) => Err(KvError::Grain { shard, source }),
        }
    }

    async fn write(&self, key: &str, msg: KvMsg) -> Result<Option<String>, KvError> {
        let shard = shard_of(key);
        match self.ask(shard, msg).await? {
            KvReply::Done(before) => Ok(before),
            _ => Err(KvError::Protocol(shard)),
        }
    }

    /// Sets `key` to `value`, returning the value before; returns once the change is saved
    /// on two nodes.
    pub async fn set(&self, key: &str, value: &str) -> Result<Option<String>, KvError> {
        let msg = KvMsg::Set {
            request: request_id(),
            key: key.into(),
            value: value.into(),
        };
        self.write(key, msg).await
    }

    /// Deletes `key`, returning its value; returns once the change is saved on two nodes.
    pub async fn delete(&self, key: &str) -> Result<Option<String>, KvError> {
        let msg = KvMsg::Delete {
            request: request_id(),
            key: key.into(),
        };
        self.write(key, msg).await
    }

    /// The value of `key`.
    pub async fn get(&self, key: &str) -> Result<Option<String>, KvError> {
        let shard = shard_of(key);
        match self.ask(shard, KvMsg::Get(key.into())).await? {
            KvReply::Value(v) => Ok(v),
            _ => Err(KvError::Protocol(shard)),
        }
    }

    /// The keys in `[from, to)` (to the end when `to` is `None`), in order, at most `limit`,
    /// with their values.
    pub async fn range(
        &self,
        from: &str,
        to: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, String)>, KvError> {
        let mut set = tokio::task::JoinSet::new();
        for shard in 0..SHARDS {
            let kv = self.clone();
            let msg = KvMsg::Range {
                from: from.to_string(),
                to: to.map(str::to_string),
                limit,
            };
            set.spawn(async move { (shard, kv.ask(shard, msg).await) });
        }
        let mut all = Vec::new();
        while let Some(joined) = set.join_next().await {
            let (shard, answer) = joined.map_err(|_| KvError::Protocol(usize::MAX))?;
            match answer? {
                KvReply::Entries(entries) => all.extend(entries),
                _ => return Err(KvError::Protocol(shard)),
            }
        }
        all.sort();
        all.truncate(limit);
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_spread_over_every_shard() {
        let mut seen = [0usize; SHARDS];
        for i in 0..1000 {
            seen[shard_of(&format!("key-{i}"))] += 1;
        }
        assert!(seen.iter().all(|n| *n > 50), "{seen:?}");
        assert_eq!(shard_of("apple"), shard_of("apple"));
    }
}
