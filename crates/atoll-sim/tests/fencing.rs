//! Self-fencing with whole nodes in the simulator: a node cut off until the others declare
//! it down drops what it held before it rejoins as a new generation, and tells its
//! processes.

use std::time::Duration;

use atoll_core::Scope;
mod common;

use atoll_sim::cluster::{ClusterSpec, SimCluster, check_seeds};
use common::spawn_holder;

/// The node cut off: not a voter, so the majority side keeps its leader.
const CUT: usize = 3;
const OTHERS: [usize; 4] = [0, 1, 2, 4];

#[test]
fn a_node_declared_down_drops_its_names_locks_and_groups_and_tells_its_processes() {
    check_seeds(0..3, |seed| async move {
        let sim = SimCluster::start(seed, ClusterSpec::new(5)).unwrap();
        assert!(
            sim.wait_until(Duration::from_secs(30), |s| s.converged())
                .await
        );
        let home = sim.node(CUT).unwrap();
        let (holder, told) = spawn_holder(home);
        home.register("x", holder, Scope::Consistent).await.unwrap();
        let guard = home
            .lock("L", holder, Duration::from_secs(10))
            .await
            .unwrap();
        let token = guard.token();
        home.join_group("room", holder).unwrap();
        assert!(
            sim.wait_until(Duration::from_secs(10), |s| {
                OTHERS.iter().all(|&i| {
                    let n = s.node(i).unwrap();
                    n.whereis("x") == Some(holder) && n.group_members("room") == [holder]
                })
            })
            .await,
            "the name and the group everywhere"
        );
        assert!(!guard.is_lost());

        sim.partition(&[CUT], &OTHERS);
        // The majority declares the node down and releases what it held.
        assert!(
            sim.wait_until(Duration::from_secs(60), |s| {
                OTHERS.iter().all(|&i| {
                    let n = s.node(i).unwrap();
                    n.whereis("x").is_none()
                        && n.lock_holder("L").is_none()
                        && n.group_members("room").is_empty()
                })
            })
            .await,
            "the majority released the cut-off node's name, lock and group member"
        );
        // Cut off, the node still believes it holds them: nothing told it otherwise.
        assert!(!guard.is_lost());
        assert!(told.lock().unwrap().is_empty());

        sim.heal();
        assert!(
            sim.wait_until(Duration::from_secs(60), |_| guard.is_lost())
                .await,
            "the guard never reported the lock lost"
        );
        assert!(
            sim.wait_until(Duration::from_secs(10), |_| !told
                .lock()
                .unwrap()
                .is_empty())
                .await,
            "the holder was not told"
        );
        let notice = told.lock().unwrap()[0].clone();
        assert!(notice.new_generation > notice.old_generation, "{notice:?}");
        assert_eq!(notice.names, ["x"]);
        assert_eq!(notice.locks, [("L".to_string(), token)]);
        assert_eq!(notice.groups, ["room"]);

        // Back as a new generation, the node does not bring them back: every node, itself
        // included, agrees the name, the lock and the group are free.
        assert!(
            sim.wait_until(Duration::from_secs(60), |s| s.converged())
                .await,
            "no convergence after the heal"
        );
        assert!(
            sim.wait_until(Duration::from_secs(30), |s| {
                s.up().iter().all(|&i| {
                    let n = s.node(i).unwrap();
                    n.whereis("x").is_none()
                        && n.lock_holder("L").is_none()
                        && n.group_members("room").is_empty()
                })
            })
            .await,
            "a fenced node's name, lock or group member came back"
        );
        // The process lives on and may claim them again.
        let home = sim.node(CUT).unwrap();
        assert!(home.runtime().is_alive(holder));
        home.register("x", holder, Scope::Consistent).await.unwrap();
        assert_eq!(told.lock().unwrap().len(), 1, "told once");
        drop(guard);
        sim.shutdown().await;
    });
}
