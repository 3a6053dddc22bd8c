//! Grain lifecycle in the deterministic simulator: five nodes (three voters), each with a
//! store of its own, `Replicated` grains taking a stream of calls from a sender on every
//! node while they migrate at random and the network splits and heals. What must hold:
//! concurrent first calls from all five nodes make one activation; epochs are unique per
//! grain; every acknowledged (saved) message is in the grain's final state, exactly once,
//! each sender's in the order it sent them; every grain answers everywhere after the heal.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atoll_grain::{
    ActivationFailed, Durability, Grain, GrainCtx, GrainId, Grains, GrainsConfig, MemoryStore,
};
use atoll_sim::cluster::{ClusterSpec, SimCluster, check_seeds};

/// Activations seen: (grain key, epoch).
type Activations = Arc<Mutex<Vec<(String, u64)>>>;

/// The messages it took, in order: (sender, sequence number).
struct Stream {
    seen: Activations,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
enum StreamMsg {
    Push(u32, u32),
    Read,
}

impl Grain for Stream {
    const TYPE: &'static str = "stream";
    const DURABILITY: Durability = Durability::Replicated;
    /// Exactly once is what the checker holds it to: a push whose host was cut off while
    /// its sender waited is not sent again (the cut-off activation may have saved it).
    const RESEND_IN_DOUBT: bool = false;
    type State = Vec<(u32, u32)>;
    type Msg = StreamMsg;
    /// The messages taken, or why a push was not acknowledged.
    type Reply = Result<Vec<(u32, u32)>, String>;

    async fn on_activate(&mut self, ctx: &mut GrainCtx<Self>) -> Result<(), ActivationFailed> {
        let entry = (ctx.key().to_string(), ctx.epoch());
        self.seen.lock().unwrap().push(entry);
        Ok(())
    }

    async fn handle(&mut self, msg: StreamMsg, ctx: &mut GrainCtx<Self>) -> Self::Reply {
        if let StreamMsg::Push(sender, seq) = msg {
            ctx.state_mut().push((sender, seq));
            ctx.save().await.map_err(|e| e.to_string())?;
            return Ok(Vec::new());
        }
        Ok(ctx.state().clone())
    }
}

const KEYS: [&str; 3] = ["x", "y", "z"];

/// Per grain key, the (sender, sequence number) pushes acknowledged.
type Acked = BTreeMap<String, BTreeSet<(u32, u32)>>;

/// Checks a grain's final messages against the acknowledged ones: each acknowledged one
/// there exactly once, each sender's in increasing order (unacknowledged ones may be
/// missing, or there if they were saved before the answer was lost).
fn check(state: &[(u32, u32)], acked: &BTreeSet<(u32, u32)>) -> Result<(), String> {
    let mut last: BTreeMap<u32, u32> = BTreeMap::new();
    for &(sender, seq) in state {
        if let Some(prev) = last.insert(sender, seq)
            && prev >= seq
        {
            return Err(format!("sender {sender}: {seq} after {prev}"));
        }
    }
    let have: BTreeSet<(u32, u32)> = state.iter().copied().collect();
    match acked.difference(&have).next() {
        Some(lost) => Err(format!("acknowledged {lost:?} is lost")),
        None => Ok(()),
    }
}

#[test]
fn the_checker_catches_lost_repeated_and_reordered_messages() {
    let acked: BTreeSet<(u32, u32)> = [(1, 0), (1, 2), (2, 0)].into();
    assert!(check(&[(1, 0), (2, 0), (1, 1), (1, 2)], &acked).is_ok());
    assert!(check(&[(1, 0), (2, 0)], &acked).is_err(), "lost");
    assert!(
        check(&[(1, 0), (2, 0), (1, 2), (1, 2)], &acked).is_err(),
        "twice"
    );
    assert!(
        check(&[(1, 2), (2, 0), (1, 0)], &acked).is_err(),
        "reordered"
    );
}

#[test]
fn migrations_and_partitions_lose_no_acknowledged_message() {
    check_seeds(0..8, |seed| async move {
        let mut spec = ClusterSpec::new(5);
        spec.swim.probe_interval = Duration::from_millis(300);
        spec.swim.ping_timeout = Duration::from_millis(150);
        spec.swim.suspect_timeout = Duration::from_millis(1500);
        let mut sim = SimCluster::start(seed, spec).unwrap();
        assert!(
            sim.wait_until(Duration::from_secs(60), |s| s.converged())
                .await
        );
        let mut leader = false;
        for _ in 0..10 {
            if sim.leader().await.is_some() {
                leader = true;
                break;
            }
            sim.run_for(Duration::from_secs(1)).await;
        }
        assert!(leader, "no raft leader");
        let seen: Activations = Arc::default();
        let mut services: Vec<Grains> = Vec::new();
        for i in 0..sim.len() {
            let config = GrainsConfig {
                store: Some(Arc::new(MemoryStore::new())),
                idle_timeout: None,
                call_timeout: Duration::from_secs(8),
                replicas: 2,
                ..GrainsConfig::default()
            };
            let grains = Grains::start(sim.node(i).unwrap(), config);
            let seen = seen.clone();
            grains
                .register(move |_| Stream { seen: seen.clone() })
                .unwrap();
            services.push(grains);
        }
        assert!(
            sim.wait_until(Duration::from_secs(30), |s| {
                (0..s.len()).all(|i| s.node(i).unwrap().find_by_type("GrainRouter").len() == 5)
            })
            .await
        );

        // Concurrent first calls from every node: one activation.
        let first: Vec<_> = services
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let g = g.clone();
                tokio::spawn(async move {
                    g.get::<Stream>("first")
                        .unwrap()
                        .call(StreamMsg::Push(i as u32, 0))
                        .await
                })
            })
            .collect();
        for call in first {
            call.await.unwrap().unwrap().unwrap();
        }
        let firsts = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a.0 == "first")
            .count();
        assert_eq!(
            firsts, 1,
            "concurrent first calls made {firsts} activations"
        );

        // A sender on every node, each awaiting every push before the next.
        let acked: Arc<Mutex<Acked>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for (i, grains) in services.iter().enumerate() {
            let (grains, acked, stop) = (grains.clone(), acked.clone(), stop.clone());
            let mut rng = atoll_core::SplitMix64::new(seed ^ ((i as u64 + 1) * 0x9e37));
            tasks.push(tokio::spawn(async move {
                let mut seq = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let key = KEYS[(rng.next_u64() % 3) as usize];
                    let stream = grains.get::<Stream>(key).unwrap();
                    if let Ok(Ok(_)) = stream.call(StreamMsg::Push(i as u32, seq)).await {
                        let mut acked = acked.lock().unwrap();
                        acked
                            .entry(key.to_string())
                            .or_default()
                            .insert((i as u32, seq));
                    }
                    seq += 1;
                    tokio::time::sleep(Duration::from_millis(20 + rng.next_u64() % 100)).await;
                }
            }));
        }
        // A migrator moving grains at random.
        {
            let (services, stop) = (services.clone(), stop.clone());
            let ids: Vec<_> = (0..sim.len()).map(|i| sim.id(i)).collect();
            let mut rng = atoll_core::SplitMix64::new(seed ^ 0x51ed);
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(300 + rng.next_u64() % 700)).await;
                    let key = KEYS[(rng.next_u64() % 3) as usize];
                    let from = &services[(rng.next_u64() % 5) as usize];
                    let to = ids[(rng.next_u64() % 5) as usize];
                    let _ = from.migrate(&GrainId::new("stream", key), to).await;
                }
            }));
        }
        sim.run_for(Duration::from_secs(3)).await;
        for _ in 0..3 {
            let lonely = (sim.random() % 5) as usize;
            let rest: Vec<usize> = (0..5).filter(|&j| j != lonely).collect();
            sim.partition(&[lonely], &rest);
            let split = 2 + sim.random() % 6;
            sim.run_for(Duration::from_secs(split)).await;
            sim.heal();
            sim.run_for(Duration::from_secs(3)).await;
        }
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.unwrap();
        }
        sim.heal();

        // Every grain answers from every node; its messages check out.
        let acked = acked.lock().unwrap().clone();
        for grains in &services {
            for key in KEYS {
                let stream = grains.get::<Stream>(key).unwrap();
                let mut state = None;
                for _ in 0..10 {
                    if let Ok(Ok(s)) = stream.call(StreamMsg::Read).await {
                        state = Some(s);
                        break;
                    }
                    sim.run_for(Duration::from_secs(2)).await;
                }
                let state = state.unwrap_or_else(|| panic!("{key} does not answer after the heal"));
                let none = BTreeSet::new();
                if let Err(e) = check(&state, acked.get(key).unwrap_or(&none)) {
                    panic!("{key}: {e}");
                }
            }
        }
        let seen = seen.lock().unwrap().clone();
        let mut epochs: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
        for (key, epoch) in &seen {
            assert!(
                epochs.entry(key.clone()).or_default().insert(*epoch),
                "two activations of {key} at epoch {epoch}"
            );
        }
        let migrations: u64 = services.iter().map(|g| g.stats().migrations).sum();
        let total: usize = acked.values().map(|s| s.len()).sum();
        assert!(total > 0);
        eprintln!(
            "seed {seed}: {} activations, {migrations} migrations, {total} acknowledged pushes",
            seen.len()
        );
        sim.shutdown().await;
    });
}
