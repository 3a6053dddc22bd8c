//! One connection of the in-memory network: what its two ends share, the watchdog that
//! ends it when its link stays blocked (or resets it once a close cut off by a partition
//! can get through), and each end's streams and datagrams.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use atoll_core::NodeId;
use bytes::Bytes;
use tokio::sync::Notify;
use tokio::sync::futures::Notified;
use tokio::time::Instant;

use super::{MAX_DATAGRAM, MemNetwork, Pipe, RecvStream, SendStream, payload_word, port_word};
use crate::transport::{Closed, DatagramRefused, LinkStats, StreamError};

/// What both ends of a connection share.
pub(super) struct Shared {
    pub(super) id: usize,
    /// The dialer's and the acceptor's addresses (sides 0 and 1).
    pub(super) addrs: [SocketAddr; 2],
    pub(super) nodes: [NodeId; 2],
    pub(super) secret: [u8; 32],
    pub(super) net: MemNetwork,
    pub(super) state: Mutex<ConnState>,
    /// Woken on every change anyone may wait for. (A `Notify` wakes its waiters in a
    /// fixed order; a `watch` channel spreads them over shards at random, which would
    /// make same-instant wake-ups run in a different order on every run.)
    pub(super) changed: Notify,
    /// Woken when a datagram is queued for either side (only datagram readers wait on it,
    /// so stream traffic does not wake them, nor datagrams the stream readers).
    pub(super) datagrams: Notify,
}

#[derive(Default)]
pub(super) struct ConnState {
    /// How each side sees the connection ended.
    pub(super) closed: [Option<Closed>; 2],
    pub(super) uni: [VecDeque<RecvStream>; 2],
    pub(super) bi: [VecDeque<(SendStream, RecvStream)>; 2],
    /// Datagrams for each side, by delivery time.
    pub(super) datagrams: [BTreeMap<(Instant, u64), Bytes>; 2],
    pub(super) sequence: u64,
    pub(super) sent: [u64; 2],
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, ConnState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn bump(&self) {
        self.changed.notify_waiters();
    }

    /// `side` closes the connection; the other side learns it if the link carries it.
    pub(super) fn close_from(&self, side: usize, code: u32) {
        let carried = !self.net.is_blocked(self.addrs[side], self.addrs[1 - side]);
        {
            let mut s = self.lock();
            if s.closed[side].is_none() {
                s.closed[side] = Some(Closed::Locally);
            }
            if carried && s.closed[1 - side].is_none() {
                s.closed[1 - side] = Some(Closed::ByPeer(code));
            }
        }
        self.bump();
    }

    /// Lost on both sides.
    pub(super) fn lose(&self, why: &str) {
        {
            let mut s = self.lock();
            for side in 0..2 {
                if s.closed[side].is_none() {
                    s.closed[side] = Some(Closed::Lost(why.to_string()));
                }
            }
        }
        self.bump();
    }

    pub(super) fn closed(&self, side: usize) -> Option<Closed> {
        self.lock().closed[side].clone()
    }
}

/// Waits for the next change of a connection, or until `at` if given.
/// Waits for the next change of a connection (`changed`) or of what one reader reads
/// (`data`), or until `at` if given.
pub(super) async fn wait_for_change(
    changed: Notified<'_>,
    data: Notified<'_>,
    at: Option<Instant>,
) {
    let deadline = async {
        match at {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        _ = changed => {}
        _ = data => {}
        _ = deadline => {}
    }
}

/// Ends a connection whose link stayed blocked (either way) for the idle timeout.
pub(super) async fn watchdog(weak: Weak<Shared>) {
    let mut blocked_since: Option<Instant> = None;
    loop {
        let Some(shared) = weak.upgrade() else { return };
        let changed = shared.changed.notified();
        let half_open = {
            let s = shared.lock();
            if s.closed[0].is_some() && s.closed[1].is_some() {
                return;
            }
            s.closed[0].is_some() || s.closed[1].is_some()
        };
        let [a, b] = shared.addrs;
        let (blocked, idle) = {
            let w = shared.net.lock();
            (w.blocked(a, b) || w.blocked(b, a), w.idle_timeout)
        };
        if half_open && !blocked {
            // One side closed while the link was cut, so the other never heard. Once the
            // link carries packets again the closed side answers them with a reset, as a
            // QUIC endpoint does for a connection it no longer has.
            shared.lose("reset by the peer");
            return;
        }
        blocked_since = if blocked {
            Some(blocked_since.unwrap_or_else(Instant::now))
        } else {
            None
        };
        match blocked_since {
            Some(since) if Instant::now() >= since + idle => {
                shared.net.lock().stats.timed_out += 1;
                shared.lose("timed out");
                return;
            }
            Some(since) => {
                tokio::select! {
                    biased;
                    _ = changed => {}
                    _ = tokio::time::sleep_until(since + idle) => {}
                }
            }
            None => changed.await,
        }
    }
}

/// One end of a connection.
#[derive(Clone)]
pub(crate) struct Connection {
    pub(super) shared: Arc<Shared>,
    pub(super) side: usize,
}

impl Connection {
    pub(crate) fn stable_id(&self) -> usize {
        self.shared.id
    }

    pub(crate) fn secret(&self) -> [u8; 32] {
        self.shared.secret
    }

    pub(crate) fn peer_node(&self) -> NodeId {
        self.shared.nodes[1 - self.side]
    }

    pub(super) fn ends(&self) -> (SocketAddr, SocketAddr) {
        (
            self.shared.addrs[self.side],
            self.shared.addrs[1 - self.side],
        )
    }

    pub(crate) fn close(&self, code: u32) {
        self.shared.close_from(self.side, code);
    }

    pub(crate) fn close_reason(&self) -> Option<Closed> {
        self.shared.closed(self.side)
    }

    pub(crate) async fn closed(&self) -> Closed {
        loop {
            let changed = self.shared.changed.notified();
            if let Some(reason) = self.shared.closed(self.side) {
                return reason;
            }
            changed.await;
        }
    }

    pub(super) fn gone(&self) -> StreamError {
        StreamError(match self.shared.closed(self.side) {
            Some(reason) => reason.to_string(),
            None => "connection closed".into(),
        })
    }

    fn pipe(&self) -> (SendStream, RecvStream) {
        let pipe = Arc::new(Mutex::new(Pipe::default()));
        let data = Arc::new(Notify::new());
        (
            SendStream {
                conn: self.clone(),
                pipe: pipe.clone(),
                data: data.clone(),
            },
            RecvStream {
                conn: Connection {
                    shared: self.shared.clone(),
                    side: 1 - self.side,
                },
                pipe,
                data,
            },
        )
    }

    pub(crate) fn open_uni(&self) -> Result<SendStream, StreamError> {
        if self.close_reason().is_some() {
            return Err(self.gone());
        }
        let (send, recv) = self.pipe();
        self.shared.lock().uni[1 - self.side].push_back(recv);
        self.shared.bump();
        Ok(send)
    }

    pub(crate) fn open_bi(&self) -> Result<(SendStream, RecvStream), StreamError> {
        if self.close_reason().is_some() {
            return Err(self.gone());
        }
        let (my_send, their_recv) = self.pipe();
        let theirs = Connection {
            shared: self.shared.clone(),
            side: 1 - self.side,
        };
        let (their_send, my_recv) = theirs.pipe();
        self.shared.lock().bi[1 - self.side].push_back((their_send, their_recv));
        self.shared.bump();
        Ok((my_send, my_recv))
    }

    pub(crate) async fn accept_uni(&self) -> Result<RecvStream, StreamError> {
        loop {
            let changed = self.shared.changed.notified();
            {
                let mut s = self.shared.lock();
                if let Some(r) = s.uni[self.side].pop_front() {
                    return Ok(r);
                }
                if s.closed[self.side].is_some() {
                    drop(s);
                    return Err(self.gone());
                }
            }
            changed.await;
        }
    }

    pub(crate) async fn accept_bi(&self) -> Result<(SendStream, RecvStream), StreamError> {
        loop {
            let changed = self.shared.changed.notified();
            {
                let mut s = self.shared.lock();
                if let Some(pair) = s.bi[self.side].pop_front() {
                    return Ok(pair);
                }
                if s.closed[self.side].is_some() {
                    drop(s);
                    return Err(self.gone());
                }
            }
            changed.await;
        }
    }

    pub(crate) fn send_datagram(&self, payload: Bytes) -> Result<(), DatagramRefused> {
        if payload.len() > MAX_DATAGRAM {
            return Err(DatagramRefused::TooLarge);
        }
        if let Some(reason) = self.close_reason() {
            return Err(DatagramRefused::Unavailable(reason.to_string()));
        }
        let (from, to) = self.ends();
        let deliveries = {
            let mut w = self.shared.net.lock();
            w.stats.datagrams_sent += 1;
            let loss = w.faults.loss;
            let duplicate = w.faults.duplicate;
            if w.blocked(from, to) || w.chance(loss) {
                w.stats.datagrams_dropped += 1;
                return Ok(());
            }
            w.record(&[8, port_word(from), port_word(to), payload_word(&payload)]);
            let copies = if w.chance(duplicate) { 2 } else { 1 };
            (0..copies).map(|_| w.delay()).collect::<Vec<_>>()
        };
        let first = {
            let mut s = self.shared.lock();
            let before = s.datagrams[1 - self.side]
                .first_key_value()
                .map(|(k, _)| *k);
            for delay in deliveries {
                s.sequence += 1;
                let key = (Instant::now() + delay, s.sequence);
                s.datagrams[1 - self.side].insert(key, payload.clone());
            }
            s.sent[self.side] += payload.len() as u64;
            s.datagrams[1 - self.side]
                .first_key_value()
                .map(|(k, _)| *k)
                != before
        };
        // The readers sleep until the earliest queued datagram is due: only a new earliest
        // one changes when they must wake.
        if first {
            self.shared.datagrams.notify_waiters();
        }
        Ok(())
    }

    pub(crate) async fn read_datagram(&self) -> Result<Bytes, StreamError> {
        loop {
            let changed = self.shared.changed.notified();
            let queued = self.shared.datagrams.notified();
            let next = {
                let mut s = self.shared.lock();
                if s.closed[self.side].is_some() {
                    drop(s);
                    return Err(self.gone());
                }
                let queue = &mut s.datagrams[self.side];
                match queue.first_key_value().map(|(k, _)| *k) {
                    Some(key) if key.0 <= Instant::now() => {
                        return Ok(queue.remove(&key).unwrap_or_default());
                    }
                    other => other.map(|k| k.0),
                }
            };
            wait_for_change(changed, queued, next).await;
        }
    }

    pub(crate) fn stats(&self) -> LinkStats {
        let s = self.shared.lock();
        LinkStats {
            bytes_sent: s.sent[self.side],
            bytes_received: s.sent[1 - self.side],
            datagrams_sent: 0,
            datagrams_received: 0,
            rtt: Duration::ZERO,
        }
    }
}
