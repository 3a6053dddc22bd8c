//! The processes behind grains on one node: the router that takes deliveries from callers
//! (here or on other nodes), and one host process per activation, which holds the
//! activation's claim and runs the grain.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use atoll_actor::{
    Actor, ActorRef, ActorResult, Ctx, Decoder, Down, ExitReason, ReplyTo, Runtime, serde_decoder,
};
use atoll_cluster::{LockError, LockGuard, Node, WeakNode};
use atoll_core::{NodeId, Pid};
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use crate::core::{self, Activation, Answer, Arrival, GrainId, Refusal};
use crate::placement::Placement;
use crate::replica::{self, ReplicaAnswer, Saver};
use crate::{Durability, Grain, GrainCtx, GrainStore};

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
    pub(crate) cache: Mutex<HashMap<GrainId, Activation>>,
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
        cache.insert(id.clone(), a);
    }

    pub(crate) fn cache_remove(&self, id: &GrainId) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.remove(id);
    }

    fn forget_host(&self, id: &GrainId, pid: Pid, then: impl FnOnce()) {
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        if active.get(id).is_some_and(|h| h.pid() == pid) {
            active.remove(id);
        }
        then();
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

impl<G: Grain> HostSender for ActorRef<GrainHost<G>> {
    fn pid(&self) -> Pid {
        ActorRef::pid(self)
    }

    fn deactivate(&self) {
        let _ = self.send(HostMsg::Deactivate);
    }

    fn kind(&self) -> (Durability, &'static [&'static str]) {
        (G::DURABILITY, G::REQUIRES)
    }

    fn deliver(&self, delivery: Delivery) -> Result<(), Delivery> {
        match self.send(HostMsg::Deliver(delivery)) {
            Ok(()) => Ok(()),
            Err(e) => match e.into_inner() {
                HostMsg::Deliver(d) => Err(d),
                _ => Ok(()),
            },
        }
    }
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

pub(crate) struct TypedActivator<G: Grain> {
    pub(crate) make: Factory<G>,
}

impl<G: Grain> Activator for TypedActivator<G> {
    fn durability(&self) -> Durability {
        G::DURABILITY
    }

    fn start(
        &self,
        shared: &Arc<Shared>,
        rt: &Runtime,
        id: GrainId,
        adopt: Option<Handed>,
    ) -> Arc<dyn HostSender> {
        let host = GrainHost::<G> {
            shared: shared.clone(),
            id,
            make: self.make.clone(),
            adopt,
            phase: Phase::Claiming,
            last: Instant::now(),
            held_at: std::cell::Cell::new(0),
            _grain: PhantomData,
        };
        Arc::new(rt.spawn(host))
    }
}

/// What a node's router answers an adoption with.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum AdoptAnswer {
    /// A host was started here and is queueing for the claim.
    Started(Pid),
    /// The grain is already active here, or this node cannot host it.
    Refused(Refusal),
    /// This node has no factory for the grain type.
    UnknownType,
}

/// What a node's router takes: deliveries from callers, adoptions of migrating grains,
/// and replica reads and writes of `Replicated` state.
#[derive(Serialize, Deserialize)]
pub(crate) enum RouterMsg {
    Deliver {
        grain_type: String,
        key: String,
        request: Request,
        reply: ReplyTo<Answer>,
    },
    /// Start an activation here with this (encoded) state, to take over the claim from
    /// the activation at `from_epoch`.
    Adopt {
        grain_type: String,
        key: String,
        state: Vec<u8>,
        from_epoch: u64,
        reply: ReplyTo<AdoptAnswer>,
    },
    /// Read this node's copy of a `Replicated` grain for the activation at `epoch`.
    ReplicaLoad {
        grain_type: String,
        key: String,
        epoch: u64,
        reply: ReplyTo<ReplicaAnswer>,
    },
    /// Store a copy of a `Replicated` grain's state for the activation at `epoch`.
    ReplicaSave {
        grain_type: String,
        key: String,
        epoch: u64,
        state: Vec<u8>,
        reply: ReplyTo<ReplicaAnswer>,
    },
}

/// Takes deliveries for grains and hands them to the local activation, starting one if
/// the grain has none anywhere (as far as this node's registry shows).
pub(crate) struct GrainRouter {
    pub(crate) shared: Arc<Shared>,
}

impl Actor for GrainRouter {
    type Msg = RouterMsg;

    fn remote_decoder() -> Option<Decoder<RouterMsg>> {
        serde_decoder()
    }

    async fn handle(&mut self, msg: RouterMsg, ctx: &mut Ctx<Self>) -> ActorResult {
        match msg {
            RouterMsg::Deliver {
                grain_type,
                key,
                request,
                reply,
            } => self.deliver(
                GrainId::new(grain_type, key),
                Delivery { request, reply },
                ctx,
            ),
            RouterMsg::Adopt {
                grain_type,
                key,
                state,
                from_epoch,
                reply,
            } => {
                let handed = Handed { state, from_epoch };
                reply.reply(self.adopt(GrainId::new(grain_type, key), handed, ctx));
            }
            RouterMsg::ReplicaLoad {
                grain_type,
                key,
                epoch,
                reply,
            } => {
                let id = GrainId::new(grain_type, key);
                reply.reply(replica::serve_load(
                    self.shared.store.as_deref(),
                    &id,
                    epoch,
                ));
            }
            RouterMsg::ReplicaSave {
                grain_type,
                key,
                epoch,
                state,
                reply,
            } => {
                let id = GrainId::new(grain_type, key);
                let store = self.shared.store.as_deref();
                reply.reply(replica::serve_save(store, &id, epoch, &state));
            }
        }
        Ok(())
    }
}

impl GrainRouter {
    fn activator(&self, id: &GrainId) -> Option<Arc<dyn Activator>> {
        self.shared
            .types
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id.grain_type)
            .cloned()
    }

    fn deliver(&mut self, id: GrainId, delivery: Delivery, ctx: &Ctx<Self>) {
        let shared = self.shared.clone();
        let mut active = shared.active.lock().unwrap_or_else(|e| e.into_inner());
        let delivery = match active.get(&id) {
            Some(host) => match host.deliver(delivery) {
                Ok(()) => return,
                Err(d) => {
                    active.remove(&id);
                    d
                }
            },
            None => delivery,
        };
        let Some(activator) = self.activator(&id) else {
            delivery.reply.reply(Answer::UnknownType);
            return;
        };
        let Some(node) = shared.node.upgrade() else {
            delivery.reply.reply(Answer::Retry);
            return;
        };
        let arrival = core::arrival(shared.me, Shared::registry(&node, &id));
        match (arrival, &delivery.request) {
            // Only a message activates a grain; a migration needs a live activation.
            (Arrival::Activate, Request::Migrate { .. }) => {
                delivery.reply.reply(Answer::NotActive);
            }
            (Arrival::Activate, Request::Msg { .. }) => {
                let host = activator.start(&shared, ctx.runtime(), id.clone(), None);
                match host.deliver(delivery) {
                    Ok(()) => {
                        active.insert(id, host);
                    }
                    Err(d) => {
                        d.reply.reply(Answer::Retry);
                    }
                }
            }
            (Arrival::Redirect(a), _) => {
                delivery.reply.reply(Answer::Redirect(a));
            }
            (Arrival::Retry, _) => {
                delivery.reply.reply(Answer::Retry);
            }
        }
    }

    /// Starts a host for a migrating grain, which queues for the claim: deliveries that
    /// arrive meanwhile wait in its mailbox until it holds the claim.
    fn adopt(&mut self, id: GrainId, handed: Handed, ctx: &Ctx<Self>) -> AdoptAnswer {
        let Some(activator) = self.activator(&id) else {
            return AdoptAnswer::UnknownType;
        };
        let shared = self.shared.clone();
        let mut active = shared.active.lock().unwrap_or_else(|e| e.into_inner());
        if active.contains_key(&id) {
            return AdoptAnswer::Refused(Refusal::AlreadyThere);
        }
        let host = activator.start(&shared, ctx.runtime(), id.clone(), Some(handed));
        let pid = host.pid();
        active.insert(id, host);
        AdoptAnswer::Started(pid)
    }
}

pub(crate) enum HostMsg {
    Deliver(Delivery),
    /// Deactivate now (graceful shutdown of the grain service).
    Deactivate,
    /// Time to check whether the activation has been idle long enough.
    Idle,
    /// Every delivery queued before this one has been answered: stop.
    Finish,
}

pub(crate) struct Live<G: Grain> {
    pub(crate) grain: G,
    pub(crate) ctx: GrainCtx<G>,
    pub(crate) guard: LockGuard,
}

pub(crate) enum Phase<G: Grain> {
    /// Claiming the grain (in `started`, before any delivery is handled).
    Claiming,
    Active(Box<Live<G>>),
    /// Going away: every delivery still queued gets this answer.
    Leaving(Answer),
}

/// One activation: holds the grain's claim (the consensus lock) and runs it.
pub(crate) struct GrainHost<G: Grain> {
    pub(crate) shared: Arc<Shared>,
    pub(crate) id: GrainId,
    make: Factory<G>,
    /// The state a migrating activation handed over, until this one holds the claim.
    adopt: Option<Handed>,
    pub(crate) phase: Phase<G>,
    last: Instant,
    /// The registry index at which the claim was last found held (0: not yet).
    held_at: std::cell::Cell<u64>,
    _grain: PhantomData<fn() -> G>,
}

impl<G: Grain> GrainHost<G> {
    /// Leaves the router's table and answers every queued delivery with `answer`.
    pub(crate) fn leave(&mut self, answer: Answer, ctx: &Ctx<Self>) {
        self.phase = Phase::Leaving(answer);
        let me = ctx.myself();
        self.shared.forget_host(&self.id, ctx.pid(), || {
            let _ = me.send(HostMsg::Finish);
        });
    }

    /// Restores the state (or takes the state a migrating activation handed over) and runs
    /// `on_activate` for the claim `guard`. Takes what it needs rather than `&self`: the
    /// host holds a grain, which need not be `Sync`.
    async fn activate(
        shared: Arc<Shared>,
        id: GrainId,
        make: Factory<G>,
        guard: LockGuard,
        pid: Pid,
        adopt: Option<Handed>,
        rt: Runtime,
    ) -> Result<Live<G>, Answer> {
        let epoch = guard.token();
        let mut saver = Saver::for_type(G::DURABILITY, &shared).map_err(Answer::Failed)?;
        let bytes = match adopt {
            Some(handed) => {
                // The stores' state wins if an activation newer than the one that handed
                // this state over wrote it (the claim came by way of another holder).
                let bytes = saver
                    .adopt(&id, epoch, handed)
                    .await
                    .map_err(|e| core::restore_failed(&e))?;
                Some(bytes)
            }
            None => saver
                .load(&id, epoch)
                .await
                .map_err(|e| core::restore_failed(&e))?,
        };
        let state = match bytes {
            Some(bytes) => postcard::from_bytes(&bytes)
                .map_err(|e| Answer::Failed(format!("state of {id}: {e}")))?,
            None => G::State::default(),
        };
        let mut grain = make(&id.key);
        let mut ctx = GrainCtx::new(id, pid, epoch, state, saver, rt);
        grain
            .on_activate(&mut ctx)
            .await
            .map_err(|e| Answer::Failed(e.to_string()))?;
        Ok(Live { grain, ctx, guard })
    }

    fn schedule_idle(&self, ctx: &Ctx<Self>, after: Duration) {
        if self.shared.idle_timeout.is_some() {
            ctx.send_after(after, HostMsg::Idle);
        }
    }

    /// Whether this activation has lost its claim, as this node's registry replica shows.
    pub(crate) fn claim_lost(&self) -> bool {
        let Phase::Active(live) = &self.phase else {
            return false;
        };
        let Some(node) = self.shared.node.upgrade() else {
            return true;
        };
        // The verdict depends only on the registry, which changes only with its index: a
        // registry at the index last found to hold the claim still holds it (this check
        // runs before every message, and the lookup is most of its cost).
        let index = node.registry_index();
        if index != 0 && self.held_at.get() == index {
            return false;
        }
        let me = Activation {
            pid: live.ctx.pid(),
            epoch: live.ctx.epoch(),
        };
        let lost = core::claim_lost(me, index, Shared::registry(&node, &self.id));
        if !lost {
            self.held_at.set(index);
        }
        lost
    }

    /// Ends an activation that lost its claim or was fenced off by the store: a newer one
    /// may exist, so nothing is saved; queued deliveries are answered "try again".
    pub(crate) fn abandon(&mut self, ctx: &Ctx<Self>) {
        if let Phase::Active(live) = std::mem::replace(&mut self.phase, Phase::Claiming) {
            warn!(grain = %self.id, epoch = live.ctx.epoch(), "activation lost its claim; stopping without saving");
            self.shared
                .cache
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&self.id);
            self.shared.deactivations.fetch_add(1, Ordering::Relaxed);
        }
        self.leave(Answer::Retry, ctx);
    }

    async fn deliver(&mut self, d: Delivery, ctx: &mut Ctx<Self>) {
        if self.claim_lost() {
            self.abandon(ctx);
        }
        let Phase::Active(live) = &mut self.phase else {
            let answer = match &self.phase {
                Phase::Leaving(a) => a.clone(),
                _ => Answer::Retry,
            };
            d.reply.reply(answer);
            return;
        };
        let (payload, want_reply) = match d.request {
            Request::Msg {
                payload,
                want_reply,
            } => (payload, want_reply),
            Request::Migrate { target } => {
                self.migrate_out(target, d.reply, ctx).await;
                return;
            }
        };
        self.last = Instant::now();
        let by = Activation {
            pid: live.ctx.pid(),
            epoch: live.ctx.epoch(),
        };
        let msg: G::Msg = match postcard::from_bytes(&payload) {
            Ok(m) => m,
            Err(e) => {
                d.reply
                    .reply(Answer::Failed(format!("message for {}: {e}", self.id)));
                return;
            }
        };
        if !want_reply {
            d.reply.reply(Answer::Done { by, reply: None });
            live.grain.handle(msg, &mut live.ctx).await;
            watch(live, ctx);
        } else {
            let reply = live.grain.handle(msg, &mut live.ctx).await;
            watch(live, ctx);
            let answer = match postcard::to_allocvec(&reply) {
                Ok(bytes) => Answer::Done {
                    by,
                    reply: Some(bytes),
                },
                Err(e) => Answer::Failed(format!("reply of {}: {e}", self.id)),
            };
            d.reply.reply(answer);
        }
        if live.ctx.is_fenced() {
            self.abandon(ctx);
        }
    }

    pub(crate) async fn deactivate(&mut self, ctx: &Ctx<Self>) {
        let Phase::Active(_) = &self.phase else {
            return;
        };
        let Phase::Active(mut live) = std::mem::replace(&mut self.phase, Phase::Claiming) else {
            return;
        };
        self.leave(Answer::Retry, ctx);
        live.grain.on_deactivate(&mut live.ctx).await;
        if let Err(e) = live.ctx.save().await {
            warn!(grain = %self.id, epoch = live.ctx.epoch(), "state not saved on deactivation: {e}");
        }
        self.shared
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
        if let Err(e) = live.guard.unlock().await {
            debug!(grain = %self.id, "claim released in the background: {e}");
        }
        self.shared.deactivations.fetch_add(1, Ordering::Relaxed);
    }
}

impl<G: Grain> Actor for GrainHost<G> {
    type Msg = HostMsg;

    async fn started(&mut self, ctx: &mut Ctx<Self>) -> ActorResult {
        // The node's shutdown reaches hosts as an exit signal: saving needs to see it.
        ctx.trap_exit(true);
        let Some(node) = self.shared.node.upgrade() else {
            self.leave(Answer::Retry, ctx);
            return Ok(());
        };
        // A migrating grain's new host queues for the claim, which the old one hands over.
        let claim = match &self.adopt {
            Some(_) => {
                node.lock(&self.id.lock_name(), ctx.pid(), crate::migrate::ADOPT_WAIT)
                    .await
            }
            None => node.try_lock(&self.id.lock_name(), ctx.pid()).await,
        };
        drop(node);
        let adopted = self.adopt.take();
        let adopting = adopted.is_some();
        match claim {
            Ok(guard) => match Self::activate(
                self.shared.clone(),
                self.id.clone(),
                self.make.clone(),
                guard,
                ctx.pid(),
                adopted,
                ctx.runtime().clone(),
            )
            .await
            {
                Ok(mut live) => {
                    watch(&mut live, ctx);
                    let by = Activation {
                        pid: ctx.pid(),
                        epoch: live.ctx.epoch(),
                    };
                    self.shared
                        .cache
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(self.id.clone(), by);
                    self.shared.activations.fetch_add(1, Ordering::Relaxed);
                    if adopting {
                        self.shared.adoptions.fetch_add(1, Ordering::Relaxed);
                    }
                    debug!(grain = %self.id, epoch = by.epoch, "activated");
                    self.phase = Phase::Active(Box::new(live));
                    self.last = Instant::now();
                    if let Some(idle) = self.shared.idle_timeout {
                        self.schedule_idle(ctx, idle);
                    }
                }
                Err(answer) => self.leave(answer, ctx),
            },
            Err(LockError::Busy { holder, token }) => {
                let holder = Activation {
                    pid: holder,
                    epoch: token,
                };
                self.leave(core::on_busy(self.shared.me, holder), ctx);
            }
            Err(e) => self.leave(Answer::Unavailable(e.to_string()), ctx),
        }
        Ok(())
    }

    async fn handle(&mut self, msg: HostMsg, ctx: &mut Ctx<Self>) -> ActorResult {
        match msg {
            HostMsg::Deliver(d) => self.deliver(d, ctx).await,
            HostMsg::Deactivate => self.deactivate(ctx).await,
            HostMsg::Idle if self.claim_lost() => self.abandon(ctx),
            HostMsg::Idle => {
                let idle_for = self.last.elapsed();
                if core::idle_expired(idle_for, self.shared.idle_timeout) {
                    self.deactivate(ctx).await;
                } else if let Some(limit) = self.shared.idle_timeout {
                    self.schedule_idle(ctx, limit.saturating_sub(idle_for));
                }
            }
            HostMsg::Finish => ctx.stop(ExitReason::Normal),
        }
        Ok(())
    }

    /// A process the grain watches exited: the grain hears of it like of a message.
    async fn handle_down(&mut self, down: Down, ctx: &mut Ctx<Self>) -> ActorResult {
        if let Phase::Active(live) = &mut self.phase
            && live.ctx.unwatch(down.pid)
        {
            live.grain
                .on_down(down.pid, down.reason, &mut live.ctx)
                .await;
            watch(live, ctx);
            if live.ctx.is_fenced() {
                self.abandon(ctx);
            }
        }
        Ok(())
    }

    /// The node shutting down: save what can be saved (the local store; `Replicated`
    /// replicas are likely gone by now) and stop. The claim goes with the process.
    async fn handle_exit(
        &mut self,
        _from: Pid,
        reason: ExitReason,
        ctx: &mut Ctx<Self>,
    ) -> ActorResult {
        if reason.is_normal() {
            return Ok(());
        }
        if reason == ExitReason::Shutdown
            && let Phase::Active(live) = &mut self.phase
        {
            live.grain.on_deactivate(&mut live.ctx).await;
            if let Err(e) = live.ctx.save().await {
                warn!(grain = %self.id, "state not saved on node shutdown: {e}");
            }
            self.shared.deactivations.fetch_add(1, Ordering::Relaxed);
        }
        ctx.stop(reason);
        Ok(())
    }
}

/// Sets the monitors the grain asked for during its last callback.
fn watch<G: Grain, A: Actor>(live: &mut Live<G>, ctx: &mut Ctx<A>) {
    for pid in live.ctx.take_watches() {
        ctx.monitor(pid);
    }
}
