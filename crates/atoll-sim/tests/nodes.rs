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
