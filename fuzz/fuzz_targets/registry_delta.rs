//! Arbitrary bytes as registry delta entries from a voter: decoded, applied to a member's
//! copy and encoded again. It may be refused, never panic.
//! The body is shared with the stable smoke run (`crates/atoll-fuzz-targets`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| atoll_fuzz_targets::targets::registry_delta(data));
