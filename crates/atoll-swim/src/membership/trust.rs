//! Whom to believe: the trust rules applied to each packet's updates (a member speaks for
//! itself; others' verdicts about a live member are suspicions to check directly), and the
//! crafted packets that check them.

use super::*;

impl Membership {
    /// A member we suspect talks to us on its own connection: tell it, so that it refutes.
    /// The gossip that spread the suspicion may have run out of transmissions while the two
    /// could not reach each other (a short partition), and without a refutation the
    /// suspicion would stand until the member is declared down.
    pub(super) fn tell_suspected(&mut self, now: Instant, src: &Identity) {
        let Some(incarnation) = self
            .foca
            .iter_membership_state()
            .find(|m| m.id() == src && m.state() == State::Suspect)
            .map(|m| m.incarnation())
        else {
            return;
        };
        if self.recently_contacted(now, src.node) {
            return;
        }
        let suspicion = foca::Member::new(src.clone(), incarnation, State::Suspect);
        self.send_crafted(src.clone(), Message::Gossip, vec![suspicion]);
    }

    /// Applies the trust rules to the updates of a packet from `src`.
    pub(super) fn narrow(
        &mut self,
        now: Instant,
        src: &Identity,
        updates: Vec<foca::Member<Identity>>,
    ) -> Vec<foca::Member<Identity>> {
        let me = self.identity().node;
        let mut kept = Vec::with_capacity(updates.len());
        for u in updates {
            let id = u.id();
            if id.node == src.node {
                // A claim about itself, on its own connection.
                if u.state() == State::Down && id == src {
                    self.departed.insert((id.node, id.generation));
                }
                kept.push(u);
                continue;
            }
            if id.node == me {
                if u.state() == State::Down {
                    // Others deciding we are down must tell us directly; relayed, it is a
                    // suspicion we refute.
                    self.stats.narrowed += 1;
                    kept.push(foca::Member::new(
                        id.clone(),
                        u.incarnation(),
                        State::Suspect,
                    ));
                } else {
                    kept.push(u);
                }
                continue;
            }
            if self
                .retired
                .get(&id.node)
                .is_some_and(|g| *g >= id.generation)
            {
                continue;
            }
            if u.state() == State::Down {
                self.note_down_claim(id, src);
            }
            let known = self.view.get(&id.node).filter(|m| m.identity == *id);
            let known_live = known.is_some_and(|m| m.state.is_live());
            match u.state() {
                State::Suspect if known_live => {
                    // Suspicion counts, and we ask the member directly: if it is alive its
                    // answer (with its refuting incarnation) settles it.
                    let target = id.clone();
                    kept.push(u);
                    self.hint(now, target);
                }
                State::Down if known_live => {
                    self.stats.narrowed += 1;
                    kept.push(foca::Member::new(
                        id.clone(),
                        u.incarnation(),
                        State::Suspect,
                    ));
                }
                State::Alive
                    if known_live && known.is_some_and(|m| m.incarnation >= u.incarnation()) =>
                {
                    kept.push(u)
                }
                State::Alive | State::Suspect => {
                    // New to us, newer than we know, or one we hold down: ask it directly.
                    self.stats.narrowed += 1;
                    let target = id.clone();
                    self.hint(now, target);
                }
                State::Down => {}
            }
        }
        kept
    }

    /// Pings a member we heard of second hand; its own answer is what counts.
    pub(super) fn hint(&mut self, now: Instant, target: Identity) {
        if self.recently_contacted(now, target.node) {
            return;
        }
        self.send_crafted(target, Message::Ping(0), Vec::new());
    }

    /// Tells a superseded or down generation that it is down, so that it rejoins fresh.
    pub(super) fn tell_down(&mut self, now: Instant, target: Identity) {
        if self.recently_contacted(now, target.node) {
            return;
        }
        self.send_crafted(target, Message::TurnUndead, Vec::new());
    }

    pub(super) fn recently_contacted(&mut self, now: Instant, node: NodeId) -> bool {
        if let Some(at) = self.contacted.get(&node)
            && now.saturating_duration_since(*at) < self.config.probe_interval / 4
        {
            return true;
        }
        self.contacted.insert(node, now);
        false
    }

    pub(super) fn send_crafted(
        &mut self,
        to: Identity,
        message: Message<Identity>,
        updates: Vec<foca::Member<Identity>>,
    ) {
        let pkt = FocaPacket {
            header: Header {
                src: self.identity().clone(),
                src_incarnation: self.incarnation,
                dst: to.clone(),
                message,
            },
            updates,
        };
        let payload = packet::seal(&self.status_for(&to), &pkt.encode());
        self.stats.sent += 1;
        self.transmits.push_back(Transmit { to, payload });
    }
}
