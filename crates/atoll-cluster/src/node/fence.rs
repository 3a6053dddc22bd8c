//! Self-fencing in the node: gathers what this node holds when membership says it was
//! declared down, and carries out what [`Fence`](crate::protocol::fence::Fence) decides.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atoll_actor::Actor;
use atoll_core::Pid;
use atoll_raft::Command;
use atoll_wire::Control;
use tokio::sync::watch;
use tracing::warn;

use super::{FencedStatus, FencingStatus, Inner, Node};
use crate::error::NameError;
use crate::protocol::fence::{Fence, FenceAction, FenceNotice, Holdings};

/// How a process that asked hears that its node was fenced.
type NoticeSink = Arc<dyn Fn(FenceNotice) + Send + Sync>;

/// The processes that asked to be told ([`Node::notify_fenced`]), and the fencings whose
/// releases are still under way.
pub(super) struct FenceSinks {
    sinks: Mutex<BTreeMap<Pid, NoticeSink>>,
    /// Fencings whose releases through consensus are not all applied yet.
    releasing: watch::Sender<usize>,
    /// What the status reports.
    record: Mutex<FencingStatus>,
}

impl Default for FenceSinks {
    fn default() -> Self {
        FenceSinks {
            sinks: Mutex::default(),
            releasing: watch::channel(0).0,
            record: Mutex::default(),
        }
    }
}

/// Waits up to `limit` until the releases of every fencing so far are applied: a name
/// claimed again before them could be dropped by the release of the old claim (an
/// unregistration names the process, not the claim). False if they were not.
pub(in crate::node) async fn releases_applied(inner: &Inner, limit: Duration) -> bool {
    let mut pending = inner.fence_sinks.releasing.subscribe();
    matches!(
        tokio::time::timeout(limit, pending.wait_for(|n| *n == 0)).await,
        Ok(Ok(_))
    )
}

impl Node {
    /// This node's fencings since it started (also in [`Node::status`]).
    pub fn fencing(&self) -> FencingStatus {
        status(&self.inner)
    }

    /// Asks that the local process `pid` receive a [`FenceNotice`] when this node learns
    /// that the cluster declared it down while `pid` held Consistent or Strong names, locks
    /// or group memberships. By then the node has already dropped them locally (marked
    /// their [`LockGuard`](super::LockGuard)s lost, left the groups) and queued the release
    /// of the names and locks through consensus; the process may claim them again (a
    /// Consistent or Strong registration from this node waits for those releases first,
    /// failing with [`NameError::Fencing`] if they are not applied within the consensus
    /// request timeout). Processes that did not ask lose them all the same, without a
    /// message.
    pub fn notify_fenced<A: Actor>(&self, pid: Pid) -> Result<(), NameError>
    where
        A::Msg: From<FenceNotice>,
    {
        let inner = &self.inner;
        if pid.node != inner.id || !inner.rt.is_alive(pid) {
            return Err(NameError::NotLocal(pid));
        }
        let target = inner.rt.actor_ref::<A>(pid).map_err(NameError::Lookup)?;
        let sink: NoticeSink = Arc::new(move |notice| {
            let _ = target.send(A::Msg::from(notice));
        });
        let fresh = lock(&inner.fence_sinks.sinks).insert(pid, sink).is_none();
        if fresh {
            let exited = inner.rt.wait_exit(pid);
            let weak = Arc::downgrade(inner);
            tokio::spawn(async move {
                exited.await;
                if let Some(inner) = weak.upgrade() {
                    lock(&inner.fence_sinks.sinks).remove(&pid);
                }
            });
        }
        Ok(())
    }
}

/// This node's fencings, for its status.
pub(super) fn status(inner: &Inner) -> FencingStatus {
    lock(&inner.fence_sinks.record).clone()
}

/// The split-brain policy downed this node (`true`), or it reached a majority of the
/// membership it lost again (`false`).
pub(super) fn set_self_downed(inner: &Inner, downed: bool) {
    lock(&inner.fence_sinks.record).self_downed = downed;
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What this node believes it holds: the consensus names and locks its registry gives its
/// processes, and its processes' group memberships.
fn holdings(inner: &Inner) -> Holdings {
    let mut h = Holdings::default();
    if let Some(naming) = &inner.naming {
        let (names, locks) = naming.held_by(inner.id);
        h.names = names;
        h.locks = locks;
    }
    let groups = lock(&inner.groups);
    for group in groups.groups() {
        for pid in groups.local_members(&group) {
            h.groups.push((group.clone(), pid));
        }
    }
    h
}

/// Keeps a fencing (one not seen before) for the status.
fn record(inner: &Inner, old: u64, new: u64, actions: &[FenceAction]) {
    let count = |is: fn(&FenceAction) -> bool| actions.iter().filter(|a| is(a)).count();
    let mut record = lock(&inner.fence_sinks.record);
    record.times += 1;
    record.last = Some(FencedStatus {
        old_generation: old,
        new_generation: new,
        // The policy marks the node downed before it fences itself.
        by_itself: record.self_downed,
        names: count(|a| matches!(a, FenceAction::Unregister { .. })),
        locks: count(|a| matches!(a, FenceAction::Unlock { .. })),
        groups: count(|a| matches!(a, FenceAction::LeaveGroup { .. })),
    });
}

/// This node's generation `old` was declared down (or it downed itself); it rejoins as
/// `new`. Drops what it held before the rejoin is announced to anyone listening: its lock
/// guards report the loss and its processes leave their groups at once, and each process
/// that asked is told at once; the names and locks are released through consensus in the
/// background (cut off from a quorum, that waits for the heal), and registrations from this
/// node wait for them, so that a name claimed again on the notice never races the release
/// of its old claim.
pub(super) fn fence(inner: &Arc<Inner>, state: &mut Fence, old: u64, new: u64) {
    let before = state.fenced();
    let actions = state.on_fenced(old, new, &holdings(inner));
    if state.fenced() != before {
        record(inner, old, new, &actions);
    }
    if actions.is_empty() {
        return;
    }
    warn!(node = %inner.name, old, new, dropped = actions.len(), "fenced: dropping the names, locks and group memberships held before");
    let mut releases = Vec::new();
    let mut notices = Vec::new();
    for action in actions {
        match action {
            FenceAction::Unregister { name, pid } => {
                releases.push(Command::Unregister { name, pid });
            }
            FenceAction::Unlock { name, token, .. } => {
                if let Some(naming) = &inner.naming {
                    naming.lose_guards(&name, token);
                }
                releases.push(Command::Unlock { name, token });
            }
            FenceAction::LeaveGroup { group, pid } => {
                let left = lock(&inner.groups).leave(&group, pid);
                if let Some(message) = left {
                    inner.broadcast(&Control::Groups(message));
                }
            }
            FenceAction::Tell { pid, notice } => notices.push((pid, notice)),
        }
    }
    if !releases.is_empty() {
        inner.fence_sinks.releasing.send_modify(|n| *n += 1);
        let weak = Arc::downgrade(inner);
        tokio::spawn(async move {
            for command in releases {
                super::naming::propose_until_applied(weak.clone(), command).await;
            }
            if let Some(inner) = weak.upgrade() {
                inner
                    .fence_sinks
                    .releasing
                    .send_modify(|n| *n = n.saturating_sub(1));
            }
        });
    }
    for (pid, notice) in notices {
        let sink = lock(&inner.fence_sinks.sinks).get(&pid).cloned();
        if let Some(sink) = sink {
            sink(notice);
        }
    }
}
