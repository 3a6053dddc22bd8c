//! Arbitrary bytes as a node's incarnation record, read from its data directory at start.
//! The body is shared with the stable smoke run (`crates/atoll-fuzz-targets`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| atoll_fuzz_targets::targets::incarnation_record(data));
