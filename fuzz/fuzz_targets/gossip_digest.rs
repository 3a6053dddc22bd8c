//! Arbitrary bytes as a peer's gossip digest: decoded, then answered with a delta.
//! The body is shared with the stable smoke run (`crates/atoll-fuzz-targets`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| atoll_fuzz_targets::targets::gossip_digest(data));
