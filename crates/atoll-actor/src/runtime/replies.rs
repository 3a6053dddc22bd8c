//! Calls whose reply handle went to another node, and the sweep that ends them at their
//! deadline.
//!
//! A remote [`ActorRef::call_until`](crate::ActorRef::call_until) sets no timer of its own:
//! its handle is parked here with the call's deadline, and one sweep per runtime, every
//! [`SWEEP_EVERY`] while calls wait, drops the handles whose deadline has passed (their
//! callers then see [`CallError::Timeout`](crate::CallError::Timeout)). A timer per call
//! was a measurable part of a remote call's cost; a call's timeout may now end up to one
//! sweep late.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use atoll_core::NodeId;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::Runtime;
use crate::remote::PendingReply;

/// How often the sweep runs while calls wait.
pub(crate) const SWEEP_EVERY: Duration = Duration::from_millis(10);

/// How long the sweep sleeps with no call waiting. It also keeps one short timer pending
/// for as long as the runtime lives: tokio wakes its timer driver thread (a syscall)
/// whenever a new deadline is earlier than every pending one, which with an otherwise
/// empty wheel is every local `call`'s timeout. A pending deadline at most this far away
/// makes every longer timeout registration a plain insert: this cut call latency by more
/// than half.
const IDLE_SLEEP: Duration = Duration::from_millis(250);

/// The calls waiting for an answer from another node, by call id.
#[derive(Default)]
pub(crate) struct Replies {
    next_call: AtomicU64,
    table: Mutex<Table>,
    /// Wakes an idle sweep: a call was parked.
    parked: Notify,
}

#[derive(Default)]
struct Table {
    waiting: HashMap<u64, Box<dyn PendingReply>>,
    /// Whether the sweep runs every [`SWEEP_EVERY`] (it found calls waiting).
    sweeping: bool,
}

impl Replies {
    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Parks `pending`; returns its call id.
    pub(crate) fn park(&self, pending: Box<dyn PendingReply>) -> u64 {
        let call = self.next_call.fetch_add(1, Ordering::Relaxed) + 1;
        let mut table = self.table();
        table.waiting.insert(call, pending);
        if !table.sweeping {
            table.sweeping = true;
            self.parked.notify_one();
        }
        call
    }

    /// The call waiting under `call`, taken out.
    pub(crate) fn take(&self, call: u64) -> Option<Box<dyn PendingReply>> {
        self.table().waiting.remove(&call)
    }

    /// Drops the calls whose handle went to `node` (their callers see `NoReply`).
    pub(crate) fn drop_peer(&self, node: NodeId) {
        let gone: Vec<_> = self
            .table()
            .waiting
            .extract_if(|_, p| p.peer() == node)
            .collect();
        // Dropped outside the lock: a dropped handle wakes its caller.
        drop(gone);
    }

    /// Drops the calls whose deadline is `now` or earlier, and those whose caller gave up;
    /// returns how many still wait.
    pub(crate) fn sweep(&self, now: Instant) -> usize {
        let (ended, left) = {
            let mut table = self.table();
            let ended: Vec<_> = table
                .waiting
                .extract_if(|_, p| p.is_abandoned() || p.deadline().is_some_and(|d| d <= now))
                .collect();
            let left = table.waiting.len();
            table.sweeping = left > 0;
            (ended, left)
        };
        drop(ended);
        left
    }

    /// How many calls wait.
    pub(crate) fn len(&self) -> usize {
        self.table().waiting.len()
    }
}

impl Runtime {
    /// Starts the sweep of this runtime's parked calls; it ends with the runtime.
    pub(super) fn start_reply_sweep(&self) {
        let alive = Arc::downgrade(&self.inner);
        let replies = Arc::clone(&self.inner.replies);
        self.inner.handle.spawn(async move {
            while alive.strong_count() > 0 {
                if replies.sweep(Instant::now()) > 0 {
                    tokio::time::sleep(SWEEP_EVERY).await;
                } else {
                    let _ = tokio::time::timeout(IDLE_SLEEP, replies.parked.notified()).await;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::PendingOneshot;
    use tokio::sync::oneshot::{self, error::TryRecvError};

    fn node(n: u8) -> NodeId {
        NodeId::from_bytes([n; 16])
    }

    fn park(
        replies: &Replies,
        peer: u8,
        deadline: Option<Instant>,
    ) -> (u64, oneshot::Receiver<u64>) {
        let (tx, rx) = oneshot::channel();
        let call = replies.park(Box::new(PendingOneshot {
            peer: node(peer),
            tx,
            deadline,
        }));
        (call, rx)
    }

    #[test]
    fn the_sweep_ends_calls_past_their_deadline_and_those_nobody_waits_for() {
        let replies = Replies::default();
        let now = Instant::now();
        let (due, mut due_rx) = park(&replies, 1, Some(now));
        let (later, mut later_rx) = park(&replies, 1, Some(now + Duration::from_secs(60)));
        // Handles sent on by another process carry no deadline of this node's.
        let (open, mut open_rx) = park(&replies, 2, None);
        let (abandoned, abandoned_rx) = park(&replies, 2, None);
        drop(abandoned_rx);
        assert_eq!(replies.len(), 4);

        assert_eq!(
            replies.sweep(now),
            2,
            "the later call and the open one wait on"
        );
        assert_eq!(due_rx.try_recv(), Err(TryRecvError::Closed));
        assert_eq!(later_rx.try_recv(), Err(TryRecvError::Empty));
        assert!(replies.take(due).is_none());
        assert!(replies.take(abandoned).is_none());

        // The connection to node 1 is lost: its calls end at once, whatever their deadline.
        replies.drop_peer(node(1));
        assert_eq!(later_rx.try_recv(), Err(TryRecvError::Closed));
        assert!(replies.take(later).is_none());
        assert_eq!(open_rx.try_recv(), Err(TryRecvError::Empty));
        assert!(replies.take(open).is_some());
        assert_eq!(replies.sweep(now), 0);
        assert_eq!(replies.len(), 0);
    }
}
