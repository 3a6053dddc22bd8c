//! The processes behind grains on one node: the router that takes deliveries from callers
//! (here or on other nodes), and one host process per activation, which holds the
//! activation's claim and runs the grain.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use atoll_actor::{
    Actor, ActorRef, ActorResult, Ctx, Decoder, ExitReason, ReplyTo, Runtime, serde_decoder,
};
use atoll_cluster::{LockError, LockGuard, Node, WeakNode};
use atoll_core::{NodeId, Pid};
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use crate::core::{self, Activation, Answer, Arrival, GrainId};
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
    pub(crate) store: Option<Arc<dyn GrainStore>>,
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
}

impl Shared {
    pub(crate) fn registry(node: &Node, id: &GrainId) -> Option<Activation> {
        node.lock_holder(&id.lock_name())
            .map(|(pid, epoch)| Activation { pid, epoch })
    }

    fn forget_host(&self, id: &GrainId, pid: Pid, then: impl FnOnce()) {
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        if active.get(id).is_some_and(|h| h.pid() == pid) {
            active.remove(id);
        }
        then();
    }
}

/// One message for a grain, as its router hands it to the activation.
pub(crate) struct Delivery {
    payload: Vec<u8>,
    want_reply: bool,
    reply: ReplyTo<Answer>,
}

/// A host process of some grain type, seen by the router.
pub(crate) trait HostSender: Send + Sync {
    fn pid(&self) -> Pid;
    /// Queues `delivery`, or hands it back if the host has exited.
    fn deliver(&self, delivery: Delivery) -> Result<(), Delivery>;
}

impl<G: Grain> HostSender for ActorRef<GrainHost<G>> {
    fn pid(&self) -> Pid {
        ActorRef::pid(self)
    }

    fn deliver(&self, delivery: Delivery) -> Result<(), Delivery> {
        match self.send(HostMsg::Deliver(delivery)) {
            Ok(()) => Ok(()),
            Err(e) => match e.into_inner() {
                HostMsg::Deliver(d) => Err(d),
                HostMsg::Idle | HostMsg::Finish => Ok(()),
            },
        }
    }
}

/// Starts activations of one grain type.
pub(crate) trait Activator: Send + Sync {
    fn durability(&self) -> Durability;
    fn start(&self, shared: &Arc<Shared>, rt: &Runtime, id: GrainId) -> Arc<dyn HostSender>;
}

pub(crate) struct TypedActivator<G: Grain> {
    pub(crate) make: Factory<G>,
}

impl<G: Grain> Activator for TypedActivator<G> {
    fn durability(&self) -> Durability {
        G::DURABILITY
    }

    fn start(&self, shared: &Arc<Shared>, rt: &Runtime, id: GrainId) -> Arc<dyn HostSender> {
        let host = GrainHost::<G> {
            shared: shared.clone(),
            id,
            make: self.make.clone(),
            phase: Phase::Claiming,
            last: Instant::now(),
            _grain: PhantomData,
        };
        Arc::new(rt.spawn(host))
    }
}

/// A delivery from a caller to a node's router.
#[derive(Serialize, Deserialize)]
pub(crate) enum RouterMsg {
    Deliver {
        grain_type: String,
        key: String,
        payload: Vec<u8>,
        want_reply: bool,
        reply: ReplyTo<Answer>,
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
        let RouterMsg::Deliver {
            grain_type,
            key,
            payload,
            want_reply,
            reply,
        } = msg;
        let id = GrainId::new(grain_type, key);
        let delivery = Delivery {
            payload,
            want_reply,
            reply,
        };
        let shared = &self.shared;
        let mut active = shared.active.lock().unwrap_or_else(|e| e.into_inner());
        let delivery = match active.get(&id) {
            Some(host) => match host.deliver(delivery) {
                Ok(()) => return Ok(()),
                Err(d) => {
                    active.remove(&id);
                    d
                }
            },
            None => delivery,
        };
        let activator = shared
            .types
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id.grain_type)
            .cloned();
        let Some(activator) = activator else {
            delivery.reply.reply(Answer::UnknownType);
            return Ok(());
        };
        let Some(node) = shared.node.upgrade() else {
            delivery.reply.reply(Answer::Retry);
            return Ok(());
        };
        match core::arrival(shared.me, Shared::registry(&node, &id)) {
            Arrival::Activate => {
                let host = activator.start(shared, ctx.runtime(), id.clone());
                match host.deliver(delivery) {
                    Ok(()) => {
                        active.insert(id, host);
                    }
                    Err(d) => {
                        d.reply.reply(Answer::Retry);
                    }
                }
            }
            Arrival::Redirect(a) => {
                delivery.reply.reply(Answer::Redirect(a));
            }
            Arrival::Retry => {
                delivery.reply.reply(Answer::Retry);
            }
        }
        Ok(())
    }
}

pub(crate) enum HostMsg {
    Deliver(Delivery),
    /// Time to check whether the activation has been idle long enough.
    Idle,
    /// Every delivery queued before this one has been answered: stop.
    Finish,
}

struct Live<G: Grain> {
    grain: G,
    ctx: GrainCtx<G>,
    guard: LockGuard,
}

enum Phase<G: Grain> {
    /// Claiming the grain (in `started`, before any delivery is handled).
    Claiming,
    Active(Box<Live<G>>),
    /// Going away: every delivery still queued gets this answer.
    Leaving(Answer),
}

/// One activation: holds the grain's claim (the consensus lock) and runs it.
pub(crate) struct GrainHost<G: Grain> {
    shared: Arc<Shared>,
    id: GrainId,
    make: Factory<G>,
    phase: Phase<G>,
    last: Instant,
    _grain: PhantomData<fn() -> G>,
}

impl<G: Grain> GrainHost<G> {
    /// Leaves the router's table and answers every queued delivery with `answer`.
    fn leave(&mut self, answer: Answer, ctx: &Ctx<Self>) {
        self.phase = Phase::Leaving(answer);
        let me = ctx.myself();
        self.shared.forget_host(&self.id, ctx.pid(), || {
            let _ = me.send(HostMsg::Finish);
        });
    }

    /// Restores the state and runs `on_activate` for the claim `guard`. Takes what it
    /// needs rather than `&self`: the host holds a grain, which need not be `Sync`.
    async fn activate(
        shared: Arc<Shared>,
        id: GrainId,
        make: Factory<G>,
        guard: LockGuard,
        pid: Pid,
    ) -> Result<Live<G>, Answer> {
        let epoch = guard.token();
        let store = match G::DURABILITY {
            Durability::Volatile => None,
            Durability::LocalExclusive => Some(
                shared
                    .store
                    .clone()
                    .ok_or_else(|| Answer::Failed("no grain store on this node".into()))?,
            ),
        };
        let state = match &store {
            None => G::State::default(),
            Some(store) => match store.load(&id, epoch) {
                Ok(Some(bytes)) => postcard::from_bytes(&bytes)
                    .map_err(|e| Answer::Failed(format!("state of {id}: {e}")))?,
                Ok(None) => G::State::default(),
                Err(e) => return Err(Answer::Failed(e.to_string())),
            },
        };
        let mut grain = make(&id.key);
        let mut ctx = GrainCtx::new(id, pid, epoch, state, store);
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
    fn claim_lost(&self) -> bool {
        let Phase::Active(live) = &self.phase else {
            return false;
        };
        let Some(node) = self.shared.node.upgrade() else {
            return true;
        };
        let me = Activation {
            pid: live.ctx.pid(),
            epoch: live.ctx.epoch(),
        };
        core::claim_lost(me, node.registry_index(), Shared::registry(&node, &self.id))
    }

    /// Ends an activation that lost its claim or was fenced off by the store: a newer one
    /// may exist, so nothing is saved; queued deliveries are answered "try again".
    fn abandon(&mut self, ctx: &Ctx<Self>) {
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

    async fn deliver(&mut self, d: Delivery, ctx: &Ctx<Self>) {
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
        self.last = Instant::now();
        let by = Activation {
            pid: live.ctx.pid(),
            epoch: live.ctx.epoch(),
        };
        let msg: G::Msg = match postcard::from_bytes(&d.payload) {
            Ok(m) => m,
            Err(e) => {
                d.reply
                    .reply(Answer::Failed(format!("message for {}: {e}", self.id)));
                return;
            }
        };
        if !d.want_reply {
            d.reply.reply(Answer::Done { by, reply: None });
            live.grain.handle(msg, &mut live.ctx).await;
        } else {
            let reply = live.grain.handle(msg, &mut live.ctx).await;
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

    async fn deactivate(&mut self, ctx: &Ctx<Self>) {
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
        let Some(node) = self.shared.node.upgrade() else {
            self.leave(Answer::Retry, ctx);
            return Ok(());
        };
        let claim = node.try_lock(&self.id.lock_name(), ctx.pid()).await;
        drop(node);
        match claim {
            Ok(guard) => match Self::activate(
                self.shared.clone(),
                self.id.clone(),
                self.make.clone(),
                guard,
                ctx.pid(),
            )
            .await
            {
                Ok(live) => {
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
}
