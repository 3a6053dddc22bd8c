//! Arbitrary bytes as a gossip delta from a peer: decoded, then merged into a live state
//! and answered with a delta of its own. It may be refused, never panic.
//! The body is shared with the stable smoke run (`crates/atoll-fuzz-targets`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| atoll_fuzz_targets::targets::gossip_delta(data));
