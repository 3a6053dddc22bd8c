//! Settling a healed partition: which of two members that hold each other down (or one that
//! holds the other down) rejoins. A generation declared down never comes back, so one must.
//!
//! Sizes of sides alone are a poor guide: after a heal, a cut-off minority meets the
//! majority's members again and counts them, and a member of the majority that stalled for a
//! moment counts fewer. What holds up is agreement: every member of the majority declares a
//! cut-off member down on its own, and each hears the others say so in their gossip; the
//! minority's verdicts on the majority's members are shared by the minority only. A verdict
//! also stands when it was made from a majority side, counting only members held active
//! (never doubted longer than a probe interval) for a suspect timeout: members met again
//! just after a heal do not count.

use super::*;
use crate::packet::Agreement;

impl Membership {
    /// `by` said in gossip that `id` is down.
    pub(super) fn note_down_claim(&mut self, id: &Identity, by: &Identity) {
        let entry = self
            .down_claims
            .entry(id.node)
            .or_insert_with(|| (id.generation, BTreeMap::new()));
        if entry.0 < id.generation {
            *entry = (id.generation, BTreeMap::new());
        }
        if entry.0 == id.generation {
            entry.1.insert(by.node, by.generation);
        }
    }

    /// This node's verdict on `id`, if it holds that generation down by its own verdict:
    /// how many agree, and when it was made.
    fn verdict_on(&self, id: &Identity) -> Option<(Agreement, Instant)> {
        let held_down = self
            .view
            .get(&id.node)
            .is_some_and(|m| m.identity == *id && m.state == MemberState::Unreachable);
        let &(generation, at, side) = self.verdicts.get(&id.node)?;
        if !held_down || generation != id.generation {
            return None;
        }
        // Only claims by generations still live count: one that rejoined since holds
        // nobody down.
        let live_as = |node: &NodeId, generation: u64| {
            self.view
                .get(node)
                .is_some_and(|m| m.identity.generation == generation && m.state.is_live())
        };
        let others = self
            .down_claims
            .get(&id.node)
            .filter(|(g, _)| *g == id.generation)
            .map_or(0, |(_, by)| {
                by.iter().filter(|(n, g)| live_as(n, **g)).count()
            });
        let known = self
            .view
            .values()
            .filter(|m| m.state != MemberState::Left)
            .count();
        let count = |n: usize| u32::try_from(1 + n).unwrap_or(u32::MAX);
        Some((
            Agreement {
                holders: count(others),
                known: count(known),
                side,
            },
            at,
        ))
    }

    /// What a packet to `to` says about this node: whether it holds `to` down, and how many
    /// agree.
    pub(super) fn status_for(&self, to: &Identity) -> Status {
        Status {
            load: self.load,
            verdict: self.verdict_on(to).map(|(agreement, _)| agreement),
        }
    }

    /// Whether this node accepts being told it is down by a packet carrying `status`: when a
    /// majority holds it down, or when the sender knows a newer generation of this node
    /// (such a notice carries no verdict). A verdict without a majority is left to settle
    /// on the sender's side ([`verdict_gives_way`](Self::verdict_gives_way)).
    pub(super) fn yields_to(&self, status: &Status) -> bool {
        status.verdict.is_none_or(Agreement::quorum)
    }

    /// Whether this node's own verdict on `src` gives way, now that `src` talks to it: the
    /// verdict never won a majority within a suspect timeout of being made, and `src`
    /// either does not hold this node down or holds it down with the stronger verdict.
    /// Then this node rejoins as a new generation, which holds nobody down.
    pub(super) fn verdict_gives_way(&self, now: Instant, src: &Identity, status: &Status) -> bool {
        let Some((mine, at)) = self.verdict_on(src) else {
            return false;
        };
        if mine.quorum() || now.saturating_duration_since(at) < self.config.suspect_timeout {
            return false;
        }
        status
            .verdict
            .is_none_or(|theirs| mine.gives_way_to(theirs, self.identity().node, src.node))
    }
}
