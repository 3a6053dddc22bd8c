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
//!   driving the node's own data planes (`atoll_cluster::protocol::data::DataPlane`: push-pull
//!   digest rounds with `fanout` random members per period, Merkle repair every fifth),
//!   every message through its wire encoding;
//! - gossip bytes per node per second (every data message, both directions) with 10,000
//!   processes per node and 1% of them replaced each second (one period per second);
//! - real nodes: five nodes in this process over QUIC with SWIM membership and the default
//!   500 ms data period, 1,000 processes each: time until a process spawned on one node is
//!   in every node's table, and `Node::find_by_capability` on the 5,000-entry table.
//!
//! Deterministic (seeded), so every figure but the query latencies repeats exactly.

use std::hint::black_box;
use std::time::Instant;

use atoll_cluster::protocol::data::{DataPlane, DataSettings};
use atoll_core::{NodeId, Pid, SplitMix64};
use atoll_data::{
    HashRing, MerkleMessage, MerkleTree, ProcessAdvertisement, ProcessStatus, ProcessTable,
    ResourceSummary, SyncAction, compare_tree_roots,
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

/// Members' data planes (the node's own gossip core, `atoll_cluster::protocol::data`),
/// each period ticked in turn and every message delivered, answers included, before the
/// next: a round trip is much shorter than a period.
struct Planes {
    planes: Vec<DataPlane>,
    ids: Vec<NodeId>,
    local: Vec<Vec<ProcessAdvertisement>>,
    bytes: u64,
    now: u64,
}

impl Planes {
    fn new(nodes: usize, settings: DataSettings, rng: &mut SplitMix64) -> Planes {
        let ids: Vec<NodeId> = (0..nodes).map(|_| node_id(rng)).collect();
        Planes {
            planes: ids
                .iter()
                .map(|id| DataPlane::new(*id, settings, rng.next_u64()))
                .collect(),
            local: vec![Vec::new(); nodes],
            ids,
            bytes: 0,
            now: 1_000,
        }
    }

    fn period(&mut self) {
        self.now += 1_000;
        let mut queue = std::collections::VecDeque::new();
        for i in 0..self.planes.len() {
            for (to, msg) in self.planes[i].tick(self.now, &self.ids, &self.local[i]) {
                queue.push_back((i, to, msg));
            }
        }
        while let Some((from, to, msg)) = queue.pop_front() {
            self.bytes += msg.encode().len() as u64;
            let to = self.ids.iter().position(|id| *id == to).expect("a member");
            for (next, answer) in self.planes[to].receive(self.ids[from], msg, self.now) {
                queue.push_back((to, next, answer));
            }
        }
    }

    fn everywhere(&self, pid: Pid) -> bool {
        self.planes
            .iter()
            .all(|p| p.state().processes.get(&pid).is_some())
    }
}

/// Members that all hold one process each, converged, then one new advertisement:
/// periods until every member has it (mean over `trials`).
fn converge_periods(nodes: usize, fanout: usize, trials: usize, rng: &mut SplitMix64) -> f64 {
    let settings = DataSettings {
        fanout,
        ..DataSettings::default()
    };
    let mut g = Planes::new(nodes, settings, rng);
    for i in 0..nodes {
        g.local[i].push(advertisement(Pid::new(g.ids[i], 1, 1), rng));
    }
    let mut warm = 0;
    while !g.planes.iter().all(|p| p.state().processes.len() == nodes) {
        g.period();
        warm += 1;
        assert!(warm < 200, "initial dissemination did not converge");
    }
    let mut total = 0;
    for t in 0..trials {
        let writer = (rng.next_u64() % nodes as u64) as usize;
        let pid = Pid::new(g.ids[writer], 1, 100 + t as u64);
        g.local[writer].push(advertisement(pid, rng));
        // The period that advertises it counts as the first.
        let mut periods = 0;
        while periods == 0 || !g.everywhere(pid) {
            g.period();
            periods += 1;
            assert!(periods < 100, "an update did not spread");
        }
        total += periods;
    }
    total as f64 / trials as f64
}

/// Gossip bytes (every message, both directions) per node per second with `per_node`
/// processes on each of `nodes` members and 1% of each member's processes replaced every
/// second (one exits, another starts), one period per second.
fn gossip_bytes_per_node_per_s(
    nodes: usize,
    per_node: u64,
    fanout: usize,
    seconds: usize,
    rng: &mut SplitMix64,
) -> f64 {
    // A budget that lets the initial full sync finish quickly; churn stays far below it.
    let settings = DataSettings {
        fanout,
        budget_bytes: 64 << 20,
        ..DataSettings::default()
    };
    let mut g = Planes::new(nodes, settings, rng);
    for i in 0..nodes {
        g.local[i] = (1..=per_node)
            .map(|s| advertisement(Pid::new(g.ids[i], 1, s), rng))
            .collect();
    }
    let total = nodes as u64 * per_node;
    let mut warm = 0;
    while !g
        .planes
        .iter()
        .all(|p| p.state().processes.len() as u64 == total)
    {
        g.period();
        warm += 1;
        assert!(warm < 100, "the initial sync did not converge");
    }
    let churn = (per_node / 100).max(1);
    let mut next_serial = per_node + 1;
    let mut step = |g: &mut Planes, rng: &mut SplitMix64| {
        for i in 0..nodes {
            for _ in 0..churn {
                let gone = (rng.next_u64() % g.local[i].len() as u64) as usize;
                g.local[i].swap_remove(gone);
                let pid = Pid::new(g.ids[i], 1, next_serial);
                next_serial += 1;
                g.local[i].push(advertisement(pid, rng));
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

struct Idle;

impl atoll::Actor for Idle {
    type Msg = ();

    async fn handle(&mut self, _: (), _: &mut atoll::Ctx<Self>) -> atoll::ActorResult {
        Ok(())
    }
}

/// Five real nodes (QUIC, SWIM, default data settings) with `per_node` processes each:
/// milliseconds until a new process is in every node's table (p50, p99 over `trials`), and
/// `find_by_capability` on one node's table in microseconds.
async fn real_nodes(per_node: usize, trials: usize) -> (f64, f64, f64) {
    use atoll::net::{ClusterCa, NodeIdentity, RevocationList};
    use atoll::{MembershipConfig, Node, NodeConfig, SpawnOptions};

    let ca = ClusterCa::create("bench").expect("CA");
    let mut nodes: Vec<Node> = Vec::new();
    for i in 0..5 {
        let key = NodeIdentity::generate().expect("key");
        let name = format!("n{i}");
        let cert = ca.issue(&name, &key.public_key()).expect("certificate");
        let seeds: Vec<_> = nodes.first().map(Node::local_addr).into_iter().collect();
        let config = NodeConfig::with_ca(
            &name,
            "127.0.0.1:0".parse().expect("address"),
            key,
            cert,
            ca.trust(RevocationList::new()),
        )
        .with_membership(MembershipConfig::new(seeds));
        nodes.push(Node::start(config).expect("node starts"));
    }
    for (i, node) in nodes.iter().enumerate() {
        for s in 0..per_node {
            let opts = SpawnOptions::default()
                .with_capabilities([format!("cap-{}", (i * per_node + s) % 100)]);
            node.runtime().spawn_opts(Idle, opts);
        }
    }
    let total = 5 * per_node;
    let started = Instant::now();
    while !nodes.iter().all(|n| n.find_by_type("Idle").len() == total) {
        assert!(
            started.elapsed().as_secs() < 60,
            "the tables did not converge"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let mut samples = Vec::new();
    for t in 0..trials {
        let spawned_on = &nodes[t % 5];
        let pid = spawned_on.runtime().spawn(Idle).pid();
        let t0 = Instant::now();
        while !nodes
            .iter()
            .all(|n| n.find_by_type("Idle").iter().any(|a| a.pid == pid))
        {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        samples.push(t0.elapsed().as_micros() as u64);
    }
    let (p50, p99) = atoll_bench::p50_p99(samples);
    let queries = 1_000;
    let t = Instant::now();
    for q in 0..queries {
        black_box(nodes[1].find_by_capability(&format!("cap-{}", q % 100)));
    }
    let find_us = t.elapsed().as_secs_f64() * 1e6 / queries as f64;
    for n in nodes {
        n.shutdown(std::time::Duration::from_secs(1)).await;
    }
    (p50 as f64 / 1e3, p99 as f64 / 1e3, find_us)
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
        "gossip: {churn_nodes} nodes × {churn_per_node} processes, 1%/s replaced: {:.1} KiB per node per second (every data message, both directions, {churn_s} s)",
        gossip_bytes_per_node_per_s / 1024.0
    );
    let (real_per_node, real_trials) = if a.quick { (200, 10) } else { (1_000, 30) };
    let (real_converge_ms_p50, real_converge_ms_p99, real_find_us) =
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(real_nodes(real_per_node, real_trials));
    println!(
        "real nodes: 5 over QUIC, {real_per_node} processes each, 500 ms periods: a new process is in every table after {real_converge_ms_p50:.0} ms p50, {real_converge_ms_p99:.0} ms p99 ({real_trials} trials); Node::find_by_capability {real_find_us:.1} µs"
    );
    println!("real time {:.1} s", started.elapsed().as_secs_f64());
    println!(
        "BENCH {{\"bench\":\"cluster_data\",\"quick\":{},\"fanout\":{},\"ring_moved_ratio\":{:.3},\"repair_bytes_ratio\":{:.4},\"find_by_capability_us\":{:.2},\"least_loaded_node_us\":{:.3},\"converge_periods_100\":{:.2},\"converge_periods_500\":{:.2},\"gossip_bytes_per_node_per_s\":{:.0},\"real_converge_ms_p50\":{:.0},\"real_converge_ms_p99\":{:.0},\"real_find_by_capability_us\":{:.1}}}",
        a.quick,
        a.fanout,
        ring_moved_ratio,
        repair_bytes_ratio,
        find_by_capability_us,
        least_loaded_node_us,
        converge_periods_100,
        converge_periods_500,
        gossip_bytes_per_node_per_s,
        real_converge_ms_p50,
        real_converge_ms_p99,
        real_find_us
    );
}
