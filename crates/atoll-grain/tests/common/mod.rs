//! A cluster of real nodes for grain tests: three Raft voters over QUIC and TLS on
//! loopback, each node on a tokio runtime of its own with a grain service.
#![allow(dead_code)]

use std::future::Future;
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use atoll_cluster::{
    ConsensusConfig, MemberState, MembershipConfig, Node, NodeConfig, StartError, SwimConfig,
};
use atoll_core::NodeId;
use atoll_grain::{Grains, GrainsConfig};
use atoll_net::{ClusterCa, NodeIdentity, RevocationList};

/// How long a test waits for anything before it fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Membership timings short enough for tests, long enough for a loaded 2-core machine.
pub fn fast_swim() -> SwimConfig {
    SwimConfig {
        probe_interval: Duration::from_millis(300),
        ping_timeout: Duration::from_millis(150),
        suspect_timeout: Duration::from_millis(1500),
        rejoin_interval: Duration::from_millis(500),
        ..SwimConfig::default()
    }
}

/// The tests start several nodes each: one at a time keeps them from starving each other.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

fn free_addr() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap()
}

/// Polls `cond` from a plain thread until it holds, failing after [`DEADLINE`].
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < until, "not within {DEADLINE:?}: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One node on a runtime of its own, with its grain service.
pub struct Host {
    rt: Option<tokio::runtime::Runtime>,
    node: Option<Node>,
    pub grains: Grains,
}

impl Host {
    fn start(config: NodeConfig, grains: GrainsConfig) -> Host {
        Self::start_retrying(config, grains, |e| matches!(e, StartError::Bind { .. }))
    }

    /// Starts a node, trying again while `transient` says its start-up error may pass (a
    /// killed predecessor still holding its port or disk).
    fn start_retrying(
        config: NodeConfig,
        grains: GrainsConfig,
        transient: impl Fn(&StartError) -> bool,
    ) -> Host {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let until = Instant::now() + DEADLINE;
        let node = loop {
            let started = {
                let _in = rt.enter();
                Node::start(config.clone())
            };
            match started {
                Ok(node) => break node,
                Err(e) if transient(&e) && Instant::now() < until => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => panic!("node did not start: {e}"),
            }
        };
        let grains = {
            let _in = rt.enter();
            Grains::start(&node, grains)
        };
        Host {
            rt: Some(rt),
            node: Some(node),
            grains,
        }
    }

    pub fn node(&self) -> &Node {
        self.node.as_ref().expect("node is running")
    }

    pub fn id(&self) -> NodeId {
        self.node().id()
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        self.rt.as_ref().expect("node is running")
    }

    /// Runs `f` on this node's runtime and waits for it.
    pub fn run<F, Fut, R>(&self, f: F) -> R
    where
        F: FnOnce(Grains) -> Fut,
        Fut: Future<Output = R> + Send + 'static,
        R: Send + 'static,
    {
        let rt = self.rt();
        rt.block_on(rt.spawn(f(self.grains.clone())))
            .expect("task panicked")
    }

    /// Starts `f` on this node's runtime.
    pub fn spawn<F, Fut, R>(&self, f: F) -> tokio::task::JoinHandle<R>
    where
        F: FnOnce(Grains) -> Fut,
        Fut: Future<Output = R> + Send + 'static,
        R: Send + 'static,
    {
        self.rt().spawn(f(self.grains.clone()))
    }

    /// Waits for a task started with [`spawn`](Self::spawn).
    pub fn join<R>(&self, handle: tokio::task::JoinHandle<R>) -> R {
        self.rt().block_on(handle).expect("task panicked")
    }

    /// Kills the node without a word: its runtime, with every task and the endpoint
    /// driver, is dropped in the background.
    pub fn kill(mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
        drop(self.node.take());
    }

    /// Stops the node gracefully: its grain service deactivates every activation (saving
    /// state, releasing claims), then the node leaves the cluster and shuts down.
    pub fn stop(self) {
        self.stop_with(true);
    }

    /// Stops the node gracefully, first stopping its grain service (`grains`) or not.
    pub fn stop_with(mut self, grains_first: bool) {
        if let (Some(rt), Some(node)) = (self.rt.take(), self.node.take()) {
            let grains = self.grains.clone();
            rt.block_on(async move {
                if grains_first {
                    grains.shutdown().await;
                }
                node.shutdown(Duration::from_secs(2)).await;
            });
            rt.shutdown_background();
        }
    }

    /// Kills the process `pid` of this node.
    pub fn kill_process(&self, pid: atoll_core::Pid) {
        let _in = self.rt().enter();
        self.node().runtime().kill(pid);
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        drop(self.node.take());
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Three voters, joined, with a Raft leader, each with a grain service built by `grains`
/// from its index and a directory of its own.
pub struct Setup {
    pub hosts: Vec<Host>,
    pub dir: tempfile::TempDir,
    /// Each node's configuration, to start it again on the same keys, address and disk.
    pub configs: Vec<NodeConfig>,
    ca: ClusterCa,
    voters: Vec<(NodeId, SocketAddr)>,
}

impl Setup {
    /// Starts one more node, a member but not a Raft voter, with a grain service built by
    /// `grains` (from the node's index), and waits until every node sees its router.
    pub fn add_member(&mut self, grains: impl Fn(usize, &std::path::Path) -> GrainsConfig) {
        let i = self.configs.len();
        let name = format!("n{i}");
        let key = NodeIdentity::generate().unwrap();
        let cert = self.ca.issue(&name, &key.public_key()).unwrap();
        let seed = self.voters[0].1;
        let config = node_config(
            &name,
            free_addr(),
            key,
            cert,
            &self.ca,
            seed,
            &self.voters,
            self.dir.path(),
        );
        let node_dir = self.dir.path().join(format!("{name}-grains"));
        std::fs::create_dir_all(&node_dir).unwrap();
        self.configs.push(config.clone());
        self.hosts.push(Host::start(config, grains(i, &node_dir)));
        let n = self.hosts.len();
        wait_until("every node sees every grain router", || {
            self.hosts
                .iter()
                .all(|h| h.node().find_by_type("GrainRouter").len() == n)
        });
    }

    /// Starts node `i` (killed before, and removed from `hosts`) again from its
    /// configuration and directories, at position `i` of `hosts`, and waits until every
    /// node sees its router.
    pub fn restart(&mut self, i: usize, grains: impl Fn(usize, &std::path::Path) -> GrainsConfig) {
        let node_dir = self.dir.path().join(format!("n{i}-grains"));
        let host = Host::start_retrying(self.configs[i].clone(), grains(i, &node_dir), |_| true);
        let (id, creation) = (host.id(), host.node().creation());
        self.hosts.insert(i, host);
        wait_until("every node sees the restarted node's grain router", || {
            self.hosts.iter().all(|h| {
                h.node()
                    .find_by_type("GrainRouter")
                    .iter()
                    .any(|ad| ad.pid.node == id && ad.pid.creation == creation)
            })
        });
        // Restores ask the nodes membership holds live (the router can be seen first).
        wait_until("every node holds the restarted node live", || {
            self.hosts.iter().all(|h| {
                h.node().membership().is_none_or(|swim| {
                    h.id() == id
                        || swim
                            .members()
                            .iter()
                            .any(|m| m.identity.node == id && m.state.is_live())
                })
            })
        });
    }

    /// Stops every node gracefully, then starts them all again from their directories,
    /// waiting as [`start_cluster`] does.
    pub fn restart_all(&mut self, grains: impl Fn(usize, &std::path::Path) -> GrainsConfig) {
        self.restart_all_with(true, grains);
    }

    /// Like [`Self::restart_all`], stopping every grain service first or leaving them to
    /// the nodes' shutdown.
    pub fn restart_all_with(
        &mut self,
        grains_first: bool,
        grains: impl Fn(usize, &std::path::Path) -> GrainsConfig,
    ) {
        // Every grain service first, while every node still answers replica requests: a
        // `Replicated` save needs its copies on other voters, which a node already stopped
        // no longer takes.
        if grains_first {
            for host in &self.hosts {
                let grains = host.grains.clone();
                host.rt().block_on(async move { grains.shutdown().await });
            }
        }
        for host in self.hosts.drain(..) {
            host.stop_with(false);
        }
        for (i, config) in self.configs.iter().enumerate() {
            let node_dir = self.dir.path().join(format!("n{i}-grains"));
            self.hosts
                .push(Host::start(config.clone(), grains(i, &node_dir)));
        }
        self.settle();
    }

    fn settle(&self) {
        wait_until("every member active and seeing the others", || {
            self.hosts.iter().all(|h| {
                let swim = h.node().membership().unwrap();
                swim.state() == MemberState::Active
                    && swim
                        .members()
                        .iter()
                        .filter(|m| m.state == MemberState::Active)
                        .count()
                        == self.hosts.len() - 1
            })
        });
        wait_until("a raft leader every voter agrees on", || {
            let leaders: Vec<_> = self
                .hosts
                .iter()
                .map(|h| {
                    let node = h.node().clone();
                    h.rt()
                        .block_on(async move { node.raft_status().await.and_then(|s| s.leader) })
                })
                .collect();
            leaders[0].is_some() && leaders.iter().all(|l| *l == leaders[0])
        });
        wait_until("every node sees every grain router", || {
            self.hosts
                .iter()
                .all(|h| h.node().find_by_type("GrainRouter").len() == self.hosts.len())
        });
    }
}

/// Opens a redb grain store, waiting for a previous incarnation's to close.
pub fn open_store(path: &std::path::Path) -> atoll_grain::RedbStore {
    let until = Instant::now() + DEADLINE;
    loop {
        match atoll_grain::RedbStore::open(path) {
            Ok(store) => return store,
            Err(e) if Instant::now() < until => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("grain store did not open: {e}"),
        }
    }
}

/// A node's configuration: a member joining through `seed` (unless it is the seed), with
/// consensus among `voters` and its Raft directory under `dir`.
#[allow(clippy::too_many_arguments)]
fn node_config(
    name: &str,
    addr: SocketAddr,
    key: NodeIdentity,
    cert: atoll_net::NodeCertificate,
    ca: &ClusterCa,
    seed: SocketAddr,
    voters: &[(NodeId, SocketAddr)],
    dir: &std::path::Path,
) -> NodeConfig {
    let mut config = NodeConfig::with_ca(name, addr, key, cert, ca.trust(RevocationList::new()));
    config.reconnect_initial = Duration::from_millis(20);
    config.reconnect_max = Duration::from_millis(200);
    config.connect_timeout = Duration::from_secs(5);
    let seeds = if addr == seed { vec![] } else { vec![seed] };
    let mut consensus = ConsensusConfig::new(voters.to_vec(), dir.join(name));
    consensus.election_timeout_min = Duration::from_millis(600);
    consensus.election_timeout_max = Duration::from_millis(1200);
    consensus.request_timeout = Duration::from_secs(3);
    config
        .with_membership(MembershipConfig::new(seeds).with_swim(fast_swim()))
        .with_consensus(consensus)
}

pub fn start_cluster(grains: impl Fn(usize, &std::path::Path) -> GrainsConfig) -> Setup {
    let ca = ClusterCa::create("test").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let keys: Vec<NodeIdentity> = (0..3).map(|_| NodeIdentity::generate().unwrap()).collect();
    let addrs: Vec<SocketAddr> = (0..3).map(|_| free_addr()).collect();
    let voters: Vec<(NodeId, SocketAddr)> = (0..3).map(|i| (keys[i].node_id(), addrs[i])).collect();
    let mut hosts = Vec::new();
    let mut configs = Vec::new();
    for (i, key) in keys.into_iter().enumerate() {
        let name = format!("n{i}");
        let cert = ca.issue(&name, &key.public_key()).unwrap();
        let config = node_config(
            &name,
            addrs[i],
            key,
            cert,
            &ca,
            addrs[0],
            &voters,
            dir.path(),
        );
        let node_dir = dir.path().join(format!("{name}-grains"));
        std::fs::create_dir_all(&node_dir).unwrap();
        configs.push(config.clone());
        hosts.push(Host::start(config, grains(i, &node_dir)));
    }
    let setup = Setup {
        hosts,
        dir,
        configs,
        ca,
        voters,
    };
    setup.settle();
    setup
}
