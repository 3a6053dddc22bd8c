//! One connected peer: its streams, the tasks that write and read them, and its pending
//! requests.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use crate::protocol::bulk::{BulkMerge, Lane, lane};
use crate::transport::{Connection, RecvStream, SendStream, StreamError};
use atoll_core::{NodeId, Pid};
use atoll_wire::{
    Control, Data, FrameDecoder, FrameError, Response, encode_frame, encode_frame_in,
};
use bytes::Bytes;
use tokio::sync::oneshot;

thread_local! {
    /// This thread's buffer for encoding frames, reused from one to the next: frames are
    /// copied into their stream as they are queued, and fresh buffers would cost an
    /// allocation per message (and, for large ones, a page fault per page).
    static FRAME_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The largest buffer kept for reuse per thread.
const MAX_KEPT_FRAME_BUFFER: usize = 16 << 20;

/// Runs `f` with this thread's frame buffer, emptied (or with a fresh one while that is in
/// use further up the stack).
pub(crate) fn with_frame_buffer<T>(f: impl FnOnce(&mut Vec<u8>) -> T) -> T {
    let mut buf = FRAME_BUFFER.with(|b| std::mem::take(&mut *b.borrow_mut()));
    buf.clear();
    let out = f(&mut buf);
    if buf.capacity() <= MAX_KEPT_FRAME_BUFFER {
        FRAME_BUFFER.with(|b| {
            let mut kept = b.borrow_mut();
            if kept.capacity() < buf.capacity() {
                *kept = buf;
            }
        });
    }
    out
}

/// The most bytes read from a stream at once.
const READ_CHUNK: usize = 64 * 1024;

pub(crate) struct Peer {
    pub(crate) id: NodeId,
    pub(crate) name: String,
    pub(crate) creation: u32,
    pub(crate) listen: Option<String>,
    pub(crate) conn: Connection,
    /// The address this node dialed, if it opened the connection.
    pub(crate) dialed_addr: Option<std::net::SocketAddr>,
    control: Arc<Outbox>,
    streams: Vec<Arc<Outbox>>,
    pub(crate) requests: Mutex<BTreeMap<u64, oneshot::Sender<Response>>>,
    /// Set when this node closes the connection on purpose (`disconnect`): the peer may be
    /// reached again on demand, unlike one whose connection was lost.
    pub(crate) closed_on_purpose: AtomicBool,
    /// Frames queued for this peer (all streams).
    pub(crate) frames_sent: AtomicU64,
    /// Frames read from this peer (all streams).
    pub(crate) frames_received: AtomicU64,
    /// The largest frame sent (this node's own limit, which nodes of a cluster share).
    max_frame_len: usize,
    /// The bulk streams for large frames, one per message stream, each opened with its
    /// first one.
    bulk: Mutex<BulkSend>,
    /// Merges the peer's bulk stream back into its message streams' order.
    pub(crate) merge: Mutex<BulkMerge>,
    /// Set while `merge` holds anything, so message streams skip its lock otherwise;
    /// changed only under that lock, after delivering what it released.
    pub(crate) merging: AtomicBool,
    /// Woken when frames held in `merge` were released.
    pub(crate) merge_released: tokio::sync::Notify,
}

#[derive(Default)]
struct BulkSend {
    /// Per message stream: its bulk stream, and the position of its next frame.
    lanes: Vec<Option<(Arc<Outbox>, u64)>>,
    /// An opening would have had to wait: large frames stay on their message streams.
    unavailable: bool,
}

/// The peer's connection is gone; nothing was sent.
#[derive(Debug)]
pub(crate) struct Gone;

/// Why a data frame was not sent.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendFailed {
    /// The connection is gone.
    #[error("connection gone")]
    Gone,
    /// The frame is larger than nodes accept ([`crate::NodeConfig::max_frame_len`]): the
    /// receiver would refuse the whole stream, so it is not sent at all.
    #[error("a frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// The frame's length (version byte and body, as its header counts it).
        len: usize,
        /// The limit.
        max: usize,
    },
}

impl From<Gone> for SendFailed {
    fn from(_: Gone) -> Self {
        SendFailed::Gone
    }
}

impl Peer {
    pub(crate) fn new(
        hello: &atoll_wire::Hello,
        conn: Connection,
        dialed_addr: Option<std::net::SocketAddr>,
        control: SendStream,
        streams: Vec<SendStream>,
        max_frame_len: usize,
    ) -> Self {
        Peer {
            id: hello.node_id,
            name: hello.node_name.clone(),
            creation: hello.creation,
            listen: hello.listen.clone(),
            conn,
            dialed_addr,
            control: Outbox::new(control),
            streams: streams.into_iter().map(Outbox::new).collect(),
            requests: Mutex::default(),
            closed_on_purpose: AtomicBool::new(false),
            frames_sent: AtomicU64::new(0),
            frames_received: AtomicU64::new(0),
            max_frame_len,
            bulk: Mutex::default(),
            // Bulk frames whose marks are late wait within a few frames' worth.
            merge: Mutex::new(BulkMerge::new(max_frame_len.saturating_mul(4))),
            merging: AtomicBool::new(false),
            merge_released: tokio::sync::Notify::new(),
        }
    }

    pub(crate) fn send_control(&self, msg: &Control) -> Result<(), Gone> {
        let frame = encode_frame(msg).map_err(|_| Gone)?;
        self.control.send(&frame)?;
        self.frames_sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Queues a control frame encoded once for several peers.
    pub(crate) fn send_control_frame(&self, frame: &[u8]) -> Result<(), Gone> {
        self.control.send(frame)?;
        self.frames_sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Queues a data envelope on the stream `key` picks (a pid's serial or a call id).
    pub(crate) fn send_data(&self, key: u64, data: &Data) -> Result<(), SendFailed> {
        with_frame_buffer(|buf| {
            *buf = encode_frame_in(data, std::mem::take(buf)).map_err(|_| Gone)?;
            self.send_frame(key, buf)
        })
    }

    /// Queues an encoded data frame on the stream `key` picks, or, if it is large, on the
    /// bulk stream with a mark in its place (see [`crate::protocol::bulk`]).
    pub(crate) fn send_frame(&self, key: u64, frame: &[u8]) -> Result<(), SendFailed> {
        self.send_frame_with(key, frame, || Bytes::copy_from_slice(frame))
    }

    /// As [`send_frame`](Self::send_frame) for a frame the caller hands over: a large one
    /// goes to its stream without being copied.
    pub(crate) fn send_owned_frame(&self, key: u64, frame: Bytes) -> Result<(), SendFailed> {
        self.send_frame_with(key, &frame, || frame.clone())
    }

    /// Sends `frame`; `owned` gives it as `Bytes` if it goes to a bulk stream.
    fn send_frame_with(
        &self,
        key: u64,
        frame: &[u8],
        owned: impl FnOnce() -> Bytes,
    ) -> Result<(), SendFailed> {
        // The header's length counts the version byte and the body.
        let len = frame.len().saturating_sub(4);
        if len > self.max_frame_len {
            tracing::warn!(peer = %self.name, len, max = self.max_frame_len, "a message too large to send was dropped");
            return Err(SendFailed::TooLarge {
                len,
                max: self.max_frame_len,
            });
        }
        let i = (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as usize % self.streams.len();
        if lane(frame.len()) == Lane::Bulk
            && let Some(sent) = self.send_bulk(i, key, &owned())
        {
            return Ok(sent?);
        }
        self.streams[i].send(frame)?;
        self.frames_sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Sends a large frame on message stream `i`'s bulk stream and its mark on the message
    /// stream; `None` if there is no bulk stream to be had.
    fn send_bulk(&self, i: usize, key: u64, frame: &Bytes) -> Option<Result<(), Gone>> {
        let mut bulk = self.bulk.lock().unwrap_or_else(|e| e.into_inner());
        if bulk.lanes.len() < self.streams.len() {
            bulk.lanes.resize(self.streams.len(), None);
        }
        let lane = u32::try_from(i).ok()?;
        if bulk.lanes[i].is_none() && !bulk.unavailable {
            match self.conn.try_open_uni() {
                Some(Ok(mut s)) => {
                    s.set_low_priority();
                    let outbox = Outbox::new(s);
                    let first = encode_frame(&Data::BulkLane { lane }).expect("encodes");
                    if outbox.send(&first).is_err() {
                        return Some(Err(Gone));
                    }
                    bulk.lanes[i] = Some((outbox, 0));
                }
                Some(Err(_)) => return Some(Err(Gone)),
                None => bulk.unavailable = true,
            }
        }
        let (outbox, next) = bulk.lanes[i].as_mut()?;
        let seq = *next;
        *next += 1;
        // Under the lock: bulk frames go out in the order of their marks' positions.
        let mark = encode_frame(&Data::BulkMark { lane, seq, key }).expect("encodes");
        let sent = self.streams[i]
            .send(&mark)
            .and_then(|()| outbox.send_owned(frame));
        drop(bulk);
        if sent.is_ok() {
            self.frames_sent.fetch_add(1, Ordering::Relaxed);
        }
        Some(sent)
    }

    pub(crate) fn stream_key(pid: Pid) -> u64 {
        pid.serial
    }

    /// Fails every request still waiting for an answer (their callers see the connection
    /// lost).
    pub(crate) fn fail_requests(&self) {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

/// The sending side of one stream.
///
/// A frame is written straight into the stream from the sender's own task when nothing is
/// queued ahead of it and the stream takes it at once (the usual case): no hand-off to
/// another task. Otherwise it is appended to a buffer that a flusher task writes out, so
/// frames queued while the stream is busy go out together in one write.
pub(crate) struct Outbox {
    state: Mutex<OutboxState>,
    flush: Arc<tokio::sync::Notify>,
}

struct OutboxState {
    stream: SendStream,
    /// Bytes waiting for the flusher, in order, from `flushed` on.
    pending: Vec<u8>,
    /// Bytes at the front of `pending` already written: dropped when all are, or in one go
    /// once they are most of it, so a large frame written piece by piece is not shifted
    /// after every piece.
    flushed: usize,
    closed: bool,
}

impl Outbox {
    pub(crate) fn new(stream: SendStream) -> Arc<Self> {
        let outbox = Arc::new(Outbox {
            state: Mutex::new(OutboxState {
                stream,
                pending: Vec::new(),
                flushed: 0,
                closed: false,
            }),
            flush: Arc::new(tokio::sync::Notify::new()),
        });
        tokio::spawn(flusher(Arc::downgrade(&outbox), outbox.flush.clone()));
        outbox
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OutboxState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn send(&self, frame: &[u8]) -> Result<(), Gone> {
        self.send_with(frame, |stream, cx| stream.poll_write(cx, frame))
    }

    /// Queues an owned frame: what the stream takes at once it takes without a copy.
    pub(crate) fn send_owned(&self, frame: &Bytes) -> Result<(), Gone> {
        self.send_with(frame, |stream, cx| stream.poll_write_chunk(cx, frame))
    }

    /// Writes `frame` straight into the stream with `write` if nothing is queued ahead of
    /// it, and queues what the stream did not take for the flusher.
    fn send_with(
        &self,
        frame: &[u8],
        write: impl FnOnce(&mut SendStream, &mut Context<'_>) -> Poll<Result<usize, StreamError>>,
    ) -> Result<(), Gone> {
        let mut state = self.lock();
        if state.closed {
            return Err(Gone);
        }
        if state.pending.is_empty() {
            let mut cx = Context::from_waker(Waker::noop());
            match write(&mut state.stream, &mut cx) {
                Poll::Ready(Ok(n)) if n == frame.len() => return Ok(()),
                Poll::Ready(Ok(n)) => state.pending.extend_from_slice(&frame[n..]),
                Poll::Ready(Err(_)) => {
                    state.closed = true;
                    return Err(Gone);
                }
                Poll::Pending => state.pending.extend_from_slice(frame),
            }
            drop(state);
            self.flush.notify_one();
        } else {
            state.pending.extend_from_slice(frame);
        }
        Ok(())
    }

    /// Writes out what is pending, registering `cx` when the stream is full.
    fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<Result<(), Gone>> {
        let mut state = self.lock();
        let state = &mut *state;
        let mut written = state.flushed;
        let result = loop {
            if written == state.pending.len() {
                break Poll::Ready(Ok(()));
            }
            match state.stream.poll_write(cx, &state.pending[written..]) {
                Poll::Ready(Ok(n)) => written += n,
                Poll::Ready(Err(_)) => {
                    state.closed = true;
                    break Poll::Ready(Err(Gone));
                }
                Poll::Pending => break Poll::Pending,
            }
        };
        if written == state.pending.len() {
            state.pending.clear();
            state.flushed = 0;
        } else if written > state.pending.len() / 2 {
            state.pending.drain(..written);
            state.flushed = 0;
        } else {
            state.flushed = written;
        }
        result
    }
}

/// Writes out an outbox's pending bytes whenever told to; ends with the outbox.
async fn flusher(outbox: std::sync::Weak<Outbox>, flush: Arc<tokio::sync::Notify>) {
    loop {
        flush.notified().await;
        let Some(o) = outbox.upgrade() else { return };
        if std::future::poll_fn(|cx| o.poll_flush(cx)).await.is_err() {
            return;
        }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        self.lock().stream.finish();
        self.flush.notify_one();
    }
}

/// Why a stream stopped yielding frames.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("stream: {0}")]
    Stream(#[from] StreamError),
}

/// Reads frames off a QUIC receive stream.
pub(crate) struct FrameReader {
    recv: RecvStream,
    decoder: FrameDecoder,
}

impl FrameReader {
    pub(crate) fn new(recv: RecvStream, max_frame_len: usize) -> Self {
        FrameReader {
            recv,
            decoder: FrameDecoder::new(max_frame_len),
        }
    }

    /// The next frame body; `None` once the peer finished the stream.
    pub(crate) async fn next(&mut self) -> Result<Option<Vec<u8>>, ReadError> {
        self.next_with(<[u8]>::to_vec).await
    }

    /// Hands the next frame body to `f` in place; `None` once the peer finished the stream.
    pub(crate) async fn next_with<T>(
        &mut self,
        mut f: impl FnMut(&[u8]) -> T,
    ) -> Result<Option<T>, ReadError> {
        loop {
            if let Some(out) = self.decoder.next_frame_with(&mut f)? {
                return Ok(Some(out));
            }
            match self.recv.read_chunk(READ_CHUNK).await? {
                Some(chunk) => self.decoder.push(&chunk),
                None => return Ok(None),
            }
        }
    }

    /// Tells the peer this stream is refused (after a malformed frame).
    pub(crate) fn refuse(mut self) {
        self.recv.stop(1);
    }
}
