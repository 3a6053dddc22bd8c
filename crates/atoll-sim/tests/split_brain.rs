//! The keep-majority split-brain policy with whole nodes in the simulator: a 2|3 partition
//! that lasts past the window makes the two fence themselves (their processes are told,
//! while still cut off) and the three down them; after the heal the two rejoin as new
//! generations and nobody on the majority side is fenced. Partitions that come and go
//! faster than the window down nobody.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use atoll_cluster::{FenceNotice, MemberState, SplitBrainPolicy};
use atoll_core::{Pid, Scope};
mod common;

use atoll_sim::cluster::{ClusterSpec, SimCluster, check_seeds};
use common::spawn_holder;

const WINDOW: Duration = Duration::from_secs(4);

fn spec() -> ClusterSpec {
    ClusterSpec::new(5).with_split_brain(SplitBrainPolicy::KeepMajority { window: WINDOW })
}

fn generations(sim: &SimCluster) -> Vec<u64> {
    (0..sim.len())
        .map(|i| {
            sim.node(i)
                .unwrap()
                .membership()
                .unwrap()
                .identity()
                .generation
        })
        .collect()
}

/// What each node sees: its generation and state, and each member's generation and state.
fn views(sim: &SimCluster) -> String {
    let mut out = String::new();
    for i in 0..sim.len() {
        let swim = sim.node(i).unwrap().membership().unwrap();
        out += &format!(
            "\n{i} ({}, {:?}):",
            swim.identity().generation,
            swim.state()
        );
        for j in (0..sim.len()).filter(|&j| j != i) {
            match swim.member(sim.id(j)) {
                Some(m) => out += &format!(" {j}={}/{:?}", m.identity.generation, m.state),
                None => out += &format!(" {j}=?"),
            }
        }
    }
    out
}

/// Every node sees the others active, with these generations.
fn whole(sim: &SimCluster, generations: &[u64]) -> bool {
    (0..sim.len()).all(|i| {
        let swim = sim.node(i).unwrap().membership().unwrap();
        (0..sim.len()).filter(|&j| j != i).all(|j| {
            swim.member(sim.id(j)).is_some_and(|m| {
                m.state == MemberState::Active && m.identity.generation == generations[j]
            })
        })
    })
}

/// Spawns a holder on node `at` that holds the name `x`, the lock `L` and the group
/// `room`, and waits until every node sees the name and the group.
async fn holder_on(
    sim: &SimCluster,
    at: usize,
) -> (Pid, atoll_cluster::LockGuard, Arc<Mutex<Vec<FenceNotice>>>) {
    let home = sim.node(at).unwrap();
    let (holder, told) = spawn_holder(home);
    home.register("x", holder, Scope::Consistent).await.unwrap();
    let guard = home
        .lock("L", holder, Duration::from_secs(10))
        .await
        .unwrap();
    home.join_group("room", holder).unwrap();
    assert!(
        sim.wait_until(Duration::from_secs(10), |s| {
            (0..s.len()).all(|i| {
                let n = s.node(i).unwrap();
                n.whereis("x") == Some(holder) && n.group_members("room") == [holder]
            })
        })
        .await,
        "the name and the group everywhere"
    );
    (holder, guard, told)
}

fn free_everywhere(sim: &SimCluster, nodes: &[usize]) -> bool {
    nodes.iter().all(|&i| {
        let n = sim.node(i).unwrap();
        n.whereis("x").is_none()
            && n.lock_holder("L").is_none()
            && n.group_members("room").is_empty()
    })
}

/// The minority: node 4 and either another non-voter (the voters stay together) or the
/// seed and first voter 0.
fn two_three(minority: [usize; 2]) {
    let majority: Vec<usize> = (0..5).filter(|i| !minority.contains(i)).collect();
    check_seeds(0..2, |seed| {
        let majority = majority.clone();
        async move {
            let sim = SimCluster::start(seed, spec()).unwrap();
            assert!(
                sim.wait_until(Duration::from_secs(30), |s| s.converged())
                    .await
            );
            let (holder, guard, told) = holder_on(&sim, minority[0]).await;
            let before = generations(&sim);

            sim.partition(&minority, &majority);
            // Past the window, still cut off: the two fence themselves and the holder is
            // told what it lost; the three down the two and release what they held.
            assert!(
                sim.wait_until(WINDOW * 5, |_| guard.is_lost()
                    && !told.lock().unwrap().is_empty())
                    .await,
                "the minority did not fence itself (lost {}, told {}): {}",
                guard.is_lost(),
                told.lock().unwrap().len(),
                views(&sim)
            );
            let notice = told.lock().unwrap()[0].clone();
            assert_eq!(notice.old_generation, before[minority[0]]);
            assert!(notice.new_generation > notice.old_generation);
            assert_eq!(notice.names, ["x"]);
            assert_eq!(notice.locks, [("L".to_string(), guard.token())]);
            assert_eq!(notice.groups, ["room"]);
            assert!(
                sim.wait_until(WINDOW * 5, |s| {
                    majority.iter().all(|&i| {
                        let swim = s.node(i).unwrap().membership().unwrap();
                        minority.iter().all(|&j| {
                            swim.member(s.id(j))
                                .is_some_and(|m| m.state == MemberState::Unreachable)
                        })
                    }) && free_everywhere(s, &majority)
                })
                .await,
                "the majority did not down the minority and release its claims"
            );
            let cut = generations(&sim);
            for i in 0..5 {
                let fencing = sim.node(i).unwrap().status().await.fencing;
                if minority.contains(&i) {
                    assert!(cut[i] > before[i], "node {i} not fenced: {cut:?}");
                    // Its status says it downed itself, into the generation it has now.
                    let last = fencing.last.as_ref().expect("a fencing reported");
                    assert_eq!(fencing.times, 1, "node {i}: {fencing:?}");
                    assert!(
                        fencing.self_downed && last.by_itself,
                        "node {i}: {fencing:?}"
                    );
                    assert_eq!(
                        (last.old_generation, last.new_generation),
                        (before[i], cut[i])
                    );
                } else {
                    assert_eq!(cut[i], before[i], "node {i} fenced: {cut:?}");
                    assert_eq!(fencing, Default::default(), "node {i}");
                }
            }
            let home = sim.node(minority[0]).unwrap().status().await.fencing;
            let last = home.last.unwrap();
            assert_eq!((last.names, last.locks, last.groups), (1, 1, 1));

            sim.heal();
            // The two rejoin as the generations they continued as; nobody else moves.
            assert!(
                sim.wait_until(Duration::from_secs(60), |s| whole(s, &cut))
                    .await,
                "no rejoin after the heal: {}",
                views(&sim)
            );
            assert_eq!(generations(&sim), cut);
            // Back with a majority: the policy is armed again on the two.
            assert!(
                sim.wait_until(Duration::from_secs(30), |s| {
                    minority
                        .iter()
                        .all(|&i| !s.node(i).unwrap().fencing().self_downed)
                })
                .await,
                "still downed by itself after the heal"
            );
            assert!(
                sim.wait_until(Duration::from_secs(30), |s| free_everywhere(
                    s,
                    &[0, 1, 2, 3, 4]
                ))
                .await,
                "a fenced claim came back"
            );
            // Told once; the process lives on and may claim its name again.
            let home = sim.node(minority[0]).unwrap();
            assert!(home.runtime().is_alive(holder));
            home.register("x", holder, Scope::Consistent).await.unwrap();
            assert!(
                sim.wait_until(Duration::from_secs(10), |s| {
                    (0..5).all(|i| s.node(i).unwrap().whereis("x") == Some(holder))
                })
                .await
            );
            assert_eq!(told.lock().unwrap().len(), 1, "told once");
            drop(guard);
            sim.shutdown().await;
        }
    });
}

#[test]
fn two_three_with_the_voters_together_fences_the_two() {
    two_three([3, 4]);
}

#[test]
fn two_three_with_the_seed_and_a_voter_in_the_minority_fences_the_two() {
    two_three([0, 4]);
}

#[test]
fn partitions_shorter_than_the_window_down_nobody() {
    check_seeds(0..2, |seed| async move {
        let sim = SimCluster::start(seed, spec()).unwrap();
        assert!(
            sim.wait_until(Duration::from_secs(30), |s| s.converged())
                .await
        );
        // The view stable for a window: the policy knows the whole membership.
        sim.run_for(WINDOW * 2).await;
        let (holder, guard, told) = holder_on(&sim, 3).await;
        let before = generations(&sim);
        // Cut and healed over and over, each state lasting less than the window, for
        // five windows: long enough for SWIM's suspect timeout to have downed someone.
        for round in 0..10u64 {
            if round.is_multiple_of(2) {
                sim.partition(&[3, 4], &[0, 1, 2]);
            } else {
                sim.heal();
            }
            sim.run_for(WINDOW * 3 / 5 + Duration::from_millis(round * 37))
                .await;
        }
        sim.heal();
        assert!(
            sim.wait_until(Duration::from_secs(30), |s| whole(s, &before))
                .await,
            "not whole again: {}",
            views(&sim)
        );
        assert_eq!(generations(&sim), before, "someone was downed");
        assert!(!guard.is_lost());
        assert!(told.lock().unwrap().is_empty());
        assert!((0..5).all(|i| sim.node(i).unwrap().whereis("x") == Some(holder)));
        assert_eq!(
            sim.node(0).unwrap().lock_holder("L").map(|h| h.0),
            Some(holder)
        );
        drop(guard);
        sim.shutdown().await;
    });
}
