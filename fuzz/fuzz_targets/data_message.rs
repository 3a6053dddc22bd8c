//! Arbitrary bytes as a peer's data-plane message (process table and service gossip, Merkle
//! repair steps), handled by a live plane.
//! The body is shared with the stable smoke run (`crates/atoll-fuzz-targets`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| atoll_fuzz_targets::targets::data_message(data));
