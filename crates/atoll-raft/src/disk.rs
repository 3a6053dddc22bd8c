//! Where the Raft store keeps its bytes: a file, or a simulated disk that models `fsync`.
//!
//! A [`SimDisk`] holds the bytes of one store in memory. Writes land in the disk's cache;
//! only a sync makes them durable. [`SimDisk::crash`] throws away everything written since
//! the last sync (as a power cut does), and cuts off the store that was open: a crashed
//! process writes nothing more. A store opened on the disk afterwards recovers from what
//! was durable. Its I/O runs inline on the caller's task, so a simulation stays on one
//! thread and repeats.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

/// Where a Raft store lives.
#[derive(Clone, Debug, Default)]
pub enum Disk {
    /// The file `raft.redb` in the data directory, its I/O on tokio's blocking threads.
    #[default]
    Files,
    /// A simulated disk (for simulations).
    Simulated(SimDisk),
}

/// A simulated disk for one Raft store. Cheap to clone; clones are the same disk.
#[derive(Clone, Debug, Default)]
pub struct SimDisk {
    state: Arc<Mutex<DiskState>>,
}

#[derive(Debug, Default)]
struct DiskState {
    /// What a reader sees now (cache and durable bytes together).
    bytes: Vec<u8>,
    /// How to go back to the last synced state: (offset, bytes before) in write order,
    /// and the length at the last sync (if it changed since).
    undo: Vec<(u64, Vec<u8>)>,
    synced_len: Option<usize>,
    /// Bumped by a crash: stores opened before it are cut off.
    generation: u64,
    syncs: u64,
    lost_writes: u64,
}

/// Counters of a simulated disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimDiskStats {
    /// Syncs made.
    pub syncs: u64,
    /// Writes thrown away by crashes (they were not synced).
    pub lost_writes: u64,
    /// Bytes on the disk.
    pub len: u64,
}

impl SimDisk {
    /// An empty disk.
    pub fn new() -> Self {
        SimDisk::default()
    }

    fn lock(&self) -> MutexGuard<'_, DiskState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A power cut: every write since the last sync is lost, and the store that had the
    /// disk open can no longer touch it.
    pub fn crash(&self) {
        let mut s = self.lock();
        let undo = std::mem::take(&mut s.undo);
        s.lost_writes += undo.len() as u64;
        for (offset, before) in undo.into_iter().rev() {
            let at = offset as usize;
            if s.bytes.len() < at + before.len() {
                s.bytes.resize(at + before.len(), 0);
            }
            s.bytes[at..at + before.len()].copy_from_slice(&before);
        }
        if let Some(len) = s.synced_len.take() {
            s.bytes.resize(len, 0);
        }
        s.generation += 1;
    }

    /// The disk's counters.
    pub fn stats(&self) -> SimDiskStats {
        let s = self.lock();
        SimDiskStats {
            syncs: s.syncs,
            lost_writes: s.lost_writes,
            len: s.bytes.len() as u64,
        }
    }

    /// A redb backend on this disk, for a store opened now.
    pub(crate) fn backend(&self) -> SimBackend {
        SimBackend {
            disk: self.clone(),
            generation: self.lock().generation,
        }
    }
}

/// One open store's handle on a [`SimDisk`].
#[derive(Debug)]
pub(crate) struct SimBackend {
    disk: SimDisk,
    generation: u64,
}

impl SimBackend {
    /// The disk, unless a crash cut this handle off.
    fn live(&self) -> io::Result<MutexGuard<'_, DiskState>> {
        let s = self.disk.lock();
        if s.generation != self.generation {
            return Err(io::Error::other("the disk crashed under this store"));
        }
        Ok(s)
    }
}

impl redb::StorageBackend for SimBackend {
    fn len(&self) -> io::Result<u64> {
        Ok(self.live()?.bytes.len() as u64)
    }

    fn read(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let s = self.live()?;
        let at = usize::try_from(offset).map_err(io::Error::other)?;
        s.bytes
            .get(at..at + len)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end"))
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut s = self.live()?;
        let len = usize::try_from(len).map_err(io::Error::other)?;
        if s.synced_len.is_none() {
            s.synced_len = Some(s.bytes.len());
        }
        if len < s.bytes.len() {
            // Keep what a shrink drops, so a crash brings it back.
            let dropped = s.bytes[len..].to_vec();
            s.undo.push((len as u64, dropped));
        }
        s.bytes.resize(len, 0);
        Ok(())
    }

    fn sync_data(&self, _eventual: bool) -> io::Result<()> {
        let mut s = self.live()?;
        s.undo.clear();
        s.synced_len = None;
        s.syncs += 1;
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut s = self.live()?;
        let at = usize::try_from(offset).map_err(io::Error::other)?;
        if s.synced_len.is_none() {
            s.synced_len = Some(s.bytes.len());
        }
        if s.bytes.len() < at + data.len() {
            s.bytes.resize(at + data.len(), 0);
        }
        let before = s.bytes[at..at + data.len()].to_vec();
        s.undo.push((offset, before));
        s.bytes[at..at + data.len()].copy_from_slice(data);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::StorageBackend;

    #[test]
    fn a_crash_loses_unsynced_writes_only() {
        let disk = SimDisk::new();
        let b = disk.backend();
        b.write(0, b"hello").unwrap();
        b.sync_data(false).unwrap();
        b.write(2, b"LLO world").unwrap();
        assert_eq!(b.read(0, 11).unwrap(), b"heLLO world");
        disk.crash();
        assert!(b.read(0, 5).is_err(), "the crashed store is cut off");
        let after = disk.backend();
        assert_eq!(after.len().unwrap(), 5);
        assert_eq!(after.read(0, 5).unwrap(), b"hello");
        assert_eq!(disk.stats().lost_writes, 1);
    }

    #[test]
    fn a_crash_undoes_an_unsynced_shrink() {
        let disk = SimDisk::new();
        let b = disk.backend();
        b.write(0, b"abcdef").unwrap();
        b.sync_data(false).unwrap();
        b.set_len(2).unwrap();
        disk.crash();
        assert_eq!(disk.backend().read(0, 6).unwrap(), b"abcdef");
    }
}
