//! What one node's grain service shares between its router, its hosts and its callers,
//! and the seams between them: the requests callers send, and how the router reaches a
//! host and starts one.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use atoll_actor::{Actor, ActorRef, ActorResult, Ctx, ReplyTo, Runtime};
use atoll_cluster::{Node, RegistryIndex, WeakNode};
use atoll_core::{NodeId, Pid};
use serde::{Deserialize, Serialize};

use crate::core::{self, Activation, Answer, GrainId};
use crate::placement::Placement;
use crate::router::GrainRouter;
use crate::{Durability, GrainStore};

/// The local name of every node's grain router.
pub(crate) const ROUTER: &str = "atoll.grains";

/// Builds a grain of one type for a key.
pub(crate) type Factory<G> = Arc<dyn Fn(&str) -> G + Send + Sync>;

/// What one node's grain service shares between its router, its hosts and its callers.
pub(crate) struct Shared {
    pub(crate) node: WeakNode,
    /// The node's registry index, read by every call and message without the node.
    pub(crate) index: RegistryIndex,
    /// The node's runtime, which sends calls straight to known activations.
    pub(crate) rt: Runtime,
    pub(crate) me: NodeId,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) call_timeout: Duration,
    pub(crate) store: Option<Arc<dyn GrainStore>>,
    /// Copies of `Replicated` state on other nodes.
    pub(crate) replicas: usize,
    pub(crate) placement: Arc<dyn Placement>,
    /// This node's own router.
    pub(crate) router: OnceLock<ActorRef<GrainRouter>>,
    pub(crate) types: RwLock<HashMap<String, Arc<dyn Activator>>>,
    /// The live activations on this node. A router delivers to one while holding this
    /// lock, and a host leaves it under the same lock before it answers "try again", so no
    /// delivery can reach a host after it has decided to go.
    pub(crate) active: Mutex<HashMap<GrainId, Arc<dyn HostSender>>>,
    /// Where grains were last found (the directory cache).
    /// (Read by every call, written only when a call finds it changed: a read-write lock,
    /// so that the callers on a runtime's threads do not queue for it.)
    pub(crate) cache: RwLock<HashMap<GrainId, Cached, CacheHash>>,
    /// Routers of other nodes, as found in the process table.
    pub(crate) routers: Mutex<HashMap<NodeId, ActorRef<GrainRouter>>>,
    pub(crate) activations: AtomicU64,
    pub(crate) deactivations: AtomicU64,
    pub(crate) migrations: AtomicU64,
    pub(crate) adoptions: AtomicU64,
}

impl Shared {
    pub(crate) fn registry(node: &Node, id: &GrainId) -> Option<Activation> {
        node.lock_holder(&id.lock_name())
            .map(|(pid, epoch)| Activation { pid, epoch })
    }

    /// The router of `target`: this node's own, or another's from the process table.
    pub(crate) fn router_of(&self, node: &Node, target: NodeId) -> Option<ActorRef<GrainRouter>> {
        if target == self.me {
            return self.router.get().cloned();
        }
        let creation = node.peer_creation(target);
        let mut routers = self.routers.lock().unwrap_or_else(|e| e.into_inner());
        let cached = routers.get(&target);
        if let Some(r) = cached
            && core::router_current(r.pid(), creation)
        {
            return Some(r.clone());
        }
        let advertised = node
            .find_by_type("GrainRouter")
            .into_iter()
            .map(|ad| ad.pid);
        let Some(pid) = core::router_of(target, creation, advertised) else {
            routers.remove(&target);
            return None;
        };
        let router = node.runtime().remote_ref::<GrainRouter>(pid);
        routers.insert(target, router.clone());
        Some(router)
    }

    pub(crate) fn forget_router(&self, target: NodeId) {
        self.routers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&target);
    }

    /// The directory cache's entry for `id`.
    pub(crate) fn cached(&self, id: &GrainId) -> Option<Cached> {
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        cache.get(id).copied()
    }

    pub(crate) fn cache_set(&self, id: &GrainId, entry: Cached) {
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        cache.insert(id.clone(), entry);
    }

    pub(crate) fn cache_insert(&self, id: &GrainId, a: Activation) {
        self.cache_set(id, Cached::new(a));
    }

    pub(crate) fn cache_remove(&self, id: &GrainId) {
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        cache.remove(id);
    }

    pub(crate) fn forget_host(&self, id: &GrainId, pid: Pid, then: impl FnOnce()) {
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        if active.get(id).is_some_and(|h| h.pid() == pid) {
            active.remove(id);
        }
        then();
    }
}

/// The directory cache's hasher: every call hashes its grain's id, and SipHash was a
/// measurable part of a call's cost. Seeded per process, so colliding keys are hard to plan.
pub(crate) type CacheHash = foldhash::fast::RandomState;

/// One entry of the directory cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cached {
    pub(crate) at: Activation,
    /// The registry index at which this node's registry replica was last found to show
    /// nothing newer than `at` (0: not checked). The registry changes only with its index,
    /// so while the index stays there a call need not look it up again.
    pub(crate) checked: u64,
}

impl Cached {
    pub(crate) fn new(at: Activation) -> Self {
        Cached { at, checked: 0 }
    }
}

/// What a caller asks of a grain. (Byte fields travel as byte strings: the same bytes on the
/// wire as a sequence of numbers, without encoding and decoding each byte on its own.)
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Request {
    /// Handle this encoded message (and answer with the reply, for a call).
    Msg {
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
        want_reply: bool,
    },
    /// Move to `target`: answered with the new activation once it holds the claim.
    Migrate { target: NodeId },
}

/// The state a migrating activation hands to its successor.
pub(crate) struct Handed {
    pub(crate) state: Vec<u8>,
    /// The epoch of the activation that handed it over.
    pub(crate) from_epoch: u64,
}

/// One request for a grain, as its router hands it to the activation.
pub(crate) struct Delivery {
    pub(crate) request: Request,
    pub(crate) reply: ReplyTo<Answer>,
    /// Sent straight to the activation ([`core::direct`]): answered
    /// [`Answer::Replied`], without the activation the caller already knows.
    pub(crate) direct: bool,
}

/// A host process of some grain type, seen by the router.
pub(crate) trait HostSender: Send + Sync {
    fn pid(&self) -> Pid;
    /// Queues `delivery`, or hands it back if the host has exited.
    fn deliver(&self, delivery: Delivery) -> Result<(), Delivery>;
    /// Asks the host to deactivate now (saving its state).
    fn deactivate(&self);
    /// The grain type's durability and requirements.
    fn kind(&self) -> (Durability, &'static [&'static str]);
}

/// Starts activations of one grain type.
pub(crate) trait Activator: Send + Sync {
    fn durability(&self) -> Durability;
    /// Starts a host for `id`; `adopt` carries the state of a migrating activation.
    fn start(
        &self,
        shared: &Arc<Shared>,
        rt: &Runtime,
        id: GrainId,
        adopt: Option<Handed>,
    ) -> Arc<dyn HostSender>;
}

/// The first bytes of every direct call, by which a node recognises one addressed to a
/// process that no longer exists.
pub(crate) const DIRECT_TAG: [u8; 8] = *b"atoll.gd";

/// A call sent straight to the process of an activation on another node (the caller's
/// cached address), bypassing that node's router.
#[derive(Serialize, Deserialize)]
pub(crate) struct DirectCall {
    /// [`DIRECT_TAG`].
    pub(crate) tag: [u8; 8],
    pub(crate) request: Request,
    pub(crate) reply: GuardedReply,
}

impl DirectCall {
    pub(crate) fn new(request: Request, reply: ReplyTo<Answer>) -> Self {
        DirectCall {
            tag: DIRECT_TAG,
            request,
            reply: GuardedReply(Some(reply)),
        }
    }

    /// Decodes a direct call (one whose bytes start with [`DIRECT_TAG`]); needs a node's
    /// codec context for the reply handle.
    pub(crate) fn decode(bytes: &[u8]) -> Result<DirectCall, String> {
        if !bytes.starts_with(&DIRECT_TAG) {
            return Err("not a direct grain call".into());
        }
        postcard::from_bytes(bytes).map_err(|e| e.to_string())
    }
}

/// A direct call's reply handle. Dropped before a host took the call (it found no process,
/// or waited in the mailbox of a host that stopped, or a full one) it answers
/// [`Answer::Gone`]: the message was not handled and the caller asks the router. A host
/// takes the handle out before it handles the message, so a message that may have been
/// handled is never answered so.
pub(crate) struct GuardedReply(Option<ReplyTo<Answer>>);

impl GuardedReply {
    pub(crate) fn take(&mut self) -> Option<ReplyTo<Answer>> {
        self.0.take()
    }
}

impl Drop for GuardedReply {
    fn drop(&mut self) {
        if let Some(reply) = self.0.take() {
            reply.reply(Answer::Gone);
        }
    }
}

impl Serialize for GuardedReply {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Some(reply) => reply.serialize(s),
            None => Err(serde::ser::Error::custom("this reply handle was taken")),
        }
    }
}

impl<'de> Deserialize<'de> for GuardedReply {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        ReplyTo::deserialize(d).map(|r| GuardedReply(Some(r)))
    }
}

/// A grain host as a caller on another node addresses it for a direct call: it types the
/// remote reference and is never instantiated (hosts are [`crate::host::GrainHost`]s,
/// which decode these calls).
pub(crate) enum HostEndpoint {}

impl Actor for HostEndpoint {
    type Msg = DirectCall;

    async fn handle(&mut self, _: DirectCall, _: &mut Ctx<Self>) -> ActorResult {
        match *self {}
    }
}

/// The runtime's hook for messages addressed to processes that no longer exist here: a
/// direct grain call among them is answered [`Answer::Gone`] (by its reply handle, dropped
/// unanswered), so its caller goes through the router at once instead of timing out.
pub(crate) fn undeliverable(_: &Runtime, _: NodeId, _: Pid, payload: &[u8]) -> bool {
    DirectCall::decode(payload).is_ok()
}

/// Decodes a direct call from `peer` with `rt` as the codec context, and drops it.
pub(crate) fn undeliverable_from(rt: &Runtime, peer: NodeId, payload: &[u8]) -> bool {
    if !payload.starts_with(&DIRECT_TAG) {
        return false;
    }
    atoll_actor::decode_from::<DirectCall>(rt, peer, payload).is_ok()
}

/// The bytes of a direct call as a caller sends it (the reply handle as its wire form).
pub(crate) fn direct_call_bytes(payload: &[u8], reply_node: NodeId, call: u64) -> Vec<u8> {
    let request = Request::Msg {
        payload: payload.to_vec(),
        want_reply: true,
    };
    postcard::to_allocvec(&(DIRECT_TAG, request, (reply_node, call))).unwrap_or_default()
}
