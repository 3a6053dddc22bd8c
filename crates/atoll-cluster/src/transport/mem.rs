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

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use atoll_core::{NodeId, SplitMix64};
use tokio::sync::mpsc;
use tokio::time::Instant;

mod connection;
mod stream;

pub(crate) use connection::Connection;
use connection::{ConnState, Shared, wait_for_change, watchdog};
use stream::Pipe;
pub(crate) use stream::{RecvStream, SendStream};

/// Where simulated wall clocks start: 2026-01-01T00:00:00Z, in ms since the Unix epoch.
const WALL_START_MS: i64 = 1_767_225_600_000;

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
    /// Each machine's wall clock minus the simulated one, in ms (skew and jumps).
    clock_offsets: BTreeMap<SocketAddr, i64>,
    stats: NetStats,
    started: Instant,
    trace: u64,
    /// Every traced event, when asked for (to find where two runs part).
    log: Option<Vec<TraceEvent>>,
}

/// One event of the trace: simulated time since the network started (ns) and its words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceEvent {
    /// Simulated nanoseconds since the network was made.
    pub at: u64,
    /// What happened: a kind, then its operands.
    pub words: Vec<u64>,
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
            self.trace = fold(self.trace, w);
        }
        if let Some(log) = &mut self.log {
            log.push(TraceEvent {
                at,
                words: words.to_vec(),
            });
        }
    }

    /// Wakes everything waiting on a live connection (a fault changed).
    fn wake_all(&mut self) {
        self.connections.retain(|c| c.strong_count() > 0);
        for c in self.connections.iter().filter_map(Weak::upgrade) {
            c.bump();
        }
    }
}

/// Folds one word into a hash (FNV-1a's prime, a word at a time).
fn fold(hash: u64, word: u64) -> u64 {
    (hash ^ word).wrapping_mul(0x0100_0000_01b3).rotate_left(29)
}

/// A hash of a payload's bytes, a word at a time: cheap enough for every packet.
pub(crate) fn payload_word(bytes: &[u8]) -> u64 {
    let mut h = bytes.len() as u64;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        h = fold(h, u64::from_le_bytes(c.try_into().unwrap_or_default()));
    }
    let mut tail = [0u8; 8];
    tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    fold(h, u64::from_le_bytes(tail))
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
                clock_offsets: BTreeMap::new(),
                stats: NetStats::default(),
                started: Instant::now(),
                trace: 0xcbf2_9ce4_8422_2325,
                log: None,
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

    /// The wall clock of the machine at `addr`, in ms since the Unix epoch: a fixed
    /// start (2026-01-01) plus simulated time plus the machine's offset
    /// ([`MemNetwork::shift_clock`]). It steps back if the offset does.
    pub fn wall_ms(&self, addr: SocketAddr) -> u64 {
        let w = self.lock();
        let elapsed = Instant::now().duration_since(w.started).as_millis() as i64;
        let offset = w.clock_offsets.get(&addr).copied().unwrap_or(0);
        u64::try_from(WALL_START_MS + elapsed + offset).unwrap_or(0)
    }

    /// Moves the wall clock of the machine at `addr` by `by_ms` (negative: back), at once:
    /// a skew if done at the start, a jump later.
    pub fn shift_clock(&self, addr: SocketAddr, by_ms: i64) {
        let mut w = self.lock();
        let offset = w.clock_offsets.entry(addr).or_insert(0);
        *offset = offset.saturating_add(by_ms);
        w.record(&[10, port_word(addr), by_ms as u64]);
    }

    /// How far the wall clock of the machine at `addr` is off the simulated one, in ms.
    pub fn clock_offset(&self, addr: SocketAddr) -> i64 {
        self.lock().clock_offsets.get(&addr).copied().unwrap_or(0)
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

    /// Keeps every traced event from now on (see [`MemNetwork::trace_log`]); for finding
    /// the first event where two runs of one seed part.
    pub fn keep_trace_log(&self) {
        let mut w = self.lock();
        if w.log.is_none() {
            w.log = Some(Vec::new());
        }
    }

    /// The events traced since [`MemNetwork::keep_trace_log`] (empty if it was not called).
    pub fn trace_log(&self) -> Vec<TraceEvent> {
        self.lock().log.clone().unwrap_or_default()
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
                        changed: tokio::sync::Notify::new(),
                        datagrams: tokio::sync::Notify::new(),
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
