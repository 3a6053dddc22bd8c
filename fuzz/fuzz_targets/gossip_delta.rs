//! Arbitrary bytes as a gossip delta from a peer: decoded, then merged into a live state
//! and answered with a delta of its own. It may be refused, never panic.
#![no_main]
use atoll_core::{NodeId, Pid};
use atoll_data::{CrdtGossipState, ProcessAdvertisement, ProcessStatus, decode_delta};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(delta) = decode_delta(data) else {
        return;
    };
    // Whatever decodes must encode again to the same delta.
    assert_eq!(decode_delta(&delta.encode()).as_ref(), Ok(&delta));
    let me = NodeId::from_bytes([1; 16]);
    let mut state = CrdtGossipState::new(me);
    let _ = state.processes.advertise(
        ProcessAdvertisement {
            pid: Pid::new(me, 1, 1),
            agent_type: "fuzz".into(),
            capabilities: ["a".to_string()].into(),
            status: ProcessStatus::Running,
            resource_summary: Default::default(),
        },
        1_000,
    );
    let _ = state.merge_delta(delta, 2_000);
    let _ = state.processes.least_loaded_node(Some("a"));
    let digest = state.digest(3_000);
    let _ = state.delta_for(&digest, 4_096);
    let _ = state.delta_for(&Default::default(), 4_096);
});
