//! Where an activation's saves go: nowhere (`Volatile`), this node's store
//! (`LocalExclusive`), or this node's store and the stores of `R + 1` consensus voters
//! (`Replicated`), each copy fenced by epoch and versioned by (epoch, sequence number).
//! Reads and writes of other nodes' copies travel to their grain routers.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use atoll_core::NodeId;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::core::{self, GrainId, StaleEpoch, Versioned, WriteResult};
use crate::router::RouterMsg;
use crate::shared::Shared;
use crate::{Durability, GrainStore, StoreError};

/// The largest replicated state accepted from a peer or a store, in bytes.
pub const MAX_STATE_BYTES: usize = 16 << 20;

/// What a node answers a replica read or write with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicaAnswer {
    /// Done: the copy held (for a read; none if never written), or nothing (a write).
    Ok(#[serde(with = "serde_bytes")] Option<Vec<u8>>),
    /// This node's copy has seen a newer activation.
    Stale(StaleEpoch),
    /// This node has no store, or it failed.
    Failed(String),
}

fn answer<T>(r: Result<T, StoreError>, ok: impl FnOnce(T) -> Option<Vec<u8>>) -> ReplicaAnswer {
    match r {
        Ok(v) => ReplicaAnswer::Ok(ok(v)),
        Err(StoreError::Stale(s)) => ReplicaAnswer::Stale(s),
        Err(e) => ReplicaAnswer::Failed(e.to_string()),
    }
}

/// A replica read on this node, for the activation at `epoch` (which fences this copy).
pub(crate) fn serve_load(
    store: Option<&dyn GrainStore>,
    id: &GrainId,
    epoch: u64,
) -> ReplicaAnswer {
    match store {
        None => ReplicaAnswer::Failed("no grain store on this node".into()),
        Some(store) => answer(store.load(id, epoch), |v| v),
    }
}

/// A replica write on this node, for the activation at `epoch`.
pub(crate) fn serve_save(
    store: Option<&dyn GrainStore>,
    id: &GrainId,
    epoch: u64,
    state: &[u8],
) -> ReplicaAnswer {
    if state.len() > MAX_STATE_BYTES {
        return ReplicaAnswer::Failed(format!("state of {} bytes is too large", state.len()));
    }
    match store {
        None => ReplicaAnswer::Failed("no grain store on this node".into()),
        Some(store) => answer(store.save(id, epoch, state), |()| None),
    }
}

/// Decodes a stored copy of replicated state.
pub fn decode_versioned(bytes: &[u8]) -> Result<Versioned, StoreError> {
    if bytes.len() > MAX_STATE_BYTES + 32 {
        return Err(StoreError::Codec("replicated state too large".into()));
    }
    postcard::from_bytes(bytes).map_err(|e| StoreError::Codec(e.to_string()))
}

/// Where one activation's saves go.
pub(crate) enum Saver {
    Nothing,
    /// This node's store; a new activation also reads the copies other nodes kept from
    /// earlier activations there (a migration moves the state's home with the grain).
    Local {
        shared: Arc<Shared>,
        /// The number of this activation's last write.
        seq: u64,
    },
    Replicated {
        shared: Arc<Shared>,
        /// The number of this activation's last write.
        seq: u64,
    },
}

impl Saver {
    pub(crate) fn for_type(durability: Durability, shared: &Arc<Shared>) -> Result<Saver, String> {
        if durability != Durability::Volatile && shared.store.is_none() {
            return Err("no grain store on this node".to_string());
        }
        let shared = shared.clone();
        Ok(match durability {
            Durability::Volatile => Saver::Nothing,
            Durability::LocalExclusive => Saver::Local { shared, seq: 0 },
            Durability::Replicated => Saver::Replicated { shared, seq: 0 },
        })
    }

    pub(crate) fn is_durable(&self) -> bool {
        !matches!(self, Saver::Nothing)
    }

    /// The freshest saved copy, for the activation at `epoch` (fencing older ones).
    async fn load_copy(&self, id: &GrainId, epoch: u64) -> Result<Option<Versioned>, StoreError> {
        match self {
            Saver::Nothing => Ok(None),
            Saver::Local { shared, .. } => load_local(shared, id, epoch).await,
            Saver::Replicated { shared, .. } => load(shared, id, epoch).await,
        }
    }

    /// The last saved state, for the activation at `epoch` (fencing older ones).
    pub(crate) async fn load(
        &self,
        id: &GrainId,
        epoch: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.load_copy(id, epoch).await?.map(|v| v.state))
    }

    /// The state an activation at `epoch` starts from when a migrating one handed it
    /// `handed`: the handed state, saved at once at `epoch` (every copy then fences the old
    /// activation), unless the stores hold a copy written by an activation newer than the
    /// one that handed it over, which wins.
    pub(crate) async fn adopt(
        &mut self,
        id: &GrainId,
        epoch: u64,
        handed: crate::shared::Handed,
    ) -> Result<Vec<u8>, StoreError> {
        if let Some(newer) = self.load_copy(id, epoch).await?
            && newer.epoch > handed.from_epoch
        {
            return Ok(newer.state);
        }
        match self.save(id, epoch, &handed.state).await {
            Err(e @ StoreError::Stale(_)) => return Err(e),
            Err(e) => tracing::warn!(grain = %id, epoch, "moved state not saved yet: {e}"),
            Ok(()) => {}
        }
        Ok(handed.state)
    }

    /// Saves `state` for the activation at `epoch`.
    pub(crate) async fn save(
        &mut self,
        id: &GrainId,
        epoch: u64,
        state: &[u8],
    ) -> Result<(), StoreError> {
        let (shared, seq, replicated) = match self {
            Saver::Nothing => return Ok(()),
            Saver::Local { shared, seq } => (shared, seq, false),
            Saver::Replicated { shared, seq } => (shared, seq, true),
        };
        *seq += 1;
        let copy = Versioned {
            epoch,
            seq: *seq,
            state: state.to_vec(),
        };
        let bytes = postcard::to_allocvec(&copy).map_err(|e| StoreError::Codec(e.to_string()))?;
        local_store(shared)?.save(id, epoch, &bytes)?;
        if replicated {
            save(shared, id, epoch, bytes).await
        } else {
            Ok(())
        }
    }
}

fn local_store(shared: &Shared) -> Result<&Arc<dyn GrainStore>, StoreError> {
    shared
        .store
        .as_ref()
        .ok_or_else(|| StoreError::Backend("no grain store on this node".into()))
}

fn node_of(shared: &Shared) -> Result<atoll_cluster::Node, StoreError> {
    shared
        .node
        .upgrade()
        .ok_or_else(|| StoreError::Backend("the node has shut down".into()))
}

/// This node's own copy, for the activation at `epoch`.
fn own_copy(shared: &Shared, id: &GrainId, epoch: u64) -> Result<Option<Versioned>, StoreError> {
    local_store(shared)?
        .load(id, epoch)?
        .map(|bytes| decode_versioned(&bytes))
        .transpose()
}

fn timeout(shared: &Shared) -> Duration {
    (shared.call_timeout / 2).min(Duration::from_secs(5))
}

/// How long a request to another node's store may go unanswered before the next node in
/// line is asked as well (a node that was just killed answers nothing until it is
/// declared lost, which takes longer).
const HEDGE: Duration = Duration::from_millis(150);

/// `targets` with the nodes this node's membership shows live first (each part in its
/// order): a voter that is down is asked last, not first on every write while it is down.
fn live_first(node: &atoll_cluster::Node, targets: Vec<NodeId>) -> Vec<NodeId> {
    let live = live_members(node);
    let (mut up, down): (Vec<NodeId>, Vec<NodeId>) =
        targets.into_iter().partition(|n| live.contains(n));
    up.extend(down);
    up
}

/// The nodes this node's membership shows alive or suspected.
fn live_members(node: &atoll_cluster::Node) -> BTreeSet<NodeId> {
    node.membership().map_or_else(BTreeSet::new, |swim| {
        swim.members()
            .iter()
            .filter(|m| m.state.is_live())
            .map(|m| m.identity.node)
            .collect()
    })
}

/// What the nodes asked answered.
#[derive(Default)]
struct Gathered {
    /// The answers `Ok`: the copy held (reads), nothing (writes).
    ok: Vec<Option<Vec<u8>>>,
    /// The first refusal by a newer epoch.
    stale: Option<StaleEpoch>,
}

/// Asks `targets`, in order, until `want` of them answered `Ok`: the first `want` at once,
/// then the next one whenever a request fails or [`HEDGE`] passes without an answer. Ends
/// early on a `Stale` answer; every request ends within [`timeout`].
async fn gather(
    shared: &Arc<Shared>,
    node: &atoll_cluster::Node,
    targets: &[NodeId],
    want: usize,
    msg: impl Fn(atoll_actor::ReplyTo<ReplicaAnswer>) -> RouterMsg + Clone + Send + 'static,
) -> Gathered {
    let mut out = Gathered::default();
    let deadline = Instant::now() + timeout(shared);
    let mut pending = targets.iter().copied();
    let mut calls = JoinSet::new();
    let mut launch = |calls: &mut JoinSet<(NodeId, Option<ReplicaAnswer>)>| {
        for target in pending.by_ref() {
            let Some(router) = shared.router_of(node, target) else {
                continue;
            };
            let (msg, left) = (
                msg.clone(),
                deadline.saturating_duration_since(Instant::now()),
            );
            calls.spawn(async move { (target, router.call(msg, left).await.ok()) });
            return true;
        }
        false
    };
    while calls.len() < want && launch(&mut calls) {}
    while out.ok.len() < want && out.stale.is_none() {
        match tokio::time::timeout(HEDGE, calls.join_next()).await {
            Err(_slow) => {
                launch(&mut calls);
            }
            Ok(None) => break,
            Ok(Some(Ok((_, Some(ReplicaAnswer::Ok(copy)))))) => out.ok.push(copy),
            Ok(Some(Ok((_, Some(ReplicaAnswer::Stale(s)))))) => out.stale = Some(s),
            Ok(Some(failed)) => {
                // No answer: the router may be gone (its node restarted); look it up anew.
                if let Ok((target, None)) = failed {
                    shared.forget_router(target);
                }
                launch(&mut calls);
            }
        }
    }
    out
}

fn load_msg(
    id: &GrainId,
    epoch: u64,
) -> impl Fn(atoll_actor::ReplyTo<ReplicaAnswer>) -> RouterMsg + Clone + Send + 'static {
    let (t, k) = (id.grain_type.clone(), id.key.clone());
    move |reply| RouterMsg::ReplicaLoad {
        grain_type: t.clone(),
        key: k.clone(),
        epoch,
        reply,
    }
}

fn freshest_of(
    own: Option<Versioned>,
    answers: Vec<Option<Vec<u8>>>,
) -> Result<Option<Versioned>, StoreError> {
    let mut copies: Vec<Versioned> = own.into_iter().collect();
    for bytes in answers.into_iter().flatten() {
        copies.push(decode_versioned(&bytes)?);
    }
    Ok(core::freshest(copies))
}

/// Restores a `LocalExclusive` grain for the activation at `epoch`: the freshest of this
/// node's copy and the copies every other live node running a grain service kept (an
/// earlier host's, left by a migration or an activation there), each fenced at `epoch`.
/// A node that does not answer is left out: what only it holds is not restored.
async fn load_local(
    shared: &Arc<Shared>,
    id: &GrainId,
    epoch: u64,
) -> Result<Option<Versioned>, StoreError> {
    let node = node_of(shared)?;
    let own = own_copy(shared, id, epoch)?;
    let live = live_members(&node);
    let others: Vec<NodeId> = node
        .find_by_type("GrainRouter")
        .iter()
        .map(|ad| ad.pid.node)
        .filter(|n| *n != shared.me && live.contains(n))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let heard = gather(shared, &node, &others, others.len(), load_msg(id, epoch)).await;
    if let Some(s) = heard.stale {
        return Err(StoreError::Stale(s));
    }
    freshest_of(own, heard.ok)
}

/// Reads the voters' copies for the activation at `epoch` (fencing each) and returns the
/// freshest, once enough have answered that one of them holds the last acknowledged write
/// ([`core::read_quorum`] over the voter set).
pub(crate) async fn load(
    shared: &Arc<Shared>,
    id: &GrainId,
    epoch: u64,
) -> Result<Option<Versioned>, StoreError> {
    let node = node_of(shared)?;
    let own = own_copy(shared, id, epoch)?;
    let voters = node.consensus_voters();
    let mine = usize::from(voters.contains(&shared.me));
    let need = core::read_quorum(voters.len(), shared.replicas);
    let want = need.saturating_sub(mine);
    let targets = live_first(&node, core::copy_order(&id.ring_key(), &voters, shared.me));
    let heard = gather(shared, &node, &targets, want, load_msg(id, epoch)).await;
    if let Some(s) = heard.stale {
        return Err(StoreError::Stale(s));
    }
    if heard.ok.len() < want {
        return Err(StoreError::Backend(format!(
            "heard {} of the {need} voters needed to restore the state",
            heard.ok.len() + mine
        )));
    }
    freshest_of(own, heard.ok)
}

/// Writes the encoded copy at `epoch` (already in this node's store) to the voters in the
/// grain's [`core::copy_order`]; acknowledged once [`core::write_quorum`] of them hold it.
async fn save(
    shared: &Arc<Shared>,
    id: &GrainId,
    epoch: u64,
    bytes: Vec<u8>,
) -> Result<(), StoreError> {
    let node = node_of(shared)?;
    let voters = node.consensus_voters();
    let want = core::write_quorum(voters.contains(&shared.me), shared.replicas);
    let targets = live_first(&node, core::copy_order(&id.ring_key(), &voters, shared.me));
    let (t, k) = (id.grain_type.clone(), id.key.clone());
    let msg = move |reply| RouterMsg::ReplicaSave {
        grain_type: t.clone(),
        key: k.clone(),
        epoch,
        state: bytes.clone(),
        reply,
    };
    let heard = gather(shared, &node, &targets, want, msg).await;
    match core::write_result(heard.ok.len(), heard.stale, want) {
        WriteResult::Acknowledged => Ok(()),
        WriteResult::Fenced(s) => Err(StoreError::Stale(s)),
        WriteResult::Short { stored, needed } => Err(StoreError::Backend(format!(
            "replicated to {stored} of {needed} voters"
        ))),
    }
}
