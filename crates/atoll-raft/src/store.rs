//! Durable Raft storage in one redb file: the log, the vote, the commit index and the last
//! snapshot, plus the in-memory [`Registry`] state machine.
//!
//! Every log append, truncation, purge, vote and snapshot is its own redb transaction
//! committed with immediate durability, which fsyncs before the commit returns; openraft is
//! told a log append is flushed only after that. The commit index is the exception: it is an
//! optional hint to openraft, kept in memory and written by the next durable commit (or
//! when the store closes), with no transaction of its own; it only ever names entries
//! already durable in this log, so a lost hint costs nothing but re-learning the commit
//! index from the leader. The state machine is
//! applied in memory and persisted only as snapshots: on restart openraft re-applies the
//! committed log after the stored snapshot.

use std::fmt::Debug;
use std::io::Cursor;
use std::ops::{Deref, RangeBounds};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogReader,
    RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{oneshot, watch};

use crate::disk::Disk;
use crate::feed::{DEFAULT_WINDOW, RecentEntries};
use crate::registry::{Outcome, Registry, SnapshotDecodeError};
use crate::types::{Node, RaftId, TypeConfig};

const LOG: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("raft_meta");

const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_LAST_PURGED: &str = "last_purged";
const KEY_SNAPSHOT: &str = "snapshot";

type StorageResult<T> = Result<T, StorageError<RaftId>>;

/// A storage operation failed below openraft.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed (I/O, corruption, or it is already open elsewhere).
    #[error("redb: {0}")]
    Db(Box<redb::Error>),
    /// A stored record did not decode.
    #[error("corrupt record: {0}")]
    Decode(#[from] postcard::Error),
    /// A stored or received snapshot did not decode.
    #[error(transparent)]
    Snapshot(#[from] SnapshotDecodeError),
    /// The blocking storage task was cancelled or panicked.
    #[error("storage task failed: {0}")]
    Task(String),
}

macro_rules! db_err {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(Box::new(e.into()))
            }
        }
    )*};
}
db_err!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

fn io_err(subject: ErrorSubject<RaftId>, verb: ErrorVerb, e: &StoreError) -> StorageError<RaftId> {
    StorageIOError::new(subject, verb, AnyError::new(e)).into()
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    Ok(postcard::to_stdvec(v)?)
}

fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, StoreError> {
    Ok(postcard::from_bytes(b)?)
}

/// Runs a redb write (which fsyncs) off the async worker threads, or inline on a simulated
/// disk (which keeps a simulation on one thread).
async fn blocking<T, F>(db: &Arc<Db>, f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&Db) -> Result<T, StoreError> + Send + 'static,
{
    if db.inline {
        return f(db);
    }
    let db = db.clone();
    tokio::task::spawn_blocking(move || f(&db))
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
}

fn meta_get<T: DeserializeOwned>(db: &Database, key: &str) -> Result<Option<T>, StoreError> {
    let txn = db.begin_read()?;
    let table = txn.open_table(META)?;
    match table.get(key)? {
        Some(v) => Ok(Some(decode(v.value())?)),
        None => Ok(None),
    }
}

fn meta_put(db: &Db, key: &str, bytes: &[u8]) -> Result<(), StoreError> {
    let txn = db.begin_write()?;
    {
        let mut table = txn.open_table(META)?;
        table.insert(key, bytes)?;
    }
    db.commit(txn)
}

/// Counters of what the log store did since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Calls to append log entries.
    pub appends: u64,
    /// Log entries appended (over all calls).
    pub entries_appended: u64,
    /// redb commits made with fsync (appends, votes, truncations, purges, snapshots).
    pub durable_commits: u64,
    /// Time spent in those commits, fsync included.
    pub durable_commit_time: Duration,
    /// Commit-index hints recorded (each carried to disk by the next durable commit).
    pub lazy_commits: u64,
}

/// The live counters behind [`StoreStats`], shared without keeping the database open.
#[derive(Default)]
pub(crate) struct Counters {
    appends: AtomicU64,
    entries_appended: AtomicU64,
    durable_commits: AtomicU64,
    durable_commit_nanos: AtomicU64,
    lazy_commits: AtomicU64,
}

/// The open database, shared by the log store, the state machine and their clones.
struct Db {
    db: Database,
    /// On a simulated disk: I/O runs inline, not on the blocking threads.
    inline: bool,
    counters: Arc<Counters>,
    /// The latest commit-index hint not yet written (encoded).
    hint: std::sync::Mutex<Option<Vec<u8>>>,
    // Fields drop in order: this sender goes only once the database is closed (its file
    // lock released), which is what the receiver from `open_watched` waits for.
    _closed: oneshot::Sender<()>,
}

impl Db {
    fn hint(&self) -> std::sync::MutexGuard<'_, Option<Vec<u8>>> {
        self.hint.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Commits `txn` with fsync, counting it, with the pending commit-index hint in it.
    fn commit(&self, txn: redb::WriteTransaction) -> Result<(), StoreError> {
        let started = Instant::now();
        let hint = self.hint().take();
        let committed = (|| {
            if let Some(bytes) = &hint {
                txn.open_table(META)?
                    .insert(KEY_COMMITTED, bytes.as_slice())?;
            }
            txn.commit()?;
            Ok::<_, StoreError>(())
        })();
        if let Err(e) = committed {
            // Not written: keep it for the next commit, unless a newer one came meanwhile.
            let mut pending = self.hint();
            if pending.is_none() {
                *pending = hint;
            }
            return Err(e);
        }
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.counters
            .durable_commits
            .fetch_add(1, Ordering::Relaxed);
        self.counters
            .durable_commit_nanos
            .fetch_add(nanos, Ordering::Relaxed);
        Ok(())
    }

    fn stats(&self) -> StoreStats {
        self.counters.stats()
    }
}

impl Counters {
    pub(crate) fn stats(&self) -> StoreStats {
        let c = self;
        StoreStats {
            appends: c.appends.load(Ordering::Relaxed),
            entries_appended: c.entries_appended.load(Ordering::Relaxed),
            durable_commits: c.durable_commits.load(Ordering::Relaxed),
            durable_commit_time: Duration::from_nanos(
                c.durable_commit_nanos.load(Ordering::Relaxed),
            ),
            lazy_commits: c.lazy_commits.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Db {
    /// A hint still pending goes to disk with the close (a crashed disk refuses it, as it
    /// would have lost it).
    fn drop(&mut self) {
        if self.hint().is_some()
            && let Ok(txn) = self.db.begin_write()
        {
            let _ = self.commit(txn);
        }
    }
}

impl Deref for Db {
    type Target = Database;

    fn deref(&self) -> &Database {
        &self.db
    }
}

/// Opens (or creates) the Raft database at `path` and returns its log store and state
/// machine, recovered from what the file holds.
pub fn open(path: impl AsRef<Path>) -> Result<(LogStore, StateMachineStore), StoreError> {
    let (log, sm, _closed) = open_watched(path)?;
    Ok((log, sm))
}

/// Like [`open`], plus a receiver that completes once the database is closed: after the
/// last clone of the stores is dropped, which openraft does on its own tasks.
pub(crate) fn open_watched(
    path: impl AsRef<Path>,
) -> Result<(LogStore, StateMachineStore, oneshot::Receiver<()>), StoreError> {
    open_on(&Disk::Files, path)
}

/// Like [`open_watched`], on `disk` (`path` is the file for [`Disk::Files`]).
pub(crate) fn open_on(
    disk: &Disk,
    path: impl AsRef<Path>,
) -> Result<(LogStore, StateMachineStore, oneshot::Receiver<()>), StoreError> {
    let (db, inline) = match disk {
        Disk::Files => (Database::create(path)?, false),
        Disk::Simulated(sim) => (
            redb::Builder::new().create_with_backend(sim.backend())?,
            true,
        ),
    };
    let txn = db.begin_write()?;
    txn.open_table(LOG)?;
    txn.open_table(META)?;
    txn.commit()?;
    let (tx, rx) = oneshot::channel();
    let db = Arc::new(Db {
        db,
        inline,
        counters: Arc::default(),
        hint: std::sync::Mutex::new(None),
        _closed: tx,
    });
    let sm = StateMachineStore::recover(db.clone())?;
    Ok((LogStore { db }, sm, rx))
}

/// The durable Raft log, vote and commit index (openraft's [`RaftLogStorage`]).
///
/// Cloning shares the database; a clone serves as the log reader for replication.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Db>,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").finish_non_exhaustive()
    }
}

impl LogStore {
    fn read_range<RB: RangeBounds<u64>>(
        &self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(LOG)?;
        let mut out = Vec::new();
        for item in table.range(range)? {
            let (_, v) = item?;
            out.push(decode(v.value())?);
        }
        Ok(out)
    }

    fn log_state(&self) -> Result<LogState<TypeConfig>, StoreError> {
        let last_purged: Option<LogId<RaftId>> = meta_get(&self.db, KEY_LAST_PURGED)?;
        let txn = self.db.begin_read()?;
        let table = txn.open_table(LOG)?;
        let last = match table.last()? {
            Some((_, v)) => Some(decode::<Entry<TypeConfig>>(v.value())?.log_id),
            None => None,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last.or(last_purged),
        })
    }

    /// The number of entries currently held in the log (after purges).
    pub fn len(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(LOG)?.len()?)
    }

    /// True when the log holds no entries.
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.len()? == 0)
    }

    /// What this store did since it was opened.
    pub fn stats(&self) -> StoreStats {
        self.db.stats()
    }

    pub(crate) fn counters(&self) -> Arc<Counters> {
        self.db.counters.clone()
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        self.read_range(range)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, &e))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        self.log_state()
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, &e))
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<RaftId>) -> StorageResult<()> {
        let vote = *vote;
        blocking(&self.db, move |db| meta_put(db, KEY_VOTE, &encode(&vote)?))
            .await
            .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Write, &e))
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<RaftId>>> {
        meta_get(&self.db, KEY_VOTE).map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Read, &e))
    }

    async fn save_committed(&mut self, committed: Option<LogId<RaftId>>) -> StorageResult<()> {
        // A hint, not a promise: openraft calls this before every apply, and the entries it
        // names are already durable here (openraft appends, and waits for the flush, before it
        // commits). So no transaction of its own: the next durable commit (the next append)
        // carries it to disk, and a crash before that only loses the hint, never an entry. (A
        // commit without fsync of its own would reach the disk at that same moment, at the
        // cost of a whole redb transaction per apply.)
        let bytes =
            encode(&committed).map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, &e))?;
        *self.db.hint() = Some(bytes);
        self.db
            .counters
            .lazy_commits
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<RaftId>>> {
        let pending = self.db.hint().clone();
        let committed = match pending {
            Some(bytes) => decode::<Option<LogId<RaftId>>>(&bytes).map(Some),
            None => meta_get::<Option<LogId<RaftId>>>(&self.db, KEY_COMMITTED),
        };
        Ok(committed
            .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Read, &e))?
            .flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut records = Vec::new();
        for entry in entries {
            let bytes =
                encode(&entry).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, &e))?;
            records.push((entry.log_id.index, bytes));
        }
        let counters = &self.db.counters;
        counters.appends.fetch_add(1, Ordering::Relaxed);
        counters
            .entries_appended
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        let written = blocking(&self.db, move |db| {
            let txn = db.begin_write()?;
            {
                let mut table = txn.open_table(LOG)?;
                for (index, bytes) in &records {
                    table.insert(*index, bytes.as_slice())?;
                }
            }
            db.commit(txn)
        })
        .await;
        match written {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(io_err(ErrorSubject::Logs, ErrorVerb::Write, &e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<RaftId>) -> StorageResult<()> {
        blocking(&self.db, move |db| {
            let txn = db.begin_write()?;
            {
                let mut table = txn.open_table(LOG)?;
                table.retain_in(log_id.index.., |_, _| false)?;
            }
            db.commit(txn)
        })
        .await
        .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, &e))
    }

    async fn purge(&mut self, log_id: LogId<RaftId>) -> StorageResult<()> {
        blocking(&self.db, move |db| {
            let txn = db.begin_write()?;
            {
                let mut meta = txn.open_table(META)?;
                meta.insert(KEY_LAST_PURGED, encode(&log_id)?.as_slice())?;
                let mut table = txn.open_table(LOG)?;
                table.retain_in(..=log_id.index, |_, _| false)?;
            }
            db.commit(txn)
        })
        .await
        .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, &e))
    }
}

/// What the state machine holds in memory: the registry and how far it has applied.
#[derive(Clone, Debug, Default)]
pub struct AppliedState {
    /// The last log id applied to the registry.
    pub last_applied: Option<LogId<RaftId>>,
    /// The last membership applied.
    pub membership: StoredMembership<RaftId, Node>,
    /// The registry.
    pub registry: Registry,
    /// The commands of the latest applied entries, for members that follow by deltas.
    pub recent: RecentEntries,
}

/// The stored form of the last snapshot.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<RaftId, Node>,
    data: Vec<u8>,
}

/// The [`Registry`] state machine (openraft's [`RaftStateMachine`]), applied in memory, with
/// its last snapshot stored in the Raft database.
///
/// Cloning shares the state; [`StateMachineStore::state`] gives readers the live registry.
#[derive(Clone)]
pub struct StateMachineStore {
    db: Arc<Db>,
    state: Arc<RwLock<AppliedState>>,
    applied: Arc<watch::Sender<u64>>,
    /// The same index as `applied`, for readers that must not take a lock.
    applied_index: Arc<AtomicU64>,
}

impl Debug for StateMachineStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMachineStore").finish_non_exhaustive()
    }
}

impl StateMachineStore {
    fn recover(db: Arc<Db>) -> Result<Self, StoreError> {
        let mut state = AppliedState::default();
        if let Some(snap) = meta_get::<StoredSnapshot>(&db, KEY_SNAPSHOT)? {
            state = AppliedState {
                last_applied: snap.meta.last_log_id,
                membership: snap.meta.last_membership,
                registry: Registry::from_bytes(&snap.data)?,
                recent: RecentEntries::new(
                    DEFAULT_WINDOW,
                    snap.meta.last_log_id.map_or(0, |l| l.index),
                ),
            };
        }
        let applied = state.last_applied.map_or(0, |l| l.index);
        Ok(StateMachineStore {
            db,
            state: Arc::new(RwLock::new(state)),
            applied: Arc::new(watch::channel(applied).0),
            applied_index: Arc::new(AtomicU64::new(applied)),
        })
    }

    /// The live applied state, shared with the running state machine.
    pub fn state(&self) -> Arc<RwLock<AppliedState>> {
        self.state.clone()
    }

    /// The index of the last log entry applied (0 before any), changing right after each
    /// batch of entries is applied or a snapshot installed: a cheap way to wait for the
    /// registry to change.
    pub fn watch_applied(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// The index of the last log entry applied (0 before any), as a cell read without a
    /// lock: stored after the registry it describes, so a reader that loads it (acquire)
    /// and then reads the registry sees that index or a later one.
    pub fn applied_index(&self) -> Arc<AtomicU64> {
        self.applied_index.clone()
    }

    fn publish_applied(&self, last_applied: Option<LogId<RaftId>>) {
        let index = last_applied.map_or(0, |l| l.index);
        self.applied_index.store(index, Ordering::Release);
        self.applied.send_if_modified(|seen| {
            let changed = *seen != index;
            *seen = index;
            changed
        });
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, AppliedState> {
        // A panic while holding the lock cannot leave the registry half-updated: `apply`
        // mutates only through `Registry::apply`, which does not panic.
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, AppliedState> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    fn stored_snapshot(&self) -> Result<Option<StoredSnapshot>, StoreError> {
        meta_get(&self.db, KEY_SNAPSHOT)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let (meta, data) = {
            let state = self.read();
            let id = match state.last_applied {
                Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, l.leader_id.node_id),
                None => "empty".to_string(),
            };
            let meta = SnapshotMeta {
                last_log_id: state.last_applied,
                last_membership: state.membership.clone(),
                snapshot_id: id,
            };
            (meta, state.registry.to_bytes())
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        };
        blocking(&self.db, move |db| {
            meta_put(db, KEY_SNAPSHOT, &encode(&stored)?)
        })
        .await
        .map_err(|e| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Write, &e))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId<RaftId>>, StoredMembership<RaftId, Node>)> {
        let state = self.read();
        Ok((state.last_applied, state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<Outcome>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut out = Vec::new();
        let mut state = self.write();
        for entry in entries {
            state.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => out.push(Outcome::Noop),
                EntryPayload::Normal(cmd) => {
                    out.push(state.registry.apply(entry.log_id.index, &cmd));
                    state.recent.record(entry.log_id.index, cmd);
                }
                EntryPayload::Membership(m) => {
                    state.membership = StoredMembership::new(Some(entry.log_id), m);
                    out.push(Outcome::Noop);
                }
            }
        }
        let last_applied = state.last_applied;
        drop(state);
        self.publish_applied(last_applied);
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<RaftId, Node>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let data = snapshot.into_inner();
        let registry = Registry::from_bytes(&data).map_err(|e| {
            io_err(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Read,
                &e.into(),
            )
        })?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        blocking(&self.db, move |db| {
            meta_put(db, KEY_SNAPSHOT, &encode(&stored)?)
        })
        .await
        .map_err(|e| {
            io_err(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Write,
                &e,
            )
        })?;
        let mut state = self.write();
        let mut recent = std::mem::take(&mut state.recent);
        recent.reset(meta.last_log_id.map_or(0, |l| l.index));
        *state = AppliedState {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            registry,
            recent,
        };
        drop(state);
        self.publish_applied(meta.last_log_id);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let stored = self
            .stored_snapshot()
            .map_err(|e| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Read, &e))?;
        Ok(stored.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}

#[cfg(test)]
#[path = "store_crash_tests.rs"]
mod crash_tests;
