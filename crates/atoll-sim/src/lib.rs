//! A deterministic cluster simulator: many atoll nodes' membership in one process, on
//! tokio's paused clock, over an in-memory network that can drop, delay, duplicate and
//! partition datagrams. The membership code is the production code; only the transport is
//! swapped.
//!
//! Everything random comes from one seed, so a seed reproduces a run exactly. Run inside a
//! current-thread tokio runtime with a paused clock (`#[tokio::test(start_paused = true)]`).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! use atoll_sim::Sim;
//! use std::time::Duration;
//!
//! let mut sim = Sim::new(7, atoll_swim::SwimConfig::default());
//! let a = sim.add_node(&[]);
//! for _ in 0..4 {
//!     sim.add_node(&[a]);
//! }
//! assert!(sim.wait_until(Duration::from_secs(30), |s| s.converged()).await);
//! # }
//! ```
#![deny(missing_docs)]

pub mod cluster;
pub mod history;
pub mod workload;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use atoll_core::{NodeId, SplitMix64};
use atoll_swim::{
    Identity, MemberEvent, MemberMeta, MemberState, Membership, Swim, SwimConfig, Transport,
};
use bytes::Bytes;
use history::Sighting;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

/// How the simulated network misbehaves (the in-memory network's faults, applied here to
/// every datagram).
pub use atoll_cluster::transport::Faults;

/// Datagram counters of the whole network.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Datagrams handed to the network.
    pub sent: u64,
    /// Datagrams delivered to a node.
    pub delivered: u64,
    /// Datagrams lost (loss, partition, node down).
    pub dropped: u64,
}

struct Endpoint {
    inbound: Option<mpsc::Sender<(NodeId, Bytes)>>,
}

struct InFlight {
    at: Instant,
    seq: u64,
    from: NodeId,
    to: NodeId,
    payload: Bytes,
}

impl PartialEq for InFlight {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for InFlight {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

struct Net {
    rng: SplitMix64,
    endpoints: BTreeMap<NodeId, Endpoint>,
    by_addr: BTreeMap<SocketAddr, NodeId>,
    faults: Faults,
    /// Directed pairs (from, to) that cannot talk.
    blocked: BTreeSet<(NodeId, NodeId)>,
    queue: BinaryHeap<Reverse<InFlight>>,
    seq: u64,
    stats: NetStats,
}

impl Net {
    fn can_send(&self, from: NodeId, to: NodeId) -> bool {
        let up = |n: &NodeId| self.endpoints.get(n).is_some_and(|e| e.inbound.is_some());
        up(&from) && up(&to) && !self.blocked.contains(&(from, to))
    }

    fn delay(&mut self) -> Duration {
        let (lo, hi) = (
            self.faults.delay_min,
            self.faults.delay_max.max(self.faults.delay_min),
        );
        lo + (hi - lo).mul_f64(self.rng.next_f64())
    }
}

/// The in-memory network all simulated nodes share.
#[derive(Clone)]
pub struct SimNetwork {
    net: Arc<Mutex<Net>>,
    wake: Arc<Notify>,
}

impl std::fmt::Debug for SimNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimNetwork").finish_non_exhaustive()
    }
}

impl SimNetwork {
    /// A network whose randomness comes from `seed`; starts its delivery task.
    pub fn new(seed: u64) -> SimNetwork {
        let network = SimNetwork {
            net: Arc::new(Mutex::new(Net {
                rng: SplitMix64::new(seed),
                endpoints: BTreeMap::new(),
                by_addr: BTreeMap::new(),
                faults: Faults::default(),
                blocked: BTreeSet::new(),
                queue: BinaryHeap::new(),
                seq: 0,
                stats: NetStats::default(),
            })),
            wake: Arc::new(Notify::new()),
        };
        tokio::spawn(deliver(Arc::downgrade(&network.net), network.wake.clone()));
        network
    }

    fn lock(&self) -> MutexGuard<'_, Net> {
        self.net.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Attaches a node at `addr`; returns the receiver of its datagrams.
    pub fn attach(&self, node: NodeId, addr: SocketAddr) -> mpsc::Receiver<(NodeId, Bytes)> {
        let (tx, rx) = mpsc::channel(4096);
        let mut net = self.lock();
        net.by_addr.insert(addr, node);
        net.endpoints.insert(node, Endpoint { inbound: Some(tx) });
        rx
    }

    /// Takes a node off the network: nothing reaches it or leaves it.
    pub fn detach(&self, node: NodeId) {
        if let Some(e) = self.lock().endpoints.get_mut(&node) {
            e.inbound = None;
        }
    }

    /// The transport a node at `node` uses.
    pub fn transport(&self, node: NodeId) -> Arc<SimTransport> {
        Arc::new(SimTransport {
            network: self.clone(),
            me: node,
        })
    }

    /// Sets loss, duplication and delay for every datagram from now on.
    pub fn set_faults(&self, faults: Faults) {
        self.lock().faults = faults;
    }

    /// Blocks datagrams from `from` to `to` (one way).
    pub fn block(&self, from: NodeId, to: NodeId) {
        self.lock().blocked.insert((from, to));
    }

    /// Lifts every block.
    pub fn heal(&self) {
        self.lock().blocked.clear();
    }

    /// Counters so far.
    pub fn stats(&self) -> NetStats {
        self.lock().stats
    }

    fn send(&self, from: NodeId, to: &Identity, payload: Vec<u8>) {
        let mut net = self.lock();
        net.stats.sent += 1;
        let addressed = net.by_addr.get(&to.addr) == Some(&to.node);
        if !addressed || !net.can_send(from, to.node) || net.rng.next_f64() < net.faults.loss {
            net.stats.dropped += 1;
            return;
        }
        let payload = Bytes::from(payload);
        let copies = if net.rng.next_f64() < net.faults.duplicate {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let at = Instant::now() + net.delay();
            net.seq += 1;
            let seq = net.seq;
            net.queue.push(Reverse(InFlight {
                at,
                seq,
                from,
                to: to.node,
                payload: payload.clone(),
            }));
        }
        drop(net);
        self.wake.notify_one();
    }
}

async fn deliver(net: std::sync::Weak<Mutex<Net>>, wake: Arc<Notify>) {
    loop {
        let notified = wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let next = {
            let Some(net) = net.upgrade() else { return };
            let mut net = net.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            while net.queue.peek().is_some_and(|Reverse(f)| f.at <= now) {
                let Some(Reverse(f)) = net.queue.pop() else {
                    break;
                };
                // Partitions and crashes also catch datagrams already on the way.
                let target = net
                    .can_send(f.from, f.to)
                    .then(|| net.endpoints.get(&f.to).and_then(|e| e.inbound.clone()))
                    .flatten();
                match target.map(|t| t.try_send((f.from, f.payload))) {
                    Some(Ok(())) => net.stats.delivered += 1,
                    _ => net.stats.dropped += 1,
                }
            }
            net.queue.peek().map(|Reverse(f)| f.at)
        };
        tokio::select! {
            biased;
            () = &mut notified => {}
            () = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {}
        }
    }
}

/// One node's view of the simulated network.
#[derive(Debug)]
pub struct SimTransport {
    network: SimNetwork,
    me: NodeId,
}

impl Transport for SimTransport {
    fn send(&self, to: &Identity, payload: Vec<u8>) {
        self.network.send(self.me, to, payload);
    }

    fn dial(
        &self,
        addr: SocketAddr,
    ) -> impl std::future::Future<Output = Option<NodeId>> + Send + 'static {
        let network = self.network.clone();
        let me = self.me;
        async move {
            let delay = network.lock().delay() * 2;
            tokio::time::sleep(delay).await;
            let net = network.lock();
            let node = *net.by_addr.get(&addr)?;
            (node == me || (net.can_send(me, node) && net.can_send(node, me))).then_some(node)
        }
    }
}

/// A membership event with the simulated time it happened at.
pub type TimedEvent = (Duration, MemberEvent);

/// One simulated node.
#[derive(Debug)]
pub struct SimNode {
    /// Its node id.
    pub id: NodeId,
    /// Its address on the simulated network.
    pub addr: SocketAddr,
    /// Its name, `n0`, `n1`, ...
    pub name: String,
    swim: Option<Swim>,
    events: Arc<Mutex<Vec<TimedEvent>>>,
    /// What its events said about other members, with the generation it ran as then.
    sightings: Arc<Mutex<Vec<Sighting>>>,
}

/// A simulated cluster.
#[derive(Debug)]
pub struct Sim {
    seed: u64,
    network: SimNetwork,
    rng: SplitMix64,
    config: SwimConfig,
    nodes: Vec<SimNode>,
    start: Instant,
}

impl Sim {
    /// An empty cluster; everything random derives from `seed`.
    pub fn new(seed: u64, config: SwimConfig) -> Sim {
        let mut rng = SplitMix64::new(seed);
        Sim {
            seed,
            network: SimNetwork::new(rng.next_u64()),
            rng,
            config,
            nodes: Vec::new(),
            start: Instant::now(),
        }
    }

    /// The seed this run derives from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The network, to inject faults.
    pub fn network(&self) -> &SimNetwork {
        &self.network
    }

    /// Simulated time since the start.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// All nodes ever added, by index.
    pub fn nodes(&self) -> &[SimNode] {
        &self.nodes
    }

    /// Adds and starts a node that joins through the nodes at `seeds` (indexes); returns
    /// its index.
    pub fn add_node(&mut self, seeds: &[usize]) -> usize {
        let index = self.nodes.len();
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&self.rng.next_u64().to_le_bytes());
        id[8..].copy_from_slice(&(index as u64).to_be_bytes());
        let octets = (index as u32 + 1).to_be_bytes();
        let addr = SocketAddr::from((Ipv4Addr::new(10, octets[1], octets[2], octets[3]), 7000));
        self.nodes.push(SimNode {
            id: NodeId::from_bytes(id),
            addr,
            name: format!("n{index}"),
            swim: None,
            events: Arc::default(),
            sightings: Arc::default(),
        });
        self.start_node(index, seeds);
        index
    }

    fn start_node(&mut self, index: usize, seeds: &[usize]) {
        let seed_addrs: Vec<SocketAddr> = seeds.iter().map(|s| self.nodes[*s].addr).collect();
        let generation = self.elapsed().as_millis() as u64 + 1;
        let node = &mut self.nodes[index];
        let identity = Identity::new(
            node.id,
            generation,
            node.addr,
            MemberMeta::named(&node.name),
        )
        .expect("simulated names are short");
        let membership = Membership::new(identity, self.config.clone(), self.rng.next_u64());
        let inbound = self.network.attach(node.id, node.addr);
        let swim = Swim::start(
            membership,
            seed_addrs,
            self.network.transport(node.id),
            inbound,
        );
        let mut events = swim.subscribe();
        let log = node.events.clone();
        let sightings = node.sightings.clone();
        let start = self.start;
        tokio::spawn(async move {
            let mut mine = generation;
            while let Some(e) = events.recv().await {
                let at = start.elapsed();
                mine = Sighting::observer_generation_after(mine, &e);
                if let Some(s) = Sighting::from_event(index, mine, &e, at) {
                    sightings.lock().unwrap_or_else(|e| e.into_inner()).push(s);
                }
                log.lock().unwrap_or_else(|e| e.into_inner()).push((at, e));
            }
        });
        node.swim = Some(swim);
    }

    /// Stops a node abruptly: it sends nothing more and receives nothing.
    pub fn crash(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        node.swim = None;
        self.network.detach(node.id);
    }

    /// Starts a crashed node again, as a new generation, joining through `seeds`.
    pub fn restart(&mut self, index: usize, seeds: &[usize]) {
        self.crash(index);
        self.start_node(index, seeds);
    }

    /// Makes a node leave gracefully, then takes it off the network.
    pub async fn leave(&mut self, index: usize) {
        if let Some(swim) = self.nodes[index].swim.take() {
            swim.leave().await;
            // Let the goodbyes leave before the node goes.
            let in_flight = self.network.lock().faults.delay_max * 2;
            tokio::time::sleep(in_flight).await;
        }
        self.network.detach(self.nodes[index].id);
    }

    /// True while the node runs.
    pub fn is_up(&self, index: usize) -> bool {
        self.nodes[index].swim.is_some()
    }

    /// The running node's membership.
    pub fn swim(&self, index: usize) -> Option<&Swim> {
        self.nodes[index].swim.as_ref()
    }

    /// What node `index`'s events said about other members (across its restarts), each
    /// with the generation it ran as then: the input of [`History::check_generations`].
    ///
    /// [`History::check_generations`]: history::History::check_generations
    pub fn sightings(&self, index: usize) -> Vec<Sighting> {
        self.nodes[index]
            .sightings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Every membership event node `index` saw, across its restarts, in order.
    pub fn events(&self, index: usize) -> Vec<TimedEvent> {
        self.nodes[index]
            .events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Splits the network: nodes in different groups cannot reach each other. Nodes in no
    /// group keep reaching everyone.
    pub fn partition(&self, groups: &[Vec<usize>]) {
        for (i, a) in groups.iter().enumerate() {
            for b in groups.iter().skip(i + 1) {
                for x in a {
                    for y in b {
                        self.network.block(self.nodes[*x].id, self.nodes[*y].id);
                        self.network.block(self.nodes[*y].id, self.nodes[*x].id);
                    }
                }
            }
        }
    }

    /// Blocks datagrams from one node to another, one way only.
    pub fn block_one_way(&self, from: usize, to: usize) {
        self.network.block(self.nodes[from].id, self.nodes[to].id);
    }

    /// Lifts every partition and block.
    pub fn heal(&self) {
        self.network.heal();
    }

    /// The `(node id, generation)` of every running node.
    pub fn running(&self) -> BTreeSet<(NodeId, u64)> {
        self.nodes
            .iter()
            .filter_map(|n| n.swim.as_ref().map(|s| (n.id, s.identity().generation)))
            .collect()
    }

    /// What `index` holds live: `(node id, generation)` of its `Active` and `Suspect`
    /// members, itself included.
    pub fn live_view(&self, index: usize) -> BTreeSet<(NodeId, u64)> {
        let Some(swim) = self.swim(index) else {
            return BTreeSet::new();
        };
        let me = swim.identity();
        swim.members()
            .into_iter()
            .filter(|m| m.state.is_live())
            .map(|m| (m.identity.node, m.identity.generation))
            .chain([(me.node, me.generation)])
            .collect()
    }

    /// True when every running node is `Active` and holds exactly the running nodes live.
    pub fn converged(&self) -> bool {
        let running = self.running();
        (0..self.nodes.len()).filter(|i| self.is_up(*i)).all(|i| {
            self.swim(i)
                .is_some_and(|s| s.state() == MemberState::Active)
                && self.live_view(i) == running
        })
    }

    /// Advances simulated time in small steps until `check` holds or `limit` passes; true if
    /// it held.
    pub async fn wait_until(&self, limit: Duration, mut check: impl FnMut(&Sim) -> bool) -> bool {
        let end = Instant::now() + limit;
        loop {
            if check(self) {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Draws from the run's random stream (for schedules that must replay with the seed).
    pub fn random(&mut self) -> u64 {
        self.rng.next_u64()
    }
}
