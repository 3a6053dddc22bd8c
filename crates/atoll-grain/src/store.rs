//! Where durable grain state lives: the [`GrainStore`] trait, fenced by activation epoch,
//! with an in-memory store and the embedded redb store.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::core::{GrainId, StaleEpoch, fence};

/// Why a grain state read or write failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// A newer activation of the grain has read or written the store: this (older) one is
    /// fenced off and nothing was written.
    #[error(transparent)]
    Stale(#[from] StaleEpoch),
    /// The state did not encode or decode; nothing was written.
    #[error("grain state codec: {0}")]
    Codec(String),
    /// The storage backend failed; the write may not have happened.
    #[error("grain store: {0}")]
    Backend(String),
}

/// Durable grain state, fenced by activation epoch.
///
/// Every call carries the epoch of the activation making it. A store remembers, per grain,
/// the highest epoch it has seen (by `load` or `save`) and refuses anything older with
/// [`StoreError::Stale`]: an activation that was paused or cut off while a successor took
/// over can never overwrite the successor's state.
///
/// ```
/// use atoll_grain::{GrainId, GrainStore, MemoryStore, StoreError};
///
/// let store = MemoryStore::new();
/// let id = GrainId::new("account", "alice");
/// assert_eq!(store.load(&id, 3).unwrap(), None);
/// store.save(&id, 3, b"100").unwrap();
/// // A newer activation reads the state; the old one can no longer write.
/// assert_eq!(store.load(&id, 7).unwrap(), Some(b"100".to_vec()));
/// assert!(matches!(store.save(&id, 3, b"0"), Err(StoreError::Stale(_))));
/// ```
pub trait GrainStore: Send + Sync + 'static {
    /// The last saved state of `id`, for the activation at `epoch`, which the store now
    /// takes as the highest it has seen (unless it has seen a higher one: `Stale`).
    fn load(&self, id: &GrainId, epoch: u64) -> Result<Option<Vec<u8>>, StoreError>;

    /// Replaces the state of `id`, for the activation at `epoch`.
    fn save(&self, id: &GrainId, epoch: u64, state: &[u8]) -> Result<(), StoreError>;

    /// The highest epoch the store has seen for `id`.
    fn epoch(&self, id: &GrainId) -> Result<Option<u64>, StoreError>;
}

/// What a store keeps per grain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    epoch: u64,
    /// (A byte string: the same bytes on disk as the sequence of numbers it once was.)
    #[serde(with = "serde_bytes")]
    state: Option<Vec<u8>>,
}

/// A [`GrainStore`] in memory: for tests, and for state that may be lost with the node.
#[derive(Debug, Default)]
pub struct MemoryStore {
    grains: Mutex<HashMap<GrainId, Record>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl GrainStore for MemoryStore {
    fn load(&self, id: &GrainId, epoch: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let mut grains = self.grains.lock().unwrap_or_else(|e| e.into_inner());
        let record = grains.entry(id.clone()).or_default();
        fence(Some(record.epoch), epoch)?;
        record.epoch = epoch;
        Ok(record.state.clone())
    }

    fn save(&self, id: &GrainId, epoch: u64, state: &[u8]) -> Result<(), StoreError> {
        let mut grains = self.grains.lock().unwrap_or_else(|e| e.into_inner());
        let record = grains.entry(id.clone()).or_default();
        fence(Some(record.epoch), epoch)?;
        record.epoch = epoch;
        record.state = Some(state.to_vec());
        Ok(())
    }

    fn epoch(&self, id: &GrainId) -> Result<Option<u64>, StoreError> {
        let grains = self.grains.lock().unwrap_or_else(|e| e.into_inner());
        Ok(grains.get(id).map(|r| r.epoch))
    }
}

const GRAINS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("grain_state");

/// The embedded [`GrainStore`]: one redb file on the hosting node (the `LocalExclusive`
/// durability class). Every write is committed durably before it returns.
pub struct RedbStore {
    db: Database,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore").finish_non_exhaustive()
    }
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn table_key(id: &GrainId) -> String {
    // The type name comes first and never holds a '/', so keys of two types never collide.
    format!("{}/{}", id.grain_type, id.key)
}

impl RedbStore {
    /// Opens the store at `path`, creating it if needed.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let db = Database::create(path).map_err(backend)?;
        let txn = db.begin_write().map_err(backend)?;
        txn.open_table(GRAINS).map_err(backend)?;
        txn.commit().map_err(backend)?;
        Ok(RedbStore { db })
    }

    /// Reads, fences and updates one record in a single write transaction.
    fn update<T>(
        &self,
        id: &GrainId,
        epoch: u64,
        change: impl FnOnce(&mut Record) -> T,
    ) -> Result<T, StoreError> {
        let key = table_key(id);
        let txn = self.db.begin_write().map_err(backend)?;
        let out = {
            let mut table = txn.open_table(GRAINS).map_err(backend)?;
            let mut record: Record = match table.get(key.as_str()).map_err(backend)? {
                Some(bytes) => postcard::from_bytes(bytes.value())
                    .map_err(|e| StoreError::Codec(e.to_string()))?,
                None => Record::default(),
            };
            fence(Some(record.epoch), epoch)?;
            record.epoch = epoch;
            let out = change(&mut record);
            let bytes =
                postcard::to_allocvec(&record).map_err(|e| StoreError::Codec(e.to_string()))?;
            table
                .insert(key.as_str(), bytes.as_slice())
                .map_err(backend)?;
            out
        };
        txn.commit().map_err(backend)?;
        Ok(out)
    }
}

impl GrainStore for RedbStore {
    fn load(&self, id: &GrainId, epoch: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.update(id, epoch, |r| r.state.clone())
    }

    fn save(&self, id: &GrainId, epoch: u64, state: &[u8]) -> Result<(), StoreError> {
        self.update(id, epoch, |r| r.state = Some(state.to_vec()))
    }

    fn epoch(&self, id: &GrainId) -> Result<Option<u64>, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let table = txn.open_table(GRAINS).map_err(backend)?;
        match table.get(table_key(id).as_str()).map_err(backend)? {
            Some(bytes) => {
                let record: Record = postcard::from_bytes(bytes.value())
                    .map_err(|e| StoreError::Codec(e.to_string()))?;
                Ok(Some(record.epoch))
            }
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_written_with_the_state_as_a_sequence_of_numbers_still_read() {
        // How a record was encoded before its state became a byte string.
        #[derive(Serialize)]
        struct Before {
            epoch: u64,
            state: Option<Vec<u8>>,
        }
        let before = Before {
            epoch: 7,
            state: Some((0..=255).collect()),
        };
        let bytes = postcard::to_allocvec(&before).unwrap();
        let record: Record = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(record.epoch, 7);
        assert_eq!(record.state, before.state);
        assert_eq!(postcard::to_allocvec(&record).unwrap(), bytes);
    }

    /// What every store must do (a conformance check for implementations of the trait).
    fn conformance(store: &dyn GrainStore) {
        let a = GrainId::new("t", "a");
        let b = GrainId::new("t", "b");
        assert_eq!(store.epoch(&a).unwrap(), None);
        assert_eq!(store.load(&a, 5).unwrap(), None);
        assert_eq!(store.epoch(&a).unwrap(), Some(5));
        store.save(&a, 5, b"one").unwrap();
        assert_eq!(store.load(&a, 5).unwrap(), Some(b"one".to_vec()));
        // Another grain is fenced separately.
        store.save(&b, 1, b"b").unwrap();
        // A successor reads, and from then on the predecessor is refused.
        assert_eq!(store.load(&a, 8).unwrap(), Some(b"one".to_vec()));
        assert_eq!(
            store.save(&a, 5, b"late"),
            Err(StoreError::Stale(StaleEpoch { epoch: 5, seen: 8 }))
        );
        assert!(matches!(store.load(&a, 6), Err(StoreError::Stale(_))));
        assert_eq!(store.load(&a, 8).unwrap(), Some(b"one".to_vec()));
        store.save(&a, 9, b"two").unwrap();
        assert_eq!(store.load(&a, 9).unwrap(), Some(b"two".to_vec()));
        assert_eq!(store.load(&b, 1).unwrap(), Some(b"b".to_vec()));
    }

    #[test]
    fn memory_store_fences_by_epoch() {
        conformance(&MemoryStore::new());
    }

    #[test]
    fn redb_store_fences_by_epoch_and_keeps_state_across_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grains.redb");
        {
            let store = RedbStore::open(&path).unwrap();
            conformance(&store);
        }
        let store = RedbStore::open(&path).unwrap();
        let a = GrainId::new("t", "a");
        assert_eq!(store.epoch(&a).unwrap(), Some(9));
        assert!(matches!(store.save(&a, 8, b"x"), Err(StoreError::Stale(_))));
        assert_eq!(store.load(&a, 10).unwrap(), Some(b"two".to_vec()));
    }
}
