//! Chasing the Raft leader: the one retry policy behind every request that must reach the
//! leader, whether it starts on a voter ([`crate::Consensus::propose`],
//! [`crate::Consensus::linearizable_read`]) or on a node that runs no voter (the node's
//! proposals).
//!
//! [`LeaderChase`] is a pure state machine: the caller says what happened (a leader hint, an
//! [`Answer`] from the voter it tried, the time since the request started) and it says what
//! to do [`Next`]: try a voter, wait, or give up with a [`ChaseError`]. It reads no clock,
//! sleeps nowhere and sends nothing; the shell around it does, so the policy is tested
//! without sockets or timers.
//!
//! The rules:
//! - A voter that answers "not the leader" and names another voter as leader redirects the
//!   request there at once.
//! - Where the hints come from decides the rest ([`Hints`]). On a voter they come from its
//!   own Raft, which hears of every election: it follows its hint, and after any other miss
//!   (or while it knows no leader) it waits for news, at most [`RETRY_PAUSE`]. On a node
//!   without a voter the hint is only what it last heard: it follows a hint when the hint
//!   is new, and otherwise tries the voters in turn.
//! - After every full round of misses (as many as there are voters) it pauses before the
//!   next try, so two voters that name each other cannot make it spin.
//! - Once a leader may have taken the request (the exchange broke mid-way, or the leader
//!   gave up waiting for the commit), the request is never sent again: the chase gives up
//!   with [`ChaseError::Timeout`] (outcome unknown), unless the request is safe to repeat
//!   ([`LeaderChase::retrying_unknown`], for reads).
//! - It gives up when the timeout has passed, with what it learned last: no leader known,
//!   or the last voter tried could not be reached.
//!
//! ```
//! use std::time::Duration;
//! use atoll_raft::chase::{Answer, ChaseError, Hints, LeaderChase, Next};
//!
//! // A node without a voter; voters 1, 2 and 3; it last heard that 2 leads.
//! let mut chase = LeaderChase::new([1, 2, 3], Hints::Heard, Duration::from_secs(5));
//! assert_eq!(chase.start(Some(2)), Next::Try(2));
//! // 2 lost the leadership to 3: the request goes there at once.
//! let next = chase.answer(Duration::from_millis(3), Answer::NotLeader { leader: Some(3) }, Some(2));
//! assert_eq!(next, Next::Try(3));
//! assert_eq!(chase.named_leader(), Some(3));
//! // 3 cannot be reached; 1 is next in turn, and it does not lead either.
//! assert_eq!(chase.answer(Duration::from_millis(4), Answer::Unreachable, None), Next::Try(1));
//! let next = chase.answer(Duration::from_millis(5), Answer::NotLeader { leader: None }, None);
//! // A full round of misses (one per voter): pause before trying again.
//! assert!(matches!(next, Next::Wait(_)));
//! // Time is up.
//! assert_eq!(
//!     chase.resume(Duration::from_secs(5), None),
//!     Next::GiveUp(ChaseError::NoLeader)
//! );
//! ```

use std::time::Duration;

use crate::network::{Refusal, TransportError};
use crate::types::RaftId;

/// The longest pause between two tries when no voter could take a request.
pub const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Where a chase's leader hints come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hints {
    /// From this node's own voter (its Raft id given), which hears of every election: the
    /// chase follows every hint, and after a miss, or while no leader is known, waits for
    /// news.
    OwnVoter(RaftId),
    /// From what this node last heard (it runs no voter): a hint is followed when it is new;
    /// otherwise the voters are tried in turn.
    Heard,
}

/// What became of a request sent to a voter, as far as the chase cares (an accepted request
/// ends the chase; the caller has its answer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The voter does not lead; it may name the voter that does.
    NotLeader {
        /// The leader it knows of.
        leader: Option<RaftId>,
    },
    /// The voter leads but could not reach a quorum: the request was not taken.
    NoQuorum,
    /// The request never reached a running voter (no connection, or nothing there runs
    /// Raft): sending it again cannot apply it twice.
    Unreachable,
    /// The voter's Raft has stopped. On this node's own voter that ends the chase
    /// ([`ChaseError::Stopped`]); elsewhere it counts as [`Answer::Unreachable`].
    Stopped(String),
    /// The request may have been taken, but its outcome is unknown: the exchange broke
    /// mid-way, the timeout passed while waiting, or the leader gave up waiting for the
    /// commit.
    Unknown,
    /// The voter refused the request: it holds the claiming node declared down
    /// ([`Refusal::ClaimantDown`]). Not applied; the chase ends.
    ClaimantDown,
}

impl Answer {
    /// The answer a refusal from a voter amounts to.
    pub fn from_refusal(refusal: Refusal) -> Answer {
        match refusal {
            Refusal::NotLeader { leader } => Answer::NotLeader { leader },
            Refusal::NoQuorum => Answer::NoQuorum,
            Refusal::Undecided => Answer::Unknown,
            Refusal::Stopped(reason) => Answer::Stopped(reason),
            Refusal::ClaimantDown => Answer::ClaimantDown,
        }
    }

    /// The answer a transport failure amounts to.
    pub fn from_transport(error: &TransportError) -> Answer {
        match error {
            TransportError::Unreachable(_) => Answer::Unreachable,
            TransportError::Failed { .. } => Answer::Unknown,
        }
    }
}

/// What to do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Send the request to this voter (this node's own, when it is the one named in
    /// [`Hints::OwnVoter`]), then report with [`LeaderChase::answer`].
    Try(RaftId),
    /// Wait at most this long (less if news of a leader comes), then go on with
    /// [`LeaderChase::resume`].
    Wait(Duration),
    /// Stop trying.
    GiveUp(ChaseError),
}

/// Why a chase gave up: what is known about the request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChaseError {
    /// No leader was found before the timeout: the request was not applied.
    #[error("no raft leader")]
    NoLeader,
    /// The last voter tried could not be reached before the timeout: the request was not
    /// applied.
    #[error("raft leader {leader} is unreachable")]
    Unreachable {
        /// The voter that could not be reached.
        leader: RaftId,
    },
    /// A leader may have taken the request, and its outcome is unknown.
    #[error("raft request timed out; its outcome is unknown")]
    Timeout,
    /// This node's own voter has stopped.
    #[error("raft stopped: {0}")]
    Stopped(String),
    /// A voter holds the claiming node declared down: the request was not applied.
    #[error("the claiming node is declared down; it must rejoin first")]
    ClaimantDown,
}

/// One request's chase of the Raft leader. See the [module documentation](self).
#[derive(Clone, Debug)]
pub struct LeaderChase {
    voters: Vec<RaftId>,
    hints: Hints,
    timeout: Duration,
    pause: Duration,
    retry_unknown: bool,
    /// What the chase gives up with when time runs out.
    last_error: ChaseError,
    /// The voter tried last.
    target: Option<RaftId>,
    /// The voter to try once a pause is over.
    queued: Option<RaftId>,
    /// The hint seen at the previous step (with [`Hints::Heard`], only a new one is followed).
    seen_hint: Option<RaftId>,
    /// The leader the last refusal named.
    named: Option<RaftId>,
    /// Tries that did not take the request.
    misses: usize,
}

impl LeaderChase {
    /// A chase among `voters` that gives up `timeout` after it started, pausing at most
    /// [`RETRY_PAUSE`] at a time.
    pub fn new(
        voters: impl IntoIterator<Item = RaftId>,
        hints: Hints,
        timeout: Duration,
    ) -> LeaderChase {
        let mut voters: Vec<RaftId> = voters.into_iter().collect();
        voters.sort_unstable();
        voters.dedup();
        LeaderChase {
            voters,
            hints,
            timeout,
            pause: RETRY_PAUSE,
            retry_unknown: false,
            last_error: ChaseError::NoLeader,
            target: None,
            queued: None,
            seen_hint: None,
            named: None,
            misses: 0,
        }
    }

    /// Pauses at most `pause` at a time instead of [`RETRY_PAUSE`].
    pub fn with_pause(mut self, pause: Duration) -> LeaderChase {
        self.pause = pause;
        self
    }

    /// For a request that is safe to repeat (a read): an [`Answer::Unknown`] before the
    /// timeout is tried again rather than ending the chase.
    pub fn retrying_unknown(mut self) -> LeaderChase {
        self.retry_unknown = true;
        self
    }

    /// How long after its start the chase gives up.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The leader the last refusal named, if it is a voter (worth remembering for the next
    /// request).
    pub fn named_leader(&self) -> Option<RaftId> {
        self.named
    }

    /// The first step, given the leader hint at the start.
    pub fn start(&mut self, hint: Option<RaftId>) -> Next {
        self.decide(Duration::ZERO, hint, None, false)
    }

    /// The next step after the voter last tried answered `answer`, `now` after the start;
    /// `hint` is the leader hint now.
    pub fn answer(&mut self, now: Duration, answer: Answer, hint: Option<RaftId>) -> Next {
        let target = self.target;
        let mut redirect = None;
        match answer {
            Answer::NotLeader { leader } => {
                self.last_error = ChaseError::NoLeader;
                redirect = leader.filter(|l| self.voters.contains(l) && Some(*l) != target);
            }
            Answer::NoQuorum => self.last_error = ChaseError::NoLeader,
            Answer::Stopped(reason) if self.is_own(target) => {
                return Next::GiveUp(ChaseError::Stopped(reason));
            }
            Answer::Unreachable | Answer::Stopped(_) => self.unreachable(target),
            Answer::Unknown if self.retry_unknown && now < self.timeout => {
                self.unreachable(target);
            }
            Answer::Unknown => return Next::GiveUp(ChaseError::Timeout),
            Answer::ClaimantDown => return Next::GiveUp(ChaseError::ClaimantDown),
        }
        self.named = redirect;
        self.misses += 1;
        self.decide(now, hint, redirect, true)
    }

    /// The next step after a [`Next::Wait`], `now` after the start; `hint` is the leader
    /// hint now.
    pub fn resume(&mut self, now: Duration, hint: Option<RaftId>) -> Next {
        match self.queued.take() {
            Some(_) if now >= self.timeout => Next::GiveUp(self.last_error.clone()),
            Some(target) => self.try_voter(target),
            None => self.decide(now, hint, None, false),
        }
    }

    fn is_own(&self, target: Option<RaftId>) -> bool {
        matches!(self.hints, Hints::OwnVoter(me) if Some(me) == target)
    }

    fn unreachable(&mut self, target: Option<RaftId>) {
        self.last_error = match target {
            Some(leader) => ChaseError::Unreachable { leader },
            None => ChaseError::NoLeader,
        };
    }

    fn decide(
        &mut self,
        now: Duration,
        hint: Option<RaftId>,
        redirect: Option<RaftId>,
        after_miss: bool,
    ) -> Next {
        if now >= self.timeout || self.voters.is_empty() {
            return Next::GiveUp(self.last_error.clone());
        }
        let wait = Next::Wait(self.pause.min(self.timeout - now));
        let next = match self.hints {
            // A miss is news to wait for: the voter's own Raft is about to hear of it.
            Hints::OwnVoter(_) if after_miss => redirect,
            Hints::OwnVoter(_) => {
                if hint.is_none() {
                    self.last_error = ChaseError::NoLeader;
                }
                hint
            }
            Hints::Heard => {
                let new_hint =
                    hint.filter(|h| self.seen_hint != Some(*h) && self.voters.contains(h));
                // A leader named in a refusal is no news when it comes back as the hint.
                self.seen_hint = redirect.or(hint);
                Some(
                    redirect
                        .or(new_hint)
                        .unwrap_or_else(|| self.after(self.target)),
                )
            }
        };
        match next {
            None => wait,
            Some(target) if after_miss && self.misses.is_multiple_of(self.voters.len()) => {
                self.queued = Some(target);
                wait
            }
            Some(target) => self.try_voter(target),
        }
    }

    fn try_voter(&mut self, target: RaftId) -> Next {
        self.target = Some(target);
        Next::Try(target)
    }

    /// The voter after `target` in turn (the first one to start with).
    fn after(&self, target: Option<RaftId>) -> RaftId {
        let i = target
            .and_then(|t| self.voters.iter().position(|v| *v == t))
            .map_or(0, |i| i + 1);
        self.voters[i % self.voters.len()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(5);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn not_leader(leader: Option<RaftId>) -> Answer {
        Answer::NotLeader { leader }
    }

    #[test]
    fn a_voter_holding_the_claimant_down_ends_the_chase() {
        let mut chase = LeaderChase::new([1, 2, 3], Hints::Heard, TIMEOUT);
        assert_eq!(chase.start(Some(2)), Next::Try(2));
        assert_eq!(
            chase.answer(ms(1), Answer::ClaimantDown, Some(2)),
            Next::GiveUp(ChaseError::ClaimantDown)
        );
    }

    #[test]
    fn a_voter_proposes_at_the_leader_it_knows() {
        let mut chase = LeaderChase::new([1, 2, 3], Hints::OwnVoter(1), TIMEOUT);
        assert_eq!(chase.start(Some(1)), Next::Try(1));
        let mut chase = LeaderChase::new([1, 2, 3], Hints::OwnVoter(1), TIMEOUT);
        assert_eq!(chase.start(Some(3)), Next::Try(3));
    }

    #[test]
    fn a_voter_without_a_leader_waits_for_news_and_gives_up_with_no_leader() {
        let mut chase = LeaderChase::new([1, 2, 3], Hints::OwnVoter(1), TIMEOUT);
        assert_eq!(chase.start(None), Next::Wait(RETRY_PAUSE));
        assert_eq!(chase.resume(ms(50), None), Next::Wait(RETRY_PAUSE));
        // The last pause ends at the timeout.
        assert_eq!(chase.resume(ms(4_990), None), Next::Wait(ms(10)));
        assert_eq!(
            chase.resume(TIMEOUT, None),
            Next::GiveUp(ChaseError::NoLeader)
        );
    }

    #[test]
    fn a_voter_waits_for_news_after_a_miss_then_follows_its_hint() {
        let mut chase = LeaderChase::new([1, 2, 3], Hints::OwnVoter(1), TIMEOUT);
        assert_eq!(chase.start(Some(2)), Next::Try(2));
        // 2 no longer leads and knows no leader: wait, even though the hint still says 2.
        assert_eq!(
            chase.answer(ms(1), not_leader(None), Some(2)),
            Next::Wait(RETRY_PAUSE)
        );
        assert_eq!(chase.resume(ms(20), Some(3)), Next::Try(3));
        // 3 cannot be reached: wait, then try it again if it is still the hint.
        assert_eq!(
            chase.answer(ms(21), Answer::Unreachable, Some(3)),
            Next::Wait(RETRY_PAUSE)
        );
        assert_eq!(chase.resume(ms(71), Some(3)), Next::Try(3));
        assert_eq!(
            chase.answer(ms(72), Answer::NoQuorum, Some(3)),
            Next::Wait(RETRY_PAUSE)
        );
        assert_eq!(
            chase.resume(TIMEOUT, Some(3)),
            Next::GiveUp(ChaseError::NoLeader)
        );
    }

    #[test]
    fn a_redirect_is_followed_at_once() {
        for hints in [Hints::OwnVoter(1), Hints::Heard] {
            let mut chase = LeaderChase::new([1, 2, 3], hints, TIMEOUT);
            assert_eq!(chase.start(Some(2)), Next::Try(2));
            assert_eq!(
                chase.answer(ms(1), not_leader(Some(3)), Some(2)),
                Next::Try(3),
                "{hints:?}"
            );
            assert_eq!(chase.named_leader(), Some(3));
        }
    }

    #[test]
    fn a_redirect_to_a_non_voter_or_to_itself_is_not_followed() {
        let mut chase = LeaderChase::new([1, 2, 3], Hints::Heard, TIMEOUT);
        assert_eq!(chase.start(Some(2)), Next::Try(2));
        assert_eq!(
            chase.answer(ms(1), not_leader(Some(9)), Some(2)),
            Next::Try(3)
        );
        assert_eq!(chase.named_leader(), None);
        assert_eq!(
            chase.answer(ms(2), not_leader(Some(3)), Some(2)),
            Next::Try(1)
        );
    }

    #[test]
    fn voters_naming_each_other_cannot_make_it_spin() {
        let mut chase = LeaderChase::new([1, 2, 3], Hints::OwnVoter(1), TIMEOUT);
        assert_eq!(chase.start(Some(2)), Next::Try(2));
        assert_eq!(chase.answer(ms(1), not_leader(Some(3)), None), Next::Try(3));
        assert_eq!(chase.answer(ms(2), not_leader(Some(2)), None), Next::Try(2));
        // Three misses, one per voter: pause, then go where the last answer pointed.
        assert_eq!(
            chase.answer(ms(3), not_leader(Some(3)), None),
            Next::Wait(RETRY_PAUSE)
        );
        assert_eq!(chase.resume(ms(53), Some(1)), Next::Try(3));
    }

    #[test]
    fn without_a_voter_it_tries_the_voters_in_turn_and_pauses_after_each_round() {
        let mut chase = LeaderChase::new([3, 1, 2], Hints::Heard, TIMEOUT);
        assert_eq!(chase.start(None), Next::Try(1));
        assert_eq!(chase.answer(ms(1), Answer::Unreachable, None), Next::Try(2));
        assert_eq!(chase.answer(ms(2), Answer::NoQuorum, None), Next::Try(3));
        assert_eq!(
            chase.answer(ms(3), Answer::Stopped("off".into()), None),
            Next::Wait(RETRY_PAUSE)
        );
        assert_eq!(chase.resume(ms(53), None), Next::Try(1));
        assert_eq!(
            chase.answer(TIMEOUT, Answer::Unreachable, None),
            Next::GiveUp(ChaseError::Unreachable { leader: 1 })
        );
    }

    #[test]
    fn without_a_voter_only_a_new_hint_is_followed() {
        let mut chase = LeaderChase::new([1, 2, 3], Hints::Heard, TIMEOUT);
        assert_eq!(chase.start(Some(2)), Next::Try(2));
        // The hint still names 2, which just refused: go on in turn instead.
        assert_eq!(chase.answer(ms(1), not_leader(None), Some(2)), Next::Try(3));
        assert_eq!(
            chase.answer(ms(2), Answer::Unreachable, Some(2)),
            Next::Try(1)
        );
        // News: 3 leads (heard from elsewhere); the pause after a full round comes first.
        assert_eq!(
            chase.answer(ms(3), Answer::Unreachable, Some(3)),
            Next::Wait(RETRY_PAUSE)
        );
        assert_eq!(chase.resume(ms(53), Some(3)), Next::Try(3));
    }

    #[test]
    fn an_unknown_outcome_ends_a_proposal_but_not_a_read() {
        let mut chase = LeaderChase::new([1, 2, 3], Hints::Heard, TIMEOUT);
        assert_eq!(chase.start(Some(2)), Next::Try(2));
        assert_eq!(
            chase.answer(ms(1), Answer::Unknown, Some(2)),
            Next::GiveUp(ChaseError::Timeout)
        );

        let mut read = LeaderChase::new([1, 2, 3], Hints::OwnVoter(1), TIMEOUT).retrying_unknown();
        assert_eq!(read.start(Some(2)), Next::Try(2));
        assert_eq!(
            read.answer(ms(1), Answer::Unknown, Some(2)),
            Next::Wait(RETRY_PAUSE)
        );
        assert_eq!(read.resume(ms(51), Some(2)), Next::Try(2));
        // Past the timeout an unknown outcome is a timeout, read or not.
        assert_eq!(
            read.answer(TIMEOUT, Answer::Unknown, Some(2)),
            Next::GiveUp(ChaseError::Timeout)
        );
    }

    #[test]
    fn a_stopped_own_voter_ends_the_chase_and_a_stopped_remote_one_is_unreachable() {
        let mut chase = LeaderChase::new([1, 2, 3], Hints::OwnVoter(1), TIMEOUT);
        assert_eq!(chase.start(Some(1)), Next::Try(1));
        assert_eq!(
            chase.answer(ms(1), Answer::Stopped("shut down".into()), Some(1)),
            Next::GiveUp(ChaseError::Stopped("shut down".into()))
        );

        let mut chase = LeaderChase::new([1, 2, 3], Hints::OwnVoter(1), TIMEOUT);
        assert_eq!(chase.start(Some(2)), Next::Try(2));
        assert_eq!(
            chase.answer(ms(1), Answer::Stopped("shut down".into()), Some(2)),
            Next::Wait(RETRY_PAUSE)
        );
        assert_eq!(
            chase.resume(TIMEOUT, Some(2)),
            Next::GiveUp(ChaseError::Unreachable { leader: 2 })
        );
    }

    #[test]
    fn answers_map_from_refusals_and_transport_errors() {
        assert_eq!(Answer::from_refusal(Refusal::Undecided), Answer::Unknown);
        assert_eq!(
            Answer::from_refusal(Refusal::NotLeader { leader: Some(2) }),
            not_leader(Some(2))
        );
        assert_eq!(
            Answer::from_transport(&TransportError::Unreachable(2)),
            Answer::Unreachable
        );
        let failed = TransportError::Failed {
            target: 2,
            reason: "reset".into(),
        };
        assert_eq!(Answer::from_transport(&failed), Answer::Unknown);
    }

    #[test]
    fn no_voters_gives_up_at_once() {
        let mut chase = LeaderChase::new([], Hints::Heard, TIMEOUT);
        assert_eq!(chase.start(Some(1)), Next::GiveUp(ChaseError::NoLeader));
    }
}
