//! Durable grain state on real nodes (three Raft voters over QUIC on loopback): every
//! acknowledged `Replicated` save survives the loss of its host, and both durable classes
//! survive a full cluster restart, saved by the graceful shutdown.

mod common;

use std::time::Duration;

use atoll_grain::{Durability, Grain, GrainCtx, GrainId, GrainsConfig};
use common::*;
use serde::{Deserialize, Serialize};

/// A counter kept in replicated stores; `Add` saves and acknowledges.
struct Ledger;

#[derive(Debug, Serialize, Deserialize)]
enum LedgerMsg {
    Add(u64),
    /// Adds without saving (kept until deactivation).
    AddLater(u64),
    Get,
}

impl Grain for Ledger {
    const TYPE: &'static str = "ledger";
    const DURABILITY: Durability = Durability::Replicated;
    type State = u64;
    type Msg = LedgerMsg;
    /// The total, or why an add was not acknowledged.
    type Reply = Result<u64, String>;

    async fn handle(&mut self, msg: LedgerMsg, ctx: &mut GrainCtx<Self>) -> Self::Reply {
        match msg {
            LedgerMsg::Add(n) => {
                *ctx.state_mut() += n;
                ctx.save().await.map_err(|e| e.to_string())?;
            }
            LedgerMsg::AddLater(n) => *ctx.state_mut() += n,
            LedgerMsg::Get => {}
        }
        Ok(*ctx.state())
    }
}

/// The same on the host's disk only.
struct Local;

impl Grain for Local {
    const TYPE: &'static str = "local";
    const DURABILITY: Durability = Durability::LocalExclusive;
    type State = u64;
    type Msg = u64;
    type Reply = u64;

    async fn handle(&mut self, n: u64, ctx: &mut GrainCtx<Self>) -> u64 {
        *ctx.state_mut() += n;
        *ctx.state()
    }
}

/// Memory only.
struct Scratch;

impl Grain for Scratch {
    const TYPE: &'static str = "scratch";
    type State = u64;
    type Msg = u64;
    type Reply = u64;

    async fn handle(&mut self, n: u64, ctx: &mut GrainCtx<Self>) -> u64 {
        *ctx.state_mut() += n;
        *ctx.state()
    }
}

fn config(replicas: usize) -> impl Fn(usize, &std::path::Path) -> GrainsConfig {
    move |_, dir| {
        let mut config = GrainsConfig::default().with_store(open_store(&dir.join("grains.redb")));
        config.idle_timeout = None;
        config.call_timeout = Duration::from_secs(20);
        config.replicas = replicas;
        config
    }
}

fn register(setup: &Setup) {
    for h in &setup.hosts {
        h.grains.register(|_| Ledger).unwrap();
        h.grains.register(|_| Local).unwrap();
        h.grains.register(|_| Scratch).unwrap();
    }
}

#[test]
fn every_acknowledged_replicated_save_survives_the_loss_of_its_host() {
    let _serial = serial();
    init_logs();
    // One copy besides the host's, so that two survivors can still save.
    let mut setup = start_cluster(config(1));
    register(&setup);
    let id = GrainId::new("ledger", "acct");
    setup.hosts[0]
        .run(|g| async move { g.get::<Ledger>("acct")?.call(LedgerMsg::Get).await })
        .unwrap()
        .unwrap();
    let first = setup.hosts[0].grains.cached(&id).unwrap();
    let victim = setup
        .hosts
        .iter()
        .position(|h| h.id() == first.pid.node)
        .unwrap();
    let caller = (victim + 1) % 3;

    let mut last_acked = 0;
    for _ in 0..25 {
        let r = setup.hosts[caller]
            .run(|g| async move { g.get::<Ledger>("acct")?.call(LedgerMsg::Add(1)).await })
            .unwrap();
        last_acked = r.expect("a save with every node up is acknowledged");
    }
    assert_eq!(last_acked, 25);
    setup.hosts.remove(victim).kill();
    let survivors = &setup.hosts;
    wait_until("the survivors declare the host lost", || {
        survivors.iter().all(|h| {
            let swim = h.node().membership().unwrap();
            swim.members()
                .iter()
                .all(|m| m.identity.node != first.pid.node || !m.state.is_live())
        })
    });
    for h in survivors {
        let total = h
            .run(|g| async move { g.get::<Ledger>("acct")?.call(LedgerMsg::Get).await })
            .unwrap()
            .unwrap();
        assert_eq!(total, last_acked, "every acknowledged save is there");
    }
    let second = survivors[0].grains.cached(&id).unwrap();
    assert_ne!(second.pid.node, first.pid.node);
    assert!(second.epoch > first.epoch);
    // And it goes on, saved on the two survivors.
    let total = survivors[1]
        .run(|g| async move { g.get::<Ledger>("acct")?.call(LedgerMsg::Add(1)).await })
        .unwrap()
        .unwrap();
    assert_eq!(total, 26);
}

#[test]
fn durable_state_survives_a_full_restart_and_volatile_state_does_not() {
    let _serial = serial();
    init_logs();
    let mut setup = start_cluster(config(2));
    register(&setup);
    let mut epochs = Vec::new();
    for (i, key) in ["a", "b", "c", "d"].into_iter().enumerate() {
        let h = &setup.hosts[i % 3];
        let ledger = h
            .run(move |g| async move {
                let l = g.get::<Ledger>(key)?;
                l.call(LedgerMsg::Add(10)).await?.unwrap();
                // Not saved by the grain: the graceful shutdown saves it.
                l.call(LedgerMsg::AddLater(i as u64)).await
            })
            .unwrap()
            .unwrap();
        assert_eq!(ledger, 10 + i as u64);
        let local = h
            .run(move |g| async move { g.get::<Local>(key)?.call(100 + i as u64).await })
            .unwrap();
        assert_eq!(local, 100 + i as u64);
        let scratch = h
            .run(move |g| async move { g.get::<Scratch>(key)?.call(7).await })
            .unwrap();
        assert_eq!(scratch, 7);
        epochs.push(h.grains.cached(&GrainId::new("ledger", key)).unwrap().epoch);
    }

    setup.restart_all(config(2));
    register(&setup);
    for (i, key) in ["a", "b", "c", "d"].into_iter().enumerate() {
        let h = &setup.hosts[(i + 1) % 3];
        let ledger = h
            .run(move |g| async move { g.get::<Ledger>(key)?.call(LedgerMsg::Get).await })
            .unwrap()
            .unwrap();
        assert_eq!(
            ledger,
            10 + i as u64,
            "{key}: saved on shutdown, replicated"
        );
        let local = h
            .run(move |g| async move { g.get::<Local>(key)?.call(0).await })
            .unwrap();
        assert_eq!(
            local,
            100 + i as u64,
            "{key}: saved on shutdown, on its disk"
        );
        let scratch = h
            .run(move |g| async move { g.get::<Scratch>(key)?.call(0).await })
            .unwrap();
        assert_eq!(scratch, 0, "{key}: Volatile state is gone");
        let epoch = h.grains.cached(&GrainId::new("ledger", key)).unwrap().epoch;
        assert!(epoch > epochs[i], "epochs keep growing across the restart");
    }
}

#[test]
fn a_node_shutting_down_saves_its_local_grains() {
    let _serial = serial();
    init_logs();
    let mut setup = start_cluster(config(2));
    register(&setup);
    for (i, key) in ["p", "q", "r"].into_iter().enumerate() {
        let n = setup.hosts[i]
            .run(move |g| async move { g.get::<Local>(key)?.call(5 + i as u64).await })
            .unwrap();
        assert_eq!(n, 5 + i as u64);
    }
    // Only the nodes' own shutdown: no Grains::shutdown, no save by the grain.
    setup.restart_all_with(false, config(2));
    register(&setup);
    for (i, key) in ["p", "q", "r"].into_iter().enumerate() {
        let n = setup.hosts[(i + 2) % 3]
            .run(move |g| async move { g.get::<Local>(key)?.call(0).await })
            .unwrap();
        assert_eq!(n, 5 + i as u64, "{key} saved by its node's shutdown");
    }
}
