//! The async shell: [`Consensus`] drives an openraft node over the redb store and a
//! [`RaftTransport`], and exposes propose / linearizable read / local reads.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, ClientWriteError, InitializeError, RaftError};
use openraft::{Config, Raft, ServerState};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;

use crate::chase::{Answer, ChaseError, Hints, LeaderChase, Next};
use crate::disk::Disk;
use crate::network::{
    NetworkFactory, RaftRequest, RaftResponse, RaftTransport, Refusal, TransportError, decode,
    encode,
};
use crate::registry::{Binding, Command, LockGrant, Outcome, Registry};
use crate::store::{self, AppliedState, Counters, StoreError, StoreStats};
use crate::types::{Node, RaftId, TypeConfig};

/// How to run one Raft voter.
#[derive(Clone, Debug)]
pub struct RaftSettings {
    /// This node's Raft id; it must be one of `voters`.
    pub id: RaftId,
    /// The fixed voter set: Raft id and address of each voter (3 or 5 in production).
    pub voters: Vec<(RaftId, Node)>,
    /// The directory holding `raft.redb` (created if missing).
    pub data_dir: PathBuf,
    /// Where the store lives: files in `data_dir` (the default) or a simulated disk.
    pub disk: Disk,
    /// How often the leader sends heartbeats.
    pub heartbeat_interval: Duration,
    /// The shortest election timeout; should be several heartbeat intervals.
    pub election_timeout_min: Duration,
    /// The longest election timeout.
    pub election_timeout_max: Duration,
    /// How long [`Consensus::propose`] and [`Consensus::linearizable_read`] try before they give
    /// up.
    pub request_timeout: Duration,
    /// How many commands of the latest applied entries are kept for members that follow
    /// by deltas ([`Consensus::read_feed`]); a member further behind gets a snapshot.
    pub delta_window: usize,
}

impl RaftSettings {
    /// Settings with defaults suited to a LAN: 100 ms heartbeats, 400–800 ms election
    /// timeouts, 5 s request timeout.
    pub fn new(id: RaftId, voters: Vec<(RaftId, Node)>, data_dir: impl Into<PathBuf>) -> Self {
        RaftSettings {
            id,
            voters,
            data_dir: data_dir.into(),
            disk: Disk::Files,
            heartbeat_interval: Duration::from_millis(100),
            election_timeout_min: Duration::from_millis(400),
            election_timeout_max: Duration::from_millis(800),
            request_timeout: Duration::from_secs(5),
            delta_window: crate::feed::DEFAULT_WINDOW,
        }
    }
}

/// A consensus operation failed. Each variant says what is known about the command.
#[derive(Debug, thiserror::Error)]
pub enum ConsensusError {
    /// No leader was known before the deadline (an election is under way, or this node is
    /// cut off from the majority). The command was not applied.
    #[error("no raft leader")]
    NoLeader,
    /// The known leader could not be reached before the deadline. The command was not
    /// delivered to it.
    #[error("raft leader {leader} is unreachable")]
    Unreachable {
        /// The leader that could not be reached.
        leader: RaftId,
    },
    /// The deadline passed after the command was handed to a leader, or the exchange broke
    /// mid-way: the command may or may not be applied. Registration and locking are
    /// idempotent for the same pid, so proposing them again is safe.
    #[error("raft request timed out; its outcome is unknown")]
    Timeout,
    /// The durable store failed; this node's Raft stops.
    #[error("raft storage: {0}")]
    Storage(String),
    /// This node's Raft has stopped (shut down, or a fatal error).
    #[error("raft stopped: {0}")]
    Stopped(String),
    /// The settings are unusable (this node not a voter, duplicate ids, bad timeouts).
    #[error("raft configuration: {0}")]
    Config(String),
    /// A voter holds the node that claims (a name, a lock) as declared down; the command
    /// was not applied. The node's next generation may claim again once the cluster knows
    /// it.
    #[error("this node is declared down in the cluster; it must rejoin before claiming")]
    ClaimantDown,
}

impl From<ChaseError> for ConsensusError {
    fn from(e: ChaseError) -> Self {
        match e {
            ChaseError::NoLeader => ConsensusError::NoLeader,
            ChaseError::Unreachable { leader } => ConsensusError::Unreachable { leader },
            ChaseError::Timeout => ConsensusError::Timeout,
            ChaseError::Stopped(reason) => ConsensusError::Stopped(reason),
            ChaseError::ClaimantDown => ConsensusError::ClaimantDown,
        }
    }
}

impl From<StoreError> for ConsensusError {
    fn from(e: StoreError) -> Self {
        ConsensusError::Storage(e.to_string())
    }
}

/// A node's role in Raft.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Leads the current term.
    Leader,
    /// Follows a leader, or waits for one.
    Follower,
    /// Is standing for election.
    Candidate,
    /// Replicates without voting.
    Learner,
    /// Raft is not running here.
    Stopped,
}

/// A point-in-time view of this node's Raft (`system.raft`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RaftStatus {
    /// This node's Raft id.
    pub id: RaftId,
    /// The leader this node knows of.
    pub leader: Option<RaftId>,
    /// The current term.
    pub term: u64,
    /// This node's role.
    pub role: Role,
    /// The index of the last entry applied to the registry.
    pub last_applied: Option<u64>,
    /// The index of the last entry known committed.
    pub commit_index: Option<u64>,
}

struct Inner<T> {
    id: RaftId,
    raft: Raft<TypeConfig>,
    transport: T,
    state: Arc<RwLock<AppliedState>>,
    applied: tokio::sync::watch::Receiver<u64>,
    applied_index: Arc<std::sync::atomic::AtomicU64>,
    counters: Arc<Counters>,
    proposals: mpsc::UnboundedSender<Pending>,
    request_timeout: Duration,
    /// The voters' Raft ids.
    voters: Vec<RaftId>,
    closed: tokio::sync::Mutex<Option<tokio::sync::oneshot::Receiver<()>>>,
}

/// One Raft voter of the cluster: the consensus handle the node uses.
///
/// Cloning is cheap and shares the node. See the crate documentation for how to drive it.
pub struct Consensus<T> {
    inner: Arc<Inner<T>>,
}

impl<T> Clone for Consensus<T> {
    fn clone(&self) -> Self {
        Consensus {
            inner: self.inner.clone(),
        }
    }
}

impl<T> std::fmt::Debug for Consensus<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consensus")
            .field("id", &self.inner.id)
            .finish_non_exhaustive()
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A proposal waiting for the batcher, with where its outcome goes.
type Pending = (Command, oneshot::Sender<Result<Outcome, Refusal>>);

/// The most commands one log entry carries.
const MAX_BATCH: usize = 256;

/// How many entries (single proposals or batches) the batcher has in Raft at once. While
/// they are all under way, new proposals queue and go together in the next entry. One is
/// best measured (3 voters sharing 2 cores, `names` benchmark): 35 k registrations/s and
/// 467 contended lock cycles/s, against 32 k and 427 with two and 28 k and 384 with four,
/// since more entries in flight mean smaller batches and more fsyncs for the same work.
const ENTRIES_IN_FLIGHT: usize = 1;

/// Feeds proposals to `raft`: one at a time while Raft keeps up, and, once
/// [`ENTRIES_IN_FLIGHT`] entries are under way, everything that queued meanwhile as one
/// [`Command::Batch`] entry, so that many proposals share one durable append and one
/// replication round. openraft 0.9 appends (and fsyncs) each client write on its own, so
/// without this the leader's disk bounds throughput to one proposal per fsync.
///
/// Contending `Lock`s of one lock may share an entry: the first is granted, the others are
/// answered busy with that grant (see [`Command::Batch`]).
async fn batch_proposals(raft: Raft<TypeConfig>, mut queue: mpsc::UnboundedReceiver<Pending>) {
    let slots = Arc::new(Semaphore::new(ENTRIES_IN_FLIGHT));
    loop {
        let Some(first) = queue.recv().await else {
            return;
        };
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            let Ok(next) = queue.try_recv() else { break };
            batch.push(next);
        }
        let (command, replies) = if batch.len() == 1 {
            let (command, reply) = batch.pop().expect("one proposal");
            (command, vec![reply])
        } else {
            let (commands, replies): (Vec<Command>, Vec<_>) = batch.into_iter().unzip();
            (Command::Batch(commands), replies)
        };
        let batched = matches!(command, Command::Batch(_));
        let written = raft.client_write_ff(command).await;
        tokio::spawn(async move {
            let _slot = slot;
            let answer = match written {
                Err(fatal) => Err(Refusal::Stopped(fatal.to_string())),
                Ok(response) => match response.await {
                    Ok(Ok(response)) => Ok(response.data),
                    Ok(Err(ClientWriteError::ForwardToLeader(f))) => Err(Refusal::NotLeader {
                        leader: f.leader_id,
                    }),
                    Ok(Err(ClientWriteError::ChangeMembershipError(e))) => {
                        Err(Refusal::Stopped(e.to_string()))
                    }
                    Err(_) => Err(Refusal::Stopped("raft stopped".into())),
                },
            };
            match answer {
                Ok(Outcome::Batch(outcomes)) if batched && outcomes.len() == replies.len() => {
                    for (reply, outcome) in replies.into_iter().zip(outcomes) {
                        let _ = reply.send(Ok(outcome));
                    }
                }
                Ok(outcome) if !batched => {
                    for reply in replies {
                        let _ = reply.send(Ok(outcome.clone()));
                    }
                }
                // Applied, but not as a batch of this size: cannot happen; say "unknown".
                Ok(_) => {
                    for reply in replies {
                        let _ = reply.send(Err(Refusal::Undecided));
                    }
                }
                Err(refusal) => {
                    for reply in replies {
                        let _ = reply.send(Err(refusal.clone()));
                    }
                }
            }
        });
    }
}

impl<T: RaftTransport + std::fmt::Debug> Consensus<T> {
    /// Opens the store in `settings.data_dir` and starts this voter. If the log is empty and
    /// this is the voter with the smallest id, it initializes the cluster with the voter set.
    pub async fn start(settings: RaftSettings, transport: T) -> Result<Self, ConsensusError> {
        let ids: BTreeSet<RaftId> = settings.voters.iter().map(|(id, _)| *id).collect();
        if ids.len() != settings.voters.len() {
            return Err(ConsensusError::Config("duplicate voter ids".into()));
        }
        if !ids.contains(&settings.id) {
            return Err(ConsensusError::Config(format!(
                "{} is not one of the voters {ids:?}",
                settings.id
            )));
        }
        let config = Config {
            cluster_name: "atoll".into(),
            heartbeat_interval: millis(settings.heartbeat_interval),
            election_timeout_min: millis(settings.election_timeout_min),
            election_timeout_max: millis(settings.election_timeout_max),
            ..Default::default()
        }
        .validate()
        .map_err(|e| ConsensusError::Config(e.to_string()))?;

        if matches!(settings.disk, Disk::Files) {
            std::fs::create_dir_all(&settings.data_dir)
                .map_err(|e| ConsensusError::Storage(e.to_string()))?;
        }
        let (log, sm, closed) =
            store::open_on(&settings.disk, settings.data_dir.join("raft.redb"))?;
        let state = sm.state();
        state
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .recent
            .set_capacity(settings.delta_window);
        let applied = sm.watch_applied();
        let applied_index = sm.applied_index();
        let counters = log.counters();
        let network = NetworkFactory::new(settings.id, transport.clone());
        let raft = Raft::new(settings.id, Arc::new(config), network, log, sm)
            .await
            .map_err(|e| ConsensusError::Stopped(e.to_string()))?;

        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| ConsensusError::Stopped(e.to_string()))?;
        if !initialized && ids.first() == Some(&settings.id) {
            let members: BTreeMap<RaftId, Node> = settings.voters.iter().cloned().collect();
            match raft.initialize(members).await {
                Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                Err(e) => return Err(ConsensusError::Config(e.to_string())),
            }
        }
        let (proposals, queue) = mpsc::unbounded_channel();
        tokio::spawn(batch_proposals(raft.clone(), queue));
        tokio::spawn(crate::report::report(settings.id, raft.metrics()));
        Ok(Consensus {
            inner: Arc::new(Inner {
                id: settings.id,
                raft,
                transport,
                state,
                applied,
                applied_index,
                counters,
                proposals,
                request_timeout: settings.request_timeout,
                voters: ids.into_iter().collect(),
                closed: tokio::sync::Mutex::new(Some(closed)),
            }),
        })
    }

    /// This node's Raft id.
    pub fn id(&self) -> RaftId {
        self.inner.id
    }

    /// The leader this node currently knows of, without asking anyone.
    pub fn leader_hint(&self) -> Option<RaftId> {
        self.inner.raft.metrics().borrow().current_leader
    }

    /// This node's Raft state.
    pub async fn status(&self) -> RaftStatus {
        let m = self.inner.raft.metrics().borrow().clone();
        let role = match m.state {
            ServerState::Leader => Role::Leader,
            ServerState::Follower => Role::Follower,
            ServerState::Candidate => Role::Candidate,
            ServerState::Learner => Role::Learner,
            ServerState::Shutdown => Role::Stopped,
        };
        let commit_index = self
            .inner
            .raft
            .with_raft_state(|s| s.committed.map(|l| l.index))
            .await
            .unwrap_or(None);
        RaftStatus {
            id: m.id,
            leader: m.current_leader,
            term: m.current_term,
            role,
            last_applied: m.last_applied.map(|l| l.index),
            commit_index,
        }
    }

    /// Proposes `command` and returns its outcome once it is committed and applied.
    ///
    /// At the leader the command is appended directly; at a follower it is forwarded to the
    /// leader through the transport. While no leader is known, the leader is unreachable, or
    /// the leader changes before the command was appended, it retries until the request
    /// timeout (the retries follow [`LeaderChase`]). Once a leader has accepted the command
    /// it is never sent again: a failure after that point is [`ConsensusError::Timeout`]
    /// (outcome unknown).
    pub async fn propose(&self, command: Command) -> Result<Outcome, ConsensusError> {
        let started = Instant::now();
        let mut chase = self.chase();
        let deadline = started + chase.timeout();
        let mut next = chase.start(self.leader_hint());
        loop {
            let answer = match next {
                Next::GiveUp(e) => return Err(e.into()),
                Next::Wait(pause) => {
                    self.await_news(pause).await?;
                    next = chase.resume(started.elapsed(), self.leader_hint());
                    continue;
                }
                Next::Try(leader) if leader == self.inner.id => {
                    tokio::time::timeout_at(deadline, self.propose_here(command.clone()))
                        .await
                        .unwrap_or(Err(Refusal::Undecided))
                        .map_err(Answer::from_refusal)
                }
                Next::Try(leader) => {
                    let request = RaftRequest::Propose(command.clone());
                    match tokio::time::timeout_at(deadline, self.ask(leader, &request)).await {
                        Ok(Ok(RaftResponse::Propose(answer))) => {
                            answer.map_err(Answer::from_refusal)
                        }
                        Err(_) | Ok(Ok(_)) => Err(Answer::Unknown),
                        Ok(Err(e)) => Err(Answer::from_transport(&e)),
                    }
                }
            };
            match answer {
                Ok(outcome) => return Ok(outcome),
                Err(answer) => next = chase.answer(started.elapsed(), answer, self.leader_hint()),
            }
        }
    }

    /// Proposes `command` only as this node's own decision while it leads: it is appended
    /// here or not at all, never forwarded. For commands decided from this node's view of
    /// the cluster (releasing a lost node's names): a leader that is deposed while such a
    /// command waits must not have it carried out by its successor, whose view may differ.
    /// [`ConsensusError::NoLeader`] when this node does not lead (or stops leading before
    /// the command commits).
    pub async fn propose_as_leader(&self, command: Command) -> Result<Outcome, ConsensusError> {
        if self.leader_hint() != Some(self.inner.id) {
            return Err(ConsensusError::NoLeader);
        }
        let answer =
            tokio::time::timeout(self.inner.request_timeout, self.propose_here(command)).await;
        match answer {
            Err(_) | Ok(Err(Refusal::Undecided)) => Err(ConsensusError::Timeout),
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(Refusal::NotLeader { .. } | Refusal::NoQuorum)) => Err(ConsensusError::NoLeader),
            Ok(Err(Refusal::Stopped(e))) => Err(ConsensusError::Stopped(e)),
            Ok(Err(Refusal::ClaimantDown)) => Err(ConsensusError::ClaimantDown),
        }
    }

    /// Waits until this node's registry reflects every write committed before the call:
    /// reads of [`Consensus::registry`] made after it returns are linearizable.
    ///
    /// The leader confirms its leadership with a quorum and names the log position to wait
    /// for (a follower asks the leader through the transport); this node then waits until
    /// it has applied that far.
    pub async fn linearizable_read(&self) -> Result<(), ConsensusError> {
        let started = Instant::now();
        // A read is safe to ask again, whatever happened to the last request.
        let mut chase = self.chase().retrying_unknown();
        let deadline = started + chase.timeout();
        let mut next = chase.start(self.leader_hint());
        let read_index = loop {
            let answer = match next {
                Next::GiveUp(e) => return Err(e.into()),
                Next::Wait(pause) => {
                    self.await_news(pause).await?;
                    next = chase.resume(started.elapsed(), self.leader_hint());
                    continue;
                }
                Next::Try(leader) if leader == self.inner.id => {
                    tokio::time::timeout_at(deadline, self.read_index_here())
                        .await
                        .map_err(|_| Answer::Unknown)
                        .and_then(|answer| answer.map_err(Answer::from_refusal))
                }
                Next::Try(leader) => {
                    match tokio::time::timeout_at(
                        deadline,
                        self.ask(leader, &RaftRequest::ReadIndex),
                    )
                    .await
                    {
                        Ok(Ok(RaftResponse::ReadIndex(answer))) => {
                            answer.map_err(Answer::from_refusal)
                        }
                        Err(_) | Ok(Ok(_)) => Err(Answer::Unknown),
                        Ok(Err(e)) => Err(Answer::from_transport(&e)),
                    }
                }
            };
            match answer {
                Ok(index) => break index,
                Err(answer) => next = chase.answer(started.elapsed(), answer, self.leader_hint()),
            }
        };
        let Some(index) = read_index else {
            return Ok(());
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        self.inner
            .raft
            .wait(Some(remaining))
            .applied_index_at_least(Some(index), "linearizable read")
            .await
            .map(|_| ())
            .map_err(|_| ConsensusError::Timeout)
    }

    /// A copy of this node's replica of the registry, as applied so far (no network).
    pub fn registry(&self) -> Registry {
        self.read_state().registry.clone()
    }

    /// Runs `f` on this node's replica of the registry and the index of the last log entry
    /// applied to it (`None` before anything was applied), read at one instant, without
    /// copying the registry. `f` runs under the state's read lock: keep it short.
    pub fn read_registry<R>(&self, f: impl FnOnce(Option<u64>, &Registry) -> R) -> R {
        let state = self.read_state();
        f(state.last_applied.map(|l| l.index), &state.registry)
    }

    /// Like [`Consensus::read_registry`], with the commands of the latest applied entries
    /// (what members that follow by deltas are sent).
    pub fn read_feed<R>(
        &self,
        f: impl FnOnce(Option<u64>, &Registry, &crate::feed::RecentEntries) -> R,
    ) -> R {
        let state = self.read_state();
        f(
            state.last_applied.map(|l| l.index),
            &state.registry,
            &state.recent,
        )
    }

    /// A copy of this node's replica of the registry together with the index of the last
    /// log entry applied to it (`None` before anything was applied), read at one instant.
    pub fn applied_registry(&self) -> (Option<u64>, Registry) {
        let state = self.read_state();
        (state.last_applied.map(|l| l.index), state.registry.clone())
    }

    /// All cluster names in this node's replica.
    pub fn names(&self) -> BTreeMap<String, Binding> {
        self.read_state().registry.names().clone()
    }

    /// The binding of `name` in this node's replica.
    pub fn whereis(&self, name: &str) -> Option<Binding> {
        self.read_state().registry.whereis(name).cloned()
    }

    /// All held locks in this node's replica.
    pub fn locks(&self) -> BTreeMap<String, LockGrant> {
        self.read_state().registry.locks().clone()
    }

    /// The index of the last log entry applied to this node's replica (0 before any),
    /// updated as soon as the state machine has applied a batch of entries: wait on it
    /// (`changed()`) instead of polling the local reads, e.g. for a busy lock to be released.
    pub fn watch_applied(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.applied.clone()
    }

    /// The index of the last log entry applied to this node's replica (0 before any), as a
    /// cell shared with the state machine and read without a lock: for readers on hot paths
    /// that look up the registry only when it changed. It is stored after the registry it
    /// describes, so a load (acquire) followed by [`Consensus::read_registry`] reads that
    /// index or a later one.
    pub fn applied_index(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.inner.applied_index.clone()
    }

    /// What this node's durable log store did since it was opened (appends, entries per
    /// append, fsynced commits and the time they took).
    pub fn store_stats(&self) -> StoreStats {
        self.inner.counters.stats()
    }

    /// Answers a request body from another node (what the transport calls on receipt).
    pub async fn handle(&self, body: &[u8]) -> Vec<u8> {
        self.handle_admitting(body, |_| true).await
    }

    /// Like [`handle`](Self::handle), but a proposal is refused with
    /// [`Refusal::ClaimantDown`] unless `admit` takes its command: the shell's view of the
    /// cluster (who is declared down) decides which claims a voter accepts.
    pub async fn handle_admitting(&self, body: &[u8], admit: impl Fn(&Command) -> bool) -> Vec<u8> {
        let request: RaftRequest = match decode(body) {
            Ok(r) => r,
            Err(e) => return encode(&RaftResponse::Malformed(e.to_string())),
        };
        let raft = &self.inner.raft;
        let response = match request {
            RaftRequest::AppendEntries(r) => {
                RaftResponse::AppendEntries(raft.append_entries(r).await)
            }
            RaftRequest::Vote(r) => RaftResponse::Vote(raft.vote(r).await),
            RaftRequest::InstallSnapshot(r) => {
                RaftResponse::InstallSnapshot(raft.install_snapshot(r).await)
            }
            RaftRequest::Propose(command) if !admit(&command) => {
                RaftResponse::Propose(Err(Refusal::ClaimantDown))
            }
            RaftRequest::Propose(command) => {
                let wait = self.inner.request_timeout;
                let answer = tokio::time::timeout(wait, self.propose_here(command)).await;
                RaftResponse::Propose(answer.unwrap_or(Err(Refusal::Undecided)))
            }
            RaftRequest::ReadIndex => {
                let wait = self.inner.request_timeout;
                let answer = tokio::time::timeout(wait, self.read_index_here()).await;
                RaftResponse::ReadIndex(answer.unwrap_or(Err(Refusal::NoQuorum)))
            }
        };
        encode(&response)
    }

    /// Stops this node's Raft and waits (up to the request timeout) until its store is
    /// closed, so the data directory can be opened again at once.
    pub async fn shutdown(&self) -> Result<(), ConsensusError> {
        self.inner
            .raft
            .shutdown()
            .await
            .map_err(|e| ConsensusError::Stopped(e.to_string()))?;
        // openraft's storage and replication tasks drop their store handles shortly after
        // the core stops, not before `shutdown` returns.
        let closed = self.inner.closed.lock().await.take();
        if let Some(closed) = closed {
            let wait = self.inner.request_timeout;
            if tokio::time::timeout(wait, closed).await.is_err() {
                return Err(ConsensusError::Stopped("the store is still open".into()));
            }
        }
        Ok(())
    }

    /// Hands `command` to this node's Raft (through the batcher) and waits for its outcome.
    async fn propose_here(&self, command: Command) -> Result<Outcome, Refusal> {
        let (reply, answer) = oneshot::channel();
        if self.inner.proposals.send((command, reply)).is_err() {
            return Err(Refusal::Stopped("raft stopped".into()));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(Refusal::Stopped("raft stopped".into())))
    }

    async fn read_index_here(&self) -> Result<Option<u64>, Refusal> {
        match self.inner.raft.get_read_log_id().await {
            Ok((read, _applied)) => Ok(read.map(|l| l.index)),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                Err(Refusal::NotLeader {
                    leader: f.leader_id,
                })
            }
            Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_))) => {
                Err(Refusal::NoQuorum)
            }
            Err(RaftError::Fatal(e)) => Err(Refusal::Stopped(e.to_string())),
        }
    }

    async fn ask(
        &self,
        target: RaftId,
        request: &RaftRequest,
    ) -> Result<RaftResponse, TransportError> {
        let body = self.inner.transport.call(target, encode(request)).await?;
        decode(&body).map_err(|e| TransportError::Failed {
            target,
            reason: e.to_string(),
        })
    }

    /// The chase of the leader for one request from this voter.
    fn chase(&self) -> LeaderChase {
        LeaderChase::new(
            self.inner.voters.iter().copied(),
            Hints::OwnVoter(self.inner.id),
            self.inner.request_timeout,
        )
    }

    /// Waits for a change in this node's Raft metrics (e.g. a new leader), at most `pause`.
    /// [`ConsensusError::Stopped`] once this voter's Raft has stopped: no news will ever come
    /// (waiting on would spin).
    async fn await_news(&self, pause: Duration) -> Result<(), ConsensusError> {
        let mut metrics = self.inner.raft.metrics();
        // A clone of openraft's receiver has not seen what changed since the start: without
        // this, `changed` is ready at once and the caller spins.
        metrics.borrow_and_update();
        match tokio::time::timeout(pause, metrics.changed()).await {
            Ok(Err(_)) => Err(ConsensusError::Stopped("raft has stopped".into())),
            Ok(Ok(())) | Err(_) => Ok(()),
        }
    }

    fn read_state(&self) -> std::sync::RwLockReadGuard<'_, AppliedState> {
        self.inner.state.read().unwrap_or_else(|p| p.into_inner())
    }
}
