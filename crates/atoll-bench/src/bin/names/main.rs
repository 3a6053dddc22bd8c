//! Consensus naming and locks: `names [--quick]`; names at scale (registry pushes to
//! members): `names --names 100000 --members 16` (see `scale.rs`; its voters run as
//! separate processes of this binary, see `voters.rs`).
//!
//! Three voters run in this one process, each with its own durable redb store (every append
//! and vote fsynced before it is acknowledged) in a temporary directory, talking through the
//! in-memory Raft transport (no sockets: the figures are the consensus core and the disk).
//! Beside them, in the same run, the floor: one durable redb commit of a small record, the
//! least a durable registration can cost.
//!
//! Then, in the same run, the established consensus store measured the same way: three etcd
//! members on loopback (when `etcd` is installed: `apt-get install etcd-server`), a put for a
//! registration and etcd's lock service for the lock, through etcd's JSON gateway over
//! long-lived HTTP/1.1 connections (etcd's own clients speak gRPC; the gateway adds a little).
//!
//! Measures Consistent registration latency with one in flight (at the leader, and at a
//! follower that forwards to the leader), registrations per second with 64 in flight (with
//! what the leader's log store did meanwhile: appends, proposals per log entry, fsyncs and
//! the time spent in them), lock acquire+release cycles per second with 8 clients contending
//! for one lock (waiters queued and handed the lock by the releasing entry), and the local
//! `whereis` read.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use atoll_bench::{p50_p99, per_second};
use atoll_core::{NodeId, Pid, Scope};
use atoll_raft::{
    Command, Consensus, MemRouter, MemTransport, Node, Outcome, RaftId, RaftSettings, Role,
    StoreStats, raft_id_of,
};

mod scale;
mod voters;

type Voter = Consensus<MemTransport>;

fn node_id(n: u8) -> NodeId {
    NodeId::from_bytes([n; 16])
}

fn voters() -> Vec<(RaftId, Node)> {
    (1..=3u8)
        .map(|n| {
            let id = node_id(n);
            (
                raft_id_of(&id),
                Node::new(id, format!("127.0.0.1:{}", 4000 + u16::from(n))),
            )
        })
        .collect()
}

fn register(name: String, serial: u64) -> Command {
    Command::Register {
        name,
        pid: Pid::new(node_id(1), 1, serial),
        scope: Scope::Consistent,
    }
}

async fn start(root: &Path) -> Vec<Voter> {
    let router = MemRouter::new();
    let mut out = Vec::new();
    for (id, _) in voters() {
        let settings = RaftSettings::new(id, voters(), root.join(id.to_string()));
        let voter = Consensus::start(settings, router.transport(id))
            .await
            .expect("voter starts");
        let served = voter.clone();
        router.serve(id, move |body: Vec<u8>| {
            let v = served.clone();
            async move { v.handle(&body).await }
        });
        out.push(voter);
    }
    out
}

async fn leader_index(voters: &[Voter]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for (i, v) in voters.iter().enumerate() {
            if v.status().await.role == Role::Leader {
                return i;
            }
        }
        assert!(Instant::now() < deadline, "no leader elected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Registration latencies in µs, one in flight.
async fn latencies(voter: &Voter, prefix: &str, count: u64) -> Vec<u64> {
    let mut out = Vec::with_capacity(count as usize);
    for i in 0..count {
        let t = Instant::now();
        let outcome = voter
            .propose(register(format!("{prefix}-{i}"), i + 1))
            .await
            .expect("registration");
        assert_eq!(outcome, Outcome::Registered);
        out.push(t.elapsed().as_micros() as u64);
    }
    out
}

/// Registrations per second with `in_flight` concurrent proposers for `run`.
async fn throughput(voter: &Voter, in_flight: u64, run: Duration) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..in_flight {
        let (voter, done, stop) = (voter.clone(), done.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let name = format!("bulk-{t}-{i}");
                if voter.propose(register(name, 1_000_000 + i)).await.is_ok() {
                    done.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
        }));
    }
    tokio::time::sleep(run).await;
    stop.store(true, Ordering::Relaxed);
    let counted = done.load(Ordering::Relaxed);
    let elapsed = start.elapsed();
    for t in tasks {
        let _ = t.await;
    }
    per_second(counted, elapsed)
}

/// Acquire+release cycles per second with `clients` contending for one lock for `run`.
/// A client that finds the lock held is queued (`LockOrWait`) and handed the lock by the
/// entry that releases it; it sees the grant in its voter's registry (woken by
/// `watch_applied`). The clients spread over the three voters. Also returns how many times
/// per cycle a client was queued.
async fn lock_cycles(voters: &[Voter], clients: u64, run: Duration) -> (f64, f64) {
    let cycles = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let last_token = Arc::new(AtomicU64::new(0));
    let queued = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let voter = voters[(c as usize) % voters.len()].clone();
        let (cycles, stop, last_token) = (cycles.clone(), stop.clone(), last_token.clone());
        let queued = queued.clone();
        tasks.push(tokio::spawn(async move {
            let holder = Pid::new(node_id(1), 1, 9_000 + c);
            while !stop.load(Ordering::Relaxed) {
                let granted = match voter
                    .propose(Command::LockOrWait {
                        name: "the-lock".into(),
                        holder,
                    })
                    .await
                {
                    Ok(Outcome::LockGranted { token }) => Some(token),
                    Ok(Outcome::LockQueued { token: behind, .. }) => {
                        // Handed the lock by the entry that releases it: wait to see it.
                        queued.fetch_add(1, Ordering::Relaxed);
                        let mut applied = voter.watch_applied();
                        loop {
                            applied.borrow_and_update();
                            match voter.locks().get("the-lock") {
                                Some(g) if g.holder == holder && g.token > behind => {
                                    break Some(g.token);
                                }
                                None if voter.applied_registry().0 >= Some(behind) => break None,
                                _ => {}
                            }
                            if stop.load(Ordering::Relaxed) {
                                break None;
                            }
                            let wake = applied.changed();
                            let _ = tokio::time::timeout(Duration::from_millis(10), wake).await;
                        }
                    }
                    Ok(other) => panic!("unexpected {other:?}"),
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        None
                    }
                };
                if let Some(token) = granted {
                    // Fencing tokens only grow.
                    let before = last_token.fetch_max(token, Ordering::SeqCst);
                    assert!(token > before, "token {token} after {before}");
                    let _ = voter
                        .propose(Command::Unlock {
                            name: "the-lock".into(),
                            token,
                        })
                        .await;
                    cycles.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(run).await;
    stop.store(true, Ordering::Relaxed);
    let counted = cycles.load(Ordering::Relaxed);
    let elapsed = start.elapsed();
    for t in tasks {
        let _ = t.await;
    }
    let queued = queued.load(Ordering::Relaxed) as f64 / counted.max(1) as f64;
    (per_second(counted, elapsed), queued)
}

/// What the leader's log store did during a run.
struct LogFigures {
    appends_per_s: f64,
    entries_per_append: f64,
    durable_per_s: f64,
    /// The share of the run spent inside fsynced commits.
    commit_share: f64,
}

impl LogFigures {
    fn between(a: StoreStats, b: StoreStats, run: Duration) -> Self {
        let appends = b.appends - a.appends;
        let entries = b.entries_appended - a.entries_appended;
        let durable = b.durable_commits - a.durable_commits;
        let in_commits = b.durable_commit_time - a.durable_commit_time;
        LogFigures {
            appends_per_s: per_second(appends, run),
            entries_per_append: entries as f64 / appends.max(1) as f64,
            durable_per_s: per_second(durable, run),
            commit_share: in_commits.as_secs_f64() / run.as_secs_f64(),
        }
    }
}

/// Durable redb commits of one small record, one after another: µs each.
fn redb_floor(dir: &Path, count: u64) -> Vec<u64> {
    const TABLE: redb::TableDefinition<'_, u64, &[u8]> = redb::TableDefinition::new("floor");
    let db = redb::Database::create(dir.join("floor.redb")).expect("redb");
    let record = [7u8; 100];
    (0..count)
        .map(|i| {
            let t = Instant::now();
            let tx = db.begin_write().expect("write");
            tx.open_table(TABLE)
                .expect("table")
                .insert(i, record.as_slice())
                .expect("insert");
            tx.commit().expect("commit");
            t.elapsed().as_micros() as u64
        })
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(voters::FLAG) {
        voters::voter_main(&args[2..]);
        return;
    }
    if let Some(scale) = scale::ScaleArgs::parse(&args) {
        scale::run(&scale);
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let (n_lat, run) = if quick {
        (200, Duration::from_secs(2))
    } else {
        (1000, Duration::from_secs(5))
    };
    let root: PathBuf = std::env::temp_dir().join(format!("atoll-names-{}", std::process::id()));
    std::fs::create_dir_all(&root).expect("temp dir");
    let (floor_p50, floor_p99) = p50_p99(redb_floor(&root, n_lat));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let figures = rt.block_on(async {
        let voters = start(&root).await;
        let leader = leader_index(&voters).await;
        let follower = (leader + 1) % voters.len();
        // Warm up: elections settled, stores open, caches warm.
        let _ = latencies(&voters[leader], "warm", 20).await;
        let (p50, p99) = p50_p99(latencies(&voters[leader], "lead", n_lat).await);
        let (fwd_p50, _) = p50_p99(latencies(&voters[follower], "fwd", n_lat / 2).await);
        let before = voters[leader].store_stats();
        let t = Instant::now();
        let per_s = throughput(&voters[leader], 64, run).await;
        let log = LogFigures::between(before, voters[leader].store_stats(), t.elapsed());
        let (locks, busy) = lock_cycles(&voters, 8, run).await;
        // Local reads: the leader's registry view.
        let probe = format!("lead-{}", n_lat / 2);
        let reads = 1_000_000u32;
        let t = Instant::now();
        let mut hits = 0u32;
        for _ in 0..reads {
            hits += u32::from(std::hint::black_box(voters[leader].whereis(&probe)).is_some());
        }
        assert_eq!(hits, reads, "the name is registered");
        let whereis_ns = t.elapsed().as_nanos() as f64 / f64::from(reads);
        for v in &voters {
            let _ = v.shutdown().await;
        }
        let nodes = node_figures(&root.join("nodes"), n_lat as usize, run).await;
        (
            p50, p99, fwd_p50, per_s, log, locks, busy, whereis_ns, nodes,
        )
    });
    let _ = std::fs::remove_dir_all(&root);
    let (p50, p99, fwd_p50, per_s, log, locks, busy, whereis_ns, nodes) = figures;
    let etcd = etcd_figures(n_lat as usize, run);
    println!(
        "names: 3 voters in one process, in-memory Raft transport, durable redb stores; {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("{:<44} {:>12} {:>12}", "", "p50", "p99");
    println!(
        "{:<44} {:>10}µs {:>10}µs",
        "floor: one durable redb commit", floor_p50, floor_p99
    );
    println!(
        "{:<44} {:>10}µs {:>10}µs",
        "consistent register at the leader", p50, p99
    );
    println!(
        "{:<44} {:>10}µs",
        "consistent register at a follower (forwarded)", fwd_p50
    );
    println!("{:<44} {:>12.0}", "registrations/s, 64 in flight", per_s);
    println!(
        "  leader log meanwhile: {:.0} appends/s of {:.1} entries each, {:.1} proposals per entry; {:.0} fsynced commits/s, {:.0}% of the time in them",
        log.appends_per_s,
        log.entries_per_append,
        per_s / log.appends_per_s.max(1e-9),
        log.durable_per_s,
        log.commit_share * 100.0
    );
    println!(
        "{:<44} {:>12.0}",
        "lock cycles/s, 8 clients on one lock", locks
    );
    println!("  queued answers per cycle: {busy:.1}");
    println!("{:<44} {:>10.0}ns", "local whereis", whereis_ns);
    println!(
        "through the node API: 3 voter nodes + 1 member over QUIC+TLS on loopback, one runtime:"
    );
    println!(
        "{:<44} {:>10}µs {:>10}µs",
        "Node::register at the leader's node", nodes.register_p50, nodes.register_p99
    );
    println!(
        "{:<44} {:>10}µs",
        "Node::register at a non-voter member", nodes.member_register_p50
    );
    println!(
        "{:<44} {:>12.0}",
        "Node::lock cycles/s, 8 clients on the 3 voters", nodes.locks_on_voters
    );
    println!(
        "{:<44} {:>12.0}",
        "Node::lock cycles/s, 8 clients on all 4 nodes", nodes.locks
    );
    match &etcd {
        Ok(e) => {
            println!("etcd 3.4, 3 members on loopback, same measurements (JSON gateway):");
            println!(
                "{:<44} {:>10}µs {:>10}µs",
                "put at the leader", e.put_p50, e.put_p99
            );
            println!(
                "{:<44} {:>10}µs",
                "put at a follower (forwarded)", e.fwd_p50
            );
            println!("{:<44} {:>12.0}", "puts/s, 64 in flight", e.per_s);
            println!(
                "{:<44} {:>12.0}",
                "lock cycles/s, 8 clients on one lock", e.locks
            );
            println!(
                "ratios (above 1: atoll ahead): register p50 etcd/atoll {:.2}, registrations/s atoll/etcd {:.1}, lock cycles/s atoll/etcd {:.1}",
                e.put_p50 as f64 / p50.max(1) as f64,
                per_s / e.per_s.max(1e-9),
                locks / e.locks.max(1e-9)
            );
        }
        Err(why) => println!("etcd baseline skipped: {why}"),
    }
    println!(
        "BENCH {{\"bench\":\"names\",\"system\":\"redb_commit_floor\",\"p50_us\":{floor_p50},\"p99_us\":{floor_p99}}}"
    );
    println!(
        "BENCH {{\"bench\":\"names\",\"system\":\"atoll_nodes\",\"consistent_register_p50_us\":{},\"consistent_register_p99_us\":{},\"forwarded_register_p50_us\":{},\"lock_cycles_per_s\":{:.0},\"lock_cycles_with_member_per_s\":{:.0}}}",
        nodes.register_p50,
        nodes.register_p99,
        nodes.member_register_p50,
        nodes.locks_on_voters,
        nodes.locks
    );
    if let Ok(e) = &etcd {
        println!(
            "BENCH {{\"bench\":\"names\",\"system\":\"etcd\",\"consistent_register_p50_us\":{},\"consistent_register_p99_us\":{},\"forwarded_register_p50_us\":{},\"register_64_per_s\":{:.0},\"lock_cycles_per_s\":{:.0}}}",
            e.put_p50, e.put_p99, e.fwd_p50, e.per_s, e.locks
        );
    }
    println!(
        "BENCH {{\"bench\":\"names\",\"system\":\"atoll\",\"consistent_register_p50_us\":{p50},\"consistent_register_p99_us\":{p99},\"forwarded_register_p50_us\":{fwd_p50},\"register_64_per_s\":{per_s:.0},\"leader_entries_per_append\":{:.1},\"proposals_per_entry\":{:.1},\"leader_fsyncs_per_s\":{:.0},\"lock_cycles_per_s\":{locks:.0},\"whereis_ns\":{whereis_ns:.0}}}",
        log.entries_per_append,
        per_s / log.appends_per_s.max(1e-9),
        log.durable_per_s
    );
}

/// etcd's figures for the same measurements.
struct EtcdFigures {
    put_p50: u64,
    put_p99: u64,
    fwd_p50: u64,
    per_s: f64,
    locks: f64,
}

/// Runs the etcd baseline (after atoll, never at the same time): `Err` says why it could not.
fn etcd_figures(n_lat: usize, run: Duration) -> Result<EtcdFigures, String> {
    use atoll_bench::etcd;
    let cluster = etcd::EtcdCluster::start()?;
    let leader = cluster.leader().ok_or("etcd has no leader")?;
    let follower = (leader + 1) % cluster.clients.len();
    let _ = etcd::put_latencies(&cluster, leader, 20);
    let (put_p50, put_p99) = p50_p99(etcd::put_latencies(&cluster, leader, n_lat));
    let (fwd_p50, _) = p50_p99(etcd::put_latencies(&cluster, follower, n_lat / 2));
    let per_s = etcd::puts_per_second(&cluster, leader, 64, run);
    let locks = etcd::lock_cycles(&cluster, 8, run);
    Ok(EtcdFigures {
        put_p50,
        put_p99,
        fwd_p50,
        per_s,
        locks,
    })
}

/// The same operations through the node API, over QUIC and TLS on loopback: three voter
/// nodes and one non-voter member, all in this process on one runtime.
struct NodeFigures {
    register_p50: u64,
    register_p99: u64,
    member_register_p50: u64,
    locks_on_voters: f64,
    locks: f64,
}

/// A process that only exists to own a name or hold the lock.
struct Holder;

impl atoll::Actor for Holder {
    type Msg = ();

    async fn handle(&mut self, _: (), _: &mut atoll::Ctx<Self>) -> atoll::ActorResult {
        Ok(())
    }
}

async fn node_figures(root: &Path, n_lat: usize, run: Duration) -> NodeFigures {
    use atoll::net::{ClusterCa, NodeIdentity, RevocationList};
    use atoll::{ConsensusConfig, MembershipConfig, Node, NodeConfig};

    let ca = ClusterCa::create("bench").expect("CA");
    let keys: Vec<NodeIdentity> = (0..4)
        .map(|_| NodeIdentity::generate().expect("key"))
        .collect();
    let addrs: Vec<std::net::SocketAddr> = (0..4)
        .map(|_| {
            std::net::UdpSocket::bind("127.0.0.1:0")
                .and_then(|s| s.local_addr())
                .expect("a free port")
        })
        .collect();
    let voters: Vec<(NodeId, std::net::SocketAddr)> =
        (0..3).map(|i| (keys[i].node_id(), addrs[i])).collect();
    let mut nodes = Vec::new();
    for (i, key) in keys.into_iter().enumerate() {
        let name = if i < 3 { format!("v{i}") } else { "m0".into() };
        let cert = ca.issue(&name, &key.public_key()).expect("certificate");
        let seeds = if i == 0 { vec![] } else { vec![addrs[0]] };
        let config =
            NodeConfig::with_ca(&name, addrs[i], key, cert, ca.trust(RevocationList::new()))
                .with_membership(MembershipConfig::new(seeds))
                .with_consensus(ConsensusConfig::new(voters.clone(), root.join(&name)));
        nodes.push(Node::start(config).expect("node starts"));
    }
    // A leader, known to every voter, and the member seeing the voters.
    let leader = loop {
        let mut statuses = Vec::new();
        for n in &nodes[..3] {
            statuses.push(n.raft_status().await);
        }
        let leaders: Vec<_> = statuses
            .iter()
            .map(|s| s.as_ref().and_then(|s| s.leader))
            .collect();
        let agreed = leaders[0].is_some() && leaders.iter().all(|l| *l == leaders[0]);
        let leading = statuses
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.role == Role::Leader));
        if agreed && let Some(i) = leading {
            break i;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let latencies = |node: &Node, prefix: &'static str, n: usize| {
        let node = node.clone();
        async move {
            let mut out = Vec::with_capacity(n);
            for i in 0..n {
                let pid = node.runtime().spawn(Holder).pid();
                let t = Instant::now();
                node.register(&format!("{prefix}-{i}"), pid, Scope::Consistent)
                    .await
                    .expect("registration");
                out.push(t.elapsed().as_micros() as u64);
            }
            out
        }
    };
    // Warm up the connections and the member's view of the voters.
    let _ = latencies(&nodes[leader], "warm", 20).await;
    let _ = latencies(&nodes[3], "warm-m", 20).await;
    let (register_p50, register_p99) = p50_p99(latencies(&nodes[leader], "n-lead", n_lat).await);
    let (member_register_p50, _) = p50_p99(latencies(&nodes[3], "n-member", n_lat / 2).await);

    let locks_on_voters = node_lock_cycles(&nodes[..3], "voters-lock", run).await;
    let locks = node_lock_cycles(&nodes, "the-lock", run).await;
    for n in &nodes {
        n.shutdown(Duration::from_secs(1)).await;
    }
    NodeFigures {
        register_p50,
        register_p99,
        member_register_p50,
        locks_on_voters,
        locks,
    }
}

/// `Node::lock` + unlock cycles per second, 8 clients spread over `nodes`, one lock.
async fn node_lock_cycles(nodes: &[atoll::Node], lock: &'static str, run: Duration) -> f64 {
    let cycles = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let tasks: Vec<_> = (0..8)
        .map(|c| {
            let node = nodes[c % nodes.len()].clone();
            let (cycles, stop) = (cycles.clone(), stop.clone());
            tokio::spawn(async move {
                let holder = node.runtime().spawn(Holder).pid();
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(guard) = node.lock(lock, holder, Duration::from_secs(5)).await {
                        let _ = guard.unlock().await;
                        cycles.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(run).await;
    stop.store(true, Ordering::Relaxed);
    let per_s = per_second(cycles.load(Ordering::Relaxed), start.elapsed());
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
    per_s
}
