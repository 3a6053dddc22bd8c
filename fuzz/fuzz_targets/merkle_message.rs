//! Arbitrary bytes as an anti-entropy message from a peer, handled by a live tree.
//! The body is shared with the stable smoke run (`crates/atoll-fuzz-targets`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| atoll_fuzz_targets::targets::merkle_message(data));
