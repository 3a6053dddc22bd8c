//! Seeded property runs: random crash / restart / partition / loss schedules, then heal, and
//! check the invariants. A failing run names its seed; `ATOLL_SIM_SEED=<seed>` replays it,
//! `ATOLL_SIM_RUNS=<n>` runs seeds 1..=n.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use atoll_core::NodeId;
use atoll_sim::history::{History, Sighting};
use atoll_sim::{Faults, Sim};
use atoll_swim::{MemberEvent, SwimConfig};

const NODES: usize = 7;

fn seeds() -> Vec<u64> {
    match std::env::var("ATOLL_SIM_SEED") {
        Ok(s) => vec![s.parse().expect("ATOLL_SIM_SEED must be a number")],
        // ATOLL_SIM_RUNS widens the search.
        Err(_) => {
            let runs = std::env::var("ATOLL_SIM_RUNS").map_or(12, |r| r.parse().unwrap_or(12));
            (1..=runs).collect()
        }
    }
}

/// What one run left: every node's event log, and what those events said about the other
/// members (with the generation the observer ran as).
struct Run {
    logs: Vec<Vec<(Duration, MemberEvent)>>,
    sightings: Vec<Sighting>,
}

/// Runs one random schedule.
async fn run(seed: u64) -> Run {
    let mut sim = Sim::new(seed, SwimConfig::default());
    sim.add_node(&[]);
    for _ in 1..NODES {
        sim.add_node(&[0, 1]);
    }
    assert!(
        sim.wait_until(Duration::from_secs(30), |s| s.converged())
            .await,
        "seed {seed}: initial convergence"
    );
    // Crashed for good: these must never be seen live again once declared down.
    let mut dead: BTreeSet<usize> = BTreeSet::new();
    let mut incarnations: BTreeMap<(usize, NodeId, u64), u16> = BTreeMap::new();
    for _ in 0..8 {
        let pick = |sim: &mut Sim, n: usize| (sim.random() % n as u64) as usize;
        match sim.random() % 5 {
            0 if dead.len() < 2 => {
                let victim = 2 + pick(&mut sim, NODES - 2);
                if sim.is_up(victim) {
                    sim.crash(victim);
                    dead.insert(victim);
                }
            }
            1 => {
                if let Some(&back) = dead.iter().next() {
                    dead.remove(&back);
                    sim.restart(back, &[0, 1]);
                }
            }
            2 => {
                let cut = 1 + pick(&mut sim, NODES - 1);
                let (a, b): (Vec<usize>, Vec<usize>) = (0..NODES).partition(|i| *i < cut);
                sim.partition(&[a, b]);
            }
            3 => sim.network().set_faults(Faults {
                loss: 0.1,
                duplicate: 0.1,
                delay_max: Duration::from_millis(20),
                ..Faults::default()
            }),
            _ => {
                sim.heal();
                sim.network().set_faults(Faults::default());
            }
        }
        let pause = Duration::from_millis(2000 + sim.random() % 8000);
        // Sample incarnations while time passes: per observer and member generation they
        // never go down.
        let _ = sim
            .wait_until(pause, |s| {
                for i in (0..NODES).filter(|i| s.is_up(*i)) {
                    for m in s.swim(i).unwrap().members() {
                        let key = (i, m.identity.node, m.identity.generation);
                        let seen = incarnations.entry(key).or_insert(m.incarnation);
                        assert!(
                            m.incarnation >= *seen,
                            "seed {seed}: incarnation of {key:?} went down"
                        );
                        *seen = m.incarnation;
                    }
                }
                false
            })
            .await;
    }
    sim.heal();
    sim.network().set_faults(Faults::default());
    let converged = sim
        .wait_until(Duration::from_secs(120), |s| s.converged())
        .await;
    assert!(
        converged,
        "seed {seed}: live members did not converge after heal (replay: ATOLL_SIM_SEED={seed})"
    );
    // Every live node holds the same view: exactly the running generations.
    let running = sim.running();
    for i in (0..NODES).filter(|i| sim.is_up(*i)) {
        assert_eq!(sim.live_view(i), running, "seed {seed}: node {i}'s view");
    }
    // Crashed nodes stay down everywhere.
    for d in &dead {
        let id = sim.nodes()[*d].id;
        for i in (0..NODES).filter(|i| sim.is_up(*i)) {
            assert!(
                !sim.live_view(i).iter().any(|(n, _)| *n == id),
                "seed {seed}: crashed node {d} live at node {i}"
            );
        }
    }
    Run {
        logs: (0..NODES).map(|i| sim.events(i)).collect(),
        sightings: (0..NODES).flat_map(|i| sim.sightings(i)).collect(),
    }
}

/// Per observer, the generations it reports for a member never go backwards, and a
/// generation it saw declared down never comes back to life for it (while it runs as the
/// same generation: a fenced observer rejoins with fresh verdicts).
fn check_history(seed: u64, run: &Run) {
    for (observer, log) in run.logs.iter().enumerate() {
        let mut newest: BTreeMap<NodeId, u64> = BTreeMap::new();
        for (at, e) in log {
            let id = match e {
                MemberEvent::Joined(id)
                | MemberEvent::Suspect(id)
                | MemberEvent::Recovered(id)
                | MemberEvent::Unreachable(id)
                | MemberEvent::Left(id) => id,
                MemberEvent::Active(_) | MemberEvent::Fenced { .. } => continue,
            };
            let seen = newest.entry(id.node).or_insert(id.generation);
            assert!(
                id.generation >= *seen,
                "seed {seed}: node {observer} at {at:?} went back to generation {} of {} after {}",
                id.generation,
                id.node.short(),
                seen
            );
            *seen = id.generation;
        }
    }
    let history = History {
        sightings: run.sightings.clone(),
        ..History::default()
    };
    let back = history.check_generations();
    assert!(
        back.is_empty(),
        "seed {seed}: {} (replay: ATOLL_SIM_SEED={seed})",
        back.iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[tokio::test(start_paused = true)]
async fn random_schedules_converge_after_heal() {
    for seed in seeds() {
        check_history(seed, &run(seed).await);
    }
}

#[tokio::test(start_paused = true)]
async fn a_seed_replays_exactly() {
    let strip = |run: Run| {
        run.logs
            .into_iter()
            .map(|l| {
                l.into_iter()
                    .map(|(t, e)| (t, format!("{e:?}")))
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
    };
    let first = strip(run(99).await);
    let second = strip(run(99).await);
    assert_eq!(first, second, "seed 99 did not replay identically");
}
