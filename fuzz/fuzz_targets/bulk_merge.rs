//! Arbitrary events of a peer's message and bulk streams through the bulk-stream merge.
//! The body is shared with the stable smoke run (`crates/atoll-fuzz-targets`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| atoll_fuzz_targets::targets::bulk_merge(data));
