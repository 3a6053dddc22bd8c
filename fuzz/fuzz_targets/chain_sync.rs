//! Arbitrary bytes as a chain sync response from a source: decoded, then applied to a
//! replica, which appends only entries that link onto its log.
#![no_main]
use atoll_data::{Chain, ChainSyncResponse, ChainView, MemoryChainStore};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(response) = ChainSyncResponse::decode(data) else {
        return;
    };
    let mut replica = Chain::new(MemoryChainStore::default());
    replica.append(b"first".to_vec()).unwrap();
    let before = replica.head();
    match replica.apply(before.sequence, &response) {
        Ok(outcome) => assert_eq!(replica.head().sequence, before.sequence + outcome.appended as u64),
        Err(_) => assert_eq!(replica.head(), before),
    }
});
