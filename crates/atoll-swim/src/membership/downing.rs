//! A member going down by decision rather than by timeout: declaring another member down
//! (a split-brain policy's verdict), fencing itself, and rejoining as a new generation.

use super::*;

impl Membership {
    /// Declares `node` down now, as a suspect timeout would have (for a split-brain policy
    /// that decided so; see [`SwimConfig::auto_down`]). Nothing if it is not live.
    pub fn declare_down(&mut self, now: Instant, node: NodeId) {
        if self.left_cluster {
            return;
        }
        let Some(target) = self
            .foca
            .iter_membership_state()
            .find(|m| m.id().node == node && m.state() != State::Down)
            .map(|m| (m.id().clone(), m.incarnation()))
        else {
            return;
        };
        tracing::debug!(member = %node, generation = target.0.generation, "declared down");
        let mut io = FocaIo::default();
        let verdict = foca::Member::new(target.0, target.1, State::Down);
        let _ = self
            .foca
            .apply_many(std::iter::once(verdict), true, &mut io);
        self.absorb(now, io);
    }

    /// This node downs itself (its side of a partition lost): it stops acting for its
    /// generation (a [`MemberEvent::Fenced`]) and continues as the next one, knowing only
    /// the members it still hears from, so that it never holds the others down; it dials
    /// the others every `rejoin_interval` until they are active again.
    pub fn fence_self(&mut self, now: Instant) {
        if self.left_cluster {
            return;
        }
        self.reach_again = self
            .view
            .values()
            .filter(|m| m.state != MemberState::Active && m.state != MemberState::Left)
            .map(|m| (m.identity.node, m.identity.addr))
            .collect();
        self.rejoin_as_new_generation(now, true);
    }

    /// Called when the cluster declared this node down: a fresh foca under the next
    /// generation, knowing the members that were live (only the active ones when
    /// `active_only`), announcing itself to them and to the seeds.
    pub(super) fn rejoin_as_new_generation(&mut self, now: Instant, active_only: bool) {
        let old = self.identity().clone();
        let new = Identity {
            generation: old.generation + 1,
            ..old.clone()
        };
        self.epoch += 1;
        self.incarnation = 0;
        // The new generation holds nobody down.
        self.verdicts.clear();
        self.foca = Foca::new(
            new.clone(),
            self.config.foca(),
            FocaRng(SplitMix64::new(self.rng.next_u64())),
            PostcardCodec,
        );
        let live: Vec<foca::Member<Identity>> = self
            .view
            .values()
            .filter(|m| {
                if active_only {
                    m.state == MemberState::Active
                } else {
                    m.state.is_live()
                }
            })
            .map(|m| foca::Member::new(m.identity.clone(), m.incarnation, State::Alive))
            .collect();
        let mut io = FocaIo::default();
        let _ = self.foca.apply_many(live.iter().cloned(), false, &mut io);
        for m in live.iter().take(3) {
            let _ = self.foca.announce(m.id().clone(), &mut io);
        }
        self.state = MemberState::Joining;
        self.events.push_back(MemberEvent::Fenced {
            old,
            new: new.clone(),
        });
        self.dials.extend(self.seeds.iter().copied());
        // `absorb` must not see the Active note of this apply before the Fenced event.
        self.absorb(now, io);
    }
}
