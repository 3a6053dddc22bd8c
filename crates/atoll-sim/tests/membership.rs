//! Membership in the simulator: the production SWIM code over an in-memory network on a
//! paused clock. Every test names its seed in its failure message.

use std::time::Duration;

use atoll_sim::{Faults, Sim};
use atoll_swim::{MemberEvent, MemberState, SwimConfig};

fn cluster(seed: u64, n: usize) -> Sim {
    let mut sim = Sim::new(seed, SwimConfig::default());
    let first = sim.add_node(&[]);
    for _ in 1..n {
        sim.add_node(&[first]);
    }
    sim
}

/// Lets `within` pass and fails if any node declares any other unreachable meanwhile.
async fn assert_nobody_declared_dead(sim: &Sim, within: Duration) {
    let n = sim.nodes().len();
    let false_positive = sim
        .wait_until(within, |s| {
            (0..n).any(|i| {
                (0..n).any(|j| i != j && state_of(s, i, j) == Some(MemberState::Unreachable))
            })
        })
        .await;
    assert!(
        !false_positive,
        "seed {}: a live node was declared dead",
        sim.seed()
    );
}

fn state_of(sim: &Sim, observer: usize, target: usize) -> Option<MemberState> {
    let id = sim.nodes()[target].id;
    sim.swim(observer)?.member(id).map(|m| m.state)
}

#[tokio::test(start_paused = true)]
async fn five_nodes_converge_and_carry_names() {
    let sim = cluster(1, 5);
    assert!(
        sim.wait_until(Duration::from_secs(30), |s| s.converged())
            .await,
        "seed {}: no convergence",
        sim.seed()
    );
    let names: Vec<String> = sim
        .swim(3)
        .unwrap()
        .members()
        .into_iter()
        .map(|m| m.identity.name().to_string())
        .collect();
    assert_eq!(names.len(), 4);
    for n in ["n0", "n1", "n2", "n4"] {
        assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn crash_is_suspected_then_unreachable_within_suspect_timeout_plus_a_period() {
    let mut sim = cluster(2, 5);
    assert!(
        sim.wait_until(Duration::from_secs(30), |s| s.converged())
            .await
    );
    let crashed_at = sim.elapsed();
    sim.crash(4);
    let config = SwimConfig::default();
    let all_down = sim
        .wait_until(Duration::from_secs(30), |s| {
            (0..4).all(|i| state_of(s, i, 4) == Some(MemberState::Unreachable))
        })
        .await;
    assert!(all_down, "seed {}: crash not detected", sim.seed());
    let target = sim.nodes()[4].id;
    let mut downs = Vec::new();
    for i in 0..4 {
        let events = sim.events(i);
        let at =
            |want: fn(&MemberEvent) -> bool| events.iter().find(|(_, e)| want(e)).map(|(t, _)| *t);
        let suspect = at(|e| matches!(e, MemberEvent::Suspect(_)));
        let down = at(|e| matches!(e, MemberEvent::Unreachable(_))).expect("unreachable event");
        assert!(
            suspect.is_some_and(|s| s <= down),
            "node {i}: suspect before unreachable"
        );
        assert!(events.iter().all(|(_, e)| match e {
            MemberEvent::Suspect(id) | MemberEvent::Unreachable(id) => id.node == target,
            _ => true,
        }));
        downs.push(down);
    }
    let first = *downs.iter().min().unwrap();
    let last = *downs.iter().max().unwrap();
    // Up to one interval passes before someone probes the crashed node, one more before the
    // probe fails; then the suspicion runs for the suspect timeout.
    let limit = config.suspect_timeout + config.probe_interval * 2;
    assert!(
        first - crashed_at <= limit,
        "seed {}: first verdict after {:?} (limit {limit:?})",
        sim.seed(),
        first - crashed_at
    );
    // Everyone else follows within one probe interval (suspicion spreads by gossip).
    assert!(
        last - first <= config.probe_interval,
        "seed {}: verdicts spread over {:?}",
        sim.seed(),
        last - first
    );
}

#[tokio::test(start_paused = true)]
async fn graceful_leave_is_left_everywhere() {
    let mut sim = cluster(3, 5);
    assert!(
        sim.wait_until(Duration::from_secs(30), |s| s.converged())
            .await
    );
    sim.leave(2).await;
    let left = sim
        .wait_until(Duration::from_secs(5), |s| {
            [0, 1, 3, 4]
                .iter()
                .all(|i| state_of(s, *i, 2) == Some(MemberState::Left))
        })
        .await;
    assert!(
        left,
        "seed {}: leave not seen as Left everywhere",
        sim.seed()
    );
}

#[tokio::test(start_paused = true)]
async fn one_way_block_declares_nobody_dead() {
    let sim = cluster(4, 5);
    assert!(
        sim.wait_until(Duration::from_secs(30), |s| s.converged())
            .await
    );
    sim.block_one_way(0, 1);
    // Indirect probes through the other members keep both alive.
    assert_nobody_declared_dead(&sim, Duration::from_secs(60)).await;
}

#[tokio::test(start_paused = true)]
async fn twenty_percent_loss_declares_nobody_dead() {
    let sim = cluster(5, 8);
    assert!(
        sim.wait_until(Duration::from_secs(30), |s| s.converged())
            .await
    );
    sim.network().set_faults(Faults {
        loss: 0.2,
        duplicate: 0.05,
        ..Faults::default()
    });
    assert_nobody_declared_dead(&sim, Duration::from_secs(120)).await;
}

#[tokio::test(start_paused = true)]
async fn isolated_node_rejoins_as_new_generation_after_heal() {
    let sim = cluster(6, 5);
    assert!(
        sim.wait_until(Duration::from_secs(30), |s| s.converged())
            .await
    );
    let before = sim.swim(3).unwrap().identity().generation;
    let majority_before: Vec<u64> = [0, 1, 2, 4]
        .iter()
        .map(|i| sim.swim(*i).unwrap().identity().generation)
        .collect();
    sim.partition(&[vec![3], vec![0, 1, 2, 4]]);
    assert!(
        sim.wait_until(Duration::from_secs(30), |s| state_of(s, 0, 3)
            == Some(MemberState::Unreachable))
            .await
    );
    sim.heal();
    assert!(
        sim.wait_until(Duration::from_secs(60), |s| s.converged())
            .await,
        "seed {}: no convergence after heal",
        sim.seed()
    );
    let after = sim.swim(3).unwrap().identity().generation;
    assert!(
        after > before,
        "the isolated node continues as a new generation"
    );
    // The majority kept its generations: nobody there was fenced.
    let majority_after: Vec<u64> = [0, 1, 2, 4]
        .iter()
        .map(|i| sim.swim(*i).unwrap().identity().generation)
        .collect();
    assert_eq!(majority_before, majority_after, "seed {}", sim.seed());
    for i in [0, 1, 2, 4] {
        assert!(
            !sim.events(i)
                .iter()
                .any(|(_, e)| matches!(e, MemberEvent::Fenced { .. })),
            "seed {}: node {i} was fenced",
            sim.seed()
        );
    }
}

#[tokio::test(start_paused = true)]
async fn restarted_node_replaces_its_old_generation() {
    let mut sim = cluster(7, 4);
    assert!(
        sim.wait_until(Duration::from_secs(30), |s| s.converged())
            .await
    );
    let old = sim.swim(2).unwrap().identity().generation;
    sim.restart(2, &[0]);
    assert!(
        sim.wait_until(Duration::from_secs(30), |s| s.converged())
            .await
    );
    for i in [0, 1, 3] {
        let m = sim.swim(i).unwrap().member(sim.nodes()[2].id).unwrap();
        assert!(m.identity.generation > old);
        assert_eq!(m.state, MemberState::Active);
    }
}

/// A 2|3 or 1|4 partition healed at many moments relative to the suspicions running on
/// each side (some seeds with loss and jitter): the minority rejoins, nobody on the majority
/// side is ever fenced, and the views converge. When the side with more live members won,
/// a minority's suspicion that ran out after the heal fenced a majority member in about
/// half of these runs (the minority counted its suspects, and the members it met again).
#[tokio::test(start_paused = true)]
async fn a_healed_partition_fences_only_the_minority() {
    let config = SwimConfig {
        probe_interval: Duration::from_millis(500),
        ping_timeout: Duration::from_millis(250),
        suspect_timeout: Duration::from_millis(2500),
        ..SwimConfig::default()
    };
    for seed in 0..120u64 {
        let mut sim = Sim::new(seed, config.clone());
        let first = sim.add_node(&[]);
        for _ in 1..5 {
            sim.add_node(&[first]);
        }
        assert!(
            sim.wait_until(Duration::from_secs(30), |s| s.converged())
                .await
        );
        if seed % 3 == 2 {
            sim.network().set_faults(Faults {
                loss: 0.03,
                delay_min: Duration::from_millis(1),
                delay_max: Duration::from_millis(40),
                ..Faults::default()
            });
        }
        let (minority, majority) = if seed % 2 == 0 {
            (vec![3, 4], vec![0, 1, 2])
        } else {
            (vec![2], vec![0, 1, 3, 4])
        };
        sim.partition(&[minority.clone(), majority.clone()]);
        let cut = minority[0];
        assert!(
            sim.wait_until(Duration::from_secs(30), |s| state_of(s, 0, cut)
                == Some(MemberState::Unreachable))
                .await,
            "seed {seed}: the majority never declared the minority down"
        );
        // From just after the majority's verdict to past every suspicion on either side.
        let heal_after = Duration::from_millis((seed * 37) % 3000);
        sim.wait_until(heal_after, |_| false).await;
        sim.heal();
        assert!(
            sim.wait_until(Duration::from_secs(30), |s| s.converged())
                .await,
            "seed {seed}: no convergence after the heal"
        );
        for i in majority {
            let fenced = sim
                .events(i)
                .iter()
                .any(|(_, e)| matches!(e, MemberEvent::Fenced { .. }));
            assert!(
                !fenced,
                "seed {seed}: majority node {i} was fenced (healed {heal_after:?} after the verdict)"
            );
        }
        for i in minority {
            assert!(
                sim.swim(i).unwrap().identity().generation > 1,
                "seed {seed}: minority node {i} did not rejoin"
            );
        }
    }
}
