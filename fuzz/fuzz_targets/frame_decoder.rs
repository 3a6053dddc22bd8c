//! Arbitrary bytes through the frame decoder, in arbitrary chunks.
//! The body is shared with the stable smoke run (`crates/atoll-fuzz-targets`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| atoll_fuzz_targets::targets::frame_decoder(data));
