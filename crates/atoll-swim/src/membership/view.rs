//! The view: foca's table turned into members with states, and the differences into
//! events.

use super::*;

impl Membership {
    /// Compares foca's table with the view and emits the differences as events.
    pub(super) fn sync_view(&mut self, now: Instant) {
        // A member going down in this call is this node's verdict (relayed verdicts only
        // raise suspicion). It is worth the weakest side this node had while it suspected
        // the member: a cut-off node that meets the majority's members again after a heal
        // must not pass a late verdict off as the majority's.
        let standing = self.standing(now);
        let events = &mut self.events;
        let mut suspicions = Vec::new();
        for fm in self.foca.iter_membership_state() {
            let id = fm.id();
            let state = match fm.state() {
                State::Alive => MemberState::Active,
                State::Suspect => MemberState::Suspect,
                State::Down if self.departed.contains(&(id.node, id.generation)) => {
                    MemberState::Left
                }
                State::Down => MemberState::Unreachable,
            };
            let low = self.suspected_with.remove(&id.node);
            let low = low.map_or(standing, |low| low.weaker(standing));
            if state == MemberState::Suspect {
                self.suspected_with.insert(id.node, low);
            }
            let event = match self.view.get_mut(&id.node) {
                None => {
                    self.view.insert(
                        id.node,
                        Member {
                            identity: id.clone(),
                            state,
                            incarnation: fm.incarnation(),
                            load: None,
                            since: now,
                        },
                    );
                    if state == MemberState::Suspect {
                        suspicions.push((id.clone(), fm.incarnation()));
                    }
                    state.is_live().then(|| MemberEvent::Joined(id.clone()))
                }
                Some(m) if m.identity.generation > id.generation => None,
                Some(m) if m.identity.generation < id.generation => {
                    if m.state.is_live() {
                        // A restart noticed before the old generation was declared down.
                        events.push_back(MemberEvent::Unreachable(m.identity.clone()));
                    }
                    let old = m.identity.generation;
                    self.retired
                        .entry(id.node)
                        .and_modify(|g| *g = (*g).max(old))
                        .or_insert(old);
                    *m = Member {
                        identity: id.clone(),
                        state,
                        incarnation: fm.incarnation(),
                        load: None,
                        since: now,
                    };
                    state.is_live().then(|| MemberEvent::Joined(id.clone()))
                }
                Some(m) => {
                    if state == MemberState::Suspect
                        && m.state == state
                        && m.incarnation != fm.incarnation()
                    {
                        // Refuted and suspected again: a new suspicion.
                        suspicions.push((id.clone(), fm.incarnation()));
                    }
                    m.incarnation = fm.incarnation();
                    if m.state == state {
                        None
                    } else {
                        let before = m.state;
                        m.state = state;
                        m.since = now;
                        Some(match (before, state) {
                            (MemberState::Suspect, MemberState::Active) => {
                                MemberEvent::Recovered(id.clone())
                            }
                            (_, MemberState::Active) => MemberEvent::Joined(id.clone()),
                            (_, MemberState::Suspect) => MemberEvent::Suspect(id.clone()),
                            (_, MemberState::Left) => MemberEvent::Left(id.clone()),
                            _ => {
                                self.verdicts.insert(id.node, (id.generation, low));
                                tracing::debug!(member = %id.node, generation = id.generation, incarnation = fm.incarnation(), ?before, "member declared down");
                                MemberEvent::Unreachable(id.clone())
                            }
                        })
                    }
                }
            };
            if let Some(e) = event {
                if matches!(e, MemberEvent::Suspect(_)) {
                    suspicions.push((id.clone(), fm.incarnation()));
                }
                events.push_back(e);
            }
        }
        if !self.config.auto_down {
            return;
        }
        for (id, incarnation) in suspicions {
            let at = now + self.config.suspect_timeout;
            self.schedule(at, Tick::SuspectTimeout(self.epoch, id, incarnation));
        }
    }
}
