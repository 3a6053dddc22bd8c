//! The map's side of Merkle anti-entropy: its tree, and the entries in the key ranges a
//! comparison found to differ.
//!
//! After the trees are compared, the ranges can be repaired in one step (each side sends
//! every entry there: [`LwwMap::select`]) or, cheaper when buckets hold several entries, in
//! two: the peer sends a [`LeafSummary`] per entry ([`LwwMap::summarize`]); we work out which
//! entries it lacks or holds older ([`LwwMap::reconcile`]), push those and pull only the
//! ones it holds newer ([`LwwMap::select_keys`]).

use std::collections::BTreeMap;

use atoll_core::NodeId;
use serde::{Deserialize, Serialize};

use super::{Delta, Entry, LwwMap, OriginDelta, postcard_bytes};
use crate::hlc::Stamp;
use crate::merkle::{KeyRange, MerkleTree, key_hash, leaf_hash};

/// What a peer needs to know of one entry to decide which side is newer.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct LeafSummary {
    /// The key's position ([`key_hash`] of its encoding).
    pub key_hash: u64,
    /// When the entry was written.
    pub stamp: Stamp,
    /// The first 8 bytes of the entry's leaf hash: tells apart two entries with one stamp.
    pub check: u64,
}

/// What to do after comparing a peer's summaries with our entries.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Reconciliation<K, V> {
    /// Our entries the peer lacks or holds older: send them.
    pub push: Delta<K, V>,
    /// Keys (by hash) the peer holds newer or we lack: ask for them.
    pub pull: Vec<u64>,
}

fn in_ranges(ranges: &[KeyRange], h: u64) -> bool {
    ranges.iter().any(|r| r.contains(h))
}

fn delta_of<K, V>(items: Vec<(K, NodeId, Stamp, Option<V>)>) -> Delta<K, V> {
    let mut by_origin: BTreeMap<NodeId, Vec<(K, Stamp, Option<V>)>> = BTreeMap::new();
    for (k, origin, stamp, value) in items {
        by_origin.entry(origin).or_default().push((k, stamp, value));
    }
    Delta {
        origins: by_origin
            .into_iter()
            .map(|(origin, mut entries)| {
                entries.sort_by_key(|e| e.1);
                OriginDelta {
                    origin,
                    claim: None,
                    entries,
                }
            })
            .collect(),
    }
}

impl<K, V> LwwMap<K, V>
where
    K: Ord + Clone + Serialize,
    V: Ord + Clone + Serialize,
{
    fn hashed(&self) -> impl Iterator<Item = (u64, &K, &Entry<V>)> {
        self.entries
            .iter()
            .map(|(k, e)| (key_hash(&postcard_bytes(k)), k, e))
    }

    /// The Merkle tree of this map's state at `depth` (see [`crate::merkle`]).
    pub fn merkle_tree(&self, depth: u8) -> MerkleTree {
        MerkleTree::build(
            depth,
            self.entries
                .iter()
                .map(|(k, e)| (postcard_bytes(k), postcard_bytes(e))),
        )
    }

    /// Every entry whose key lies in one of `ranges`, as a repair delta (no claims).
    pub fn select(&self, ranges: &[KeyRange]) -> Delta<K, V> {
        delta_of(
            self.hashed()
                .filter(|(h, _, _)| in_ranges(ranges, *h))
                .map(|(_, k, e)| (k.clone(), e.stamp.node, e.stamp.stamp(), e.value.clone()))
                .collect(),
        )
    }

    /// The entries whose key hashes are in `key_hashes`, as a repair delta.
    pub fn select_keys(&self, key_hashes: &[u64]) -> Delta<K, V> {
        let wanted: std::collections::BTreeSet<u64> = key_hashes.iter().copied().collect();
        delta_of(
            self.hashed()
                .filter(|(h, _, _)| wanted.contains(h))
                .map(|(_, k, e)| (k.clone(), e.stamp.node, e.stamp.stamp(), e.value.clone()))
                .collect(),
        )
    }

    /// A summary of every entry in `ranges`, in key-hash order, for the peer to
    /// [`reconcile`](Self::reconcile) against.
    pub fn summarize(&self, ranges: &[KeyRange]) -> Vec<LeafSummary> {
        let mut out: Vec<LeafSummary> = self
            .entries
            .iter()
            .filter_map(|(k, e)| {
                let kb = postcard_bytes(k);
                let h = key_hash(&kb);
                in_ranges(ranges, h).then(|| {
                    let leaf = leaf_hash(&kb, &postcard_bytes(e));
                    LeafSummary {
                        key_hash: h,
                        stamp: e.stamp.stamp(),
                        check: u64::from_be_bytes(leaf[..8].try_into().expect("8 bytes")),
                    }
                })
            })
            .collect();
        out.sort_by_key(|s| s.key_hash);
        out
    }

    /// Compares the peer's summaries of `ranges` with our entries there.
    pub fn reconcile(&self, ranges: &[KeyRange], remote: &[LeafSummary]) -> Reconciliation<K, V> {
        let theirs: BTreeMap<u64, &LeafSummary> = remote.iter().map(|s| (s.key_hash, s)).collect();
        let ours: Vec<LeafSummary> = self.summarize(ranges);
        let mine: std::collections::BTreeSet<u64> = ours.iter().map(|s| s.key_hash).collect();
        let mut push = std::collections::BTreeSet::new();
        let mut pull = Vec::new();
        for s in &ours {
            match theirs.get(&s.key_hash) {
                None => {
                    push.insert(s.key_hash);
                }
                Some(t) if t.stamp < s.stamp => {
                    push.insert(s.key_hash);
                }
                Some(t) if t.stamp > s.stamp => pull.push(s.key_hash),
                Some(t) if t.check != s.check => {
                    // Same stamp, different entries (a tie broken by node or value): both
                    // sides send, and last-writer-wins settles it.
                    push.insert(s.key_hash);
                    pull.push(s.key_hash);
                }
                Some(_) => {}
            }
        }
        pull.extend(
            remote
                .iter()
                .filter(|t| in_ranges(ranges, t.key_hash) && !mine.contains(&t.key_hash))
                .map(|t| t.key_hash),
        );
        pull.sort_unstable();
        pull.dedup();
        let push: Vec<u64> = push.into_iter().collect();
        Reconciliation {
            push: self.select_keys(&push),
            pull,
        }
    }
}
