use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::task::AbortHandle;
use tokio::time::MissedTickBehavior;

use crate::actor::Actor;
use crate::actor_ref::ActorRef;
use crate::error::SendError;

/// A pending timer; [`TimerRef::cancel`] stops it. Dropping the handle does not cancel.
#[derive(Debug)]
pub struct TimerRef {
    task: AbortHandle,
    cancelled: Arc<Mutex<bool>>,
}

impl TimerRef {
    /// Cancels the timer: no message is sent after this returns.
    pub fn cancel(&self) {
        // Sends happen under this lock, so none can be under way once the flag is set.
        *self.cancelled.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.task.abort();
    }

    /// True once a one-shot timer has fired (or any timer was cancelled or its target exited).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

pub(crate) fn send_after<A: Actor>(
    handle: &Handle,
    target: ActorRef<A>,
    delay: Duration,
    msg: A::Msg,
) -> TimerRef {
    let cancelled = Arc::new(Mutex::new(false));
    let flag = cancelled.clone();
    let task = handle.spawn(async move {
        tokio::time::sleep(delay).await;
        let cancelled = flag.lock().unwrap_or_else(|e| e.into_inner());
        if !*cancelled {
            // A target that exited meanwhile simply misses the message, as in Erlang.
            let _ = target.send(msg);
        }
    });
    TimerRef {
        task: task.abort_handle(),
        cancelled,
    }
}

pub(crate) fn send_interval<A: Actor>(
    handle: &Handle,
    target: ActorRef<A>,
    period: Duration,
    msg: A::Msg,
) -> TimerRef
where
    A::Msg: Clone,
{
    // tokio refuses a zero period; a millisecond is the finest the timer wheel resolves.
    let period = period.max(Duration::from_millis(1));
    let cancelled = Arc::new(Mutex::new(false));
    let flag = cancelled.clone();
    let task = handle.spawn(async move {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let cancelled = flag.lock().unwrap_or_else(|e| e.into_inner());
            // A full bounded mailbox skips a tick; an exited target ends the interval.
            if *cancelled || matches!(target.send(msg.clone()), Err(SendError::NoProc(_))) {
                break;
            }
        }
    });
    TimerRef {
        task: task.abort_handle(),
        cancelled,
    }
}
