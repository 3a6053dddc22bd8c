//! Where an activation's saves go: nowhere (`Volatile`), this node's store
//! (`LocalExclusive`), or this node's store and `R` other nodes' stores (`Replicated`),
//! each copy fenced by epoch. Replica reads and writes travel to the other nodes' grain
//! routers.

use std::sync::Arc;
use std::time::Duration;

use atoll_core::NodeId;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

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
    Ok(Option<Vec<u8>>),
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
    Local(Arc<dyn GrainStore>),
    Replicated {
        shared: Arc<Shared>,
        /// The number of this activation's last write.
        seq: u64,
    },
}

impl Saver {
    pub(crate) fn for_type(durability: Durability, shared: &Arc<Shared>) -> Result<Saver, String> {
        let store = || {
            shared
                .store
                .clone()
                .ok_or_else(|| "no grain store on this node".to_string())
        };
        Ok(match durability {
            Durability::Volatile => Saver::Nothing,
            Durability::LocalExclusive => Saver::Local(store()?),
            Durability::Replicated => {
                store()?;
                Saver::Replicated {
                    shared: shared.clone(),
                    seq: 0,
                }
            }
        })
    }

    pub(crate) fn is_durable(&self) -> bool {
        !matches!(self, Saver::Nothing)
    }

    /// The last saved state, for the activation at `epoch` (fencing older ones).
    pub(crate) async fn load(
        &self,
        id: &GrainId,
        epoch: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Saver::Nothing => Ok(None),
            Saver::Local(store) => store.load(id, epoch),
            Saver::Replicated { shared, .. } => Ok(load(shared, id, epoch).await?.map(|v| v.state)),
        }
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
        if let Saver::Replicated { shared, .. } = self
            && let Some(newer) = load(shared, id, epoch).await?
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
        match self {
            Saver::Nothing => Ok(()),
            Saver::Local(store) => store.save(id, epoch, state),
            Saver::Replicated { shared, seq } => {
                *seq += 1;
                let copy = Versioned {
                    epoch,
                    seq: *seq,
                    state: state.to_vec(),
                };
                save(shared, id, &copy).await
            }
        }
    }
}

/// The nodes running a grain service now that may host the grain's type (they announce
/// its requirements: a member that only calls grains keeps no copies), in the grain's ring
/// order.
fn ring_order(node: &atoll_cluster::Node, shared: &Shared, id: &GrainId) -> Vec<NodeId> {
    let routers: std::collections::BTreeSet<NodeId> = node
        .find_by_type("GrainRouter")
        .iter()
        .map(|ad| ad.pid.node)
        .collect();
    let requires = shared
        .types
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(&id.grain_type)
        .map_or(&[][..], |a| a.requires());
    let ring = node.ring();
    let nodes = ring.nodes();
    let order = ring.replicas(&id.ring_key(), nodes.len(), None);
    let order = core::eligible(
        order
            .iter()
            .filter(|n| routers.contains(n))
            .filter_map(|n| nodes.get(n).map(|r| (*n, &r.capabilities))),
        requires,
    );
    shared
        .copy_holders
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .extend(order.iter().copied().chain([shared.me]));
    order
}

fn timeout(shared: &Shared) -> Duration {
    (shared.call_timeout / 2).min(Duration::from_secs(5))
}

/// Sends `msg` to each of `nodes`' routers at once; the answers that came back in time.
async fn ask(
    shared: &Arc<Shared>,
    node: &atoll_cluster::Node,
    nodes: &[NodeId],
    msg: impl Fn(atoll_actor::ReplyTo<ReplicaAnswer>) -> RouterMsg + Clone + Send + 'static,
) -> Vec<ReplicaAnswer> {
    let mut calls = JoinSet::new();
    let wait = timeout(shared);
    for target in nodes {
        let Some(router) = shared.router_of(node, *target) else {
            continue;
        };
        let msg = msg.clone();
        calls.spawn(async move { router.call(msg, wait).await.ok() });
    }
    let mut answers = Vec::new();
    while let Some(done) = calls.join_next().await {
        if let Ok(Some(a)) = done {
            answers.push(a);
        }
    }
    answers
}

/// Reads every node's copy for the activation at `epoch` (fencing each) and returns the
/// freshest, once enough have answered that one of them holds the last acknowledged write.
pub(crate) async fn load(
    shared: &Arc<Shared>,
    id: &GrainId,
    epoch: u64,
) -> Result<Option<Versioned>, StoreError> {
    let node = shared
        .node
        .upgrade()
        .ok_or_else(|| StoreError::Backend("the node has shut down".into()))?;
    let local = shared
        .store
        .as_ref()
        .ok_or_else(|| StoreError::Backend("no grain store on this node".into()))?;
    let mut copies = Vec::new();
    if let Some(bytes) = local.load(id, epoch)? {
        copies.push(decode_versioned(&bytes)?);
    }
    let others: Vec<NodeId> = ring_order(&node, shared, id)
        .into_iter()
        .filter(|n| *n != shared.me)
        .collect();
    let (t, k) = (id.grain_type.clone(), id.key.clone());
    let answers = ask(shared, &node, &others, move |reply| {
        RouterMsg::ReplicaLoad {
            grain_type: t.clone(),
            key: k.clone(),
            epoch,
            reply,
        }
    })
    .await;
    let mut heard = 1;
    for a in answers {
        match a {
            ReplicaAnswer::Ok(bytes) => {
                heard += 1;
                if let Some(bytes) = bytes {
                    copies.push(decode_versioned(&bytes)?);
                }
            }
            ReplicaAnswer::Stale(s) => return Err(StoreError::Stale(s)),
            ReplicaAnswer::Failed(_) => {}
        }
    }
    // Counted against every node that may hold a copy, not only today's members: with a
    // node lost, a quorum of the survivors alone could miss every copy of the last write.
    let holders = shared
        .copy_holders
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .len();
    let need = core::read_quorum(holders, shared.replicas);
    if heard < need {
        return Err(StoreError::Backend(format!(
            "heard {heard} of the {need} copies needed to restore the state"
        )));
    }
    Ok(core::freshest(copies))
}

/// Writes `copy` to this node's store and to the grain's `R` replicas; acknowledged once
/// all `R` hold it.
pub(crate) async fn save(
    shared: &Arc<Shared>,
    id: &GrainId,
    copy: &Versioned,
) -> Result<(), StoreError> {
    let node = shared
        .node
        .upgrade()
        .ok_or_else(|| StoreError::Backend("the node has shut down".into()))?;
    let local = shared
        .store
        .as_ref()
        .ok_or_else(|| StoreError::Backend("no grain store on this node".into()))?;
    let bytes = postcard::to_allocvec(copy).map_err(|e| StoreError::Codec(e.to_string()))?;
    local.save(id, copy.epoch, &bytes)?;
    let targets = core::replicas(&ring_order(&node, shared, id), shared.me, shared.replicas);
    let (t, k, epoch) = (id.grain_type.clone(), id.key.clone(), copy.epoch);
    let answers = ask(shared, &node, &targets, move |reply| {
        RouterMsg::ReplicaSave {
            grain_type: t.clone(),
            key: k.clone(),
            epoch,
            state: bytes.clone(),
            reply,
        }
    })
    .await;
    let mut stored = 0;
    let mut stale = None;
    for a in answers {
        match a {
            ReplicaAnswer::Ok(_) => stored += 1,
            ReplicaAnswer::Stale(s) => stale = stale.or(Some(s)),
            ReplicaAnswer::Failed(_) => {}
        }
    }
    match core::write_result(stored, stale, shared.replicas) {
        WriteResult::Acknowledged => Ok(()),
        WriteResult::Fenced(s) => Err(StoreError::Stale(s)),
        WriteResult::Short { stored, needed } => Err(StoreError::Backend(format!(
            "replicated to {stored} of {needed} nodes"
        ))),
    }
}
