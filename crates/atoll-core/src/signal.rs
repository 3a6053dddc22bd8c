use crate::{ExitReason, Pid};

/// How an exit signal was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum ExitKind {
    /// A linked process exited.
    Link,
    /// An explicit exit signal.
    Exit,
    /// An untrappable kill.
    Kill,
}

/// A signal from one process to another: links, exit signals and monitors. Between nodes
/// it travels as is; its target's node is where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Signal {
    /// `from` links to `to`.
    Link {
        /// The linking process.
        from: Pid,
        /// The process linked to.
        to: Pid,
    },
    /// `from` removes its link with `to`.
    Unlink {
        /// The unlinking process.
        from: Pid,
        /// The other side.
        to: Pid,
    },
    /// An exit signal.
    Exit {
        /// The sender.
        from: Pid,
        /// The receiver.
        to: Pid,
        /// The reason.
        reason: ExitReason,
        /// How it was sent.
        kind: ExitKind,
    },
    /// `from` monitors `to`.
    Monitor {
        /// The monitoring process.
        from: Pid,
        /// The monitored process.
        to: Pid,
        /// The monitor's id on `from`'s node.
        monitor: u64,
    },
    /// `from` drops its monitor on `to`.
    Demonitor {
        /// The monitoring process.
        from: Pid,
        /// The monitored process.
        to: Pid,
        /// The monitor's id.
        monitor: u64,
    },
    /// A process monitored by `to` exited.
    Down {
        /// The monitoring process.
        to: Pid,
        /// The monitor's id on `to`'s node.
        monitor: u64,
        /// The process that exited.
        pid: Pid,
        /// Why.
        reason: ExitReason,
    },
}

impl Signal {
    /// The process the signal is for; its node is where it goes.
    pub fn target(&self) -> Pid {
        match self {
            Signal::Link { to, .. }
            | Signal::Unlink { to, .. }
            | Signal::Exit { to, .. }
            | Signal::Monitor { to, .. }
            | Signal::Demonitor { to, .. }
            | Signal::Down { to, .. } => *to,
        }
    }

    /// The process the signal is sent on behalf of: a node may only send signals for its
    /// own processes.
    pub fn sender(&self) -> Pid {
        match self {
            Signal::Link { from, .. }
            | Signal::Unlink { from, .. }
            | Signal::Exit { from, .. }
            | Signal::Monitor { from, .. }
            | Signal::Demonitor { from, .. } => *from,
            Signal::Down { pid, .. } => *pid,
        }
    }
}
