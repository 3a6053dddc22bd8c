//! Rebalancing on real nodes: activations crowded onto one node spread out until every
//! node is within the threshold, their state moving with them.

mod common;

use std::sync::Arc;
use std::time::Duration;

use atoll_core::NodeId;
use atoll_grain::{Grain, GrainCtx, GrainsConfig, Placement, PlacementView, Rebalance};
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

const THRESHOLD: usize = 2;

#[test]
fn rebalancing_evens_activations_within_the_threshold_and_keeps_their_state() {
    let _serial = serial();
    init_logs();
    let setup = start_cluster(|_, _| GrainsConfig {
        idle_timeout: None,
        call_timeout: Duration::from_secs(20),
        placement: Arc::new(Crowd),
        rebalance: Some(Rebalance {
            interval: Duration::from_millis(300),
            threshold: THRESHOLD,
        }),
        ..GrainsConfig::default()
    });
    for h in &setup.hosts {
        h.grains.register(|_| Cell).unwrap();
    }
    let hosts = &setup.hosts;
    const GRAINS: u64 = 15;
    for k in 0..GRAINS {
        let n = hosts[(k % 3) as usize]
            .run(move |g| async move { g.get::<Cell>(&format!("c{k}"))?.call(k + 1).await })
            .unwrap();
        assert_eq!(n, k + 1);
    }
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
            let n = h
                .run(move |g| async move { g.get::<Cell>(&format!("c{k}"))?.call(0).await })
                .unwrap();
            assert_eq!(n, k + 1, "c{k} kept its state through the moves");
        }
    }
    // Still within the threshold: rebalancing settled rather than oscillating.
    std::thread::sleep(Duration::from_secs(1));
    let s = spread();
    assert!(
        s.iter().max().unwrap() - s.iter().min().unwrap() <= THRESHOLD,
        "{s:?}"
    );
    assert_eq!(s.iter().sum::<usize>(), GRAINS as usize);
}
