//! Failover on real nodes (Raft voters over QUIC on loopback): calls made while a grain's
//! host is dead are answered by the next activation, with no error and no acknowledged
//! write lost; `Replicated` copies are found after the ring changed; and what a lost
//! host's `LocalExclusive` state does, as the documentation says.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use atoll_core::NodeId;
use atoll_grain::{Durability, Grain, GrainCtx, GrainId, GrainsConfig};
use common::*;
use serde::{Deserialize, Serialize};

/// A set of (writer, sequence) entries in replicated stores; `Insert` saves before it
/// answers, so an `Ok` is an acknowledged write.
struct Bag;

#[derive(Debug, Serialize, Deserialize)]
enum BagMsg {
    Insert(u32, u32),
    All,
}

impl Grain for Bag {
    const TYPE: &'static str = "bag";
    const DURABILITY: Durability = Durability::Replicated;
    // Inserting into a set twice is inserting once: a resend is harmless.
    const RESEND_IN_DOUBT: bool = true;
    type State = BTreeSet<(u32, u32)>;
    type Msg = BagMsg;
    /// How many entries it holds, or why an insert was not acknowledged.
    type Reply = Result<BTreeSet<(u32, u32)>, String>;

    async fn handle(&mut self, msg: BagMsg, ctx: &mut GrainCtx<Self>) -> Self::Reply {
        if let BagMsg::Insert(w, s) = msg {
            ctx.state_mut().insert((w, s));
            ctx.save().await.map_err(|e| e.to_string())?;
        }
        Ok(ctx.state().clone())
    }
}

/// A number on its host's disk: `Add` saves, `Get` does not.
struct Drawer;

#[derive(Debug, Serialize, Deserialize)]
enum DrawerMsg {
    Add(u64),
    Get,
}

impl Grain for Drawer {
    const TYPE: &'static str = "drawer";
    const DURABILITY: Durability = Durability::LocalExclusive;
    type State = u64;
    type Msg = DrawerMsg;
    type Reply = Result<u64, String>;

    async fn handle(&mut self, msg: DrawerMsg, ctx: &mut GrainCtx<Self>) -> Self::Reply {
        if let DrawerMsg::Add(n) = msg {
            *ctx.state_mut() += n;
            ctx.save().await.map_err(|e| e.to_string())?;
        }
        Ok(*ctx.state())
    }
}

fn config(_: usize, dir: &std::path::Path) -> GrainsConfig {
    let mut config = GrainsConfig::default().with_store(open_store(&dir.join("grains.redb")));
    config.idle_timeout = None;
    config.call_timeout = Duration::from_secs(25);
    // One copy besides the host's: two of three voters keep saving.
    config.replicas = 1;
    config
}

fn register(host: &Host) {
    host.grains.register(|_| Bag).unwrap();
    host.grains.register(|_| Drawer).unwrap();
}

fn host_of(setup: &Setup, id: &GrainId) -> NodeId {
    let caller = &setup.hosts[0];
    caller.grains.cached(id).expect("called before").pid.node
}

fn wait_lost(setup: &Setup, lost: NodeId) {
    wait_until("the survivors declare the host lost", || {
        setup.hosts.iter().all(|h| {
            let swim = h.node().membership().unwrap();
            swim.members()
                .iter()
                .all(|m| m.identity.node != lost || !m.state.is_live())
        })
    });
}

fn all(host: &Host, key: &'static str) -> BTreeSet<(u32, u32)> {
    host.run(move |g| async move { g.get::<Bag>(key)?.call(BagMsg::All).await })
        .unwrap()
        .unwrap()
}

#[test]
fn writers_see_no_error_while_the_host_dies_and_lose_no_acknowledged_write() {
    let _serial = serial();
    init_logs();
    let mut setup = start_cluster(config);
    setup.hosts.iter().for_each(register);
    let id = GrainId::new("bag", "b");
    assert!(all(&setup.hosts[0], "b").is_empty());
    let victim_node = host_of(&setup, &id);
    let victim = setup
        .hosts
        .iter()
        .position(|h| h.id() == victim_node)
        .unwrap();

    // Two writers on each survivor insert without pause, before, during and after the
    // host's death; each records what was acknowledged and any error.
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for (n, h) in setup.hosts.iter().enumerate().filter(|(n, _)| *n != victim) {
        for k in 0..2u32 {
            let w = n as u32 * 10 + k;
            let stop = stop.clone();
            writers.push((
                n,
                h.spawn(move |g| async move {
                    let bag = g.get::<Bag>("b").unwrap();
                    let (mut acked, mut errors) = (Vec::new(), Vec::new());
                    let mut seq = 0;
                    while !stop.load(Ordering::Relaxed) {
                        match bag.call(BagMsg::Insert(w, seq)).await {
                            Ok(Ok(_)) => acked.push((w, seq)),
                            Ok(Err(e)) => errors.push(format!("({w}, {seq}) not saved: {e}")),
                            Err(e) => errors.push(format!("({w}, {seq}): {e}")),
                        }
                        seq += 1;
                    }
                    (acked, errors)
                }),
            ));
        }
    }
    wait_until("writes acknowledged before the kill", || {
        all(&setup.hosts[(victim + 1) % 3], "b").len() >= 20
    });
    setup.hosts.remove(victim).kill();
    wait_lost(&setup, victim_node);
    // The grain answers from a survivor, and the writers go on there.
    let moved = all(&setup.hosts[0], "b").len();
    wait_until("writes acknowledged after the failover", || {
        all(&setup.hosts[0], "b").len() >= moved + 20
    });
    stop.store(true, Ordering::Relaxed);

    let mut acked = Vec::new();
    for (n, handle) in writers {
        // Positions shifted by the removal of the victim.
        let h = &setup.hosts[if n > victim { n - 1 } else { n }];
        let (a, errors) = h.join(handle);
        assert!(errors.is_empty(), "callers saw the failover: {errors:?}");
        acked.extend(a);
    }
    let now = all(&setup.hosts[1], "b");
    let missing: Vec<_> = acked.iter().filter(|e| !now.contains(e)).collect();
    assert!(missing.is_empty(), "acknowledged and lost: {missing:?}");
    let second = setup.hosts[0].grains.cached(&id).unwrap();
    assert_ne!(second.pid.node, victim_node);
}

#[test]
fn a_call_made_while_the_host_is_down_is_answered_after_reactivation() {
    let _serial = serial();
    init_logs();
    let mut setup = start_cluster(config);
    setup.hosts.iter().for_each(register);
    let id = GrainId::new("bag", "c");
    for s in 0..5 {
        setup.hosts[0]
            .run(move |g| async move { g.get::<Bag>("c")?.call(BagMsg::Insert(0, s)).await })
            .unwrap()
            .unwrap();
    }
    let first = setup.hosts[0].grains.cached(&id).unwrap();
    let victim = setup
        .hosts
        .iter()
        .position(|h| h.id() == first.pid.node)
        .unwrap();
    setup.hosts.remove(victim).kill();
    // Called at once, from both survivors (whose caches and registries still show the dead
    // activation): answered once the grain is active elsewhere.
    let calls: Vec<_> = setup
        .hosts
        .iter()
        .enumerate()
        .map(|(n, h)| {
            let w = 1 + n as u32;
            h.spawn(move |g| async move { g.get::<Bag>("c")?.call(BagMsg::Insert(w, 0)).await })
        })
        .collect();
    for (h, call) in setup.hosts.iter().zip(calls) {
        let got = h
            .join(call)
            .expect("no error while the host is down")
            .unwrap();
        assert!((0..5).all(|s| got.contains(&(0, s))), "{got:?}");
    }
    let now = all(&setup.hosts[0], "c");
    assert!(now.contains(&(1, 0)) && now.contains(&(2, 0)), "{now:?}");
    let second = setup.hosts[0].grains.cached(&id).unwrap();
    assert_ne!(second.pid.node, first.pid.node);
    assert!(second.epoch > first.epoch);
}

#[test]
fn replicated_writes_survive_a_join_then_the_hosts_loss() {
    let _serial = serial();
    init_logs();
    let mut setup = start_cluster(config);
    setup.hosts.iter().for_each(register);
    let id = GrainId::new("bag", "j");
    for s in 0..10 {
        setup.hosts[0]
            .run(move |g| async move { g.get::<Bag>("j")?.call(BagMsg::Insert(0, s)).await })
            .unwrap()
            .unwrap();
    }
    // A fourth node joins (a member, not a voter): the ring changes under the grain.
    setup.add_member(config);
    register(&setup.hosts[3]);
    for s in 0..10 {
        setup.hosts[3]
            .run(move |g| async move { g.get::<Bag>("j")?.call(BagMsg::Insert(3, s)).await })
            .unwrap()
            .unwrap();
    }
    let host = setup.hosts[3].grains.cached(&id).unwrap().pid.node;
    let victim = setup.hosts.iter().position(|h| h.id() == host).unwrap();
    setup.hosts.remove(victim).kill();
    wait_lost(&setup, host);
    for h in &setup.hosts {
        let got = all(h, "j");
        for w in [0, 3] {
            assert!((0..10).all(|s| got.contains(&(w, s))), "{got:?}");
        }
    }
    let now = setup.hosts[0].grains.cached(&id).unwrap();
    assert_ne!(now.pid.node, host);
}

/// Calls `Drawer` `key` from node `at`, failing the test on an error.
fn drawer(setup: &Setup, at: usize, key: &str, msg: DrawerMsg) -> u64 {
    let key = key.to_string();
    let what = format!("{msg:?} of {key} from node {at}");
    setup.hosts[at]
        .run(move |g| async move { g.get::<Drawer>(&key)?.call(msg).await })
        .unwrap_or_else(|e| panic!("{what}: {e}"))
        .unwrap()
}

#[test]
fn a_call_reaches_the_new_run_of_a_restarted_node_whose_old_router_it_knew() {
    let _serial = serial();
    init_logs();
    let mut setup = start_cluster(config);
    setup.hosts.iter().for_each(register);
    // A key that node 0 places on another node: node 0 learns that node's router.
    let me = setup.hosts[0].id();
    let key = (0..64)
        .map(|k| format!("r{k}"))
        .find(|key| {
            assert_eq!(drawer(&setup, 0, key, DrawerMsg::Add(1)), 1);
            host_of(&setup, &GrainId::new("drawer", key.as_str())) != me
        })
        .expect("a key placed on another node");
    let host = host_of(&setup, &GrainId::new("drawer", key.as_str()));
    let victim = setup.hosts.iter().position(|h| h.id() == host).unwrap();
    setup.hosts.remove(victim).kill();
    wait_lost(&setup, host);
    setup.restart(victim, config);
    register(&setup.hosts[victim]);
    // The claim went with the lost run; the ring owner is back, so the next activation is
    // placed on its new run (and restores its copy from the disk it kept). A router of the
    // earlier run would take the call and never answer.
    assert_eq!(drawer(&setup, 0, &key, DrawerMsg::Get), 1);
}

/// Two keys of `Drawer` whose ring owner is the same node, as node 0 places them.
fn two_keys_on_one_node(setup: &Setup) -> (String, String, NodeId) {
    let mut seen: std::collections::HashMap<NodeId, String> = Default::default();
    for k in 0..64 {
        let key = format!("d{k}");
        let key2 = key.clone();
        setup.hosts[0]
            .run(move |g| async move { g.get::<Drawer>(&key2)?.call(DrawerMsg::Get).await })
            .unwrap()
            .unwrap();
        let node = host_of(setup, &GrainId::new("drawer", key.as_str()));
        if let Some(first) = seen.insert(node, key.clone()) {
            return (first, key, node);
        }
    }
    panic!("no two keys on one node");
}

#[test]
fn a_lost_hosts_local_state_returns_with_its_node_unless_a_newer_save_superseded_it() {
    let _serial = serial();
    init_logs();
    let mut setup = start_cluster(config);
    setup.hosts.iter().for_each(register);
    let (a, b, host) = two_keys_on_one_node(&setup);
    let call = drawer;
    assert_eq!(call(&setup, 0, &a, DrawerMsg::Add(3)), 3);
    assert_eq!(call(&setup, 0, &b, DrawerMsg::Add(3)), 3);
    let victim = setup.hosts.iter().position(|h| h.id() == host).unwrap();
    setup.hosts.remove(victim).kill();
    wait_lost(&setup, host);

    // While the node is down, its copies are not seen: both grains start over elsewhere.
    assert_eq!(call(&setup, 0, &a, DrawerMsg::Get), 0);
    assert_eq!(
        call(&setup, 1, &b, DrawerMsg::Add(10)),
        10,
        "saved at a newer epoch"
    );

    // The node comes back; the interim activations deactivate.
    setup.restart(victim, config);
    register(&setup.hosts[victim]);
    for h in setup.hosts.iter().filter(|h| h.id() != host) {
        h.run(|g| async move { g.shutdown().await });
    }
    // `a` saved nothing in between: its copy on the returned node is restored. `b` saved
    // 10 in between: that newer copy wins, and the lost node's 3 is gone for good.
    let at = (victim + 1) % 3;
    assert_eq!(call(&setup, at, &a, DrawerMsg::Get), 3);
    assert_eq!(call(&setup, at, &b, DrawerMsg::Get), 10);
}
