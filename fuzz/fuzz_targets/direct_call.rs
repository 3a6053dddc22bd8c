//! Arbitrary bytes as a direct grain call from another node, decoded as a node does for a
//! host process or for a process that is gone: refused or decoded, never a panic. The body
//! is shared with the stable smoke run (`crates/atoll-fuzz-targets`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| atoll_fuzz_targets::targets::direct_call(data));
