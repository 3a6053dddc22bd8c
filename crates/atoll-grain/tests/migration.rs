//! Migration on real nodes: three Raft voters over QUIC on loopback.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use atoll_grain::{
    Durability, Grain, GrainCtx, GrainError, GrainId, GrainsConfig, NodeGrainsExt, RedbStore,
    StoreError,
};
use common::*;
use serde::{Deserialize, Serialize};

/// A log of every message it took, in the order it took them, with the epoch of the
/// activation that took each: its state.
struct Journal;

#[derive(Debug, Serialize, Deserialize)]
enum JournalMsg {
    /// Sender and that sender's sequence number.
    Append(u32, u32),
    Read,
}

impl Grain for Journal {
    const TYPE: &'static str = "journal";
    type State = Vec<(u32, u32, u64)>;
    type Msg = JournalMsg;
    type Reply = Vec<(u32, u32, u64)>;

    async fn handle(&mut self, msg: JournalMsg, ctx: &mut GrainCtx<Self>) -> Self::Reply {
        match msg {
            JournalMsg::Append(sender, seq) => {
                let epoch = ctx.epoch();
                ctx.state_mut().push((sender, seq, epoch));
                Vec::new()
            }
            JournalMsg::Read => ctx.state().clone(),
        }
    }
}

/// A counter kept in replicated stores, saved on every add.
struct Ledger;

impl Grain for Ledger {
    const TYPE: &'static str = "ledger";
    const DURABILITY: Durability = Durability::Replicated;
    type State = u64;
    type Msg = u64;
    /// The new total, or why the add was not acknowledged.
    type Reply = Result<u64, String>;

    async fn handle(&mut self, n: u64, ctx: &mut GrainCtx<Self>) -> Result<u64, String> {
        *ctx.state_mut() += n;
        ctx.save().await.map_err(|e| e.to_string())?;
        Ok(*ctx.state())
    }
}

/// A counter on its host's disk, saved on deactivation and on a move.
struct Drawer;

impl Grain for Drawer {
    const TYPE: &'static str = "drawer";
    const DURABILITY: Durability = Durability::LocalExclusive;
    type State = u64;
    type Msg = ();
    type Reply = u64;

    async fn handle(&mut self, _: (), ctx: &mut GrainCtx<Self>) -> u64 {
        *ctx.state_mut() += 1;
        *ctx.state()
    }
}

fn config(replicas: usize) -> impl Fn(usize, &std::path::Path) -> GrainsConfig {
    move |_, dir| {
        let mut config =
            GrainsConfig::default().with_store(RedbStore::open(dir.join("grains.redb")).unwrap());
        config.idle_timeout = None;
        config.call_timeout = Duration::from_secs(20);
        config.replicas = replicas;
        config
    }
}

fn register(setup: &Setup) {
    for h in &setup.hosts {
        h.grains.register(|_| Journal).unwrap();
        h.grains.register(|_| Ledger).unwrap();
        h.grains.register(|_| Drawer).unwrap();
    }
}

/// Checks a journal against what each sender had acknowledged: every acknowledged message
/// present exactly once, each sender's in the order it sent them.
fn check_journal(journal: &[(u32, u32, u64)], acked: &BTreeMap<u32, u32>) -> Result<(), String> {
    let mut next: BTreeMap<u32, u32> = BTreeMap::new();
    for &(sender, seq, _) in journal {
        let expected = next.entry(sender).or_insert(0);
        if seq != *expected {
            return Err(format!(
                "sender {sender}: got {seq}, expected {expected} (lost, repeated or reordered)"
            ));
        }
        *expected += 1;
    }
    for (sender, count) in acked {
        let took = next.get(sender).copied().unwrap_or(0);
        if took != *count {
            return Err(format!(
                "sender {sender}: {count} acknowledged, {took} in the journal"
            ));
        }
    }
    Ok(())
}

#[test]
fn the_journal_checker_catches_lost_repeated_and_reordered_messages() {
    let acked: BTreeMap<u32, u32> = [(1, 3), (2, 1)].into();
    let j = |v: &[(u32, u32)]| v.iter().map(|&(s, n)| (s, n, 1)).collect::<Vec<_>>();
    assert!(check_journal(&j(&[(1, 0), (2, 0), (1, 1), (1, 2)]), &acked).is_ok());
    assert!(
        check_journal(&j(&[(1, 0), (2, 0), (1, 2)]), &acked).is_err(),
        "lost"
    );
    assert!(check_journal(&j(&[(1, 0), (2, 0), (1, 1), (1, 1), (1, 2)]), &acked).is_err());
    assert!(check_journal(&j(&[(1, 0), (2, 0), (1, 2), (1, 1)]), &acked).is_err());
    assert!(
        check_journal(&j(&[(1, 0), (1, 1), (1, 2)]), &acked).is_err(),
        "missing sender"
    );
}

#[test]
fn messages_from_several_senders_during_migrations_are_neither_lost_nor_reordered() {
    let _serial = serial();
    init_logs();
    let setup = start_cluster(config(2));
    register(&setup);
    let hosts = &setup.hosts;
    let id = GrainId::new("journal", "moving");

    hosts[0]
        .run(|g| async move { g.get::<Journal>("moving")?.call(JournalMsg::Read).await })
        .unwrap();
    // One sender per node, each awaiting every call before the next.
    const PER_SENDER: u32 = 150;
    let senders: Vec<_> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            h.spawn(move |g| async move {
                let journal = g.get::<Journal>("moving").unwrap();
                for seq in 0..PER_SENDER {
                    journal.call(JournalMsg::Append(i as u32, seq)).await?;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Ok::<u32, GrainError>(PER_SENDER)
            })
        })
        .collect();

    // Meanwhile the grain moves around the cluster.
    let mut moves = 0;
    let mut last_epoch = 0;
    for round in 0..6 {
        // The first node's registry may trail the log by a little: wait for it to show the
        // activation the last move made.
        let mut from = None;
        wait_until(
            "the first node's registry shows the journal's activation",
            || {
                from = hosts[0]
                    .grains
                    .registered(&id)
                    .filter(|a| a.epoch >= last_epoch);
                from.is_some()
            },
        );
        let from = from.expect("waited for");
        let target = hosts[(round + 1) % 3].id();
        let target = if target == from.pid.node {
            hosts[(round + 2) % 3].id()
        } else {
            target
        };
        let caller = &hosts[round % 3];
        let id2 = id.clone();
        let moved = caller
            .run(move |g| async move { g.migrate(&id2, target).await })
            .expect("the migration completes");
        assert_eq!(moved.pid.node, target);
        last_epoch = moved.epoch;
        assert!(moved.epoch > from.epoch, "{moved:?} after {from:?}");
        moves += 1;
        std::thread::sleep(Duration::from_millis(20));
    }

    let mut acked = BTreeMap::new();
    for (i, (h, t)) in hosts.iter().zip(senders).enumerate() {
        let n = h.join(t).expect("no call failed during the migrations");
        acked.insert(i as u32, n);
    }
    let journal = hosts[1]
        .run(|g| async move { g.get::<Journal>("moving")?.call(JournalMsg::Read).await })
        .unwrap();
    check_journal(&journal, &acked).unwrap();
    assert_eq!(journal.len(), 3 * PER_SENDER as usize);
    // The stream ran through the moves: messages were taken by most of the activations.
    let epochs: std::collections::BTreeSet<u64> = journal.iter().map(|e| e.2).collect();
    assert!(
        epochs.len() >= 4,
        "messages taken at {} epochs only",
        epochs.len()
    );
    let migrations: u64 = hosts.iter().map(|h| h.grains.stats().migrations).sum();
    let adoptions: u64 = hosts.iter().map(|h| h.grains.stats().adoptions).sum();
    assert_eq!(migrations, moves);
    assert_eq!(adoptions, moves);
    let live: usize = hosts.iter().map(|h| h.grains.stats().active).sum();
    assert_eq!(live, 1, "one activation, wherever it is");
}

#[test]
fn replicated_state_moves_and_the_old_epoch_is_refused_by_every_replica() {
    let _serial = serial();
    init_logs();
    let mut setup = start_cluster(config(2));
    register(&setup);
    let hosts = &setup.hosts;
    let id = GrainId::new("ledger", "acct");

    // Through the node itself, not the service handle.
    let total = hosts[0]
        .run(|_| {
            let node = hosts[0].node().clone();
            async move { node.grain::<Ledger>("acct").call(5).await }
        })
        .unwrap()
        .unwrap();
    assert_eq!(total, 5);
    let first = hosts[0].grains.cached(&id).unwrap();
    let target = hosts
        .iter()
        .map(|h| h.id())
        .find(|n| *n != first.pid.node)
        .unwrap();
    let id2 = id.clone();
    let second = hosts[2]
        .run(move |g| async move { g.migrate(&id2, target).await })
        .unwrap();
    assert_eq!(second.pid.node, target);
    let total = hosts[1]
        .run(|g| async move { g.get::<Ledger>("acct")?.call(1).await })
        .unwrap()
        .unwrap();
    assert_eq!(total, 6, "the state moved with the grain");

    // The host's store and both replicas have seen the new epoch: the old one is refused
    // by each of them.
    for h in hosts {
        let store = h.grains.store().unwrap();
        assert_eq!(store.epoch(&id).unwrap(), Some(second.epoch));
        match store.save(&id, first.epoch, b"stale") {
            Err(StoreError::Stale(s)) => assert_eq!(s.seen, second.epoch),
            other => panic!("a stale write went through on {:?}: {other:?}", h.id()),
        }
    }

    // Moving to where it is is refused; so is moving nothing.
    let id2 = id.clone();
    let again = hosts[0]
        .run(move |g| async move { g.migrate(&id2, target).await })
        .unwrap();
    assert_eq!(again, second, "already there: the current activation");
    let e = hosts[0]
        .run(move |g| async move { g.migrate(&GrainId::new("journal", "idle"), target).await })
        .unwrap_err();
    assert_eq!(e, GrainError::NotActive);
    // Asked on a node that hosts no grain types, moving an inactive grain is the same
    // `NotActive`, not `UnknownType`, and moving the active one still works.
    setup.add_member(config(2));
    let bare = setup.hosts.last().unwrap();
    let e = bare
        .run(move |g| async move { g.migrate(&GrainId::new("journal", "idle"), target).await })
        .unwrap_err();
    assert_eq!(e, GrainError::NotActive);
    let back = first.pid.node;
    let id2 = id.clone();
    let third = bare
        .run(move |g| async move { g.migrate(&id2, back).await })
        .unwrap();
    assert_eq!(third.pid.node, back);
    assert!(third.epoch > second.epoch);
}

#[test]
fn local_exclusive_state_moves_to_the_targets_disk() {
    let _serial = serial();
    init_logs();
    let setup = start_cluster(config(1));
    register(&setup);
    let hosts = &setup.hosts;
    let id = GrainId::new("drawer", "d");
    for _ in 0..3 {
        hosts[0]
            .run(|g| async move { g.get::<Drawer>("d")?.call(()).await })
            .unwrap();
    }
    let first = hosts[0].grains.cached(&id).unwrap();
    let old = hosts.iter().find(|h| h.id() == first.pid.node).unwrap();
    let there = hosts.iter().find(|h| h.id() != first.pid.node).unwrap();
    let to = there.id();
    let id2 = id.clone();
    let moved = hosts[1]
        .run(move |g| async move { g.migrate(&id2, to).await })
        .unwrap();
    assert_eq!(moved.pid.node, to);
    assert!(moved.epoch > first.epoch);
    let n = hosts[2]
        .run(|g| async move { g.get::<Drawer>("d")?.call(()).await })
        .unwrap();
    assert_eq!(n, 4, "the state moved with the grain");
    assert_eq!(there.grains.stats().adoptions, 1);
    // The target's disk holds it at the new epoch, and the old host's copy is fenced off.
    let target_store = there.grains.store().unwrap();
    assert_eq!(target_store.epoch(&id).unwrap(), Some(moved.epoch));
    match old.grains.store().unwrap().save(&id, first.epoch, b"stale") {
        Err(StoreError::Stale(s)) => assert_eq!(s.seen, moved.epoch),
        other => panic!("the old host took a stale write: {other:?}"),
    }

    // Deactivated on the target (saving there), the grain's next activation, wherever
    // placement puts it, restores the moved state, not the copy the move left behind.
    there.run(|g| async move { g.shutdown().await });
    assert_eq!(there.grains.stats().active, 0);
    let n = hosts[0]
        .run(|g| async move { g.get::<Drawer>("d")?.call(()).await })
        .unwrap();
    assert_eq!(n, 5, "the moved state, not the old host's copy of 3");
    let third = hosts[0].grains.cached(&id).unwrap();
    assert!(third.epoch > moved.epoch);
}
