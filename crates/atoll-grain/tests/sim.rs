//! Grains in the deterministic simulator: five nodes (three voters) under partitions, many
//! seeds. Every node shares one fenced store, standing for a resource the activations
//! write; what must hold is that activations never overlap in epoch order (no write of an
//! epoch after a newer epoch has used the store), that no two acknowledged increments saw
//! the same count, and that every grain answers from every node after the last heal.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atoll_core::NodeId;
use atoll_grain::{
    ActivationFailed, Durability, Grain, GrainCtx, GrainId, GrainStore, Grains, GrainsConfig,
    MemoryStore, StoreError,
};
use atoll_sim::cluster::{ClusterSpec, SimCluster, check_seeds};

/// What the store was asked, in order, and whether it agreed.
#[derive(Debug, Clone)]
struct StoreOp {
    id: GrainId,
    epoch: u64,
    accepted: bool,
}

/// A shared fenced store that logs every operation.
#[derive(Default)]
struct Recording {
    inner: MemoryStore,
    log: Mutex<Vec<StoreOp>>,
}

impl Recording {
    fn record<T>(
        &self,
        id: &GrainId,
        epoch: u64,
        r: Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.log.lock().unwrap().push(StoreOp {
            id: id.clone(),
            epoch,
            accepted: r.is_ok(),
        });
        r
    }
}

struct Shared(Arc<Recording>);

impl GrainStore for Shared {
    fn load(&self, id: &GrainId, epoch: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.0.record(id, epoch, self.0.inner.load(id, epoch))
    }
    fn save(&self, id: &GrainId, epoch: u64, state: &[u8]) -> Result<(), StoreError> {
        self.0
            .record(id, epoch, self.0.inner.save(id, epoch, state))
    }
    fn epoch(&self, id: &GrainId) -> Result<Option<u64>, StoreError> {
        self.0.inner.epoch(id)
    }
}

/// Activations seen: (grain key, epoch, node).
type Activations = Arc<Mutex<Vec<(String, u64, NodeId)>>>;

struct Cell {
    seen: Activations,
}

/// What an increment answers when its activation was fenced off mid-way.
const FENCED: u64 = u64::MAX;

impl Grain for Cell {
    const TYPE: &'static str = "cell";
    const DURABILITY: Durability = Durability::LocalExclusive;
    type State = u64;
    type Msg = ();
    type Reply = u64;

    async fn on_activate(&mut self, ctx: &mut GrainCtx<Self>) -> Result<(), ActivationFailed> {
        let entry = (ctx.key().to_string(), ctx.epoch(), ctx.pid().node);
        self.seen.lock().unwrap().push(entry);
        Ok(())
    }

    async fn handle(&mut self, _: (), ctx: &mut GrainCtx<Self>) -> u64 {
        *ctx.state_mut() += 1;
        match ctx.save().await {
            Ok(()) => *ctx.state(),
            Err(_) => FENCED,
        }
    }
}

const KEYS: [&str; 3] = ["a", "b", "c"];

#[test]
fn activations_never_overlap_in_epoch_order_under_partitions() {
    check_seeds(0..16, |seed| async move {
        let mut spec = ClusterSpec::new(5);
        spec.swim.probe_interval = Duration::from_millis(300);
        spec.swim.ping_timeout = Duration::from_millis(150);
        spec.swim.suspect_timeout = Duration::from_millis(1500);
        let mut sim = SimCluster::start(seed, spec).unwrap();
        assert!(
            sim.wait_until(Duration::from_secs(60), |s| s.converged())
                .await
        );
        assert!(
            sim.wait_until(Duration::from_secs(30), |_| true).await && sim.leader().await.is_some()
                || {
                    sim.run_for(Duration::from_secs(5)).await;
                    sim.leader().await.is_some()
                }
        );
        let store = Arc::new(Recording::default());
        let seen: Activations = Arc::default();
        let mut services: Vec<Grains> = Vec::new();
        for i in 0..sim.len() {
            let node = sim.node(i).unwrap();
            let config = GrainsConfig {
                store: Some(Arc::new(Shared(store.clone()))),
                idle_timeout: None,
                call_timeout: Duration::from_secs(5),
                ..GrainsConfig::default()
            };
            let grains = Grains::start(node, config);
            let seen = seen.clone();
            grains
                .register(move |_| Cell { seen: seen.clone() })
                .unwrap();
            services.push(grains);
        }
        assert!(
            sim.wait_until(Duration::from_secs(30), |s| {
                (0..s.len()).all(|i| s.node(i).unwrap().find_by_type("GrainRouter").len() == 5)
            })
            .await
        );

        // Callers on every node increment random cells while the network splits and heals.
        let acked: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut callers = Vec::new();
        for (i, grains) in services.iter().enumerate() {
            let grains = grains.clone();
            let acked = acked.clone();
            let stop = stop.clone();
            let mut rng = atoll_core::SplitMix64::new(seed ^ ((i as u64 + 1) * 0x9e37));
            callers.push(tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let key = KEYS[(rng.next_u64() % 3) as usize];
                    let cell = grains.get::<Cell>(key).unwrap();
                    if let Ok(n) = cell.call(()).await
                        && n != FENCED
                    {
                        acked.lock().unwrap().push((key.to_string(), n));
                    }
                    let pause = 50 + rng.next_u64() % 400;
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
            }));
        }
        for _ in 0..3 {
            let lonely = (sim.random() % 5) as usize;
            let rest: Vec<usize> = (0..5).filter(|&j| j != lonely).collect();
            sim.partition(&[lonely], &rest);
            if std::env::var("GRAIN_SIM_DEBUG").is_ok() {
                eprintln!("{:?} isolate {lonely}", sim.elapsed());
            }
            let split = 2 + sim.random() % 8;
            sim.run_for(Duration::from_secs(split)).await;
            sim.heal();
            sim.run_for(Duration::from_secs(3)).await;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for caller in callers {
            caller.await.unwrap();
        }
        sim.heal();

        // Every cell answers from every node once the cluster has settled.
        for grains in &services {
            for key in KEYS {
                let cell = grains.get::<Cell>(key).unwrap();
                let mut ok = false;
                for _ in 0..10 {
                    let r = cell.call(()).await;
                    if std::env::var("GRAIN_SIM_DEBUG").is_ok() {
                        eprintln!(
                            "{:?} {key}: {r:?} cached {:?} registered {:?}",
                            sim.elapsed(),
                            grains.cached(cell.id()),
                            grains.registered(cell.id())
                        );
                    }
                    if r.is_ok_and(|n| n != FENCED) {
                        ok = true;
                        break;
                    }
                    sim.run_for(Duration::from_secs(2)).await;
                }
                assert!(ok, "{key} does not answer after the heal");
            }
        }

        // Epochs are unique per grain.
        let seen = seen.lock().unwrap().clone();
        let mut epochs: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
        for (key, epoch, _) in &seen {
            assert!(
                epochs.entry(key.clone()).or_default().insert(*epoch),
                "two activations of {key} at epoch {epoch}"
            );
        }
        // Activations never overlap in epoch order: once an epoch has used the store, no
        // older one does.
        let log = store.log.lock().unwrap().clone();
        let mut newest: BTreeMap<GrainId, u64> = BTreeMap::new();
        for op in &log {
            let top = newest.entry(op.id.clone()).or_insert(0);
            if op.accepted {
                assert!(op.epoch >= *top, "{op:?} accepted after epoch {top}");
                *top = op.epoch;
            } else {
                assert!(op.epoch < *top, "{op:?} refused without a newer epoch");
            }
        }
        // No two acknowledged increments of a cell saw the same count.
        let acked = acked.lock().unwrap().clone();
        let mut counts: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
        for (key, n) in &acked {
            assert!(
                counts.entry(key.clone()).or_default().insert(*n),
                "two acknowledged increments of {key} saw {n}"
            );
        }
        assert!(!acked.is_empty());
        if std::env::var("GRAIN_SIM_DEBUG").is_ok() {
            for (key, epoch, node) in &seen {
                eprintln!("activation {key}@{epoch} on {:?}", sim.index_of(*node));
            }
        }
        let refused = log.iter().filter(|op| !op.accepted).count();
        eprintln!(
            "seed {seed}: {} activations, {} acknowledged increments, {refused} of {} store operations refused",
            seen.len(),
            acked.len(),
            log.len()
        );
        sim.shutdown().await;
    });
}
