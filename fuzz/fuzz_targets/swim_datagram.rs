//! Arbitrary bytes as a membership datagram from an authenticated peer, handled by a live
//! membership: it may refuse them, never panic.
//! The body is shared with the stable smoke run (`crates/atoll-fuzz-targets`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| atoll_fuzz_targets::targets::swim_datagram(data));
