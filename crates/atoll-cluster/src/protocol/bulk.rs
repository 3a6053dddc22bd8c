//! Large frames on their own stream, without reordering a process's messages.
//!
//! Every data frame has a stream key (the receiving pid's serial, a call id, or a name's
//! hash) and the frames of one key travel on one message stream, in order. A frame of a
//! megabyte on that stream would hold up every small frame queued behind it, including
//! those of other keys sharing the stream. So a frame of at least [`BULK_FRAME`] bytes goes
//! on a bulk stream (at a lower priority; one per message stream, opened with its first
//! large frame, so large frames of different keys still travel side by side), and in its
//! place on the message stream goes a small [`Data::BulkMark`](atoll_wire::Data::BulkMark)
//! naming the bulk stream, the frame's position on it and its key.
//!
//! The receiver keeps the key's order with [`BulkMerge`]: frames of a key that has a mark
//! outstanding wait (copied) until the large frame has arrived; frames of every other key
//! are delivered at once.

use std::collections::{HashMap, VecDeque};

use atoll_wire::DataRef;

/// Frames of at least this many bytes (header included) travel on a bulk stream.
///
/// Measured with `cluster_fanout --mixed`: below a few tens of kilobytes a frame's time on
/// the wire is of the order of a small round trip, so moving it buys nothing and costs a
/// mark; at a megabyte, a small frame behind it waited milliseconds.
pub const BULK_FRAME: usize = 64 * 1024;

/// Which stream a frame goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Its key's message stream.
    Message,
    /// A bulk stream, with a mark on its key's message stream.
    Bulk,
}

/// The stream for a frame of `frame_len` bytes.
pub fn lane(frame_len: usize) -> Lane {
    if frame_len >= BULK_FRAME {
        Lane::Bulk
    } else {
        Lane::Message
    }
}

/// The stream key of sends by name: the same on every call, so sends to one name stay in
/// order (FNV-1a; it only has to spread names over a handful of streams).
pub fn name_key(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The stream key a sender used for `data` (`None` for the bulk stream's own frames).
pub fn data_key(data: &DataRef<'_>) -> Option<u64> {
    match data {
        DataRef::Send { to, .. } => Some(to.serial),
        DataRef::SendNamed { name, .. } => Some(name_key(name)),
        DataRef::Reply { call, .. } => Some(*call),
        DataRef::Signal(signal) => Some(signal.target().serial),
        DataRef::BulkMark { .. } | DataRef::BulkLane { .. } => None,
    }
}

/// The most bulk streams a connection may have (one per message stream).
pub const MAX_LANES: u32 = crate::MAX_MESSAGE_STREAMS as u32;

/// A bulk frame's place: its bulk stream and its position on it.
pub type Position = (u32, u64);

/// A peer broke the bulk streams' rules; the stream it came on is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    /// A second mark for one position.
    #[error("bulk frame {0:?} marked twice")]
    DuplicateMark(Position),
    /// A mark for a position whose frame was already delivered.
    #[error("bulk frame {0:?} marked after it was delivered")]
    LateMark(Position),
    /// A bulk stream numbered beyond [`MAX_LANES`].
    #[error("bulk stream {0} (at most {MAX_LANES})")]
    NoSuchLane(u32),
    /// Bulk frames arrived, unmarked, beyond the bytes allowed to wait for their marks.
    #[error("{bytes} bytes of bulk frames wait for their marks (at most {max})")]
    TooManyUnmarked {
        /// Bytes waiting.
        bytes: usize,
        /// The limit.
        max: usize,
    },
}

/// What to do with a frame read from a message stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Deliver it now.
    Now,
    /// It was copied and waits for an earlier large frame of its key.
    Held,
}

/// What a frame from the bulk stream releases, in delivery order.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Release {
    /// Deliver the arrived bulk frame first, from where it lies (it was not copied).
    pub arrived_now: bool,
    /// Then these frame bodies.
    pub then: Vec<Vec<u8>>,
}

#[derive(Debug)]
enum Item {
    /// The bulk frame at this position.
    Bulk(Position),
    /// A frame of the key, held behind it.
    Frame(Vec<u8>),
}

/// The receiver's side: merges one connection's bulk streams back into its message
/// streams' per-key order.
#[derive(Debug)]
pub struct BulkMerge {
    /// Per key with a mark outstanding: what waits, in order; the front is always a
    /// bulk frame not yet arrived.
    waiting: HashMap<u64, VecDeque<Item>>,
    /// Marked positions not yet delivered, and their keys.
    marks: HashMap<Position, u64>,
    /// Bulk frames that arrived before they could be delivered.
    arrived: HashMap<Position, Vec<u8>>,
    /// Bytes of `arrived` frames whose marks are still to come.
    unmarked_bytes: usize,
    max_unmarked: usize,
    /// Per bulk stream, the position of its next frame.
    next_seq: HashMap<u32, u64>,
    held_bytes: usize,
}

impl BulkMerge {
    /// A merge allowing `max_unmarked` bytes of bulk frames to wait for their marks.
    pub fn new(max_unmarked: usize) -> Self {
        BulkMerge {
            waiting: HashMap::new(),
            marks: HashMap::new(),
            arrived: HashMap::new(),
            unmarked_bytes: 0,
            max_unmarked,
            next_seq: HashMap::new(),
            held_bytes: 0,
        }
    }

    /// True when nothing waits: every frame can be delivered as it comes.
    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.arrived.is_empty()
    }

    /// Bytes of message-stream frames held behind large frames.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// A frame of `key` read from a message stream.
    pub fn frame(&mut self, key: u64, body: &[u8]) -> Admit {
        match self.waiting.get_mut(&key) {
            Some(queue) => {
                queue.push_back(Item::Frame(body.to_vec()));
                self.held_bytes += body.len();
                Admit::Held
            }
            None => Admit::Now,
        }
    }

    /// A mark read from a message stream: the bulk frame at `seq` on bulk stream `lane`
    /// belongs here in `key`'s order. Returns what can be delivered now.
    pub fn mark(&mut self, lane: u32, seq: u64, key: u64) -> Result<Vec<Vec<u8>>, MergeError> {
        if lane >= MAX_LANES {
            return Err(MergeError::NoSuchLane(lane));
        }
        let seq = (lane, seq);
        if self.marks.contains_key(&seq) {
            return Err(MergeError::DuplicateMark(seq));
        }
        let next = self.next_seq.get(&lane).copied().unwrap_or(0);
        if seq.1 < next && !self.arrived.contains_key(&seq) {
            return Err(MergeError::LateMark(seq));
        }
        if let Some(body) = self.arrived.get(&seq) {
            self.unmarked_bytes -= body.len();
        }
        self.marks.insert(seq, key);
        self.waiting
            .entry(key)
            .or_default()
            .push_back(Item::Bulk(seq));
        Ok(self.release(key))
    }

    /// The next frame read from bulk stream `lane`.
    pub fn bulk(&mut self, lane: u32, body: &[u8]) -> Result<Release, MergeError> {
        if lane >= MAX_LANES {
            return Err(MergeError::NoSuchLane(lane));
        }
        let next = self.next_seq.entry(lane).or_default();
        let seq = (lane, *next);
        *next += 1;
        let Some(&key) = self.marks.get(&seq) else {
            // Its mark is still on its way (another stream).
            self.unmarked_bytes += body.len();
            if self.unmarked_bytes > self.max_unmarked {
                return Err(MergeError::TooManyUnmarked {
                    bytes: self.unmarked_bytes,
                    max: self.max_unmarked,
                });
            }
            self.arrived.insert(seq, body.to_vec());
            return Ok(Release::default());
        };
        let queue = self.waiting.get_mut(&key).expect("a marked key waits");
        if matches!(queue.front(), Some(Item::Bulk(s)) if *s == seq) {
            // The usual case: it is next in its key's order, so it goes out from where it
            // lies, and releases what waited behind it.
            queue.pop_front();
            self.marks.remove(&seq);
            return Ok(Release {
                arrived_now: true,
                then: self.release(key),
            });
        }
        // Behind an earlier large frame of the same key that has not arrived.
        self.arrived.insert(seq, body.to_vec());
        Ok(Release::default())
    }

    /// Takes from the front of `key`'s queue everything no longer waiting.
    fn release(&mut self, key: u64) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let Some(queue) = self.waiting.get_mut(&key) else {
            return out;
        };
        while let Some(front) = queue.front() {
            match front {
                Item::Bulk(seq) => match self.arrived.remove(seq) {
                    Some(body) => {
                        self.marks.remove(seq);
                        out.push(body);
                    }
                    None => break,
                },
                Item::Frame(body) => {
                    self.held_bytes -= body.len();
                }
            }
            if let Some(Item::Frame(body)) = queue.pop_front() {
                out.push(body);
            }
        }
        if queue.is_empty() {
            self.waiting.remove(&key);
        }
        out
    }
}

#[cfg(test)]
#[path = "bulk_tests.rs"]
mod tests;
