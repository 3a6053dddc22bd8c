//! The membership state machine: foca plus the rules that make gossip trustworthy, the
//! lifecycle mapping and the event stream. No I/O, no clock: time comes in as `now`,
//! datagrams go out through [`Membership::poll_transmit`].

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use atoll_core::{NodeId, SplitMix64};
use foca::{Foca, Header, Message, NoCustomBroadcast, Notification, PostcardCodec, State, Timer};

use crate::config::SwimConfig;
use crate::error::PacketError;
use crate::identity::Identity;
use crate::packet::{self, FocaPacket, Load, Status};

/// Where a member is in its lifecycle.
///
/// Mapping from foca: a member foca holds `Alive` is `Active`, `Suspect` is `Suspect`, and
/// `Down` is `Left` when the member announced its own departure on its own connection,
/// `Unreachable` otherwise. `Joining` is this node's own state until some member has
/// acknowledged it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MemberState {
    /// Not yet acknowledged by any member.
    Joining,
    /// Answering probes.
    Active,
    /// Missed a probe (directly and through witnesses); declared unreachable unless it
    /// refutes within the suspect timeout.
    Suspect,
    /// Declared down after the suspect timeout. Its generation never comes back.
    Unreachable,
    /// Left gracefully.
    Left,
}

impl MemberState {
    /// True for `Active` and `Suspect`: members still taking part.
    pub fn is_live(self) -> bool {
        matches!(self, MemberState::Active | MemberState::Suspect)
    }
}

/// One member as this node sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    /// Who it is.
    pub identity: Identity,
    /// Its lifecycle state.
    pub state: MemberState,
    /// Its SWIM incarnation (grows each time it refutes a suspicion).
    pub incarnation: u16,
    /// The last load summary it sent us directly, if any.
    pub load: Option<Load>,
    /// When it entered `state`.
    pub since: Instant,
}

/// A change in membership.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberEvent {
    /// A member (or a new generation of one) became active.
    Joined(Identity),
    /// A member missed its probes.
    Suspect(Identity),
    /// A suspect answered in time.
    Recovered(Identity),
    /// A member was declared down.
    Unreachable(Identity),
    /// A member left gracefully.
    Left(Identity),
    /// This node was acknowledged by the cluster (first join, or after a rejoin).
    Active(Identity),
    /// This node learned it had been declared down: it stopped acting for the old generation
    /// and rejoins as `new`.
    Fenced {
        /// The generation that was declared down.
        old: Identity,
        /// The generation this node continues as.
        new: Identity,
    },
}

/// A datagram to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The member to send to (its node id and address).
    pub to: Identity,
    /// The datagram.
    pub payload: Vec<u8>,
}

/// Counters for the benchmark and the status page.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SwimStats {
    /// Datagrams handed to the transport.
    pub sent: u64,
    /// Datagrams received.
    pub received: u64,
    /// Datagrams refused (malformed, forged, fenced, ...).
    pub rejected: u64,
    /// Claims about third parties that were narrowed (a relayed `down` kept as suspicion, a
    /// relayed `alive` checked directly).
    pub narrowed: u64,
}

type FocaCore = Foca<Identity, PostcardCodec, FocaRng, NoCustomBroadcast>;

/// A seeded random source for foca.
struct FocaRng(SplitMix64);

impl rand_core::TryRng for FocaRng {
    type Error = Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok((self.0.next_u64() >> 32) as u32)
    }
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(self.0.next_u64())
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for chunk in dst.chunks_mut(8) {
            let v = self.0.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        Ok(())
    }
}

/// What foca asked for during one call.
#[derive(Default)]
struct FocaIo {
    /// Datagrams, each marked when it tells its receiver it is down.
    sends: Vec<(Identity, Vec<u8>, bool)>,
    timers: Vec<(Duration, Timer<Identity>)>,
    notes: Vec<Note>,
    incarnation: Option<u16>,
}

enum Note {
    Active,
    Idle,
    Defunct,
}

impl foca::Runtime<Identity> for FocaIo {
    fn notify(&mut self, notification: Notification<'_, Identity>) {
        match notification {
            Notification::Active => self.notes.push(Note::Active),
            Notification::Idle => self.notes.push(Note::Idle),
            Notification::Defunct => self.notes.push(Note::Defunct),
            // foca reports every datagram right after handing it over.
            Notification::DataSent(h) => {
                self.incarnation = Some(h.src_incarnation);
                if h.message == Message::TurnUndead
                    && let Some(last) = self.sends.last_mut()
                {
                    last.2 = true;
                }
            }
            // Member changes are read from foca's table after each call.
            _ => {}
        }
    }
    fn send_to(&mut self, to: Identity, data: &[u8]) {
        self.sends.push((to, data.to_vec(), false));
    }
    fn submit_after(&mut self, event: Timer<Identity>, after: Duration) {
        self.timers.push((after, event));
    }
}

#[derive(Debug)]
enum Tick {
    Foca(u64, Timer<Identity>),
    /// A suspicion this node holds runs out unless the member refuted it.
    SuspectTimeout(u64, Identity, u16),
    Rejoin,
}

struct Scheduled {
    at: Instant,
    seq: u64,
    tick: Tick,
}

impl PartialEq for Scheduled {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// SWIM membership for one node, sans I/O.
///
/// Drive it with [`handle_datagram`](Self::handle_datagram) for every datagram from an
/// authenticated peer, [`handle_timeout`](Self::handle_timeout) at
/// [`poll_timeout`](Self::poll_timeout), and [`dial_result`](Self::dial_result) for every
/// address from [`poll_dial`](Self::poll_dial); after each call drain
/// [`poll_transmit`](Self::poll_transmit) and [`poll_event`](Self::poll_event).
///
/// Trust rules on top of SWIM (the transport has already proven the sender's node id):
/// - a packet whose header names another sender than its connection is refused;
/// - claims a member makes about itself (alive, a new incarnation, leaving) count only when
///   they arrive on that member's own connection: a relayed `alive` about someone else is a
///   hint that makes this node ask that member directly, and a relayed `down` about someone
///   else counts only as suspicion (our own timer decides);
/// - a generation that was superseded is refused and told it is down, so it rejoins fresh;
/// - a verdict is weighed by how many members agree with it: one a majority holds is
///   final; one without a majority, still held a suspect timeout later, gives way to the
///   member it names, and the node that made it rejoins.
pub struct Membership {
    config: SwimConfig,
    foca: FocaCore,
    /// Bumped on every reset so that timers of the old foca are ignored.
    epoch: u64,
    rng: SplitMix64,
    incarnation: u16,
    state: MemberState,
    left_cluster: bool,
    view: BTreeMap<NodeId, Member>,
    /// Highest generation per node that was superseded by a newer one.
    retired: BTreeMap<NodeId, u64>,
    /// Generations that announced their own departure.
    departed: BTreeSet<(NodeId, u64)>,
    /// This node's own verdicts: per member it declared down, that generation, when, and
    /// how many members this node held active then (itself included).
    verdicts: BTreeMap<NodeId, (u64, Instant, u32)>,
    /// Per member, a generation others said was down (in gossip), and who said so (each
    /// with the generation it spoke as).
    down_claims: BTreeMap<NodeId, (u64, BTreeMap<NodeId, u64>)>,
    /// Per live member, since when this node has held it live without doubting it for
    /// longer than a probe interval.
    settled_since: BTreeMap<NodeId, Instant>,
    /// When each node was last asked directly (hint or fencing notice), to rate-limit.
    contacted: BTreeMap<NodeId, Instant>,
    seeds: Vec<SocketAddr>,
    /// Members to reach again after this node fenced itself (their addresses), until they
    /// are active again.
    reach_again: BTreeMap<NodeId, SocketAddr>,
    load: Load,
    timers: BinaryHeap<Reverse<Scheduled>>,
    seq: u64,
    transmits: VecDeque<Transmit>,
    events: VecDeque<MemberEvent>,
    dials: VecDeque<SocketAddr>,
    stats: SwimStats,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("identity", self.foca.identity())
            .field("state", &self.state)
            .field("members", &self.view.len())
            .finish_non_exhaustive()
    }
}

impl Membership {
    /// Membership for `me`, with randomness from `seed` (the same seed and the same inputs
    /// give the same outputs).
    pub fn new(me: Identity, config: SwimConfig, seed: u64) -> Membership {
        let mut rng = SplitMix64::new(seed);
        let foca = Foca::new(
            me,
            config.foca(),
            FocaRng(SplitMix64::new(rng.next_u64())),
            PostcardCodec,
        );
        Membership {
            config,
            foca,
            epoch: 0,
            rng,
            incarnation: 0,
            state: MemberState::Joining,
            left_cluster: false,
            view: BTreeMap::new(),
            retired: BTreeMap::new(),
            departed: BTreeSet::new(),
            verdicts: BTreeMap::new(),
            down_claims: BTreeMap::new(),
            settled_since: BTreeMap::new(),
            contacted: BTreeMap::new(),
            seeds: Vec::new(),
            reach_again: BTreeMap::new(),
            load: Load::default(),
            timers: BinaryHeap::new(),
            seq: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            dials: VecDeque::new(),
            stats: SwimStats::default(),
        }
    }

    /// This node's current identity (its generation changes when it rejoins).
    pub fn identity(&self) -> &Identity {
        self.foca.identity()
    }

    /// This node's lifecycle state.
    pub fn state(&self) -> MemberState {
        self.state
    }

    /// The other members this node knows, live or recently down, ordered by node id.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.view.values()
    }

    /// One member by node id.
    pub fn member(&self, node: NodeId) -> Option<&Member> {
        self.view.get(&node)
    }

    /// Live members plus this node.
    pub fn live_count(&self) -> usize {
        1 + self.view.values().filter(|m| m.state.is_live()).count()
    }

    /// Counters since start.
    pub fn stats(&self) -> SwimStats {
        self.stats
    }

    /// Sets the load summary sent with every packet from now on.
    pub fn set_load(&mut self, load: Load) {
        self.load = load;
    }

    /// Starts joining through `seeds` (addresses; the transport tells us who answered). With
    /// no seed other than this node, this node founds the cluster and is `Active` at once.
    pub fn join(&mut self, now: Instant, seeds: &[SocketAddr]) {
        let own = self.identity().addr;
        self.seeds = seeds.iter().copied().filter(|a| *a != own).collect();
        if self.seeds.is_empty() {
            self.become_active();
        }
        self.dials.extend(self.seeds.iter().copied());
        self.schedule(now + self.config.rejoin_interval, Tick::Rejoin);
    }

    /// The transport reached `addr` (or failed to). A seed that turns out to be this node
    /// makes it the founder.
    pub fn dial_result(&mut self, now: Instant, addr: SocketAddr, node: Option<NodeId>) {
        let Some(node) = node else { return };
        if node == self.identity().node {
            self.become_active();
            return;
        }
        if self.left_cluster {
            return;
        }
        let mut io = FocaIo::default();
        let _ = self
            .foca
            .announce(Identity::probe_target(node, addr), &mut io);
        self.absorb(now, io);
    }

    /// Leaves gracefully: every live member is told directly, and foca stops.
    pub fn leave(&mut self, now: Instant) {
        if self.left_cluster {
            return;
        }
        let me = self.identity().clone();
        let bye = foca::Member::new(me.clone(), self.incarnation, State::Down);
        let live: Vec<Identity> = self
            .view
            .values()
            .filter(|m| m.state.is_live())
            .map(|m| m.identity.clone())
            .collect();
        for to in live {
            self.send_crafted(to, Message::Gossip, vec![bye.clone()]);
        }
        let mut io = FocaIo::default();
        let _ = self.foca.leave_cluster(&mut io);
        self.left_cluster = true;
        self.absorb(now, io);
        self.state = MemberState::Left;
        self.timers.clear();
    }

    /// Handles one datagram from the authenticated peer `from`.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: NodeId,
        datagram: &[u8],
    ) -> Result<(), PacketError> {
        self.stats.received += 1;
        let result = self.accept(now, from, datagram);
        if result.is_err() {
            self.stats.rejected += 1;
        }
        result
    }

    fn accept(&mut self, now: Instant, from: NodeId, datagram: &[u8]) -> Result<(), PacketError> {
        if self.left_cluster {
            return Ok(());
        }
        let (status, body) = packet::open(datagram, self.config.max_datagram)?;
        let mut pkt = FocaPacket::decode(body)?;
        let src = pkt.header.src.clone();
        if src.node != from {
            return Err(PacketError::ForgedSender);
        }
        if pkt.header.dst.node != self.identity().node {
            return Err(PacketError::NotForUs);
        }
        let newer_known = self
            .view
            .get(&src.node)
            .is_some_and(|m| m.identity.generation > src.generation);
        if newer_known
            || self
                .retired
                .get(&src.node)
                .is_some_and(|g| *g >= src.generation)
        {
            self.tell_down(now, src);
            return Err(PacketError::Fenced);
        }
        // After a partition heals, both sides may hold members of the other down, and a
        // generation declared down never comes back: one of the two must rejoin. A verdict
        // a majority shares stands; one that never won a majority gives way.
        if self.verdict_gives_way(now, &src, &status) {
            tracing::info!(member = %src.node, generation = src.generation, "our verdict on this member never won a majority; rejoining");
            self.reach_again.insert(src.node, src.addr);
            self.rejoin_as_new_generation(now, false);
            return Ok(());
        }
        if pkt.header.message == Message::TurnUndead && !self.yields_to(&status) {
            return Ok(());
        }
        pkt.updates = self.narrow(now, &src, std::mem::take(&mut pkt.updates));
        let mut io = FocaIo::default();
        if let Err(e) = self.foca.handle_data(&pkt.encode(), &mut io) {
            tracing::trace!(error = %e, "membership packet not handled");
        }
        self.absorb(now, io);
        if let Some(m) = self.view.get_mut(&src.node)
            && m.identity == src
        {
            m.load = Some(status.load);
        }
        self.tell_suspected(now, &src);
        Ok(())
    }

    /// The next time [`handle_timeout`](Self::handle_timeout) must run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse(s)| s.at)
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse(s)) = self.timers.peek() {
            if s.at > now {
                break;
            }
            let Some(Reverse(s)) = self.timers.pop() else {
                break;
            };
            match s.tick {
                Tick::Foca(epoch, timer) if epoch == self.epoch => {
                    let mut io = FocaIo::default();
                    if let Err(e) = self.foca.handle_timer(timer, &mut io) {
                        tracing::trace!(error = %e, "membership timer not handled");
                    }
                    self.absorb(now, io);
                }
                Tick::SuspectTimeout(epoch, id, incarnation) if epoch == self.epoch => {
                    self.suspicion_ran_out(now, id, incarnation)
                }
                Tick::Foca(..) | Tick::SuspectTimeout(..) => {}
                Tick::Rejoin => self.rejoin_tick(now),
            }
        }
    }

    /// foca runs a suspicion timer only for members its own probe failed; a suspicion heard
    /// from others runs here, so every node decides after its own full suspect timeout
    /// without taking anyone's word for `down`.
    fn suspicion_ran_out(&mut self, now: Instant, id: Identity, incarnation: u16) {
        let still = self.foca.iter_membership_state().any(|m| {
            m.id() == &id && m.state() == State::Suspect && m.incarnation() == incarnation
        });
        if !still {
            return;
        }
        tracing::debug!(member = %id.node, generation = id.generation, incarnation, "suspicion ran out");
        let mut io = FocaIo::default();
        let verdict = foca::Member::new(id, incarnation, State::Down);
        let _ = self
            .foca
            .apply_many(std::iter::once(verdict), true, &mut io);
        self.absorb(now, io);
    }

    fn rejoin_tick(&mut self, now: Instant) {
        if self.left_cluster {
            return;
        }
        self.forget_old(now);
        let view = &self.view;
        self.reach_again.retain(|node, _| {
            view.get(node)
                .is_none_or(|m| m.state != MemberState::Active)
        });
        self.dials.extend(self.reach_again.values().copied());
        let alone = self.foca.num_members() == 0;
        if self.state == MemberState::Joining || alone {
            self.dials.extend(self.seeds.iter().copied());
            if alone {
                // Seeds may be gone: try whoever we knew.
                let known: Vec<SocketAddr> = self
                    .view
                    .values()
                    .map(|m| m.identity.addr)
                    .take(8)
                    .collect();
                self.dials.extend(known);
            }
        }
        self.schedule(now + self.config.rejoin_interval, Tick::Rejoin);
    }

    fn forget_old(&mut self, now: Instant) {
        let keep = self.config.forget_down_after;
        self.view
            .retain(|_, m| m.state.is_live() || now.saturating_duration_since(m.since) < keep);
        let view = &self.view;
        self.verdicts.retain(|node, _| view.contains_key(node));
        self.down_claims.retain(|node, _| view.contains_key(node));
        self.settled_since.retain(|node, _| view.contains_key(node));
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next membership event.
    pub fn poll_event(&mut self) -> Option<MemberEvent> {
        self.events.pop_front()
    }

    /// The next seed address to reach; report with [`dial_result`](Self::dial_result).
    pub fn poll_dial(&mut self) -> Option<SocketAddr> {
        self.dials.pop_front()
    }

    fn schedule(&mut self, at: Instant, tick: Tick) {
        self.seq += 1;
        self.timers.push(Reverse(Scheduled {
            at,
            seq: self.seq,
            tick,
        }));
    }

    fn become_active(&mut self) {
        if self.state != MemberState::Active && !self.left_cluster {
            self.state = MemberState::Active;
            self.events
                .push_back(MemberEvent::Active(self.identity().clone()));
        }
    }

    /// Takes in what foca asked for, then brings the member view up to date.
    fn absorb(&mut self, now: Instant, io: FocaIo) {
        if let Some(inc) = io.incarnation {
            self.incarnation = inc;
        }
        // First, so that a verdict foca just made is on record for its courtesy notice.
        self.sync_view(now);
        for (to, data, tells_down) in io.sends {
            // foca sends its "you are down" courtesy even when the suspicion behind it was
            // refuted in time; telling a member we hold live that it is down would fence a
            // healthy node.
            if tells_down
                && self
                    .foca
                    .iter_membership_state()
                    .any(|m| m.id() == &to && m.state() != State::Down)
            {
                continue;
            }
            self.stats.sent += 1;
            let payload = packet::seal(&self.status_for(&to), &data);
            self.transmits.push_back(Transmit { to, payload });
        }
        for (after, timer) in io.timers {
            self.schedule(now + after, Tick::Foca(self.epoch, timer));
        }
        for note in io.notes {
            match note {
                Note::Active => self.become_active(),
                Note::Idle => {}
                Note::Defunct if !self.left_cluster => self.rejoin_as_new_generation(now, false),
                Note::Defunct => {}
            }
        }
    }
}

mod downing;
mod trust;
mod verdicts;
mod view;

#[cfg(test)]
#[path = "membership_tests.rs"]
mod tests;
