//! Arbitrary bytes as a copy of replicated grain state (from a store or a peer) and as a
//! peer's replica answer: refused, or decoded within the size limit and round-tripping.
//! The body is shared with the stable smoke run (`crates/atoll-fuzz-targets`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| atoll_fuzz_targets::targets::grain_state(data));
