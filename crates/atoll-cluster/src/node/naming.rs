//! Consensus names and locks: the Raft voter a node may run, the transport Raft speaks over
//! the node's control requests, the registry view voters push to every member, and the
//! release rules (owner exit, node loss, a newer incarnation).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use atoll_actor::Actor;
use atoll_core::{NodeId, Pid, Scope};
use atoll_raft::network::{RaftRequest, RaftResponse, decode, encode};
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

mod api;
mod index;
mod release;
mod view;
mod voters;
mod waits;

use super::status::RaftView;
use crate::config::ConsensusConfig;
use crate::error::{ClusterSendError, LockError, NameError};
use crate::peer::Peer;
use crate::protocol::release::{LostSince, Standing, orphans, releases};
pub use api::LockGuard;
pub use index::RegistryIndex;
pub(in crate::node) use release::*;
pub use view::RegistryFeedStats;
pub(in crate::node) use view::*;
pub(in crate::node) use voters::*;
pub(in crate::node) use waits::*;

/// The longest name (in bytes) accepted for a consensus name or lock.
pub const MAX_NAME_LEN: usize = 255;
/// How long after a failed connection attempt to a voter the next one may start.
const DIAL_BACKOFF: Duration = Duration::from_millis(300);
/// The longest a connection attempt to a voter may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(1);
/// The pause before asking again when a wait got no answer, and the margin a waiting
/// request's timeout adds to the wait it asks for.
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
    /// The registry copy voters keep up to date (what a non-voter resolves from).
    view: RwLock<atoll_raft::FollowedRegistry>,
    /// Registry pushes: what peers hold (on a voter) and counters.
    feed: Feed,
    /// The index of `view`, announced whenever it changes.
    view_changed: watch::Sender<u64>,
    /// The index of the registry this node resolves from, without a lock.
    index: RegistryIndex,
    /// The voter believed to lead, as a Raft id (0: unknown).
    leader: AtomicU64,
    /// Consensus names of local processes whose exit is watched, with the watching task
    /// (ended when the name is given up first).
    watched: Mutex<BTreeMap<(String, Pid), tokio::task::AbortHandle>>,
    /// The members this node saw declared lost: what a leader releases of each.
    lost: Mutex<BTreeMap<NodeId, LostSince>>,
    /// Whether each lock grant held through a [`LockGuard`] here was lost (this node was
    /// fenced), by lock name and token, while a guard may exist.
    guards: Mutex<BTreeMap<(String, u64), GuardWatch>>,
}

/// The holder of a grant held through guards, and whether the grant was lost.
struct GuardWatch {
    holder: Pid,
    lost: watch::Sender<bool>,
}

/// Consensus names held: (name, owner).
pub(super) type HeldNames = Vec<(String, Pid)>;
/// Consensus locks held: (lock, holder, token).
pub(super) type HeldLocks = Vec<(String, Pid, u64)>;

#[derive(Clone)]
pub(in crate::node) enum RaftState {
    Starting,
    Ready(Consensus<NodeTransport>),
    Failed(String),
}

/// The voters: where each Raft id is reached, and the connection attempts under way.
#[derive(Debug)]
pub(in crate::node) struct Directory {
    voters: BTreeMap<RaftId, (NodeId, SocketAddr)>,
    dials: Mutex<BTreeMap<RaftId, DialState>>,
}

#[derive(Debug, Default)]
pub(in crate::node) struct DialState {
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
            view: RwLock::default(),
            feed: Feed::default(),
            view_changed: watch::channel(0).0,
            index: RegistryIndex::default(),
            leader: AtomicU64::new(0),
            watched: Mutex::default(),
            lost: Mutex::default(),
            guards: Mutex::default(),
        }
    }

    /// The nodes that run the Raft voters.
    pub(super) fn voter_nodes(&self) -> std::collections::BTreeSet<NodeId> {
        self.directory
            .voters
            .values()
            .map(|(node, _)| *node)
            .collect()
    }

    /// The consensus names and locks processes of node `me` hold as far as this node
    /// knows: what its registry gives them, and what they took through this node and have
    /// not given up (a registry view pushed after a partition may already lack them):
    /// (name, owner) and (lock, holder, token).
    pub(super) fn held_by(&self, me: NodeId) -> (HeldNames, HeldLocks) {
        let (mut names, mut locks): (HeldNames, HeldLocks) = self.read(|r| {
            let names = r
                .names()
                .iter()
                .filter(|(_, b)| b.pid.node == me)
                .map(|(name, b)| (name.clone(), b.pid))
                .collect();
            let locks = r
                .locks()
                .iter()
                .filter(|(_, g)| g.holder.node == me)
                .map(|(name, g)| (name.clone(), g.holder, g.token))
                .collect();
            (names, locks)
        });
        names.extend(
            self.watched
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .keys()
                .cloned(),
        );
        locks.extend(
            self.guards
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|((name, token), g)| (name.clone(), g.holder, *token)),
        );
        names.sort();
        names.dedup();
        locks.sort();
        locks.dedup();
        (names, locks)
    }

    /// Where a guard of the grant `name`/`token` learns that the grant was lost.
    fn guard_watch(&self, name: &str, holder: Pid, token: u64) -> watch::Receiver<bool> {
        self.guards
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((name.to_string(), token))
            .or_insert_with(|| GuardWatch {
                holder,
                lost: watch::channel(false).0,
            })
            .lost
            .subscribe()
    }

    /// Marks every guard of the grant `name`/`token` lost.
    pub(super) fn lose_guards(&self, name: &str, token: u64) {
        if let Some(g) = self
            .guards
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(name.to_string(), token))
        {
            g.lost.send_replace(true);
        }
    }

    /// The grant `name`/`token` was released: no guard asks about it any more.
    fn forget_guards(&self, name: &str, token: u64) {
        self.guards
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(name.to_string(), token));
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
        // Read in place rather than through `ready`'s clone: this runs for every grain
        // call on both ends, and the clone's reference counting was most of its cost.
        if let Some(raft) = &self.raft
            && let RaftState::Ready(c) = &*raft.borrow()
        {
            return c.read_registry(|index, r| f(index.unwrap_or(0), r));
        }
        let view = self.view.read().unwrap_or_else(|e| e.into_inner());
        f(view.index, &view.registry)
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
        view.registry.whereis(name).map(|b| b.pid)
    }

    pub(super) fn lock_grant(&self, name: &str) -> Option<LockGrant> {
        self.read(|r| r.locks().get(name).copied())
    }

    pub(super) fn lock_waiters(&self, name: &str) -> Vec<Pid> {
        self.read(|r| {
            r.lock_waiters()
                .filter(|(n, _)| *n == name)
                .map(|(_, pid)| pid)
                .collect()
        })
    }

    /// The index of the registry this node resolves from.
    pub(super) fn applied(&self) -> u64 {
        self.index.get()
    }

    /// The same index as a handle read without a lock.
    pub(super) fn index_handle(&self) -> RegistryIndex {
        self.index.clone()
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

    /// How this node's registry pushes went.
    pub(super) fn feed_stats(&self) -> RegistryFeedStats {
        self.feed.stats()
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
        delta_window: config.delta_window,
    };
    let transport = NodeTransport {
        inner: weak.clone(),
        directory: naming.directory.clone(),
    };
    let raft = raft.clone();
    let index = naming.index.clone();
    let name = inner.name.clone();
    tokio::spawn(async move {
        match Consensus::start(settings, transport).await {
            Ok(c) => {
                info!(node = %name, raft_id = c.id(), "raft voter started");
                let applied = c.applied_index();
                raft.send_replace(RaftState::Ready(c));
                index.voter_started(applied);
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
        naming.index.voter_stopped();
        raft.send_replace(RaftState::Failed("the node shut down".into()));
    }
}
