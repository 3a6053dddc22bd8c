//! The grain service of one node and the references callers use.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use atoll_actor::ActorRef;
use atoll_cluster::Node;
use atoll_core::NodeId;
use tokio::time::Instant;

use crate::core::{self, Activation, Failure, GrainId, MAX_KEY_LEN, Refusal};
use crate::host::TypedActivator;
use crate::placement::{Placement, PlacementView, TwoChoices};
use crate::rebalance::Rebalance;
use crate::router::GrainRouter;
use crate::shared::{ROUTER, Request, Shared};
use crate::{Durability, Grain, GrainStore};

mod deliver;
mod grain_ref;

pub use grain_ref::GrainRef;

/// How a node runs grains.
#[derive(Clone)]
pub struct GrainsConfig {
    /// Deactivate an activation after this long without a message (`None`: never). The
    /// default is five minutes.
    pub idle_timeout: Option<Duration>,
    /// How long a call (or a one-way send, until the grain accepts it) may take, retries
    /// included. The default is ten seconds.
    pub call_timeout: Duration,
    /// Where `LocalExclusive` state lives on this node ([`crate::RedbStore`] for the
    /// embedded default). Without one, only `Volatile` grain types can be registered.
    pub store: Option<Arc<dyn GrainStore>>,
    /// Chooses the node for new activations; [`TwoChoices`] by default.
    pub placement: Arc<dyn Placement>,
    /// How many nodes other than the host hold each save of a `Replicated` grain before it
    /// is acknowledged. The default is 2.
    pub replicas: usize,
    /// Moves activations off this node when it holds too many more than the least loaded
    /// node (`None`, the default: never on its own).
    pub rebalance: Option<Rebalance>,
}

impl std::fmt::Debug for GrainsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrainsConfig")
            .field("idle_timeout", &self.idle_timeout)
            .field("call_timeout", &self.call_timeout)
            .field("store", &self.store.is_some())
            .field("replicas", &self.replicas)
            .field("rebalance", &self.rebalance)
            .finish_non_exhaustive()
    }
}

impl Default for GrainsConfig {
    fn default() -> Self {
        GrainsConfig {
            idle_timeout: Some(Duration::from_secs(300)),
            call_timeout: Duration::from_secs(10),
            store: None,
            placement: Arc::new(TwoChoices),
            replicas: 2,
            rebalance: None,
        }
    }
}

impl GrainsConfig {
    /// This configuration with `store` for `LocalExclusive` state.
    pub fn with_store(mut self, store: impl GrainStore) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// This configuration with idle activations deactivating after `idle`.
    pub fn with_idle_timeout(mut self, idle: Duration) -> Self {
        self.idle_timeout = Some(idle);
        self
    }
}

/// A grain call or send that did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrainError {
    /// The node asked to host the grain has no factory for its type (every node that may
    /// host a type must register it). Nothing was handled.
    #[error("grain type {grain_type:?} is not registered on the hosting node")]
    UnknownType {
        /// The grain type.
        grain_type: String,
    },
    /// No live member announces every capability the grain type requires. Nothing was
    /// handled.
    #[error("no node can host {grain_type:?} (requires {requires:?})")]
    NoEligibleNode {
        /// The grain type.
        grain_type: String,
        /// Its requirements.
        requires: Vec<String>,
    },
    /// The key is longer than [`MAX_KEY_LEN`]. Nothing was sent.
    #[error("grain key of {len} bytes is longer than {max}")]
    KeyTooLong {
        /// The key's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The message was sent and no answer came back in time: it may have been handled.
    #[error("no answer from the grain within the call timeout")]
    Timeout,
    /// The grain could not be claimed within the call timeout (no consensus quorum).
    /// Nothing was handled.
    #[error("the grain could not be activated: {0}")]
    Unavailable(String),
    /// No node that hosts or may host the grain could be reached within the call timeout.
    /// Nothing was handled.
    #[error("the grain's node could not be reached")]
    Unreachable,
    /// The message or reply did not encode or decode. The message was not handled, or (a
    /// reply that does not decode) handled and its answer lost.
    #[error("grain codec: {0}")]
    Codec(String),
    /// The activation failed (its state did not load or `on_activate` failed).
    #[error("{0}")]
    Failed(String),
    /// This node has shut down.
    #[error("the node has shut down")]
    NodeGone,
    /// No grain service runs on the node a reference was made from
    /// ([`crate::NodeGrainsExt::grain`]).
    #[error("no grain service runs on this node")]
    NoService,
    /// A migration found the grain not active anywhere (nothing to move: its next call
    /// activates it wherever placement chooses).
    #[error("the grain is not active")]
    NotActive,
    /// A migration was refused.
    #[error("migration refused: {0}")]
    Refused(Refusal),
}

impl From<Failure> for GrainError {
    fn from(f: Failure) -> Self {
        match f {
            // The grain type is filled in by the caller.
            Failure::UnknownType => GrainError::UnknownType {
                grain_type: String::new(),
            },
            Failure::Unavailable(e) => GrainError::Unavailable(e),
            Failure::Failed(e) => GrainError::Failed(e),
            Failure::NoAnswer => GrainError::Timeout,
            Failure::Unreachable => GrainError::Unreachable,
            Failure::NotActive => GrainError::NotActive,
            Failure::Refused(r) => GrainError::Refused(r),
        }
    }
}

/// Registering a grain type failed; nothing was registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// The type keeps `LocalExclusive` or `Replicated` state and this node has no store.
    #[error("grain type {0:?} needs a store: set GrainsConfig::store")]
    NoStore(String),
    /// The type name is empty or holds a '/'.
    #[error("grain type name {0:?} must be non-empty and hold no '/'")]
    BadName(String),
}

/// What a node's grain service has done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GrainStats {
    /// Activations started here (those that arrived by migration included).
    pub activations: u64,
    /// Activations that deactivated here (idle, shutdown, or stopped on losing their
    /// claim).
    pub deactivations: u64,
    /// Activations that migrated from here to another node.
    pub migrations: u64,
    /// Activations that arrived here by migration.
    pub adoptions: u64,
    /// Activations live here now.
    pub active: usize,
}

/// One node's grain service: hosts activations placed here and makes [`GrainRef`]s.
///
/// Start one on every node of the cluster that may host or call grains, and register the
/// same grain types on each ([`Grains::register`]). Grains need consensus
/// ([`atoll_cluster::ConsensusConfig`]) for their activation claims.
///
/// ```no_run
/// # use atoll_grain::{Grain, GrainCtx, Grains, GrainsConfig, RedbStore};
/// # struct Account;
/// # impl Grain for Account {
/// #     const TYPE: &'static str = "account";
/// #     type State = u64; type Msg = u64; type Reply = u64;
/// #     async fn handle(&mut self, n: u64, ctx: &mut GrainCtx<Self>) -> u64 {
/// #         *ctx.state_mut() += n; *ctx.state()
/// #     }
/// # }
/// # async fn demo(node: atoll_cluster::Node) -> Result<(), Box<dyn std::error::Error>> {
/// let config = GrainsConfig::default().with_store(RedbStore::open("grains.redb")?);
/// let grains = Grains::start(&node, config);
/// grains.register(|_key| Account)?;
/// let alice = grains.get::<Account>("alice")?;
/// let balance = alice.call(100).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Grains {
    pub(crate) shared: Arc<Shared>,
    pub(crate) router: ActorRef<GrainRouter>,
}

impl std::fmt::Debug for Grains {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grains")
            .field("node", &self.shared.me)
            .finish_non_exhaustive()
    }
}

impl Grains {
    /// Starts the grain service on `node`: its router process, registered locally as
    /// `atoll.grains` and found by other nodes in the process table.
    pub fn start(node: &Node, config: GrainsConfig) -> Grains {
        let shared = Arc::new(Shared {
            node: node.downgrade(),
            index: node.registry_index_handle(),
            rt: node.runtime().clone(),
            me: node.id(),
            idle_timeout: config.idle_timeout,
            call_timeout: config.call_timeout,
            store: config.store,
            replicas: config.replicas,
            placement: config.placement,
            router: Default::default(),
            types: RwLock::new(HashMap::new()),
            active: Mutex::new(HashMap::new()),
            cache: RwLock::new(HashMap::default()),
            routers: Mutex::new(HashMap::new()),
            activations: Default::default(),
            deactivations: Default::default(),
            migrations: Default::default(),
            adoptions: Default::default(),
        });
        let router = node.runtime().spawn(GrainRouter {
            shared: shared.clone(),
        });
        let _ = shared.router.set(router.clone());
        // A second service on the same node keeps working through its own handle.
        let _ = node.runtime().register(ROUTER, router.pid());
        // Direct calls to activations that ended here are answered, not left to time out.
        node.runtime()
            .on_undeliverable("atoll.grains", crate::shared::undeliverable);
        let grains = Grains { shared, router };
        crate::ext::publish(node, &grains);
        if let Some(rebalance) = config.rebalance {
            crate::rebalance::start(&grains, rebalance);
        }
        grains
    }

    /// Lets this node host grains of type `G`, built by `make` from the key on activation.
    pub fn register<G: Grain>(
        &self,
        make: impl Fn(&str) -> G + Send + Sync + 'static,
    ) -> Result<(), RegisterError> {
        if G::TYPE.is_empty() || G::TYPE.contains('/') {
            return Err(RegisterError::BadName(G::TYPE.to_string()));
        }
        if G::DURABILITY != Durability::Volatile && self.shared.store.is_none() {
            return Err(RegisterError::NoStore(G::TYPE.to_string()));
        }
        let activator = TypedActivator::<G> {
            make: Arc::new(make),
        };
        self.shared
            .types
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(G::TYPE.to_string(), Arc::new(activator));
        Ok(())
    }

    /// A reference to the grain `key` of type `G`. Nothing is sent until it is called.
    pub fn get<G: Grain>(&self, key: &str) -> Result<GrainRef<G>, GrainError> {
        if key.len() > MAX_KEY_LEN {
            return Err(GrainError::KeyTooLong {
                len: key.len(),
                max: MAX_KEY_LEN,
            });
        }
        Ok(GrainRef::new(Ok(self.clone()), GrainId::new(G::TYPE, key)))
    }

    /// Moves the activation of `id` to `target`, and returns the new activation.
    ///
    /// The activation finishes the message it is handling, runs `on_deactivate`, saves
    /// (durable classes), and starts a new activation on `target` with its state (for
    /// `Volatile` grains too: the state travels in memory); the claim passes to it
    /// directly, under a larger epoch. Messages that arrive during the move wait and are
    /// then handed to the new activation: none is lost, each sender's stay in order, and
    /// callers get their replies as usual. A `LocalExclusive` grain's state moves to the
    /// target's store, which holds it from then on. A grain with no activation gives
    /// [`GrainError::NotActive`].
    /// If the move cannot complete (the target does not answer or cannot host the type)
    /// the activation stays where it was, `on_deactivate` having run.
    pub async fn migrate(&self, id: &GrainId, target: NodeId) -> Result<Activation, GrainError> {
        match self
            .deliver(id, &[], None, false, Request::Migrate { target })
            .await
        {
            Ok((by, _)) => Ok(by),
            // Already moved (a retry after the move, or a second request).
            Err(GrainError::Refused(Refusal::AlreadyThere)) => self
                .cached(id)
                .ok_or(GrainError::Refused(Refusal::AlreadyThere)),
            Err(e) => Err(e),
        }
    }

    /// Deactivates every activation on this node, saving durable state and releasing the
    /// claims, and waits (up to the call timeout) until none is left. Do this before
    /// [`Node::shutdown`], while the cluster is still reachable: the claims are released
    /// through consensus, and `Replicated` saves need their replicas.
    pub async fn shutdown(&self) {
        let hosts: Vec<Arc<dyn crate::shared::HostSender>> = {
            let active = self.shared.active.lock().unwrap_or_else(|e| e.into_inner());
            active.values().cloned().collect()
        };
        for host in &hosts {
            host.deactivate();
        }
        let deadline = Instant::now() + self.shared.call_timeout;
        while !self.active().is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// What this node's service has done.
    pub fn stats(&self) -> GrainStats {
        GrainStats {
            activations: self.shared.activations.load(Ordering::Relaxed),
            deactivations: self.shared.deactivations.load(Ordering::Relaxed),
            migrations: self.shared.migrations.load(Ordering::Relaxed),
            adoptions: self.shared.adoptions.load(Ordering::Relaxed),
            active: self.active().len(),
        }
    }

    /// The grains with a live activation on this node.
    pub fn active(&self) -> Vec<GrainId> {
        let active = self.shared.active.lock().unwrap_or_else(|e| e.into_inner());
        let mut ids: Vec<GrainId> = active.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// The durability class of grain type `grain_type`, if it is registered on this node.
    pub fn durability(&self, grain_type: &str) -> Option<Durability> {
        let types = self.shared.types.read().unwrap_or_else(|e| e.into_inner());
        types.get(grain_type).map(|a| a.durability())
    }

    /// Where this node last found `id` (its directory cache), if it knows.
    pub fn cached(&self, id: &GrainId) -> Option<Activation> {
        self.shared.cached(id).map(|c| c.at)
    }

    /// The activation of `id` as this node's registry replica shows its claim.
    pub fn registered(&self, id: &GrainId) -> Option<Activation> {
        let node = self.shared.node.upgrade()?;
        Shared::registry(&node, id)
    }

    /// This node's store for `LocalExclusive` state, if it has one.
    pub fn store(&self) -> Option<Arc<dyn GrainStore>> {
        self.shared.store.clone()
    }

    fn place(
        &self,
        node: &Node,
        id: &GrainId,
        requires: &[&str],
        durability: Durability,
    ) -> Option<NodeId> {
        let ring = node.ring();
        // Summed in place: every activation places, and the table holds every process of
        // the cluster (copying it made activations slower as grains accumulated).
        let empty = (HashMap::<NodeId, u64>::new(), HashMap::<NodeId, u64>::new());
        let (mut load, hosts) = node.fold_cluster_processes(empty, |(mut load, mut hosts), ad| {
            *load.entry(ad.pid.node).or_default() += u64::from(ad.resource_summary.load);
            if ad.agent_type == "GrainHost" {
                *hosts.entry(ad.pid.node).or_default() += 1;
            }
            (load, hosts)
        });
        let claims = node.lock_counts_by_node(core::LOCK_PREFIX);
        crate::placement::with_claims(&mut load, &hosts, claims);
        self.shared.placement.place(&PlacementView {
            id,
            requires,
            ring: &ring,
            load: &load,
            durability,
        })
    }
}
