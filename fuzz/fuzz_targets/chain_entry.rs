//! Arbitrary bytes as a chain entry read from disk: refused or decoded to an entry whose
//! hash matches and which round-trips (postcard accepts overlong varints, so the bytes
//! themselves may differ).
#![no_main]
use atoll_data::ChainEntry;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(entry) = ChainEntry::decode(data) {
        assert!(entry.is_valid());
        assert_eq!(ChainEntry::decode(&entry.encode()).as_ref(), Ok(&entry));
    }
});
