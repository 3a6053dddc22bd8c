//! A replicated key-value store on grains: get, set, delete and range over keys.
//!
//! Keys are spread over [`SHARDS`] shards by hash; each shard is kept by [`REPLICAS`]
//! [`KvShard`] grains (`SHARD/0`, `SHARD/1`, …) that [`GrainPlacement`] puts on distinct
//! nodes, each saving its state in its node's redb store before it answers. A write goes to
//! every replica of its shard and is acknowledged once all of them saved it; a replica whose
//! node is lost is reactivated elsewhere (empty) by the next call that reaches it, once
//! membership has declared the node lost. A read asks every replica and takes the newest
//! version (the survivors hold every acknowledged write), and writes that version back to a
//! replica that answered an older one (read repair), so a reactivated replica catches up.
//!
//! Versions are the writer's clock in microseconds (kept increasing per store handle): the
//! last writer wins, and writers on different machines are ordered only as well as their
//! clocks agree.
//!
//! [`GrainPlacement`]: crate::grains::GrainPlacement

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use atoll_grain::{GrainError, GrainRef, Grains};

use crate::grains::{KvMsg, KvReply, KvShard, Versioned};

/// Shards the keys are spread over.
pub const SHARDS: usize = 8;
/// Replicas of each shard.
pub const REPLICAS: usize = 3;

/// A key-value operation that did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// A replica could not be reached or did not answer.
    #[error("replica {replica}: {source}")]
    Grain {
        /// The replica's grain key.
        replica: String,
        /// What went wrong.
        source: GrainError,
    },
    /// A replica took the write but could not save it.
    #[error("replica {replica} did not save the write: {reason}")]
    NotSaved {
        /// The replica's grain key.
        replica: String,
        /// Why.
        reason: String,
    },
    /// A replica answered something else than asked.
    #[error("replica {0} answered out of turn")]
    Protocol(String),
}

/// A handle on the store, for any node with a grain service (hosting or only calling).
#[derive(Debug, Clone)]
pub struct KvStore {
    grains: Grains,
    clock: Arc<AtomicU64>,
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

impl KvStore {
    /// The store, through `grains`.
    pub fn new(grains: Grains) -> Self {
        KvStore {
            grains,
            clock: Arc::new(AtomicU64::new(0)),
        }
    }

    fn replicas(&self, shard: usize) -> Result<Vec<GrainRef<KvShard>>, KvError> {
        (0..REPLICAS)
            .map(|r| {
                let key = format!("{shard}/{r}");
                self.grains
                    .get::<KvShard>(&key)
                    .map_err(|source| KvError::Grain {
                        replica: key,
                        source,
                    })
            })
            .collect()
    }

    fn next_version(&self) -> u64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let mut last = self.clock.load(Ordering::Relaxed);
        loop {
            let next = now.max(last + 1);
            match self
                .clock
                .compare_exchange(last, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(seen) => last = seen,
            }
        }
    }

    /// Sends `msg` to every replica of `shard` at once; their answers in replica order.
    async fn ask_all(
        &self,
        shard: usize,
        msg: KvMsg,
    ) -> Result<Vec<Result<KvReply, KvError>>, KvError> {
        let mut set = tokio::task::JoinSet::new();
        for (i, replica) in self.replicas(shard)?.into_iter().enumerate() {
            let msg = msg.clone();
            set.spawn(async move {
                let answer = replica.call(msg).await.map_err(|source| KvError::Grain {
                    replica: replica.id().key.clone(),
                    source,
                });
                (i, answer)
            });
        }
        let mut answers: Vec<Option<Result<KvReply, KvError>>> = vec![None; REPLICAS];
        while let Some(joined) = set.join_next().await {
            if let Ok((i, answer)) = joined {
                answers[i] = Some(answer);
            }
        }
        Ok(answers
            .into_iter()
            .enumerate()
            .map(|(i, a)| a.unwrap_or_else(|| Err(KvError::Protocol(format!("{shard}/{i}")))))
            .collect())
    }

    async fn write(&self, key: &str, value: Option<String>) -> Result<(), KvError> {
        let shard = shard_of(key);
        let versioned = Versioned {
            version: self.next_version(),
            value,
        };
        let answers = self
            .ask_all(shard, KvMsg::Put(key.to_string(), versioned))
            .await?;
        for (i, answer) in answers.into_iter().enumerate() {
            match answer? {
                KvReply::Put(_) => {}
                KvReply::NotSaved(reason) => {
                    return Err(KvError::NotSaved {
                        replica: format!("{shard}/{i}"),
                        reason,
                    });
                }
                _ => return Err(KvError::Protocol(format!("{shard}/{i}"))),
            }
        }
        Ok(())
    }

    /// Sets `key` to `value`; returns once every replica of its shard has saved it.
    pub async fn set(&self, key: &str, value: &str) -> Result<(), KvError> {
        self.write(key, Some(value.to_string())).await
    }

    /// Deletes `key` (a versioned tombstone, saved by every replica).
    pub async fn delete(&self, key: &str) -> Result<(), KvError> {
        self.write(key, None).await
    }

    /// The value of `key`: the newest any replica holds. Fails only if no replica answers.
    pub async fn get(&self, key: &str) -> Result<Option<String>, KvError> {
        let shard = shard_of(key);
        let answers = self.ask_all(shard, KvMsg::Get(key.to_string())).await?;
        let mut newest: Option<Versioned> = None;
        let mut seen: Vec<(usize, Option<u64>)> = Vec::new();
        let mut last_error = None;
        for (i, answer) in answers.into_iter().enumerate() {
            match answer {
                Ok(KvReply::Value(v)) => {
                    seen.push((i, v.as_ref().map(|v| v.version)));
                    if v.as_ref().map(|v| v.version) > newest.as_ref().map(|v| v.version) {
                        newest = v;
                    }
                }
                Ok(_) => last_error = Some(KvError::Protocol(format!("{shard}/{i}"))),
                Err(e) => last_error = Some(e),
            }
        }
        if seen.is_empty() {
            return Err(last_error.unwrap_or(KvError::Protocol(format!("{shard}"))));
        }
        if let Some(newest) = &newest {
            self.repair(shard, key, newest, &seen).await;
        }
        Ok(newest.and_then(|v| v.value))
    }

    /// Writes `newest` back to the replicas that answered older versions.
    async fn repair(
        &self,
        shard: usize,
        key: &str,
        newest: &Versioned,
        seen: &[(usize, Option<u64>)],
    ) {
        let Ok(replicas) = self.replicas(shard) else {
            return;
        };
        for (i, version) in seen {
            if *version < Some(newest.version) {
                let _ = replicas[*i]
                    .call(KvMsg::Put(key.to_string(), newest.clone()))
                    .await;
            }
        }
    }

    /// The keys in `[from, to)` (to the end when `to` is `None`), in order, at most `limit`,
    /// with their values: the newest version of each across the replicas of every shard.
    pub async fn range(
        &self,
        from: &str,
        to: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, String)>, KvError> {
        let mut merged: BTreeMap<String, Versioned> = BTreeMap::new();
        for shard in 0..SHARDS {
            let msg = KvMsg::Range {
                from: from.to_string(),
                to: to.map(str::to_string),
                // Deleted keys come back too and are dropped below; the rest still fill
                // `limit` because each shard returns its first `limit` in order.
                limit: usize::MAX,
            };
            let mut answered = false;
            let mut last_error = None;
            for (i, answer) in self.ask_all(shard, msg).await?.into_iter().enumerate() {
                match answer {
                    Ok(KvReply::Entries(entries)) => {
                        answered = true;
                        for (k, v) in entries {
                            let newer = merged.get(&k).is_none_or(|old| old.version < v.version);
                            if newer {
                                merged.insert(k, v);
                            }
                        }
                    }
                    Ok(_) => last_error = Some(KvError::Protocol(format!("{shard}/{i}"))),
                    Err(e) => last_error = Some(e),
                }
            }
            if !answered {
                return Err(last_error.unwrap_or(KvError::Protocol(format!("{shard}"))));
            }
        }
        Ok(merged
            .into_iter()
            .filter_map(|(k, v)| v.value.map(|v| (k, v)))
            .take(limit)
            .collect())
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
