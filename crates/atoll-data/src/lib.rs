//! Pure cluster data structures of atoll.
//!
//! - [`Hlc`]: hybrid logical clocks, so a skewed wall clock never decides a winner forever;
//! - [`LwwMap`]: a last-writer-wins map ordered by [`HlcTimestamp`], gossiped as byte-bounded
//!   [`Delta`]s against a peer's [`Digest`], with tombstones collected once every live
//!   member has seen them;
//! - [`ProcessTable`] and [`ServiceRegistry`], together [`CrdtGossipState`];
//! - [`HashRing`]: consistent hashing with virtual nodes, weights and capability filters;
//! - [`MerkleTree`]: anti-entropy by comparing roots ([`compare_tree_roots`]), and
//!   [`MerkleProof`]s;
//! - [`Chain`]: an append-only, hash-linked log replicated by incremental pull, with
//!   [`detect_chain_fork`], in memory or in redb ([`RedbChainStore`]).
//!
//! Nothing here reads a clock, draws randomness or does network I/O: wall time comes in as
//! `now_ms` arguments and outputs are returned. Everything that crosses the wire or the
//! disk is serde + postcard in a versioned envelope, and every decoder checks sizes before
//! decoding and returns a typed [`DecodeError`].
//!
//! ```
//! use atoll_core::NodeId;
//! use atoll_data::LwwMap;
//!
//! let (a, b) = (NodeId::from_bytes([1; 16]), NodeId::from_bytes([2; 16]));
//! let mut left: LwwMap<String, String> = LwwMap::new(a);
//! let mut right = LwwMap::new(b);
//! left.insert("k".to_string(), "from a".to_string(), 1_000);
//! right.merge(&left, 1_001);
//! right.remove(&"k".to_string(), 1_002);
//! left.merge(&right, 1_003);
//! assert_eq!(left.get(&"k".to_string()), None);
//! ```
#![deny(missing_docs)]

mod chain;
mod chain_redb;
mod codec;
mod gossip;
mod hlc;
mod lww;
pub mod merkle;
mod process;
mod ring;
mod service;

pub use chain::{
    Chain, ChainEntry, ChainError, ChainHead, ChainStore, ChainSyncRequest, ChainSyncResponse,
    ChainView, ForkStatus, GENESIS, MAX_ENTRY_BYTES, MAX_PAYLOAD, MAX_SYNC_BYTES, MemoryChainStore,
    RemoteChain, SyncOutcome, detect_chain_fork,
};
pub use chain_redb::RedbChainStore;
pub use codec::{DecodeError, FORMAT_VERSION};
pub use gossip::{
    CrdtGossipState, GossipDelta, GossipDigest, GossipTrees, MAX_DIGEST_BYTES, decode_delta,
};
pub use hlc::{Hlc, HlcTimestamp, Stamp};
pub use lww::{
    Claim, Delta, Digest, Entry, LeafSummary, LwwMap, MAX_DELTA_BYTES, MergeError, MergeReport,
    OriginDelta, Reconciliation, decode_delta as decode_map_delta,
};
pub use merkle::{
    KeyRange, MerkleError, MerkleMessage, MerkleProof, MerkleTree, NodeDigest, NodeRef, ProofError,
    SyncAction, SyncPlan, TreeRoot, compare_tree_roots,
};
pub use process::{
    AdvertiseError, MAX_CAPABILITIES, MAX_NAME_LEN, NodeLoad, ProcessAdvertisement, ProcessStatus,
    ProcessTable, ResourceSummary,
};
pub use ring::{HashRing, MAX_POINTS_PER_NODE, RingNode, ring_hash};
pub use service::{
    MAX_METADATA, MAX_METADATA_VALUE, ServiceAdvertisement, ServiceKey, ServiceRegistry,
};
