//! Arbitrary bytes as a chain sync response from a source: decoded, then applied to a
//! replica, which appends only entries that link onto its log.
//! The body is shared with the stable smoke run (`crates/atoll-fuzz-targets`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| atoll_fuzz_targets::targets::chain_sync(data));
