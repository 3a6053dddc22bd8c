//! The trust rules and lifecycle, with memberships wired together by hand: no sockets, no
//! clock, every datagram visible.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use atoll_core::NodeId;
use foca::{Header, Message, State};

use std::collections::HashSet;

use super::*;
use crate::identity::MemberMeta;
use crate::packet::{FocaPacket, Status, seal};

fn ident(n: u8, generation: u64) -> Identity {
    Identity::new(
        NodeId::from_bytes([n; 16]),
        generation,
        SocketAddr::from(([10, 0, 0, n], 7000)),
        MemberMeta::named(format!("n{n}")),
    )
    .unwrap()
}

/// A few memberships and a network that delivers instantly and in order.
struct Bench {
    now: Instant,
    nodes: Vec<Membership>,
    /// Node ids (by index) whose traffic is dropped.
    dead: Vec<bool>,
    /// Pairs (by index, lower first) whose traffic is dropped both ways.
    cut: HashSet<(usize, usize)>,
}

impl Bench {
    fn new(n: u8) -> Bench {
        Bench::with_config(n, SwimConfig::default())
    }

    fn with_config(n: u8, config: SwimConfig) -> Bench {
        let now = Instant::now();
        let mut nodes = Vec::new();
        for i in 0..n {
            let mut m = Membership::new(ident(i + 1, 1), config.clone(), u64::from(i));
            let seeds: Vec<SocketAddr> = if i == 0 {
                vec![]
            } else {
                vec![ident(1, 1).addr]
            };
            m.join(now, &seeds);
            nodes.push(m);
        }
        let mut bench = Bench {
            now,
            nodes,
            dead: vec![false; usize::from(n)],
            cut: HashSet::new(),
        };
        bench.pump();
        bench
    }

    fn index(&self, node: NodeId) -> Option<usize> {
        self.nodes.iter().position(|m| m.identity().node == node)
    }

    /// Delivers datagrams and dials until nothing moves.
    fn pump(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            for i in 0..self.nodes.len() {
                while let Some(addr) = self.nodes[i].poll_dial() {
                    moved = true;
                    let who = self
                        .nodes
                        .iter()
                        .position(|m| m.identity().addr == addr)
                        .filter(|j| !self.dead[*j] && !self.is_cut(i, *j))
                        .map(|j| self.nodes[j].identity().node);
                    self.nodes[i].dial_result(self.now, addr, who);
                }
                while let Some(t) = self.nodes[i].poll_transmit() {
                    moved = true;
                    let from = self.nodes[i].identity().node;
                    if self.dead[i] {
                        continue;
                    }
                    if let Some(j) = self
                        .index(t.to.node)
                        .filter(|j| !self.dead[*j] && !self.is_cut(i, *j))
                    {
                        let _ = self.nodes[j].handle_datagram(self.now, from, &t.payload);
                    }
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the exchange never settled");
    }

    /// Advances time in 100 ms steps, running timers and delivering traffic.
    fn advance(&mut self, by: Duration) {
        let end = self.now + by;
        while self.now < end {
            self.now += Duration::from_millis(100);
            for m in &mut self.nodes {
                m.handle_timeout(self.now);
            }
            self.pump();
        }
    }

    fn is_cut(&self, a: usize, b: usize) -> bool {
        self.cut.contains(&(a.min(b), a.max(b)))
    }

    /// Cuts every link between `a` and `b`.
    fn partition(&mut self, a: &[usize], b: &[usize]) {
        for &x in a {
            for &y in b {
                self.cut.insert((x.min(y), x.max(y)));
            }
        }
    }

    fn state(&self, observer: usize, target: usize) -> Option<MemberState> {
        let id = self.nodes[target].identity().node;
        self.nodes[observer].member(id).map(|m| m.state)
    }

    fn events(&mut self, i: usize) -> Vec<MemberEvent> {
        std::iter::from_fn(|| self.nodes[i].poll_event()).collect()
    }

    /// Whether node `i` fenced itself since its events were last read.
    fn fenced(&mut self, i: usize) -> bool {
        self.events(i)
            .iter()
            .any(|e| matches!(e, MemberEvent::Fenced { .. }))
    }

    /// A packet as `from` would send it to `to`.
    fn forge(
        &self,
        from: usize,
        to: usize,
        message: Message<Identity>,
        updates: Vec<foca::Member<Identity>>,
    ) -> Vec<u8> {
        let pkt = FocaPacket {
            header: Header {
                src: self.nodes[from].identity().clone(),
                src_incarnation: 0,
                dst: self.nodes[to].identity().clone(),
                message,
            },
            updates,
        };
        seal(&Status::default(), &pkt.encode())
    }
}

#[test]
fn three_nodes_become_active_and_list_each_other() {
    let mut b = Bench::new(3);
    b.advance(Duration::from_secs(2));
    for i in 0..3 {
        assert_eq!(b.nodes[i].state(), MemberState::Active);
        for j in (0..3).filter(|j| *j != i) {
            assert_eq!(b.state(i, j), Some(MemberState::Active), "{i} sees {j}");
        }
    }
    let names: Vec<_> = b.nodes[0]
        .members()
        .map(|m| m.identity.name().to_string())
        .collect();
    assert_eq!(names, ["n2", "n3"]);
}

#[test]
fn a_packet_claiming_another_sender_is_refused() {
    let mut b = Bench::new(3);
    let pkt = b.forge(1, 0, Message::Gossip, vec![]);
    let third = b.nodes[2].identity().node;
    assert_eq!(
        b.nodes[0].handle_datagram(b.now, third, &pkt),
        Err(PacketError::ForgedSender)
    );
    assert_eq!(b.nodes[0].stats().rejected, 1);
}

#[test]
fn a_relayed_down_counts_only_as_suspicion() {
    let mut b = Bench::new(3);
    b.advance(Duration::from_secs(1));
    b.events(0);
    // Node 1 tells node 0 that node 2 is down; node 2 is alive and answers.
    let verdict = foca::Member::new(b.nodes[2].identity().clone(), 0, State::Down);
    let pkt = b.forge(1, 0, Message::Gossip, vec![verdict]);
    let from = b.nodes[1].identity().node;
    b.nodes[0].handle_datagram(b.now, from, &pkt).unwrap();
    assert_eq!(b.state(0, 2), Some(MemberState::Suspect));
    assert!(b.nodes[0].stats().narrowed >= 1);
    // Node 0 asks node 2 directly; node 2 refutes and stays.
    b.pump();
    b.advance(Duration::from_secs(8));
    assert_eq!(b.state(0, 2), Some(MemberState::Active));
    let events = b.events(0);
    assert!(events.iter().any(|e| matches!(e, MemberEvent::Suspect(_))));
    assert!(
        events
            .iter()
            .any(|e| matches!(e, MemberEvent::Recovered(_)))
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, MemberEvent::Unreachable(_)))
    );
}

#[test]
fn a_relayed_alive_is_checked_with_the_member_itself() {
    let mut b = Bench::new(2);
    // Node 1 vouches for a node 9 nobody has heard from.
    let stranger = ident(9, 1);
    let claim = foca::Member::new(stranger.clone(), 0, State::Alive);
    let pkt = b.forge(1, 0, Message::Gossip, vec![claim]);
    let from = b.nodes[1].identity().node;
    b.nodes[0].handle_datagram(b.now, from, &pkt).unwrap();
    assert!(
        b.nodes[0].member(stranger.node).is_none(),
        "not listed on hearsay"
    );
    let asked: Vec<Transmit> = std::iter::from_fn(|| b.nodes[0].poll_transmit()).collect();
    assert!(
        asked.iter().any(|t| t.to == stranger),
        "asked the stranger directly"
    );
}

#[test]
fn a_crashed_member_goes_suspect_then_unreachable() {
    let mut b = Bench::new(4);
    b.advance(Duration::from_secs(1));
    b.dead[3] = true;
    b.advance(Duration::from_secs(10));
    for i in 0..3 {
        assert_eq!(
            b.state(i, 3),
            Some(MemberState::Unreachable),
            "observer {i}"
        );
        let events = b.events(i);
        let suspect = events
            .iter()
            .position(|e| matches!(e, MemberEvent::Suspect(_)));
        let down = events
            .iter()
            .position(|e| matches!(e, MemberEvent::Unreachable(_)));
        assert!(
            suspect.is_some() && suspect < down,
            "observer {i}: {events:?}"
        );
    }
}

#[test]
fn leaving_is_left_not_unreachable() {
    let mut b = Bench::new(3);
    b.advance(Duration::from_secs(1));
    let now = b.now;
    b.nodes[2].leave(now);
    b.pump();
    assert_eq!(b.nodes[2].state(), MemberState::Left);
    assert_eq!(b.state(0, 2), Some(MemberState::Left));
    assert_eq!(b.state(1, 2), Some(MemberState::Left));
}

#[test]
fn a_superseded_generation_is_refused_and_told_it_is_down() {
    let mut b = Bench::new(2);
    b.advance(Duration::from_secs(1));
    // Node 1 restarts as generation 2 and rejoins.
    b.nodes[1] = Membership::new(ident(2, 2), SwimConfig::default(), 77);
    let now = b.now;
    b.nodes[1].join(now, &[ident(1, 1).addr]);
    b.advance(Duration::from_secs(2));
    let m = b.nodes[0].member(ident(2, 2).node).unwrap();
    assert_eq!((m.identity.generation, m.state), (2, MemberState::Active));
    // A straggler packet from generation 1.
    let old = FocaPacket {
        header: Header {
            src: ident(2, 1),
            src_incarnation: 0,
            dst: b.nodes[0].identity().clone(),
            message: Message::Ping(1),
        },
        updates: vec![],
    };
    let bytes = seal(&Status::default(), &old.encode());
    assert_eq!(
        b.nodes[0].handle_datagram(b.now, ident(2, 1).node, &bytes),
        Err(PacketError::Fenced)
    );
    let told: Vec<Transmit> = std::iter::from_fn(|| b.nodes[0].poll_transmit()).collect();
    assert!(
        told.iter().any(|t| t.to == ident(2, 1)),
        "the old generation is told"
    );
    assert_eq!(
        b.nodes[0]
            .member(ident(2, 1).node)
            .unwrap()
            .identity
            .generation,
        2
    );
}

#[test]
fn a_node_declared_down_rejoins_as_a_new_generation() {
    let mut b = Bench::new(3);
    b.advance(Duration::from_secs(1));
    // Node 2 stops answering long enough to be declared down...
    b.dead[2] = true;
    b.advance(Duration::from_secs(10));
    assert_eq!(b.state(0, 2), Some(MemberState::Unreachable));
    b.events(2);
    // ...then comes back: it is told, fences itself and rejoins under generation 2.
    b.dead[2] = false;
    b.advance(Duration::from_secs(10));
    let events = b.events(2);
    assert!(
        events.iter().any(|e| matches!(e, MemberEvent::Fenced { old, new } if old.generation == 1 && new.generation == 2)),
        "{events:?}"
    );
    for i in 0..2 {
        let m = b.nodes[i].member(b.nodes[2].identity().node).unwrap();
        assert_eq!(
            (m.identity.generation, m.state),
            (2, MemberState::Active),
            "observer {i}"
        );
    }
}

#[test]
fn garbage_is_a_typed_error() {
    let mut b = Bench::new(2);
    let from = b.nodes[1].identity().node;
    assert!(
        b.nodes[0]
            .handle_datagram(b.now, from, &[1, 0, 0, 0, 0, 0])
            .is_err()
    );
    assert!(b.nodes[0].handle_datagram(b.now, from, &[]).is_err());
    assert!(
        b.nodes[0]
            .handle_datagram(b.now, from, &[0xff; 3000])
            .is_err()
    );
    assert_eq!(b.nodes[0].stats().rejected, 3);
}

#[test]
fn a_refuted_suspicion_never_fences_the_member() {
    let mut b = Bench::new(2);
    b.advance(Duration::from_secs(1));
    // Long enough for each side's probe of the other to fail, far shorter than the suspect
    // timeout.
    b.dead[1] = true;
    b.advance(Duration::from_millis(2500));
    assert_eq!(b.state(0, 1), Some(MemberState::Suspect));
    b.dead[1] = false;
    b.advance(Duration::from_secs(10));
    for i in 0..2 {
        let events = b.events(i);
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, MemberEvent::Fenced { .. } | MemberEvent::Unreachable(_))),
            "node {i}: {events:?}"
        );
        assert_eq!(b.nodes[i].identity().generation, 1);
        assert_eq!(b.state(i, 1 - i), Some(MemberState::Active));
    }
}

#[test]
fn without_auto_down_a_partition_leaves_suspects_until_someone_decides() {
    let config = SwimConfig {
        auto_down: false,
        ..SwimConfig::default()
    };
    let mut b = Bench::with_config(5, config);
    b.advance(Duration::from_secs(2));
    b.partition(&[0, 1], &[2, 3, 4]);
    b.advance(Duration::from_secs(30));
    for (observer, target) in [(0, 2), (1, 4), (2, 0), (4, 1)] {
        assert_eq!(
            b.state(observer, target),
            Some(MemberState::Suspect),
            "{observer} about {target}"
        );
    }
    for i in 0..5 {
        b.events(i);
    }
    // The majority downs the minority, and the minority fences itself.
    for i in 2..5 {
        for lost in [0, 1] {
            let node = b.nodes[lost].identity().node;
            b.nodes[i].declare_down(b.now, node);
        }
    }
    for i in [0, 1] {
        b.nodes[i].fence_self(b.now);
    }
    b.advance(Duration::from_secs(3));
    for i in 2..5 {
        for lost in [0, 1] {
            assert_eq!(b.state(i, lost), Some(MemberState::Unreachable));
        }
    }
    for i in [0, 1] {
        let events = b.events(i);
        assert!(
            events.iter().any(|e| matches!(e, MemberEvent::Fenced { old, new } if old.generation == 1 && new.generation == 2)),
            "{events:?}"
        );
        // The fenced side does not hold the majority down.
        for j in 2..5 {
            assert_ne!(b.state(i, j), Some(MemberState::Unreachable));
        }
    }
    // Healed: the fenced nodes reach the majority again as generation 2, and nobody on
    // the majority side is fenced.
    b.cut.clear();
    b.advance(Duration::from_secs(10));
    for i in 0..5 {
        let events = b.events(i);
        if i >= 2 {
            assert!(
                !events
                    .iter()
                    .any(|e| matches!(e, MemberEvent::Fenced { .. })),
                "node {i}: {events:?}"
            );
            assert_eq!(b.nodes[i].identity().generation, 1);
        }
        for j in 0..5 {
            if i != j {
                let m = b.nodes[i].member(b.nodes[j].identity().node).unwrap();
                let generation = if j < 2 { 2 } else { 1 };
                assert_eq!(
                    (m.identity.generation, m.state),
                    (generation, MemberState::Active),
                    "{i} about {j}"
                );
            }
        }
    }
}

#[test]
fn a_suspicion_outlived_by_its_gossip_is_still_refuted_after_a_short_partition() {
    let mut b = Bench::new(5);
    b.advance(Duration::from_secs(2));
    // Shorter than the suspect timeout, long enough for probes to fail and the suspicion
    // gossip to run out of transmissions on the side that holds it.
    b.partition(&[0, 1], &[2, 3, 4]);
    b.advance(Duration::from_secs(3));
    assert!(
        (2..5).any(|i| b.state(i, 0) == Some(MemberState::Suspect)
            || b.state(i, 1) == Some(MemberState::Suspect)),
        "nobody suspected anyone"
    );
    b.cut.clear();
    b.advance(Duration::from_secs(10));
    for i in 0..5 {
        assert_eq!(b.nodes[i].identity().generation, 1, "node {i} was fenced");
        for j in (0..5).filter(|&j| j != i) {
            assert_eq!(b.state(i, j), Some(MemberState::Active), "{i} about {j}");
        }
    }
}

#[test]
fn after_a_heal_the_majority_never_yields_to_the_minoritys_late_verdicts() {
    // The minority suspects the majority's members one by one; healed while some of those
    // suspicions still run, they run out after the heal and the minority tells those
    // members they are down. The minority holds the smaller node ids, so that a tie would
    // go its way. Only the minority holds those verdicts: the majority members ignore them,
    // and the minority, told it is down by the majority's, rejoins.
    for heal_after_ms in (0..1500).step_by(100) {
        let mut b = Bench::new(5);
        b.advance(Duration::from_secs(3));
        b.partition(&[0, 1], &[2, 3, 4]);
        for _ in 0..200 {
            b.advance(Duration::from_millis(100));
            if (0..2).all(|j| b.state(2, j) == Some(MemberState::Unreachable)) {
                break;
            }
        }
        b.advance(Duration::from_millis(heal_after_ms));
        b.cut.clear();
        b.advance(Duration::from_secs(15));
        for i in 2..5 {
            assert!(
                !b.fenced(i),
                "majority node {i} was fenced (healed {heal_after_ms} ms after)"
            );
        }
        for j in 0..2 {
            assert!(
                b.nodes[j].identity().generation > 1,
                "minority node {j} rejoined as a new generation"
            );
        }
    }
}

#[test]
fn a_majority_member_that_doubted_a_peer_for_a_moment_keeps_its_majority() {
    // While the majority suspects the cut-off minority, one of its members stops answering
    // its own side for a while (a stalled process on a loaded machine), short of being
    // declared down. Its verdict on the
    // minority is still the majority's: healed, nobody on the majority side is fenced.
    for blip_ms in [2500u64, 3000, 3500, 4000] {
        let mut b = Bench::new(5);
        b.advance(Duration::from_secs(3));
        b.partition(&[0, 1], &[2, 3, 4]);
        b.advance(Duration::from_millis(1500));
        b.partition(&[3], &[2, 4]);
        b.advance(Duration::from_millis(blip_ms));
        b.cut.remove(&(2, 3));
        b.cut.remove(&(3, 4));
        for _ in 0..200 {
            b.advance(Duration::from_millis(100));
            if (0..2).all(|j| (2..5).all(|i| b.state(i, j) == Some(MemberState::Unreachable))) {
                break;
            }
        }
        b.cut.clear();
        b.advance(Duration::from_secs(15));
        for i in 2..5 {
            assert!(
                !b.fenced(i),
                "majority node {i} was fenced (blip of {blip_ms} ms)"
            );
        }
    }
}
