//! A [`ChainStore`] in a redb file: every append is one transaction, durable when it
//! returns; every entry read back is size-checked, decoded and hash-checked.

use std::path::Path;

use redb::{Database, ReadableTable, TableDefinition};

use crate::chain::{ChainEntry, ChainError, ChainHead, ChainStore, take_budget};

const LOG: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("chain_log");

fn store_err(e: impl std::fmt::Display) -> ChainError {
    ChainError::Store(e.to_string())
}

/// A hash-linked log in a redb database.
///
/// ```
/// use atoll_data::{Chain, ChainView, RedbChainStore};
///
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("chain.redb");
/// let mut chain = Chain::new(RedbChainStore::open(&path).unwrap());
/// chain.append(b"one".to_vec()).unwrap();
/// drop(chain);
/// let chain = Chain::new(RedbChainStore::open(&path).unwrap());
/// assert_eq!(chain.head().sequence, 1);
/// ```
#[derive(Debug)]
pub struct RedbChainStore {
    db: Database,
    head: ChainHead,
}

impl RedbChainStore {
    /// Opens (or creates) the log at `path`, checking its last entry.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, ChainError> {
        let db = Database::create(path).map_err(store_err)?;
        let txn = db.begin_write().map_err(store_err)?;
        txn.open_table(LOG).map_err(store_err)?;
        txn.commit().map_err(store_err)?;
        let mut store = RedbChainStore {
            db,
            head: ChainHead::EMPTY,
        };
        let last = {
            let txn = store.db.begin_read().map_err(store_err)?;
            let table = txn.open_table(LOG).map_err(store_err)?;
            let last = table.last().map_err(store_err)?;
            match last {
                Some((k, v)) => Some(Self::decode(k.value(), v.value())?),
                None => None,
            }
        };
        if let Some(e) = last {
            store.head = ChainHead {
                sequence: e.sequence,
                hash: e.hash,
            };
        }
        Ok(store)
    }

    fn decode(key: u64, bytes: &[u8]) -> Result<ChainEntry, ChainError> {
        let e = ChainEntry::decode(bytes)?;
        if e.sequence != key {
            return Err(ChainError::Corrupt(crate::DecodeError::Invalid(format!(
                "entry {} stored under {key}",
                e.sequence
            ))));
        }
        Ok(e)
    }

    /// Reads the whole log back and checks every hash and link (for start-up after a
    /// crash or an operator's check). Returns the number of entries.
    pub fn verify_all(&self) -> Result<u64, ChainError> {
        let txn = self.db.begin_read().map_err(store_err)?;
        let table = txn.open_table(LOG).map_err(store_err)?;
        let mut prev = ChainHead::EMPTY;
        for item in table.iter().map_err(store_err)? {
            let (k, v) = item.map_err(store_err)?;
            let e = Self::decode(k.value(), v.value())?;
            if e.sequence != prev.sequence + 1 || e.prev_hash != prev.hash {
                return Err(ChainError::BadLink {
                    sequence: e.sequence,
                });
            }
            prev = ChainHead {
                sequence: e.sequence,
                hash: e.hash,
            };
        }
        Ok(prev.sequence)
    }
}

impl ChainStore for RedbChainStore {
    fn head(&self) -> ChainHead {
        self.head
    }

    fn get(&self, sequence: u64) -> Result<Option<ChainEntry>, ChainError> {
        let txn = self.db.begin_read().map_err(store_err)?;
        let table = txn.open_table(LOG).map_err(store_err)?;
        let got = table.get(sequence).map_err(store_err)?;
        got.map(|v| Self::decode(sequence, v.value())).transpose()
    }

    fn range(&self, after: u64, max_bytes: usize) -> Result<Vec<ChainEntry>, ChainError> {
        let txn = self.db.begin_read().map_err(store_err)?;
        let table = txn.open_table(LOG).map_err(store_err)?;
        let mut decoded = Vec::new();
        let mut used = 0usize;
        for item in table.range(after.saturating_add(1)..).map_err(store_err)? {
            let (k, v) = item.map_err(store_err)?;
            used = used.saturating_add(v.value().len());
            decoded.push(Self::decode(k.value(), v.value())?);
            if used > max_bytes {
                break;
            }
        }
        Ok(take_budget(decoded.into_iter(), max_bytes))
    }

    fn append(&mut self, entries: &[ChainEntry]) -> Result<(), ChainError> {
        let Some(last) = entries.last() else {
            return Ok(());
        };
        let txn = self.db.begin_write().map_err(store_err)?;
        {
            let mut table = txn.open_table(LOG).map_err(store_err)?;
            for e in entries {
                table
                    .insert(e.sequence, e.encode().as_slice())
                    .map_err(store_err)?;
            }
        }
        txn.commit().map_err(store_err)?;
        self.head = ChainHead {
            sequence: last.sequence,
            hash: last.hash,
        };
        Ok(())
    }
}
