//! Between the runtime's view of processes and their wire form.

use atoll_actor::{ProcessInfo, ProcessStatus};
use atoll_wire::{ProcessInfoWire, StatusWire};

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
