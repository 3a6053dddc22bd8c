//! Where a node's incarnation number comes from: one rule for every start
//! ([`crate::protocol::incarnation::start`]), fed the machine's wall clock and the last
//! number recorded on the machine, the new one recorded (synced) before it is used.
//!
//! - A node with a directory to record in (a voter's data directory, or
//!   [`NodeConfig::state_dir`](crate::NodeConfig::state_dir)) keeps growing across restarts
//!   whatever its clock does.
//! - A node without one has the wall clock and, within this process, the last number
//!   handed out here (nodes restarted in one process within a quarter-second). Restarted in
//!   a new process after its clock stepped back, it can repeat an earlier run's number.
//! - In the simulator, the record lives on the machine's simulated disk and the clock is
//!   the machine's simulated wall clock (skewed and jumped by the fault plan).

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use atoll_raft::SimDisk;

use crate::protocol::incarnation::{RECORD_FILE, start};

/// The next incarnation of a node recording in `dir` (if any), at the system's wall clock.
/// Fails if the record cannot be made durable: a number that was not recorded could be
/// handed out again.
pub(super) fn next(dir: Option<&Path>) -> std::io::Result<u32> {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    match dir {
        Some(dir) => {
            let record = match std::fs::read(dir.join(RECORD_FILE)) {
                Ok(bytes) => Some(bytes),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(e),
            };
            let (next, record) = start(millis, record.as_deref(), None);
            write_synced(dir, &record)?;
            Ok(next)
        }
        None => Ok(next_in_process(millis)),
    }
}

/// The next incarnation of a simulated machine: its wall clock reading `wall_ms`, its
/// record on `disk`.
pub(super) fn next_simulated(wall_ms: u64, disk: &SimDisk) -> u32 {
    let record = disk.read_file(RECORD_FILE);
    let (next, record) = start(u128::from(wall_ms), record.as_deref(), None);
    disk.write_file_synced(RECORD_FILE, &record);
    next
}

/// Without a record: the clock, above the last number handed out in this process.
fn next_in_process(millis: u128) -> u32 {
    static LAST_IN_PROCESS: AtomicU32 = AtomicU32::new(0);
    let mut last = LAST_IN_PROCESS.load(Ordering::Relaxed);
    loop {
        let (next, _) = start(millis, None, (last > 0).then_some(last));
        match LAST_IN_PROCESS.compare_exchange(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

/// Replaces the record: a temporary file written and synced, renamed over the record, and
/// the directory synced so the rename itself survives a power cut.
fn write_synced(dir: &Path, record: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("{RECORD_FILE}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut f, record)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(RECORD_FILE))?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_record_grows_and_survives() {
        let dir = std::env::temp_dir().join(format!("atoll-incarnation-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = next(Some(&dir)).unwrap();
        // A clock far ahead of today's, recorded as if by an earlier run: the next start
        // goes above it even though the clock now reads less.
        std::fs::write(dir.join(RECORD_FILE), (first + 1_000_000).to_string()).unwrap();
        let second = next(Some(&dir)).unwrap();
        assert_eq!(second, first + 1_000_001);
        let recorded = std::fs::read(dir.join(RECORD_FILE)).unwrap();
        assert_eq!(
            crate::protocol::incarnation::decode_record(&recorded),
            Some(second)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_simulated_machine_grows_when_its_clock_steps_back() {
        let disk = SimDisk::new();
        let a = next_simulated(1_767_225_600_000, &disk);
        disk.crash();
        let b = next_simulated(1_767_225_600_000 - 60_000, &disk);
        assert!(b > a, "{b} after {a}");
    }
}
