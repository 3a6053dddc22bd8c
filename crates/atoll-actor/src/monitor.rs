use atoll_core::{ExitReason, Pid};

/// Identifies one monitor; unique within a runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MonitorRef(pub(crate) u64);

/// The notification a monitoring process gets, once, when the monitored process exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Down {
    /// The monitor that fired.
    pub monitor: MonitorRef,
    /// The process that exited.
    pub pid: Pid,
    /// Why it exited (`NoProc` if it was already gone when the monitor was set).
    pub reason: ExitReason,
}
