//! The grain service of one node and the references callers use.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use atoll_actor::{ActorRef, CallError};
use atoll_cluster::Node;
use atoll_core::NodeId;
use tokio::time::Instant;

use crate::core::{self, Activation, Failure, GrainId, MAX_KEY_LEN, Outcome, Refusal, Route, Step};
use crate::host::TypedActivator;
use crate::placement::{Placement, PlacementView, TwoChoices};
use crate::rebalance::Rebalance;
use crate::router::{GrainRouter, RouterMsg};
use crate::shared::{Cached, DirectCall, HostEndpoint, ROUTER, Request, Shared};
use crate::{Durability, Grain, GrainStore};

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
            me: node.id(),
            idle_timeout: config.idle_timeout,
            call_timeout: config.call_timeout,
            store: config.store,
            replicas: config.replicas,
            placement: config.placement,
            router: Default::default(),
            types: RwLock::new(HashMap::new()),
            active: Mutex::new(HashMap::new()),
            cache: Mutex::new(HashMap::new()),
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
        Ok(GrainRef {
            grains: Ok(self.clone()),
            id: GrainId::new(G::TYPE, key),
            _grain: PhantomData,
        })
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
        let cache = self.shared.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.get(id).map(|c| c.at)
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

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<GrainId, Cached>> {
        self.shared.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn place(
        &self,
        node: &Node,
        id: &GrainId,
        requires: &[&str],
        durability: Durability,
    ) -> Option<NodeId> {
        let ring = node.ring();
        let mut load: HashMap<NodeId, u64> = HashMap::new();
        let mut hosts: HashMap<NodeId, u64> = HashMap::new();
        for ad in node.cluster_processes() {
            *load.entry(ad.pid.node).or_default() += u64::from(ad.resource_summary.load);
            if ad.agent_type == "GrainHost" {
                *hosts.entry(ad.pid.node).or_default() += 1;
            }
        }
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

    /// Delivers `request` to grain `id`, retrying redirects and unreachable nodes (and, with
    /// `resend`, requests whose host was lost) until the call timeout: the activation that
    /// took it and the encoded reply of a call. A migration (`durability` none) goes only to
    /// a known activation.
    async fn deliver(
        &self,
        id: &GrainId,
        requires: &[&str],
        durability: Option<Durability>,
        resend: bool,
        request: Request,
    ) -> Result<(Activation, Option<Vec<u8>>), GrainError> {
        let node = self.shared.node.upgrade().ok_or(GrainError::NodeGone)?;
        let deadline = Instant::now() + self.shared.call_timeout;
        let mut last: Option<Failure> = None;
        let mut attempt = 0;
        // The process that answered a direct call of this one with `Gone`.
        let mut gone: Option<atoll_core::Pid> = None;
        let message = matches!(request, Request::Msg { .. });
        loop {
            let index = node.registry_index();
            let entry = self.cache().get(id).copied();
            let cached = entry.map(|e| e.at);
            let registry = match entry {
                Some(e) if index != 0 && e.checked == index => None,
                _ => Shared::registry(&node, id),
            };
            let route = core::route(cached, registry, || match durability {
                Some(d) => self.place(&node, id, requires, d),
                None => Some(self.shared.me),
            });
            let outcome = match route {
                Route::Nowhere => {
                    return Err(GrainError::NoEligibleNode {
                        grain_type: id.grain_type.clone(),
                        requires: requires.iter().map(|r| r.to_string()).collect(),
                    });
                }
                Route::Known(a) => {
                    let to = Target {
                        node: a.pid.node,
                        activation: Some(a),
                        resend,
                        called: None,
                    };
                    let direct = core::direct(self.shared.me, a, gone, message);
                    let outcome = self
                        .attempt(&node, to, id, &request, direct, deadline)
                        .await;
                    if direct && outcome == Outcome::Answered(core::Answer::Gone) {
                        gone = Some(a.pid);
                    }
                    outcome
                }
                Route::Place(n) => {
                    let to = Target {
                        node: n,
                        activation: None,
                        resend,
                        called: None,
                    };
                    self.attempt(&node, to, id, &request, false, deadline).await
                }
            };
            match core::after(outcome, attempt, resend) {
                Step::Done { by, reply } => {
                    // Written only when it changed: most calls find it as it was.
                    let entry_now = Cached {
                        at: by,
                        checked: core::registry_checked(index, registry, by),
                    };
                    if entry != Some(entry_now) {
                        self.cache().insert(id.clone(), entry_now);
                    }
                    return Ok((by, reply));
                }
                Step::Retry {
                    forget,
                    learn,
                    backoff,
                    last_error,
                } => {
                    {
                        let mut cache = self.cache();
                        if forget {
                            cache.remove(id);
                        }
                        if let Some(a) = learn {
                            cache.insert(id.clone(), Cached::new(a));
                        }
                    }
                    last = last_error.or(last);
                    if Instant::now() + backoff >= deadline {
                        return Err(self.error(id, last.unwrap_or(Failure::NoAnswer)));
                    }
                    tokio::time::sleep(backoff).await;
                }
                Step::Fail(f) => return Err(self.error(id, f)),
            }
            attempt += 1;
        }
    }

    fn error(&self, id: &GrainId, failure: Failure) -> GrainError {
        match GrainError::from(failure) {
            GrainError::UnknownType { .. } => GrainError::UnknownType {
                grain_type: id.grain_type.clone(),
            },
            other => other,
        }
    }

    /// One attempt: the delivery to `to`'s router, or (`direct`, [`core::direct`]) straight
    /// to the known activation's process, and what came of it. With `to.resend`, a host
    /// found lost ([`core::host_lost`]) while the call waits ends the wait at once.
    async fn attempt(
        &self,
        node: &Node,
        to: Target,
        id: &GrainId,
        request: &Request,
        direct: bool,
        deadline: Instant,
    ) -> Outcome {
        let host = match to.activation {
            Some(a) if direct => Ok(node.runtime().remote_ref::<HostEndpoint>(a.pid)),
            _ => match self.shared.router_of(node, to.node) {
                Some(router) => Err(router),
                None => return Outcome::Unreachable,
            },
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let called = match &host {
            Ok(host) => host.pid(),
            Err(router) => router.pid(),
        };
        let call = async {
            match &host {
                Ok(host) => {
                    host.call(|reply| DirectCall::new(request.clone(), reply), left)
                        .await
                }
                Err(router) => {
                    router
                        .call(
                            |reply| RouterMsg::Deliver {
                                grain_type: id.grain_type.clone(),
                                key: id.key.clone(),
                                request: request.clone(),
                                reply,
                            },
                            left,
                        )
                        .await
                }
            }
        };
        let to = Target {
            called: Some(called),
            ..to
        };
        let answered = if to.resend {
            tokio::select! {
                answered = call => answered,
                () = self.host_lost(node, id, to, deadline) => return Outcome::HostLost,
            }
        } else {
            call.await
        };
        match answered {
            Ok(answer) => Outcome::Answered(answer),
            Err(CallError::NoProc | CallError::NoConnection) => {
                self.shared.forget_router(to.node);
                Outcome::Unreachable
            }
            Err(CallError::Unencodable(e)) => {
                Outcome::Answered(core::Answer::Failed(format!("cannot send: {e}")))
            }
            Err(CallError::Timeout | CallError::NoReply) => {
                self.shared.forget_router(to.node);
                // The connection dropped under the call: whether the host is lost decides.
                let lost = to.resend
                    && tokio::time::timeout_at(deadline, self.host_lost(node, id, to, deadline))
                        .await
                        .is_ok();
                if lost {
                    Outcome::HostLost
                } else {
                    Outcome::NoAnswer
                }
            }
        }
    }

    /// Returns once the host `to` of a call is lost ([`core::host_lost`]), looking every
    /// [`LOST_POLL`] until `deadline` (and waiting on after it: callers bound it).
    async fn host_lost(&self, node: &Node, id: &GrainId, to: Target, deadline: Instant) {
        loop {
            tokio::time::sleep(LOST_POLL).await;
            let live = to.node == self.shared.me
                || node.membership().is_some_and(|swim| {
                    swim.members()
                        .iter()
                        .any(|m| m.identity.node == to.node && m.state.is_live())
                });
            // A newer incarnation of the node's router: the node restarted under the call.
            let restarted = to.called.is_some_and(|called| {
                node.find_by_type("GrainRouter")
                    .iter()
                    .any(|ad| ad.pid.node == called.node && ad.pid.creation > called.creation)
            });
            if restarted {
                self.shared.forget_router(to.node);
            }
            let holder = Shared::registry(node, id);
            let applied = node.registry_index();
            if core::host_lost(to.activation, restarted, live, applied, holder) {
                return;
            }
            if Instant::now() >= deadline {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// How often a call waiting for its answer looks whether its host was lost.
const LOST_POLL: Duration = Duration::from_millis(50);

/// Where one attempt of a call goes.
#[derive(Debug, Clone, Copy)]
struct Target {
    node: NodeId,
    /// The activation it goes to, if known (none: placement chose the node).
    activation: Option<Activation>,
    /// The grain type's [`Grain::RESEND_IN_DOUBT`].
    resend: bool,
    /// The process the attempt called: the router, or the activation's own for a direct call.
    called: Option<atoll_core::Pid>,
}

/// A reference to one grain, addressed by its type and key; any node can make one with
/// [`Grains::get`] without knowing where (or whether) the grain is active.
pub struct GrainRef<G: Grain> {
    /// The service calls go through, or why there is none (reported by the first call).
    grains: Result<Grains, GrainError>,
    id: GrainId,
    _grain: PhantomData<fn() -> G>,
}

impl<G: Grain> Clone for GrainRef<G> {
    fn clone(&self) -> Self {
        GrainRef {
            grains: self.grains.clone(),
            id: self.id.clone(),
            _grain: PhantomData,
        }
    }
}

impl<G: Grain> std::fmt::Debug for GrainRef<G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GrainRef({})", self.id)
    }
}

impl<G: Grain> GrainRef<G> {
    /// The grain's identity.
    pub fn id(&self) -> &GrainId {
        &self.id
    }

    /// Sends `msg` and waits for the grain's reply, activating the grain if it is not
    /// active. A message the grain surely did not take (redirected, its activation
    /// ending, its node unreachable, its state not restorable yet) is sent again until the
    /// call timeout. So is one whose host was lost while the call waited (its node declared
    /// dead and the claim released), when the type allows it ([`Grain::RESEND_IN_DOUBT`]):
    /// the next activation answers it and the caller sees the failover only as a slower
    /// call. Any other message that may have been taken is not sent again
    /// ([`GrainError::Timeout`]).
    pub async fn call(&self, msg: G::Msg) -> Result<G::Reply, GrainError> {
        let grains = self.grains.as_ref().map_err(Clone::clone)?;
        let payload = postcard::to_allocvec(&msg).map_err(|e| GrainError::Codec(e.to_string()))?;
        let request = Request::Msg {
            payload,
            want_reply: true,
        };
        let (_, reply) = grains
            .deliver(
                &self.id,
                G::REQUIRES,
                Some(G::DURABILITY),
                G::RESEND_IN_DOUBT,
                request,
            )
            .await?;
        let reply =
            reply.ok_or_else(|| GrainError::Codec("a call answered without a reply".into()))?;
        postcard::from_bytes(&reply).map_err(|e| GrainError::Codec(e.to_string()))
    }

    /// Sends `msg` without waiting for it to be handled: returns once the activation has
    /// taken it (activating the grain if needed). Awaiting each send before the next keeps
    /// one sender's messages in order.
    pub async fn send(&self, msg: G::Msg) -> Result<(), GrainError> {
        let grains = self.grains.as_ref().map_err(Clone::clone)?;
        let payload = postcard::to_allocvec(&msg).map_err(|e| GrainError::Codec(e.to_string()))?;
        let request = Request::Msg {
            payload,
            want_reply: false,
        };
        grains
            .deliver(
                &self.id,
                G::REQUIRES,
                Some(G::DURABILITY),
                G::RESEND_IN_DOUBT,
                request,
            )
            .await
            .map(|_| ())
    }

    /// Moves this grain's activation to `target` ([`Grains::migrate`]).
    pub async fn migrate(&self, target: NodeId) -> Result<Activation, GrainError> {
        let grains = self.grains.as_ref().map_err(Clone::clone)?;
        grains.migrate(&self.id, target).await
    }

    pub(crate) fn unavailable(id: GrainId, why: GrainError) -> Self {
        GrainRef {
            grains: Err(why),
            id,
            _grain: PhantomData,
        }
    }
}
