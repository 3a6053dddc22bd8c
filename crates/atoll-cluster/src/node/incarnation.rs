//! Where a node's incarnation numbers come from in production: the wall clock, the last
//! number recorded in the node's data directory (if it has one), and the last one handed
//! out in this process (nodes restarted in one process within a quarter-second).

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use tracing::warn;

use crate::protocol::incarnation::{next_incarnation, quarters_since_2024};

/// The file in a data directory that records the last incarnation.
const FILE: &str = "incarnation";

/// The next incarnation of a node whose data directory is `data_dir` (if any), recorded
/// there before it is used.
pub(super) fn next(data_dir: Option<&Path>) -> u32 {
    static LAST_IN_PROCESS: AtomicU32 = AtomicU32::new(0);
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let recorded = data_dir.and_then(|dir| {
        std::fs::read_to_string(dir.join(FILE))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
    });
    let mut last = LAST_IN_PROCESS.load(Ordering::Relaxed);
    let next = loop {
        let floor = recorded.max((last > 0).then_some(last));
        let next = next_incarnation(quarters_since_2024(millis), floor);
        match LAST_IN_PROCESS.compare_exchange(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => break next,
            Err(seen) => last = seen,
        }
    };
    if let Some(dir) = data_dir
        && let Err(e) = record(dir, next)
    {
        warn!(dir = %dir.display(), "could not record the incarnation: {e}");
    }
    next
}

fn record(dir: &Path, incarnation: u32) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("{FILE}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut f, incarnation.to_string().as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(tmp, dir.join(FILE))
}
