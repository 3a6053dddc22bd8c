use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use atoll_core::Pid;
use tokio::sync::oneshot;

use crate::actor::Actor;
use crate::cell::Cell;
use crate::error::{CallError, SendError};

/// A typed reference to a process running actor `A`: the only way to send it messages.
///
/// Cheap to clone. Sends never block on an unbounded mailbox; a send to a process that has
/// exited fails and hands the message back.
pub struct ActorRef<A: Actor> {
    cell: Arc<Cell<A::Msg>>,
    _actor: PhantomData<fn() -> A>,
}

impl<A: Actor> ActorRef<A> {
    pub(crate) fn from_cell(cell: Arc<Cell<A::Msg>>) -> Self {
        ActorRef {
            cell,
            _actor: PhantomData,
        }
    }

    /// The process's pid.
    pub fn pid(&self) -> Pid {
        self.cell.meta.pid
    }

    /// Queues `msg` without waiting.
    ///
    /// Fails with [`SendError::NoProc`] if the process has exited and with
    /// [`SendError::Full`] if its bounded mailbox is full; either way the message comes back.
    pub fn send(&self, msg: A::Msg) -> Result<(), SendError<A::Msg>> {
        self.cell.send(msg)
    }

    /// Queues `msg`, waiting for room if the mailbox is bounded and full (backpressure).
    /// Fails with [`SendError::NoProc`] if the process exits first.
    pub async fn send_wait(&self, msg: A::Msg) -> Result<(), SendError<A::Msg>> {
        let mut slot = Some(msg);
        std::future::poll_fn(|cx| self.cell.poll_send(&mut slot, cx)).await
    }

    /// Sends a request built around a fresh reply handle and waits up to `timeout` for the
    /// answer.
    ///
    /// ```
    /// # use atoll_actor::{Actor, ActorResult, Ctx, ReplyTo, Runtime};
    /// # use std::time::Duration;
    /// # struct Echo;
    /// # impl Actor for Echo {
    /// #     type Msg = (u32, ReplyTo<u32>);
    /// #     async fn handle(&mut self, (n, reply): (u32, ReplyTo<u32>), _: &mut Ctx<Self>) -> ActorResult {
    /// #         reply.reply(n); Ok(())
    /// #     }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let rt = Runtime::new();
    /// let echo = rt.spawn(Echo);
    /// let n = echo.call(|reply| (7, reply), Duration::from_secs(1)).await.unwrap();
    /// assert_eq!(n, 7);
    /// # }
    /// ```
    pub async fn call<R: Send + 'static>(
        &self,
        request: impl FnOnce(ReplyTo<R>) -> A::Msg,
        timeout: Duration,
    ) -> Result<R, CallError> {
        let (tx, rx) = oneshot::channel();
        let msg = request(ReplyTo { tx });
        let exchange = async {
            match self.cell.send(msg) {
                Ok(()) => {}
                Err(SendError::NoProc(_)) => return Err(CallError::NoProc),
                Err(SendError::Full(msg)) => {
                    self.send_wait(msg).await.map_err(|_| CallError::NoProc)?
                }
            }
            rx.await.map_err(|_| CallError::NoReply)
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or(Err(CallError::Timeout))
    }
}

impl<A: Actor> Clone for ActorRef<A> {
    fn clone(&self) -> Self {
        ActorRef::from_cell(self.cell.clone())
    }
}

impl<A: Actor> PartialEq for ActorRef<A> {
    fn eq(&self, other: &Self) -> bool {
        self.pid() == other.pid()
    }
}

impl<A: Actor> Eq for ActorRef<A> {}

impl<A: Actor> Hash for ActorRef<A> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.pid().hash(state);
    }
}

impl<A: Actor> fmt::Debug for ActorRef<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ActorRef({})", self.pid())
    }
}

/// The handle a process answers a [`ActorRef::call`] with. It can travel inside messages
/// to whichever process should answer.
pub struct ReplyTo<R> {
    tx: oneshot::Sender<R>,
}

impl<R> ReplyTo<R> {
    /// Sends the answer. Returns false if the caller stopped waiting (timed out or exited).
    pub fn reply(self, value: R) -> bool {
        self.tx.send(value).is_ok()
    }

    /// True while the caller is still waiting.
    pub fn is_waiting(&self) -> bool {
        !self.tx.is_closed()
    }
}

impl<R> fmt::Debug for ReplyTo<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReplyTo(..)")
    }
}
