//! Whole nodes in the simulator: the production node code (connections, membership, the
//! Raft core on simulated disks, names in every scope, locks, groups, send/call, links and
//! monitors) over [`MemNetwork`], on tokio's paused clock, every random choice from one
//! seed.
//!
//! ```
//! use atoll_sim::cluster::{ClusterSpec, SimCluster, simulate};
//! use std::time::Duration;
//!
//! simulate(|| async {
//!     let mut sim = SimCluster::start(7, ClusterSpec::new(3)).unwrap();
//!     assert!(sim.wait_until(Duration::from_secs(30), |s| s.converged()).await);
//!     sim.shutdown().await;
//! });
//! ```

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use atoll_cluster::transport::{Faults, MemNetwork};
use atoll_cluster::{
    ConsensusConfig, MemberState, MembershipConfig, Node, NodeConfig, SplitBrainPolicy, StartError,
    SwimConfig,
};
use atoll_core::{NodeId, SplitMix64};
use atoll_net::{NodeIdentity, SharedIdentity};
use atoll_raft::SimDisk;
use tokio::time::Instant;

/// Runs `make()`'s future to completion on a fresh current-thread runtime with a paused
/// clock: simulated time, and one thread, which is what makes a seeded run repeat.
pub fn simulate<F, Fut, T>(make: F) -> T
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = T>,
{
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_time().start_paused(true);
    // An unbiased `select!` (openraft has some) picks its first branch from the runtime's
    // generator, which is seeded at random unless it is given a seed (an unstable tokio API).
    #[cfg(tokio_unstable)]
    builder.rng_seed(tokio::runtime::RngSeed::from_bytes(b"atoll-sim"));
    builder
        .build()
        .expect("a current-thread runtime builds")
        .block_on(make())
}

/// Runs `scenario` for every seed in `seeds`, each on a fresh simulated runtime (see
/// [`simulate`]). With `ATOLL_SIM_SEED` set, runs only that seed. A scenario that panics
/// (a failed assertion) fails the whole call with a message naming its seed, so
/// `ATOLL_SIM_SEED=<seed>` replays exactly that run.
pub fn check_seeds<F, Fut>(seeds: impl IntoIterator<Item = u64>, scenario: F)
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = ()>,
{
    let seeds: Vec<u64> = match std::env::var("ATOLL_SIM_SEED") {
        Ok(s) => vec![s.trim().parse().expect("ATOLL_SIM_SEED must be a number")],
        Err(_) => seeds.into_iter().collect(),
    };
    for seed in seeds {
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            simulate(|| scenario(seed));
        }));
        if let Err(panic) = run {
            let why = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("a panic");
            panic!("seed {seed} failed (replay with ATOLL_SIM_SEED={seed}): {why}");
        }
    }
}

/// The shape of a simulated cluster.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// How many nodes.
    pub nodes: usize,
    /// How many of them (the first ones) are Raft voters; 0 for no consensus.
    pub voters: usize,
    /// Membership settings.
    pub swim: SwimConfig,
    /// Which side of a partition downs the other.
    pub split_brain: SplitBrainPolicy,
    /// Network faults from the start.
    pub faults: Faults,
}

impl ClusterSpec {
    /// `nodes` nodes, up to three of them voters, default membership, a quiet network.
    pub fn new(nodes: usize) -> Self {
        ClusterSpec {
            nodes,
            voters: nodes.min(3),
            swim: SwimConfig::default(),
            split_brain: SplitBrainPolicy::Off,
            faults: Faults::default(),
        }
    }

    /// With this split-brain policy on every node.
    pub fn with_split_brain(mut self, policy: SplitBrainPolicy) -> Self {
        self.split_brain = policy;
        self
    }

    /// With `voters` Raft voters (0: no consensus).
    pub fn with_voters(mut self, voters: usize) -> Self {
        self.voters = voters;
        self
    }
}

/// One simulated machine: its address, key, disk, and the node running on it (if up).
struct Machine {
    name: String,
    addr: SocketAddr,
    key_seed: [u8; 32],
    id: NodeId,
    disk: SimDisk,
    node: Option<Node>,
}

/// A simulated cluster of real nodes. Run it inside [`simulate`] (or a current-thread
/// tokio runtime on a paused clock).
pub struct SimCluster {
    seed: u64,
    rng: SplitMix64,
    network: MemNetwork,
    tls: Arc<SharedIdentity>,
    machines: Vec<Machine>,
    voters: Vec<(NodeId, SocketAddr)>,
    spec: ClusterSpec,
    started: Instant,
}

impl std::fmt::Debug for SimCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimCluster")
            .field("seed", &self.seed)
            .field("nodes", &self.machines.len())
            .finish()
    }
}

/// A cluster could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A node did not start.
    #[error("node {index} did not start: {source}")]
    Start {
        /// Which node.
        index: usize,
        /// Why.
        source: StartError,
    },
    /// The placeholder TLS identity could not be made.
    #[error("tls identity: {0}")]
    Tls(String),
}

impl SimCluster {
    /// Starts `spec.nodes` nodes, every one joining through the first, the first
    /// `spec.voters` of them Raft voters. All randomness comes from `seed`.
    pub fn start(seed: u64, spec: ClusterSpec) -> Result<SimCluster, SimError> {
        let mut rng = SplitMix64::new(seed);
        let network = MemNetwork::new(rng.next_u64());
        // The Raft cores' election timeouts, drawn on this (the simulation's) thread.
        atoll_raft::seed_thread_rng(rng.next_u64());
        network.set_faults(spec.faults);
        // Simulated connections do not use TLS; a node configuration still names one.
        let tls = SharedIdentity::generate("sim").map_err(|e| SimError::Tls(e.to_string()))?;
        let mut machines = Vec::with_capacity(spec.nodes);
        for i in 0..spec.nodes {
            let mut key_seed = [0u8; 32];
            for chunk in key_seed.chunks_mut(8) {
                chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
            }
            let id = NodeIdentity::from_seed(&key_seed)
                .map_err(|e| SimError::Tls(e.to_string()))?
                .node_id();
            let octet = u8::try_from(i % 250).unwrap_or(0) + 1;
            machines.push(Machine {
                name: format!("n{i}"),
                addr: SocketAddr::from((Ipv4Addr::new(10, 0, (i / 250) as u8, octet), 7000)),
                key_seed,
                id,
                disk: SimDisk::new(),
                node: None,
            });
        }
        let voters = machines
            .iter()
            .take(spec.voters)
            .map(|m| (m.id, m.addr))
            .collect();
        let mut sim = SimCluster {
            seed,
            rng,
            network,
            tls: Arc::new(tls),
            machines,
            voters,
            spec,
            started: Instant::now(),
        };
        for i in 0..sim.machines.len() {
            sim.boot(i)?;
        }
        Ok(sim)
    }

    fn config(&self, index: usize) -> Result<NodeConfig, SimError> {
        let m = &self.machines[index];
        let key = NodeIdentity::from_seed(&m.key_seed).map_err(|e| SimError::Tls(e.to_string()))?;
        let mut config = NodeConfig::with_shared_identity(&m.name, m.addr, key, &self.tls)
            .map_err(|e| SimError::Tls(e.to_string()))?
            .with_membership(
                MembershipConfig::new([self.machines[0].addr])
                    .with_swim(self.spec.swim.clone())
                    .with_split_brain(self.spec.split_brain),
            );
        if !self.voters.is_empty() {
            config = config.with_consensus(ConsensusConfig::new(
                self.voters.clone(),
                format!("/sim/{}", m.name),
            ));
        }
        Ok(config)
    }

    fn boot(&mut self, index: usize) -> Result<(), SimError> {
        let config = self.config(index)?;
        let m = &self.machines[index];
        let node = Node::start_simulated(config, &self.network, m.disk.clone())
            .map_err(|source| SimError::Start { index, source })?;
        self.machines[index].node = Some(node);
        Ok(())
    }

    /// The seed this cluster was started with.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The network, for faults and counters.
    pub fn network(&self) -> &MemNetwork {
        &self.network
    }

    /// How many machines (up or not).
    pub fn len(&self) -> usize {
        self.machines.len()
    }

    /// Whether the cluster has no machines.
    pub fn is_empty(&self) -> bool {
        self.machines.is_empty()
    }

    /// The node on machine `index`, if it is up.
    pub fn node(&self, index: usize) -> Option<&Node> {
        self.machines.get(index)?.node.as_ref()
    }

    /// The indexes of the machines that are up.
    pub fn up(&self) -> Vec<usize> {
        (0..self.machines.len())
            .filter(|&i| self.machines[i].node.is_some())
            .collect()
    }

    /// The node id of machine `index` (the same across restarts).
    pub fn id(&self, index: usize) -> NodeId {
        self.machines[index].id
    }

    /// The index of the machine whose node id is `id`.
    pub fn index_of(&self, id: NodeId) -> Option<usize> {
        self.machines.iter().position(|m| m.id == id)
    }

    /// The address of machine `index`.
    pub fn addr(&self, index: usize) -> SocketAddr {
        self.machines[index].addr
    }

    /// The simulated disk of machine `index`.
    pub fn disk(&self, index: usize) -> &SimDisk {
        &self.machines[index].disk
    }

    /// Simulated time since the cluster started.
    pub fn elapsed(&self) -> Duration {
        Instant::now().duration_since(self.started)
    }

    /// A number from the cluster's seeded randomness, for the workload and the faults.
    pub fn random(&mut self) -> u64 {
        self.rng.next_u64()
    }

    /// The network's trace hash (see [`MemNetwork::trace_hash`]).
    pub fn trace_hash(&self) -> u64 {
        self.network.trace_hash()
    }

    /// Machine `index` crashes: off the network at once, its disk loses what was not
    /// synced, its node stops without a goodbye.
    pub async fn crash(&mut self, index: usize) {
        let Some(node) = self.machines[index].node.take() else {
            return;
        };
        self.network.crash(self.machines[index].addr);
        self.machines[index].disk.crash();
        node.halt().await;
    }

    /// Machine `index` comes back: a new incarnation of its node, same id, same disk.
    pub fn restart(&mut self, index: usize) -> Result<(), SimError> {
        if self.machines[index].node.is_some() {
            return Ok(());
        }
        self.network.revive(self.machines[index].addr);
        self.boot(index)
    }

    /// Cuts every link between a machine of `side_a` and one of `side_b`, both ways.
    pub fn partition(&self, side_a: &[usize], side_b: &[usize]) {
        let a: Vec<SocketAddr> = side_a.iter().map(|&i| self.addr(i)).collect();
        let b: Vec<SocketAddr> = side_b.iter().map(|&i| self.addr(i)).collect();
        self.network.partition(&a, &b);
    }

    /// Blocks traffic from machine `from` to machine `to` only.
    pub fn block_one_way(&self, from: usize, to: usize) {
        self.network.block(self.addr(from), self.addr(to));
    }

    /// Moves machine `index`'s wall clock by `by_ms` (negative: back) at once: a skew, or
    /// a jump while it runs. Only wall time moves; the node's timers do not.
    pub fn shift_clock(&self, index: usize, by_ms: i64) {
        self.network.shift_clock(self.addr(index), by_ms);
    }

    /// Removes every partition.
    pub fn heal(&self) {
        self.network.heal();
    }

    /// Lets simulated time pass.
    pub async fn run_for(&self, time: Duration) {
        tokio::time::sleep(time).await;
    }

    /// Waits (in simulated time, checking every 10 ms) until `check` holds; false if it
    /// did not within `limit`.
    pub async fn wait_until(&self, limit: Duration, mut check: impl FnMut(&Self) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if check(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Every node that is up sees every other one as an active member.
    pub fn converged(&self) -> bool {
        let up = self.up();
        up.iter().all(|&i| {
            let Some(swim) = self.node(i).and_then(Node::membership) else {
                return false;
            };
            up.iter().filter(|&&j| j != i).all(|&j| {
                swim.member(self.id(j))
                    .is_some_and(|m| m.state == MemberState::Active)
            })
        })
    }

    /// The voter every up voter agrees leads, if they agree on one.
    pub async fn leader(&self) -> Option<NodeId> {
        let mut leader = None;
        for i in (0..self.spec.voters).filter(|&i| self.node(i).is_some()) {
            let status = self.node(i)?.raft_status().await?;
            let id = status.leader?;
            match leader {
                None => leader = Some(id),
                Some(l) if l == id => {}
                Some(_) => return None,
            }
        }
        let raft = leader?;
        self.voters
            .iter()
            .map(|(id, _)| *id)
            .find(|id| atoll_raft::raft_id_of(id) == raft)
    }

    /// Stops every node gracefully.
    pub async fn shutdown(mut self) {
        for m in &mut self.machines {
            if let Some(node) = m.node.take() {
                node.shutdown(Duration::from_millis(100)).await;
            }
        }
    }
}
