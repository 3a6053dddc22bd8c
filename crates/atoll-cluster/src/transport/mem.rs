//! An in-memory network with QUIC's semantics, for simulations: connections between
//! addresses carry ordered reliable streams and unreliable datagrams, on tokio's clock (run
//! it on a paused clock and time is simulated), with seeded faults.
//!
//! - Every byte and datagram takes a one-way delay drawn from [`Faults`]; datagrams may
//!   also be lost or duplicated (and reorder, as each gets its own delay). Stream bytes are
//!   never lost or reordered.
//! - A blocked link (a partition, one-way or both ways, or a crashed address) drops
//!   datagrams and holds stream bytes; a connection whose link stays blocked either way
//!   for the idle timeout is lost on both sides, as a QUIC connection times out. Dialing
//!   across a blocked link, or to an address nobody listens on, never completes (the
//!   caller's timeout ends it).
//! - A connection closed by one side is seen closed by the other (with the code) when the
//!   link carries the close; otherwise the other side learns it is gone (a reset) when the
//!   link carries packets again, or times out if it never does.
//!
//! Everything random comes from the network's seed, and everything happens on tokio's
//! clock, so a seeded run on a paused current-thread runtime repeats.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use atoll_core::{NodeId, SplitMix64};
use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::{Closed, DatagramRefused, LinkStats, StreamError};

mod stream;

use stream::Pipe;
pub(crate) use stream::{RecvStream, SendStream};

/// The largest datagram the in-memory network carries (as a typical QUIC path).
pub const MAX_DATAGRAM: usize = 1200;

/// How the simulated network misbehaves.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Faults {
    /// Probability a datagram is lost.
    pub loss: f64,
    /// Probability a datagram is delivered twice.
    pub duplicate: f64,
    /// Shortest one-way delay.
    pub delay_min: Duration,
    /// Longest one-way delay.
    pub delay_max: Duration,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            loss: 0.0,
            duplicate: 0.0,
            delay_min: Duration::from_micros(200),
            delay_max: Duration::from_millis(2),
        }
    }
}

/// Counters of the whole network.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Connections established.
    pub connections: u64,
    /// Connections lost to a blocked link.
    pub timed_out: u64,
    /// Datagrams handed to the network.
    pub datagrams_sent: u64,
    /// Datagrams dropped (loss, a blocked link).
    pub datagrams_dropped: u64,
    /// Stream bytes written.
    pub stream_bytes: u64,
}

/// An in-memory network. Cheap to clone; every clone is the same network.
#[derive(Clone)]
pub struct MemNetwork {
    world: Arc<Mutex<World>>,
}

impl std::fmt::Debug for MemNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemNetwork")
            .field("stats", &self.stats())
            .finish()
    }
}

struct World {
    rng: SplitMix64,
    faults: Faults,
    idle_timeout: Duration,
    listeners: BTreeMap<SocketAddr, Listener>,
    blocked: BTreeSet<(SocketAddr, SocketAddr)>,
    crashed: BTreeSet<SocketAddr>,
    connections: Vec<Weak<Shared>>,
    next_connection: usize,
    incarnations: BTreeMap<SocketAddr, u32>,
    stats: NetStats,
    started: Instant,
    trace: u64,
}

struct Listener {
    node: NodeId,
    accept: mpsc::UnboundedSender<Connection>,
}

impl World {
    fn blocked(&self, from: SocketAddr, to: SocketAddr) -> bool {
        self.blocked.contains(&(from, to))
            || self.crashed.contains(&from)
            || self.crashed.contains(&to)
    }

    fn delay(&mut self) -> Duration {
        let lo = self.faults.delay_min;
        let hi = self.faults.delay_max.max(lo);
        let span = hi.saturating_sub(lo).as_nanos() as u64;
        let extra = if span == 0 {
            0
        } else {
            self.rng.next_u64() % (span + 1)
        };
        lo + Duration::from_nanos(extra)
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    /// Folds an event into the trace hash (FNV-1a over the event's words).
    fn record(&mut self, words: &[u64]) {
        let at = Instant::now().duration_since(self.started).as_nanos() as u64;
        for w in std::iter::once(at).chain(words.iter().copied()) {
            for b in w.to_le_bytes() {
                self.trace = (self.trace ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
        }
    }

    /// Wakes everything waiting on a live connection (a fault changed).
    fn wake_all(&mut self) {
        self.connections.retain(|c| c.strong_count() > 0);
        for c in self.connections.iter().filter_map(Weak::upgrade) {
            c.changed.send_modify(|v| *v += 1);
        }
    }
}

fn port_word(addr: SocketAddr) -> u64 {
    match addr {
        SocketAddr::V4(a) => (u64::from(u32::from(*a.ip())) << 16) | u64::from(a.port()),
        SocketAddr::V6(a) => u64::from(a.port()),
    }
}

impl MemNetwork {
    /// A network with no nodes, its randomness from `seed`.
    pub fn new(seed: u64) -> Self {
        MemNetwork {
            world: Arc::new(Mutex::new(World {
                rng: SplitMix64::new(seed),
                faults: Faults::default(),
                idle_timeout: Duration::from_secs(10),
                listeners: BTreeMap::new(),
                blocked: BTreeSet::new(),
                crashed: BTreeSet::new(),
                connections: Vec::new(),
                next_connection: 1,
                incarnations: BTreeMap::new(),
                stats: NetStats::default(),
                started: Instant::now(),
                trace: 0xcbf2_9ce4_8422_2325,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets delays, loss and duplication from now on.
    pub fn set_faults(&self, faults: Faults) {
        self.lock().faults = faults;
    }

    /// The faults in force.
    pub fn faults(&self) -> Faults {
        self.lock().faults
    }

    /// How long a connection survives a blocked link (default 10 s).
    pub fn set_idle_timeout(&self, timeout: Duration) {
        self.lock().idle_timeout = timeout;
    }

    /// Blocks traffic from `from` to `to` (one way).
    pub fn block(&self, from: SocketAddr, to: SocketAddr) {
        let mut w = self.lock();
        w.blocked.insert((from, to));
        w.record(&[1, port_word(from), port_word(to)]);
        w.wake_all();
    }

    /// Lets traffic from `from` to `to` through again.
    pub fn unblock(&self, from: SocketAddr, to: SocketAddr) {
        let mut w = self.lock();
        w.blocked.remove(&(from, to));
        w.record(&[2, port_word(from), port_word(to)]);
        w.wake_all();
    }

    /// Cuts every link between a member of `side_a` and a member of `side_b`, both ways.
    pub fn partition(&self, side_a: &[SocketAddr], side_b: &[SocketAddr]) {
        let mut w = self.lock();
        for &a in side_a {
            for &b in side_b {
                w.blocked.insert((a, b));
                w.blocked.insert((b, a));
                w.record(&[3, port_word(a), port_word(b)]);
            }
        }
        w.wake_all();
    }

    /// Removes every block (crashed addresses stay crashed).
    pub fn heal(&self) {
        let mut w = self.lock();
        w.blocked.clear();
        w.record(&[4]);
        w.wake_all();
    }

    /// Whether traffic from `from` to `to` is blocked now.
    pub fn is_blocked(&self, from: SocketAddr, to: SocketAddr) -> bool {
        self.lock().blocked(from, to)
    }

    /// The machine at `addr` stops: nothing reaches it or leaves it, its peers' connections
    /// time out, and its address is free for a restart.
    pub fn crash(&self, addr: SocketAddr) {
        let mut w = self.lock();
        w.crashed.insert(addr);
        w.listeners.remove(&addr);
        w.record(&[5, port_word(addr)]);
        w.wake_all();
    }

    /// The machine at `addr` is back (a node may bind there again).
    pub fn revive(&self, addr: SocketAddr) {
        let mut w = self.lock();
        w.crashed.remove(&addr);
        w.record(&[6, port_word(addr)]);
        w.wake_all();
    }

    /// The next incarnation number for a node started at `addr`: grows with every start
    /// there, whatever any clock says.
    pub fn next_incarnation(&self, addr: SocketAddr) -> u32 {
        let mut w = self.lock();
        let n = w.incarnations.entry(addr).or_insert(0);
        *n += 1;
        *n
    }

    /// A seed for a node's own randomness, drawn from the network's.
    pub fn next_seed(&self) -> u64 {
        self.lock().rng.next_u64()
    }

    /// Counters of the whole network.
    pub fn stats(&self) -> NetStats {
        self.lock().stats
    }

    /// A hash of everything that happened on the network, with when: two runs with the
    /// same seed and the same workload have the same trace.
    pub fn trace_hash(&self) -> u64 {
        self.lock().trace
    }

    /// Folds an event of the caller's into the trace hash.
    pub fn record(&self, words: &[u64]) {
        self.lock().record(words);
    }

    /// Binds a listener for the node `node` at `addr`.
    pub(crate) fn bind(&self, addr: SocketAddr, node: NodeId) -> Result<Endpoint, String> {
        let mut w = self.lock();
        if w.listeners.contains_key(&addr) {
            return Err(format!("{addr} is in use"));
        }
        if w.crashed.contains(&addr) {
            return Err(format!("{addr} is down"));
        }
        let (accept, incoming) = mpsc::unbounded_channel();
        w.listeners.insert(addr, Listener { node, accept });
        Ok(Endpoint {
            net: self.clone(),
            addr,
            node,
            incoming: tokio::sync::Mutex::new(incoming),
        })
    }
}

/// A node's place on the network.
pub(crate) struct Endpoint {
    net: MemNetwork,
    addr: SocketAddr,
    node: NodeId,
    incoming: tokio::sync::Mutex<mpsc::UnboundedReceiver<Connection>>,
}

impl Endpoint {
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub(crate) async fn accept(&self) -> Option<Connection> {
        self.incoming.lock().await.recv().await
    }

    pub(crate) async fn connect(&self, to: SocketAddr) -> Result<Connection, String> {
        let opened = {
            let mut w = self.net.lock();
            let reachable = !w.blocked(self.addr, to) && !w.blocked(to, self.addr);
            match w.listeners.get(&to) {
                Some(listener) if reachable => {
                    let accept = listener.accept.clone();
                    let nodes = [self.node, listener.node];
                    let id = w.next_connection;
                    w.next_connection += 1;
                    let mut secret = [0u8; 32];
                    for chunk in secret.chunks_mut(8) {
                        chunk.copy_from_slice(&w.rng.next_u64().to_le_bytes());
                    }
                    let shared = Arc::new(Shared {
                        id,
                        addrs: [self.addr, to],
                        nodes,
                        secret,
                        net: self.net.clone(),
                        state: Mutex::new(ConnState::default()),
                        changed: watch::channel(0).0,
                    });
                    w.connections.push(Arc::downgrade(&shared));
                    w.stats.connections += 1;
                    w.record(&[7, port_word(self.addr), port_word(to), id as u64]);
                    let delay = w.delay();
                    Some((shared, accept, delay))
                }
                _ => None,
            }
        };
        let Some((shared, accept, delay)) = opened else {
            // As a QUIC handshake into a black hole: no answer, ever.
            return std::future::pending().await;
        };
        tokio::spawn(watchdog(Arc::downgrade(&shared)));
        tokio::time::sleep(delay).await;
        let theirs = Connection {
            shared: shared.clone(),
            side: 1,
        };
        if accept.send(theirs).is_err() {
            return Err("connection refused".into());
        }
        tokio::time::sleep(delay).await;
        Ok(Connection { shared, side: 0 })
    }

    /// Closes every connection of this endpoint and stops accepting.
    pub(crate) fn close(&self, code: u32) {
        let connections: Vec<Arc<Shared>> = {
            let mut w = self.net.lock();
            if w.listeners
                .get(&self.addr)
                .is_some_and(|l| l.node == self.node)
            {
                w.listeners.remove(&self.addr);
            }
            w.connections
                .iter()
                .filter_map(Weak::upgrade)
                .filter(|c| c.addrs.contains(&self.addr))
                .collect()
        };
        for c in connections {
            let side = usize::from(c.addrs[0] != self.addr);
            c.close_from(side, code);
        }
    }
}

/// What both ends of a connection share.
struct Shared {
    id: usize,
    /// The dialer's and the acceptor's addresses (sides 0 and 1).
    addrs: [SocketAddr; 2],
    nodes: [NodeId; 2],
    secret: [u8; 32],
    net: MemNetwork,
    state: Mutex<ConnState>,
    /// Bumped on every change anyone may wait for.
    changed: watch::Sender<u64>,
}

#[derive(Default)]
struct ConnState {
    /// How each side sees the connection ended.
    closed: [Option<Closed>; 2],
    uni: [VecDeque<RecvStream>; 2],
    bi: [VecDeque<(SendStream, RecvStream)>; 2],
    /// Datagrams for each side, by delivery time.
    datagrams: [BTreeMap<(Instant, u64), Bytes>; 2],
    sequence: u64,
    sent: [u64; 2],
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, ConnState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    /// `side` closes the connection; the other side learns it if the link carries it.
    fn close_from(&self, side: usize, code: u32) {
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
    fn lose(&self, why: &str) {
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

    fn closed(&self, side: usize) -> Option<Closed> {
        self.lock().closed[side].clone()
    }
}

/// Waits for the next change of a connection, or until `at` if given.
async fn wait_for_change(changed: &mut watch::Receiver<u64>, at: Option<Instant>) {
    match at {
        Some(at) => {
            tokio::select! {
                biased;
                _ = changed.changed() => {}
                _ = tokio::time::sleep_until(at) => {}
            }
        }
        None => {
            let _ = changed.changed().await;
        }
    }
}

/// Ends a connection whose link stayed blocked (either way) for the idle timeout.
async fn watchdog(weak: Weak<Shared>) {
    let mut blocked_since: Option<Instant> = None;
    loop {
        let Some(shared) = weak.upgrade() else { return };
        let mut changed = shared.changed.subscribe();
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
                    _ = changed.changed() => {}
                    _ = tokio::time::sleep_until(since + idle) => {}
                }
            }
            None => {
                let _ = changed.changed().await;
            }
        }
    }
}

/// One end of a connection.
#[derive(Clone)]
pub(crate) struct Connection {
    shared: Arc<Shared>,
    side: usize,
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

    fn ends(&self) -> (SocketAddr, SocketAddr) {
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
            let mut changed = self.shared.changed.subscribe();
            if let Some(reason) = self.shared.closed(self.side) {
                return reason;
            }
            let _ = changed.changed().await;
        }
    }

    fn gone(&self) -> StreamError {
        StreamError(match self.shared.closed(self.side) {
            Some(reason) => reason.to_string(),
            None => "connection closed".into(),
        })
    }

    fn pipe(&self) -> (SendStream, RecvStream) {
        let pipe = Arc::new(Mutex::new(Pipe::default()));
        (
            SendStream {
                conn: self.clone(),
                pipe: pipe.clone(),
            },
            RecvStream {
                conn: Connection {
                    shared: self.shared.clone(),
                    side: 1 - self.side,
                },
                pipe,
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
            let mut changed = self.shared.changed.subscribe();
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
            let _ = changed.changed().await;
        }
    }

    pub(crate) async fn accept_bi(&self) -> Result<(SendStream, RecvStream), StreamError> {
        loop {
            let mut changed = self.shared.changed.subscribe();
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
            let _ = changed.changed().await;
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
            w.record(&[8, port_word(from), port_word(to), payload.len() as u64]);
            let copies = if w.chance(duplicate) { 2 } else { 1 };
            (0..copies).map(|_| w.delay()).collect::<Vec<_>>()
        };
        {
            let mut s = self.shared.lock();
            for delay in deliveries {
                s.sequence += 1;
                let key = (Instant::now() + delay, s.sequence);
                s.datagrams[1 - self.side].insert(key, payload.clone());
            }
            s.sent[self.side] += payload.len() as u64;
        }
        self.shared.bump();
        Ok(())
    }

    pub(crate) async fn read_datagram(&self) -> Result<Bytes, StreamError> {
        loop {
            let mut changed = self.shared.changed.subscribe();
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
            wait_for_change(&mut changed, next).await;
        }
    }

    pub(crate) fn stats(&self) -> LinkStats {
        let s = self.shared.lock();
        LinkStats {
            bytes_sent: s.sent[self.side],
            bytes_received: s.sent[1 - self.side],
            rtt: Duration::ZERO,
        }
    }
}
