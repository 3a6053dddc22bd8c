//! The gossiped cluster state: the process table and the service registry, exchanged as
//! digests and byte-bounded deltas, with Merkle anti-entropy as the backstop.
//!
//! A gossip round between two members: each sends its [`GossipDigest`]; each answers the
//! other's with [`CrdtGossipState::delta_for`] (within the period's byte budget); each
//! merges what it got. A member cut off for a while converges by the same rounds, since the
//! digest says exactly what it lacks; Merkle comparison ([`CrdtGossipState::merkle_trees`])
//! finds what digests cannot (a peer that lost state it had claimed).

use std::collections::BTreeMap;

use atoll_core::{NodeId, Pid};
use serde::{Deserialize, Serialize};

use crate::codec::{self, DecodeError};
use crate::lww::{Delta, Digest, MAX_DELTA_BYTES, MergeError, MergeReport};
use crate::merkle::{KeyRange, MerkleTree};
use crate::process::{ProcessAdvertisement, ProcessTable};
use crate::service::{ServiceAdvertisement, ServiceKey, ServiceRegistry};

/// Largest encoded [`GossipDigest`] accepted (enough for about 100,000 origins).
pub const MAX_DIGEST_BYTES: usize = 8 << 20;

/// What a member has seen of both tables.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct GossipDigest {
    /// Of the process table.
    pub processes: Digest,
    /// Of the service registry.
    pub services: Digest,
}

impl GossipDigest {
    /// The digest in its versioned wire form.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes a digest from the network, checking its size first.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        codec::decode(bytes, MAX_DIGEST_BYTES)
    }
}

/// A delta of both tables.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct GossipDelta {
    /// Process table entries.
    pub processes: Delta<Pid, ProcessAdvertisement>,
    /// Service registry entries.
    pub services: Delta<ServiceKey, ServiceAdvertisement>,
}

impl GossipDelta {
    /// Number of entries carried.
    pub fn len(&self) -> usize {
        self.processes.len() + self.services.len()
    }

    /// True if it carries nothing.
    pub fn is_empty(&self) -> bool {
        self.processes.is_empty() && self.services.is_empty()
    }

    /// The delta in its versioned wire form.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }
}

/// Decodes a gossip delta from the network: at most [`MAX_DELTA_BYTES`], checked before
/// decoding. Its entries are checked again when merged.
pub fn decode_delta(bytes: &[u8]) -> Result<GossipDelta, DecodeError> {
    codec::decode(bytes, MAX_DELTA_BYTES)
}

/// The Merkle trees of both tables, compared separately.
#[derive(Clone, Debug)]
pub struct GossipTrees {
    /// Of the process table.
    pub processes: MerkleTree,
    /// Of the service registry.
    pub services: MerkleTree,
}

/// The process table and the service registry of one member.
///
/// ```
/// use atoll_core::{NodeId, Pid};
/// use atoll_data::{CrdtGossipState, ProcessAdvertisement, ProcessStatus};
///
/// let (a, b) = (NodeId::from_bytes([1; 16]), NodeId::from_bytes([2; 16]));
/// let mut on_a = CrdtGossipState::new(a);
/// let mut on_b = CrdtGossipState::new(b);
/// on_a.processes
///     .advertise(
///         ProcessAdvertisement {
///             pid: Pid::new(a, 1, 1),
///             agent_type: "worker".into(),
///             capabilities: Default::default(),
///             status: ProcessStatus::Running,
///             resource_summary: Default::default(),
///         },
///         100,
///     )
///     .unwrap();
/// // One round: b sends its digest, a answers with what b lacks, in at most 1 KiB.
/// let delta = on_a.delta_for(&on_b.digest(101), 1024);
/// let bytes = delta.encode();
/// on_b.merge_delta(atoll_data::decode_delta(&bytes).unwrap(), 102).unwrap();
/// assert_eq!(on_b.processes.find_by_type("worker").count(), 1);
/// ```
#[derive(Clone, Debug)]
pub struct CrdtGossipState {
    /// Every process in the cluster.
    pub processes: ProcessTable,
    /// Every service offer in the cluster.
    pub services: ServiceRegistry,
}

impl CrdtGossipState {
    /// Empty tables owned by `node`.
    pub fn new(node: NodeId) -> Self {
        CrdtGossipState {
            processes: ProcessTable::new(node),
            services: ServiceRegistry::new(node),
        }
    }

    /// What this member has seen, its own writes up to `now_ms` included.
    pub fn digest(&mut self, now_ms: u64) -> GossipDigest {
        GossipDigest {
            processes: self.processes.digest(now_ms),
            services: self.services.digest(now_ms),
        }
    }

    /// What a peer with digest `peer` lacks, within about `max_bytes`: service offers
    /// first (they are few and change seldom), the process table in the rest.
    pub fn delta_for(&self, peer: &GossipDigest, max_bytes: usize) -> GossipDelta {
        let services = self.services.map().delta_for(&peer.services, max_bytes / 2);
        let used = codec::encoded_len(&services);
        let processes = self
            .processes
            .map()
            .delta_for(&peer.processes, max_bytes.saturating_sub(used));
        GossipDelta {
            processes,
            services,
        }
    }

    /// Merges a delta received at wall time `now_ms`. Both parts are checked before
    /// either is applied: a refused delta changes nothing.
    pub fn merge_delta(
        &mut self,
        delta: GossipDelta,
        now_ms: u64,
    ) -> Result<MergeReport, MergeError> {
        ProcessTable::check_delta(&delta.processes)?;
        ServiceRegistry::check_delta(&delta.services)?;
        let p = self.processes.merge_delta(delta.processes, now_ms)?;
        let s = self.services.merge_delta(delta.services, now_ms)?;
        Ok(MergeReport {
            applied: p.applied + s.applied,
            stale: p.stale + s.stale,
            below_floor: p.below_floor + s.below_floor,
            max_skew_ms: p.max_skew_ms.max(s.max_skew_ms),
        })
    }

    /// Merges another member's whole state.
    pub fn merge(&mut self, other: &CrdtGossipState, now_ms: u64) {
        self.processes.merge(&other.processes, now_ms);
        self.services.merge(&other.services, now_ms);
    }

    /// The Merkle trees of both tables, at depths suited to their sizes (both sides of a
    /// comparison must use the same depths: see [`crate::compare_tree_roots`]).
    pub fn merkle_trees(&self, process_depth: u8, service_depth: u8) -> GossipTrees {
        GossipTrees {
            processes: self.processes.map().merkle_tree(process_depth),
            services: self.services.map().merkle_tree(service_depth),
        }
    }

    /// The repair delta for key ranges found by Merkle comparison.
    pub fn select(&self, processes: &[KeyRange], services: &[KeyRange]) -> GossipDelta {
        GossipDelta {
            processes: self.processes.map().select(processes),
            services: self.services.map().select(services),
        }
    }

    /// Collects tombstones seen by every live member (`live`: member → its digest, this
    /// member included). Returns how many were removed.
    pub fn collect_tombstones(&mut self, live: &BTreeMap<NodeId, GossipDigest>) -> usize {
        let p: BTreeMap<NodeId, Digest> = live
            .iter()
            .map(|(n, d)| (*n, d.processes.clone()))
            .collect();
        let s: BTreeMap<NodeId, Digest> =
            live.iter().map(|(n, d)| (*n, d.services.clone())).collect();
        self.processes.collect_tombstones(&p) + self.services.collect_tombstones(&s)
    }

    /// A member declared lost is back: its processes and offers are taken again.
    pub fn readmit_node(&mut self, node: NodeId) {
        self.processes.readmit_node(node);
        self.services.readmit_node(node);
    }

    /// A member was lost for good: its processes and offers are gone.
    pub fn forget_node(&mut self, node: NodeId) {
        self.processes.forget_node(node);
        self.services.forget_node(node);
    }
}
