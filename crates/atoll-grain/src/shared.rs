//! What one node's grain service shares between its router, its hosts and its callers,
//! and the seams between them: the requests callers send, and how the router reaches a
//! host and starts one.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use atoll_actor::{ActorRef, ReplyTo, Runtime};
use atoll_cluster::{Node, WeakNode};
use atoll_core::{NodeId, Pid};
use serde::{Deserialize, Serialize};

use crate::core::{Activation, Answer, GrainId};
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
    pub(crate) cache: Mutex<HashMap<GrainId, Cached>>,
    /// Routers of other nodes, as found in the process table.
    pub(crate) routers: Mutex<HashMap<NodeId, ActorRef<GrainRouter>>>,
    /// Every node ever seen that may hold `Replicated` copies, lost ones included: read
    /// quorums count against it, because a copy written while a node was a member stays
    /// on that node after the membership shrinks.
    pub(crate) copy_holders: Mutex<std::collections::BTreeSet<NodeId>>,
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
        let mut routers = self.routers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = routers.get(&target) {
            return Some(r.clone());
        }
        let pid = node
            .find_by_type("GrainRouter")
            .into_iter()
            .map(|ad| ad.pid)
            .filter(|pid| pid.node == target)
            .max_by_key(|pid| (pid.creation, pid.serial))?;
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

    pub(crate) fn cache_insert(&self, id: &GrainId, a: Activation) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.insert(id.clone(), Cached::new(a));
    }

    pub(crate) fn cache_remove(&self, id: &GrainId) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
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

/// What a caller asks of a grain.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Request {
    /// Handle this encoded message (and answer with the reply, for a call).
    Msg { payload: Vec<u8>, want_reply: bool },
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
    fn requires(&self) -> &'static [&'static str];
    /// Starts a host for `id`; `adopt` carries the state of a migrating activation.
    fn start(
        &self,
        shared: &Arc<Shared>,
        rt: &Runtime,
        id: GrainId,
        adopt: Option<Handed>,
    ) -> Arc<dyn HostSender>;
}
