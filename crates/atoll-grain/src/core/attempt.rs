//! The decisions behind one attempt of a call: whether it goes straight to the
//! activation, what an answer means for the next attempt, and when a waiting call's host
//! is lost. State in, decision out, as the rest of [`crate::core`].

use std::time::Duration;

use atoll_core::{NodeId, Pid};
use serde::{Deserialize, Serialize};

use super::{Activation, Refusal, claim_lost};

/// What a node's grain router answers a delivery with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Answer {
    /// Handled by `by`: the encoded reply, or none for a one-way send (accepted).
    Done {
        /// The activation that took the message.
        by: Activation,
        /// The encoded reply of a call.
        #[serde(with = "serde_bytes")]
        reply: Option<Vec<u8>>,
    },
    /// Another activation holds the grain: try it.
    Redirect(Activation),
    /// No activation here right now (one just ended or is still being claimed): try again.
    Retry,
    /// This node has no factory for the grain type.
    UnknownType,
    /// The activation could not be claimed for a reason that may pass (no quorum).
    Unavailable(String),
    /// The message or reply did not decode or encode, or the grain failed to activate.
    Failed(String),
    /// A migration asked of a grain with no live activation here.
    NotActive,
    /// A migration refused.
    Refused(Refusal),
    /// A call sent straight to an activation's process ([`direct`]) found it gone (or
    /// going, the call still queued): the message was not handled; ask the node's router.
    Gone,
    /// Handled by the activation a direct call addressed (which its caller knows, so the
    /// answer leaves it out, [`answered`]): the encoded reply, or none for a one-way send.
    Replied(#[serde(with = "serde_bytes")] Option<Vec<u8>>),
}

/// The outcome of an attempt that was answered; `addressed`: the activation a direct call
/// went to, whose [`Answer::Replied`] is its [`Answer::Done`]. (A router always names the
/// activation: a `Replied` from one is a failure.)
///
/// ```
/// use atoll_core::{NodeId, Pid};
/// use atoll_grain::{Activation, core::{Answer, Outcome, answered}};
///
/// let a = Activation { pid: Pid::new(NodeId::from_bytes([2; 16]), 1, 7), epoch: 3 };
/// let reply = Some(vec![1]);
/// assert_eq!(
///     answered(Answer::Replied(reply.clone()), Some(a)),
///     Outcome::Answered(Answer::Done { by: a, reply }),
/// );
/// assert!(matches!(answered(Answer::Replied(None), None), Outcome::Answered(Answer::Failed(_))));
/// assert_eq!(answered(Answer::Retry, Some(a)), Outcome::Answered(Answer::Retry));
/// ```
pub fn answered(answer: Answer, addressed: Option<Activation>) -> Outcome {
    Outcome::Answered(match (answer, addressed) {
        (Answer::Replied(reply), Some(by)) => Answer::Done { by, reply },
        (Answer::Replied(_), None) => {
            Answer::Failed("a router's answer named no activation".into())
        }
        (other, _) => other,
    })
}

/// Whether a call to the known activation `to` goes straight to its process rather than
/// through the router of its node. Only messages go direct, and only to another node (a
/// local router hands over in memory): the hosting node answers a direct call whose
/// process is gone with [`Answer::Gone`], never handled, and the call then goes through
/// the router (`gone`: the process that answered so during this call), which finds the
/// grain's current activation or starts one.
///
/// ```
/// use atoll_core::{NodeId, Pid};
/// use atoll_grain::{Activation, core::direct};
///
/// let (me, other) = (NodeId::from_bytes([1; 16]), NodeId::from_bytes([2; 16]));
/// let a = Activation { pid: Pid::new(other, 1, 7), epoch: 3 };
/// assert!(direct(me, a, None, true));
/// assert!(!direct(me, a, Some(a.pid), true));
/// assert!(!direct(other, a, None, true));
/// assert!(!direct(me, a, None, false));
/// ```
pub fn direct(me: NodeId, to: Activation, gone: Option<Pid>, message: bool) -> bool {
    message && to.pid.node != me && gone != Some(to.pid)
}

/// What happened to one attempt of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The target node answered.
    Answered(Answer),
    /// The target node is not connected, or its router is not known yet: nothing was sent.
    Unreachable,
    /// The request went out and no answer came back within the time left: it may have been
    /// handled.
    NoAnswer,
    /// The request went out and its host was lost before answering ([`host_lost`]): the
    /// lost activation may have handled it, and no activation will answer it now.
    HostLost,
}

/// What the caller does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The call is done: the reply (none for a one-way send) and the activation to cache.
    Done {
        /// The activation that handled it.
        by: Activation,
        /// The encoded reply.
        reply: Option<Vec<u8>>,
    },
    /// Try again after `backoff`, first caching `learn` or forgetting the cached entry.
    Retry {
        /// Drop the cached activation: it is gone or unreachable.
        forget: bool,
        /// An activation to cache and go to next.
        learn: Option<Activation>,
        /// How long to wait first.
        backoff: Duration,
        /// What to report if the deadline passes before a later attempt succeeds.
        last_error: Option<Failure>,
    },
    /// Stop with this error.
    Fail(Failure),
}

/// Why a call failed, before it becomes a public error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The target node has no factory for the grain type.
    UnknownType,
    /// The claim could not be made (consensus unavailable).
    Unavailable(String),
    /// A codec or activation failure.
    Failed(String),
    /// The request went out and no answer came back.
    NoAnswer,
    /// No node could be reached.
    Unreachable,
    /// A migration found no live activation.
    NotActive,
    /// A migration was refused.
    Refused(Refusal),
}

/// The pause before the `attempt`-th retry (from 0): 5 ms doubling to 200 ms.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(5u64.saturating_mul(1 << attempt.min(6)).min(200))
}

/// Decides what a call does after one attempt (`attempt` counts from 0); `resend_in_doubt`
/// is the grain type's [`crate::Grain::RESEND_IN_DOUBT`].
///
/// A redirect or "not here" is always safe to retry: the message was not handled. An
/// unreachable node is retried too (the cached entry dropped), since the claim of a lost
/// node's activation is released when membership declares it lost. So is a host that
/// cannot restore the state yet (too few replicas answered). A request whose host was lost
/// before answering is sent again when the type allows it (it goes to the next activation
/// once the claim is released, so the caller sees a failover only as a slower answer),
/// and fails otherwise. A request without an answer from a host that is not known lost is
/// never retried: it may have been handled, and the host may still be running it.
pub fn after(outcome: Outcome, attempt: u32, resend_in_doubt: bool) -> Step {
    let retry = |forget, learn, last_error| Step::Retry {
        forget,
        learn,
        backoff: backoff(attempt),
        last_error,
    };
    match outcome {
        Outcome::Answered(Answer::Done { by, reply }) => Step::Done { by, reply },
        Outcome::Answered(Answer::Redirect(a)) => Step::Retry {
            forget: true,
            learn: Some(a),
            backoff: Duration::ZERO,
            last_error: None,
        },
        Outcome::Answered(Answer::Retry) => retry(true, None, None),
        // Not handled: straight on to the router, which knows what became of the grain.
        Outcome::Answered(Answer::Gone) => Step::Retry {
            forget: true,
            learn: None,
            backoff: Duration::ZERO,
            last_error: None,
        },
        Outcome::Answered(Answer::UnknownType) => Step::Fail(Failure::UnknownType),
        Outcome::Answered(Answer::Unavailable(e)) => {
            retry(false, None, Some(Failure::Unavailable(e)))
        }
        Outcome::Answered(Answer::Failed(e)) => Step::Fail(Failure::Failed(e)),
        // Made a `Done` by `answered` when it came from the activation addressed.
        Outcome::Answered(Answer::Replied(_)) => {
            Step::Fail(Failure::Failed("a reply that names no activation".into()))
        }
        Outcome::Answered(Answer::NotActive) => Step::Fail(Failure::NotActive),
        Outcome::Answered(Answer::Refused(r)) => Step::Fail(Failure::Refused(r)),
        Outcome::Unreachable => retry(true, None, Some(Failure::Unreachable)),
        Outcome::HostLost if resend_in_doubt => retry(true, None, Some(Failure::NoAnswer)),
        Outcome::HostLost | Outcome::NoAnswer => Step::Fail(Failure::NoAnswer),
    }
}

/// Whether the host of a call still waiting for its answer is lost: its node restarted
/// since the call went out (`restarted`: the node is connected as a newer incarnation than
/// the process called, so that process is gone), or its node
/// is no longer a live member (`node_live`: declared dead, or gone from this node's
/// membership) and, for a call sent to a known activation `sent_to`, this node's registry
/// replica has applied the release of that activation's claim ([`claim_lost`]). A host
/// that merely moved (migration) is on a live node and answers the call itself with a
/// redirect; a host on a node that is only suspected may still answer.
pub fn host_lost(
    sent_to: Option<Activation>,
    restarted: bool,
    node_live: bool,
    applied: u64,
    holder: Option<Activation>,
) -> bool {
    restarted || (!node_live && sent_to.is_none_or(|a| claim_lost(a, applied, holder)))
}

/// What the messages waiting on a new activation are answered when restoring its state
/// fails: a newer activation exists (`Stale`: go there), too few stores answered for now
/// (`Backend`: retried until the call timeout, then [`Failure::Unavailable`]), or the state
/// does not decode (`Codec`: a failure that retrying does not cure).
pub fn restore_failed(e: &crate::StoreError) -> Answer {
    match e {
        crate::StoreError::Stale(_) => Answer::Retry,
        crate::StoreError::Backend(why) => Answer::Unavailable(why.clone()),
        crate::StoreError::Codec(why) => Answer::Failed(why.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{act, node};
    use super::super::{Route, StaleEpoch, route};
    use super::*;

    #[test]
    fn a_direct_call_that_finds_its_process_gone_goes_through_the_router_next() {
        let me = node(9);
        let a = act(1, 4);
        // Cached and still shown by a lagging registry: the first attempt goes direct.
        let first = route(Some(a), Some(a), || None);
        assert_eq!(first, Route::Known(a));
        assert!(direct(me, a, None, true));
        // Gone is not in doubt, whatever the type allows: retried at once, cache dropped.
        for resend in [false, true] {
            assert_eq!(
                after(Outcome::Answered(Answer::Gone), 3, resend),
                Step::Retry {
                    forget: true,
                    learn: None,
                    backoff: Duration::ZERO,
                    last_error: None,
                }
            );
        }
        // The registry still shows it: the same activation, now through its router.
        assert_eq!(route(None, Some(a), || None), Route::Known(a));
        assert!(!direct(me, a, Some(a.pid), true));
        // The router redirects to a successor, which is called direct again.
        let b = act(2, 6);
        assert!(direct(me, b, Some(a.pid), true));
        // Migrations and local activations always go through the router.
        assert!(!direct(me, a, None, false));
        assert!(!direct(node(1), a, None, true));
    }

    #[test]
    fn answers_decide_the_next_attempt() {
        let done = after(
            Outcome::Answered(Answer::Done {
                by: act(1, 3),
                reply: Some(vec![1]),
            }),
            0,
            false,
        );
        assert_eq!(
            done,
            Step::Done {
                by: act(1, 3),
                reply: Some(vec![1])
            }
        );
        match after(Outcome::Answered(Answer::Redirect(act(2, 4))), 3, false) {
            Step::Retry {
                forget: true,
                learn: Some(a),
                backoff,
                last_error: None,
            } => {
                assert_eq!(a, act(2, 4));
                assert_eq!(backoff, Duration::ZERO);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            after(Outcome::Answered(Answer::Retry), 0, false),
            Step::Retry {
                forget: true,
                learn: None,
                ..
            }
        ));
        assert_eq!(
            after(Outcome::Answered(Answer::UnknownType), 0, false),
            Step::Fail(Failure::UnknownType)
        );
        assert_eq!(
            after(Outcome::Answered(Answer::Failed("x".into())), 0, false),
            Step::Fail(Failure::Failed("x".into()))
        );
        assert!(matches!(
            after(Outcome::Answered(Answer::Unavailable("q".into())), 0, false),
            Step::Retry {
                forget: false,
                last_error: Some(Failure::Unavailable(_)),
                ..
            }
        ));
        // A stale entry whose node is gone is dropped and the call retried.
        assert!(matches!(
            after(Outcome::Unreachable, 1, false),
            Step::Retry {
                forget: true,
                last_error: Some(Failure::Unreachable),
                ..
            }
        ));
        // Possibly handled: never retried.
        assert_eq!(
            after(Outcome::NoAnswer, 0, false),
            Step::Fail(Failure::NoAnswer)
        );
        assert_eq!(
            after(Outcome::NoAnswer, 0, true),
            Step::Fail(Failure::NoAnswer)
        );
    }

    #[test]
    fn a_call_whose_host_was_lost_is_resent_only_where_the_type_allows() {
        assert_eq!(
            after(Outcome::HostLost, 2, false),
            Step::Fail(Failure::NoAnswer)
        );
        assert_eq!(
            after(Outcome::HostLost, 2, true),
            Step::Retry {
                forget: true,
                learn: None,
                backoff: backoff(2),
                last_error: Some(Failure::NoAnswer),
            }
        );
    }

    #[test]
    fn a_host_is_lost_only_off_a_live_node_with_its_claim_released() {
        let a = act(1, 10);
        // Still a live member (maybe only moving, or suspected): it answers itself.
        assert!(!host_lost(Some(a), false, true, 20, None));
        assert!(!host_lost(None, false, true, 20, None));
        // Declared dead, but the release of its claim is not applied here yet.
        assert!(!host_lost(Some(a), false, false, 20, Some(a)));
        assert!(
            !host_lost(Some(a), false, false, 9, None),
            "the replica lags the grant"
        );
        // Declared dead and the claim released or taken over.
        assert!(host_lost(Some(a), false, false, 20, None));
        assert!(host_lost(Some(a), false, false, 20, Some(act(2, 15))));
        // A placement target without a known activation: its node's death decides.
        assert!(host_lost(None, false, false, 0, None));
        // The node restarted under the call: the old process is gone, whatever the rest.
        assert!(host_lost(Some(a), true, true, 9, Some(a)));
        assert!(host_lost(None, true, true, 0, None));
    }

    #[test]
    fn restore_failures_retry_unless_the_state_is_broken() {
        use crate::StoreError;
        let stale = StoreError::Stale(StaleEpoch { epoch: 3, seen: 5 });
        assert_eq!(restore_failed(&stale), Answer::Retry);
        assert_eq!(
            restore_failed(&StoreError::Backend("heard 1 of 2".into())),
            Answer::Unavailable("heard 1 of 2".into())
        );
        assert_eq!(
            restore_failed(&StoreError::Codec("bad".into())),
            Answer::Failed("bad".into())
        );
        // And the caller retries the first two.
        assert!(matches!(
            after(Outcome::Answered(restore_failed(&stale)), 0, false),
            Step::Retry { .. }
        ));
        assert!(matches!(
            after(
                Outcome::Answered(restore_failed(&StoreError::Backend("x".into()))),
                0,
                false
            ),
            Step::Retry { .. }
        ));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(0), Duration::from_millis(5));
        assert_eq!(backoff(1), Duration::from_millis(10));
        assert!(backoff(5) > backoff(4));
        assert_eq!(backoff(50), Duration::from_millis(200));
    }
}
