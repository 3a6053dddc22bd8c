//! The redb store against openraft's storage conformance suite, and across a restart.

use atoll_core::{NodeId, Pid, Scope};
use atoll_raft::{Command, LogStore, Outcome, StateMachineStore, TypeConfig};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{
    CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader, RaftSnapshotBuilder,
    StorageError, Vote,
};
use tempfile::TempDir;

struct TempStore;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for TempStore {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<u64>> {
        let dir = tempfile::tempdir().map_err(|e| {
            StorageError::from_io_error(
                openraft::ErrorSubject::Store,
                openraft::ErrorVerb::Write,
                e,
            )
        })?;
        let (log, sm) = atoll_raft::open(dir.path().join("raft.redb")).map_err(|e| {
            StorageError::from_io_error(
                openraft::ErrorSubject::Store,
                openraft::ErrorVerb::Read,
                std::io::Error::other(e.to_string()),
            )
        })?;
        Ok((dir, log, sm))
    }
}

#[test]
fn conformance_suite() -> Result<(), Box<StorageError<u64>>> {
    Suite::test_all(TempStore).map_err(Box::new)
}

fn entry(term: u64, index: u64, command: Command) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
        payload: EntryPayload::Normal(command),
    }
}

fn register(name: &str, serial: u64) -> Command {
    Command::Register {
        name: name.into(),
        pid: Pid::new(NodeId::from_bytes([1; 16]), 1, serial),
        scope: Scope::Consistent,
    }
}

#[tokio::test]
async fn log_vote_and_snapshot_survive_a_restart() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("raft.redb");
    let entries: Vec<_> = (1..=5)
        .map(|i| entry(2, i, register(&format!("n{i}"), i)))
        .collect();
    let vote = Vote::new_committed(2, 1);
    {
        let (mut log, mut sm) = atoll_raft::open(&path)?;
        // `blocking_append` returns once the store has reported the entries flushed.
        RaftLogStorageExt::blocking_append(&mut log, entries.clone()).await?;
        log.save_vote(&vote).await?;
        log.save_committed(Some(entries[3].log_id)).await?;
        let outcomes = sm.apply(entries[..3].to_vec()).await?;
        assert_eq!(outcomes, vec![Outcome::Registered; 3]);
        sm.build_snapshot().await?;
    }
    let (mut log, mut sm) = atoll_raft::open(&path)?;
    assert_eq!(log.read_vote().await?, Some(vote));
    assert_eq!(log.read_committed().await?, Some(entries[3].log_id));
    let state = log.get_log_state().await?;
    assert_eq!(state.last_log_id, Some(entries[4].log_id));
    assert_eq!(log.try_get_log_entries(1..6).await?, entries);
    let (applied, _) = sm.applied_state().await?;
    assert_eq!(applied, Some(entries[2].log_id));
    let registry = sm
        .state()
        .read()
        .map_err(|e| e.to_string())?
        .registry
        .clone();
    assert_eq!(registry.names().len(), 3);
    assert!(sm.get_current_snapshot().await?.is_some());
    Ok(())
}
