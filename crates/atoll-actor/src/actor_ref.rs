use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use atoll_core::{NodeId, Pid};
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio::sync::oneshot;

use crate::actor::Actor;
use crate::cell::Cell;
use crate::error::{CallError, SendError};
use crate::remote::{self, EncodeFn, PendingOneshot, RemoteRef, RemoteSendError, RemoteTarget};
use crate::runtime::Runtime;

/// A typed reference to a process running actor `A`, on this node or another: the only way
/// to send it messages.
///
/// Cheap to clone. A local send moves the message into the mailbox and never blocks on an
/// unbounded one; a remote send encodes it (serde + postcard) and hands it to the node's
/// connection. A failed send hands the message back.
pub struct ActorRef<A: Actor> {
    target: Target<A::Msg>,
    _actor: PhantomData<fn() -> A>,
}

enum Target<M> {
    Local(Arc<Cell<M>>),
    Remote(RemoteTarget<M>),
}

impl<A: Actor> ActorRef<A> {
    pub(crate) fn from_cell(cell: Arc<Cell<A::Msg>>) -> Self {
        ActorRef {
            target: Target::Local(cell),
            _actor: PhantomData,
        }
    }

    pub(crate) fn from_remote(remote: RemoteRef<A::Msg>) -> Self {
        ActorRef {
            target: Target::Remote(Arc::new(remote)),
            _actor: PhantomData,
        }
    }

    /// The process's pid.
    pub fn pid(&self) -> Pid {
        match &self.target {
            Target::Local(cell) => cell.meta.pid,
            Target::Remote(r) => r.pid,
        }
    }

    /// True if the process runs on this node.
    pub fn is_local(&self) -> bool {
        matches!(self.target, Target::Local(_))
    }

    /// Queues `msg` without waiting.
    ///
    /// Locally, fails with [`SendError::NoProc`] if the process has exited and with
    /// [`SendError::Full`] if its bounded mailbox is full. Remotely, fails with
    /// [`SendError::NoConnection`] if its node is not connected; as in Erlang, a remote
    /// process that turns out not to exist is not reported. The message always comes back.
    pub fn send(&self, msg: A::Msg) -> Result<(), SendError<A::Msg>> {
        match &self.target {
            Target::Local(cell) => cell.send(msg),
            Target::Remote(r) => send_remote(&r.rt, r.pid, r.encode, msg),
        }
    }

    /// Queues `msg`, waiting for room if the (local) mailbox is bounded and full
    /// (backpressure). Fails with [`SendError::NoProc`] if the process exits first.
    pub async fn send_wait(&self, msg: A::Msg) -> Result<(), SendError<A::Msg>> {
        match &self.target {
            Target::Local(cell) => {
                let mut slot = Some(msg);
                std::future::poll_fn(|cx| cell.poll_send(&mut slot, cx)).await
            }
            Target::Remote(r) => send_remote(&r.rt, r.pid, r.encode, msg),
        }
    }

    /// Sends a request built around a fresh reply handle and waits up to `timeout` for the
    /// answer. Works the same for a remote process: the handle travels with the request and
    /// the answer comes back to this node.
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
        self.call_until(request, tokio::time::Instant::now() + timeout)
            .await
    }

    /// [`Self::call`] with a deadline instead of a timeout: for a caller that already has
    /// one (several attempts under one deadline), which spares reading the clock again.
    ///
    /// For a process on another node, the runtime ends the wait through the reply handle
    /// sent with the request (no timer per call), so `request` must put the handle in the
    /// message it returns.
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
    /// let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    /// assert_eq!(echo.call_until(|reply| (7, reply), deadline).await.unwrap(), 7);
    /// assert_eq!(echo.call_until(|reply| (8, reply), deadline).await.unwrap(), 8);
    /// # }
    /// ```
    pub async fn call_until<R: Send + 'static>(
        &self,
        request: impl FnOnce(ReplyTo<R>) -> A::Msg,
        deadline: tokio::time::Instant,
    ) -> Result<R, CallError> {
        if let Target::Remote(r) = &self.target {
            return call_remote(&r.rt, r.pid, r.encode, request, deadline).await;
        }
        let (tx, rx) = oneshot::channel();
        let msg = request(ReplyTo::local(tx));
        let exchange = async {
            match self.send(msg) {
                Ok(()) => {}
                // Boxed: rare (a full local mailbox), and inline it would add the message's
                // size to every call's future.
                Err(SendError::Full(msg)) => Box::pin(self.send_wait(msg))
                    .await
                    .map_err(|_| CallError::NoProc)?,
                Err(e) => return Err(unsent(e)),
            }
            rx.await.map_err(|_| CallError::NoReply)
        };
        tokio::time::timeout_at(deadline, exchange)
            .await
            .unwrap_or(Err(CallError::Timeout))
    }
}

/// What a call fails with when its request could not be sent. (A full local mailbox is
/// waited out first; one still refusing means the process is gone.)
fn unsent<M>(e: SendError<M>) -> CallError {
    match e {
        SendError::Unencodable(_, e) => CallError::Unencodable(e),
        SendError::NoProc(_) | SendError::Full(_) => CallError::NoProc,
        SendError::NoConnection(_) => CallError::NoConnection,
    }
}

/// A call to the process `pid` on another node (what [`ActorRef::call_until`] does for a
/// remote reference).
async fn call_remote<M, R: Send + 'static>(
    rt: &Runtime,
    pid: Pid,
    encode: EncodeFn<M>,
    request: impl FnOnce(ReplyTo<R>) -> M,
    deadline: tokio::time::Instant,
) -> Result<R, CallError> {
    let (tx, rx) = oneshot::channel();
    let msg = request(ReplyTo::local(tx));
    // No timer: the reply handle is parked in the runtime with the deadline, and the
    // runtime's sweep drops it then (a timer per call was a measurable part of a remote
    // call's cost). A handle dropped earlier went nowhere: no reply.
    remote::with_call_deadline(deadline, || send_remote(rt, pid, encode, msg)).map_err(unsent)?;
    match rx.await {
        Ok(value) => Ok(value),
        Err(_) if tokio::time::Instant::now() >= deadline => Err(CallError::Timeout),
        Err(_) => Err(CallError::NoReply),
    }
}

impl Runtime {
    /// Calls the process `pid` on another node as [`Runtime::remote_ref`] and then
    /// [`ActorRef::call_until`] would, without making the reference: for callers that
    /// reach many processes by pid, once each (a reference costs an allocation and a share
    /// of the runtime).
    ///
    /// ```
    /// # use atoll_actor::{Actor, ActorResult, CallError, Ctx, ReplyTo, Runtime};
    /// # use atoll_core::{NodeId, Pid};
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
    /// let elsewhere = Pid::new(NodeId::from_bytes([9; 16]), 1, 1);
    /// let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
    /// // This runtime belongs to no node, so nothing elsewhere is reachable.
    /// let answer = rt.call_remote_until::<Echo, _>(elsewhere, |reply| (7, reply), deadline).await;
    /// assert_eq!(answer, Err(CallError::NoConnection));
    /// # }
    /// ```
    pub async fn call_remote_until<A: Actor, R: Send + 'static>(
        &self,
        pid: Pid,
        request: impl FnOnce(ReplyTo<R>) -> A::Msg,
        deadline: tokio::time::Instant,
    ) -> Result<R, CallError>
    where
        A::Msg: Serialize,
    {
        call_remote(self, pid, remote::encoder::<A::Msg>(), request, deadline).await
    }
}

fn send_remote<M>(rt: &Runtime, pid: Pid, encode: EncodeFn<M>, msg: M) -> Result<(), SendError<M>> {
    // The node refuses an unreachable peer before encoding (`Remote::send`): encoding parks
    // any reply handle inside the message, which must stay usable when it is handed back.
    let mut encode_into =
        |buf: &mut Vec<u8>| remote::with_codec(rt, pid.node, || encode(&msg, buf));
    match rt.remote_send(pid, &mut encode_into) {
        Ok(()) => Ok(()),
        Err(RemoteSendError::NoConnection) => Err(SendError::NoConnection(msg)),
        Err(RemoteSendError::Unencodable(e)) => Err(SendError::Unencodable(msg, e)),
    }
}

impl<A: Actor> Clone for ActorRef<A> {
    fn clone(&self) -> Self {
        ActorRef {
            target: match &self.target {
                Target::Local(c) => Target::Local(c.clone()),
                Target::Remote(r) => Target::Remote(r.clone()),
            },
            _actor: PhantomData,
        }
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

/// An `ActorRef` travels as its pid.
impl<A: Actor> Serialize for ActorRef<A> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.pid().serialize(s)
    }
}

/// On arrival, a pid of this node becomes a local reference (the process must still be
/// alive and run `A`); any other pid becomes a remote reference.
impl<'de, A: Actor> Deserialize<'de> for ActorRef<A>
where
    A::Msg: Serialize,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let pid = Pid::deserialize(d)?;
        let (rt, _) = remote::codec_context()
            .ok_or_else(|| D::Error::custom("an ActorRef can only be decoded by a node"))?;
        if pid.node == rt.node() {
            rt.actor_ref::<A>(pid).map_err(D::Error::custom)
        } else {
            Ok(rt.remote_ref::<A>(pid))
        }
    }
}

/// The handle a process answers a [`ActorRef::call`] with. It can travel inside messages
/// to whichever process should answer, on this node or another.
pub struct ReplyTo<R> {
    inner: Reply<R>,
}

enum Reply<R> {
    /// The caller waits on this node. Taken out when the handle is sent to another node.
    Local(std::sync::Mutex<Option<oneshot::Sender<R>>>),
    /// The caller waits on `node`, under call id `call`.
    Remote {
        node: NodeId,
        call: u64,
        rt: Runtime,
        encode: remote::EncodeFn<R>,
    },
}

impl<R> ReplyTo<R> {
    pub(crate) fn local(tx: oneshot::Sender<R>) -> Self {
        ReplyTo {
            inner: Reply::Local(std::sync::Mutex::new(Some(tx))),
        }
    }

    /// Sends the answer. Returns false if it surely went nowhere: the caller stopped waiting
    /// (timed out or exited), or its node is not connected.
    pub fn reply(self, value: R) -> bool {
        match self.inner {
            Reply::Local(tx) => tx
                .into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .is_some_and(|tx| tx.send(value).is_ok()),
            Reply::Remote {
                node,
                call,
                rt,
                encode,
            } => {
                let mut encode =
                    |buf: &mut Vec<u8>| remote::with_codec(&rt, node, || encode(&value, buf));
                rt.remote_reply(node, call, &mut encode)
            }
        }
    }

    /// True while a local caller is still waiting (always true for a remote caller, whose
    /// state is not known here).
    pub fn is_waiting(&self) -> bool {
        match &self.inner {
            Reply::Local(tx) => tx
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .is_some_and(|s| !s.is_closed()),
            Reply::Remote { .. } => true,
        }
    }
}

impl<R> fmt::Debug for ReplyTo<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            Reply::Local(_) => f.write_str("ReplyTo(local)"),
            Reply::Remote { node, call, .. } => write!(f, "ReplyTo({}#{call})", node.short()),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct WireReply {
    node: NodeId,
    call: u64,
}

/// A reply handle travels as (node, call id); a local one is parked in the runtime's table
/// of pending replies first.
impl<R: DeserializeOwned + Send + 'static> Serialize for ReplyTo<R> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error as _;
        let wire = match &self.inner {
            Reply::Local(tx) => {
                let (rt, peer) = remote::codec_context()
                    .ok_or_else(|| S::Error::custom("a ReplyTo can only be encoded by a node"))?;
                let tx = tx
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take()
                    .ok_or_else(|| S::Error::custom("this reply handle was already sent"))?;
                let call = rt.park_reply(Box::new(PendingOneshot {
                    peer,
                    tx,
                    deadline: remote::call_deadline(),
                }));
                WireReply {
                    node: rt.node(),
                    call,
                }
            }
            Reply::Remote { node, call, .. } => WireReply {
                node: *node,
                call: *call,
            },
        };
        wire.serialize(s)
    }
}

impl<'de, R: Serialize> Deserialize<'de> for ReplyTo<R> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let wire = WireReply::deserialize(d)?;
        let (rt, _) = remote::codec_context()
            .ok_or_else(|| D::Error::custom("a ReplyTo can only be decoded by a node"))?;
        Ok(ReplyTo {
            inner: Reply::Remote {
                node: wire.node,
                call: wire.call,
                rt,
                encode: remote::encoder::<R>(),
            },
        })
    }
}
