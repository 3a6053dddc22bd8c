//! One connected peer: its streams, the tasks that write and read them, and its pending
//! requests.

use std::collections::HashMap;
use std::sync::Mutex;

use atoll_core::{NodeId, Pid};
use atoll_wire::{Control, Data, FrameDecoder, FrameError, Response, encode_frame};
use quinn::{RecvStream, SendStream};
use tokio::sync::{mpsc, oneshot};

/// Frames waiting to go out are written in batches of at most this many bytes, so many
/// small messages share one stream write.
const COALESCE_BYTES: usize = 64 * 1024;

pub(crate) struct Peer {
    pub(crate) id: NodeId,
    pub(crate) name: String,
    pub(crate) creation: u32,
    pub(crate) listen: Option<String>,
    pub(crate) conn: quinn::Connection,
    /// The node that opened the connection: decides which of two simultaneous connections
    /// survives.
    pub(crate) dialer: NodeId,
    control: mpsc::UnboundedSender<Vec<u8>>,
    streams: Vec<mpsc::UnboundedSender<Vec<u8>>>,
    pub(crate) requests: Mutex<HashMap<u64, oneshot::Sender<Response>>>,
}

/// The peer's connection is gone; nothing was sent.
#[derive(Debug)]
pub(crate) struct Gone;

impl Peer {
    pub(crate) fn new(
        hello: &atoll_wire::Hello,
        conn: quinn::Connection,
        dialer: NodeId,
        control: SendStream,
        streams: Vec<SendStream>,
    ) -> Self {
        Peer {
            id: hello.node_id,
            name: hello.node_name.clone(),
            creation: hello.creation,
            listen: hello.listen.clone(),
            conn,
            dialer,
            control: spawn_writer(control),
            streams: streams.into_iter().map(spawn_writer).collect(),
            requests: Mutex::default(),
        }
    }

    pub(crate) fn send_control(&self, msg: &Control) -> Result<(), Gone> {
        let frame = encode_frame(msg).map_err(|_| Gone)?;
        self.control.send(frame).map_err(|_| Gone)
    }

    /// Queues a data envelope on the stream `key` picks (a pid's serial or a call id).
    pub(crate) fn send_data(&self, key: u64, data: &Data) -> Result<(), Gone> {
        let frame = encode_frame(data).map_err(|_| Gone)?;
        let i = (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as usize % self.streams.len();
        self.streams[i].send(frame).map_err(|_| Gone)
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

/// A task that writes queued frames to `stream`, coalescing whatever is queued into one
/// write.
fn spawn_writer(mut stream: SendStream) -> mpsc::UnboundedSender<Vec<u8>> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    tokio::spawn(async move {
        while let Some(mut batch) = rx.recv().await {
            while batch.len() < COALESCE_BYTES {
                match rx.try_recv() {
                    Ok(frame) => batch.extend_from_slice(&frame),
                    Err(_) => break,
                }
            }
            if stream.write_all(&batch).await.is_err() {
                break;
            }
        }
        let _ = stream.finish();
    });
    tx
}

/// Why a stream stopped yielding frames.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("stream: {0}")]
    Stream(#[from] quinn::ReadError),
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
        loop {
            if let Some(body) = self.decoder.next_frame()? {
                return Ok(Some(body));
            }
            match self.recv.read_chunk(COALESCE_BYTES, true).await? {
                Some(chunk) => self.decoder.push(&chunk.bytes),
                None => return Ok(None),
            }
        }
    }

    /// Tells the peer this stream is refused (after a malformed frame).
    pub(crate) fn refuse(mut self) {
        let _ = self.recv.stop(quinn::VarInt::from_u32(1));
    }
}
