use std::time::Duration;

use atoll_core::Pid;

/// What a process is doing right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProcessStatus {
    /// Spawned, not yet through its `started` callback.
    Starting,
    /// Handling a message (or running a callback).
    Running,
    /// Waiting for mail.
    Waiting,
    /// On its way out.
    Exiting,
}

/// A snapshot of one live process: the data live attach shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    /// Its pid.
    pub pid: Pid,
    /// Its registered name, if any.
    pub name: Option<String>,
    /// The Rust type of its actor.
    pub actor_type: &'static str,
    /// Messages (including trapped exits and monitor notifications) not yet handled.
    pub mailbox_len: usize,
    /// The bound of its mailbox, `None` when unbounded.
    pub mailbox_capacity: Option<usize>,
    /// What it can do, as spawned ([`crate::SpawnOptions::capabilities`]).
    pub capabilities: Vec<String>,
    /// What it is doing.
    pub status: ProcessStatus,
    /// Time since it was spawned.
    pub uptime: Duration,
    /// Messages handled so far.
    pub messages_handled: u64,
    /// Whether it traps exit signals.
    pub trap_exit: bool,
    /// The process that spawned it linked, if any.
    pub parent: Option<Pid>,
    /// Processes it is linked to.
    pub links: Vec<Pid>,
    /// Processes it monitors.
    pub monitors: Vec<Pid>,
    /// Processes monitoring it.
    pub monitored_by: Vec<Pid>,
}
