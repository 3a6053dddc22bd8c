//! Arbitrary bytes as a chat room's grain state read back from a store: refused, or a
//! room that round-trips, keeps its history within the limit and takes a join and a post.
//! The body is shared with the stable smoke run (`crates/atoll-fuzz-targets`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| atoll_fuzz_targets::targets::chat_room_state(data));
