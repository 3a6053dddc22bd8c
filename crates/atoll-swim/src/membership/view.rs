//! The view: foca's table turned into members with states, and the differences into
//! events.

use super::*;

impl Membership {
    /// Compares foca's table with the view and emits the differences as events.
    pub(super) fn sync_view(&mut self, now: Instant) {
        // This node's side, should it declare a member down here: itself and the members it
        // has held active, doubting them no longer than a probe interval, for a suspect
        // timeout at least. Members that just came back (a partition that just healed) do
        // not count: they may hold this node down.
        let settled = now.checked_sub(self.config.suspect_timeout);
        let settled_since = &self.settled_since;
        let stable = self.view.values().filter(|m| {
            m.state == MemberState::Active
                && settled_since
                    .get(&m.identity.node)
                    .is_some_and(|at| settled.is_some_and(|t| *at <= t))
        });
        let side = u32::try_from(1 + stable.count()).unwrap_or(u32::MAX);
        let short_doubt = self.config.probe_interval;
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
                    if state.is_live() {
                        self.settled_since.insert(id.node, now);
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
                    self.settled_since.insert(id.node, now);
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
                        let doubted_long = before == MemberState::Suspect
                            && now.saturating_duration_since(m.since) > short_doubt;
                        m.state = state;
                        m.since = now;
                        if !state.is_live() {
                            self.settled_since.remove(&id.node);
                        } else if doubted_long || !before.is_live() {
                            self.settled_since.insert(id.node, now);
                        }
                        Some(match (before, state) {
                            (MemberState::Suspect, MemberState::Active) => {
                                MemberEvent::Recovered(id.clone())
                            }
                            (_, MemberState::Active) => MemberEvent::Joined(id.clone()),
                            (_, MemberState::Suspect) => MemberEvent::Suspect(id.clone()),
                            (_, MemberState::Left) => MemberEvent::Left(id.clone()),
                            _ => {
                                // This node's own verdict: relayed ones only raise suspicion.
                                self.verdicts.insert(id.node, (id.generation, now, side));
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
