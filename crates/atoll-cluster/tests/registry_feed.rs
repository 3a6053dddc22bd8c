//! How a non-voter follows the registry over real QUIC connections: by deltas while it
//! keeps up, by a snapshot when it was cut off for longer than the voter's retained window,
//! and by deltas again after that.

mod common;

use std::net::SocketAddr;

use atoll_cluster::{ConsensusConfig, RaftRole, RegistryFeedStats};
use atoll_core::{NodeId, Pid, Scope};
use atoll_net::NodeIdentity;
use common::host::*;
use common::*;

/// Commands the voter retains for deltas: a member cut off for more misses the window.
const WINDOW: usize = 8;

fn stats(h: &Host) -> RegistryFeedStats {
    h.node().registry_feed_stats()
}

fn register(voter: &Host, names: impl IntoIterator<Item = String>, pid: Pid) {
    for name in names {
        voter
            .run(move |n| async move { n.register(&name, pid, Scope::Consistent).await })
            .unwrap();
    }
}

fn cut(voter: &Host, member: &Host) {
    let (v, m) = (voter.node().id(), member.node().id());
    member.node().disconnect(v);
    voter.node().disconnect(m);
    wait_until("the member and the voter apart", || {
        voter.node().peers().is_empty() && member.node().peers().is_empty()
    });
}

fn sees_all(member: &Host, names: &[String], pid: Pid) -> bool {
    names.iter().all(|n| member.node().whereis(n) == Some(pid))
}

#[test]
fn a_member_that_missed_deltas_catches_up_by_snapshot_then_follows_by_deltas_again() {
    let _serial = serial();
    init_logs();
    let cluster = Cluster::new();
    let dir = tempfile::tempdir().unwrap();
    let keys: Vec<NodeIdentity> = (0..2).map(|_| NodeIdentity::generate().unwrap()).collect();
    let voter_addr = free_addr();
    let voters: Vec<(NodeId, SocketAddr)> = vec![(keys[0].node_id(), voter_addr)];
    let mut hosts = Vec::new();
    for (i, key) in keys.into_iter().enumerate() {
        let name = ["v0", "m0"][i];
        let mut config = cluster.config_with_key(name, key);
        if i == 0 {
            config.listen = voter_addr;
        }
        let mut consensus = ConsensusConfig::new(voters.clone(), dir.path().join(name));
        consensus.delta_window = WINDOW;
        hosts.push(Host::start(config.with_consensus(consensus)));
    }
    let (voter, member) = (&hosts[0], &hosts[1]);
    wait_until("the voter leads", || {
        voter.status().is_some_and(|s| s.role == RaftRole::Leader)
    });
    member
        .run(move |n| async move { n.connect(voter_addr).await.map(|_| ()) })
        .unwrap();
    let pid = voter.probe();

    // Connected: every registration reaches the member as a delta.
    let first: Vec<String> = (0..3).map(|i| format!("first-{i}")).collect();
    register(voter, first.clone(), pid);
    wait_until("the member sees the first names", || {
        sees_all(member, &first, pid)
    });
    let followed = stats(member);
    assert!(followed.deltas_applied > 0, "{followed:?}");
    assert_eq!(followed.snapshots_installed, 0, "{followed:?}");
    assert!(stats(voter).deltas_sent > 0);

    // Cut off while fewer commands than the window are applied: deltas catch it up.
    cut(voter, member);
    let short: Vec<String> = (0..WINDOW / 2).map(|i| format!("short-{i}")).collect();
    register(voter, short.clone(), pid);
    assert!(member.node().whereis(&short[0]).is_none(), "cut off");
    member
        .run(move |n| async move { n.connect(voter_addr).await.map(|_| ()) })
        .unwrap();
    wait_until("the member caught up after a short cut", || {
        sees_all(member, &short, pid)
    });
    let after_short = stats(member);
    assert_eq!(
        after_short.snapshots_installed, 0,
        "inside the window: deltas only, {after_short:?}"
    );

    // Cut off while more than the window is applied: a snapshot catches it up.
    cut(voter, member);
    let long: Vec<String> = (0..WINDOW * 2).map(|i| format!("long-{i}")).collect();
    register(voter, long.clone(), pid);
    assert!(member.node().whereis(&long[0]).is_none(), "cut off");
    member
        .run(move |n| async move { n.connect(voter_addr).await.map(|_| ()) })
        .unwrap();
    wait_until("the member caught up after a long cut", || {
        sees_all(member, &long, pid) && sees_all(member, &short, pid)
    });
    let after_long = stats(member);
    assert_eq!(after_long.snapshots_installed, 1, "{after_long:?}");
    assert_eq!(stats(voter).snapshots_sent, 1);

    // Then deltas again.
    let again: Vec<String> = (0..3).map(|i| format!("again-{i}")).collect();
    register(voter, again.clone(), pid);
    wait_until("the member sees the later names", || {
        sees_all(member, &again, pid)
    });
    let last = stats(member);
    assert_eq!(last.snapshots_installed, 1, "{last:?}");
    assert!(last.deltas_applied > after_long.deltas_applied, "{last:?}");
    assert_eq!(
        member.node().registry_index(),
        voter.node().registry_index(),
        "the member's copy is at the voter's index"
    );
    assert_eq!(last.gaps, 0, "{last:?}");

    // Cut off again: the member's local answer is stale, a linearizable read is not (it
    // asks the leader for the index to reach and waits for the member's copy).
    cut(voter, member);
    register(voter, ["fresh".to_string()], pid);
    assert!(member.node().whereis("fresh").is_none(), "cut off");
    let read = member.run(|n| async move { n.whereis_consistent("fresh").await });
    assert_eq!(read.unwrap(), Some(pid));
    let gone = member.run(|n| async move { n.whereis_consistent("never").await });
    assert_eq!(gone.unwrap(), None);
}
