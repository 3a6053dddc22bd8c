//! Rebalancing on real nodes: activations crowded onto one node spread out until every
//! node is within the threshold, their state moving with them (`LocalExclusive` state to
//! the target's disk).

mod common;

use std::sync::Arc;
use std::time::Duration;

use atoll_core::NodeId;
use atoll_grain::{
    Durability, Grain, GrainCtx, GrainId, GrainsConfig, Placement, PlacementView, Rebalance,
};
use common::*;

/// Places every grain on the node with the smallest id: a skew for rebalancing to fix.
struct Crowd;

impl Placement for Crowd {
    fn place(&self, view: &PlacementView<'_>) -> Option<NodeId> {
        view.candidates().into_iter().min()
    }
}

struct Cell;

impl Grain for Cell {
    const TYPE: &'static str = "cell";
    type State = u64;
    type Msg = u64;
    type Reply = u64;

    async fn handle(&mut self, n: u64, ctx: &mut GrainCtx<Self>) -> u64 {
        *ctx.state_mut() += n;
        *ctx.state()
    }
}

/// The same on its host's disk.
struct Drawer;

impl Grain for Drawer {
    const TYPE: &'static str = "drawer";
    const DURABILITY: Durability = Durability::LocalExclusive;
    type State = u64;
    type Msg = u64;
    type Reply = u64;

    async fn handle(&mut self, n: u64, ctx: &mut GrainCtx<Self>) -> u64 {
        *ctx.state_mut() += n;
        *ctx.state()
    }
}

const THRESHOLD: usize = 2;

/// Grain `k`: odd ones keep their state on disk.
fn grain(k: u64) -> GrainId {
    let t = if k % 2 == 1 { "drawer" } else { "cell" };
    GrainId::new(t, format!("c{k}"))
}

/// Adds `n` to grain `k` from `h`.
fn add(h: &Host, k: u64, n: u64) -> u64 {
    h.run(move |g| async move {
        let key = format!("c{k}");
        if k % 2 == 1 {
            g.get::<Drawer>(&key)?.call(n).await
        } else {
            g.get::<Cell>(&key)?.call(n).await
        }
    })
    .unwrap()
}

#[test]
fn rebalancing_evens_activations_within_the_threshold_and_keeps_their_state() {
    let _serial = serial();
    init_logs();
    let setup = start_cluster(|_, dir| GrainsConfig {
        idle_timeout: None,
        call_timeout: Duration::from_secs(20),
        placement: Arc::new(Crowd),
        rebalance: Some(Rebalance {
            interval: Duration::from_millis(300),
            threshold: THRESHOLD,
        }),
        ..GrainsConfig::default().with_store(open_store(&dir.join("grains.redb")))
    });
    for h in &setup.hosts {
        h.grains.register(|_| Cell).unwrap();
        h.grains.register(|_| Drawer).unwrap();
    }
    let hosts = &setup.hosts;
    const GRAINS: u64 = 15;
    for k in 0..GRAINS {
        assert_eq!(add(&hosts[(k % 3) as usize], k, k + 1), k + 1);
    }
    // Where `Crowd` put them all.
    let crowded = hosts.iter().map(|h| h.id()).min().unwrap();
    let spread = || -> Vec<usize> { hosts.iter().map(|h| h.grains.stats().active).collect() };
    wait_until("activations spread within the threshold", || {
        let s = spread();
        s.iter().sum::<usize>() == GRAINS as usize
            && s.iter().max().unwrap() - s.iter().min().unwrap() <= THRESHOLD
    });
    let moved: u64 = hosts.iter().map(|h| h.grains.stats().migrations).sum();
    assert!(moved >= 8, "only {moved} migrations for a skew of 15 to 0");
    // Every grain answers with its state, from every node.
    for h in hosts {
        for k in 0..GRAINS {
            assert_eq!(add(h, k, 0), k + 1, "c{k} kept its state through the moves");
        }
    }
    let drawers_moved = (1..GRAINS)
        .step_by(2)
        .filter(|k| hosts[0].grains.cached(&grain(*k)).unwrap().pid.node != crowded)
        .count();
    assert!(drawers_moved > 0, "no LocalExclusive grain moved");
    // Still within the threshold: rebalancing settled rather than oscillating.
    std::thread::sleep(Duration::from_secs(1));
    let s = spread();
    assert!(
        s.iter().max().unwrap() - s.iter().min().unwrap() <= THRESHOLD,
        "{s:?}"
    );
    assert_eq!(s.iter().sum::<usize>(), GRAINS as usize);

    // Deactivated everywhere (saving where they are now), the drawers come back with their
    // state, read from the disks they moved to.
    for h in hosts {
        h.run(|g| async move { g.shutdown().await });
    }
    for k in (1..GRAINS).step_by(2) {
        assert_eq!(
            add(&hosts[2], k, 1),
            k + 2,
            "c{k} restored from its new host's disk"
        );
    }
}
