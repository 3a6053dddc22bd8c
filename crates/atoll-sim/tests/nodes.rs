//! Whole nodes in the simulator: a smoke test of the cluster coming up and serving names.

use std::time::Duration;

use atoll_actor::{Actor, ActorResult, Ctx};
use atoll_core::Scope;
use atoll_sim::cluster::{ClusterSpec, SimCluster, simulate};

struct Idle;
impl Actor for Idle {
    type Msg = ();
    async fn handle(&mut self, _: (), _: &mut Ctx<Self>) -> ActorResult {
        Ok(())
    }
}

#[test]
fn a_cluster_comes_up_elects_and_registers() {
    simulate(|| async {
        let sim = SimCluster::start(1, ClusterSpec::new(5)).unwrap();
        assert!(
            sim.wait_until(Duration::from_secs(30), |s| s.converged())
                .await,
            "seed 1: no convergence"
        );
        let mut leader = None;
        for _ in 0..300 {
            leader = sim.leader().await;
            if leader.is_some() {
                break;
            }
            sim.run_for(Duration::from_millis(100)).await;
        }
        assert!(leader.is_some(), "seed 1: no leader");
        let node = sim.node(4).unwrap();
        let pid = node.runtime().spawn(Idle).pid();
        node.register("svc", pid, Scope::Consistent).await.unwrap();
        assert!(
            sim.wait_until(Duration::from_secs(5), |s| {
                s.up()
                    .iter()
                    .all(|&i| s.node(i).unwrap().whereis("svc") == Some(pid))
            })
            .await
        );
        println!("elapsed {:?} trace {:x}", sim.elapsed(), sim.trace_hash());
        sim.shutdown().await;
    });
}

/// Watches one remote process and notes how its monitor fired.
struct Watcher {
    target: atoll_core::Pid,
    seen: std::sync::Arc<std::sync::Mutex<Option<atoll_core::ExitReason>>>,
}

impl Actor for Watcher {
    type Msg = ();
    async fn started(&mut self, ctx: &mut Ctx<Self>) -> ActorResult {
        ctx.monitor(self.target);
        Ok(())
    }
    async fn handle(&mut self, _: (), _: &mut Ctx<Self>) -> ActorResult {
        Ok(())
    }
    async fn handle_down(&mut self, down: atoll_actor::Down, _: &mut Ctx<Self>) -> ActorResult {
        *self.seen.lock().unwrap() = Some(down.reason);
        Ok(())
    }
}

#[test]
fn monitors_across_a_partition_fire_with_no_connection() {
    atoll_sim::cluster::check_seeds(0..3, |seed| async move {
        let sim = SimCluster::start(seed, ClusterSpec::new(3).with_voters(0)).unwrap();
        assert!(
            sim.wait_until(Duration::from_secs(30), |s| s.converged())
                .await
        );
        let target = sim.node(2).unwrap().runtime().spawn(Idle).pid();
        let seen = std::sync::Arc::default();
        let watcher = Watcher {
            target,
            seen: std::sync::Arc::clone(&seen),
        };
        sim.node(0).unwrap().runtime().spawn(watcher);
        sim.run_for(Duration::from_secs(1)).await;
        assert_eq!(*seen.lock().unwrap(), None, "fired before the partition");
        sim.partition(&[2], &[0, 1]);
        let fired = sim
            .wait_until(Duration::from_secs(60), |_| seen.lock().unwrap().is_some())
            .await;
        assert!(fired, "no Down within a minute of the partition");
        assert_eq!(
            *seen.lock().unwrap(),
            Some(atoll_core::ExitReason::NoConnection)
        );
        sim.shutdown().await;
    });
}

/// A member cut off long enough to be declared down (and its names released) rejoins as a
/// new generation when the partition heals, and every node sees that generation. (This
/// once failed for the seed node: the simulated network left a connection half-open when
/// one side closed it during the partition, which a QUIC peer's reset would have ended.)
#[test]
fn every_node_sees_a_member_back_from_a_partition() {
    atoll_sim::cluster::check_seeds(0..5, |seed| async move {
        let sim = SimCluster::start(seed, ClusterSpec::new(5)).unwrap();
        assert!(
            sim.wait_until(Duration::from_secs(30), |s| s.converged())
                .await
        );
        let home = sim.node(3).unwrap();
        let pid = home.runtime().spawn(Idle).pid();
        home.register("x", pid, Scope::Consistent).await.unwrap();
        sim.run_for(Duration::from_secs(1)).await;
        sim.partition(&[3], &[0, 1, 2, 4]);
        // Held until the majority has released the cut-off node's name.
        assert!(
            sim.wait_until(Duration::from_secs(60), |s| {
                [0, 1, 2, 4]
                    .iter()
                    .all(|&i| s.node(i).unwrap().whereis("x").is_none())
            })
            .await
        );
        sim.heal();
        assert!(
            sim.wait_until(Duration::from_secs(60), |s| s.converged())
                .await,
            "no convergence a minute after the heal"
        );
        sim.shutdown().await;
    });
}
