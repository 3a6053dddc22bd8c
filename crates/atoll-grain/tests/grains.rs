//! Grains on real nodes: three Raft voters over QUIC on loopback, each on a runtime of its
//! own with a grain service.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use atoll_grain::{
    ActivationFailed, Durability, Grain, GrainCtx, GrainError, GrainId, GrainsConfig, RedbStore,
    StoreError,
};
use common::*;
use serde::{Deserialize, Serialize};

/// A counter whose activations are counted across the whole test cluster.
struct Counter {
    activations: Arc<AtomicU64>,
}

#[derive(Debug, Serialize, Deserialize)]
enum CounterMsg {
    Add(u64),
    Get,
    Save,
}

impl Grain for Counter {
    const TYPE: &'static str = "counter";
    const DURABILITY: Durability = Durability::LocalExclusive;
    type State = u64;
    type Msg = CounterMsg;
    type Reply = u64;

    async fn on_activate(&mut self, _ctx: &mut GrainCtx<Self>) -> Result<(), ActivationFailed> {
        self.activations.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn handle(&mut self, msg: CounterMsg, ctx: &mut GrainCtx<Self>) -> u64 {
        match msg {
            CounterMsg::Add(n) => *ctx.state_mut() += n,
            CounterMsg::Get => {}
            CounterMsg::Save => {
                ctx.save().await.expect("own epoch is current");
            }
        }
        *ctx.state()
    }
}

/// A grain type no node registers.
struct Stranger;

impl Grain for Stranger {
    const TYPE: &'static str = "stranger";
    type State = ();
    type Msg = ();
    type Reply = ();

    async fn handle(&mut self, _: (), _: &mut GrainCtx<Self>) {}
}

/// A grain type only nodes announcing "gpu" may host (none do here).
struct Picky;

impl Grain for Picky {
    const TYPE: &'static str = "picky";
    const REQUIRES: &'static [&'static str] = &["gpu"];
    type State = ();
    type Msg = ();
    type Reply = ();

    async fn handle(&mut self, _: (), _: &mut GrainCtx<Self>) {}
}

fn counters(setup: &Setup) -> Arc<AtomicU64> {
    let activations = Arc::new(AtomicU64::new(0));
    for host in &setup.hosts {
        let activations = activations.clone();
        host.grains
            .register(move |_key| Counter {
                activations: activations.clone(),
            })
            .unwrap();
        host.grains.register(|_key| Picky).unwrap();
    }
    activations
}

fn redb(idle: Option<Duration>) -> impl Fn(usize, &std::path::Path) -> GrainsConfig {
    move |_, dir| {
        let mut config =
            GrainsConfig::default().with_store(RedbStore::open(dir.join("grains.redb")).unwrap());
        config.idle_timeout = idle;
        config.call_timeout = Duration::from_secs(15);
        config
    }
}

#[test]
fn concurrent_first_calls_from_three_nodes_make_one_activation() {
    let _serial = serial();
    init_logs();
    let setup = start_cluster(redb(None));
    let activations = counters(&setup);
    let hosts = &setup.hosts;

    for round in 0..3 {
        let key = format!("hot-{round}");
        let tasks: Vec<_> = hosts
            .iter()
            .map(|h| {
                let key = key.clone();
                h.spawn(
                    move |g| async move { g.get::<Counter>(&key)?.call(CounterMsg::Add(1)).await },
                )
            })
            .collect();
        let mut replies: Vec<u64> = hosts
            .iter()
            .zip(tasks)
            .map(|(h, t)| h.join(t).expect("every first call succeeds"))
            .collect();
        replies.sort();
        assert_eq!(
            replies,
            [1, 2, 3],
            "each add seen once, one after the other"
        );
        assert_eq!(activations.load(Ordering::SeqCst), round + 1);
    }
    let per_node: u64 = hosts.iter().map(|h| h.grains.stats().activations).sum();
    assert_eq!(per_node, 3);
    let live: usize = hosts.iter().map(|h| h.grains.stats().active).sum();
    assert_eq!(live, 3);

    // Later calls go straight to the cached activation on every node.
    for h in hosts {
        let n = h
            .run(|g| async move { g.get::<Counter>("hot-0")?.call(CounterMsg::Get).await })
            .unwrap();
        assert_eq!(n, 3);
        assert!(h.grains.cached(&GrainId::new("counter", "hot-0")).is_some());
    }
    assert_eq!(activations.load(Ordering::SeqCst), 3);
}

#[test]
fn idle_deactivation_saves_and_a_later_call_restores_the_state_and_fences_the_old_epoch() {
    let _serial = serial();
    init_logs();
    let setup = start_cluster(redb(Some(Duration::from_millis(400))));
    let activations = counters(&setup);
    let hosts = &setup.hosts;
    let id = GrainId::new("counter", "idle");

    let n = hosts[0]
        .run(|g| async move { g.get::<Counter>("idle")?.call(CounterMsg::Add(41)).await })
        .unwrap();
    assert_eq!(n, 41);
    let first = hosts[0].grains.cached(&id).expect("the caller caches it");
    let host = hosts.iter().find(|h| h.id() == first.pid.node).unwrap();

    wait_until("the idle grain deactivates", || {
        host.grains.stats().deactivations == 1
    });
    assert_eq!(host.grains.stats().active, 0);
    let store = host.grains.store().unwrap();
    assert_eq!(store.epoch(&id).unwrap(), Some(first.epoch));

    // Reactivated by the next call, wherever placement puts it: the same node here, since
    // LocalExclusive state lives on its disk and the ring has not changed.
    let n = hosts[1]
        .run(|g| async move { g.get::<Counter>("idle")?.call(CounterMsg::Add(1)).await })
        .unwrap();
    assert_eq!(n, 42, "the state saved on deactivation is restored");
    assert_eq!(activations.load(Ordering::SeqCst), 2);
    let second = hosts[1].grains.cached(&id).unwrap();
    assert_eq!(second.pid.node, first.pid.node);
    assert!(second.epoch > first.epoch, "{second:?} after {first:?}");

    // The first activation's epoch can no longer write.
    assert_eq!(store.epoch(&id).unwrap(), Some(second.epoch));
    match store.save(&id, first.epoch, &postcard_u64(0)) {
        Err(StoreError::Stale(stale)) => {
            assert_eq!(stale.epoch, first.epoch);
            assert_eq!(stale.seen, second.epoch);
        }
        other => panic!("a stale write went through: {other:?}"),
    }
    wait_until("the grain deactivates again", || {
        host.grains.stats().deactivations == 2
    });
    let n = hosts[2]
        .run(|g| async move { g.get::<Counter>("idle")?.call(CounterMsg::Get).await })
        .unwrap();
    assert_eq!(n, 42, "the refused write changed nothing");
}

/// A caller on another node calls the activation's process directly once it knows it; when
/// that process has deactivated, the hosting node answers the direct call `Gone` (it was not
/// handled) and the caller goes through the router, which activates the grain again. A
/// direct call dropped silently instead would wait out the call timeout and fail with
/// `Timeout` (at most once: never resent).
#[test]
fn a_direct_call_to_an_activation_that_ended_is_answered_through_the_router() {
    let _serial = serial();
    init_logs();
    let setup = start_cluster(redb(Some(Duration::from_secs(1))));
    let activations = counters(&setup);
    let hosts = &setup.hosts;
    let id = GrainId::new("counter", "direct");
    hosts[0]
        .run(|g| async move { g.get::<Counter>("direct")?.call(CounterMsg::Add(5)).await })
        .unwrap();
    let host_node = hosts[0].grains.cached(&id).unwrap().pid.node;
    let host = hosts.iter().find(|h| h.id() == host_node).unwrap();
    let caller = hosts.iter().find(|h| h.id() != host_node).unwrap();
    // Learnt by the caller; then called again, straight to the process.
    for want in [6, 7] {
        let n = caller
            .run(|g| async move { g.get::<Counter>("direct")?.call(CounterMsg::Add(1)).await })
            .unwrap();
        assert_eq!(n, want);
    }
    let first = caller.grains.cached(&id).unwrap();
    assert_eq!(first.pid.node, host_node);

    wait_until("the idle grain deactivates", || {
        host.grains.stats().deactivations == 1
    });
    assert_eq!(
        caller.grains.cached(&id),
        Some(first),
        "the caller was not told"
    );
    let n = caller
        .run(|g| async move { g.get::<Counter>("direct")?.call(CounterMsg::Add(1)).await })
        .expect("answered, not timed out");
    assert_eq!(n, 8, "handled once, by the next activation");
    assert_eq!(activations.load(Ordering::SeqCst), 2);
    let second = caller.grains.cached(&id).unwrap();
    assert!(second.epoch > first.epoch, "{second:?} after {first:?}");
    assert_ne!(second.pid, first.pid);
}

fn postcard_u64(n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut n = n;
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

#[test]
fn a_killed_activation_is_replaced_and_stale_cache_entries_are_dropped() {
    let _serial = serial();
    init_logs();
    let setup = start_cluster(redb(None));
    let activations = counters(&setup);
    let hosts = &setup.hosts;
    let id = GrainId::new("counter", "victim");

    for h in hosts {
        h.run(|g| async move { g.get::<Counter>("victim")?.call(CounterMsg::Add(1)).await })
            .unwrap();
    }
    hosts[0]
        .run(|g| async move { g.get::<Counter>("victim")?.call(CounterMsg::Save).await })
        .unwrap();
    let first = hosts[0].grains.cached(&id).unwrap();
    assert!(hosts.iter().all(|h| h.grains.cached(&id) == Some(first)));
    let host = hosts.iter().find(|h| h.id() == first.pid.node).unwrap();
    host.kill_process(first.pid);

    // Every node still caches the dead activation; each call drops it and finds the new one.
    let n = hosts[1]
        .run(|g| async move { g.get::<Counter>("victim")?.call(CounterMsg::Add(1)).await })
        .unwrap();
    assert_eq!(n, 4, "the saved state (3) is restored");
    let second = hosts[1].grains.cached(&id).unwrap();
    assert!(second.epoch > first.epoch);
    for h in hosts {
        let n = h
            .run(|g| async move { g.get::<Counter>("victim")?.call(CounterMsg::Get).await })
            .unwrap();
        assert_eq!(n, 4);
        assert_eq!(h.grains.cached(&id), Some(second));
    }
    assert_eq!(activations.load(Ordering::SeqCst), 2);
}

#[test]
fn unknown_types_and_unmet_requirements_are_typed_errors() {
    let _serial = serial();
    init_logs();
    let setup = start_cluster(redb(None));
    counters(&setup);
    let h = &setup.hosts[1];
    let e = h
        .run(|g| async move { g.get::<Stranger>("x")?.call(()).await })
        .unwrap_err();
    assert_eq!(
        e,
        GrainError::UnknownType {
            grain_type: "stranger".into()
        }
    );
    let e = h
        .run(|g| async move { g.get::<Picky>("x")?.send(()).await })
        .unwrap_err();
    assert!(matches!(e, GrainError::NoEligibleNode { .. }), "{e}");
    let long = "k".repeat(atoll_grain::MAX_KEY_LEN + 1);
    assert!(matches!(
        h.grains.get::<Counter>(&long),
        Err(GrainError::KeyTooLong { .. })
    ));
}

/// A grain whose state lives in memory only.
struct Tally;

impl Grain for Tally {
    const TYPE: &'static str = "tally";
    type State = u64;
    type Msg = ();
    type Reply = u64;

    async fn handle(&mut self, _: (), ctx: &mut GrainCtx<Self>) -> u64 {
        *ctx.state_mut() += 1;
        *ctx.state()
    }
}

#[test]
fn a_grain_whose_node_is_lost_reactivates_on_a_survivor() {
    let _serial = serial();
    init_logs();
    let mut setup = start_cluster(redb(None));
    for h in &setup.hosts {
        h.grains.register(|_key| Tally).unwrap();
    }
    let id = GrainId::new("tally", "lost");
    for (i, h) in setup.hosts.iter().enumerate() {
        let n = h
            .run(|g| async move { g.get::<Tally>("lost")?.call(()).await })
            .unwrap();
        assert_eq!(n, i as u64 + 1);
    }
    let first = setup.hosts[0].grains.cached(&id).unwrap();
    let victim = setup
        .hosts
        .iter()
        .position(|h| h.id() == first.pid.node)
        .unwrap();
    setup.hosts.remove(victim).kill();
    let survivors = &setup.hosts;

    // Once the survivors have declared the node lost, its claim is released and the next
    // call activates the grain on a survivor (Volatile: its state starts again).
    wait_until("the survivors declare the node lost", || {
        survivors.iter().all(|h| {
            let swim = h.node().membership().unwrap();
            swim.members()
                .iter()
                .all(|m| m.identity.node != first.pid.node || !m.state.is_live())
        })
    });
    let n = survivors[0]
        .run(|g| async move { g.get::<Tally>("lost")?.call(()).await })
        .unwrap();
    assert_eq!(n, 1, "Volatile state is lost with its node");
    let second = survivors[0].grains.cached(&id).unwrap();
    assert_ne!(second.pid.node, first.pid.node);
    assert!(second.epoch > first.epoch);
    let n = survivors[1]
        .run(|g| async move { g.get::<Tally>("lost")?.call(()).await })
        .unwrap();
    assert_eq!(n, 2);
    assert_eq!(survivors[1].grains.cached(&id), Some(second));
}

/// A caller whose cached address of a grain went stale, first because the grain moved and
/// then because its new node was lost, still gets its calls answered: the old address's
/// node sends it on, and an unreachable one sends it back to the registry and placement.
#[test]
fn calls_through_a_stale_cached_address_are_answered() {
    let _serial = serial();
    init_logs();
    let mut setup = start_cluster(redb(None));
    for h in &setup.hosts {
        h.grains.register(|_key| Tally).unwrap();
    }
    let id = GrainId::new("tally", "wanderer");
    for h in &setup.hosts {
        h.run(|g| async move { g.get::<Tally>("wanderer")?.call(()).await })
            .unwrap();
    }
    let first = setup.hosts[0].grains.cached(&id).unwrap();
    let old = setup
        .hosts
        .iter()
        .position(|h| h.id() == first.pid.node)
        .unwrap();
    let (caller, new) = match old {
        0 => (1, 2),
        1 => (0, 2),
        _ => (0, 1),
    };
    let target = setup.hosts[new].id();

    // Moved by its old node: the caller is not told and still caches the old activation.
    let moved = setup.hosts[old]
        .run(|g| async move { g.get::<Tally>("wanderer")?.migrate(target).await })
        .unwrap();
    assert_eq!(moved.pid.node, target);
    assert_eq!(setup.hosts[caller].grains.cached(&id), Some(first));
    let n = setup.hosts[caller]
        .run(|g| async move { g.get::<Tally>("wanderer")?.call(()).await })
        .unwrap();
    assert_eq!(
        n, 4,
        "answered by the moved activation, its state moved with it"
    );
    assert_eq!(setup.hosts[caller].grains.cached(&id), Some(moved));

    // Its new node lost: the caller's cache points at a node that is gone.
    let lost = setup.hosts.remove(new);
    let lost_node = lost.id();
    lost.kill();
    let caller = if caller > new { caller - 1 } else { caller };
    let survivors = &setup.hosts;
    wait_until("the caller declares the node lost", || {
        let swim = survivors[caller].node().membership().unwrap();
        swim.members()
            .iter()
            .all(|m| m.identity.node != lost_node || !m.state.is_live())
    });
    assert_eq!(survivors[caller].grains.cached(&id), Some(moved));
    let n = survivors[caller]
        .run(|g| async move { g.get::<Tally>("wanderer")?.call(()).await })
        .unwrap();
    assert_eq!(
        n, 1,
        "reactivated on a survivor (Volatile: its state starts again)"
    );
    let third = survivors[caller].grains.cached(&id).unwrap();
    assert_ne!(third.pid.node, lost_node);
    assert!(third.epoch > moved.epoch);
}
