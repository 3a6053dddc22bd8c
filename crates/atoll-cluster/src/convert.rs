//! Between the runtime's view of signals and processes and their wire form.

use atoll_actor::{ExitKind, ProcessInfo, ProcessStatus, RemoteSignal};
use atoll_wire::{ExitKind as WireKind, ProcessInfoWire, Signal, StatusWire};

pub(crate) fn to_wire(signal: RemoteSignal) -> Signal {
    match signal {
        RemoteSignal::Link { from, to } => Signal::Link { from, to },
        RemoteSignal::Unlink { from, to } => Signal::Unlink { from, to },
        RemoteSignal::Exit {
            from,
            to,
            reason,
            kind,
        } => Signal::Exit {
            from,
            to,
            reason,
            kind: match kind {
                ExitKind::Link => WireKind::Link,
                ExitKind::Exit => WireKind::Exit,
                ExitKind::Kill => WireKind::Kill,
            },
        },
        RemoteSignal::Monitor { from, to, monitor } => Signal::Monitor { from, to, monitor },
        RemoteSignal::Demonitor { from, to, monitor } => Signal::Demonitor { from, to, monitor },
        RemoteSignal::Down {
            to,
            monitor,
            pid,
            reason,
        } => Signal::Down {
            to,
            monitor,
            pid,
            reason,
        },
    }
}

/// The runtime form of a signal, and the pid that must belong to the sending node for the
/// signal to be believed.
pub(crate) fn from_wire(signal: Signal) -> (RemoteSignal, atoll_core::Pid) {
    match signal {
        Signal::Link { from, to } => (RemoteSignal::Link { from, to }, from),
        Signal::Unlink { from, to } => (RemoteSignal::Unlink { from, to }, from),
        Signal::Exit {
            from,
            to,
            reason,
            kind,
        } => (
            RemoteSignal::Exit {
                from,
                to,
                reason,
                kind: match kind {
                    WireKind::Link => ExitKind::Link,
                    WireKind::Exit => ExitKind::Exit,
                    WireKind::Kill => ExitKind::Kill,
                },
            },
            from,
        ),
        Signal::Monitor { from, to, monitor } => {
            (RemoteSignal::Monitor { from, to, monitor }, from)
        }
        Signal::Demonitor { from, to, monitor } => {
            (RemoteSignal::Demonitor { from, to, monitor }, from)
        }
        Signal::Down {
            to,
            monitor,
            pid,
            reason,
        } => (
            RemoteSignal::Down {
                to,
                monitor,
                pid,
                reason,
            },
            pid,
        ),
    }
}

pub(crate) fn process_to_wire(p: ProcessInfo) -> ProcessInfoWire {
    ProcessInfoWire {
        pid: p.pid,
        name: p.name,
        actor_type: p.actor_type.to_string(),
        mailbox_len: p.mailbox_len as u64,
        status: match p.status {
            ProcessStatus::Starting => StatusWire::Starting,
            ProcessStatus::Running => StatusWire::Running,
            ProcessStatus::Waiting => StatusWire::Waiting,
            ProcessStatus::Exiting => StatusWire::Exiting,
        },
        uptime_ms: p.uptime.as_millis() as u64,
        messages_handled: p.messages_handled,
        trap_exit: p.trap_exit,
        links: p.links,
        monitors: p.monitors,
        monitored_by: p.monitored_by,
    }
}
