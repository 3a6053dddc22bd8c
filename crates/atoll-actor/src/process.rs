//! The body of a process task: the callback loop, and the guard that ends it at once on a
//! fatal signal or a panic.

use std::any::Any;
use std::collections::VecDeque;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use atoll_core::ExitReason;

use crate::actor::{Actor, Ctx};
use crate::cell::{Cell, Envelope, SysMsg};
use crate::runtime::Runtime;

/// Messages handled in a row before the process yields to the scheduler, so one busy
/// process cannot starve the others on its worker thread.
const YIELD_EVERY: u32 = 256;

pub(crate) async fn run_process<A: Actor>(actor: A, cell: Arc<Cell<A::Msg>>, rt: Runtime) {
    // If dropping the actor panics, the exit is still announced while unwinding.
    let mut exit = ExitGuard {
        cell: &*cell,
        rt: &rt,
        done: false,
    };
    let reason = {
        let ctx = Ctx {
            cell: cell.clone(),
            rt: rt.clone(),
            stop: None,
        };
        let body = std::pin::pin!(run_callbacks(actor, ctx));
        Guarded {
            body,
            cell: &cell,
            registered: false,
        }
        .await
        // The actor's state is dropped here, before the exit is announced.
    };
    exit.done = true;
    rt.process_exited(&*cell, reason);
}

struct ExitGuard<'a> {
    cell: &'a dyn crate::cell::ProcessCell,
    rt: &'a Runtime,
    done: bool,
}

impl Drop for ExitGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.rt.process_exited(
                self.cell,
                ExitReason::error("panicked while dropping the actor"),
            );
        }
    }
}

/// Runs the actor's callbacks. `None` means a fatal signal interrupted it.
async fn run_callbacks<A: Actor>(mut actor: A, mut ctx: Ctx<A>) -> Option<ExitReason> {
    if let Err(e) = actor.started(&mut ctx).await {
        return Some(e.to_reason());
    }
    let cell = ctx.cell.clone();
    cell.mark_started();
    let parent = cell.meta.parent;
    let mut batch = VecDeque::new();
    let mut handled = 0u64;
    let mut in_a_row = 0u32;
    let reason = 'life: loop {
        if let Some(reason) = ctx.stop.take() {
            break 'life reason;
        }
        let mut parked = false;
        std::future::poll_fn(|cx| {
            let taken = cell.poll_take(&mut batch, cx);
            parked |= taken.is_pending();
            taken
        })
        .await;
        if parked {
            in_a_row = 0;
        }
        while let Some(env) = batch.pop_front() {
            // Counted when taken, so the mailbox length excludes the message in hand.
            handled += 1;
            cell.handled.store(handled, Ordering::Relaxed);
            let result = match env {
                Envelope::Msg(msg) => actor.handle(msg, &mut ctx).await,
                Envelope::Sys(sys) => match *sys {
                    SysMsg::Exit { from, reason } => {
                        let from_parent = Some(from) == parent;
                        let result = actor.handle_exit(from, reason.clone(), &mut ctx).await;
                        // As in OTP, a process always ends when its parent's exit signal
                        // reaches it, trapping or not; trapping only lets it clean up.
                        if from_parent {
                            ctx.stop(reason);
                        }
                        result
                    }
                    SysMsg::Down(down) => actor.handle_down(down, &mut ctx).await,
                },
            };
            if let Err(e) = result {
                break 'life e.to_reason();
            }
            if cell.urgent.load(Ordering::Relaxed) {
                return None;
            }
            if ctx.stop.is_some() {
                continue 'life;
            }
            in_a_row += 1;
            if in_a_row == YIELD_EVERY {
                in_a_row = 0;
                tokio::task::yield_now().await;
            }
        }
    };
    actor.stopped(&reason, &mut ctx).await;
    Some(reason)
}

/// Polls the callback loop, but first checks for a fatal signal (then the loop is dropped
/// wherever it is waiting) and turns a panic into an `Error` exit.
struct Guarded<'a, F, M> {
    body: Pin<&'a mut F>,
    cell: &'a Cell<M>,
    registered: bool,
}

impl<F, M> Future for Guarded<'_, F, M>
where
    F: Future<Output = Option<ExitReason>>,
    M: Send + 'static,
{
    type Output = ExitReason;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<ExitReason> {
        let this = &mut *self;
        if this.cell.urgent.load(Ordering::Acquire) {
            return Poll::Ready(this.fatal_reason());
        }
        match catch_unwind(AssertUnwindSafe(|| this.body.as_mut().poll(cx))) {
            Ok(Poll::Ready(Some(reason))) => Poll::Ready(reason),
            Ok(Poll::Ready(None)) => Poll::Ready(this.fatal_reason()),
            Ok(Poll::Pending) => {
                if !this.registered {
                    // The task's waker is stable: one registration lets a kill wake it
                    // whatever it is awaiting.
                    this.cell.register_waker(cx.waker());
                    this.registered = true;
                }
                // A fatal signal that came before any waker was stored woke nobody.
                if this.cell.urgent.load(Ordering::Acquire) {
                    return Poll::Ready(this.fatal_reason());
                }
                Poll::Pending
            }
            Err(panic) => Poll::Ready(ExitReason::error(format!(
                "panicked: {}",
                panic_text(&*panic)
            ))),
        }
    }
}

impl<F, M: Send + 'static> Guarded<'_, F, M> {
    fn fatal_reason(&self) -> ExitReason {
        self.cell.take_pending_exit().unwrap_or(ExitReason::Killed)
    }
}

fn panic_text(panic: &(dyn Any + Send)) -> &str {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s
    } else {
        "non-text panic payload"
    }
}
