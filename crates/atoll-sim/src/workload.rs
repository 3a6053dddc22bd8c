//! A mixed workload under seeded faults, recorded as a [`History`] and checked.
//!
//! Lock workers on every node take one lock in turn and write to a [`FencedResource`]
//! under their token; a registrar registers Consistent names (and lets some owners exit);
//! a claimant takes Eventual names (conflicting claims meet after partitions heal); a
//! group worker joins and exits group members; a caller calls counting echo processes on
//! other nodes; a watcher links to and monitors processes on other machines. Meanwhile
//! the fault schedule partitions the cluster (majority/minority, either side holding the
//! voters' majority), blocks links one way, crashes and restarts machines, jumps wall
//! clocks forward and back (each starts skewed) and turns datagram loss on and off. At the
//! end it heals everything, lets the cluster settle, reads every node's view and runs the
//! checkers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use atoll_actor::{Actor, ActorResult, Ctx, Decoder, ReplyTo, serde_decoder};
use atoll_cluster::transport::{Faults, TraceEvent};
use atoll_cluster::{MemberEvent, NameLost, Node};
use atoll_core::{Pid, Scope, SplitMix64};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::cluster::{ClusterSpec, SimCluster, SimError};
use crate::history::{
    Disturbance, FencedResource, Fired, History, Hold, Registration, Sighting, Violation, Watch,
    WatchFired,
};

/// What to run.
#[derive(Debug, Clone)]
pub struct WorkloadSpec {
    /// Machines (the first three are voters).
    pub nodes: usize,
    /// How long the workload and the faults run, in simulated time.
    pub duration: Duration,
    /// Whether to inject faults.
    pub faults: bool,
    /// Whether to keep every traced event in the report (to find where two runs part).
    pub keep_trace_log: bool,
}

impl WorkloadSpec {
    /// `nodes` machines, 20 simulated seconds, with faults.
    pub fn new(nodes: usize) -> Self {
        WorkloadSpec {
            nodes,
            duration: Duration::from_secs(20),
            faults: true,
            keep_trace_log: false,
        }
    }
}

/// What a run did.
#[derive(Debug)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Simulated time the whole run took (start, workload, settling, checks).
    pub sim_time: Duration,
    /// Operations that completed.
    pub ops: u64,
    /// Faults injected.
    pub faults: u64,
    /// The network's trace hash at the end.
    pub trace_hash: u64,
    /// Every traced event, if the spec asked for them.
    pub trace_log: Vec<TraceEvent>,
    /// The record.
    pub history: History,
    /// What the checkers found.
    pub violations: Vec<Violation>,
}

/// Does nothing: a process to hold names, locks and group places.
#[derive(Debug)]
struct Idle;

impl Actor for Idle {
    type Msg = ();
    async fn handle(&mut self, _: (), _: &mut Ctx<Self>) -> ActorResult {
        Ok(())
    }
}

/// Holds Eventual names and notes when it is told it lost one.
struct Claimant(Arc<Mutex<BTreeSet<Pid>>>);

/// What a [`Claimant`] hears.
#[derive(Debug)]
enum ClaimantMsg {
    Lost,
}

impl From<NameLost> for ClaimantMsg {
    fn from(_: NameLost) -> Self {
        ClaimantMsg::Lost
    }
}

impl Actor for Claimant {
    type Msg = ClaimantMsg;
    async fn handle(&mut self, ClaimantMsg::Lost: ClaimantMsg, ctx: &mut Ctx<Self>) -> ActorResult {
        lock(&self.0).insert(ctx.pid());
        Ok(())
    }
}

/// Answers calls and counts how often it handled each.
struct Counter(Arc<Mutex<BTreeMap<u64, u32>>>);

/// What a [`Counter`] is called with.
#[derive(Debug, Serialize, Deserialize)]
enum CounterMsg {
    Call(u64, ReplyTo<u64>),
}

impl Actor for Counter {
    type Msg = CounterMsg;

    fn remote_decoder() -> Option<Decoder<CounterMsg>> {
        serde_decoder()
    }

    async fn handle(
        &mut self,
        CounterMsg::Call(id, reply): CounterMsg,
        _: &mut Ctx<Self>,
    ) -> ActorResult {
        *lock(&self.0).entry(id).or_default() += 1;
        let _ = reply.reply(id);
        Ok(())
    }
}

/// Links to and monitors a process on another machine, trapping exits, and notes how
/// each fired.
struct Watcher {
    id: u64,
    target: Pid,
    shared: Arc<Shared>,
}

impl Watcher {
    fn fired(&self, how: Fired, reason: atoll_core::ExitReason) {
        let at = self.shared.now();
        lock(&self.shared.history).watch_fired.push(WatchFired {
            id: self.id,
            how,
            reason,
            at,
        });
    }
}

impl Actor for Watcher {
    type Msg = ();

    async fn started(&mut self, ctx: &mut Ctx<Self>) -> ActorResult {
        ctx.trap_exit(true);
        ctx.link(self.target);
        ctx.monitor(self.target);
        Ok(())
    }

    async fn handle(&mut self, _: (), _: &mut Ctx<Self>) -> ActorResult {
        Ok(())
    }

    async fn handle_exit(
        &mut self,
        _: Pid,
        reason: atoll_core::ExitReason,
        _: &mut Ctx<Self>,
    ) -> ActorResult {
        self.fired(Fired::Exit, reason);
        Ok(())
    }

    async fn handle_down(&mut self, down: atoll_actor::Down, _: &mut Ctx<Self>) -> ActorResult {
        self.fired(Fired::Down, down.reason);
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the workers share.
struct Shared {
    nodes: Mutex<Vec<Option<Node>>>,
    history: Mutex<History>,
    resource: FencedResource,
    told: Arc<Mutex<BTreeSet<Pid>>>,
    calls: Arc<Mutex<BTreeMap<u64, u32>>>,
    /// Group members joined, by machine.
    joined: Mutex<Vec<(usize, Pid)>>,
    /// Counting echo processes, by machine.
    counters: Mutex<BTreeMap<usize, Pid>>,
    stop: AtomicBool,
    ops: AtomicU64,
    started: Instant,
}

impl Shared {
    fn now(&self) -> Duration {
        Instant::now().duration_since(self.started)
    }

    fn node(&self, i: usize) -> Option<Node> {
        lock(&self.nodes).get(i).cloned().flatten()
    }

    fn done(&self) {
        self.ops.fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs the workload on a fresh cluster from `seed`. Run inside
/// [`simulate`](crate::cluster::simulate).
pub async fn run(seed: u64, spec: WorkloadSpec) -> Result<Report, SimError> {
    let mut sim = SimCluster::start(seed, ClusterSpec::new(spec.nodes))?;
    if spec.keep_trace_log {
        sim.network().keep_trace_log();
    }
    let started = Instant::now();
    let mut rng = SplitMix64::new(sim.random());
    if spec.faults {
        // Every machine's wall clock is off by up to two seconds either way.
        for i in 0..sim.len() {
            sim.shift_clock(i, (rng.next_u64() % 4001) as i64 - 2000);
        }
    }
    sim.wait_until(Duration::from_secs(60), |s| s.converged())
        .await;
    let shared = Arc::new(Shared {
        nodes: Mutex::new((0..sim.len()).map(|i| sim.node(i).cloned()).collect()),
        history: Mutex::default(),
        resource: FencedResource::default(),
        told: Arc::default(),
        calls: Arc::default(),
        joined: Mutex::default(),
        counters: Mutex::default(),
        stop: AtomicBool::new(false),
        ops: AtomicU64::new(0),
        started,
    });
    for i in 0..sim.len() {
        boot_machine(&shared, i);
    }
    let mut workers = Vec::new();
    for i in 0..sim.len() {
        workers.push(tokio::spawn(lock_worker(shared.clone(), i, rng.next_u64())));
    }
    workers.push(tokio::spawn(registrar(
        shared.clone(),
        sim.len(),
        rng.next_u64(),
    )));
    workers.push(tokio::spawn(claimant(
        shared.clone(),
        sim.len(),
        rng.next_u64(),
    )));
    workers.push(tokio::spawn(grouper(
        shared.clone(),
        sim.len(),
        rng.next_u64(),
    )));
    workers.push(tokio::spawn(caller(
        shared.clone(),
        sim.len(),
        rng.next_u64(),
    )));
    workers.push(tokio::spawn(watcher(
        shared.clone(),
        sim.len(),
        rng.next_u64(),
    )));

    let faults = if spec.faults {
        inject_faults(&mut sim, &shared, &mut rng, spec.duration).await?
    } else {
        sim.run_for(spec.duration).await;
        0
    };
    shared.stop.store(true, Ordering::SeqCst);
    for w in workers {
        let _ = w.await;
    }
    // Everything heals; the cluster settles (membership, registry pushes, group and
    // Eventual-name syncs); then every node is asked what it sees.
    sim.heal();
    sim.network().set_faults(Faults::default());
    for i in 0..sim.len() {
        if sim.node(i).is_none() {
            sim.restart(i)?;
            lock(&shared.nodes)[i] = sim.node(i).cloned();
            boot_machine(&shared, i);
        }
    }
    sim.wait_until(Duration::from_secs(60), |s| s.converged())
        .await;
    sim.run_for(Duration::from_secs(15)).await;
    let mut history = collect(&sim, &shared);
    history.writes = shared.resource.log();
    let violations = history.check();
    let report = Report {
        seed,
        sim_time: Instant::now().duration_since(started),
        ops: shared.ops.load(Ordering::Relaxed),
        faults,
        trace_hash: sim.trace_hash(),
        trace_log: sim.network().trace_log(),
        history,
        violations,
    };
    sim.shutdown().await;
    Ok(report)
}

/// Sets up machine `i` (after a start or restart): its counting echo process and the
/// membership watcher.
fn boot_machine(shared: &Arc<Shared>, i: usize) {
    let Some(node) = shared.node(i) else { return };
    let counter = node.runtime().spawn(Counter(shared.calls.clone())).pid();
    lock(&shared.counters).insert(i, counter);
    if let (Some(mut events), Some(swim)) = (node.member_events(), node.membership()) {
        let shared = shared.clone();
        let mut mine = swim.identity().generation;
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                let now = shared.now();
                if let MemberEvent::Fenced { .. } = event {
                    // Declared down by the others: the machine dropped what it held
                    // (self-fencing), so its earlier names and holds may go, and its
                    // processes left the group (the node did that before this event).
                    lock(&shared.history).disturbances.push(Disturbance {
                        node: i,
                        from: now,
                        to: now,
                    });
                    if let Some(node) = shared.node(i) {
                        let members = node.local_group_members("the-group");
                        lock(&shared.joined).retain(|(m, pid)| *m != i || members.contains(pid));
                    }
                }
                mine = Sighting::observer_generation_after(mine, &event);
                let Some(sighting) = Sighting::from_event(i, mine, &event, now) else {
                    continue;
                };
                lock(&shared.history).sightings.push(sighting);
            }
        });
    }
}

async fn pause(rng: &mut SplitMix64, min_ms: u64, spread_ms: u64) {
    tokio::time::sleep(Duration::from_millis(
        min_ms + rng.next_u64() % spread_ms.max(1),
    ))
    .await;
}

async fn lock_worker(shared: Arc<Shared>, i: usize, seed: u64) {
    let mut rng = SplitMix64::new(seed);
    while !shared.stop.load(Ordering::SeqCst) {
        pause(&mut rng, 10, 100).await;
        let Some(node) = shared.node(i) else { continue };
        let holder = node.runtime().spawn(Idle).pid();
        match node.lock("the-lock", holder, Duration::from_secs(3)).await {
            Ok(guard) => {
                let granted = shared.now();
                let token = guard.token();
                shared.resource.write(token, holder);
                pause(&mut rng, 20, 80).await;
                shared.resource.write(token, holder);
                let released = shared.now();
                lock(&shared.history).holds.push(Hold {
                    lock: "the-lock".into(),
                    node: i,
                    holder,
                    token,
                    granted,
                    released,
                });
                let _ = guard.unlock().await;
                shared.done();
            }
            Err(_) => pause(&mut rng, 50, 100).await,
        }
        node.runtime().kill(holder);
    }
}

async fn registrar(shared: Arc<Shared>, machines: usize, seed: u64) {
    let mut rng = SplitMix64::new(seed);
    let mut k = 0u64;
    let mut mine: Vec<(usize, Pid)> = Vec::new();
    while !shared.stop.load(Ordering::SeqCst) {
        pause(&mut rng, 20, 100).await;
        let i = (rng.next_u64() % machines as u64) as usize;
        let Some(node) = shared.node(i) else { continue };
        let pid = node.runtime().spawn(Idle).pid();
        k += 1;
        let name = format!("name-{k}");
        if node.register(&name, pid, Scope::Consistent).await.is_ok() {
            lock(&shared.history).registrations.push(Registration {
                name,
                pid,
                node: i,
                at: shared.now(),
            });
            mine.push((i, pid));
            shared.done();
        }
        // Now and then an owner exits: its names go.
        if rng.next_u64().is_multiple_of(5) && !mine.is_empty() {
            let (j, pid) = mine.swap_remove((rng.next_u64() % mine.len() as u64) as usize);
            lock(&shared.history).released.insert(pid);
            if let Some(node) = shared.node(j) {
                node.runtime().kill(pid);
            }
        }
    }
}

async fn claimant(shared: Arc<Shared>, machines: usize, seed: u64) {
    let mut rng = SplitMix64::new(seed);
    while !shared.stop.load(Ordering::SeqCst) {
        pause(&mut rng, 100, 400).await;
        let i = (rng.next_u64() % machines as u64) as usize;
        let Some(node) = shared.node(i) else { continue };
        let name = format!("global-{}", rng.next_u64() % 6);
        if node.whereis_global(&name).is_some() {
            continue;
        }
        let pid = node.runtime().spawn(Claimant(shared.told.clone())).pid();
        if node.notify_name_lost::<Claimant>(pid).is_ok()
            && node.register_global(&name, pid).is_ok()
        {
            lock(&shared.history).eventual_claims.push((name, pid, i));
            shared.done();
        }
    }
}

async fn grouper(shared: Arc<Shared>, machines: usize, seed: u64) {
    let mut rng = SplitMix64::new(seed);
    while !shared.stop.load(Ordering::SeqCst) {
        pause(&mut rng, 50, 200).await;
        let i = (rng.next_u64() % machines as u64) as usize;
        let Some(node) = shared.node(i) else { continue };
        if rng.next_u64().is_multiple_of(3) {
            // A member exits: it leaves the group everywhere.
            let mut joined = lock(&shared.joined);
            if let Some(pos) = joined.iter().position(|(m, _)| *m == i) {
                let (_, pid) = joined.swap_remove(pos);
                drop(joined);
                node.runtime().kill(pid);
            }
            continue;
        }
        let pid = node.runtime().spawn(Idle).pid();
        if node.join_group("the-group", pid).is_ok() {
            lock(&shared.joined).push((i, pid));
            shared.done();
        }
    }
}

async fn caller(shared: Arc<Shared>, machines: usize, seed: u64) {
    let mut rng = SplitMix64::new(seed);
    let mut id = 0u64;
    while !shared.stop.load(Ordering::SeqCst) {
        pause(&mut rng, 10, 50).await;
        let from = (rng.next_u64() % machines as u64) as usize;
        let to = (rng.next_u64() % machines as u64) as usize;
        let (Some(node), Some(target)) =
            (shared.node(from), lock(&shared.counters).get(&to).copied())
        else {
            continue;
        };
        let Ok(counter) = node.actor_ref::<Counter>(target) else {
            continue;
        };
        id += 1;
        let call = id;
        let answer = counter
            .call(
                |reply| CounterMsg::Call(call, reply),
                Duration::from_secs(1),
            )
            .await;
        if let Ok(answer) = answer {
            lock(&shared.history).answers.push((call, answer));
            shared.done();
        }
    }
}

/// Now and then links and monitors a process on one machine from a process on another.
async fn watcher(shared: Arc<Shared>, machines: usize, seed: u64) {
    let mut rng = SplitMix64::new(seed);
    let mut id = 0u64;
    while !shared.stop.load(Ordering::SeqCst) {
        pause(&mut rng, 300, 700).await;
        let w = (rng.next_u64() % machines as u64) as usize;
        let t = (w + 1 + (rng.next_u64() % (machines as u64 - 1)) as usize) % machines;
        let (Some(watching), Some(watched)) = (shared.node(w), shared.node(t)) else {
            continue;
        };
        id += 1;
        let target = watched.runtime().spawn(Idle).pid();
        let watcher = watching
            .runtime()
            .spawn(Watcher {
                id,
                target,
                shared: shared.clone(),
            })
            .pid();
        lock(&shared.history).watches.push(Watch {
            id,
            watcher,
            watcher_machine: w,
            target,
            target_node: watched.id(),
            since: shared.now(),
        });
    }
}

/// The fault schedule: one fault at a time, each held for a few seconds, until `duration`
/// has passed. Returns how many faults it injected.
async fn inject_faults(
    sim: &mut SimCluster,
    shared: &Arc<Shared>,
    rng: &mut SplitMix64,
    duration: Duration,
) -> Result<u64, SimError> {
    let end = Instant::now() + duration;
    let n = sim.len();
    let voters = n.min(3);
    let mut count = 0;
    while Instant::now() < end {
        pause(rng, 500, 1500).await;
        let from = shared.now();
        let hold = Duration::from_millis(1000 + rng.next_u64() % 5000);
        let disturbed: Vec<usize> = match rng.next_u64() % 5 {
            0 => {
                // A partition: a random side against the rest.
                let mut side: Vec<usize> = (0..n)
                    .filter(|_| rng.next_u64().is_multiple_of(2))
                    .collect();
                if side.is_empty() || side.len() == n {
                    side = vec![(rng.next_u64() % n as u64) as usize];
                }
                let rest: Vec<usize> = (0..n).filter(|i| !side.contains(i)).collect();
                sim.partition(&side, &rest);
                // The side without the voters' majority is cut off.
                let voters_in_side = side.iter().filter(|&&i| i < voters).count();
                if voters_in_side * 2 > voters {
                    rest
                } else {
                    side
                }
            }
            1 => {
                let a = (rng.next_u64() % n as u64) as usize;
                let b = (a + 1 + (rng.next_u64() % (n as u64 - 1)) as usize) % n;
                sim.block_one_way(a, b);
                vec![a, b]
            }
            2 => {
                // A crash, keeping the voters' majority up.
                let i = (rng.next_u64() % n as u64) as usize;
                sim.crash(i).await;
                lock(&shared.nodes)[i] = None;
                vec![i]
            }
            3 => {
                // A wall clock jumps, forward or back, by up to a minute.
                let i = (rng.next_u64() % n as u64) as usize;
                let by = 1 + (rng.next_u64() % 60_000) as i64;
                sim.shift_clock(
                    i,
                    if rng.next_u64().is_multiple_of(2) {
                        by
                    } else {
                        -by
                    },
                );
                Vec::new()
            }
            _ => {
                sim.network().set_faults(Faults {
                    loss: 0.05,
                    duplicate: 0.02,
                    ..Faults::default()
                });
                Vec::new()
            }
        };
        count += 1;
        tokio::time::sleep(hold).await;
        sim.heal();
        sim.network().set_faults(Faults::default());
        for i in 0..n {
            if sim.node(i).is_none() {
                sim.restart(i)?;
                lock(&shared.nodes)[i] = sim.node(i).cloned();
                boot_machine(shared, i);
            }
        }
        // Until membership has seen the heal, what the cut-off side held may still go.
        let settled = shared.now() + Duration::from_secs(12);
        let mut history = lock(&shared.history);
        for node in disturbed {
            history.disturbances.push(Disturbance {
                node,
                from,
                to: settled,
            });
        }
    }
    Ok(count)
}

/// Reads every up node's view at the end.
fn collect(sim: &SimCluster, shared: &Shared) -> History {
    let mut history = std::mem::take(&mut *lock(&shared.history));
    history.told_lost = lock(&shared.told).clone();
    history.calls_handled = lock(&shared.calls).clone();
    let alive = |pid: Pid| {
        sim.index_of(pid.node)
            .and_then(|i| sim.node(i))
            .is_some_and(|n| n.creation() == pid.creation && n.runtime().is_alive(pid))
    };
    let tracked = history
        .registrations
        .iter()
        .map(|r| r.pid)
        .chain(history.eventual_claims.iter().map(|c| c.1))
        .chain(lock(&shared.joined).iter().map(|j| j.1))
        .chain(history.watches.iter().flat_map(|w| [w.watcher, w.target]))
        .collect::<Vec<_>>();
    history.alive = tracked.into_iter().filter(|p| alive(*p)).collect();
    history.expected_group = lock(&shared.joined)
        .iter()
        .map(|j| j.1)
        .filter(|p| alive(*p))
        .collect();
    let names: BTreeSet<String> = history
        .registrations
        .iter()
        .map(|r| r.name.clone())
        .collect();
    for i in sim.up() {
        let Some(node) = sim.node(i) else { continue };
        let view = names
            .iter()
            .filter_map(|n| node.whereis(n).map(|p| (n.clone(), p)))
            .collect();
        history.final_names.insert(i, view);
        history
            .final_eventual
            .insert(i, node.globals().into_iter().collect());
        history
            .final_groups
            .insert(i, node.group_members("the-group").into_iter().collect());
    }
    history
}
