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
        self.send_crafted(now, src.clone(), Message::Gossip, vec![suspicion]);
    }

    /// Whether this node accepts being declared down by `other`, whose packet carries its
    /// standing when it made that verdict. A verdict made with a quorum is final; one made
    /// without is accepted only if this node's side gives way to the other's.
    pub(super) fn yields_to(&self, now: Instant, status: &Status, other: &Identity) -> bool {
        let theirs = status.standing;
        theirs.quorum()
            || self
                .standing(now)
                .gives_way_to(theirs, self.identity().node, other.node)
    }

    /// Whether this node's own verdict on `src`, made without a quorum, loses to the side
    /// `src` speaks for now: then this node must rejoin, as its verdict cannot be taken back
    /// (a generation declared down never comes back) and `src` will not accept it.
    pub(super) fn verdict_overturned(&self, src: &Identity, status: &Status) -> bool {
        let held_down = self
            .view
            .get(&src.node)
            .is_some_and(|m| m.identity == *src && m.state == MemberState::Unreachable);
        let Some(&(generation, mine)) = self.verdicts.get(&src.node) else {
            return false;
        };
        held_down
            && generation == src.generation
            && !mine.quorum()
            && mine.gives_way_to(status.standing, self.identity().node, src.node)
    }

    /// This node's side now: itself, the members it holds active and those it has suspected
    /// for less than a probe interval, out of every member it knows but those that left.
    /// Suspected longer, a member is off this node's side: a cut-off minority suspects the
    /// majority's members for a while before it declares them down, and counted, they would
    /// make it look as large as the majority. A fresh suspicion is often only relayed (after
    /// a heal, the minority's gossip makes the majority suspect its own members until they
    /// answer) and does not count yet.
    pub(super) fn standing(&self, now: Instant) -> Standing {
        let grace = self.config.probe_interval;
        let on_side = |m: &&Member| match m.state {
            MemberState::Active => true,
            MemberState::Suspect => now.saturating_duration_since(m.since) < grace,
            _ => false,
        };
        let count = |n: usize| u32::try_from(1 + n).unwrap_or(u32::MAX);
        let members = self.view.values();
        Standing {
            side: count(members.clone().filter(on_side).count()),
            known: count(members.filter(|m| m.state != MemberState::Left).count()),
        }
    }

    /// What a packet to `to` says about this node: its standing now, or, when the packet
    /// tells `to` it is down, this node's standing when it declared it so.
    pub(super) fn status_for(&self, now: Instant, to: &Identity, tells_down: bool) -> Status {
        let mut status = self.status(now);
        if tells_down
            && let Some(&(generation, standing)) = self.verdicts.get(&to.node)
            && generation == to.generation
        {
            status.standing = standing;
        }
        status
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
        self.send_crafted(now, target, Message::Ping(0), Vec::new());
    }

    /// Tells a superseded or down generation that it is down, so that it rejoins fresh.
    pub(super) fn tell_down(&mut self, now: Instant, target: Identity) {
        if self.recently_contacted(now, target.node) {
            return;
        }
        self.send_crafted(now, target, Message::TurnUndead, Vec::new());
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
        now: Instant,
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
        let payload = packet::seal(&self.status(now), &pkt.encode());
        self.stats.sent += 1;
        self.transmits.push_back(Transmit { to, payload });
    }

    pub(super) fn status(&self, now: Instant) -> Status {
        Status {
            load: self.load,
            standing: self.standing(now),
        }
    }
}
