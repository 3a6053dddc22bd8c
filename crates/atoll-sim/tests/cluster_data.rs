//! Cluster data in the simulator, on the real node code: after partitions long enough for
//! membership to declare the other side lost, and after a crash and restart, every node's
//! process table holds exactly the processes alive in the cluster.

use std::collections::BTreeSet;
use std::time::Duration;

use atoll_actor::{Actor, ActorResult, Ctx};
use atoll_core::Pid;
use atoll_sim::cluster::{ClusterSpec, SimCluster, check_seeds};

struct Idle;
impl Actor for Idle {
    type Msg = ();
    async fn handle(&mut self, _: (), _: &mut Ctx<Self>) -> ActorResult {
        Ok(())
    }
}

/// The processes alive on the nodes that are up.
fn truth(sim: &SimCluster) -> BTreeSet<Pid> {
    sim.up()
        .iter()
        .flat_map(|&i| sim.node(i).unwrap().runtime().processes())
        .map(|p| p.pid)
        .collect()
}

/// Every up node's table holds exactly the live processes.
fn tables_exact(sim: &SimCluster) -> bool {
    let want = truth(sim);
    sim.up().iter().all(|&i| {
        let have: BTreeSet<Pid> = sim
            .node(i)
            .unwrap()
            .cluster_processes()
            .iter()
            .map(|a| a.pid)
            .collect();
        have == want
    })
}

/// What each up node's table lacks and holds extra, for a failure message.
fn differences(sim: &SimCluster) -> String {
    let want = truth(sim);
    let mut out = String::new();
    for i in sim.up() {
        let have: BTreeSet<Pid> = sim
            .node(i)
            .unwrap()
            .cluster_processes()
            .iter()
            .map(|a| a.pid)
            .collect();
        let node = |p: &Pid| sim.index_of(p.node).map_or(99, |n| n);
        let lacks: Vec<_> = want
            .difference(&have)
            .map(|p| (node(p), p.serial))
            .collect();
        let extra: Vec<_> = have
            .difference(&want)
            .map(|p| (node(p), p.serial))
            .collect();
        out += &format!("\n  node {i}: lacks {lacks:?} extra {extra:?}");
    }
    out
}

fn spawn_on(sim: &SimCluster, i: usize, n: usize) -> Vec<Pid> {
    let rt = sim.node(i).unwrap().runtime();
    (0..n).map(|_| rt.spawn(Idle).pid()).collect()
}

#[test]
fn tables_hold_exactly_the_live_processes_after_partitions_and_a_crash() {
    check_seeds(0..10, |seed| async move {
        let mut sim = SimCluster::start(seed, ClusterSpec::new(5).with_voters(0)).unwrap();
        let limit = Duration::from_secs(60);
        assert!(sim.wait_until(limit, |s| s.converged()).await, "membership");
        for i in 0..5 {
            spawn_on(&sim, i, 3);
        }
        assert!(
            sim.wait_until(limit, tables_exact).await,
            "first convergence"
        );

        // A partition long enough for each side to declare the other lost; both sides
        // change meanwhile.
        sim.partition(&[0, 1], &[2, 3, 4]);
        spawn_on(&sim, 0, 2);
        spawn_on(&sim, 3, 2);
        let doomed = spawn_on(&sim, 4, 1)[0];
        sim.node(4).unwrap().runtime().kill(doomed);
        sim.run_for(Duration::from_secs(20)).await;
        let side_a: BTreeSet<Pid> = sim
            .node(0)
            .unwrap()
            .cluster_processes()
            .iter()
            .map(|a| a.pid)
            .collect();
        assert!(
            side_a
                .iter()
                .all(|p| p.node == sim.id(0) || p.node == sim.id(1)),
            "seed {seed}: the other side's processes dropped once it was declared lost"
        );
        sim.heal();
        assert!(sim.wait_until(limit, |s| s.converged()).await, "rejoin");
        assert!(
            sim.wait_until(limit, tables_exact).await,
            "seed {seed}: tables after the heal:{}",
            differences(&sim)
        );

        // A crash: its processes go everywhere; the restarted node's new ones arrive.
        sim.crash(2).await;
        assert!(
            sim.wait_until(limit, tables_exact).await,
            "seed {seed}: after the crash:{}",
            differences(&sim)
        );
        sim.restart(2).unwrap();
        spawn_on(&sim, 2, 2);
        assert!(sim.wait_until(limit, |s| s.converged()).await, "restart");
        assert!(
            sim.wait_until(limit, tables_exact).await,
            "seed {seed}: after the restart:{}",
            differences(&sim)
        );
        sim.shutdown().await;
    });
}

/// One node cut off past failure detection from three that run consensus, then healed: it
/// rejoins as a new generation and every table holds everyone's processes again.
#[test]
fn an_isolated_node_is_back_in_every_table_after_the_heal() {
    check_seeds(0..10, |seed| async move {
        let sim = SimCluster::start(seed, ClusterSpec::new(4).with_voters(3)).unwrap();
        let limit = Duration::from_secs(60);
        assert!(sim.wait_until(limit, |s| s.converged()).await, "membership");
        for i in 0..4 {
            spawn_on(&sim, i, 1);
        }
        assert!(
            sim.wait_until(limit, tables_exact).await,
            "first convergence"
        );
        sim.partition(&[3], &[0, 1, 2]);
        let others_only = |s: &SimCluster| {
            (0..3).all(|i| {
                s.node(i)
                    .unwrap()
                    .cluster_processes()
                    .iter()
                    .all(|a| a.pid.node != s.id(3))
            })
        };
        assert!(
            sim.wait_until(limit, others_only).await,
            "seed {seed}: dropped"
        );
        sim.heal();
        assert!(
            sim.wait_until(Duration::from_secs(30), tables_exact).await,
            "seed {seed}: tables after the heal:{}",
            differences(&sim)
        );
        sim.shutdown().await;
    });
}
