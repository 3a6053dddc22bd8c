//! A whole-cluster restart: three Raft voters and a non-voter over QUIC and TLS on loopback,
//! every node on a tokio runtime of its own, all killed and started again with the same
//! keys, addresses and Raft data directories.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use atoll_cluster::{ConsensusConfig, MemberState, MembershipConfig, NodeConfig, RaftStatus};
use atoll_core::{NodeId, Scope};
use atoll_net::NodeIdentity;
use common::host::*;
use common::*;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

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
                .with_membership(MembershipConfig::new(seeds).with_swim(fast_swim()))
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
        h.kill_and_release();
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
