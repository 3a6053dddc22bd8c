//! Cluster data across real nodes (QUIC, SWIM membership, each node on a runtime of its
//! own): the process table converges, a killed node's processes and services go
//! everywhere, services resolve preferred-then-fallback, and the ring spans the members.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use atoll_actor::SpawnOptions;
use atoll_cluster::{DataConfig, MemberState, MembershipConfig, NodeConfig};
use common::host::{Host, fast_swim, serial, wait_until};
use common::{Cluster, Probe};

fn config(cluster: &Cluster, name: &str, seeds: &[SocketAddr]) -> NodeConfig {
    let mut config = cluster.config(name).with_membership(
        MembershipConfig::new(seeds.iter().copied())
            .with_swim(fast_swim())
            .with_capabilities([format!("zone-{name}")]),
    );
    config.data = DataConfig {
        period: Duration::from_millis(100),
        ..DataConfig::default()
    };
    config
}

fn cluster_of(cluster: &Cluster, n: usize) -> Vec<Host> {
    let first = Host::start(config(cluster, "n0", &[]));
    let seed = first.node().local_addr();
    let mut hosts = vec![first];
    for i in 1..n {
        hosts.push(Host::start(config(cluster, &format!("n{i}"), &[seed])));
    }
    wait_until("every member active everywhere", || {
        hosts.iter().all(|h| {
            let m = h.node().membership().unwrap();
            m.state() == MemberState::Active
                && m.members()
                    .iter()
                    .filter(|m| m.state == MemberState::Active)
                    .count()
                    == n - 1
        })
    });
    hosts
}

/// Spawns `count` probes on `host` with `caps`.
fn spawn_probes(host: &Host, count: usize, caps: &[&str]) -> Vec<atoll_core::Pid> {
    host.within(|node| {
        (0..count)
            .map(|_| {
                let (seen, _) = tokio::sync::mpsc::unbounded_channel();
                let opts = SpawnOptions::default().with_capabilities(caps.iter().copied());
                let probe = Probe { seen, trap: false };
                node.runtime().spawn_opts(probe, opts).pid()
            })
            .collect()
    })
}

#[test]
fn five_nodes_tables_converge_and_a_killed_nodes_entries_go_everywhere() {
    let _one = serial();
    common::init_logs();
    let cluster = Cluster::new();
    let mut hosts = cluster_of(&cluster, 5);
    for (i, h) in hosts.iter().enumerate() {
        spawn_probes(h, 3 + i, &["probe"]);
    }
    let gpu = spawn_probes(&hosts[2], 1, &["gpu"])[0];
    // 3+4+5+6+7 probes plus the gpu one (6 on n2).
    wait_until("every table holds every probe", || {
        hosts
            .iter()
            .all(|h| h.node().find_by_type("Probe").len() == 26)
    });
    for h in &hosts {
        let found: Vec<_> = h
            .node()
            .find_by_capability("gpu")
            .iter()
            .map(|a| a.pid)
            .collect();
        assert_eq!(found, [gpu]);
        assert_eq!(
            h.node().least_loaded_node(Some("gpu")),
            Some(hosts[2].node().id())
        );
        // n0 runs the fewest probes.
        assert_eq!(h.node().least_loaded_node(None), Some(hosts[0].node().id()));
    }
    let ring = hosts[1].node().ring();
    assert_eq!(ring.nodes().len(), 5);
    assert_eq!(
        ring.locate_with(b"key", "zone-n3"),
        Some(hosts[3].node().id())
    );

    // A probe that exits is withdrawn everywhere.
    let first = hosts[4].node().find_by_type("Probe");
    let gone = first
        .iter()
        .find(|a| a.pid.node == hosts[4].node().id())
        .unwrap()
        .pid;
    hosts[4].end(gone);
    wait_until("the exited probe is gone everywhere", || {
        hosts
            .iter()
            .all(|h| h.node().find_by_type("Probe").iter().all(|a| a.pid != gone))
    });

    // A killed node's processes go everywhere once membership declares it unreachable.
    let killed = hosts.remove(2);
    let killed_id = killed.node().id();
    killed.kill();
    wait_until("the killed node's entries are gone everywhere", || {
        hosts.iter().all(|h| {
            let probes = h.node().find_by_type("Probe");
            probes.len() == 25 - 6 && probes.iter().all(|a| a.pid.node != killed_id)
        })
    });
    assert!(hosts[0].node().find_by_capability("gpu").is_empty());
    wait_until("the ring drops the killed node", || {
        hosts[0].node().ring().nodes().len() == 4
    });
    for h in hosts {
        h.stop();
    }
}

#[test]
fn services_resolve_preferred_then_fall_back_across_a_node_kill() {
    let _one = serial();
    common::init_logs();
    let cluster = Cluster::new();
    let mut hosts = cluster_of(&cluster, 3);
    let ids: Vec<_> = hosts.iter().map(|h| h.node().id()).collect();
    for h in &hosts {
        let pid = h.probe();
        h.node()
            .advertise_service("db", pid, [("zone".to_string(), h.name())].into())
            .unwrap();
    }
    // Errors are typed: a foreign or dead process cannot serve a service here.
    let foreign = hosts[1].probe();
    assert!(matches!(
        hosts[0]
            .node()
            .advertise_service("db", foreign, Default::default()),
        Err(atoll_cluster::ServiceError::NotLocal(_))
    ));
    wait_until("every node sees three offers", || {
        hosts
            .iter()
            .all(|h| h.node().resolve_preferred("db", ids[0]).len() == 3)
    });
    let order = hosts[0].node().resolve_preferred("db", ids[2]);
    assert_eq!(order[0].pid.node, ids[2]);
    assert_eq!(order[0].metadata["zone"], "n2");

    let killed = hosts.remove(2);
    killed.kill();
    wait_until("the killed node's offer falls back to the others", || {
        let order = hosts[0].node().resolve_preferred("db", ids[2]);
        order.len() == 2 && order.iter().all(|o| o.pid.node != ids[2])
    });
    // Withdrawn on purpose, gone everywhere.
    assert!(hosts[1].node().withdraw_service("db"));
    wait_until("the withdrawn offer is gone everywhere", || {
        hosts.iter().all(|h| {
            let offers = h.node().resolve_preferred("db", ids[1]);
            offers.len() == 1 && offers[0].pid.node == ids[0]
        })
    });
    let (_, stats) = hosts[0].node().data_stats();
    assert!(
        stats.deltas_sent > 0 && stats.entries_applied > 0,
        "{stats:?}"
    );
    for h in hosts {
        h.stop();
    }
}
