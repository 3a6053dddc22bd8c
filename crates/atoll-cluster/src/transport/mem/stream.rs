//! Streams of the in-memory network: ordered, reliable, held while their link is blocked.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Connection, payload_word, port_word, wait_for_change};
use crate::transport::StreamError;

/// One direction of a stream.
#[derive(Default)]
pub(super) struct Pipe {
    /// Chunks with the time each may be read.
    chunks: VecDeque<(Instant, Bytes)>,
    /// The latest delivery time so far (bytes never overtake each other).
    last: Option<Instant>,
    finished: bool,
    stopped: bool,
}

/// The sending half of an in-memory stream.
pub(crate) struct SendStream {
    pub(super) conn: Connection,
    pub(super) pipe: Arc<Mutex<Pipe>>,
    /// Wakes the reader (only it: other streams' readers sleep on).
    pub(super) data: Arc<Notify>,
}

impl SendStream {
    pub(crate) fn write(&mut self, buf: &[u8]) -> Result<usize, StreamError> {
        if self.conn.close_reason().is_some() {
            return Err(self.conn.gone());
        }
        let (from, to) = self.conn.ends();
        let delay = {
            let mut w = self.conn.shared.net.lock();
            w.stats.stream_bytes += buf.len() as u64;
            w.record(&[9, port_word(from), port_word(to), payload_word(buf)]);
            w.delay()
        };
        let first = {
            let mut pipe = self.pipe.lock().unwrap_or_else(|e| e.into_inner());
            if pipe.stopped {
                return Err(StreamError("stream stopped by the reader".into()));
            }
            let at = (Instant::now() + delay).max(pipe.last.unwrap_or(Instant::now()));
            pipe.last = Some(at);
            pipe.chunks.push_back((at, Bytes::copy_from_slice(buf)));
            pipe.chunks.len() == 1
        };
        self.conn.shared.lock().sent[self.conn.side] += buf.len() as u64;
        // Behind other bytes, these are due later than those: the reader, asleep until
        // the first chunk is due (or the link carries again), finds them when it takes
        // that one, so only a chunk into an empty pipe wakes it.
        if first {
            self.data.notify_waiters();
        }
        Ok(buf.len())
    }

    pub(crate) fn finish(&mut self) {
        self.pipe.lock().unwrap_or_else(|e| e.into_inner()).finished = true;
        self.data.notify_waiters();
    }
}

/// The receiving half of an in-memory stream.
pub(crate) struct RecvStream {
    /// The receiving side's end.
    pub(super) conn: Connection,
    pub(super) pipe: Arc<Mutex<Pipe>>,
    /// Woken when the writer adds bytes or finishes.
    pub(super) data: Arc<Notify>,
}

impl RecvStream {
    pub(crate) async fn read_chunk(&mut self, max: usize) -> Result<Option<Bytes>, StreamError> {
        let (to, from) = self.conn.ends();
        loop {
            let changed = self.conn.shared.changed.notified();
            let data = self.data.notified();
            if self.conn.close_reason().is_some() {
                return Err(self.conn.gone());
            }
            let wait_until = {
                let mut pipe = self.pipe.lock().unwrap_or_else(|e| e.into_inner());
                let finished = pipe.finished;
                match pipe.chunks.front_mut() {
                    Some(_) if self.conn.shared.net.is_blocked(from, to) => None,
                    Some((at, _)) if *at > Instant::now() => Some(*at),
                    Some((_, chunk)) => {
                        let taken = chunk.split_to(chunk.len().min(max.max(1)));
                        if chunk.is_empty() {
                            pipe.chunks.pop_front();
                        }
                        return Ok(Some(taken));
                    }
                    None if finished => return Ok(None),
                    None => None,
                }
            };
            wait_for_change(changed, data, wait_until).await;
        }
    }

    pub(crate) fn stop(&mut self) {
        let mut pipe = self.pipe.lock().unwrap_or_else(|e| e.into_inner());
        pipe.stopped = true;
        pipe.chunks.clear();
    }
}
