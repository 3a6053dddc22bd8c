//! The split-brain policy: when the gossip plane partitions, which side downs the other.
//!
//! Keep-majority with a stability window. Each node runs [`SplitBrain`] on its own view
//! (the members it hears from, itself included). Nothing is decided while the view changes:
//! it must stay the same for the window `W` (and at least as long as failure detection
//! takes to probe every member once, [`Observation::detection`]). Once it has, the members of the *last stable
//! membership* (the view as it was when nothing was missing from it) that this node no
//! longer hears from are unreachable, and:
//! - the side that still holds more than half of the last stable membership survives and
//!   downs the unreachable members;
//! - a side with exactly half survives when it holds more than half of the Raft voters of
//!   that membership (it can still commit, so Consistent and Strong names and locks stay
//!   available there), and when the voters split evenly too (or none are known), when it
//!   holds the lowest node id of that membership: both sides compute the same answer
//!   from the same membership, so exactly one of them survives;
//! - any other side downs itself: the node fences itself (drops what it held, tells its
//!   processes) and rejoins as a new generation once it reaches the others again.
//!
//! The membership split is the last stable one plus any member known but not heard from
//! (one that joined since, then went quiet; on a young cluster whose view was never stable
//! for a window, these are all it has). Graceful leaves are not partitions: a member that
//! left is taken out of the membership at once. Members that joined during an incident and
//! are heard from count only once the view is stable again. Pure: time comes in as `now`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use atoll_core::NodeId;

/// Which split-brain policy a node runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SplitBrainPolicy {
    /// None: SWIM's own suspect timeout declares members down, each side of a partition
    /// downs the other, and at the heal the side whose verdicts no majority shares rejoins.
    #[default]
    Off,
    /// Keep-majority: the view must be stable for `window` before anyone is downed, and
    /// then the side holding a majority of the last stable membership downs the rest.
    KeepMajority {
        /// How long the view must stay the same before acting.
        window: Duration,
    },
}

/// What this node sees at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observation {
    /// The members this node hears from (answering probes), itself included.
    pub reachable: BTreeSet<NodeId>,
    /// Members it knows but does not hear from, and that nobody declared down (suspects).
    pub unreachable: BTreeSet<NodeId>,
    /// Members that left gracefully.
    pub left: BTreeSet<NodeId>,
    /// The Raft voters, as far as this node knows.
    pub voters: BTreeSet<NodeId>,
    /// How long failure detection may take to probe every member it knows once. The
    /// window is at least this long: a view stable for less may show only the members
    /// probed since a cut, and the part not yet probed would count on this side.
    pub detection: Duration,
}

/// What the policy asks of the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to do (the view is whole, or still changing).
    Wait,
    /// This side survives: declare these members down.
    Down(BTreeSet<NodeId>),
    /// This side lost: fence this node and rejoin as a new generation.
    DownMyself,
}

/// The keep-majority decision of one node.
#[derive(Clone, Debug)]
pub struct SplitBrain {
    me: NodeId,
    window: Duration,
    /// The last stable membership (empty until the first stable view).
    stable: BTreeSet<NodeId>,
    /// Voters of the last stable membership.
    stable_voters: BTreeSet<NodeId>,
    /// The current view and since when it has not changed.
    view: BTreeSet<NodeId>,
    since: Option<Instant>,
    /// This node downed itself: nothing more until it hears from a majority again.
    fenced: bool,
    /// The membership it split when it downed itself: a majority of it arms it again
    /// (the last stable membership may be empty on a young cluster).
    lost: BTreeSet<NodeId>,
}

impl SplitBrain {
    /// The policy of node `me`, acting after `window` of a stable view.
    pub fn new(me: NodeId, window: Duration) -> SplitBrain {
        SplitBrain {
            me,
            window,
            stable: BTreeSet::new(),
            stable_voters: BTreeSet::new(),
            view: BTreeSet::new(),
            since: None,
            fenced: false,
            lost: BTreeSet::new(),
        }
    }

    /// The last stable membership.
    pub fn stable_membership(&self) -> &BTreeSet<NodeId> {
        &self.stable
    }

    /// True while this node has downed itself and not yet heard from a majority again.
    pub fn is_fenced(&self) -> bool {
        self.fenced
    }

    /// Takes in what this node sees at `now` and decides.
    pub fn step(&mut self, now: Instant, seen: &Observation) -> Decision {
        let mut view = seen.reachable.clone();
        view.insert(self.me);
        for gone in &seen.left {
            // A graceful leave shrinks the membership without a vote.
            if *gone != self.me {
                self.stable.remove(gone);
                self.stable_voters.remove(gone);
            }
        }
        if self.since.is_none() || view != self.view {
            self.view = view;
            self.since = Some(now);
            return Decision::Wait;
        }
        let stable_for = now.saturating_duration_since(self.since.unwrap_or(now));
        if stable_for < self.window.max(seen.detection) {
            return Decision::Wait;
        }
        // The membership to split: the last stable one, and whoever else is known but not
        // heard from (a member that joined since, then went quiet).
        // Never stable yet: what it sees now is all it has.
        let stable = if self.stable.is_empty() {
            &self.view
        } else {
            &self.stable
        };
        let base: BTreeSet<NodeId> = stable
            .iter()
            .chain(seen.unreachable.iter().filter(|n| **n != self.me))
            .copied()
            .collect();
        let missing: BTreeSet<NodeId> = base.difference(&self.view).copied().collect();
        if self.fenced {
            // Back in touch with a majority of what it lost (it rejoined): armed again.
            if self.holds_majority() {
                self.fenced = false;
                self.settle(seen);
            }
            return Decision::Wait;
        }
        if missing.is_empty() {
            self.settle(seen);
            return Decision::Wait;
        }
        if self.survives(&base) {
            self.settle(seen);
            Decision::Down(missing)
        } else {
            self.fenced = true;
            self.lost = base;
            Decision::DownMyself
        }
    }

    /// The view becomes the stable membership.
    fn settle(&mut self, seen: &Observation) {
        self.stable = self.view.clone();
        self.stable_voters = seen.voters.intersection(&self.stable).copied().collect();
    }

    /// Whether this node hears from a majority of the membership it lost.
    fn holds_majority(&self) -> bool {
        let here = self.lost.intersection(&self.view).count();
        here * 2 > self.lost.len()
    }

    /// Whether the side this node sees survives the split of the membership `base`.
    fn survives(&self, base: &BTreeSet<NodeId>) -> bool {
        let here = base.intersection(&self.view).count();
        let total = base.len();
        if here * 2 != total {
            return here * 2 > total;
        }
        let voters: BTreeSet<NodeId> = self
            .stable_voters
            .iter()
            .filter(|v| base.contains(v))
            .copied()
            .collect();
        let voters_here = voters.intersection(&self.view).count();
        if voters_here * 2 != voters.len() {
            return voters_here * 2 > voters.len();
        }
        base.first()
            .is_some_and(|lowest| self.view.contains(lowest))
    }
}

#[cfg(test)]
#[path = "split_brain_tests.rs"]
mod tests;
