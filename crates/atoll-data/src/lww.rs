//! A last-writer-wins map ordered by hybrid logical clocks, gossiped as deltas.
//!
//! Each entry carries the [`HlcTimestamp`] of the write that set it; a removal writes a
//! tombstone. Merging keeps, per key, the entry with the larger timestamp (the value
//! breaks an exact tie, so merges commute even on forged input). The writer of an entry is
//! its *origin*: the node in its timestamp.
//!
//! # Deltas and digests
//!
//! Every map keeps a [`Digest`]: for each origin, a stamp up to which it holds everything
//! that origin wrote (or something newer for the same key). A peer's digest tells exactly
//! what to send it: [`LwwMap::delta_for`] takes, per origin, the entries stamped after
//! what the peer has seen, within a byte budget, and says up to where the delta is
//! complete ([`Claim`]). The receiver advances its digest only over contiguous claims, so
//! lost, duplicated or reordered deltas never make it skip an entry.
//!
//! # Tombstones
//!
//! A tombstone is collected once every live member's digest covers it
//! ([`LwwMap::collect_tombstones`]). The map then also refuses anything at or below that
//! point from that origin (its *floor*): every live member already holds it or something
//! newer, so a late duplicate of the deleted value cannot bring it back.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use atoll_core::NodeId;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec::{self, DecodeError};
use crate::hlc::{Hlc, HlcTimestamp, Stamp};

#[path = "lww_repair.rs"]
mod repair;
pub use repair::{LeafSummary, Reconciliation};

/// Largest encoded delta accepted from the network.
pub const MAX_DELTA_BYTES: usize = 8 << 20;

/// One entry: the timestamp of the write that set it, and the value (`None` for a
/// tombstone).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Entry<V> {
    /// When and by whom it was written.
    pub stamp: HlcTimestamp,
    /// The value, or `None` if the key was removed.
    pub value: Option<V>,
}

impl<V: Ord> Entry<V> {
    /// True if `self` replaces `other` under last-writer-wins.
    pub fn wins_over(&self, other: &Entry<V>) -> bool {
        (self.stamp, &self.value) > (other.stamp, &other.value)
    }
}

/// For each origin, the stamp up to which a map holds everything that origin wrote.
///
/// ```
/// use atoll_core::NodeId;
/// use atoll_data::{Digest, Stamp};
///
/// let mut d = Digest::default();
/// let n = NodeId::from_bytes([1; 16]);
/// assert_eq!(d.get(n), Stamp::ZERO);
/// d.advance(n, Stamp { wall_ms: 5, logical: 0 });
/// assert_eq!(d.get(n).wall_ms, 5);
/// ```
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct Digest(pub BTreeMap<NodeId, Stamp>);

impl Digest {
    /// What is seen of `origin` (`Stamp::ZERO` if nothing).
    pub fn get(&self, origin: NodeId) -> Stamp {
        self.0.get(&origin).copied().unwrap_or(Stamp::ZERO)
    }

    /// Raises what is seen of `origin` to `to` (never lowers it).
    pub fn advance(&mut self, origin: NodeId, to: Stamp) {
        let s = self.0.entry(origin).or_insert(Stamp::ZERO);
        if to > *s {
            *s = to;
        }
    }
}

/// A contiguity claim in a delta: the sender holds everything the origin wrote in
/// `(after, through]` and sent all of it that is still current.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Claim {
    /// What the receiver had seen of the origin when the delta was made.
    pub after: Stamp,
    /// Up to where the delta is complete.
    pub through: Stamp,
}

/// The entries of one origin in a delta.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct OriginDelta<K, V> {
    /// The node that wrote these entries.
    pub origin: NodeId,
    /// What the delta covers, if it is a contiguous range (repair deltas have none).
    pub claim: Option<Claim>,
    /// `(key, stamp, value)`, in stamp order; `None` is a tombstone.
    pub entries: Vec<(K, Stamp, Option<V>)>,
}

/// A batch of entries to merge into a peer's map, grouped by origin.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Delta<K, V> {
    /// Per origin, in origin order.
    pub origins: Vec<OriginDelta<K, V>>,
}

impl<K, V> Default for Delta<K, V> {
    fn default() -> Self {
        Delta {
            origins: Vec::new(),
        }
    }
}

impl<K, V> Delta<K, V> {
    /// Number of entries carried.
    pub fn len(&self) -> usize {
        self.origins.iter().map(|o| o.entries.len()).sum()
    }

    /// True if it carries no entry and no claim.
    pub fn is_empty(&self) -> bool {
        self.origins
            .iter()
            .all(|o| o.entries.is_empty() && o.claim.is_none())
    }
}

impl<K: Serialize, V: Serialize> Delta<K, V> {
    /// The delta in its versioned wire form.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }
}

/// Decodes a delta from the network: at most [`MAX_DELTA_BYTES`], checked before
/// decoding.
pub fn decode_delta<K: DeserializeOwned, V: DeserializeOwned>(
    bytes: &[u8],
) -> Result<Delta<K, V>, DecodeError> {
    codec::decode(bytes, MAX_DELTA_BYTES)
}

/// Why a delta was refused whole (the map is unchanged).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    /// A claim's range runs backwards.
    #[error("claim for {origin} runs backwards ({after} > {through})")]
    BackwardsClaim {
        /// The origin.
        origin: NodeId,
        /// Claimed start.
        after: Stamp,
        /// Claimed end.
        through: Stamp,
    },
    /// An entry lies at or before the start of its origin's claim.
    #[error("entry of {origin} at {stamp} is not after its claim start")]
    OutsideClaim {
        /// The origin.
        origin: NodeId,
        /// The entry's stamp.
        stamp: Stamp,
    },
    /// The owner of a key is not the origin of its entry (single-writer tables).
    #[error("{origin} wrote an entry that only {owner} may write")]
    ForeignWriter {
        /// Who wrote it.
        origin: NodeId,
        /// Who may.
        owner: NodeId,
    },
    /// An entry breaks a table's own limits.
    #[error("invalid entry: {0}")]
    Invalid(String),
}

/// What a merge did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MergeReport {
    /// Entries that replaced (or created) a local entry.
    pub applied: usize,
    /// Entries that lost to what was already here (duplicates included).
    pub stale: usize,
    /// Entries refused because they lie at or below a collected floor.
    pub below_floor: usize,
    /// How far (ms) the furthest-ahead stamp was in front of the local wall clock.
    pub max_skew_ms: u64,
}

/// A changed key, as seen by an observer of merges: the value before and after.
pub(crate) type Observer<'a, K, V> = &'a mut dyn FnMut(&K, Option<&V>, Option<&V>);

/// A last-writer-wins map, owned by one node, with deltas, digests and tombstone
/// collection.
///
/// ```
/// use atoll_core::NodeId;
/// use atoll_data::{Digest, LwwMap};
///
/// let (a, b) = (NodeId::from_bytes([1; 16]), NodeId::from_bytes([2; 16]));
/// let mut left: LwwMap<String, u32> = LwwMap::new(a);
/// let mut right: LwwMap<String, u32> = LwwMap::new(b);
/// left.insert("x".into(), 1, 10);
/// right.insert("x".into(), 2, 11);
/// // Exchange deltas computed against each other's digests.
/// let to_right = left.delta_for(&right.digest(12), usize::MAX);
/// let to_left = right.delta_for(&left.digest(12), usize::MAX);
/// right.merge_delta(to_right, 12).unwrap();
/// left.merge_delta(to_left, 12).unwrap();
/// assert_eq!(left.get(&"x".into()), Some(&2));
/// assert_eq!(left.state(), right.state());
/// ```
#[derive(Clone, Debug)]
pub struct LwwMap<K, V> {
    clock: Hlc,
    entries: BTreeMap<K, Entry<V>>,
    by_origin: BTreeMap<NodeId, BTreeMap<Stamp, BTreeSet<K>>>,
    seen: Digest,
    floors: Digest,
    live: usize,
}

impl<K, V> LwwMap<K, V>
where
    K: Ord + Clone,
    V: Ord + Clone,
{
    /// An empty map owned by `node` (whose clock stamps its writes).
    pub fn new(node: NodeId) -> Self {
        Self::with_clock(Hlc::new(node))
    }

    /// An empty map whose writes are stamped by `clock`.
    pub fn with_clock(clock: Hlc) -> Self {
        LwwMap {
            clock,
            entries: BTreeMap::new(),
            by_origin: BTreeMap::new(),
            seen: Digest::default(),
            floors: Digest::default(),
            live: 0,
        }
    }

    /// The owning node.
    pub fn node(&self) -> NodeId {
        self.clock.node()
    }

    /// The owning node's clock.
    pub fn clock(&self) -> &Hlc {
        &self.clock
    }

    /// The live value at `key`.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.entries.get(key)?.value.as_ref()
    }

    /// The entry at `key`, tombstone included.
    pub fn entry(&self, key: &K) -> Option<&Entry<V>> {
        self.entries.get(key)
    }

    /// Live entries, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.entries
            .iter()
            .filter_map(|(k, e)| e.value.as_ref().map(|v| (k, v)))
    }

    /// Every entry, tombstones included, in key order.
    pub fn entries(&self) -> &BTreeMap<K, Entry<V>> {
        &self.entries
    }

    /// The replicated state, for comparing replicas: every entry, tombstones included.
    pub fn state(&self) -> &BTreeMap<K, Entry<V>> {
        &self.entries
    }

    /// Number of live entries.
    pub fn len(&self) -> usize {
        self.live
    }

    /// True if no entry is live.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Number of tombstones held.
    pub fn tombstones(&self) -> usize {
        self.entries.len() - self.live
    }

    /// Sets `key` to `value` at wall time `now_ms`. Returns the write's timestamp.
    pub fn insert(&mut self, key: K, value: V, now_ms: u64) -> HlcTimestamp {
        self.write(key, Some(value), now_ms)
    }

    /// Removes `key` at wall time `now_ms`, leaving a tombstone. Returns the tombstone's
    /// timestamp, or `None` if the key was not live.
    pub fn remove(&mut self, key: &K, now_ms: u64) -> Option<HlcTimestamp> {
        self.get(key)?;
        Some(self.write(key.clone(), None, now_ms))
    }

    fn write(&mut self, key: K, value: Option<V>, now_ms: u64) -> HlcTimestamp {
        let stamp = self.clock.tick(now_ms);
        self.put(key, Entry { stamp, value });
        stamp
    }

    /// Stores `entry` at `key` unconditionally, keeping the indexes; returns the old one.
    fn put(&mut self, key: K, entry: Entry<V>) -> Option<Entry<V>> {
        let origin = entry.stamp.node;
        let stamp = entry.stamp.stamp();
        self.live += usize::from(entry.value.is_some());
        let old = self.entries.insert(key.clone(), entry);
        if let Some(old) = &old {
            self.live -= usize::from(old.value.is_some());
            self.unindex(&key, old.stamp);
        }
        self.by_origin
            .entry(origin)
            .or_default()
            .entry(stamp)
            .or_default()
            .insert(key);
        old
    }

    fn unindex(&mut self, key: &K, at: HlcTimestamp) {
        if let Some(stamps) = self.by_origin.get_mut(&at.node) {
            if let Some(keys) = stamps.get_mut(&at.stamp()) {
                keys.remove(key);
                if keys.is_empty() {
                    stamps.remove(&at.stamp());
                }
            }
            if stamps.is_empty() {
                self.by_origin.remove(&at.node);
            }
        }
    }

    /// What this map has seen of every origin, its own writes up to `now_ms` included.
    /// Send it to a peer so it can answer with [`delta_for`](Self::delta_for).
    pub fn digest(&mut self, now_ms: u64) -> Digest {
        let me = self.node();
        self.clock.observe(Stamp::ZERO.at(me), now_ms);
        self.seen()
    }

    /// What this map has seen, without advancing its own clock: what it holds, and for a
    /// forgotten origin the floor below which it refuses that origin's entries (so peers
    /// do not send them).
    pub fn seen(&self) -> Digest {
        let mut d = self.held();
        for (&origin, &floor) in &self.floors.0 {
            d.advance(origin, floor);
        }
        d
    }

    /// Per origin, up to where this map holds everything: the basis of its claims. A
    /// forgotten origin is not in it, so a peer that takes it back is never told it has
    /// what nobody sent it.
    fn held(&self) -> Digest {
        let mut d = self.seen.clone();
        d.advance(self.node(), self.clock.last());
        d
    }

    /// The entries a peer whose digest is `peer` lacks, within about `max_bytes` of
    /// encoding (at least one entry, so a huge entry cannot stall gossip).
    pub fn delta_for(&self, peer: &Digest, max_bytes: usize) -> Delta<K, V>
    where
        K: Serialize,
        V: Serialize,
    {
        let seen = self.held();
        let mut origins: BTreeSet<NodeId> = self.by_origin.keys().copied().collect();
        origins.extend(seen.0.keys().copied());
        let mut budget = max_bytes;
        let mut delta = Delta::default();
        let mut took_any = false;
        for origin in origins {
            let after = peer.get(origin);
            let mine = seen.get(origin);
            let mut part = OriginDelta {
                origin,
                claim: None,
                entries: Vec::new(),
            };
            let mut cut: Option<Stamp> = None;
            if let Some(stamps) = self.by_origin.get(&origin) {
                for (&stamp, keys) in stamps.range((Bound::Excluded(after), Bound::Unbounded)) {
                    // Entries of one stamp travel together, so a claim cut at a stamp is exact.
                    let group: Vec<(K, Stamp, Option<V>)> = keys
                        .iter()
                        .map(|k| (k.clone(), stamp, self.entries[k].value.clone()))
                        .collect();
                    let size: usize = group.iter().map(codec::encoded_len).sum();
                    if size > budget && took_any {
                        cut = Some(part.entries.last().map_or(after, |e| e.1));
                        break;
                    }
                    budget = budget.saturating_sub(size);
                    took_any = true;
                    part.entries.extend(group);
                }
            }
            let through = cut.map_or(mine, |c| c.min(mine));
            if through > after {
                part.claim = Some(Claim { after, through });
            }
            let stop = cut.is_some();
            if part.claim.is_some() || !part.entries.is_empty() {
                // The origin's header: id, claim and entry count.
                budget = budget.saturating_sub(40);
                delta.origins.push(part);
            }
            if stop {
                break;
            }
        }
        delta
    }

    /// Merges a delta received at wall time `now_ms`. A refused delta changes nothing.
    pub fn merge_delta(
        &mut self,
        delta: Delta<K, V>,
        now_ms: u64,
    ) -> Result<MergeReport, MergeError> {
        self.merge_delta_observed(delta, now_ms, &mut |_, _, _| {})
    }

    /// Checks a delta's claims and entry order without applying it.
    pub fn check_delta(delta: &Delta<K, V>) -> Result<(), MergeError> {
        for part in &delta.origins {
            if let Some(c) = part.claim {
                if c.after > c.through {
                    return Err(MergeError::BackwardsClaim {
                        origin: part.origin,
                        after: c.after,
                        through: c.through,
                    });
                }
                if let Some(e) = part.entries.iter().find(|e| e.1 <= c.after) {
                    return Err(MergeError::OutsideClaim {
                        origin: part.origin,
                        stamp: e.1,
                    });
                }
            }
        }
        Ok(())
    }

    /// [`merge_delta`](Self::merge_delta), calling `observer(key, old, new)` for every
    /// key whose live value changed.
    pub(crate) fn merge_delta_observed(
        &mut self,
        delta: Delta<K, V>,
        now_ms: u64,
        observer: Observer<'_, K, V>,
    ) -> Result<MergeReport, MergeError> {
        Self::check_delta(&delta)?;
        let mut report = MergeReport::default();
        let me = self.node();
        for part in delta.origins {
            let origin = part.origin;
            for (key, stamp, value) in part.entries {
                let entry = Entry {
                    stamp: stamp.at(origin),
                    value,
                };
                self.merge_entry(key, entry, now_ms, &mut report, observer);
            }
            if let Some(c) = part.claim
                && origin != me
                && c.after <= self.seen.get(origin)
            {
                self.seen.advance(origin, c.through);
            }
        }
        Ok(report)
    }

    fn merge_entry(
        &mut self,
        key: K,
        entry: Entry<V>,
        now_ms: u64,
        report: &mut MergeReport,
        observer: Observer<'_, K, V>,
    ) {
        let skew = self.clock.observe(entry.stamp, now_ms);
        report.max_skew_ms = report.max_skew_ms.max(skew);
        if entry.stamp.stamp() <= self.floors.get(entry.stamp.node) {
            report.below_floor += 1;
            return;
        }
        if self
            .entries
            .get(&key)
            .is_some_and(|old| !entry.wins_over(old))
        {
            report.stale += 1;
            return;
        }
        report.applied += 1;
        let new = entry.value.clone();
        let old = self.put(key.clone(), entry);
        let old = old.and_then(|o| o.value);
        if old != new {
            observer(&key, old.as_ref(), new.as_ref());
        }
    }

    /// Merges another replica's whole state (for full-state sync and tests); digests are
    /// joined, so later deltas need not resend it.
    pub fn merge(&mut self, other: &LwwMap<K, V>, now_ms: u64) -> MergeReport {
        self.merge_observed(other, now_ms, &mut |_, _, _| {})
    }

    pub(crate) fn merge_observed(
        &mut self,
        other: &LwwMap<K, V>,
        now_ms: u64,
        observer: Observer<'_, K, V>,
    ) -> MergeReport {
        let mut report = MergeReport::default();
        for (k, e) in &other.entries {
            self.merge_entry(k.clone(), e.clone(), now_ms, &mut report, observer);
        }
        let me = self.node();
        for (&origin, &s) in other.held().0.iter().filter(|(o, _)| **o != me) {
            self.seen.advance(origin, s);
        }
        report
    }

    /// Collects tombstones every live member has seen. `live` maps each live member
    /// (this node included) to its latest digest.
    ///
    /// For each live origin, the lowest stamp every member has seen of it becomes its
    /// floor: anything of that origin at or below it is already everywhere, so a late copy
    /// is refused. A tombstone goes once it is at or below the floors of *all* live
    /// origins: any older write of its key, by whichever live member, is then refused too,
    /// so it cannot come back. (A write by a member outside `live`, older than a collected
    /// tombstone, could; the process table and service registry have one writer per key,
    /// so there it cannot happen.) Returns how many tombstones were removed.
    pub fn collect_tombstones(&mut self, live: &BTreeMap<NodeId, Digest>) -> usize {
        let mut stable_all: Option<Stamp> = None;
        for &origin in live.keys() {
            let stable = live
                .values()
                .map(|d| d.get(origin))
                .min()
                .unwrap_or(Stamp::ZERO);
            self.floors.advance(origin, stable);
            stable_all = Some(stable_all.map_or(stable, |s| s.min(stable)));
        }
        let Some(stable) = stable_all.filter(|s| *s > Stamp::ZERO) else {
            return 0;
        };
        let mut dead: Vec<(HlcTimestamp, K)> = Vec::new();
        for origin in live.keys() {
            if let Some(stamps) = self.by_origin.get(origin) {
                dead.extend(
                    stamps
                        .range(..=stable)
                        .flat_map(|(s, keys)| keys.iter().map(|k| (s.at(*origin), k.clone())))
                        .filter(|(_, k)| self.entries[k].value.is_none()),
                );
            }
        }
        for (at, k) in &dead {
            self.entries.remove(k);
            self.unindex(k, *at);
        }
        dead.len()
    }

    /// Drops everything written by `origin` (a member that was lost for good), without
    /// tombstones, and refuses its entries up to what was seen of it. The member must
    /// resume its clock above that point if it comes back (see [`Hlc::resume`]).
    pub fn forget_origin(&mut self, origin: NodeId) -> Vec<(K, V)> {
        let mut gone = Vec::new();
        // What was seen of it is no longer held: this map must not claim it to anyone.
        let mut top = self.seen.0.remove(&origin).unwrap_or(Stamp::ZERO);
        for (s, keys) in self.by_origin.remove(&origin).unwrap_or_default() {
            top = top.max(s);
            for k in keys {
                if let Some(Entry { value: Some(v), .. }) = self.entries.remove(&k) {
                    self.live -= 1;
                    gone.push((k, v));
                }
            }
        }
        self.floors.advance(origin, top);
        gone
    }

    /// Takes entries of `origin` again after [`forget_origin`](Self::forget_origin): a
    /// member declared lost turned out alive (a partition healed). What was seen of it is
    /// reset too, so the next digest asks for all of its entries; being its only writer,
    /// it answers with its current state.
    pub fn readmit_origin(&mut self, origin: NodeId) {
        self.floors.0.remove(&origin);
        self.seen.0.remove(&origin);
    }

    /// Per origin, the point at or below which entries are refused.
    pub fn floors(&self) -> &Digest {
        &self.floors
    }
}

pub(crate) fn postcard_bytes<T: Serialize>(v: &T) -> Vec<u8> {
    postcard::to_stdvec(v).expect("every record type here is postcard-encodable")
}
