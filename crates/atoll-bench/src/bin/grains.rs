//! Grains on real nodes: `grains [--quick]`.
//!
//! Three `atoll node`s run as separate processes on loopback (this binary re-run with
//! `--node CONFIG`: the node program of `atoll-cli`, hosting the built-in grain types with
//! its redb grain store and Raft log on disk), each a Raft voter; this process joins as a
//! fourth member that hosts no grains and measures, side by side in the same run:
//!
//! - first-call activation latency of new grains (a `counter` each, placed on the nodes,
//!   never here: always a remote placement, a consensus claim and the call), against a
//!   Consistent name registration from the same member; and of new `durable-counter`s
//!   (`LocalExclusive`: the activation also reads its state from the host's redb store);
//! - call latency (one in flight) and throughput (64 in flight) to active grains, against a
//!   plain remote actor `call` to the nodes' `echo` processes (one per node), and again
//!   against as many echo processes as grains, spread over the nodes as the grains are
//!   (`many_*`);
//! - state writes per second, 32 writers: `LocalExclusive` (`durable-counter`, a redb
//!   commit per add) and `Replicated` (`kv` shards, saved on the host and one other node);
//! - migration time of an active grain between two nodes;
//! - failover: a node killed (SIGKILL), the time until every grain it hosted answers again
//!   from the survivors, beside the time membership took to declare it unreachable.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use atoll_bench::{p50_p99, per_second};
use atoll_cli::grains::{Counter, CounterMsg, DurableCounter};
use atoll_cli::kv::KvStore;
use atoll_cluster::builtin::{Echo, EchoMsg};
use atoll_cluster::{MemberEvent, Node};
use atoll_core::{NodeId, Scope};
use atoll_grain::{GrainRef, Grains};

const NODES: [&str; 3] = ["g1", "g2", "g3"];
const CALL: Duration = Duration::from_secs(10);

struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free port")
        .port()
}

fn write_configs(dir: &Path) -> Vec<PathBuf> {
    let ca_dir = dir.join("ca");
    let ca = atoll_net::CaDirectory::new(&ca_dir);
    ca.init("bench").expect("CA");
    let ids: Vec<NodeId> = NODES
        .iter()
        .chain(&["bench"])
        .map(|n| ca.issue(n, &ca_dir).expect("certificate").id)
        .collect();
    let ports: Vec<u16> = NODES.iter().map(|_| free_port()).collect();
    let voters: Vec<String> = (0..NODES.len())
        .map(|i| format!("\"{}@127.0.0.1:{}\"", ids[i], ports[i]))
        .collect();
    let seed = format!("\"127.0.0.1:{}\"", ports[0]);
    let config = |name: &str, listen: String, seeds: &str| {
        format!(
            "name = \"{name}\"\nlisten = \"{listen}\"\nthreads = 1\ngrains = true\n\n\
             [log]\nfilter = \"warn,openraft=off\"\n\n\
             [tls]\nkey = \"ca/{name}.key\"\ncert = \"ca/{name}.pem\"\nca = \"ca/ca.pem\"\n\n\
             [cluster]\nenabled = true\nseeds = [{seeds}]\n\n\
             [cluster.swim]\nprobe_interval_ms = 300\nping_timeout_ms = 150\n\
             suspect_timeout_ms = 1500\nindirect_probes = 2\n\n\
             [consensus]\nvoters = [{}]\nheartbeat_interval_ms = 50\n\
             election_timeout_min_ms = 300\nelection_timeout_max_ms = 600\n",
            voters.join(", ")
        )
    };
    let mut paths = Vec::new();
    for (i, name) in NODES.iter().chain(&["bench"]).enumerate() {
        let listen = match ports.get(i) {
            Some(p) => format!("127.0.0.1:{p}"),
            None => "127.0.0.1:0".into(),
        };
        let seeds = if i == 0 { "" } else { seed.as_str() };
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, config(name, listen, seeds)).expect("config");
        paths.push(path);
    }
    paths
}

fn start_node(config: &Path) -> Child {
    let exe = std::env::current_exe().expect("own path");
    let mut child = Command::new(exe)
        .arg("--node")
        .arg(config)
        .current_dir(config.parent().expect("dir"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node process");
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("consensus voter") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the node's Raft voter started");
    child
}

async fn wait(what: &str, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `tasks` loops running `op` until `for_` has passed; operations per second, and how many.
async fn throughput<F, Fut>(tasks: usize, for_: Duration, op: F) -> (f64, u64)
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let (counted, elapsed, done) = count_ops(tasks, for_, Arc::new(op)).await;
    (per_second(counted, elapsed), done)
}

/// `tasks` loops running `op` for `for_`: the operations done within it, the time taken,
/// and the operations done including those still in flight at the stop.
async fn count_ops<F, Fut>(tasks: usize, for_: Duration, op: Arc<F>) -> (u64, Duration, u64)
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for t in 0..tasks {
        let (op, stop, done) = (op.clone(), stop.clone(), done.clone());
        set.spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                op(t, i).await;
                i += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    tokio::time::sleep(for_).await;
    stop.store(true, Ordering::Relaxed);
    let counted = done.load(Ordering::Relaxed);
    let elapsed = started.elapsed();
    // Operations still in flight at the stop finish below: count them for the traffic.
    while set.join_next().await.is_some() {}
    (counted, elapsed, done.load(Ordering::Relaxed))
}

/// Throughput of `a` against `b`, `tasks` in flight, in `slices` turns of `slice` each,
/// alternating, so that a change in the machine's load during the run (builds, other
/// benchmarks) weighs on both alike: per side, operations per second and traffic per
/// operation of this member.
async fn side_by_side<A, FA, B, FB>(
    node: &Node,
    tasks: usize,
    slices: u32,
    slice: Duration,
    a: A,
    b: B,
) -> [(f64, [f64; 6]); 2]
where
    A: Fn(usize, u64) -> FA + Send + Sync + 'static,
    FA: std::future::Future<Output = ()> + Send,
    B: Fn(usize, u64) -> FB + Send + Sync + 'static,
    FB: std::future::Future<Output = ()> + Send,
{
    let (a, b) = (Arc::new(a), Arc::new(b));
    // Per side: operations counted, time, operations done, traffic.
    let mut sums = [(0u64, Duration::ZERO, 0u64, Traffic::default()); 2];
    for _ in 0..slices {
        for (side, sum) in sums.iter_mut().enumerate() {
            let before = Traffic::now(node).await;
            let (counted, elapsed, done) = if side == 0 {
                count_ops(tasks, slice, a.clone()).await
            } else {
                count_ops(tasks, slice, b.clone()).await
            };
            let after = Traffic::now(node).await;
            sum.0 += counted;
            sum.1 += elapsed;
            sum.2 += done;
            sum.3 = sum.3.plus(after.minus(before));
        }
    }
    sums.map(|(counted, elapsed, done, traffic)| {
        (
            per_second(counted, elapsed),
            traffic.per_op(Traffic::default(), done),
        )
    })
}

/// What this member's connections carried so far, over all peers.
#[derive(Debug, Clone, Copy, Default)]
struct Traffic {
    frames_out: u64,
    frames_in: u64,
    datagrams_out: u64,
    datagrams_in: u64,
    /// CPU time of this process, and of the node processes, in clock ticks.
    cpu_ticks: u64,
    node_cpu_ticks: u64,
}

/// The node processes' ids, for their CPU time.
static NODE_PIDS: std::sync::OnceLock<Vec<u32>> = std::sync::OnceLock::new();

/// User and system CPU time of process `pid` so far, in clock ticks (0 if unreadable).
fn cpu_ticks(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which may hold spaces) start after its ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    // utime and stime are fields 14 and 15 of stat(5), 12 and 13 after the name.
    (11..13)
        .filter_map(|i| fields.get(i)?.parse::<u64>().ok())
        .sum()
}

impl Traffic {
    async fn now(node: &Node) -> Traffic {
        let mut t = Traffic {
            cpu_ticks: cpu_ticks("self"),
            node_cpu_ticks: NODE_PIDS
                .get()
                .into_iter()
                .flatten()
                .map(|p| cpu_ticks(&p.to_string()))
                .sum::<u64>(),
            ..Traffic::default()
        };
        for p in node.status().await.peers {
            t.frames_out += p.frames_sent;
            t.frames_in += p.frames_received;
            t.datagrams_out += p.datagrams_sent;
            t.datagrams_in += p.datagrams_received;
        }
        t
    }

    fn minus(self, o: Traffic) -> Traffic {
        Traffic {
            frames_out: self.frames_out - o.frames_out,
            frames_in: self.frames_in - o.frames_in,
            datagrams_out: self.datagrams_out - o.datagrams_out,
            datagrams_in: self.datagrams_in - o.datagrams_in,
            cpu_ticks: self.cpu_ticks - o.cpu_ticks,
            node_cpu_ticks: self.node_cpu_ticks - o.node_cpu_ticks,
        }
    }

    fn plus(self, o: Traffic) -> Traffic {
        Traffic {
            frames_out: self.frames_out + o.frames_out,
            frames_in: self.frames_in + o.frames_in,
            datagrams_out: self.datagrams_out + o.datagrams_out,
            datagrams_in: self.datagrams_in + o.datagrams_in,
            cpu_ticks: self.cpu_ticks + o.cpu_ticks,
            node_cpu_ticks: self.node_cpu_ticks + o.node_cpu_ticks,
        }
    }

    /// Per operation since `before`: frames out, frames in, datagrams out, datagrams in,
    /// and CPU microseconds of this process and of the nodes (assuming the usual 100 ticks
    /// a second).
    fn per_op(self, before: Traffic, ops: u64) -> [f64; 6] {
        let ops = ops.max(1) as f64;
        [
            (self.frames_out - before.frames_out) as f64 / ops,
            (self.frames_in - before.frames_in) as f64 / ops,
            (self.datagrams_out - before.datagrams_out) as f64 / ops,
            (self.datagrams_in - before.datagrams_in) as f64 / ops,
            (self.cpu_ticks - before.cpu_ticks) as f64 * 10_000.0 / ops,
            (self.node_cpu_ticks - before.node_cpu_ticks) as f64 * 10_000.0 / ops,
        ]
    }
}

fn show_traffic(what: &str, t: [f64; 6]) -> String {
    format!(
        "{what}: frames out/in {:.2}/{:.2}, UDP datagrams out/in {:.2}/{:.2}, CPU us here/nodes {:.1}/{:.1} per call",
        t[0], t[1], t[2], t[3], t[4], t[5]
    )
}

fn us(d: Duration) -> u64 {
    d.as_micros() as u64
}

/// An operation for [`side_by_side`]: task `t` makes the call `$call` to item `t` (modulo
/// their number) of the shared list `$items`, borrowed from it (a `GrainRef` clone copies
/// its key) and unboxed (a call's future is large).
macro_rules! call_each {
    ($items:expr, |$item:ident| $call:expr) => {{
        let items = $items;
        move |t: usize, _| {
            let items = items.clone();
            async move {
                let $item = &items[t % items.len()];
                $call.await.expect("call");
            }
        }
    }};
}

async fn run(quick: bool, node: Node, grains: Grains, children: &mut Children) {
    let n = if quick { 200 } else { 1000 };
    let secs = Duration::from_secs(if quick { 2 } else { 5 });
    let id = |i: usize| node.remote(NODES[i]).expect("a member").id();
    wait("every grain router", || {
        node.find_by_type("GrainRouter").len() == NODES.len() + 1
    })
    .await;
    wait("every echo", || {
        node.find_by_type("Echo").len() >= NODES.len()
    })
    .await;
    // Warm up connections and the claim path.
    for i in 0..20 {
        let g = grains.get::<Counter>(&format!("warm-{i}")).unwrap();
        g.call(CounterMsg::Add(1)).await.expect("warm-up call");
    }

    // First-call activation against a Consistent registration, taking turns and each
    // going first every other time (so that both meet the same disk and Raft log), and
    // after them a `LocalExclusive` grain's, which also reads its state from the host's
    // redb store.
    let holder = node.runtime().spawn(Echo).pid();
    let (mut activation, mut local_activation, mut register) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        for first in [i % 2 == 0, i % 2 == 1] {
            let t = Instant::now();
            if first {
                let g = grains.get::<Counter>(&format!("new-{i}")).unwrap();
                g.call(CounterMsg::Add(1)).await.expect("activation");
                activation.push(us(t.elapsed()));
            } else {
                node.register(&format!("bench-{i}"), holder, Scope::Consistent)
                    .await
                    .expect("registration");
                register.push(us(t.elapsed()));
            }
        }
        let g = grains.get::<DurableCounter>(&format!("new-{i}")).unwrap();
        let t = Instant::now();
        g.call(CounterMsg::Get)
            .await
            .expect("activation")
            .expect("restored");
        local_activation.push(us(t.elapsed()));
    }
    let (act_p50, act_p99) = p50_p99(activation);
    let (local_act_p50, local_act_p99) = p50_p99(local_activation);
    let (reg_p50, reg_p99) = p50_p99(register);
    println!(
        "activation (first call, remote)   p50 {act_p50} us  p99 {act_p99} us   | Consistent registration p50 {reg_p50} us  p99 {reg_p99} us  ({:.2}x)",
        act_p50 as f64 / reg_p50.max(1) as f64
    );
    println!(
        "  LocalExclusive (store read)     p50 {local_act_p50} us  p99 {local_act_p99} us  ({:.2}x the registration)",
        local_act_p50 as f64 / reg_p50.max(1) as f64
    );

    // Calls to an active grain against a plain remote actor call, on the same node.
    let hot = grains.get::<Counter>("hot").unwrap();
    hot.call(CounterMsg::Add(1)).await.expect("hot");
    let host = grains.cached(hot.id()).expect("cached").pid.node;
    let echo_pid = node
        .find_by_type("Echo")
        .into_iter()
        .map(|a| a.pid)
        .find(|p| p.node == host)
        .expect("an echo on the grain's node");
    let echo = node.actor_ref::<Echo>(echo_pid).expect("echo ref");
    let (mut grain_lat, mut actor_lat) = (Vec::new(), Vec::new());
    for _ in 0..n * 5 {
        let t = Instant::now();
        hot.call(CounterMsg::Get).await.expect("grain call");
        grain_lat.push(us(t.elapsed()));
        let t = Instant::now();
        echo.call(|r| EchoMsg::Ping(1, r), CALL)
            .await
            .expect("actor call");
        actor_lat.push(us(t.elapsed()));
    }
    let (call_p50, call_p99) = p50_p99(grain_lat);
    let (actor_p50, actor_p99) = p50_p99(actor_lat);
    println!(
        "call to an active grain           p50 {call_p50} us  p99 {call_p99} us   | actor call p50 {actor_p50} us  p99 {actor_p99} us  ({:.2}x)",
        call_p50 as f64 / actor_p50.max(1) as f64
    );

    // Throughput, 64 in flight spread over grains on every node / every node's echo.
    let refs: Arc<Vec<_>> = Arc::new(
        (0..64)
            .map(|i| grains.get::<Counter>(&format!("new-{i}")).unwrap())
            .collect(),
    );
    // The grain side is only as fast as its busiest node: show how placement spread them.
    let spread: Vec<usize> = (0..NODES.len())
        .map(|i| {
            refs.iter()
                .filter(|g| grains.cached(g.id()).is_some_and(|a| a.pid.node == id(i)))
                .count()
        })
        .collect();
    println!("the 64 grains called, per node         {spread:?}   | echo calls spread evenly");
    let echoes: Arc<Vec<_>> = Arc::new(
        node.find_by_type("Echo")
            .into_iter()
            .filter(|a| a.pid.node != node.id())
            .map(|a| node.actor_ref::<Echo>(a.pid).expect("echo"))
            .collect(),
    );
    // Many short turns: the rate of either side swings by a third from one half second to
    // the next on a shared 2-core machine, and turns of 100 ms let both meet the same swings.
    let slices = if quick { 20 } else { 50 };
    let [
        (calls_per_s, grain_traffic),
        (actor_calls_per_s, actor_traffic),
    ] = side_by_side(
        &node,
        64,
        slices,
        secs / slices,
        call_each!(refs.clone(), |g| g.call(CounterMsg::Get)),
        call_each!(echoes.clone(), |e| e.call(|r| EchoMsg::Ping(1, r), CALL)),
    )
    .await;
    println!(
        "calls/s, 64 in flight             grains {calls_per_s:.0}   | actor calls {actor_calls_per_s:.0}  ({:.2}x)",
        calls_per_s / actor_calls_per_s.max(1.0)
    );
    // Like for like the other way: as many echo processes as grains, spread over the nodes
    // as the grains are, so both sides wake 64 processes.
    let mut many = Vec::new();
    for (i, count) in spread.iter().enumerate() {
        for _ in 0..*count {
            let pid = node
                .spawn_remote(id(i), "echo", &())
                .await
                .expect("echo spawned");
            many.push(node.actor_ref::<Echo>(pid).expect("echo"));
        }
    }
    let many = Arc::new(many);
    let [(many_calls_per_s, _), (many_actor_calls_per_s, _)] = side_by_side(
        &node,
        64,
        slices,
        secs / slices,
        call_each!(refs, |g| g.call(CounterMsg::Get)),
        call_each!(many, |e| e.call(|r| EchoMsg::Ping(1, r), CALL)),
    )
    .await;
    println!(
        "calls/s, 64 in flight, 64 echoes  grains {many_calls_per_s:.0}   | actor calls {many_actor_calls_per_s:.0}  ({:.2}x)",
        many_calls_per_s / many_actor_calls_per_s.max(1.0)
    );
    // The same, with as many grains as echoes (one per node): what the grain layer costs
    // per call, apart from waking 64 activation processes where the echoes are 3.
    let mut per_node: Vec<Option<GrainRef<Counter>>> = vec![None; NODES.len()];
    for k in 0..1000 {
        if per_node.iter().all(Option::is_some) {
            break;
        }
        let g = grains.get::<Counter>(&format!("one-{k}")).unwrap();
        g.call(CounterMsg::Add(1)).await.expect("activation");
        let at = grains.cached(g.id()).expect("cached").pid.node;
        if let Some(slot) = (0..NODES.len()).find(|i| id(*i) == at) {
            per_node[slot].get_or_insert(g);
        }
    }
    let few: Vec<_> = per_node.into_iter().flatten().collect();
    assert_eq!(few.len(), NODES.len(), "no grain placed on some node");
    let few = Arc::new(few);
    let [
        (few_calls_per_s, few_traffic),
        (few_actor_calls_per_s, few_actor_traffic),
    ] = side_by_side(
        &node,
        64,
        slices,
        secs / slices,
        call_each!(few, |g| g.call(CounterMsg::Get)),
        call_each!(echoes, |e| e.call(|r| EchoMsg::Ping(1, r), CALL)),
    )
    .await;
    println!(
        "calls/s, 64 in flight, 3 grains   grains {few_calls_per_s:.0}   | actor calls {few_actor_calls_per_s:.0}  ({:.2}x)",
        few_calls_per_s / few_actor_calls_per_s.max(1.0)
    );
    println!(
        "  traffic of this member           {}   | {}",
        show_traffic("grains", few_traffic),
        show_traffic("actor calls", few_actor_traffic)
    );
    // A call costs one frame each way on both paths; the datagrams show how many calls
    // share a packet (the measuring member's cost is mostly per packet).
    println!(
        "  traffic of this member           {}   | {}",
        show_traffic("grains", grain_traffic),
        show_traffic("actor calls", actor_traffic)
    );

    // State writes.
    let g2 = grains.clone();
    let (local_writes_per_s, _) = throughput(32, secs, move |t, _| {
        let g = g2.get::<DurableCounter>(&format!("d-{t}")).unwrap();
        async move {
            g.call(CounterMsg::Add(1))
                .await
                .expect("call")
                .expect("saved");
        }
    })
    .await;
    let kv = KvStore::new(grains.clone());
    let (replicated_writes_per_s, _) = throughput(32, secs, move |t, i| {
        let kv = kv.clone();
        async move {
            kv.set(&format!("k-{t}-{}", i % 100), "v")
                .await
                .expect("replicated write");
        }
    })
    .await;
    println!(
        "state writes/s, 32 writers        LocalExclusive {local_writes_per_s:.0}   | Replicated {replicated_writes_per_s:.0}"
    );

    // Migration of the hot grain back and forth between two nodes.
    let mut migrations = Vec::new();
    for i in 0..if quick { 10 } else { 40 } {
        let at = grains.cached(hot.id()).expect("cached").pid.node;
        let target = (0..NODES.len())
            .map(id)
            .filter(|n| *n != at)
            .nth(i % 2)
            .expect("another node");
        let t = Instant::now();
        grains.migrate(hot.id(), target).await.expect("migration");
        migrations.push(us(t.elapsed()));
        hot.call(CounterMsg::Get).await.expect("after migration");
    }
    let (mig_p50, _) = p50_p99(migrations);
    println!(
        "migration                         p50 {:.1} ms",
        mig_p50 as f64 / 1e3
    );

    // Failover: kill the node with the most grains; time until all of them answer again.
    let victim = (0..NODES.len())
        .max_by_key(|i| {
            let node_id = id(*i);
            (0..n)
                .filter(|k| {
                    grains
                        .cached(&atoll_grain::GrainId::new("counter", format!("new-{k}")))
                        .is_some_and(|a| a.pid.node == node_id)
                })
                .count()
        })
        .expect("a node");
    let victim_id = id(victim);
    let lost: Vec<_> = (0..n)
        .map(|k| grains.get::<Counter>(&format!("new-{k}")).unwrap())
        .filter(|g| {
            grains
                .cached(g.id())
                .is_some_and(|a| a.pid.node == victim_id)
        })
        .collect();
    let mut events = node.member_events().expect("membership");
    let killed = Instant::now();
    let _ = children.0[victim].kill();
    let _ = children.0[victim].wait();
    let detect = tokio::spawn(async move {
        while let Some(e) = events.recv().await {
            if let MemberEvent::Unreachable(m) = e
                && m.node == victim_id
            {
                return killed.elapsed();
            }
        }
        Duration::MAX
    });
    let mut set = tokio::task::JoinSet::new();
    let lost_count = lost.len();
    for g in lost {
        set.spawn(async move {
            let until = Instant::now() + Duration::from_secs(60);
            loop {
                match g.call(CounterMsg::Get).await {
                    Ok(_) => return killed.elapsed(),
                    Err(e) => assert!(Instant::now() < until, "{} never answered: {e}", g.id()),
                }
            }
        });
    }
    let mut failover = Duration::ZERO;
    while let Some(t) = set.join_next().await {
        failover = failover.max(t.expect("failover task"));
    }
    let detection = detect.await.expect("detection");
    println!(
        "failover of {} grains             all answer after {:.0} ms | declared unreachable after {:.0} ms",
        lost_count,
        failover.as_secs_f64() * 1e3,
        detection.as_secs_f64() * 1e3
    );
    println!(
        "BENCH {{\"bench\":\"grains\",\"activation_p50_us\":{act_p50},\"activation_p99_us\":{act_p99},\"local_activation_p50_us\":{local_act_p50},\"local_activation_p99_us\":{local_act_p99},\"consistent_register_p50_us\":{reg_p50},\"call_p50_us\":{call_p50},\"call_p99_us\":{call_p99},\"actor_call_p50_us\":{actor_p50},\"actor_call_p99_us\":{actor_p99},\"calls_per_s\":{calls_per_s:.0},\"actor_calls_per_s\":{actor_calls_per_s:.0},\"few_calls_per_s\":{few_calls_per_s:.0},\"few_actor_calls_per_s\":{few_actor_calls_per_s:.0},\"many_calls_per_s\":{many_calls_per_s:.0},\"many_actor_calls_per_s\":{many_actor_calls_per_s:.0},\"local_writes_per_s\":{local_writes_per_s:.0},\"replicated_writes_per_s\":{replicated_writes_per_s:.0},\"migration_ms\":{:.1},\"failover_ms\":{:.0},\"detection_ms\":{:.0},\"failover_grains\":{},\"call_datagrams_in\":{:.2},\"actor_call_datagrams_in\":{:.2}}}",
        mig_p50 as f64 / 1e3,
        failover.as_secs_f64() * 1e3,
        detection.as_secs_f64() * 1e3,
        lost_count,
        grain_traffic[3],
        actor_traffic[3]
    );
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--node") {
        let config = PathBuf::from(args.get(i + 1).expect("--node CONFIG"));
        return match atoll_cli::node::run(&config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("node: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let quick = args.iter().any(|a| a == "--quick");
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("atoll-grains-bench-{nanos}"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let configs = write_configs(&dir);
    let mut children = Children(
        configs[..NODES.len()]
            .iter()
            .map(|c| start_node(c))
            .collect(),
    );
    let _ = NODE_PIDS.set(children.0.iter().map(Child::id).collect());
    println!(
        "grains: {} atoll nodes as processes on loopback (Raft voters, redb grain stores), measured from a member hosting none{}",
        NODES.len(),
        if quick { " (quick)" } else { "" }
    );
    let config = atoll_cli::config::NodeFile::load(&configs[NODES.len()])
        .and_then(|f| f.node_config())
        .expect("bench node config")
        .config;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let node = Node::start(config).expect("bench node");
        let grains = atoll_cli::grains::caller(&node);
        run(quick, node.clone(), grains, &mut children).await;
        node.shutdown(Duration::from_secs(1)).await;
    });
    drop(children);
    let _ = std::fs::remove_dir_all(&dir);
    ExitCode::SUCCESS
}
