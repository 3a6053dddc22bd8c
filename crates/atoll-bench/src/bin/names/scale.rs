//! Names at scale: `names --names N --members M [--quick] [--push snapshots|deltas|both]`.
//!
//! Three voter nodes, each a separate OS process on its own 2-worker runtime (see
//! `voters.rs`), and `M` non-voter members over QUIC and TLS on loopback, the members in
//! this process on one 2-worker runtime (each member connected to each voter). At two
//! registry sizes in the same cluster, first with 100 names and then with `N` (the rest
//! registered in between), it measures:
//!
//! - registrations per second through `Node::register` at the leader's node (in the
//!   leader's process, timed here around the request), 64 in flight:
//!   the median of five rounds of a fixed number of registrations, each round unregistered
//!   afterwards (untimed) so the registry stays at the size measured;
//! - the bytes the voters sent to the members meanwhile (deltas and snapshots, framed), per
//!   registration;
//! - the member `whereis` lag: one registration at a time at the leader; from its return
//!   until each member resolves the name (every member polled), p50 and p99 over all
//!   members and registrations.
//!
//! `--push snapshots` runs the same with voters pushing the whole registry every 50 ms (the
//! former way); `both` runs that first, then deltas, each in a fresh cluster.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use atoll::net::{ClusterCa, NodeIdentity, RevocationList};
use atoll::{ConsensusConfig, Node, NodeConfig, RegistryPush};
use atoll_bench::{p50_p99, per_second};

use super::voters::{Voters, range_name};

/// The registry size of the `_small` figures.
const SMALL: usize = 100;
/// Rounds of registrations per size; the median rate is reported.
const ROUNDS: usize = 5;

/// What the command line asked for.
pub struct ScaleArgs {
    pub names: usize,
    pub members: usize,
    pub quick: bool,
    pub modes: Vec<RegistryPush>,
}

impl ScaleArgs {
    /// `Some` when `--names` or `--members` is given.
    pub fn parse(args: &[String]) -> Option<ScaleArgs> {
        let value = |flag: &str| {
            args.iter()
                .position(|a| a == flag)
                .and_then(|i| args.get(i + 1))
                .cloned()
        };
        let names = value("--names");
        let members = value("--members");
        if names.is_none() && members.is_none() {
            return None;
        }
        let number =
            |v: Option<String>, default: usize| v.map_or(default, |v| v.parse().expect("a number"));
        let modes = match value("--push").as_deref() {
            None | Some("deltas") => vec![RegistryPush::Deltas],
            Some("snapshots") => vec![RegistryPush::Snapshots],
            Some("both") => vec![RegistryPush::Snapshots, RegistryPush::Deltas],
            Some(other) => panic!("--push deltas|snapshots|both, not {other}"),
        };
        Some(ScaleArgs {
            names: number(names, 100_000).max(SMALL),
            members: number(members, 16).max(1),
            quick: args.iter().any(|a| a == "--quick"),
            modes,
        })
    }
}

/// The figures at one registry size.
#[derive(Clone, Copy, Debug)]
struct AtSize {
    names: usize,
    register_per_s: f64,
    push_bytes_per_register: f64,
    snapshots_sent: u64,
    lag_p50_us: u64,
    lag_p99_us: u64,
}

struct Cluster {
    voters: Voters,
    members: Vec<Node>,
    leader: usize,
}

fn mode_name(mode: RegistryPush) -> &'static str {
    match mode {
        RegistryPush::Deltas => "deltas",
        RegistryPush::Snapshots => "snapshots",
    }
}

pub fn run(args: &ScaleArgs) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let root = std::env::temp_dir().join(format!("atoll-names-scale-{}", std::process::id()));
    let (per_size, lag_samples) = if args.quick {
        (1_000, 50)
    } else {
        (2_000, 200)
    };
    println!(
        "names at scale: 3 voter nodes, each a separate OS process (own 2-worker runtime), + {} members in this process (one 2-worker runtime), over QUIC+TLS on loopback; {} cores",
        args.members,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "  registrations through Node::register at the leader's node, 64 in flight, {ROUNDS} rounds of {per_size} per size (median rate; each round unregistered after, untimed); whereis lag over {lag_samples} single registrations x {} members",
        args.members
    );
    let mut last = None;
    for &mode in &args.modes {
        let dir = root.join(mode_name(mode));
        let (small, large) = rt.block_on(measure(&dir, args, mode, per_size, lag_samples));
        println!("push = {}:", mode_name(mode));
        println!(
            "{:<10} {:>14} {:>16} {:>10} {:>12} {:>12}",
            "names", "registers/s", "push B/register", "snapshots", "lag p50", "lag p99"
        );
        for s in [small, large] {
            println!(
                "{:<10} {:>14.0} {:>16.0} {:>10} {:>10.2}ms {:>10.2}ms",
                s.names,
                s.register_per_s,
                s.push_bytes_per_register,
                s.snapshots_sent,
                s.lag_p50_us as f64 / 1000.0,
                s.lag_p99_us as f64 / 1000.0
            );
        }
        println!(
            "  rate at {} / rate at {}: {:.2}; push bytes per registration at {} / at {}: {:.2}",
            large.names,
            small.names,
            large.register_per_s / small.register_per_s.max(1e-9),
            large.names,
            small.names,
            large.push_bytes_per_register / small.push_bytes_per_register.max(1e-9)
        );
        if mode == RegistryPush::Snapshots && args.modes.len() > 1 {
            println!(
                "BENCH {{\"bench\":\"names_scale\",\"system\":\"snapshot_pushes\",\"names\":{},\"members\":{},\"register_per_s\":{:.0},\"register_per_s_small\":{:.0},\"push_bytes_per_register\":{:.0},\"push_bytes_per_register_small\":{:.0},\"member_lag_p99_ms\":{:.2}}}",
                large.names,
                args.members,
                large.register_per_s,
                small.register_per_s,
                large.push_bytes_per_register,
                small.push_bytes_per_register,
                large.lag_p99_us as f64 / 1000.0
            );
        } else {
            last = Some((small, large));
        }
    }
    let _ = std::fs::remove_dir_all(&root);
    if let Some((small, large)) = last {
        println!(
            "BENCH {{\"bench\":\"names_scale\",\"names\":{},\"members\":{},\"register_per_s\":{:.0},\"register_per_s_small\":{:.0},\"push_bytes_per_register\":{:.0},\"push_bytes_per_register_small\":{:.0},\"member_lag_p99_ms\":{:.2}}}",
            large.names,
            args.members,
            large.register_per_s,
            small.register_per_s,
            large.push_bytes_per_register,
            small.push_bytes_per_register,
            large.lag_p99_us as f64 / 1000.0
        );
    }
}

async fn measure(
    root: &Path,
    args: &ScaleArgs,
    mode: RegistryPush,
    per_size: usize,
    lag_samples: usize,
) -> (AtSize, AtSize) {
    let cluster = start(root, args.members, mode).await;
    println!(
        "  ({}: voter processes {:?}, leader v{})",
        mode_name(mode),
        cluster.voters.pids,
        cluster.leader
    );
    let counter = AtomicU64::new(0);
    // Warm up, then fill the registry to the small size.
    let filled = register_range(&cluster, "fill", SMALL, 64, &counter).await;
    wait_members_at(&cluster).await;
    let small = at_size(&cluster, filled as usize, per_size, lag_samples, &counter).await;
    let t = Instant::now();
    let target = args.names;
    let have = SMALL + lag_samples;
    if target > have {
        register_range(&cluster, "fill", target - have, 256, &counter).await;
    }
    println!(
        "  ({}: filled to {} names in {:.1}s)",
        mode_name(mode),
        target.max(have),
        t.elapsed().as_secs_f64()
    );
    wait_members_at(&cluster).await;
    let large = at_size(&cluster, target.max(have), per_size, lag_samples, &counter).await;
    for n in &cluster.members {
        n.shutdown(Duration::from_secs(1)).await;
    }
    cluster.voters.quit().await;
    (small, large)
}

/// Registers `count` fresh names at the leader's node, `in_flight` at once (inside the
/// leader's process): how many succeeded.
async fn register_range(
    cluster: &Cluster,
    prefix: &str,
    count: usize,
    in_flight: usize,
    counter: &AtomicU64,
) -> u64 {
    let first = counter.fetch_add(count as u64, Ordering::Relaxed);
    cluster
        .voters
        .number(
            cluster.leader,
            format!("register {prefix} {first} {count} {in_flight}"),
        )
        .await
}

/// Waits (up to a minute) until every member's copy is at the leader's index.
async fn wait_members_at(cluster: &Cluster) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let index = cluster.voters.number(cluster.leader, "index".into()).await;
    while cluster.members.iter().any(|m| m.registry_index() < index) {
        if Instant::now() > deadline {
            println!("  (members did not reach index {index} within a minute)");
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn at_size(
    cluster: &Cluster,
    names: usize,
    count: usize,
    lag_samples: usize,
    counter: &AtomicU64,
) -> AtSize {
    let leader = cluster.leader;
    let mut rates = Vec::new();
    let (mut bytes, mut snapshots, mut registered) = (0, 0, 0);
    for _ in 0..ROUNDS {
        let (bytes0, snaps0) = cluster.voters.pushed().await;
        let first = counter.fetch_add(count as u64, Ordering::Relaxed);
        let t = Instant::now();
        let done = cluster
            .voters
            .number(leader, format!("register rate {first} {count} 64"))
            .await;
        rates.push(per_second(done, t.elapsed()));
        // What the registrations cost the members: wait for them to be delivered.
        wait_members_at(cluster).await;
        let (bytes1, snaps1) = cluster.voters.pushed().await;
        bytes += bytes1 - bytes0;
        snapshots += snaps1 - snaps0;
        registered += done;
        // Back to the registry size measured (not timed).
        cluster
            .voters
            .ask(leader, format!("unregister rate {first} {count}"))
            .await;
        wait_members_at(cluster).await;
    }
    rates.sort_by(f64::total_cmp);
    let mut lags = Vec::with_capacity(lag_samples * cluster.members.len());
    for _ in 0..lag_samples {
        let name = range_name("lag", counter.fetch_add(1, Ordering::Relaxed));
        // Timed from the moment the answer reaches this process (a pipe hop after the
        // registration returned in the leader's process).
        if cluster.voters.ask(leader, format!("one {name}")).await != "1" {
            continue;
        }
        let start = Instant::now();
        let mut pending: Vec<usize> = (0..cluster.members.len()).collect();
        let deadline = start + Duration::from_secs(10);
        while !pending.is_empty() && Instant::now() < deadline {
            pending.retain(|&i| {
                if cluster.members[i].whereis(&name).is_some() {
                    lags.push(start.elapsed().as_micros() as u64);
                    false
                } else {
                    true
                }
            });
            tokio::task::yield_now().await;
        }
        // A member that never saw it counts as the whole deadline.
        lags.extend(pending.iter().map(|_| 10_000_000u64));
    }
    let (lag_p50_us, lag_p99_us) = p50_p99(lags);
    AtSize {
        names,
        register_per_s: rates[rates.len() / 2],
        push_bytes_per_register: bytes as f64 / registered.max(1) as f64,
        snapshots_sent: snapshots,
        lag_p50_us,
        lag_p99_us,
    }
}

async fn start(root: &Path, members: usize, mode: RegistryPush) -> Cluster {
    let ca = ClusterCa::create("bench").expect("CA");
    let voters = Voters::spawn(&root.join("voters"), &ca, mode);
    let mut nodes = Vec::new();
    for i in 0..members {
        let name = format!("m{i}");
        let key = NodeIdentity::generate().expect("key");
        let cert = ca.issue(&name, &key.public_key()).expect("certificate");
        let listen = "127.0.0.1:0".parse().expect("an address");
        let mut consensus = ConsensusConfig::new(voters.ids.clone(), root.join(&name));
        consensus.push = mode;
        let config = NodeConfig::with_ca(&name, listen, key, cert, ca.trust(RevocationList::new()))
            .with_consensus(consensus);
        nodes.push(Node::start(config).expect("node starts"));
    }
    for m in &nodes {
        for (_, addr) in &voters.ids {
            m.connect(*addr).await.expect("a member reaches a voter");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let leader = loop {
        let mut leading = None;
        for i in 0..voters.ids.len() {
            if voters.ask(i, "leader".into()).await == "1" {
                leading = Some(i);
            }
        }
        if let Some(i) = leading {
            break i;
        }
        assert!(Instant::now() < deadline, "no leader elected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    Cluster {
        voters,
        members: nodes,
        leader,
    }
}
