//! The seam between the local runtime and the cluster: what a runtime hands to the node
//! for processes elsewhere, what the node hands back, and how messages are encoded.
//!
//! Messages to remote processes are encoded with serde + postcard. Pids inside them are
//! plain data; [`ActorRef`](crate::ActorRef)s and [`ReplyTo`](crate::ReplyTo)s need the
//! runtime that encodes or decodes them, which is set for the duration of each encode or
//! decode (a scoped, per-thread setting, never shared between runtimes).

use std::cell::RefCell;
use std::sync::Arc;

use atoll_core::{NodeId, Pid, Signal};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;

use crate::runtime::Runtime;

/// The peer's node is not connected; nothing was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no connection to node")]
pub struct NoConnection;

/// Why a message for another node did not go out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoteSendError {
    /// The node is not connected; nothing was sent.
    #[error("no connection to node")]
    NoConnection,
    /// The message did not encode; nothing was sent.
    #[error("cannot encode: {0}")]
    Unencodable(String),
}

impl From<NoConnection> for RemoteSendError {
    fn from(_: NoConnection) -> Self {
        RemoteSendError::NoConnection
    }
}

/// Appends an encoded message to the buffer it is given: the node has it write the message
/// straight into the frame that carries it.
pub type EncodeInto<'a> = &'a mut dyn FnMut(&mut Vec<u8>) -> Result<(), String>;

/// What a node provides to its runtime to reach processes on other nodes.
pub trait Remote: Send + Sync + 'static {
    /// Sends the message `encode` writes to `to` on its node. A node that cannot be reached
    /// is refused before `encode` runs: encoding parks the reply handles inside a message,
    /// and one handed back unsent must keep them usable.
    fn send(&self, to: Pid, encode: EncodeInto<'_>) -> Result<(), RemoteSendError>;
    /// Sends the answer `encode` writes to call `call`, pending on `node`.
    fn reply(&self, node: NodeId, call: u64, encode: EncodeInto<'_>)
    -> Result<(), RemoteSendError>;
    /// Sends a signal to its target's node.
    fn signal(&self, signal: Signal) -> Result<(), NoConnection>;
}

/// Turns a message that came over the network back into a process's message type.
pub type Decoder<M> = fn(&[u8]) -> Result<M, String>;

/// The decoder for a serde message type: what [`Actor::remote_decoder`](crate::Actor::remote_decoder)
/// returns for an actor that accepts messages from other nodes.
pub fn serde_decoder<M: DeserializeOwned>() -> Option<Decoder<M>> {
    Some(decode::<M>)
}

/// Encodes `value` for `peer` with `rt` as the codec context, so reply handles and actor
/// references inside it travel correctly.
pub fn encode_for<T: Serialize>(rt: &Runtime, peer: NodeId, value: &T) -> Result<Vec<u8>, String> {
    with_codec(rt, peer, || encode(value))
}

/// Decodes a value that came from `peer`, with `rt` as the codec context.
pub fn decode_from<T: DeserializeOwned>(
    rt: &Runtime,
    peer: NodeId,
    bytes: &[u8],
) -> Result<T, String> {
    with_codec(rt, peer, || decode(bytes))
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    postcard::to_allocvec(value).map_err(|e| e.to_string())
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    postcard::from_bytes(bytes).map_err(|e| e.to_string())
}

thread_local! {
    /// The runtime encoding or decoding on this thread, and the peer node on the other end.
    static CODEC: RefCell<Option<(Runtime, NodeId)>> = const { RefCell::new(None) };
    /// The deadline of the call whose request is being encoded on this thread, if any.
    static CALL_DEADLINE: std::cell::Cell<Option<tokio::time::Instant>> =
        const { std::cell::Cell::new(None) };
}

/// Runs `f` (encoding a call's request) with `deadline` as the deadline of the reply handles
/// parked meanwhile. (Carried aside rather than in each handle, which every message that
/// holds one would pay for in size.)
pub(crate) fn with_call_deadline<T>(deadline: tokio::time::Instant, f: impl FnOnce() -> T) -> T {
    struct Restore(Option<tokio::time::Instant>);
    impl Drop for Restore {
        fn drop(&mut self) {
            CALL_DEADLINE.set(self.0);
        }
    }
    let _restore = Restore(CALL_DEADLINE.replace(Some(deadline)));
    f()
}

/// The deadline set by [`with_call_deadline`] around this encoding, if any.
pub(crate) fn call_deadline() -> Option<tokio::time::Instant> {
    CALL_DEADLINE.get()
}

/// Runs `f` with `rt` as the codec context for messages exchanged with `peer`.
pub(crate) fn with_codec<T>(rt: &Runtime, peer: NodeId, f: impl FnOnce() -> T) -> T {
    struct Restore(Option<(Runtime, NodeId)>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            CODEC.with(|c| *c.borrow_mut() = previous);
        }
    }
    let previous = CODEC.with(|c| c.borrow_mut().replace((rt.clone(), peer)));
    let _restore = Restore(previous);
    f()
}

pub(crate) fn codec_context() -> Option<(Runtime, NodeId)> {
    CODEC.with(|c| c.borrow().clone())
}

/// A reply handle that crossed to another node: the answer is decoded here and handed to
/// the waiting caller.
pub(crate) trait PendingReply: Send {
    /// The node the handle went to.
    fn peer(&self) -> NodeId;
    fn deliver(self: Box<Self>, payload: &[u8], rt: &Runtime) -> bool;
    fn is_abandoned(&self) -> bool;
    /// When the caller stops waiting, if the handle was sent with its call's request (a
    /// handle sent on later is swept once its caller stops waiting).
    fn deadline(&self) -> Option<tokio::time::Instant>;
}

pub(crate) struct PendingOneshot<R> {
    pub(crate) peer: NodeId,
    pub(crate) tx: oneshot::Sender<R>,
    pub(crate) deadline: Option<tokio::time::Instant>,
}

impl<R: DeserializeOwned + Send + 'static> PendingReply for PendingOneshot<R> {
    fn peer(&self) -> NodeId {
        self.peer
    }

    fn deliver(self: Box<Self>, payload: &[u8], rt: &Runtime) -> bool {
        match with_codec(rt, self.peer, || decode::<R>(payload)) {
            Ok(value) => self.tx.send(value).is_ok(),
            Err(_) => false,
        }
    }

    fn is_abandoned(&self) -> bool {
        self.tx.is_closed()
    }

    fn deadline(&self) -> Option<tokio::time::Instant> {
        self.deadline
    }
}

/// Appends `value`'s encoding to `buf`.
pub(crate) fn encode_into<T: Serialize>(value: &T, buf: &mut Vec<u8>) -> Result<(), String> {
    *buf = postcard::to_extend(value, std::mem::take(buf)).map_err(|e| e.to_string())?;
    Ok(())
}

/// How a remote reference or reply handle encodes its values, into the frame's buffer.
pub(crate) type EncodeFn<M> = fn(&M, &mut Vec<u8>) -> Result<(), String>;

/// The remote half of an [`ActorRef`](crate::ActorRef).
pub(crate) struct RemoteRef<M> {
    pub(crate) pid: Pid,
    pub(crate) rt: Runtime,
    pub(crate) encode: EncodeFn<M>,
}

pub(crate) fn encoder<M: Serialize>() -> EncodeFn<M> {
    encode_into::<M>
}

/// Shared with actor_ref.rs: a boxed remote reference.
pub(crate) type RemoteTarget<M> = Arc<RemoteRef<M>>;
