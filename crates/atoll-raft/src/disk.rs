//! Where the Raft store keeps its bytes: a file, or a simulated disk that models `fsync`.
//!
//! A [`SimDisk`] holds the bytes of one store in memory. Writes land in the disk's cache;
//! only a sync makes them durable. [`SimDisk::crash`] throws away everything written since
//! the last sync (as a power cut does), and cuts off the store that was open: a crashed
//! process writes nothing more. A store opened on the disk afterwards recovers from what
//! was durable. Its I/O runs inline on the caller's task, so a simulation stays on one
//! thread and repeats.
//!
//! Besides the store, a disk keeps the machine's small files written whole and synced at once
//! ([`SimDisk::write_file_synced`]): a node's incarnation record lives there.
//!
//! A [`Failpoint`] armed on the disk crashes it at a chosen sync: before the sync (the batch
//! is lost), after it (the batch is durable but its store never hears so), or in the middle
//! (a torn batch: some of its writes reach the disk, one of them only in part).

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

/// A simulated disk for one Raft store (and the machine's small files). Cheap to clone;
/// clones are the same disk.
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
    /// The armed failpoint and how many syncs until it fires (1: the next).
    armed: Option<(Failpoint, u64)>,
    tripped: u64,
    /// Small files, each written whole and synced (durable at once).
    files: std::collections::BTreeMap<String, Vec<u8>>,
}

/// A crash at a sync, armed with [`SimDisk::arm`]. The sync fails, and the store that had
/// the disk open is cut off as by [`SimDisk::crash`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failpoint {
    /// The power goes before the sync: every write since the last sync is lost.
    CrashBeforeSync,
    /// The power goes right after the sync: the writes are durable, but the store sees the
    /// sync fail and acknowledges nothing.
    CrashAfterSync,
    /// The power goes during the sync: of the writes since the last sync, a part chosen by
    /// `seed` reaches the disk and the rest is lost, one lost write having reached it in
    /// part (its first half).
    TornSync {
        /// Chooses which writes survive.
        seed: u64,
    },
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
    /// Failpoints that fired.
    pub tripped: u64,
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
        self.lock().crash();
    }

    /// Arms `failpoint` to fire at the `nth` sync from now (1: the next one; 0 disarms).
    /// One failpoint at a time: arming replaces the one armed before.
    pub fn arm(&self, failpoint: Failpoint, nth: u64) {
        self.lock().armed = (nth > 0).then_some((failpoint, nth));
    }

    /// How many armed failpoints have fired.
    pub fn tripped(&self) -> u64 {
        self.lock().tripped
    }

    /// The disk's counters.
    pub fn stats(&self) -> SimDiskStats {
        let s = self.lock();
        SimDiskStats {
            syncs: s.syncs,
            lost_writes: s.lost_writes,
            len: s.bytes.len() as u64,
            tripped: s.tripped,
        }
    }

    /// Writes the small file `name` whole and makes it durable before returning, as
    /// writing a temporary file, syncing it and renaming it over `name` does: a crash
    /// keeps it (the last one written).
    pub fn write_file_synced(&self, name: &str, bytes: &[u8]) {
        self.lock().files.insert(name.to_string(), bytes.to_vec());
    }

    /// The small file `name`, if one was written.
    pub fn read_file(&self, name: &str) -> Option<Vec<u8>> {
        self.lock().files.get(name).cloned()
    }

    /// A redb backend on this disk, for a store opened now.
    pub(crate) fn backend(&self) -> SimBackend {
        SimBackend {
            disk: self.clone(),
            generation: self.lock().generation,
        }
    }
}

impl DiskState {
    fn crash(&mut self) {
        let undo = std::mem::take(&mut self.undo);
        self.lost_writes += undo.len() as u64;
        for (offset, before) in undo.into_iter().rev() {
            self.put_back(offset, &before);
        }
        if let Some(len) = self.synced_len.take() {
            self.bytes.resize(len, 0);
        }
        self.generation += 1;
    }

    /// Puts back what a write overwrote.
    fn put_back(&mut self, offset: u64, before: &[u8]) {
        let at = offset as usize;
        if self.bytes.len() < at + before.len() {
            self.bytes.resize(at + before.len(), 0);
        }
        self.bytes[at..at + before.len()].copy_from_slice(before);
    }

    fn sync(&mut self) {
        self.undo.clear();
        self.synced_len = None;
        self.syncs += 1;
    }

    /// Some of the writes since the last sync reach the disk, then the power goes.
    fn tear(&mut self, seed: u64) {
        let undo = std::mem::take(&mut self.undo);
        let mut rng = atoll_core::SplitMix64::new(seed);
        let kept: Vec<bool> = undo
            .iter()
            .map(|_| rng.next_u64().is_multiple_of(2))
            .collect();
        let lost: Vec<usize> = (0..undo.len()).filter(|i| !kept[*i]).collect();
        let torn = (!lost.is_empty()).then(|| lost[(rng.next_u64() % lost.len() as u64) as usize]);
        for (i, (offset, before)) in undo.iter().enumerate().rev() {
            if kept[i] {
                continue;
            }
            self.lost_writes += 1;
            if Some(i) == torn {
                // Its first half made it.
                let half = before.len() / 2;
                self.put_back(offset + half as u64, &before[half..]);
            } else {
                self.put_back(*offset, before);
            }
        }
        // The file keeps the length the surviving writes gave it.
        self.synced_len = None;
        self.generation += 1;
    }

    /// A sync: fires the armed failpoint when its turn comes.
    fn sync_or_fail(&mut self) -> io::Result<()> {
        let fire = match &mut self.armed {
            Some((failpoint, n)) if *n <= 1 => Some(*failpoint),
            Some((_, n)) => {
                *n -= 1;
                None
            }
            None => None,
        };
        let Some(failpoint) = fire else {
            self.sync();
            return Ok(());
        };
        self.armed = None;
        self.tripped += 1;
        match failpoint {
            Failpoint::CrashBeforeSync => self.crash(),
            Failpoint::CrashAfterSync => {
                self.sync();
                self.generation += 1;
            }
            Failpoint::TornSync { seed } => self.tear(seed),
        }
        Err(io::Error::other(format!(
            "the disk crashed at a sync ({failpoint:?})"
        )))
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
        self.live()?.sync_or_fail()
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
    fn a_crash_before_a_sync_loses_the_batch_and_cuts_the_store_off() {
        let disk = SimDisk::new();
        let b = disk.backend();
        b.write(0, b"aaaa").unwrap();
        b.sync_data(false).unwrap();
        disk.arm(Failpoint::CrashBeforeSync, 2);
        b.write(0, b"bbbb").unwrap();
        b.sync_data(false).unwrap();
        b.write(0, b"cccc").unwrap();
        assert!(b.sync_data(false).is_err());
        assert!(b.read(0, 4).is_err(), "cut off");
        assert_eq!(disk.backend().read(0, 4).unwrap(), b"bbbb");
        assert_eq!(disk.tripped(), 1);
    }

    #[test]
    fn a_crash_after_a_sync_keeps_the_batch_but_fails_the_sync() {
        let disk = SimDisk::new();
        let b = disk.backend();
        disk.arm(Failpoint::CrashAfterSync, 1);
        b.write(0, b"abcd").unwrap();
        assert!(b.sync_data(false).is_err());
        assert!(b.write(0, b"x").is_err(), "cut off");
        assert_eq!(disk.backend().read(0, 4).unwrap(), b"abcd");
    }

    #[test]
    fn a_torn_sync_keeps_part_of_the_batch_and_tears_one_write() {
        let before = vec![b'.'; 64];
        let mut outcomes = std::collections::BTreeSet::new();
        for seed in 0..32 {
            let disk = SimDisk::new();
            let b = disk.backend();
            b.write(0, &before).unwrap();
            b.sync_data(false).unwrap();
            disk.arm(Failpoint::TornSync { seed }, 1);
            for i in 0..4u8 {
                b.write(u64::from(i) * 16, &[b'0' + i; 16]).unwrap();
            }
            assert!(b.sync_data(false).is_err());
            let after = disk.backend().read(0, 64).unwrap();
            // Each 16-byte write is whole, absent, or only its first half made it.
            for (i, chunk) in after.chunks(16).enumerate() {
                let new = b'0' + i as u8;
                let whole = chunk.iter().all(|c| *c == new);
                let absent = chunk.iter().all(|c| *c == b'.');
                let half =
                    chunk[..8].iter().all(|c| *c == new) && chunk[8..].iter().all(|c| *c == b'.');
                assert!(whole || absent || half, "seed {seed}: {after:?}");
            }
            outcomes.insert(after);
        }
        assert!(outcomes.len() > 4, "the seed chooses what survives");
    }

    #[test]
    fn a_failpoint_fires_once_at_its_turn() {
        let disk = SimDisk::new();
        let b = disk.backend();
        disk.arm(Failpoint::CrashBeforeSync, 3);
        b.sync_data(false).unwrap();
        b.sync_data(false).unwrap();
        assert!(b.sync_data(false).is_err());
        let b = disk.backend();
        b.sync_data(false).unwrap();
        assert_eq!(disk.tripped(), 1);
    }

    #[test]
    fn a_small_file_written_synced_survives_a_crash() {
        let disk = SimDisk::new();
        assert_eq!(disk.read_file("incarnation"), None);
        disk.write_file_synced("incarnation", b"7");
        disk.write_file_synced("incarnation", b"8");
        disk.crash();
        assert_eq!(disk.read_file("incarnation").as_deref(), Some(&b"8"[..]));
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
