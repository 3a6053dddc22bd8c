//! Consensus names and locks: the Raft voter a node may run, the transport Raft speaks over
//! the node's control requests, the registry view voters push to every member, and the
//! release rules (owner exit, node loss, a newer incarnation).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use atoll_actor::Actor;
use atoll_core::{NodeId, Pid, Scope};
use atoll_raft::network::{RaftRequest, RaftResponse, Refusal, decode, encode};
use atoll_raft::{
    Command, Consensus, ConsensusError, Disk, LockGrant, Node as RaftNode, Outcome, RaftId,
    RaftSettings, RaftStatus, RaftTransport, Registry, Role, TransportError, raft_id_of,
};
use atoll_swim::MemberState;
use atoll_wire::{Control, LockWait, RegistryView, Request, Response};
use serde::Serialize;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::Inner;
use super::status::RaftView;
use crate::config::ConsensusConfig;
use crate::error::{ClusterSendError, LockError, NameError};
use crate::peer::Peer;
use crate::protocol::release::{LostSince, Standing, orphans, releases};

/// The longest name (in bytes) accepted for a consensus name or lock.
pub const MAX_NAME_LEN: usize = 255;
/// How long after a failed connection attempt to a voter the next one may start.
const DIAL_BACKOFF: Duration = Duration::from_millis(300);
/// The longest a connection attempt to a voter may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(1);
/// The pause between two rounds of asking the voters when none could take a proposal.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// The sweep for names and locks of this node's exited processes runs this many release
/// intervals apart.
const ORPHAN_SWEEP_FACTOR: u32 = 4;
/// The longest a wait for a registry change sleeps before looking again anyway (a voter
/// that starts while someone waits changes where changes are announced).
const CHANGE_RECHECK: Duration = Duration::from_millis(100);
/// Backoff bounds for releases proposed after an owner exits.
const RELEASE_RETRY: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(2));

/// What a node knows about consensus: its voter (if it is one) and the registry view.
pub(super) struct Naming {
    config: ConsensusConfig,
    /// Where the voter's Raft store lives.
    disk: Disk,
    directory: Arc<Directory>,
    /// This node's Raft voter, once started; `None` on a non-voter.
    raft: Option<watch::Sender<RaftState>>,
    /// The newest registry pushed by a voter (what a non-voter resolves from).
    view: RwLock<(u64, Registry)>,
    /// The index of `view`, announced whenever it changes.
    view_changed: watch::Sender<u64>,
    /// The voter believed to lead, as a Raft id (0: unknown).
    leader: AtomicU64,
    /// Consensus names of local processes whose exit is watched.
    watched: Mutex<HashSet<(String, Pid)>>,
    /// The members this node saw declared lost: what a leader releases of each.
    lost: Mutex<HashMap<NodeId, LostSince>>,
}

#[derive(Clone)]
enum RaftState {
    Starting,
    Ready(Consensus<NodeTransport>),
    Failed(String),
}

/// The voters: where each Raft id is reached, and the connection attempts under way.
#[derive(Debug)]
struct Directory {
    voters: BTreeMap<RaftId, (NodeId, SocketAddr)>,
    dials: Mutex<HashMap<RaftId, DialState>>,
}

#[derive(Debug, Default)]
struct DialState {
    in_flight: bool,
    failed_at: Option<Instant>,
}

impl Naming {
    /// The naming state of a node; nothing starts yet.
    pub(super) fn new(config: ConsensusConfig, me: NodeId, disk: Disk) -> Naming {
        // Checked by `NodeConfig::validate` before the node starts: no duplicates.
        let voters: BTreeMap<RaftId, (NodeId, SocketAddr)> = config
            .voters
            .iter()
            .map(|(node, addr)| (raft_id_of(node), (*node, *addr)))
            .collect();
        let is_voter = voters.contains_key(&raft_id_of(&me));
        Naming {
            config,
            disk,
            directory: Arc::new(Directory {
                voters,
                dials: Mutex::default(),
            }),
            raft: is_voter.then(|| watch::channel(RaftState::Starting).0),
            view: RwLock::new((0, Registry::new())),
            view_changed: watch::channel(0).0,
            leader: AtomicU64::new(0),
            watched: Mutex::default(),
            lost: Mutex::default(),
        }
    }

    fn is_voter(&self) -> bool {
        self.raft.is_some()
    }

    /// This node's voter, if it is one and it runs.
    fn ready(&self) -> Option<Consensus<NodeTransport>> {
        match &*self.raft.as_ref()?.borrow() {
            RaftState::Ready(c) => Some(c.clone()),
            _ => None,
        }
    }

    /// This node's voter, waiting (within the request timeout) while it starts.
    async fn voter(&self) -> Result<Consensus<NodeTransport>, ConsensusError> {
        let Some(raft) = &self.raft else {
            return Err(ConsensusError::Config("not a voter".into()));
        };
        let mut rx = raft.subscribe();
        let wait = rx.wait_for(|s| !matches!(s, RaftState::Starting));
        match tokio::time::timeout(self.config.request_timeout, wait).await {
            Err(_) => Err(ConsensusError::NoLeader),
            Ok(Err(_)) => Err(ConsensusError::Stopped("the node is gone".into())),
            Ok(Ok(state)) => match &*state {
                RaftState::Ready(c) => Ok(c.clone()),
                RaftState::Failed(e) => Err(ConsensusError::Stopped(e.clone())),
                RaftState::Starting => Err(ConsensusError::NoLeader),
            },
        }
    }

    /// Reads the registry this node resolves from (its own replica on a running voter, the
    /// newest pushed view otherwise) and its log index (0: nothing applied), without copying
    /// it.
    fn read_indexed<R>(&self, f: impl FnOnce(u64, &Registry) -> R) -> R {
        if let Some(c) = self.ready() {
            return c.read_registry(|index, r| f(index.unwrap_or(0), r));
        }
        let view = self.view.read().unwrap_or_else(|e| e.into_inner());
        f(view.0, &view.1)
    }

    /// Like [`Self::read_indexed`], without the index.
    fn read<R>(&self, f: impl FnOnce(&Registry) -> R) -> R {
        self.read_indexed(|_, r| f(r))
    }

    pub(super) fn whereis(&self, name: &str) -> Option<Pid> {
        if let Some(c) = self.ready() {
            return c.whereis(name).map(|b| b.pid);
        }
        let view = self.view.read().unwrap_or_else(|e| e.into_inner());
        view.1.whereis(name).map(|b| b.pid)
    }

    pub(super) fn lock_grant(&self, name: &str) -> Option<LockGrant> {
        self.read(|r| r.locks().get(name).copied())
    }

    /// The index of the registry this node resolves from.
    pub(super) fn applied(&self) -> u64 {
        self.read_indexed(|index, _| index)
    }

    pub(super) async fn status(&self) -> Option<RaftStatus> {
        Some(self.ready()?.status().await)
    }

    /// Waits until `holds` is true of the registry this node resolves from, waking on each
    /// change of it; false if `deadline` passes first.
    async fn wait_for(&self, deadline: Instant, holds: impl Fn(u64, &Registry) -> bool) -> bool {
        loop {
            let mut changes = match self.ready() {
                Some(c) => c.watch_applied(),
                None => self.view_changed.subscribe(),
            };
            changes.borrow_and_update();
            if self.read_indexed(&holds) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            let until = deadline.min(now + CHANGE_RECHECK);
            if let Ok(Err(_)) = tokio::time::timeout_at(until, changes.changed()).await {
                // The voter stopped under us: no change will be announced; wait, not spin.
                tokio::time::sleep_until(until).await;
            }
        }
    }

    /// The names and locks of the registry this node resolves from.
    pub(super) fn snapshot(&self) -> Registry {
        self.read(Registry::clone)
    }

    /// The Raft core as this node sees it; node ids are shown through `node_name`.
    pub(super) async fn view(&self, node_name: &(dyn Fn(NodeId) -> String + Sync)) -> RaftView {
        let status = self.status().await;
        let leader = status
            .as_ref()
            .map_or_else(|| self.leader_hint(), |s| s.leader)
            .and_then(|id| self.directory.voters.get(&id))
            .map(|(node, _)| node_name(*node));
        let role = match (&status, self.is_voter()) {
            (Some(s), _) => match s.role {
                Role::Leader => "leader",
                Role::Follower => "follower",
                Role::Candidate => "candidate",
                Role::Learner => "learner",
                Role::Stopped => "stopped",
            },
            (None, true) => "stopped",
            (None, false) => "none",
        };
        RaftView {
            voter: self.is_voter(),
            role: role.into(),
            term: status.as_ref().map(|s| s.term),
            leader,
            last_applied: status.as_ref().and_then(|s| s.last_applied),
            commit_index: status.as_ref().and_then(|s| s.commit_index),
            registry_index: self.applied(),
            voters: self
                .directory
                .voters
                .values()
                .map(|(node, _)| node_name(*node))
                .collect(),
        }
    }

    fn leader_hint(&self) -> Option<RaftId> {
        if let Some(c) = self.ready() {
            return c.leader_hint();
        }
        match self.leader.load(Ordering::Relaxed) {
            0 => None,
            id => Some(id),
        }
    }
}

/// Starts what consensus needs on a node that has just bound its endpoint.
pub(super) fn start(inner: &Arc<Inner>) {
    let Some(naming) = &inner.naming else { return };
    let weak = Arc::downgrade(inner);
    tokio::spawn(release_orphans(
        weak.clone(),
        naming.config.release_interval * ORPHAN_SWEEP_FACTOR,
    ));
    let Some(raft) = &naming.raft else { return };
    let voters: Vec<(RaftId, RaftNode)> = naming
        .directory
        .voters
        .iter()
        .map(|(id, (node, addr))| (*id, RaftNode::new(*node, addr.to_string())))
        .collect();
    let config = &naming.config;
    let settings = RaftSettings {
        id: raft_id_of(&inner.id),
        voters,
        data_dir: config.data_dir.clone(),
        disk: naming.disk.clone(),
        heartbeat_interval: config.heartbeat_interval,
        election_timeout_min: config.election_timeout_min,
        election_timeout_max: config.election_timeout_max,
        request_timeout: config.request_timeout,
    };
    let transport = NodeTransport {
        inner: weak.clone(),
        directory: naming.directory.clone(),
    };
    let raft = raft.clone();
    let name = inner.name.clone();
    tokio::spawn(async move {
        match Consensus::start(settings, transport).await {
            Ok(c) => {
                info!(node = %name, raft_id = c.id(), "raft voter started");
                raft.send_replace(RaftState::Ready(c));
            }
            Err(e) => {
                warn!(node = %name, "raft voter did not start: {e}");
                raft.send_replace(RaftState::Failed(e.to_string()));
            }
        }
    });
    tokio::spawn(push_registry(weak.clone(), config.push_interval));
    tokio::spawn(release_lost(weak, config.release_interval));
}

/// Stops this node's voter, waiting until its store is closed.
pub(super) async fn shutdown(inner: &Inner) {
    let Some(naming) = &inner.naming else { return };
    if let Some(c) = naming.ready()
        && let Err(e) = c.shutdown().await
    {
        warn!(node = %inner.name, "raft voter did not shut down cleanly: {e}");
    }
    if let Some(raft) = &naming.raft {
        raft.send_replace(RaftState::Failed("the node shut down".into()));
    }
}

/// Serves a Raft request from a peer (off the control loop).
pub(super) async fn serve(inner: &Inner, body: Vec<u8>) -> Response {
    let naming = inner.naming.as_ref();
    let answer = match naming.and_then(|n| n.ready()) {
        Some(c) => c.handle(&body).await,
        None => {
            let why = match naming {
                Some(n) if n.is_voter() => "the raft voter is not running",
                _ => "not a raft voter",
            };
            encode(&RaftResponse::Malformed(why.into()))
        }
    };
    Response::Raft(answer)
}

/// Answers a Strong registration's question: the index this node resolves from once its
/// registry binds `name` to `pid`, `None` if it does not within `wait_ms` (capped at this
/// node's consensus request timeout).
pub(super) async fn serve_await_name(
    inner: &Inner,
    name: &str,
    pid: Pid,
    wait_ms: u64,
) -> Response {
    let Some(naming) = &inner.naming else {
        return Response::NameApplied(None);
    };
    let wait = Duration::from_millis(wait_ms).min(naming.config.request_timeout);
    Response::NameApplied(await_applied(naming, name, pid, Instant::now() + wait).await)
}

/// Where `holder`, queued behind the grant with token `after`, stands in `registry` (at log
/// `index`): handed the lock by a later grant, the lock free (once the registry has caught
/// up with the grant it queued behind), or still waiting.
fn lock_wait(index: u64, registry: &Registry, name: &str, holder: Pid, after: u64) -> LockWait {
    match registry.locks().get(name) {
        Some(g) if g.holder == holder && g.token > after => LockWait::Granted(g.token),
        None if index >= after => LockWait::Free,
        _ => LockWait::Waiting,
    }
}

/// Answers [`Request::AwaitLock`] from this node's registry, within the request timeout.
pub(super) async fn serve_await_lock(
    inner: &Inner,
    name: &str,
    holder: Pid,
    after: u64,
    wait_ms: u64,
) -> Response {
    let Some(naming) = &inner.naming else {
        return Response::LockWait(LockWait::Waiting);
    };
    let wait = Duration::from_millis(wait_ms).min(naming.config.request_timeout);
    let deadline = Instant::now() + wait;
    Response::LockWait(lock_wait_here(naming, name, holder, after, deadline).await)
}

/// [`lock_wait`] on this node's registry, once it is no longer `Waiting` or at `deadline`.
async fn lock_wait_here(
    naming: &Naming,
    name: &str,
    holder: Pid,
    after: u64,
    deadline: Instant,
) -> LockWait {
    let stands = |index: u64, r: &Registry| lock_wait(index, r, name, holder, after);
    naming
        .wait_for(deadline, |i, r| stands(i, r) != LockWait::Waiting)
        .await;
    naming.read_indexed(stands)
}

/// Waits until `holder`, queued behind the grant `after`, is handed the lock or finds it
/// free, or `deadline` passes. A voter watches its own replica; any other node asks a voter
/// (the leader first), which answers as soon as its replica shows the hand-over, rather than
/// waiting for the next registry push.
async fn await_lock(
    inner: &Arc<Inner>,
    naming: &Naming,
    name: &str,
    holder: Pid,
    after: u64,
    deadline: Instant,
) -> LockWait {
    if naming.is_voter() {
        return lock_wait_here(naming, name, holder, after, deadline).await;
    }
    let stands = |index: u64, r: &Registry| lock_wait(index, r, name, holder, after);
    let transport = NodeTransport {
        inner: Arc::downgrade(inner),
        directory: naming.directory.clone(),
    };
    loop {
        let now = Instant::now();
        let seen = naming.read_indexed(stands);
        if seen != LockWait::Waiting || now >= deadline {
            return seen;
        }
        let wait = (deadline - now).min(naming.config.request_timeout);
        let voters = naming.leader_hint().into_iter().chain(
            naming
                .directory
                .voters
                .keys()
                .copied()
                .filter(|v| Some(*v) != naming.leader_hint()),
        );
        let mut answered = None;
        for voter in voters {
            let Ok(peer) = transport.peer(voter).await else {
                continue;
            };
            let body = Request::AwaitLock {
                name: name.to_string(),
                holder,
                after,
                wait_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            };
            // A little longer than the voter waits, so its "still waiting" arrives.
            if let Ok(Response::LockWait(w)) = inner.ask(&peer, body, wait + RETRY_PAUSE).await {
                answered = Some(w);
                break;
            }
        }
        match answered {
            Some(LockWait::Waiting) => {}
            Some(w) => return w,
            // No voter answered: watch the pushed view for a while, then ask again.
            None => {
                naming
                    .wait_for(deadline.min(Instant::now() + RETRY_PAUSE), |i, r| {
                        stands(i, r) != LockWait::Waiting
                    })
                    .await;
            }
        }
    }
}

/// Waits until this node's registry binds `name` to `pid` (then returns the registry index
/// it resolves from), or `deadline` passes.
async fn await_applied(naming: &Naming, name: &str, pid: Pid, deadline: Instant) -> Option<u64> {
    let bound = naming
        .wait_for(deadline, |_, r| {
            r.whereis(name).is_some_and(|b| b.pid == pid)
        })
        .await;
    bound.then(|| naming.applied())
}

/// The members a Strong binding must reach: every `Active` member but this node (with
/// membership), or every connected peer (without).
fn strong_audience(inner: &Inner) -> Vec<NodeId> {
    match inner.swim.get() {
        Some(swim) => swim
            .members()
            .into_iter()
            .filter(|m| m.state == MemberState::Active && m.identity.node != inner.id)
            .map(|m| m.identity.node)
            .collect(),
        None => inner
            .peers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect(),
    }
}

/// Asks `node` whether it applied the binding of `name` to `pid`, again and again until it
/// says it did (`true`) or `deadline` passes (`false`).
async fn strong_ack(
    weak: Weak<Inner>,
    node: NodeId,
    name: String,
    pid: Pid,
    deadline: Instant,
) -> bool {
    loop {
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        let Some(inner) = weak.upgrade() else {
            return false;
        };
        let wait = deadline - now;
        let body = Request::AwaitName {
            name: name.clone(),
            pid,
            wait_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
        };
        let asked = tokio::time::timeout_at(deadline, async {
            let peer = match inner.peer(node) {
                Some(peer) => peer,
                None => {
                    let addr = inner.known_address(node)?;
                    let peer = super::connect::dial_within(&inner, addr, wait.min(DIAL_TIMEOUT))
                        .await
                        .ok()?;
                    (peer.id == node).then_some(peer)?
                }
            };
            // A little longer than the member waits, so its "not yet" arrives.
            inner.ask(&peer, body, wait + RETRY_PAUSE).await.ok()
        })
        .await;
        drop(inner);
        match asked {
            Ok(Some(Response::NameApplied(Some(_)))) => return true,
            Err(_) => return false,
            // Not yet, a lost connection or an answer that does not fit: ask again shortly.
            Ok(_) => tokio::time::sleep_until(deadline.min(Instant::now() + RETRY_PAUSE)).await,
        }
    }
}

/// Waits until this node and every member of [`strong_audience`] (as it is now) resolve
/// `name` to `pid`, within the consensus request timeout. Returns the members that did not.
async fn await_strong(inner: &Arc<Inner>, naming: &Naming, name: &str, pid: Pid) -> Vec<NodeId> {
    let deadline = Instant::now() + naming.config.request_timeout;
    let audience = strong_audience(inner);
    let mut asks = tokio::task::JoinSet::new();
    for node in audience {
        let ask = strong_ack(Arc::downgrade(inner), node, name.to_string(), pid, deadline);
        asks.spawn(async move { (node, ask.await) });
    }
    let mut missing = Vec::new();
    if await_applied(naming, name, pid, deadline).await.is_none() {
        missing.push(inner.id);
    }
    while let Some(done) = asks.join_next().await {
        match done {
            Ok((_, true)) => {}
            Ok((node, false)) => missing.push(node),
            Err(e) => warn!(node = %inner.name, "a Strong acknowledgement task failed: {e}"),
        }
    }
    missing.sort();
    missing
}

/// Keeps a registry view pushed by a voter, if it is newer than the one held.
pub(super) fn learn_view(inner: &Inner, from: NodeId, view: RegistryView) {
    let Some(naming) = &inner.naming else { return };
    if !naming.directory.voters.contains_key(&raft_id_of(&from)) {
        warn!(node = %inner.name, peer = %from, "ignored a registry pushed by a node that is not a voter");
        return;
    }
    if let Some(leader) = view.leader
        && naming.directory.voters.contains_key(&leader)
    {
        naming.leader.store(leader, Ordering::Relaxed);
    }
    let mut held = naming.view.write().unwrap_or_else(|e| e.into_inner());
    if view.applied <= held.0 {
        return;
    }
    match Registry::from_bytes(&view.snapshot) {
        Ok(registry) => {
            *held = (view.applied, registry);
            drop(held);
            naming.view_changed.send_replace(view.applied);
        }
        Err(e) => {
            warn!(node = %inner.name, peer = %from, "ignored a registry that does not decode: {e}")
        }
    }
}

/// The registry view this node would push, if it is a running voter and the view fits a
/// frame.
fn own_view(inner: &Inner) -> Option<(u64, Control)> {
    let c = inner.naming.as_ref()?.ready()?;
    let (applied, snapshot) = c.read_registry(|applied, r| Some((applied?, r.to_bytes())))?;
    // Leave room for the envelope around it; the receiver refuses larger frames.
    if snapshot.len() + 64 > inner.max_frame_len {
        warn!(node = %inner.name, size = snapshot.len(), "the registry is too large to push");
        return None;
    }
    let control = Control::Registry(RegistryView {
        applied,
        leader: c.leader_hint(),
        snapshot,
    });
    Some((applied, control))
}

/// Sends the current registry to a newly connected peer.
pub(super) fn greet(inner: &Inner, peer: &Peer) {
    if let Some((_, view)) = own_view(inner) {
        let _ = peer.send_control(&view);
    }
}

/// On a voter: pushes the registry to every connected peer whenever it changed, at most
/// every `every`.
async fn push_registry(weak: Weak<Inner>, every: Duration) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pushed = None;
    loop {
        tick.tick().await;
        let Some(inner) = weak.upgrade() else { return };
        if inner.closing.load(Ordering::SeqCst) {
            return;
        }
        let Some((applied, view)) = own_view(&inner) else {
            continue;
        };
        if pushed != Some(applied) {
            inner.broadcast(&view);
            pushed = Some(applied);
        }
    }
}

/// On the leader: releases the names and locks of processes of nodes that membership
/// declared unreachable or gone, and of incarnations a newer one replaced.
async fn release_lost(weak: Weak<Inner>, every: Duration) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = weak.upgrade() else { return };
        if inner.closing.load(Ordering::SeqCst) {
            return;
        }
        let Some(c) = inner.naming.as_ref().and_then(|n| n.ready()) else {
            continue;
        };
        if c.leader_hint() != Some(c.id()) {
            continue;
        }
        // Decided from this node's view of the cluster, so only carried out while it leads:
        // a leader cut off from the others sees them all as lost.
        let Some(naming) = &inner.naming else { return };
        let commands = c.read_registry(|index, registry| {
            let mut lost = naming.lost.lock().unwrap_or_else(|e| e.into_inner());
            releases(
                index.unwrap_or(0),
                registry,
                &mut lost,
                Instant::now().into_std(),
                |node| standing(&inner, node),
            )
        });
        for command in commands {
            match c.propose_as_leader(command.clone()).await {
                Ok(Outcome::Released { names, locks }) => {
                    info!(node = %inner.name, ?command, ?names, ?locks, "released names and locks")
                }
                Ok(other) => debug!(node = %inner.name, ?command, ?other, "release proposed"),
                Err(e) => debug!(node = %inner.name, ?command, "release not applied: {e}"),
            }
        }
    }
}

/// Membership declared `node` unreachable or gone: remembers how far this node's registry
/// was, so that whichever voter leads releases only what the node held by then (a leader
/// elected later, its view not caught up with the node's return, must not release what
/// the node claimed since).
pub(super) fn note_lost(inner: &Inner, node: NodeId) {
    let Some(naming) = &inner.naming else { return };
    let up_to_index = naming.applied();
    naming
        .lost
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(node)
        .or_insert(LostSince {
            up_to_index,
            at: Instant::now().into_std(),
        });
}

/// `node` joined again (a new generation, or back from a partition).
pub(super) fn note_back(inner: &Inner, node: NodeId) {
    if let Some(naming) = &inner.naming {
        naming
            .lost
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&node);
    }
}

/// What this node knows of `node`, for the release policy.
fn standing(inner: &Inner, node: NodeId) -> Standing {
    if node == inner.id {
        return Standing::Me(inner.rt.creation());
    }
    let member = inner.swim.get().and_then(|s| s.member(node));
    if member.is_some_and(|m| !m.state.is_live()) {
        return Standing::Lost;
    }
    Standing::Live(inner.peer(node).map(|p| p.creation))
}

/// Releases names and locks the registry gives to processes of this node that no longer
/// run. Exits are watched for every registration and grant this node saw succeed; this
/// sweep catches the ones whose answer was lost (a request that timed out after it
/// committed, say when the leader died), which nothing else would ever release.
async fn release_orphans(weak: Weak<Inner>, every: Duration) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = weak.upgrade() else { return };
        if inner.closing.load(Ordering::SeqCst) {
            return;
        }
        let Some(naming) = &inner.naming else { return };
        let creation = inner.rt.creation();
        let orphans = naming.read(|r| orphans(inner.id, creation, r, |pid| inner.rt.is_alive(pid)));
        for command in orphans {
            match propose(&inner, command.clone()).await {
                Ok(outcome) => {
                    info!(node = %inner.name, ?command, ?outcome, "released what an exited process held")
                }
                Err(e) => {
                    debug!(node = %inner.name, ?command, "orphan release not applied yet: {e}")
                }
            }
        }
    }
}

/// Proposes `command`: to this node's voter, or, on a non-voter, to the voters (the known
/// leader first). Ends within the request timeout.
pub(super) async fn propose(
    inner: &Arc<Inner>,
    command: Command,
) -> Result<Outcome, ConsensusError> {
    let Some(naming) = &inner.naming else {
        return Err(ConsensusError::Config("consensus is not configured".into()));
    };
    if naming.is_voter() {
        return naming.voter().await?.propose(command).await;
    }
    let transport = NodeTransport {
        inner: Arc::downgrade(inner),
        directory: naming.directory.clone(),
    };
    let voters: Vec<RaftId> = naming.directory.voters.keys().copied().collect();
    let deadline = Instant::now() + naming.config.request_timeout;
    let mut target = naming
        .leader_hint()
        .filter(|l| voters.contains(l))
        .unwrap_or(voters[0]);
    let mut last_error = ConsensusError::NoLeader;
    let mut misses = 0usize;
    let body = encode(&RaftRequest::Propose(command));
    let next = |t: RaftId| {
        let i = voters.iter().position(|v| *v == t).map_or(0, |i| i + 1);
        voters[i % voters.len()]
    };
    loop {
        if Instant::now() >= deadline {
            return Err(last_error);
        }
        if misses > 0 && misses.is_multiple_of(voters.len()) {
            tokio::time::sleep_until(deadline.min(Instant::now() + RETRY_PAUSE)).await;
        }
        let answer = match tokio::time::timeout_at(deadline, transport.call(target, body.clone()))
            .await
        {
            Err(_) | Ok(Err(TransportError::Failed { .. })) => return Err(ConsensusError::Timeout),
            Ok(Err(TransportError::Unreachable(_))) => {
                last_error = ConsensusError::Unreachable { leader: target };
                target = next(target);
                misses += 1;
                continue;
            }
            Ok(Ok(body)) => decode::<RaftResponse>(&body),
        };
        match answer {
            Ok(RaftResponse::Propose(Ok(outcome))) => {
                naming.leader.store(target, Ordering::Relaxed);
                return Ok(outcome);
            }
            Ok(RaftResponse::Propose(Err(Refusal::Undecided))) => {
                return Err(ConsensusError::Timeout);
            }
            Ok(RaftResponse::Propose(Err(Refusal::NotLeader {
                leader: Some(leader),
            }))) if leader != target && voters.contains(&leader) => {
                naming.leader.store(leader, Ordering::Relaxed);
                last_error = ConsensusError::NoLeader;
                target = leader;
                misses += 1;
            }
            Ok(RaftResponse::Propose(Err(Refusal::NotLeader { .. } | Refusal::NoQuorum))) => {
                last_error = ConsensusError::NoLeader;
                target = next(target);
                misses += 1;
            }
            // A stopped voter, or one that does not run Raft: ask another.
            Ok(_) | Err(_) => {
                last_error = ConsensusError::Unreachable { leader: target };
                target = next(target);
                misses += 1;
            }
        }
    }
}

/// Proposes `command` until it is applied (any outcome) or the node closes, backing off
/// between attempts: for releases that must not be lost.
pub(super) async fn propose_until_applied(weak: Weak<Inner>, command: Command) {
    let (mut delay, max) = RELEASE_RETRY;
    loop {
        let Some(inner) = weak.upgrade() else { return };
        if inner.closing.load(Ordering::SeqCst) {
            return;
        }
        match propose(&inner, command.clone()).await {
            Ok(outcome) => {
                debug!(node = %inner.name, ?command, ?outcome, "release applied");
                return;
            }
            Err(e) => debug!(node = %inner.name, ?command, "release not applied yet: {e}"),
        }
        drop(inner);
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(max);
    }
}

/// Unregisters the consensus name `name` of the local `pid` when the process exits.
pub(super) fn watch_owner(inner: &Arc<Inner>, name: &str, pid: Pid) {
    let Some(naming) = &inner.naming else { return };
    let key = (name.to_string(), pid);
    if !naming
        .watched
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key.clone())
    {
        return;
    }
    let exited = inner.rt.wait_exit(pid);
    let weak = Arc::downgrade(inner);
    tokio::spawn(async move {
        exited.await;
        let command = Command::Unregister {
            name: key.0.clone(),
            pid,
        };
        propose_until_applied(weak.clone(), command).await;
        if let Some(inner) = weak.upgrade()
            && let Some(naming) = &inner.naming
        {
            naming
                .watched
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key);
        }
    });
}

/// Releases the lock `name` granted under `token` to the local `holder` when the holder
/// exits or the guard says so (`true`: the guard released it already).
pub(super) fn watch_lock(
    inner: &Arc<Inner>,
    name: &str,
    holder: Pid,
    token: u64,
) -> oneshot::Sender<bool> {
    let (tx, rx) = oneshot::channel::<bool>();
    let exited = inner.rt.wait_exit(holder);
    let weak = Arc::downgrade(inner);
    let name = name.to_string();
    tokio::spawn(async move {
        let released = tokio::select! {
            biased;
            _ = exited => false,
            r = rx => r.unwrap_or(false),
        };
        if !released {
            propose_until_applied(weak, Command::Unlock { name, token }).await;
        }
    });
    tx
}

/// Raft over the node's connections: a Raft id names a configured voter; its connection is
/// opened on demand.
#[derive(Clone)]
pub(super) struct NodeTransport {
    inner: Weak<Inner>,
    directory: Arc<Directory>,
}

impl std::fmt::Debug for NodeTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeTransport")
            .field("voters", &self.directory.voters)
            .finish_non_exhaustive()
    }
}

impl NodeTransport {
    /// The connection to voter `target`, opening one if there is none. While an attempt is
    /// under way, or shortly after one failed, the voter counts as unreachable.
    async fn peer(&self, target: RaftId) -> Result<Arc<Peer>, TransportError> {
        let unreachable = TransportError::Unreachable(target);
        let inner = self.inner.upgrade().ok_or(unreachable.clone())?;
        let &(node, addr) = self
            .directory
            .voters
            .get(&target)
            .ok_or(unreachable.clone())?;
        if node == inner.id || inner.closing.load(Ordering::SeqCst) {
            return Err(unreachable);
        }
        if let Some(peer) = inner.peer(node) {
            return Ok(peer);
        }
        {
            let mut dials = self
                .directory
                .dials
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let state = dials.entry(target).or_default();
            let backing_off = state.failed_at.is_some_and(|t| t.elapsed() < DIAL_BACKOFF);
            if state.in_flight || backing_off {
                return Err(unreachable);
            }
            state.in_flight = true;
        }
        // The attempt runs as its own task: a caller that gives up does not cancel it.
        let directory = self.directory.clone();
        let weak = self.inner.clone();
        let attempt = tokio::spawn(async move {
            let inner = weak.upgrade()?;
            let timeout = inner.connect_timeout.min(DIAL_TIMEOUT);
            let peer = match super::connect::dial_within(&inner, addr, timeout).await {
                Ok(peer) if peer.id == node => Some(peer),
                Ok(_) | Err(_) => None,
            };
            let mut dials = directory.dials.lock().unwrap_or_else(|e| e.into_inner());
            let state = dials.entry(target).or_default();
            state.in_flight = false;
            state.failed_at = if peer.is_some() {
                None
            } else {
                Some(Instant::now())
            };
            peer
        });
        drop(inner);
        match attempt.await {
            Ok(Some(peer)) => Ok(peer),
            _ => Err(unreachable),
        }
    }
}

impl RaftTransport for NodeTransport {
    async fn call(&self, target: RaftId, body: Vec<u8>) -> Result<Vec<u8>, TransportError> {
        let peer = self.peer(target).await?;
        let inner = self
            .inner
            .upgrade()
            .ok_or(TransportError::Unreachable(target))?;
        let failed = |reason: &str| TransportError::Failed {
            target,
            reason: reason.to_string(),
        };
        let timeout = inner
            .naming
            .as_ref()
            .map_or(inner.request_timeout, |n| n.config.request_timeout);
        match inner.ask(&peer, Request::Raft(body), timeout).await {
            Ok(Response::Raft(answer)) => Ok(answer),
            Ok(_) => Err(failed("unexpected response")),
            Err(super::rpc::AskError::NotSent) => Err(TransportError::Unreachable(target)),
            Err(super::rpc::AskError::Lost) => Err(failed("connection lost")),
            Err(super::rpc::AskError::TimedOut) => Err(failed("timed out")),
        }
    }
}

fn check_name(name: &str) -> Result<(), usize> {
    if name.len() > MAX_NAME_LEN {
        Err(name.len())
    } else {
        Ok(())
    }
}

/// The right to a consensus lock, held until dropped.
///
/// Dropping the guard releases the lock in the background; [`LockGuard::unlock`] releases it
/// and waits until the release is applied. The lock is also released when its holder
/// process exits or the holder's node is lost, so a holder must pass [`LockGuard::token`] to
/// whatever the lock protects and that resource must refuse tokens smaller than the largest
/// it has seen (a fencing token).
#[must_use = "the lock is released when the guard is dropped"]
pub struct LockGuard {
    inner: Weak<Inner>,
    name: String,
    holder: Pid,
    token: u64,
    release: Option<oneshot::Sender<bool>>,
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard")
            .field("name", &self.name)
            .field("holder", &self.holder)
            .field("token", &self.token)
            .finish()
    }
}

impl LockGuard {
    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process holding the lock.
    pub fn holder(&self) -> Pid {
        self.holder
    }

    /// The fencing token of this grant: larger than the token of every earlier grant of the
    /// same lock.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// Releases the lock and waits until the release is applied (or fails with a typed
    /// error; the lock is then still released in the background, as on drop).
    pub async fn unlock(mut self) -> Result<(), LockError> {
        let inner = self.inner.upgrade().ok_or(LockError::NoConsensus)?;
        let command = Command::Unlock {
            name: self.name.clone(),
            token: self.token,
        };
        propose(&inner, command).await?;
        if let Some(release) = self.release.take() {
            let _ = release.send(true);
        }
        Ok(())
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            let _ = release.send(false);
        }
    }
}

impl super::Node {
    pub(super) fn naming(&self) -> Option<&Naming> {
        self.inner.naming.as_ref()
    }

    /// Registers the local process `pid` under `name` in `scope`.
    ///
    /// - `Local`: this node's runtime registry.
    /// - `Eventual`: the gossiped global names ([`super::Node::register_global`]). Two
    ///   processes that claimed the name while their nodes were apart: the smaller pid keeps
    ///   it on every node once they meet; the other loses the binding without being stopped,
    ///   and gets a [`super::NameLost`] message if it asked with
    ///   [`super::Node::notify_name_lost`].
    /// - `Consistent`: the Raft registry, a linearizable singleton: the first registration
    ///   committed wins and every later one fails with [`NameError::Taken`] naming the
    ///   owner. The name is released when the process exits, and by the Raft leader when
    ///   membership declares the node unreachable or gone, or a newer incarnation of the
    ///   node joins. Fails within the consensus request timeout when no quorum answers.
    /// - `Strong`: a Consistent registration that returns only once every member that was
    ///   `Active` (in this node's membership view) when it committed, and this node, resolve
    ///   the name to `pid`: after `Ok`, [`super::Node::whereis`] on any of them finds it.
    ///   Members that have not applied it within the consensus request timeout are named
    ///   in [`NameError::StrongTimeout`]; the binding is then withdrawn again (unregistered)
    ///   before the error returns, or in the background if that fails too. Every Active
    ///   member must run consensus (a node without it never acknowledges).
    pub async fn register(&self, name: &str, pid: Pid, scope: Scope) -> Result<(), NameError> {
        let inner = &self.inner;
        if pid.node != inner.id || !inner.rt.is_alive(pid) {
            return Err(NameError::NotLocal(pid));
        }
        check_name(name).map_err(|len| NameError::TooLong {
            len,
            max: MAX_NAME_LEN,
        })?;
        match scope {
            Scope::Local => inner.rt.register(name, pid).map_err(|e| match e {
                atoll_actor::RegisterError::NameTaken { owner, .. } => NameError::Taken {
                    name: name.to_string(),
                    owner,
                },
                other => NameError::Local(other),
            }),
            Scope::Eventual => self.register_global(name, pid).map_err(|e| match e {
                crate::GlobalError::NameTaken { owner, .. } => NameError::Taken {
                    name: name.to_string(),
                    owner,
                },
                crate::GlobalError::NotLocal(pid) => NameError::NotLocal(pid),
            }),
            Scope::Consistent | Scope::Strong => {
                let Some(naming) = self.naming() else {
                    return Err(NameError::NoConsensus);
                };
                let command = Command::Register {
                    name: name.to_string(),
                    pid,
                    scope,
                };
                match propose(inner, command).await? {
                    Outcome::Registered => {
                        watch_owner(inner, name, pid);
                        if scope != Scope::Strong {
                            return Ok(());
                        }
                        let missing = await_strong(inner, naming, name, pid).await;
                        if missing.is_empty() {
                            return Ok(());
                        }
                        warn!(node = %inner.name, %name, %pid, ?missing, "a Strong registration was not acknowledged by every active member; withdrawing it");
                        let command = Command::Unregister {
                            name: name.to_string(),
                            pid,
                        };
                        if propose(inner, command.clone()).await.is_err() {
                            tokio::spawn(propose_until_applied(Arc::downgrade(inner), command));
                        }
                        Err(NameError::StrongTimeout {
                            name: name.to_string(),
                            missing,
                        })
                    }
                    Outcome::NameTaken { owner } => Err(NameError::Taken {
                        name: name.to_string(),
                        owner,
                    }),
                    other => Err(NameError::Unexpected(format!("{other:?}"))),
                }
            }
        }
    }

    /// Releases `name` if a local process holds it, in the scope [`Self::whereis`] resolves
    /// it from (Consistent, then Eventual, then Local). Returns the process that held it, or
    /// `None` if no local process holds it in that scope.
    pub async fn unregister(&self, name: &str) -> Result<Option<Pid>, NameError> {
        let inner = &self.inner;
        if let Some(pid) = self.naming().and_then(|n| n.whereis(name)) {
            if pid.node != inner.id {
                return Ok(None);
            }
            let command = Command::Unregister {
                name: name.to_string(),
                pid,
            };
            return match propose(inner, command).await? {
                Outcome::Unregistered => Ok(Some(pid)),
                _ => Ok(None),
            };
        }
        if self.whereis_global(name).is_some() {
            return Ok(self.unregister_global(name));
        }
        Ok(inner.rt.unregister(name))
    }

    /// The process holding `name`, resolved on this node without any network round trip:
    /// a Consistent name (from this node's Raft replica, or the registry the voters last
    /// pushed here) shadows an Eventual one, which shadows a Local one. Keeps answering in a
    /// partition, possibly with a stale binding.
    pub fn whereis(&self, name: &str) -> Option<Pid> {
        self.naming()
            .and_then(|n| n.whereis(name))
            .or_else(|| self.whereis_global(name))
            .or_else(|| self.inner.rt.whereis(name))
    }

    /// The Raft log index of the registry this node resolves Consistent names from (0 when
    /// it has none, or consensus is not configured).
    pub fn registry_index(&self) -> u64 {
        self.naming().map_or(0, Naming::applied)
    }

    /// The holder and fencing token of the consensus lock `name`, as this node's registry
    /// shows it (no network round trip).
    pub fn lock_holder(&self, name: &str) -> Option<(Pid, u64)> {
        let grant = self.naming()?.lock_grant(name)?;
        Some((grant.holder, grant.token))
    }

    /// This node's Raft state (`system.raft`), if it runs a voter.
    pub async fn raft_status(&self) -> Option<RaftStatus> {
        self.naming()?.status().await
    }

    /// Sends `msg` to the process [`Self::whereis`] resolves `name` to, wherever it runs.
    pub fn send_named<A: Actor>(
        &self,
        name: &str,
        msg: A::Msg,
    ) -> Result<(), ClusterSendError<A::Msg>>
    where
        A::Msg: Serialize,
    {
        self.send_resolved::<A>(name, self.whereis(name), msg)
    }

    /// Takes the consensus lock `name` for the local process `holder` if it is free now;
    /// [`LockError::Busy`] names the current holder otherwise. Taking a lock the process
    /// already holds returns another guard for the same grant (same token): releasing either
    /// releases the grant.
    pub async fn try_lock(&self, name: &str, holder: Pid) -> Result<LockGuard, LockError> {
        self.check_lock(name, holder)?;
        match self.propose_lock(name, holder).await? {
            Ok(guard) => Ok(guard),
            Err((holder, token)) => Err(LockError::Busy { holder, token }),
        }
    }

    /// Takes the consensus lock `name` for the local process `holder`, waiting up to
    /// `timeout` for it ([`LockError::Timeout`] then). A waiter is queued at the lock and
    /// handed it, in turn, by the entry that releases it. On timeout it leaves the queue (and
    /// releases the lock if it was handed it meanwhile). The attempt under way when the
    /// timeout passes is allowed to finish, so the call may overrun `timeout` by up to the
    /// consensus request timeout.
    pub async fn lock(
        &self,
        name: &str,
        holder: Pid,
        timeout: Duration,
    ) -> Result<LockGuard, LockError> {
        self.check_lock(name, holder)?;
        let inner = &self.inner;
        let deadline = Instant::now() + timeout;
        loop {
            let command = Command::LockOrWait {
                name: name.to_string(),
                holder,
            };
            let token = match propose(inner, command).await? {
                Outcome::LockGranted { token } => return Ok(self.guard(name, holder, token)),
                Outcome::LockQueued { token, .. } => token,
                other => return Err(LockError::Unexpected(format!("{other:?}"))),
            };
            let Some(naming) = self.naming() else {
                return Err(LockError::NoConsensus);
            };
            // Handed the lock by a grant after the one it queued behind (this node's view
            // may still show an earlier grant to the same process), or (rarely: the entry
            // that freed it could not grant it again) the lock free.
            match await_lock(inner, naming, name, holder, token, deadline).await {
                LockWait::Free => continue,
                LockWait::Granted(token) => return Ok(self.guard(name, holder, token)),
                LockWait::Waiting => {
                    // Out of the queue, and the lock released if it was handed over after
                    // all: whatever happened to the last request, this call has failed.
                    let command = Command::Abandon {
                        name: name.to_string(),
                        holder,
                    };
                    if propose(inner, command.clone()).await.is_err() {
                        tokio::spawn(propose_until_applied(Arc::downgrade(inner), command));
                    }
                    return Err(LockError::Timeout);
                }
            }
        }
    }

    fn guard(&self, name: &str, holder: Pid, token: u64) -> LockGuard {
        let inner = &self.inner;
        LockGuard {
            inner: Arc::downgrade(inner),
            name: name.to_string(),
            holder,
            token,
            release: Some(watch_lock(inner, name, holder, token)),
        }
    }

    fn check_lock(&self, name: &str, holder: Pid) -> Result<(), LockError> {
        if self.naming().is_none() {
            return Err(LockError::NoConsensus);
        }
        if holder.node != self.inner.id || !self.inner.rt.is_alive(holder) {
            return Err(LockError::NotLocal(holder));
        }
        check_name(name).map_err(|len| LockError::TooLong {
            len,
            max: MAX_NAME_LEN,
        })
    }

    /// One attempt: a guard, or the current (holder, token).
    async fn propose_lock(
        &self,
        name: &str,
        holder: Pid,
    ) -> Result<Result<LockGuard, (Pid, u64)>, LockError> {
        let inner = &self.inner;
        let command = Command::Lock {
            name: name.to_string(),
            holder,
        };
        match propose(inner, command).await? {
            Outcome::LockGranted { token } => Ok(Ok(self.guard(name, holder, token))),
            Outcome::LockBusy { holder, token } => Ok(Err((holder, token))),
            other => Err(LockError::Unexpected(format!("{other:?}"))),
        }
    }
}
