//! Moving an activation to another node: the old host stops taking messages (they wait in
//! its mailbox), saves, starts a host on the target with its state, hands the claim over
//! through the claim's queue, and then sends every waiting caller to the new activation.

use std::sync::atomic::Ordering;
use std::time::Duration;

use atoll_actor::{CallError, Ctx, ReplyTo};
use atoll_core::NodeId;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::Grain;
use crate::core::{self, Activation, Answer, Queue, Refusal};
use crate::host::{GrainHost, Live, Phase};
use crate::router::{AdoptAnswer, RouterMsg};
use crate::shared::Shared;

/// How long a new host waits in the claim's queue, and the old one for it to get there.
pub(crate) const ADOPT_WAIT: Duration = Duration::from_secs(5);

/// How often the old host looks at its registry replica while handing over.
const POLL: Duration = Duration::from_millis(5);

/// Whether `target` runs a grain service and announces every capability in `requires`.
pub(crate) fn eligible(node: &atoll_cluster::Node, target: NodeId, requires: &[&str]) -> bool {
    let ring = node.ring();
    let nodes = ring.nodes();
    let has_router = node
        .find_by_type("GrainRouter")
        .iter()
        .any(|ad| ad.pid.node == target);
    has_router
        && nodes
            .get(&target)
            .is_some_and(|r| requires.iter().all(|c| r.capabilities.contains(*c)))
}

impl<G: Grain> GrainHost<G> {
    /// Moves this activation to `target`, answering `reply` with the new activation (or
    /// why not). Runs inside the host's handler, so deliveries that arrive meanwhile wait
    /// in its mailbox; once the claim is handed over they are answered with a redirect to
    /// the new activation (not handled here), and their callers resend them there.
    pub(crate) async fn migrate_out(
        &mut self,
        target: NodeId,
        reply: ReplyTo<Answer>,
        ctx: &Ctx<Self>,
    ) {
        let Some(node) = self.shared.node.upgrade() else {
            reply.reply(Answer::Retry);
            return;
        };
        let ok = eligible(&node, target, G::REQUIRES);
        if let Err(refusal) = core::migration(G::DURABILITY, self.shared.me, target, ok) {
            reply.reply(Answer::Refused(refusal));
            return;
        }
        let Phase::Active(mut live) = std::mem::replace(&mut self.phase, Phase::Claiming) else {
            reply.reply(Answer::Retry);
            return;
        };
        let me = Activation {
            pid: ctx.pid(),
            epoch: live.ctx.epoch(),
        };
        live.grain.on_deactivate(&mut live.ctx).await;
        // Durable state is saved here first, so the move loses nothing even if the
        // target's first save fails; fenced off means a newer activation exists.
        if let Err(e) = live.ctx.save().await {
            if live.ctx.is_fenced() {
                self.phase = Phase::Active(live);
                self.abandon(ctx);
                reply.reply(Answer::Retry);
                return;
            }
            warn!(grain = %self.id, "state not saved before the move: {e}");
        }
        let state = match postcard::to_allocvec(live.ctx.state()) {
            Ok(bytes) => bytes,
            Err(e) => {
                self.phase = Phase::Active(live);
                reply.reply(Answer::Failed(format!("state of {}: {e}", self.id)));
                return;
            }
        };
        let started = adopt_at(&self.shared, &self.id, &node, target, state, me.epoch).await;
        let new_pid = match started {
            Ok(pid) => pid,
            Err(answer) => {
                self.phase = Phase::Active(live);
                reply.reply(answer);
                return;
            }
        };
        // Release only with the new host first in the claim's queue: the release hands it
        // the claim in the same log entry, so no other node can activate the grain between.
        let deadline = Instant::now() + ADOPT_WAIT;
        let name = self.id.lock_name();
        loop {
            match core::queue(&node.lock_waiters(&name), new_pid) {
                Queue::Go => break,
                Queue::Wait if Instant::now() < deadline => tokio::time::sleep(POLL).await,
                Queue::Wait | Queue::Blocked => {
                    // The new host gives up waiting on its own (ADOPT_WAIT).
                    warn!(grain = %self.id, %target, "the new host did not queue for the claim; staying");
                    self.phase = Phase::Active(live);
                    reply.reply(Answer::Unavailable(
                        "the target did not take the claim".into(),
                    ));
                    return;
                }
            }
        }
        // A claim the cluster took back meanwhile (this node declared lost) is not ours to
        // hand over: stop without saving, as any activation that lost its claim.
        self.phase = Phase::Active(live);
        if self.claim_lost() {
            self.abandon(ctx);
            reply.reply(Answer::Retry);
            return;
        }
        let Phase::Active(live) = std::mem::replace(&mut self.phase, Phase::Claiming) else {
            unreachable!("set just above");
        };
        let Live { guard, .. } = *live;
        if let Err(e) = guard.unlock().await {
            debug!(grain = %self.id, "claim handed over in the background: {e}");
        }
        self.shared.migrations.fetch_add(1, Ordering::Relaxed);
        let deadline = Instant::now() + ADOPT_WAIT;
        let mut holder = Shared::registry(&node, &self.id);
        while holder.is_none_or(|h| h == me) && Instant::now() < deadline {
            tokio::time::sleep(POLL).await;
            holder = Shared::registry(&node, &self.id);
        }
        let answer = core::after_handover(me, holder);
        match &answer {
            Answer::Redirect(new) => {
                self.shared.cache_insert(&self.id, *new);
                debug!(grain = %self.id, from = me.epoch, to = new.epoch, "migrated");
                reply.reply(Answer::Done {
                    by: *new,
                    reply: None,
                });
            }
            _ => {
                self.shared.cache_remove(&self.id);
                reply.reply(Answer::Retry);
            }
        }
        self.leave(answer, ctx);
    }
}

/// Starts the new host on `target` with `state`; its pid.
async fn adopt_at(
    shared: &Shared,
    id: &crate::core::GrainId,
    node: &atoll_cluster::Node,
    target: NodeId,
    state: Vec<u8>,
    from_epoch: u64,
) -> Result<atoll_core::Pid, Answer> {
    let Some(router) = shared.router_of(node, target) else {
        return Err(Answer::Refused(Refusal::Ineligible));
    };
    let adopt = router.call(
        |reply| RouterMsg::Adopt {
            grain_type: id.grain_type.clone(),
            key: id.key.clone(),
            state,
            from_epoch,
            reply,
        },
        ADOPT_WAIT,
    );
    match adopt.await {
        Ok(AdoptAnswer::Started(pid)) => Ok(pid),
        Ok(AdoptAnswer::Refused(r)) => Err(Answer::Refused(r)),
        Ok(AdoptAnswer::UnknownType) => Err(Answer::UnknownType),
        Err(e @ (CallError::NoProc | CallError::NoConnection)) => {
            shared.forget_router(target);
            Err(Answer::Unavailable(e.to_string()))
        }
        Err(e) => Err(Answer::Unavailable(e.to_string())),
    }
}
