//! Lock releases with whole nodes in the simulator: an unlock tells whether it released its
//! own grant, and unlocks from members without a Raft replica complete promptly when
//! nothing goes wrong.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use atoll_actor::{Actor, ActorResult, Ctx};
use atoll_cluster::{LockError, Node};
use atoll_core::SplitMix64;
use atoll_sim::cluster::{ClusterSpec, SimCluster, check_seeds};
use tokio::time::Instant;

struct Idle;
impl Actor for Idle {
    type Msg = ();
    async fn handle(&mut self, _: (), _: &mut Ctx<Self>) -> ActorResult {
        Ok(())
    }
}

/// The node cut off: not a voter, so the majority side keeps its leader.
const CUT: usize = 3;
const OTHERS: [usize; 4] = [0, 1, 2, 4];

#[test]
fn an_unlock_after_the_cluster_released_the_grant_is_not_held_and_the_new_holder_keeps_it() {
    check_seeds(0..3, |seed| async move {
        let sim = SimCluster::start(seed, ClusterSpec::new(5)).unwrap();
        assert!(
            sim.wait_until(Duration::from_secs(30), |s| s.converged())
                .await
        );
        let home = sim.node(CUT).unwrap();
        let old = home.runtime().spawn(Idle).pid();
        let guard = home.lock("L", old, Duration::from_secs(10)).await.unwrap();
        let old_token = guard.token();

        // Cut off until the majority declares the node lost and releases its grant.
        sim.partition(&[CUT], &OTHERS);
        assert!(
            sim.wait_until(Duration::from_secs(60), |s| {
                OTHERS
                    .iter()
                    .all(|&i| s.node(i).unwrap().lock_holder("L").is_none())
            })
            .await,
            "the majority released the cut-off node's lock"
        );
        // Another member takes the lock.
        let other = sim.node(4).unwrap();
        let new = other.runtime().spawn(Idle).pid();
        let new_guard = other.lock("L", new, Duration::from_secs(10)).await.unwrap();
        let new_token = new_guard.token();
        assert!(new_token > old_token);

        // Back, the node learns it was fenced; its guard's late unlock is refused with the
        // grant that replaced it, and releases nothing.
        sim.heal();
        assert!(
            sim.wait_until(Duration::from_secs(60), |_| guard.is_lost())
                .await,
            "the guard never reported the lock lost"
        );
        match guard.unlock().await {
            Err(LockError::NotHeld {
                name,
                token,
                current,
            }) => {
                assert_eq!(name, "L");
                assert_eq!(token, old_token);
                assert_eq!(current, Some((new, new_token)));
            }
            other => panic!("a late unlock of a released grant answered {other:?}"),
        }
        assert!(
            sim.wait_until(Duration::from_secs(30), |s| s.converged())
                .await,
            "no convergence after the heal"
        );
        assert!(
            sim.wait_until(Duration::from_secs(10), |s| {
                s.up()
                    .iter()
                    .all(|&i| s.node(i).unwrap().lock_holder("L") == Some((new, new_token)))
            })
            .await,
            "the new holder lost its lock"
        );
        assert!(!new_guard.is_lost());
        // Its own unlock is the one that releases it.
        new_guard.unlock().await.unwrap();
        assert_eq!(other.lock_holder("L"), None);
        sim.shutdown().await;
    });
}

/// Lock cycles each client runs.
const CYCLES: usize = 25;
/// The longest an unlock may take with no fault anywhere: a few commits, far below the
/// consensus request timeout (5 s) that a lost answer would cost.
const UNLOCK_BOUND: Duration = Duration::from_millis(1000);

/// `CYCLES` times: take one of two contended locks, hold it a little, unlock it; each
/// unlock's result and how long it took (simulated time).
async fn cycles(node: Node, seed: u64) -> Vec<(Result<(), String>, Duration)> {
    let mut rng = SplitMix64::new(seed);
    let mut unlocks = Vec::new();
    for i in 0..CYCLES {
        let holder = node.runtime().spawn(Idle).pid();
        let name = format!("L{}", rng.next_u64() % 2);
        let guard = node
            .lock(&name, holder, Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("cycle {i}: lock {name}: {e}"));
        tokio::time::sleep(Duration::from_millis(5 + rng.next_u64() % 40)).await;
        let started = Instant::now();
        let result = guard.unlock().await.map_err(|e| e.to_string());
        unlocks.push((result, started.elapsed()));
        node.runtime().kill(holder);
        tokio::time::sleep(Duration::from_millis(rng.next_u64() % 30)).await;
    }
    unlocks
}

/// Runs [`cycles`] on each node of `clients` at once, while the simulation runs; asserts
/// that every unlock succeeded within [`UNLOCK_BOUND`] and returns the slowest.
async fn contend(sim: &SimCluster, clients: &[usize], seed: u64) -> Duration {
    let results = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for (k, &i) in clients.iter().enumerate() {
        let node = sim.node(i).unwrap().clone();
        let results = Arc::clone(&results);
        tasks.push(tokio::spawn(async move {
            let unlocks = cycles(node, seed * 100 + k as u64).await;
            results.lock().unwrap().push((i, unlocks));
        }));
    }
    let started = Instant::now();
    while tasks.iter().any(|t| !t.is_finished()) {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the clients did not finish"
        );
        sim.run_for(Duration::from_millis(100)).await;
    }
    for task in tasks {
        task.await.unwrap();
    }
    let results = results.lock().unwrap();
    assert_eq!(results.len(), clients.len());
    let mut slowest = Duration::ZERO;
    for (i, unlocks) in results.iter() {
        assert_eq!(unlocks.len(), CYCLES);
        for (n, (result, took)) in unlocks.iter().enumerate() {
            assert!(result.is_ok(), "node {i} unlock {n}: {result:?}");
            assert!(
                *took <= UNLOCK_BOUND,
                "node {i} unlock {n} took {took:?} without any fault"
            );
            slowest = slowest.max(*took);
        }
    }
    slowest
}

#[test]
fn unlocks_from_members_without_a_replica_complete_promptly_without_faults() {
    check_seeds(0..2, |seed| async move {
        let sim = SimCluster::start(seed, ClusterSpec::new(5)).unwrap();
        assert!(
            sim.wait_until(Duration::from_secs(30), |s| s.converged())
                .await
        );
        // Two clients on each non-voter, one on a voter, contending for two locks.
        let clients = [3, 3, 4, 4, 0];
        let first = contend(&sim, &clients, seed).await;

        // The leader and a non-voter cut off from the rest until a new leader is elected
        // and the others declare them lost, then healed: the non-voters' leader hints are
        // stale and connections are made again. Once the cluster has converged, unlocks are
        // prompt again.
        let mut leader = None;
        while leader.is_none() {
            sim.run_for(Duration::from_millis(100)).await;
            leader = sim.leader().await.and_then(|id| sim.index_of(id));
        }
        let leader = leader.unwrap();
        let minority = [leader, 4];
        let majority: Vec<usize> = (0..5).filter(|i| !minority.contains(i)).collect();
        sim.partition(&minority, &majority);
        sim.run_for(Duration::from_secs(8)).await;
        sim.heal();
        assert!(
            sim.wait_until(Duration::from_secs(60), |s| s.converged())
                .await,
            "no convergence after the heal"
        );
        let after = contend(&sim, &clients, seed + 1000).await;
        println!("seed {seed}: slowest unlock {first:?} before the fault, {after:?} after");
        sim.shutdown().await;
    });
}
