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

// Keep the state held across awaits small: with a trivial actor this future is 280 bytes,
// and tokio rounds each task up to a multiple of 128 bytes, so a few more bytes cost 128 per
// idle process.
pub(crate) async fn run_process<A: Actor>(actor: A, cell: Arc<Cell<A::Msg>>, rt: Runtime) {
    // Owns the cell and runtime handle, so that if dropping the actor panics the exit is
    // still announced while unwinding.
    let mut exit = ExitGuard {
        cell,
        rt,
        done: false,
    };
    let reason = {
        let ctx = Ctx {
            cell: exit.cell.clone(),
            rt: exit.rt.clone(),
            stop: None,
        };
        let body = std::pin::pin!(run_callbacks(actor, ctx));
        Guarded {
            body,
            cell: &exit.cell,
            registered: false,
        }
        .await
        // The actor's state is dropped here, before the exit is announced.
    };
    exit.done = true;
    exit.rt.process_exited(&*exit.cell, reason);
}

struct ExitGuard<M: Send + 'static> {
    cell: Arc<Cell<M>>,
    rt: Runtime,
    done: bool,
}

impl<M: Send + 'static> Drop for ExitGuard<M> {
    fn drop(&mut self) {
        if !self.done {
            self.rt.process_exited(
                &*self.cell,
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
    let mut batch = VecDeque::new();
    let reason = 'life: loop {
        if let Some(reason) = ctx.stop.take() {
            break 'life reason;
        }
        std::future::poll_fn(|cx| cell.poll_take(&mut batch, cx)).await;
        while let Some(env) = batch.pop_front() {
            // Counted when taken, so the mailbox length excludes the message in hand.
            // Only this task writes the counter: load and store, no atomic read-modify-write.
            let budget_due = {
                let handled = cell.handled.load(Ordering::Relaxed) + 1;
                cell.handled.store(handled, Ordering::Relaxed);
                handled.is_multiple_of(16)
            };
            let result = match env {
                Envelope::Msg(msg) => actor.handle(msg, &mut ctx).await,
                Envelope::Sys(sys) => match *sys {
                    SysMsg::Exit { from, reason } => {
                        // As in OTP, a process always ends when its parent's exit signal
                        // reaches it, trapping or not; trapping only lets it clean up.
                        if Some(from) == cell.meta.parent {
                            ctx.stop(reason.clone());
                        }
                        actor.handle_exit(from, reason, &mut ctx).await
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
            // tokio's cooperative budget, one unit per 16 messages: a process that keeps
            // finding mail yields after its share, whether it comes in one batch or many.
            if budget_due {
                tokio::task::consume_budget().await;
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
