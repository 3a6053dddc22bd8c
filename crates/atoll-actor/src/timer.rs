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
}

impl TimerRef {
    /// Cancels the timer: no message is sent after this returns.
    pub fn cancel(&self) {
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
    let task = handle.spawn(async move {
        tokio::time::sleep(delay).await;
        // A target that exited meanwhile simply misses the message, as in Erlang.
        let _ = target.send(msg);
    });
    TimerRef {
        task: task.abort_handle(),
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
    let task = handle.spawn(async move {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            // A full bounded mailbox skips a tick; an exited target ends the interval.
            if let Err(SendError::NoProc(_)) = target.send(msg.clone()) {
                break;
            }
        }
    });
    TimerRef {
        task: task.abort_handle(),
    }
}
