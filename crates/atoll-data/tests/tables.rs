//! The process table, the service registry and the gossip state built from them.

use std::collections::{BTreeMap, BTreeSet};

use atoll_core::{NodeId, Pid, SplitMix64};
use atoll_data::{
    AdvertiseError, CrdtGossipState, DecodeError, Delta, GossipDelta, GossipDigest, MergeError,
    OriginDelta, ProcessAdvertisement, ProcessStatus, ProcessTable, ResourceSummary,
    ServiceAdvertisement, ServiceKey, ServiceRegistry, Stamp, decode_delta,
};
use proptest::prelude::*;

fn node(i: usize) -> NodeId {
    NodeId::from_bytes([i as u8 + 1; 16])
}

const TYPES: [&str; 3] = ["worker", "router", "store"];
const CAPS: [&str; 4] = ["gpu", "ssd", "eu", "us"];

fn ad(pid: Pid, ty: usize, caps: u8, load: u32) -> ProcessAdvertisement {
    ProcessAdvertisement {
        pid,
        agent_type: TYPES[ty % TYPES.len()].into(),
        capabilities: CAPS
            .iter()
            .enumerate()
            .filter(|(i, _)| caps & (1 << i) != 0)
            .map(|(_, c)| c.to_string())
            .collect(),
        status: ProcessStatus::Running,
        resource_summary: ResourceSummary {
            load,
            memory_bytes: 1 << 20,
            mailbox_len: 0,
            messages_handled: 0,
        },
    }
}

/// The answers the indexes must give, computed by scanning the table.
fn check_indexes(t: &ProcessTable) -> Result<(), TestCaseError> {
    let all: Vec<&ProcessAdvertisement> = t.map().iter().map(|(_, a)| a).collect();
    for ty in TYPES {
        let want: Vec<Pid> = all
            .iter()
            .filter(|a| a.agent_type == ty)
            .map(|a| a.pid)
            .collect();
        let got: Vec<Pid> = t.find_by_type(ty).map(|a| a.pid).collect();
        prop_assert_eq!(got, want, "type {}", ty);
    }
    let mut loads: BTreeMap<NodeId, (u64, u64)> = BTreeMap::new();
    for a in &all {
        let l = loads.entry(a.pid.node).or_default();
        l.0 += u64::from(a.resource_summary.load);
        l.1 += 1;
    }
    for (n, (load, procs)) in &loads {
        prop_assert_eq!(t.node_load(*n).load, *load);
        prop_assert_eq!(t.node_load(*n).processes, *procs);
    }
    let best = |nodes: BTreeSet<NodeId>| {
        nodes
            .into_iter()
            .min_by_key(|n| (loads[n].0, loads[n].1, *n))
    };
    prop_assert_eq!(
        t.least_loaded_node(None),
        best(loads.keys().copied().collect())
    );
    for cap in CAPS {
        let with: Vec<&&ProcessAdvertisement> = all
            .iter()
            .filter(|a| a.capabilities.contains(cap))
            .collect();
        let got: Vec<Pid> = t.find_by_capability(cap).map(|a| a.pid).collect();
        prop_assert_eq!(
            got,
            with.iter().map(|a| a.pid).collect::<Vec<_>>(),
            "cap {}",
            cap
        );
        let nodes: BTreeSet<NodeId> = with.iter().map(|a| a.pid.node).collect();
        prop_assert_eq!(t.least_loaded_node(Some(cap)), best(nodes), "cap {}", cap);
    }
    Ok(())
}

#[derive(Debug, Clone)]
enum Op {
    Advertise {
        at: usize,
        serial: u64,
        ty: usize,
        caps: u8,
        load: u32,
    },
    Withdraw {
        at: usize,
        serial: u64,
    },
    Gossip {
        from: usize,
        to: usize,
        budget: usize,
    },
    Forget {
        at: usize,
        lost: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..3usize, 0..8u64, 0..3usize, 0..16u8, 0..1000u32)
            .prop_map(|(at, serial, ty, caps, load)| Op::Advertise { at, serial, ty, caps, load }),
        2 => (0..3usize, 0..8u64).prop_map(|(at, serial)| Op::Withdraw { at, serial }),
        4 => (0..3usize, 0..3usize, 50..2_000usize)
            .prop_map(|(from, to, budget)| Op::Gossip { from, to, budget }),
        1 => (0..3usize, 0..3usize).prop_map(|(at, lost)| Op::Forget { at, lost }),
    ]
}

proptest! {
    #[test]
    fn indexes_always_match_the_table(ops in proptest::collection::vec(op(), 1..120)) {
        let mut tables: Vec<ProcessTable> = (0..3).map(|i| ProcessTable::new(node(i))).collect();
        let mut now = 1_000;
        for o in ops {
            now += 1;
            match o {
                Op::Advertise { at, serial, ty, caps, load } => {
                    let pid = Pid::new(node(at), 1, serial);
                    tables[at].advertise(ad(pid, ty, caps, load), now).unwrap();
                }
                Op::Withdraw { at, serial } => {
                    tables[at].withdraw(&Pid::new(node(at), 1, serial), now);
                }
                Op::Gossip { from, to, budget } if from != to => {
                    let peer = tables[to].digest(now);
                    let delta = tables[from].map().delta_for(&peer, budget);
                    tables[to].merge_delta(delta, now).unwrap();
                }
                Op::Gossip { .. } => {}
                Op::Forget { at, lost } if at != lost => {
                    let gone = tables[at].forget_node(node(lost));
                    prop_assert!(gone.iter().all(|p| p.node == node(lost)));
                    prop_assert!(tables[at].map().iter().all(|(p, _)| p.node != node(lost)));
                }
                Op::Forget { .. } => {}
            }
            for t in &tables {
                check_indexes(t)?;
            }
        }
    }
}

#[test]
fn only_the_owning_node_writes_its_processes() {
    let mut t = ProcessTable::new(node(0));
    let foreign = Pid::new(node(1), 1, 1);
    assert_eq!(
        t.advertise(ad(foreign, 0, 0, 0), 5),
        Err(AdvertiseError::NotLocal { pid: foreign })
    );
    let forged = Delta {
        origins: vec![OriginDelta {
            origin: node(2),
            claim: None,
            entries: vec![(
                foreign,
                Stamp {
                    wall_ms: 9,
                    logical: 0,
                },
                Some(ad(foreign, 0, 0, 0)),
            )],
        }],
    };
    assert_eq!(
        t.merge_delta(forged, 10),
        Err(MergeError::ForeignWriter {
            origin: node(2),
            owner: node(1)
        })
    );
    assert!(t.is_empty());
    let mut too_many = ad(Pid::new(node(0), 1, 1), 0, 0, 0);
    too_many.capabilities = (0..100).map(|i| i.to_string()).collect();
    assert!(matches!(
        t.advertise(too_many, 11),
        Err(AdvertiseError::Invalid(_))
    ));
}

#[test]
fn a_lost_node_is_forgotten_and_its_stale_entries_stay_out() {
    let (mut a, mut b) = (ProcessTable::new(node(0)), ProcessTable::new(node(1)));
    let p = Pid::new(node(1), 1, 1);
    b.advertise(ad(p, 0, 1, 10), 100).unwrap();
    let old = b
        .map()
        .delta_for(&GossipDigest::default().processes, usize::MAX);
    a.merge_delta(old.clone(), 101).unwrap();
    assert_eq!(a.least_loaded_node(Some("gpu")), Some(node(1)));
    assert_eq!(a.forget_node(node(1)), vec![p]);
    assert_eq!(a.least_loaded_node(Some("gpu")), None);
    // A third node still gossiping the old entry does not bring it back.
    let report = a.merge_delta(old, 102).unwrap();
    assert_eq!(report.below_floor, 1);
    assert!(a.get(&p).is_none());
    // The node comes back with a new incarnation and a clock past what was seen.
    let p2 = Pid::new(node(1), 2, 1);
    b.advertise(ad(p2, 0, 1, 10), 200).unwrap();
    a.merge_delta(b.map().delta_for(&a.map().seen(), usize::MAX), 201)
        .unwrap();
    assert!(a.get(&p2).is_some());
}

#[test]
fn a_readmitted_node_is_asked_for_everything_even_by_way_of_one_that_still_forgets_it() {
    // c is cut off; a and b both drop it. a readmits it first, while b still forgets it.
    let (mut a, mut b, mut c) = (
        CrdtGossipState::new(node(0)),
        CrdtGossipState::new(node(1)),
        CrdtGossipState::new(node(2)),
    );
    let p = Pid::new(node(2), 1, 1);
    c.processes.advertise(ad(p, 0, 0, 10), 100).unwrap();
    for s in [&mut a, &mut b] {
        let delta = c.delta_for(&s.digest(101), usize::MAX);
        s.merge_delta(delta, 101).unwrap();
        assert!(s.processes.get(&p).is_some());
        s.forget_node(node(2));
    }
    a.readmit_node(node(2));
    // b, which holds nothing of c, must not tell a that it sent all of c's writes...
    let from_b = b.delta_for(&a.digest(102), usize::MAX);
    a.merge_delta(from_b, 102).unwrap();
    // ...or a would not ask c for them.
    let from_c = c.delta_for(&a.digest(103), usize::MAX);
    a.merge_delta(from_c, 103).unwrap();
    assert!(
        a.processes.get(&p).is_some(),
        "the readmitted node's process"
    );
    // b, still forgetting c, is not sent c's old writes again and again.
    assert!(c.delta_for(&b.digest(104), usize::MAX).is_empty());
}

fn offer(n: usize, service: &str, load: u32) -> ServiceAdvertisement {
    ServiceAdvertisement {
        service: service.into(),
        pid: Pid::new(node(n), 1, 50),
        load,
        metadata: [("zone".to_string(), format!("z{n}"))].into(),
    }
}

#[test]
fn resolve_preferred_tries_the_node_then_the_least_loaded_replicas() {
    let mut regs: Vec<ServiceRegistry> = (0..4).map(|i| ServiceRegistry::new(node(i))).collect();
    for (i, load) in [(0, 50), (1, 10), (2, 30)] {
        regs[i].advertise(offer(i, "db", load), 100).unwrap();
    }
    regs[3].advertise(offer(3, "cache", 0), 100).unwrap();
    let mut all = ServiceRegistry::new(node(9));
    for r in &regs {
        all.merge(r, 101);
    }
    let order = |v: Vec<&ServiceAdvertisement>| v.iter().map(|s| s.node()).collect::<Vec<_>>();
    assert_eq!(
        order(all.resolve_preferred("db", node(2))),
        [node(2), node(1), node(0)]
    );
    assert_eq!(
        order(all.resolve_preferred("db", node(3))),
        [node(1), node(2), node(0)]
    );
    assert_eq!(order(all.resolve("cache")), [node(3)]);
    assert!(all.resolve("nothing").is_empty());
    assert_eq!(all.services(), ["cache", "db"]);
    // Node 2 updates its load, node 1 withdraws: LWW per (service, node).
    regs[2].advertise(offer(2, "db", 5), 102).unwrap();
    regs[1].withdraw("db", 102).unwrap();
    for r in &regs {
        let d = r.map().delta_for(&all.map().seen(), usize::MAX);
        all.merge_delta(d, 103).unwrap();
    }
    assert_eq!(
        order(all.resolve_preferred("db", node(1))),
        [node(2), node(0)]
    );
}

#[test]
fn the_registry_refuses_offers_filed_under_another_node() {
    let mut r = ServiceRegistry::new(node(0));
    assert!(matches!(
        r.advertise(offer(1, "db", 0), 1),
        Err(MergeError::ForeignWriter { .. })
    ));
    let key = ServiceKey {
        service: "db".into(),
        node: node(1),
    };
    let mismatched = Delta {
        origins: vec![OriginDelta {
            origin: node(1),
            claim: None,
            entries: vec![(
                key,
                Stamp {
                    wall_ms: 1,
                    logical: 0,
                },
                Some(offer(1, "web", 0)),
            )],
        }],
    };
    assert!(matches!(
        r.merge_delta(mismatched, 2),
        Err(MergeError::Invalid(_))
    ));
    assert!(r.resolve("db").is_empty() && r.resolve("web").is_empty());
}

#[test]
fn gossip_state_converges_through_encoded_budgeted_deltas() {
    let mut rng = SplitMix64::new(7);
    let mut states: Vec<CrdtGossipState> = (0..5).map(|i| CrdtGossipState::new(node(i))).collect();
    let mut now = 10_000;
    for (i, state) in states.iter_mut().enumerate() {
        for s in 0..40 {
            let pid = Pid::new(node(i), 1, s);
            let caps = (rng.next_u64() % 16) as u8;
            state
                .processes
                .advertise(
                    ad(pid, s as usize, caps, (rng.next_u64() % 500) as u32),
                    now,
                )
                .unwrap();
        }
        state
            .services
            .advertise(offer(i, "db", i as u32), now)
            .unwrap();
    }
    let mut rounds = 0;
    loop {
        now += 100;
        rounds += 1;
        for from in 0..5 {
            let to = (from + 1 + (rng.next_u64() % 4) as usize) % 5;
            let digest = states[to].digest(now);
            let bytes = states[from].delta_for(&digest, 2_048).encode();
            assert!(bytes.len() <= 2_048 + 256, "{} bytes", bytes.len());
            let delta = decode_delta(&bytes).unwrap();
            states[to].merge_delta(delta, now).unwrap();
        }
        let first = states[0].processes.map().state().clone();
        if states
            .iter()
            .all(|s| s.processes.map().state() == &first && s.services.resolve("db").len() == 5)
        {
            break;
        }
        assert!(rounds < 200, "no convergence");
    }
    assert_eq!(states[3].processes.len(), 200);
    assert_eq!(
        states[3].services.resolve_preferred("db", node(4))[0].node(),
        node(4)
    );
}

#[test]
fn gossip_decoders_refuse_bad_input() {
    assert!(matches!(
        decode_delta(&vec![1; 9 << 20]),
        Err(DecodeError::TooLarge { .. })
    ));
    assert_eq!(decode_delta(&[]), Err(DecodeError::Empty));
    assert_eq!(decode_delta(&[7, 0, 0]), Err(DecodeError::Version(7)));
    assert!(matches!(
        decode_delta(&[1, 1, 0xff]),
        Err(DecodeError::Malformed(_))
    ));
    let mut bytes = GossipDelta::default().encode();
    bytes.push(0);
    assert_eq!(decode_delta(&bytes), Err(DecodeError::Trailing(1)));
    // A forged length far beyond the input fails without allocating for it.
    assert!(decode_delta(&[1, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
    assert!(GossipDigest::decode(&GossipDigest::default().encode()).is_ok());
}

#[test]
fn withdrawn_processes_are_collected_everywhere_and_stay_gone() {
    let mut states: Vec<CrdtGossipState> = (0..3).map(|i| CrdtGossipState::new(node(i))).collect();
    let p = Pid::new(node(0), 1, 1);
    states[0].processes.advertise(ad(p, 0, 1, 10), 100).unwrap();
    states[0]
        .services
        .advertise(offer(0, "db", 1), 100)
        .unwrap();
    let old = states[0].delta_for(&GossipDigest::default(), usize::MAX);
    let round = |states: &mut Vec<CrdtGossipState>, now| {
        for i in 0..3 {
            for j in 0..3 {
                if i != j {
                    let peer = states[j].digest(now);
                    let d = states[i].delta_for(&peer, usize::MAX);
                    states[j].merge_delta(d, now).unwrap();
                }
            }
        }
    };
    round(&mut states, 101);
    states[0].processes.withdraw(&p, 102).unwrap();
    states[0].services.withdraw("db", 102).unwrap();
    round(&mut states, 103);
    // Without every live member's digest nothing is collected.
    let mut all_known: BTreeMap<NodeId, GossipDigest> = [(node(0), states[0].digest(103))].into();
    all_known.insert(node(1), GossipDigest::default());
    assert_eq!(states[0].collect_tombstones(&all_known), 0);
    round(&mut states, 104);
    let live: BTreeMap<NodeId, GossipDigest> =
        (0..3).map(|i| (node(i), states[i].digest(105))).collect();
    for s in &mut states {
        assert_eq!(s.collect_tombstones(&live), 2, "the process and the offer");
        assert_eq!(
            s.processes.map().tombstones() + s.services.map().tombstones(),
            0
        );
    }
    // The first advertisement arrives again, late: refused.
    let report = states[2].merge_delta(old, 106).unwrap();
    assert_eq!(report.below_floor, 2);
    assert!(states[2].processes.get(&p).is_none());
    assert!(states[2].services.resolve("db").is_empty());
    assert_eq!(states[2].processes.least_loaded_node(Some("gpu")), None);
}
