//! Arbitrary bytes as a peer's gossip digest: decoded, then answered with a delta.
#![no_main]
use atoll_core::NodeId;
use atoll_data::{CrdtGossipState, GossipDigest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(digest) = GossipDigest::decode(data) {
        let state = CrdtGossipState::new(NodeId::from_bytes([1; 16]));
        let _ = state.delta_for(&digest, 4_096);
    }
});
