//! How a call reaches its grain: routing, attempts, retries and failover.

use std::time::Duration;

use atoll_actor::{ActorRef, CallError};
use atoll_cluster::Node;
use atoll_core::{NodeId, Pid};
use tokio::time::Instant;

use super::{GrainError, Grains};
use crate::Durability;
use crate::core::{self, Activation, Failure, GrainId, Outcome, Route, Step};
use crate::router::{GrainRouter, RouterMsg};
use crate::shared::{Cached, DirectCall, HostEndpoint, Request, Shared};

impl Grains {
    /// Delivers `request` to grain `id`, retrying redirects and unreachable nodes (and, with
    /// `resend`, requests whose host was lost) until the call timeout: the activation that
    /// took it and the encoded reply of a call. A migration (`durability` none) goes only to
    /// a known activation.
    pub(super) async fn deliver(
        &self,
        id: &GrainId,
        requires: &[&str],
        durability: Option<Durability>,
        resend: bool,
        request: Request,
    ) -> Result<(Activation, Option<Vec<u8>>), GrainError> {
        let deadline = Instant::now() + self.shared.call_timeout;
        let mut last: Option<Failure> = None;
        let mut attempt = 0;
        // The process that answered a direct call of this one with `Gone`.
        let mut gone: Option<atoll_core::Pid> = None;
        let message = matches!(request, Request::Msg { .. });
        loop {
            // A call to a grain whose activation this node knows, with the registry unchanged
            // since it was checked, needs no node handle (each takes a shared reference
            // count): the runtime sends the direct call.
            let index = self.shared.index.get();
            let entry = self.shared.cached(id);
            let (registry, route) = match entry {
                Some(e) if index != 0 && e.checked == index => (None, Route::Known(e.at)),
                _ => {
                    let node = self.node()?;
                    let registry = Shared::registry(&node, id);
                    let route = core::route(entry.map(|e| e.at), registry, || match durability {
                        Some(d) => self.place(&node, id, requires, d),
                        None => Some(self.shared.me),
                    });
                    (registry, route)
                }
            };
            let outcome = match route {
                Route::Nowhere => {
                    return Err(GrainError::NoEligibleNode {
                        grain_type: id.grain_type.clone(),
                        requires: requires.iter().map(|r| r.to_string()).collect(),
                    });
                }
                Route::Known(a) => {
                    let direct = core::direct(self.shared.me, a, gone, message);
                    let outcome = if direct && !resend {
                        // The common call, kept flat (no host watch to race): straight to the
                        // activation's process.
                        let call = |reply| DirectCall::new(request.clone(), reply);
                        let answered = self
                            .shared
                            .rt
                            .call_remote_until::<HostEndpoint, _>(a.pid, call, deadline)
                            .await;
                        self.outcome(a.pid.node, Some(a), answered)
                    } else {
                        let to = Target {
                            node: a.pid.node,
                            activation: Some(a),
                            resend,
                            called: None,
                        };
                        // Boxed, as below: the calls that get here are the rarer ones (first
                        // calls, redirects, types that resend, whose writes are replicated),
                        // and inline the attempt would double the size of every call's future.
                        Box::pin(self.attempt(to, id, &request, direct, deadline)).await
                    };
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
                    Box::pin(self.attempt(to, id, &request, false, deadline)).await
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
                        self.shared.cache_set(id, entry_now);
                    }
                    return Ok((by, reply));
                }
                Step::Retry {
                    forget,
                    learn,
                    backoff,
                    last_error,
                } => {
                    match learn {
                        Some(a) => self.shared.cache_insert(id, a),
                        None if forget => self.shared.cache_remove(id),
                        None => {}
                    }
                    last = last_error.or(last);
                    if Instant::now() + backoff >= deadline {
                        return Err(self.error(id, last.unwrap_or(Failure::NoAnswer)));
                    }
                    // Boxed: rare, and a timer inline would add its size to every call.
                    Box::pin(tokio::time::sleep(backoff)).await;
                }
                Step::Fail(f) => return Err(self.error(id, f)),
            }
            attempt += 1;
        }
    }

    /// The node, for the steps of a call that need more than the runtime.
    fn node(&self) -> Result<Node, GrainError> {
        self.shared.node.upgrade().ok_or(GrainError::NodeGone)
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
        to: Target,
        id: &GrainId,
        request: &Request,
        direct: bool,
        deadline: Instant,
    ) -> Outcome {
        let host = match to.activation {
            Some(a) if direct => Ok(a.pid),
            _ => {
                let router = self
                    .shared
                    .node
                    .upgrade()
                    .and_then(|node| self.shared.router_of(&node, to.node));
                match router {
                    Some(router) => Err(router),
                    None => return Outcome::Unreachable,
                }
            }
        };
        let called = match &host {
            Ok(pid) => *pid,
            Err(router) => router.pid(),
        };
        let to = Target {
            called: Some(called),
            ..to
        };
        // One call future for both branches (each would otherwise hold its own). The watch
        // for a lost host is boxed: it is rare (only for types that resend), and inline it
        // would add its size to every call's future.
        let call = self.call(&host, id, request, deadline);
        let answered = if to.resend {
            tokio::select! {
                answered = call => answered,
                () = Box::pin(self.host_lost(id, to, deadline)) => return Outcome::HostLost,
            }
        } else {
            call.await
        };
        match self.outcome(to.node, to.activation.filter(|_| direct), answered) {
            // The connection dropped under the call: whether the host is lost decides.
            Outcome::NoAnswer if to.resend => {
                let lost = Box::pin(tokio::time::timeout_at(
                    deadline,
                    self.host_lost(id, to, deadline),
                ))
                .await
                .is_ok();
                if lost {
                    Outcome::HostLost
                } else {
                    Outcome::NoAnswer
                }
            }
            outcome => outcome,
        }
    }

    /// What the answer to one attempt sent to node `to` comes to (`direct`: the activation
    /// a direct call went to). A call that went out and got no answer is `NoAnswer`.
    fn outcome(
        &self,
        to: NodeId,
        direct: Option<Activation>,
        answered: Result<core::Answer, CallError>,
    ) -> Outcome {
        match answered {
            Ok(answer) => core::answered(answer, direct),
            Err(CallError::NoProc | CallError::NoConnection) => {
                self.shared.forget_router(to);
                Outcome::Unreachable
            }
            Err(CallError::Unencodable(e)) => {
                Outcome::Answered(core::Answer::Failed(format!("cannot send: {e}")))
            }
            Err(CallError::Timeout | CallError::NoReply) => {
                self.shared.forget_router(to);
                Outcome::NoAnswer
            }
        }
    }

    /// Sends `request` as a direct call to the activation's `host`, or through its node's
    /// router, and waits until `deadline` for the answer.
    async fn call(
        &self,
        host: &Result<Pid, ActorRef<GrainRouter>>,
        id: &GrainId,
        request: &Request,
        deadline: Instant,
    ) -> Result<core::Answer, CallError> {
        match host {
            Ok(pid) => {
                let call = |reply| DirectCall::new(request.clone(), reply);
                self.shared
                    .rt
                    .call_remote_until::<HostEndpoint, _>(*pid, call, deadline)
                    .await
            }
            Err(router) => {
                let deliver = |reply| RouterMsg::Deliver {
                    grain_type: id.grain_type.clone(),
                    key: id.key.clone(),
                    request: request.clone(),
                    reply,
                };
                // Boxed: calls to an active grain go direct, and this call's future beside
                // the direct one would double the size of every call's future.
                Box::pin(router.call_until(deliver, deadline)).await
            }
        }
    }

    /// Returns once the host `to` of a call is lost ([`core::host_lost`]), looking every
    /// [`LOST_POLL`] until `deadline` (and waiting on after it: callers bound it).
    async fn host_lost(&self, id: &GrainId, to: Target, deadline: Instant) {
        loop {
            tokio::time::sleep(LOST_POLL).await;
            // A node gone ends the wait: the next attempt reports it.
            let Some(node) = self.shared.node.upgrade() else {
                return;
            };
            let node = &node;
            let live = to.node == self.shared.me
                || node.membership().is_some_and(|swim| {
                    swim.members()
                        .iter()
                        .any(|m| m.identity.node == to.node && m.state.is_live())
                });
            // The node connected again as a newer incarnation: it restarted under the call.
            // (Asked of the connection, not the process table: this runs for every waiting
            // call 20 times a second, and the table holds every process of the cluster.)
            let restarted = to.called.is_some_and(|called| {
                node.peer_creation(called.node)
                    .is_some_and(|c| c > called.creation)
            });
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
    /// The grain type's [`crate::Grain::RESEND_IN_DOUBT`].
    resend: bool,
    /// The process the attempt called: the router, or the activation's own for a direct call.
    called: Option<atoll_core::Pid>,
}
