//! Chain replication: fork detection, incremental pull, forks reported and never merged,
//! and a redb log that survives a restart.

use atoll_data::{
    Chain, ChainEntry, ChainError, ChainStore, ChainSyncResponse, ChainView, DecodeError,
    ForkStatus, GENESIS, MAX_PAYLOAD, MemoryChainStore, RedbChainStore, detect_chain_fork,
};
use proptest::prelude::*;

fn chain_of(payloads: impl IntoIterator<Item = Vec<u8>>) -> Chain<MemoryChainStore> {
    let mut c = Chain::new(MemoryChainStore::default());
    for p in payloads {
        c.append(p).unwrap();
    }
    c
}

fn payload(tag: u8, i: u64) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&i.to_le_bytes());
    v
}

/// A shared prefix of `common` entries, then `local` and `remote` entries of their own,
/// which differ from each other when `fork`.
fn pair(
    common: u64,
    local: u64,
    remote: u64,
    fork: bool,
) -> (Chain<MemoryChainStore>, Chain<MemoryChainStore>) {
    let shared: Vec<Vec<u8>> = (0..common).map(|i| payload(0, i)).collect();
    let mut l = chain_of(shared.clone());
    let mut r = chain_of(shared);
    for i in 0..local {
        l.append(payload(1, i)).unwrap();
    }
    for i in 0..remote {
        r.append(payload(if fork { 2 } else { 1 }, i)).unwrap();
    }
    (l, r)
}

fn expected(common: u64, local: u64, remote: u64, fork: bool) -> ForkStatus {
    let (lh, rh) = (common + local, common + remote);
    if fork && local > 0 && remote > 0 {
        ForkStatus::Forked {
            sequence: common + 1,
        }
    } else if lh == rh {
        ForkStatus::InSync
    } else if lh < rh {
        ForkStatus::LocalBehind { remote: rh }
    } else {
        ForkStatus::RemoteBehind { remote: rh }
    }
}

#[test]
fn every_kind_of_fork_is_detected() {
    for (c, l, r, f) in [
        (0, 0, 0, false),
        (5, 0, 0, false),
        (0, 0, 3, false),
        (0, 3, 0, false),
        (5, 0, 3, false),
        (5, 3, 0, false),
        (0, 1, 1, true),  // differ from the first entry
        (5, 2, 2, true),  // same length, different tails
        (5, 1, 4, true),  // remote longer
        (5, 4, 1, true),  // local longer
        (9, 1, 1, true),  // differ at the last entry
        (5, 3, 3, false), // same tails: in sync
    ] {
        let (local, remote) = pair(c, l, r, f);
        assert_eq!(
            detect_chain_fork(&local, &remote).unwrap(),
            expected(c, l, r, f),
            "common {c}, local {l}, remote {r}, fork {f}"
        );
    }
}

proptest! {
    #[test]
    fn fork_detection_finds_the_first_diverging_entry(common in 0..40u64, local in 0..10u64, remote in 0..10u64, fork in any::<bool>()) {
        let (l, r) = pair(common, local, remote, fork);
        prop_assert_eq!(detect_chain_fork(&l, &r).unwrap(), expected(common, local, remote, fork));
        // Symmetric, with the roles of behind and ahead swapped.
        let back = match expected(common, local, remote, fork) {
            ForkStatus::LocalBehind { .. } => ForkStatus::RemoteBehind { remote: common + local },
            ForkStatus::RemoteBehind { .. } => ForkStatus::LocalBehind { remote: common + local },
            s => s,
        };
        prop_assert_eq!(detect_chain_fork(&r, &l).unwrap(), back);
    }
}

/// Pulls from `source` into `replica` until in sync; returns the number of rounds.
fn catch_up<S: ChainStore>(
    replica: &mut Chain<S>,
    source: &Chain<impl ChainStore>,
    max_bytes: u32,
) -> usize {
    let mut rounds = 0;
    loop {
        rounds += 1;
        let request = replica.sync_request(max_bytes);
        let response = source.serve(&request).unwrap();
        let wire = ChainSyncResponse::decode(&response.encode()).unwrap();
        let outcome = replica.apply(request.after_sequence, &wire).unwrap();
        match outcome.status {
            ForkStatus::InSync => return rounds,
            ForkStatus::LocalBehind { .. } => assert!(outcome.appended > 0, "progress each round"),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn a_lagging_replica_catches_up_by_incremental_pull() {
    let source = chain_of((0..100).map(|i| vec![i as u8; 100]));
    let mut replica = chain_of((0..30).map(|i| vec![i as u8; 100]));
    let rounds = catch_up(&mut replica, &source, 1_000);
    assert!(rounds >= 7, "pulled in pieces: {rounds} rounds");
    assert_eq!(replica.head(), source.head());
    assert_eq!(
        detect_chain_fork(&replica, &source).unwrap(),
        ForkStatus::InSync
    );
    // The source grows; the next pull takes only the new entries.
    let mut source = source;
    source.append(b"more".to_vec()).unwrap();
    let request = replica.sync_request(u32::MAX);
    let response = source.serve(&request).unwrap();
    assert_eq!(response.entries.len(), 1);
    assert_eq!(
        replica
            .apply(request.after_sequence, &response)
            .unwrap()
            .appended,
        1
    );
}

#[test]
fn a_replica_ahead_of_its_source_is_told_so() {
    let (replica, source) = pair(5, 3, 0, false);
    let mut replica = replica;
    let request = replica.sync_request(u32::MAX);
    let response = source.serve(&request).unwrap();
    let outcome = replica.apply(request.after_sequence, &response).unwrap();
    assert_eq!(outcome.appended, 0);
    assert_eq!(outcome.status, ForkStatus::RemoteBehind { remote: 5 });
}

#[test]
fn a_forked_replica_is_reported_and_never_merged() {
    for (local, remote) in [(2, 2), (1, 6), (6, 1)] {
        let (mut replica, source) = pair(4, local, remote, true);
        let before = replica.head();
        let request = replica.sync_request(u32::MAX);
        let response = source.serve(&request).unwrap();
        assert!(
            response.entries.is_empty(),
            "the source sends nothing onto a fork"
        );
        assert!(matches!(
            replica.apply(request.after_sequence, &response),
            Err(ChainError::Forked { .. })
        ));
        assert_eq!(replica.head(), before);
    }
    // A source that sends entries anyway (or a replayed answer to another replica): the
    // entries do not link and nothing is appended.
    let (mut replica, _) = pair(4, 2, 0, true);
    let (other, source) = pair(4, 0, 5, true);
    let foreign = source.serve(&other.sync_request(u32::MAX)).unwrap();
    let before = replica.head();
    let err = replica.apply(4, &foreign).unwrap_err();
    assert!(matches!(err, ChainError::Forked { .. }), "{err:?}");
    assert_eq!(replica.head(), before);
}

#[test]
fn tampered_entries_are_refused() {
    let source = chain_of((0..5).map(|i| vec![i]));
    let mut replica = chain_of([]);
    let mut response = source.serve(&replica.sync_request(u32::MAX)).unwrap();
    response.entries[2].payload = b"evil".to_vec();
    assert!(matches!(
        ChainSyncResponse::decode(&response.encode()),
        Err(DecodeError::Invalid(_))
    ));
    assert_eq!(
        replica.apply(0, &response),
        Err(ChainError::BadHash { sequence: 3 })
    );
    // Re-hashed but no longer linked to the next entry.
    let e = &response.entries[2];
    response.entries[2] = ChainEntry::new(e.sequence, e.prev_hash, e.payload.clone());
    assert_eq!(
        replica.apply(0, &response),
        Err(ChainError::Forked { sequence: 3 })
    );
    // Skipping ahead.
    let mut gap = source.serve(&replica.sync_request(u32::MAX)).unwrap();
    gap.entries.remove(0);
    assert_eq!(
        replica.apply(0, &gap),
        Err(ChainError::Gap {
            expected: 1,
            got: 2
        })
    );
    assert_eq!(replica.head().sequence, 0);
    assert_eq!(replica.head().hash, GENESIS);
    assert!(matches!(
        replica.append(vec![0; MAX_PAYLOAD + 1]),
        Err(ChainError::PayloadTooLarge(_))
    ));
}

#[test]
fn entry_decoding_checks_size_and_hash() {
    let e = ChainEntry::new(1, GENESIS, b"x".to_vec());
    let mut bytes = e.encode();
    assert_eq!(ChainEntry::decode(&bytes).unwrap(), e);
    *bytes.last_mut().unwrap() ^= 1;
    assert!(matches!(
        ChainEntry::decode(&bytes),
        Err(DecodeError::Invalid(_))
    ));
    assert!(matches!(
        ChainEntry::decode(&vec![1; 2 << 20]),
        Err(DecodeError::TooLarge { .. })
    ));
    assert!(ChainEntry::decode(&[1, 1]).is_err());
    // A payload length beyond the input fails without allocating for it.
    let mut forged = vec![1u8, 1];
    forged.extend([0u8; 32]);
    forged.extend([0xff, 0xff, 0xff, 0x07]);
    assert!(matches!(
        ChainEntry::decode(&forged),
        Err(DecodeError::Malformed(_))
    ));
}

#[test]
fn the_redb_log_survives_a_restart_and_serves_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chain.redb");
    let head = {
        let mut chain = Chain::new(RedbChainStore::open(&path).unwrap());
        for i in 0..50u64 {
            chain.append(payload(0, i)).unwrap();
        }
        chain.head()
    };
    let mut chain = Chain::new(RedbChainStore::open(&path).unwrap());
    assert_eq!(chain.head(), head);
    assert_eq!(chain.store().verify_all().unwrap(), 50);
    assert_eq!(chain.get(7).unwrap().unwrap().payload, payload(0, 6));
    chain.append(b"after restart".to_vec()).unwrap();
    // A durable replica pulls from it, restarts half way, and finishes.
    let rpath = dir.path().join("replica.redb");
    {
        let mut replica = Chain::new(RedbChainStore::open(&rpath).unwrap());
        let request = replica.sync_request(300);
        let response = chain.serve(&request).unwrap();
        replica.apply(request.after_sequence, &response).unwrap();
        assert!(replica.head().sequence > 0 && replica.head().sequence < 51);
    }
    let mut replica = Chain::new(RedbChainStore::open(&rpath).unwrap());
    catch_up(&mut replica, &chain, 300);
    assert_eq!(replica.head(), chain.head());
    assert_eq!(replica.store().verify_all().unwrap(), 51);
    // A memory replica of the same log agrees entry by entry.
    let mut memory = Chain::new(MemoryChainStore::default());
    catch_up(&mut memory, &replica, u32::MAX);
    assert_eq!(
        detect_chain_fork(&memory, &replica).unwrap(),
        ForkStatus::InSync
    );
}

#[test]
fn a_corrupt_stored_entry_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chain.redb");
    {
        let mut chain = Chain::new(RedbChainStore::open(&path).unwrap());
        for i in 0..3u64 {
            chain.append(payload(0, i)).unwrap();
        }
    }
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let table: redb::TableDefinition<'_, u64, &[u8]> =
                redb::TableDefinition::new("chain_log");
            let mut t = txn.open_table(table).unwrap();
            let mut bad = ChainEntry::new(2, GENESIS, b"not linked".to_vec()).encode();
            t.insert(2, bad.as_slice()).unwrap();
            bad[5] ^= 0xff;
            t.insert(3, bad.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    assert!(matches!(
        RedbChainStore::open(&path),
        Err(ChainError::Corrupt(_))
    ));
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let table: redb::TableDefinition<'_, u64, &[u8]> =
                redb::TableDefinition::new("chain_log");
            txn.open_table(table).unwrap().remove(3).unwrap();
        }
        txn.commit().unwrap();
    }
    let store = RedbChainStore::open(&path).unwrap();
    assert_eq!(store.verify_all(), Err(ChainError::BadLink { sequence: 2 }));
}
