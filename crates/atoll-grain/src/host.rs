//! One host process per activation: it holds the activation's claim (the consensus lock),
//! restores and saves the grain's state, and runs the grain.

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use atoll_actor::{Actor, ActorRef, ActorResult, Ctx, Decoder, Down, ExitReason, Runtime};
use atoll_cluster::{LockError, LockGuard};
use atoll_core::Pid;
use tracing::{debug, warn};

use crate::core::{self, Activation, Answer, GrainId};
use crate::replica::Saver;
use crate::shared::{
    Activator, Delivery, DirectCall, Factory, Handed, HostSender, Request, Shared,
};
use crate::{Durability, Grain, GrainCtx};

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

pub(crate) enum HostMsg {
    Deliver(Delivery),
    /// A call from another node sent straight here, bypassing the router.
    Direct(DirectCall),
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
        // The verdict depends only on the registry, which changes only with its index: a
        // registry at the index last found to hold the claim still holds it (this check
        // runs before every message, and the lookup is most of its cost).
        let index = self.shared.index.get();
        if index != 0 && self.held_at.get() == index {
            return false;
        }
        let Some(node) = self.shared.node.upgrade() else {
            return true;
        };
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
            self.shared.cache_remove(&self.id);
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
                // Boxed: a rare path, which would otherwise make every message's future as
                // large as its own (and the runtime copies that future for each message).
                Box::pin(self.migrate_out(target, d.reply, ctx)).await;
                return;
            }
        };
        self.last = Instant::now();
        let by = Activation {
            pid: live.ctx.pid(),
            epoch: live.ctx.epoch(),
        };
        let done = |reply| match d.direct {
            true => Answer::Replied(reply),
            false => Answer::Done { by, reply },
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
            d.reply.reply(done(None));
            live.grain.handle(msg, &mut live.ctx).await;
            watch(live, ctx);
        } else {
            let reply = live.grain.handle(msg, &mut live.ctx).await;
            watch(live, ctx);
            let answer = match postcard::to_allocvec(&reply) {
                Ok(bytes) => done(Some(bytes)),
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
        self.shared.cache_remove(&self.id);
        if let Err(e) = live.guard.unlock().await {
            debug!(grain = %self.id, "claim released in the background: {e}");
        }
        self.shared.deactivations.fetch_add(1, Ordering::Relaxed);
    }
}

/// How a host decodes messages from other nodes: direct calls only.
fn decode_direct(bytes: &[u8]) -> Result<HostMsg, String> {
    DirectCall::decode(bytes).map(HostMsg::Direct)
}

impl<G: Grain> Actor for GrainHost<G> {
    type Msg = HostMsg;

    fn remote_decoder() -> Option<Decoder<HostMsg>> {
        Some(decode_direct)
    }

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
                    self.shared.cache_insert(&self.id, by);
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
            HostMsg::Direct(DirectCall {
                request, mut reply, ..
            }) => {
                // Taken out of its guard: from here on the call is answered as any other.
                if let Some(reply) = reply.take() {
                    let delivery = Delivery {
                        request,
                        reply,
                        direct: true,
                    };
                    self.deliver(delivery, ctx).await;
                }
            }
            // Deactivating is boxed: it is rare, and inline its future (saving the state)
            // would make every message's future as large as its own, which the runtime
            // copies for each message.
            HostMsg::Deactivate => Box::pin(self.deactivate(ctx)).await,
            HostMsg::Idle if self.claim_lost() => self.abandon(ctx),
            HostMsg::Idle => {
                let idle_for = self.last.elapsed();
                if core::idle_expired(idle_for, self.shared.idle_timeout) {
                    Box::pin(self.deactivate(ctx)).await;
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
