//! Crash-consistency of the store: a workload of appends, votes and snapshots on a
//! simulated disk, crashed at every sync in turn (before it, after it, torn in the middle),
//! then reopened. Whatever the store acknowledged is there; what it did not is there whole
//! or not at all; the state machine recovers to a snapshot that matches the log.

use atoll_core::{NodeId, Pid, Scope};
use openraft::storage::{RaftLogStorageExt, RaftStateMachine};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftSnapshotBuilder, Vote};

use super::*;
use crate::disk::{Failpoint, SimDisk};
use crate::registry::Command;

/// Entries per append.
const BATCH: u64 = 3;
/// Appends in the workload.
const APPENDS: u64 = 10;

fn entry(index: u64) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Command::Register {
            name: format!("n{index}"),
            pid: Pid::new(NodeId::from_bytes([1; 16]), 1, index),
            scope: Scope::Consistent,
        }),
    }
}

/// What the store acknowledged before the crash.
#[derive(Debug, Default)]
struct Acked {
    /// The last index of an acknowledged append.
    last: u64,
    vote: Option<Vote<RaftId>>,
    /// The last log index of an acknowledged snapshot.
    snapshot: Option<u64>,
    /// The workload ran to its end (the failpoint did not fire).
    finished: bool,
}

fn open_disk(disk: &SimDisk) -> Result<(LogStore, StateMachineStore), StoreError> {
    let (log, sm, _closed) = open_on(&Disk::Simulated(disk.clone()), "")?;
    Ok((log, sm))
}

/// Appends, votes and snapshots until the store fails or the workload ends.
async fn workload(log: &mut LogStore, sm: &mut StateMachineStore) -> Acked {
    let mut acked = Acked::default();
    for i in 1..=APPENDS {
        let batch: Vec<_> = (acked.last + 1..=acked.last + BATCH).map(entry).collect();
        if log.blocking_append(batch).await.is_err() {
            return acked;
        }
        acked.last += BATCH;
        if i.is_multiple_of(2) {
            let vote = Vote::new_committed(i, 1);
            if log.save_vote(&vote).await.is_err() {
                return acked;
            }
            acked.vote = Some(vote);
        }
        if i.is_multiple_of(4) {
            let applied = sm.applied_state().await.unwrap().0.map_or(0, |l| l.index);
            let todo: Vec<_> = (applied + 1..=acked.last).map(entry).collect();
            sm.apply(todo).await.unwrap();
            if sm.build_snapshot().await.is_err() {
                return acked;
            }
            acked.snapshot = Some(acked.last);
        }
    }
    acked.finished = true;
    acked
}

/// Reopens the disk and checks it against what was acknowledged.
async fn check(disk: &SimDisk, acked: &Acked, what: &str) {
    let (mut log, mut sm) =
        open_disk(disk).unwrap_or_else(|e| panic!("{what}: the store does not reopen: {e}"));
    let state = log.get_log_state().await.unwrap();
    let last = state.last_log_id.map_or(0, |l| l.index);
    assert!(
        last >= acked.last,
        "{what}: acknowledged entries lost ({last} < {})",
        acked.last
    );
    assert!(
        last.is_multiple_of(BATCH) && last <= acked.last + BATCH,
        "{what}: a batch half there, or more than the one in flight: last {last}, acked {}",
        acked.last
    );
    let entries = log.try_get_log_entries(1..last + 1).await.unwrap();
    let expected: Vec<_> = (1..=last).map(entry).collect();
    assert_eq!(entries, expected, "{what}: the log is not the one written");
    let vote = log.read_vote().await.unwrap();
    assert!(
        vote >= acked.vote,
        "{what}: acknowledged vote lost: {vote:?} < {:?}",
        acked.vote
    );
    let (applied, _) = sm.applied_state().await.unwrap();
    let applied = applied.map_or(0, |l| l.index);
    if let Some(at) = acked.snapshot {
        assert!(
            applied >= at,
            "{what}: acknowledged snapshot lost ({applied} < {at})"
        );
    }
    assert!(applied <= last, "{what}: a snapshot ahead of the log");
    let registry = sm.state().read().unwrap().registry.clone();
    assert_eq!(
        registry.names().len() as u64,
        applied,
        "{what}: the recovered state machine does not match its snapshot"
    );
    // Still a working store: the log grows on from where it is.
    let next: Vec<_> = (last + 1..=last + BATCH).map(entry).collect();
    log.blocking_append(next).await.unwrap();
    assert_eq!(
        log.get_log_state()
            .await
            .unwrap()
            .last_log_id
            .map(|l| l.index),
        Some(last + BATCH)
    );
}

/// Syncs the whole workload makes on a fresh store.
async fn syncs_in_workload() -> u64 {
    let disk = SimDisk::new();
    let (mut log, mut sm) = open_disk(&disk).unwrap();
    let before = disk.stats().syncs;
    let acked = workload(&mut log, &mut sm).await;
    assert!(acked.finished);
    disk.stats().syncs - before
}

async fn crash_at_every_sync(failpoint: Failpoint) {
    let syncs = syncs_in_workload().await;
    assert!(syncs >= APPENDS, "{syncs} syncs");
    for nth in 1..=syncs {
        let disk = SimDisk::new();
        let (mut log, mut sm) = open_disk(&disk).unwrap();
        disk.arm(failpoint, nth);
        let acked = workload(&mut log, &mut sm).await;
        let what = format!("{failpoint:?} at sync {nth} of {syncs}");
        assert!(!acked.finished, "{what}: the failpoint never fired");
        assert_eq!(disk.tripped(), 1, "{what}");
        drop((log, sm));
        check(&disk, &acked, &what).await;
    }
}

fn run(f: impl std::future::Future<Output = ()>) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f);
}

#[test]
fn a_crash_before_any_sync_loses_only_what_was_not_acknowledged() {
    run(crash_at_every_sync(Failpoint::CrashBeforeSync));
}

#[test]
fn a_crash_after_any_sync_keeps_the_batch_whole() {
    run(crash_at_every_sync(Failpoint::CrashAfterSync));
}

#[test]
fn a_batch_torn_at_any_sync_is_rolled_back_or_kept_whole() {
    run(async {
        for seed in 0..4 {
            crash_at_every_sync(Failpoint::TornSync { seed }).await;
        }
    });
}

#[test]
fn the_check_catches_a_lost_acknowledged_entry() {
    run(async {
        let disk = SimDisk::new();
        let (mut log, mut sm) = open_disk(&disk).unwrap();
        let mut acked = workload(&mut log, &mut sm).await;
        drop((log, sm));
        // Claim one more batch than the store holds: the check must refuse it.
        acked.last += BATCH;
        let caught = tokio::spawn(async move { check(&disk, &acked, "constructed").await })
            .await
            .is_err();
        assert!(caught, "a lost acknowledged entry went unnoticed");
    });
}
