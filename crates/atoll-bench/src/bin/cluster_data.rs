//! The cluster data structures of `atoll-data`, measured on their own (no network):
//! `cluster_data [--quick] [--fanout F]`.
//!
//! - ring: keys moved when a node joins a ring of 100, against the ideal `K/(N+1)`;
//! - Merkle repair: bytes of a whole anti-entropy session (roots, node digests, both
//!   repair deltas, all encoded) to repair 1% of a 100,000-entry process table, against the
//!   encoded full state;
//! - queries: `find_by_capability` (collecting the matches) and `least_loaded_node` on the
//!   100,000-entry table;
//! - gossip: periods until one new advertisement reaches every member of 100 and 500,
//!   with each member opening a push-pull exchange (digest, then deltas both ways) with
//!   `fanout` random peers per period, in synchronous rounds over the real
//!   `CrdtGossipState` merges;
//! - gossip bytes per node per second with 10,000 processes per node and 1% of them
//!   re-advertised each second (one period per second).
//!
//! Deterministic (seeded), so every figure but the query latencies repeats exactly.

use std::hint::black_box;
use std::time::Instant;

use atoll_core::{NodeId, Pid, SplitMix64};
use atoll_data::{
    CrdtGossipState, GossipDelta, GossipDigest, HashRing, MerkleMessage, MerkleTree,
    ProcessAdvertisement, ProcessStatus, ProcessTable, ResourceSummary, SyncAction,
    compare_tree_roots,
};

struct Args {
    quick: bool,
    fanout: usize,
}

fn args() -> Args {
    let mut a = Args {
        quick: false,
        fanout: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => a.quick = true,
            "--fanout" => {
                a.fanout = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--fanout takes a number")
            }
            other => panic!("usage: cluster_data [--quick] [--fanout F] (got {other})"),
        }
    }
    a
}

fn node_id(rng: &mut SplitMix64) -> NodeId {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
    b[8..].copy_from_slice(&rng.next_u64().to_le_bytes());
    NodeId::from_bytes(b)
}

const CAPABILITIES: u64 = 500;

fn advertisement(pid: Pid, rng: &mut SplitMix64) -> ProcessAdvertisement {
    ProcessAdvertisement {
        pid,
        agent_type: format!("agent-{}", rng.next_u64() % 20),
        capabilities: (0..2)
            .map(|_| format!("cap-{}", rng.next_u64() % CAPABILITIES))
            .collect(),
        status: ProcessStatus::Running,
        resource_summary: ResourceSummary {
            load: (rng.next_u64() % 1000) as u32,
            memory_bytes: rng.next_u64() % (64 << 20),
            mailbox_len: (rng.next_u64() % 16) as u32,
            messages_handled: rng.next_u64() % 100_000,
        },
    }
}

/// Mean of moved / ideal over `trials` random rings of `nodes` nodes plus one joining.
fn ring_moved_ratio(nodes: usize, keys: usize, trials: usize, rng: &mut SplitMix64) -> f64 {
    let keys: Vec<Vec<u8>> = (0..keys)
        .map(|i| format!("grain/{i}").into_bytes())
        .collect();
    let mut total = 0.0;
    for _ in 0..trials {
        let mut ring = HashRing::new(160);
        for _ in 0..nodes {
            ring.add(node_id(rng), 1, ["any"]);
        }
        let before: Vec<_> = keys.iter().map(|k| ring.locate(k)).collect();
        ring.add(node_id(rng), 1, ["any"]);
        let moved = keys
            .iter()
            .zip(&before)
            .filter(|(k, b)| ring.locate(k) != **b)
            .count();
        total += moved as f64 / (keys.len() as f64 / (nodes + 1) as f64);
    }
    total / trials as f64
}

/// A process table of `nodes × per_node` entries, each written by its own node.
fn big_table(
    nodes: usize,
    per_node: u64,
    rng: &mut SplitMix64,
) -> (ProcessTable, Vec<ProcessTable>) {
    let mut writers: Vec<ProcessTable> = (0..nodes)
        .map(|_| ProcessTable::new(node_id(rng)))
        .collect();
    let mut all = ProcessTable::new(node_id(rng));
    for w in &mut writers {
        let me = w.map().node();
        for s in 1..=per_node {
            w.advertise(advertisement(Pid::new(me, 1, s), rng), 1_000)
                .unwrap();
        }
        all.merge(w, 1_001);
    }
    (all, writers)
}

/// Bytes of one Merkle session in which `a` and `b` repair each other: roots, node
/// digests level by level, summaries of the differing ranges, then only the entries one
/// side lacks or holds older, all as encoded messages.
fn merkle_repair_bytes(a: &mut ProcessTable, b: &mut ProcessTable) -> (usize, usize) {
    let depth = MerkleTree::depth_for(a.len().max(b.len()));
    let (ta, tb) = (a.map().merkle_tree(depth), b.map().merkle_tree(depth));
    let mut bytes = MerkleMessage::Root(ta.root()).encode().len() * 2;
    let mut digests = 0;
    let mut exchange = Vec::new();
    let mut action = compare_tree_roots(&ta.root(), &tb.root());
    while let SyncAction::Repair(plan) = action {
        exchange.extend(plan.exchange);
        if plan.descend.is_empty() {
            break;
        }
        let answer = tb.children(&plan.descend).unwrap();
        digests += answer.len();
        bytes += MerkleMessage::Hashes(answer.clone()).encode().len();
        bytes += MerkleMessage::Children(plan.descend.clone()).encode().len();
        action = ta.compare_children(&plan.descend, &answer).unwrap();
    }
    let summaries = b.map().summarize(&exchange);
    bytes += MerkleMessage::Ranges(exchange.clone()).encode().len();
    bytes += MerkleMessage::Summaries(summaries.clone()).encode().len();
    let plan = a.map().reconcile(&exchange, &summaries);
    bytes += MerkleMessage::Pull(plan.pull.clone()).encode().len();
    let pulled = b.map().select_keys(&plan.pull);
    bytes += plan.push.encode().len() + pulled.encode().len();
    b.merge_delta(plan.push, 2_000).unwrap();
    a.merge_delta(pulled, 2_000).unwrap();
    assert_eq!(a.map().state(), b.map().state(), "repaired");
    (bytes, digests)
}

/// Synchronous push-pull gossip over `CrdtGossipState`s.
struct Gossip {
    states: Vec<CrdtGossipState>,
    rng: SplitMix64,
    fanout: usize,
    budget: usize,
    bytes: u64,
    now: u64,
}

impl Gossip {
    /// One period: every member opens an exchange with `fanout` random peers; all messages
    /// are computed from the state at the start of the period and merged at its end.
    fn period(&mut self) {
        let n = self.states.len();
        self.now += 1_000;
        let now = self.now;
        let digests: Vec<GossipDigest> = self.states.iter_mut().map(|s| s.digest(now)).collect();
        let digest_bytes: Vec<u64> = digests.iter().map(|d| d.encode().len() as u64).collect();
        let mut inbox: Vec<(usize, GossipDelta)> = Vec::new();
        for i in 0..n {
            let mut peers = Vec::with_capacity(self.fanout);
            while peers.len() < self.fanout.min(n - 1) {
                let p = (self.rng.next_u64() % n as u64) as usize;
                if p != i && !peers.contains(&p) {
                    peers.push(p);
                }
            }
            for p in peers {
                // i → p: digest; p → i: delta and digest; i → p: delta.
                let to_i = self.states[p].delta_for(&digests[i], self.budget);
                let to_p = self.states[i].delta_for(&digests[p], self.budget);
                self.bytes += digest_bytes[i] + digest_bytes[p];
                self.bytes += (to_i.encode().len() + to_p.encode().len()) as u64;
                inbox.push((i, to_i));
                inbox.push((p, to_p));
            }
        }
        for (to, delta) in inbox {
            if !delta.is_empty() {
                self.states[to].merge_delta(delta, now).unwrap();
            }
        }
    }
}

/// Members that all hold one process each, converged, then one new advertisement:
/// periods until every member has it (mean over `trials`).
fn converge_periods(nodes: usize, fanout: usize, trials: usize, rng: &mut SplitMix64) -> f64 {
    let mut states: Vec<CrdtGossipState> = (0..nodes)
        .map(|_| CrdtGossipState::new(node_id(rng)))
        .collect();
    for s in &mut states {
        let me = s.processes.map().node();
        s.processes
            .advertise(advertisement(Pid::new(me, 1, 1), rng), 1_000)
            .unwrap();
    }
    let mut g = Gossip {
        states,
        rng: SplitMix64::new(rng.next_u64()),
        fanout,
        budget: 64 << 10,
        bytes: 0,
        now: 1_000,
    };
    let mut warm = 0;
    while !g.states.iter().all(|s| s.processes.len() == nodes) {
        g.period();
        warm += 1;
        assert!(warm < 200, "initial dissemination did not converge");
    }
    let mut total = 0;
    for t in 0..trials {
        let writer = (g.rng.next_u64() % nodes as u64) as usize;
        let me = g.states[writer].processes.map().node();
        let pid = Pid::new(me, 1, 100 + t as u64);
        let ad = advertisement(pid, rng);
        let now = g.now;
        g.states[writer].processes.advertise(ad, now).unwrap();
        let mut periods = 0;
        while !g.states.iter().all(|s| s.processes.get(&pid).is_some()) {
            g.period();
            periods += 1;
            assert!(periods < 100, "an update did not spread");
        }
        total += periods;
    }
    total as f64 / trials as f64
}

/// Gossip bytes per node per second with `per_node` processes on each of `nodes` members
/// and 1% of each member's processes re-advertised every second.
fn gossip_bytes_per_node_per_s(
    nodes: usize,
    per_node: u64,
    fanout: usize,
    seconds: usize,
    rng: &mut SplitMix64,
) -> f64 {
    let mut states: Vec<CrdtGossipState> = (0..nodes)
        .map(|_| CrdtGossipState::new(node_id(rng)))
        .collect();
    for s in &mut states {
        let me = s.processes.map().node();
        for serial in 1..=per_node {
            s.processes
                .advertise(advertisement(Pid::new(me, 1, serial), rng), 1_000)
                .unwrap();
        }
    }
    // Start converged (a full-state sync, not measured).
    let snapshot = states.clone();
    for s in &mut states {
        for o in &snapshot {
            s.merge(o, 1_001);
        }
    }
    let mut g = Gossip {
        states,
        rng: SplitMix64::new(rng.next_u64()),
        fanout,
        budget: 1 << 20,
        bytes: 0,
        now: 2_000,
    };
    let churn = (per_node / 100).max(1);
    let step = |g: &mut Gossip, rng: &mut SplitMix64| {
        let now = g.now + 1;
        for s in &mut g.states {
            let me = s.processes.map().node();
            for _ in 0..churn {
                let serial = 1 + rng.next_u64() % per_node;
                s.processes
                    .advertise(advertisement(Pid::new(me, 1, serial), rng), now)
                    .unwrap();
            }
        }
        g.period();
    };
    for _ in 0..3 {
        step(&mut g, rng);
    }
    g.bytes = 0;
    for _ in 0..seconds {
        step(&mut g, rng);
    }
    g.bytes as f64 / nodes as f64 / seconds as f64
}

fn main() {
    let a = args();
    let started = Instant::now();
    let mut rng = SplitMix64::new(42);
    let (
        ring_keys,
        ring_trials,
        table_nodes,
        table_per_node,
        trials,
        churn_nodes,
        churn_per_node,
        churn_s,
    ) = if a.quick {
        (20_000, 3, 20, 1_000, 3, 5, 2_000, 3)
    } else {
        (100_000, 10, 100, 1_000, 10, 10, 10_000, 10)
    };
    println!(
        "cluster_data{} — fanout {}, seed 42",
        if a.quick { " --quick" } else { "" },
        a.fanout
    );

    let ring_moved_ratio = ring_moved_ratio(100, ring_keys, ring_trials, &mut rng);
    println!(
        "ring: a join at 100 nodes (160 vnodes, {ring_keys} keys, mean of {ring_trials}) moved {ring_moved_ratio:.3} × the ideal K/(N+1)"
    );

    let (mut table, mut writers) = big_table(table_nodes, table_per_node, &mut rng);
    let entries = table.len();
    let full_bytes = table
        .map()
        .delta_for(&Default::default(), usize::MAX)
        .encode()
        .len();
    let mut replica = table.clone();
    // 1% of the entries change on their owners; the changes reach `table`, not `replica`.
    let mut changed = std::collections::BTreeSet::new();
    while changed.len() < entries / 100 {
        let w = (rng.next_u64() % writers.len() as u64) as usize;
        let me = writers[w].map().node();
        let pid = Pid::new(me, 1, 1 + rng.next_u64() % table_per_node);
        writers[w]
            .advertise(advertisement(pid, &mut rng), 1_600)
            .unwrap();
        changed.insert(pid);
    }
    for w in &writers {
        table
            .merge_delta(w.map().delta_for(&table.map().seen(), usize::MAX), 1_601)
            .unwrap();
    }
    let changes = changed.len();
    let (repair_bytes, hashes) = merkle_repair_bytes(&mut replica, &mut table);
    let repair_bytes_ratio = repair_bytes as f64 / full_bytes as f64;
    println!(
        "merkle: repairing {changes} of {entries} entries took {repair_bytes} bytes ({hashes} node digests) against {full_bytes} bytes of full state: ratio {repair_bytes_ratio:.4}"
    );

    let queries = 2_000;
    let caps: Vec<String> = (0..queries)
        .map(|i| format!("cap-{}", i % CAPABILITIES as usize))
        .collect();
    let t = Instant::now();
    let mut found = 0usize;
    for c in &caps {
        found += black_box(table.find_by_capability(c).collect::<Vec<_>>()).len();
    }
    let find_by_capability_us = t.elapsed().as_secs_f64() * 1e6 / queries as f64;
    let t = Instant::now();
    for c in &caps {
        black_box(table.least_loaded_node(Some(c)));
    }
    let least_loaded_node_us = t.elapsed().as_secs_f64() * 1e6 / queries as f64;
    println!(
        "queries on {entries} entries: find_by_capability {find_by_capability_us:.1} µs ({} matches each on average), least_loaded_node(capability) {least_loaded_node_us:.2} µs",
        found / queries
    );

    let converge_periods_100 = converge_periods(100, a.fanout, trials, &mut rng);
    let converge_periods_500 = converge_periods(500, a.fanout, trials, &mut rng);
    println!(
        "gossip: one advertisement reaches all of 100 in {converge_periods_100:.2} periods (2·ln N = {:.2}), all of 500 in {converge_periods_500:.2} (2·ln N = {:.2}); mean of {trials}",
        2.0 * 100f64.ln(),
        2.0 * 500f64.ln()
    );

    let gossip_bytes_per_node_per_s =
        gossip_bytes_per_node_per_s(churn_nodes, churn_per_node, a.fanout, churn_s, &mut rng);
    println!(
        "gossip: {churn_nodes} nodes × {churn_per_node} processes, 1%/s re-advertised: {:.1} KiB per node per second (digests and deltas, both directions, {churn_s} s)",
        gossip_bytes_per_node_per_s / 1024.0
    );
    println!("real time {:.1} s", started.elapsed().as_secs_f64());
    println!(
        "BENCH {{\"bench\":\"cluster_data\",\"quick\":{},\"fanout\":{},\"ring_moved_ratio\":{:.3},\"repair_bytes_ratio\":{:.4},\"find_by_capability_us\":{:.2},\"least_loaded_node_us\":{:.3},\"converge_periods_100\":{:.2},\"converge_periods_500\":{:.2},\"gossip_bytes_per_node_per_s\":{:.0}}}",
        a.quick,
        a.fanout,
        ring_moved_ratio,
        repair_bytes_ratio,
        find_by_capability_us,
        least_loaded_node_us,
        converge_periods_100,
        converge_periods_500,
        gossip_bytes_per_node_per_s
    );
}
