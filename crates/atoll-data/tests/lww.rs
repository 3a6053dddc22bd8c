//! Properties of the LWW map: merge algebra, convergence of delta gossip under loss,
//! duplication and reordering, tombstone collection without resurrection, and HLC
//! ordering with a clock ten minutes ahead.

use std::collections::BTreeMap;

use atoll_core::NodeId;
use atoll_data::{
    Claim, Delta, Digest, Entry, HlcTimestamp, LwwMap, MergeError, OriginDelta, Stamp,
    decode_map_delta,
};
use proptest::prelude::*;

type Map = LwwMap<u8, u8>;

fn node(i: usize) -> NodeId {
    NodeId::from_bytes([i as u8 + 1; 16])
}

const TEN_MINUTES: u64 = 600_000;

/// A write on one of three replicas: `(replica, key, value or removal, ms that pass)`.
fn writes() -> impl Strategy<Value = Vec<(usize, u8, Option<u8>, u64)>> {
    proptest::collection::vec(
        (
            0..3usize,
            0..6u8,
            proptest::option::of(any::<u8>()),
            0..3u64,
        ),
        0..40,
    )
}

fn build(ops: &[(usize, u8, Option<u8>, u64)]) -> Vec<Map> {
    let mut maps: Vec<Map> = (0..3).map(|i| Map::new(node(i))).collect();
    let mut now = 1_000;
    for &(i, k, v, dt) in ops {
        now += dt;
        match v {
            Some(v) => {
                maps[i].insert(k, v, now);
            }
            None => {
                maps[i].remove(&k, now);
            }
        }
        // Sometimes a replica has heard of another's writes before writing again.
        if dt == 0 {
            let other = maps[(i + 1) % 3].clone();
            maps[i].merge(&other, now);
        }
    }
    maps
}

fn merged(a: &Map, b: &Map) -> BTreeMap<u8, Entry<u8>> {
    let mut x = a.clone();
    x.merge(b, 10_000);
    x.state().clone()
}

proptest! {
    #[test]
    fn merge_is_commutative_associative_and_idempotent(ops in writes()) {
        let m = build(&ops);
        let (a, b, c) = (&m[0], &m[1], &m[2]);
        prop_assert_eq!(merged(a, b), merged(b, a));
        let mut ab = a.clone();
        ab.merge(b, 10_000);
        let mut bc = b.clone();
        bc.merge(c, 10_000);
        prop_assert_eq!(merged(&ab, c), merged(a, &bc));
        prop_assert_eq!(merged(a, a), a.state().clone());
        // Deltas merge like states.
        let mut via_delta = b.clone();
        via_delta.merge_delta(a.delta_for(&Digest::default(), usize::MAX), 10_000).unwrap();
        prop_assert_eq!(via_delta.state(), &merged(b, a));
    }

    #[test]
    fn deltas_survive_the_wire(ops in writes()) {
        let m = build(&ops);
        let delta = m[0].delta_for(&m[1].seen(), 200);
        let back: Delta<u8, u8> = decode_map_delta(&delta.encode()).unwrap();
        prop_assert_eq!(back, delta);
    }
}

/// One gossip message: the sender's digest and what it thought the receiver lacked.
#[derive(Clone)]
struct Message {
    from: usize,
    to: usize,
    digest: Digest,
    delta: Delta<u8, u8>,
}

#[derive(Debug, Clone)]
enum Step {
    Write {
        at: usize,
        key: u8,
        value: Option<u8>,
    },
    Send {
        from: usize,
        to: usize,
        budget: usize,
    },
    Deliver {
        pick: usize,
        keep: bool,
    },
    Drop {
        pick: usize,
    },
    /// Any message ever sent arrives again, however late.
    Replay {
        pick: usize,
    },
    Collect {
        at: usize,
    },
    Pass {
        ms: u64,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..4usize, 0..3u8, proptest::option::weighted(0.6, any::<u8>()))
            .prop_map(|(at, key, value)| Step::Write { at, key, value }),
        4 => (0..4usize, 0..4usize, 20..400usize)
            .prop_map(|(from, to, budget)| Step::Send { from, to, budget }),
        4 => (any::<usize>(), any::<bool>()).prop_map(|(pick, keep)| Step::Deliver { pick, keep }),
        1 => any::<usize>().prop_map(|pick| Step::Drop { pick }),
        2 => any::<usize>().prop_map(|pick| Step::Replay { pick }),
        3 => (0..4usize).prop_map(|at| Step::Collect { at }),
        1 => (0..2_000u64).prop_map(|ms| Step::Pass { ms }),
    ]
}

/// Four replicas, one of them ten minutes ahead, gossiping deltas over a network that
/// loses, duplicates and reorders, and collecting tombstones from the digests they heard.
struct Cluster {
    maps: Vec<Map>,
    heard: Vec<BTreeMap<NodeId, Digest>>,
    net: Vec<Message>,
    sent: Vec<Message>,
    now: u64,
    /// Every write ever made: the truth each key must converge to.
    truth: BTreeMap<u8, (HlcTimestamp, Option<u8>)>,
    /// Per replica and key, the newest tombstone it ever held.
    deleted: Vec<BTreeMap<u8, HlcTimestamp>>,
}

const OFFSETS: [u64; 4] = [0, 5, 17, TEN_MINUTES];

impl Cluster {
    fn new() -> Self {
        Cluster {
            maps: (0..4).map(|i| Map::new(node(i))).collect(),
            heard: vec![BTreeMap::new(); 4],
            net: Vec::new(),
            sent: Vec::new(),
            now: 1_000,
            truth: BTreeMap::new(),
            deleted: vec![BTreeMap::new(); 4],
        }
    }

    fn clock(&self, i: usize) -> u64 {
        self.now + OFFSETS[i]
    }

    fn deliver(&mut self, m: Message) {
        let now = self.clock(m.to);
        self.heard[m.to].insert(node(m.from), m.digest);
        self.maps[m.to]
            .merge_delta(m.delta, now)
            .expect("honest deltas merge");
    }

    fn run(&mut self, s: Step) {
        match s {
            Step::Write { at, key, value } => {
                let now = self.clock(at);
                let stamp = match value {
                    Some(v) => Some(self.maps[at].insert(key, v, now)),
                    None => self.maps[at].remove(&key, now),
                };
                if let Some(stamp) = stamp
                    && self.truth.get(&key).is_none_or(|t| (stamp, value) > *t)
                {
                    self.truth.insert(key, (stamp, value));
                }
            }
            Step::Send { from, to, budget } if from != to => {
                let now = self.clock(from);
                let digest = self.maps[from].digest(now);
                let peer = self.heard[from].get(&node(to)).cloned().unwrap_or_default();
                let delta = self.maps[from].delta_for(&peer, budget);
                let m = Message {
                    from,
                    to,
                    digest,
                    delta,
                };
                self.sent.push(m.clone());
                self.net.push(m);
            }
            Step::Send { .. } => {}
            Step::Deliver { pick, keep } if !self.net.is_empty() => {
                let i = pick % self.net.len();
                let m = if keep {
                    self.net[i].clone()
                } else {
                    self.net.swap_remove(i)
                };
                self.deliver(m);
            }
            Step::Drop { pick } if !self.net.is_empty() => {
                let i = pick % self.net.len();
                self.net.swap_remove(i);
            }
            Step::Replay { pick } if !self.sent.is_empty() => {
                let m = self.sent[pick % self.sent.len()].clone();
                self.deliver(m);
            }
            Step::Deliver { .. } | Step::Drop { .. } | Step::Replay { .. } => {}
            Step::Collect { at } => {
                let now = self.clock(at);
                let mut live = self.heard[at].clone();
                live.insert(node(at), self.maps[at].digest(now));
                if live.len() == 4 {
                    self.maps[at].collect_tombstones(&live);
                }
            }
            Step::Pass { ms } => self.now += ms,
        }
        self.check_no_resurrection();
    }

    fn check_no_resurrection(&mut self) {
        for (i, m) in self.maps.iter().enumerate() {
            for (k, e) in m.entries() {
                match &e.value {
                    None => {
                        let d = self.deleted[i].entry(*k).or_insert(e.stamp);
                        *d = (*d).max(e.stamp);
                    }
                    Some(_) => {
                        if let Some(d) = self.deleted[i].get(k) {
                            assert!(
                                e.stamp > *d,
                                "replica {i} key {k}: {} resurrected over {d}",
                                e.stamp
                            );
                        }
                    }
                }
            }
        }
    }

    /// Reliable full rounds until nothing changes.
    fn quiesce(&mut self) {
        for _ in 0..20 {
            let before: Vec<_> = self.maps.iter().map(|m| m.state().clone()).collect();
            for from in 0..4 {
                for to in 0..4 {
                    if from == to {
                        continue;
                    }
                    let (ct, cf) = (self.clock(to), self.clock(from));
                    let peer = self.maps[to].digest(ct);
                    let digest = self.maps[from].digest(cf);
                    let delta = self.maps[from].delta_for(&peer, usize::MAX);
                    self.deliver(Message {
                        from,
                        to,
                        digest,
                        delta,
                    });
                }
            }
            let after: Vec<_> = self.maps.iter().map(|m| m.state().clone()).collect();
            if before == after {
                return;
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn gossip_converges_under_loss_duplication_and_reordering_and_no_tombstone_resurrects(
        steps in proptest::collection::vec(step(), 1..400)
    ) {
        let mut c = Cluster::new();
        for s in steps {
            c.run(s);
        }
        c.quiesce();
        let expected: BTreeMap<u8, u8> =
            c.truth.iter().filter_map(|(k, (_, v))| v.map(|v| (*k, v))).collect();
        for (i, m) in c.maps.iter().enumerate() {
            let live: BTreeMap<u8, u8> = m.iter().map(|(k, v)| (*k, *v)).collect();
            prop_assert_eq!(&live, &expected, "replica {}", i);
        }
        // Once every replica has every digest, every tombstone can go.
        c.now += 2 * TEN_MINUTES;
        c.quiesce();
        let now = c.now + TEN_MINUTES;
        let live: BTreeMap<NodeId, Digest> =
            (0..4).map(|i| (node(i), c.maps[i].digest(now))).collect();
        for m in &mut c.maps {
            m.collect_tombstones(&live);
            prop_assert_eq!(m.tombstones(), 0);
        }
        c.check_no_resurrection();
    }
}

/// Full digest-and-delta exchanges between every pair.
fn exchange_all(maps: &mut [Map], now: u64) {
    for i in 0..maps.len() {
        for j in 0..maps.len() {
            if i != j {
                let peer = maps[j].digest(now);
                let d = maps[i].delta_for(&peer, usize::MAX);
                maps[j].merge_delta(d, now).unwrap();
            }
        }
    }
}

fn digests(maps: &mut [Map], now: u64) -> BTreeMap<NodeId, Digest> {
    maps.iter_mut().map(|m| (m.node(), m.digest(now))).collect()
}

#[test]
fn a_late_duplicate_of_a_deleted_value_is_refused_after_collection() {
    let mut maps = vec![Map::new(node(0)), Map::new(node(1))];
    maps[0].insert(1, 10, 100);
    let old = maps[0].delta_for(&Digest::default(), usize::MAX);
    maps[1].merge_delta(old.clone(), 101).unwrap();
    // The other member deletes it.
    maps[1].remove(&1, 102);
    exchange_all(&mut maps, 103);
    exchange_all(&mut maps, 104);
    let live = digests(&mut maps, 105);
    assert_eq!(maps[0].collect_tombstones(&live), 1);
    assert_eq!(maps[0].tombstones(), 0);
    // The first write arrives again, late.
    let report = maps[0].merge_delta(old, 106).unwrap();
    assert_eq!(report.below_floor, 1);
    assert_eq!(maps[0].get(&1), None);
}

#[test]
fn a_tombstone_is_kept_until_every_live_member_has_seen_it() {
    let mut maps = vec![Map::new(node(0)), Map::new(node(1)), Map::new(node(2))];
    exchange_all(&mut maps, 100);
    maps[0].insert(1, 10, 101);
    maps[0].remove(&1, 102);
    // Only node 1 hears of it.
    let peer = maps[1].digest(103);
    let d = maps[0].delta_for(&peer, usize::MAX);
    maps[1].merge_delta(d, 103).unwrap();
    let live = digests(&mut maps, 104);
    assert_eq!(
        maps[0].collect_tombstones(&live),
        0,
        "node 2 has not seen it"
    );
    assert_eq!(maps[1].collect_tombstones(&live), 0);
    exchange_all(&mut maps, 105);
    exchange_all(&mut maps, 106);
    let live = digests(&mut maps, 107);
    for m in &mut maps {
        assert_eq!(m.collect_tombstones(&live), 1);
    }
}

#[test]
fn a_clock_ten_minutes_ahead_does_not_win_forever() {
    let (fast, honest) = (node(0), node(1));
    let mut f = Map::new(fast);
    let mut h = Map::new(honest);
    let t0 = 1_000_000;
    let skewed = f.insert(7, 1, t0 + TEN_MINUTES);
    let report = h
        .merge_delta(f.delta_for(&h.seen(), usize::MAX), t0 + 1)
        .unwrap();
    assert_eq!(report.max_skew_ms, TEN_MINUTES - 1);
    // The honest node writes after seeing the skewed write, with its wall clock ten
    // minutes behind: it still wins, everywhere.
    let later = h.insert(7, 2, t0 + 2);
    assert!(later > skewed);
    f.merge_delta(h.delta_for(&f.seen(), usize::MAX), t0 + TEN_MINUTES + 3)
        .unwrap();
    assert_eq!(f.get(&7), Some(&2));
    assert_eq!(h.get(&7), Some(&2));
    // And a write made without having seen it loses only to writes that are really later.
    let mut third = Map::new(node(2));
    let unaware = third.insert(7, 3, t0 + 3);
    assert!(unaware < skewed, "an unaware write is ordered by wall time");
    f.merge(&third, t0 + TEN_MINUTES + 4);
    assert_eq!(f.get(&7), Some(&2));
}

#[test]
fn a_budget_cuts_a_delta_and_the_claim_stays_exact() {
    let mut src = Map::new(node(0));
    for k in 0..50 {
        src.insert(k, k, 1_000 + u64::from(k));
    }
    let mut dst = Map::new(node(1));
    let mut rounds = 0;
    while dst.len() < 50 {
        let d = src.delta_for(&dst.seen(), 64);
        assert!(d.len() < 50, "the budget bounds each delta");
        assert!(d.encode().len() <= 64 + 48, "{} bytes", d.encode().len());
        dst.merge_delta(d, 2_000).unwrap();
        rounds += 1;
        assert!(rounds < 100);
    }
    assert_eq!(dst.state(), src.state());
    let d = src.delta_for(&dst.seen(), 64);
    assert!(d.is_empty(), "nothing left to send: {d:?}");
    // A lost delta leaves a gap; a later one does not advance the digest over it.
    let mut lossy = Map::new(node(2));
    let first = src.delta_for(&lossy.seen(), 64);
    let mut skipped = lossy.seen();
    let through = first.origins[0].claim.unwrap().through;
    skipped.advance(node(0), through);
    let second = src.delta_for(&skipped, 64);
    lossy.merge_delta(second, 2_000).unwrap();
    assert_eq!(
        lossy.seen().get(node(0)),
        Stamp::ZERO,
        "no claim over a gap"
    );
}

#[test]
fn malformed_deltas_are_refused_whole() {
    let mut m = Map::new(node(0));
    let s = |wall_ms| Stamp {
        wall_ms,
        logical: 0,
    };
    let backwards = Delta {
        origins: vec![OriginDelta {
            origin: node(1),
            claim: Some(Claim {
                after: s(9),
                through: s(3),
            }),
            entries: vec![],
        }],
    };
    assert!(matches!(
        m.merge_delta(backwards, 1),
        Err(MergeError::BackwardsClaim { .. })
    ));
    let outside = Delta {
        origins: vec![
            OriginDelta {
                origin: node(2),
                claim: None,
                entries: vec![(1, s(5), Some(1))],
            },
            OriginDelta {
                origin: node(1),
                claim: Some(Claim {
                    after: s(4),
                    through: s(8),
                }),
                entries: vec![(2, s(4), Some(2))],
            },
        ],
    };
    assert!(matches!(
        m.merge_delta(outside, 1),
        Err(MergeError::OutsideClaim { .. })
    ));
    assert!(
        m.state().is_empty(),
        "the valid first part was not applied either"
    );
    assert!(decode_map_delta::<u8, u8>(&[1, 200]).is_err());
}
