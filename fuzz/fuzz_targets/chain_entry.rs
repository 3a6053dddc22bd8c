//! Arbitrary bytes as a chain entry read from disk: refused or decoded to an entry whose
//! hash matches and which round-trips (postcard accepts overlong varints, so the bytes
//! themselves may differ).
//! The body is shared with the stable smoke run (`crates/atoll-fuzz-targets`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| atoll_fuzz_targets::targets::chain_entry(data));
