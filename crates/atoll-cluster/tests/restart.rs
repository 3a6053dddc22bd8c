//! A whole-cluster restart: three Raft voters and a non-voter over QUIC and TLS on loopback,
//! every node on a tokio runtime of its own, all killed and started again with the same
//! keys, addresses and Raft data directories.

mod common;

use std::future::Future;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use atoll_cluster::{
    ConsensusConfig, MemberState, MembershipConfig, Node, NodeConfig, RaftStatus, StartError,
    SwimConfig,
};
use atoll_core::{NodeId, Pid, Scope};
use atoll_net::NodeIdentity;
use common::*;

fn swim() -> SwimConfig {
    SwimConfig {
        probe_interval: Duration::from_millis(300),
        ping_timeout: Duration::from_millis(150),
        suspect_timeout: Duration::from_millis(1500),
        rejoin_interval: Duration::from_millis(500),
        ..SwimConfig::default()
    }
}

const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

struct Host {
    rt: Option<tokio::runtime::Runtime>,
    node: Option<Node>,
}

impl Host {
    fn start(config: NodeConfig) -> Host {
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
                // The port of the previous incarnation may still be held a moment.
                Err(StartError::Bind { .. }) if Instant::now() < until => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => panic!("node did not start: {e}"),
            }
        };
        Host {
            rt: Some(rt),
            node: Some(node),
        }
    }

    fn node(&self) -> &Node {
        self.node.as_ref().expect("node is running")
    }

    /// Runs `f` on this node's runtime and waits for it.
    fn run<F, Fut, R>(&self, f: F) -> R
    where
        F: FnOnce(Node) -> Fut,
        Fut: Future<Output = R> + Send + 'static,
        R: Send + 'static,
    {
        let node = self.node().clone();
        let rt = self.rt.as_ref().unwrap();
        rt.block_on(rt.spawn(f(node))).expect("task panicked")
    }

    fn status(&self) -> Option<RaftStatus> {
        self.run(|n| async move { n.raft_status().await })
    }

    /// A probe process on this node.
    fn probe(&self) -> Pid {
        let _in = self.rt.as_ref().unwrap().enter();
        let (probe, rx) = common::probe(self.node());
        drop(rx);
        probe.pid()
    }

    /// Stops the node gracefully.
    fn stop(mut self) {
        let node = self.node.take().unwrap();
        let rt = self.rt.take().unwrap();
        rt.block_on(node.shutdown(Duration::from_secs(1)));
        drop(node);
        rt.shutdown_timeout(Duration::from_secs(1));
    }

    /// Kills the node without a word: its peers learn nothing, its names stay in the log.
    fn kill(mut self) {
        let rt = self.rt.take().unwrap();
        rt.shutdown_timeout(Duration::from_secs(1));
        drop(self.node.take());
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn free_addr() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap()
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < until, "not within {DEADLINE:?}: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn everywhere(hosts: &[Host], name: &str, expected: Option<Pid>) {
    wait_until(
        &format!("{name} resolves to {expected:?} on every node"),
        || hosts.iter().all(|h| h.node().whereis(name) == expected),
    );
}

/// Three voters `v0..v2` and a non-voter `m0`: the configs, to start them with again.
fn configs(cluster: &Cluster, dir: &std::path::Path) -> Vec<NodeConfig> {
    let keys: Vec<NodeIdentity> = (0..4).map(|_| NodeIdentity::generate().unwrap()).collect();
    let addrs: Vec<SocketAddr> = (0..4).map(|_| free_addr()).collect();
    let voters: Vec<(NodeId, SocketAddr)> = (0..3).map(|i| (keys[i].node_id(), addrs[i])).collect();
    let names = ["v0", "v1", "v2", "m0"];
    keys.into_iter()
        .enumerate()
        .map(|(i, key)| {
            let name = names[i];
            let mut config = cluster.config_with_key(name, key);
            config.listen = addrs[i];
            let seeds = if i == 0 { vec![] } else { vec![addrs[0]] };
            let mut consensus = ConsensusConfig::new(voters.clone(), dir.join(name));
            consensus.election_timeout_min = Duration::from_millis(600);
            consensus.election_timeout_max = Duration::from_millis(1200);
            consensus.request_timeout = REQUEST_TIMEOUT;
            config
                .with_membership(MembershipConfig::new(seeds).with_swim(swim()))
                .with_consensus(consensus)
        })
        .collect()
}

/// Starts every node and waits until all are active members and the voters agree on a
/// leader.
fn start(configs: &[NodeConfig]) -> Vec<Host> {
    let hosts: Vec<Host> = configs.iter().cloned().map(Host::start).collect();
    wait_until("every member active and seeing the others", || {
        hosts.iter().all(|h| {
            let swim = h.node().membership().unwrap();
            swim.state() == MemberState::Active
                && swim
                    .members()
                    .iter()
                    .filter(|m| m.state == MemberState::Active)
                    .count()
                    == hosts.len() - 1
        })
    });
    wait_until("a raft leader every voter agrees on", || {
        let leaders: Vec<_> = hosts[..3]
            .iter()
            .map(|h| h.status().and_then(|s| s.leader))
            .collect();
        leaders[0].is_some() && leaders.iter().all(|l| *l == leaders[0])
    });
    hosts
}

#[test]
fn a_whole_cluster_restart_keeps_the_log_releases_old_incarnations_and_fences_forward() {
    init_logs();
    let started = Instant::now();
    let cluster = Cluster::new();
    let dir = tempfile::tempdir().unwrap();
    let configs = configs(&cluster, dir.path());

    // First incarnations: a name on every node, a lock held on v2.
    let hosts = start(&configs);
    let names = ["on-v0", "on-v1", "on-v2", "on-m0"];
    let mut old = Vec::new();
    for (h, name) in hosts.iter().zip(names) {
        let pid = h.probe();
        h.run(move |n| async move { n.register(name, pid, Scope::Consistent).await })
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        old.push(pid);
    }
    let holder = hosts[2].probe();
    let guard = hosts[2]
        .run(move |n| async move { n.try_lock("job", holder).await })
        .unwrap();
    let old_token = guard.token();
    // Held until the node dies.
    std::mem::forget(guard);
    for (name, pid) in names.iter().zip(&old) {
        everywhere(&hosts, name, Some(*pid));
    }
    wait_until("the lock seen on every node", || {
        hosts
            .iter()
            .all(|h| h.node().lock_holder("job") == Some((holder, old_token)))
    });
    let before: Vec<RaftStatus> = hosts[..3].iter().map(|h| h.status().unwrap()).collect();
    let old_term = before.iter().map(|s| s.term).max().unwrap();
    let old_index = hosts
        .iter()
        .map(|h| h.node().registry_index())
        .min()
        .unwrap();
    assert!(old_index >= old_token, "{old_index} < {old_token}");
    let old_creations: Vec<u32> = hosts.iter().map(|h| h.node().creation()).collect();
    eprintln!("before: term {old_term}, registry index {old_index}, lock token {old_token}");

    // Every node dies without a word, so no release is proposed for the old names.
    for h in hosts {
        h.kill();
    }

    // New incarnations with the same keys, addresses and data.
    let hosts = start(&configs);
    let restarted = Instant::now();
    for (h, old) in hosts.iter().zip(&old_creations) {
        assert!(h.node().creation() > *old, "a new incarnation");
    }
    // The vote and the log survived: the term did not go back, and the old entries are
    // applied again from the log (every node resolves from at least the old index).
    for h in &hosts[..3] {
        let status = h.status().unwrap();
        assert!(status.term >= old_term, "{status:?} after term {old_term}");
    }
    wait_until("every node resolves from at least the old index", || {
        hosts.iter().all(|h| h.node().registry_index() >= old_index)
    });

    // Names and locks of the old incarnations are released on every node.
    for name in names {
        everywhere(&hosts, name, None);
    }
    wait_until("the old lock released on every node", || {
        hosts.iter().all(|h| h.node().lock_holder("job").is_none())
    });
    eprintln!(
        "old names and lock released {:?} after the restart",
        restarted.elapsed()
    );

    // New registrations work, the old names included.
    for (i, name) in names.iter().enumerate() {
        let h = &hosts[(i + 1) % hosts.len()];
        let pid = h.probe();
        let name = *name;
        h.run(move |n| async move { n.register(name, pid, Scope::Consistent).await })
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        everywhere(&hosts, name, Some(pid));
    }

    // Fencing tokens never go backwards: a new grant's token is larger than the old one.
    let holder = hosts[3].probe();
    let guard = hosts[3]
        .run(move |n| async move { n.lock("job", holder, DEADLINE).await })
        .unwrap();
    assert!(
        guard.token() > old_token,
        "{} after {old_token}",
        guard.token()
    );
    let term = hosts[..3]
        .iter()
        .filter_map(|h| h.status())
        .map(|s| s.term)
        .max()
        .unwrap();
    eprintln!(
        "after: term {term}, lock token {}, whole test {:?}",
        guard.token(),
        started.elapsed()
    );
    hosts[3].run(move |_| async move { guard.unlock().await.unwrap() });

    for h in hosts {
        h.stop();
    }
}
