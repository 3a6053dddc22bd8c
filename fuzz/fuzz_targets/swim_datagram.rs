//! Arbitrary bytes as a membership datagram from an authenticated peer, handled by a live
//! membership: it may refuse them, never panic.
#![no_main]
use std::time::Instant;

use atoll_core::NodeId;
use atoll_swim::{Identity, MemberMeta, Membership, SwimConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let me = Identity::new(
        NodeId::from_bytes([1; 16]),
        5,
        "127.0.0.1:7000".parse().unwrap(),
        MemberMeta::named("fuzz"),
    )
    .unwrap();
    let now = Instant::now();
    let mut m = Membership::new(me, SwimConfig::default(), 1);
    m.join(now, &[]);
    // The sender id comes from the first 16 bytes when present, so forged and matching
    // senders are both explored.
    let from = data
        .get(..16)
        .map_or(NodeId::from_bytes([2; 16]), |b| NodeId::from_bytes(b.try_into().unwrap()));
    let _ = m.handle_datagram(now, from, data.get(16..).unwrap_or_default());
    m.handle_timeout(now + std::time::Duration::from_secs(2));
    while m.poll_transmit().is_some() {}
    while m.poll_event().is_some() {}
});
