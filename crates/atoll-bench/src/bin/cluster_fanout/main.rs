//! Cross-node round trips: atoll next to a raw QUIC floor, over loopback, between separate
//! OS processes.
//!
//! Usage: `cargo run --release -p atoll-bench --bin cluster_fanout -- WORKERS SENDERS
//! [--quick] [--threads N[,N...]] [--payload BYTES] [--mixed]`.
//!
//! The hub (this process) starts WORKERS worker processes (this binary again, in worker
//! mode) for each system, connects to all of them, and measures:
//!
//! 1. unloaded round-trip time: one request in flight at a time, p50/p99;
//! 2. saturation: SENDERS sender tasks spread over the workers, each keeping one request in
//!    flight; messages/s counts both directions (a round trip is two messages), and MB/s
//!    the payload bytes they carry.
//!
//! atoll sends `EchoMsg::Bytes` calls (`--payload` bytes, 64 by default) to each worker's
//! echo process. The raw floor uses quinn with the same TLS configuration: each sender
//! keeps one bidirectional stream open and ping-pongs messages of the same size on it.
//! Every process runs a tokio runtime with `--threads` worker threads (default 1), stated
//! in the output; a list (`--threads 1,2`) measures each count in every round.
//!
//! `--mixed` measures instead 64-byte round trips alone and then while another sender keeps
//! 1 MiB round trips flowing to another echo on the same connection (head-of-line blocking).

mod mixed;
mod systems;

use std::io::{BufRead, BufReader, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use atoll_bench::{elapsed_ns, p50_p99};
use atoll_cluster::builtin;
use atoll_cluster::{Node, NodeConfig};
use atoll_net::{ClusterCa, NodeCertificate, NodeIdentity, RevocationList, TransportSettings};
use systems::{Client, RAW_MAX_PAYLOAD};

const CALL_TIMEOUT: Duration = Duration::from_secs(30);
const SYSTEMS: [&str; 2] = ["raw_quinn", "atoll"];

struct Args {
    workers: usize,
    senders: usize,
    quick: bool,
    threads: Vec<usize>,
    payload: usize,
    mixed: bool,
    /// Worker mode: `atoll` or `raw`, with the key directory and index.
    worker: Option<(String, PathBuf, usize)>,
    /// Run only this system (for profiling one side).
    only: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut positional = Vec::new();
    let mut args = Args {
        workers: 2,
        senders: 16,
        quick: false,
        threads: vec![1],
        payload: 64,
        mixed: false,
        worker: None,
        only: None,
    };
    let mut argv = std::env::args().skip(1);
    while let Some(arg) = argv.next() {
        match arg.as_str() {
            "--quick" => args.quick = true,
            "--mixed" => args.mixed = true,
            "--threads" => {
                args.threads = argv
                    .next()
                    .and_then(|list| {
                        list.split(',')
                            .map(|n| n.parse().ok().filter(|n| *n > 0))
                            .collect::<Option<Vec<usize>>>()
                    })
                    .ok_or("--threads needs positive numbers, comma-separated")?;
            }
            "--payload" => {
                args.payload = argv
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|n| (1..=RAW_MAX_PAYLOAD).contains(n))
                    .ok_or(format!("--payload needs 1 to {RAW_MAX_PAYLOAD} bytes"))?;
            }
            "--only" => args.only = Some(argv.next().ok_or("--only needs atoll or raw_quinn")?),
            "--worker" => {
                let system = argv.next().ok_or("--worker needs a system")?;
                let dir = argv.next().ok_or("--worker needs a directory")?;
                let index = argv
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or("--worker needs an index")?;
                args.worker = Some((system, dir.into(), index));
            }
            other if other.starts_with("--") => return Err(format!("unknown argument {other:?}")),
            other => positional.push(
                other
                    .parse::<usize>()
                    .map_err(|_| format!("expected a number, got {other:?}"))?,
            ),
        }
    }
    match positional.as_slice() {
        [] => {}
        [w, s] if *w > 0 && *s > 0 => (args.workers, args.senders) = (*w, *s),
        _ => {
            return Err(
                "usage: cluster_fanout WORKERS SENDERS [--quick] [--threads N[,N...]] \
                 [--payload BYTES] [--mixed]"
                    .into(),
            );
        }
    }
    Ok(args)
}

/// One thread means the current-thread runtime: the measuring code then runs on the same
/// thread as the I/O, with no hand-off between threads on each round trip.
fn runtime(threads: usize) -> tokio::runtime::Runtime {
    if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
    .expect("tokio runtime")
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match &args.worker {
        Some((system, dir, index)) => {
            runtime(args.threads[0]).block_on(worker(system, dir, *index))
        }
        None => hub(&args),
    }
}

// ---------- key material ----------

fn material(dir: &Path, name: &str) -> (NodeIdentity, NodeCertificate, atoll_net::TrustConfig) {
    let ca = ClusterCa::load(dir.join("ca")).expect("CA");
    let key = NodeIdentity::load(dir.join(format!("{name}.key"))).expect("key");
    let cert = NodeCertificate::load(dir.join(format!("{name}.pem"))).expect("cert");
    (key, cert, ca.trust(RevocationList::new()))
}

/// A bare quinn endpoint on loopback with the same TLS configuration and socket buffers
/// nodes use, on quinn's own tokio runtime.
fn raw_endpoint(
    key: &NodeIdentity,
    cert: &NodeCertificate,
    trust: &atoll_net::TrustConfig,
) -> quinn::Endpoint {
    let settings = TransportSettings::default();
    let (socket, _) =
        atoll_net::udp_socket("127.0.0.1:0".parse().unwrap(), &settings).expect("socket");
    let mut endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(atoll_net::server_config(key, cert, trust, &settings).expect("server config")),
        socket,
        quinn::default_runtime().expect("tokio runtime"),
    )
    .expect("endpoint");
    endpoint.set_default_client_config(
        atoll_net::client_config(key, cert, trust, &settings).expect("client config"),
    );
    endpoint
}

fn make_material(dir: &Path, names: &[String]) {
    let ca = ClusterCa::create("bench").expect("CA");
    ca.save(dir.join("ca")).expect("save CA");
    for name in names {
        let key = NodeIdentity::generate().expect("key");
        let cert = ca.issue(name, &key.public_key()).expect("cert");
        key.save(dir.join(format!("{name}.key"))).expect("save key");
        cert.save(dir.join(format!("{name}.pem")))
            .expect("save cert");
    }
}

// ---------- workers ----------

async fn worker(system: &str, dir: &Path, index: usize) -> ExitCode {
    let name = format!("worker{index}");
    let (key, cert, trust) = material(dir, &name);
    match system {
        "atoll" => {
            let config =
                NodeConfig::with_ca(&name, "127.0.0.1:0".parse().unwrap(), key, cert, trust);
            let node = Node::start(config).expect("worker node");
            builtin::install(&node);
            println!("READY {}", node.local_addr());
            wait_for_parent().await;
            node.shutdown(Duration::from_secs(1)).await;
        }
        _ => {
            let endpoint = raw_endpoint(&key, &cert, &trust);
            println!("READY {}", endpoint.local_addr().expect("addr"));
            tokio::select! {
                _ = systems::serve_raw(endpoint) => {}
                _ = wait_for_parent() => {}
            }
        }
    }
    ExitCode::SUCCESS
}

/// Returns when the hub closes our stdin (it finished, or died).
async fn wait_for_parent() {
    let _ = tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        while std::io::stdin()
            .read_line(&mut sink)
            .map(|n| n > 0)
            .unwrap_or(false)
        {}
    })
    .await;
}

struct Workers {
    children: Vec<Child>,
    addrs: Vec<SocketAddr>,
}

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.children {
            drop(c.stdin.take());
        }
        for c in &mut self.children {
            let _ = c.wait();
        }
    }
}

fn start_workers(system: &str, dir: &Path, count: usize, threads: usize) -> Workers {
    let exe = std::env::current_exe().expect("own path");
    let mut workers = Workers {
        children: Vec::new(),
        addrs: Vec::new(),
    };
    for i in 0..count {
        let mut child = Command::new(&exe)
            .args(["--threads", &threads.to_string(), "--worker", system])
            .arg(dir)
            .arg(i.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("worker process");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("worker output");
        let addr = line
            .strip_prefix("READY ")
            .and_then(|a| a.trim().parse().ok())
            .unwrap_or_else(|| panic!("worker said {line:?}"));
        workers.children.push(child);
        workers.addrs.push(addr);
    }
    workers
}

// ---------- hub ----------

#[derive(Debug, Clone, Copy)]
struct Result3 {
    p50_us: f64,
    p99_us: f64,
    msgs_per_s: f64,
    /// UDP datagrams the hub sent and received per message while saturated.
    datagrams_per_msg: f64,
}

impl Result3 {
    /// Payload megabytes (10^6 bytes) per second, both directions.
    fn mb_per_s(&self, payload: usize) -> f64 {
        self.msgs_per_s * payload as f64 / 1e6
    }
}

/// Rounds of one kind of figure, per system and thread count.
struct Rounds<T>(Vec<((&'static str, usize), Vec<T>)>);

impl<T> Rounds<T> {
    fn push(&mut self, system: &'static str, threads: usize, r: T) {
        match self.0.iter_mut().find(|(k, _)| *k == (system, threads)) {
            Some((_, v)) => v.push(r),
            None => self.0.push(((system, threads), vec![r])),
        }
    }

    fn get(&self, system: &str, threads: usize) -> Option<&[T]> {
        self.0
            .iter()
            .find(|((s, t), _)| *s == system && *t == threads)
            .map(|(_, v)| v.as_slice())
    }
}

fn hub(args: &Args) -> ExitCode {
    let dir = std::env::temp_dir().join(format!("atoll-fanout-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut names: Vec<String> = (0..args.workers).map(|i| format!("worker{i}")).collect();
    names.push("hub".into());
    make_material(&dir, &names);
    let (samples, saturate, rounds, budget) = if args.quick {
        (2_000, Duration::from_secs(2), 3, 64 << 20)
    } else {
        (20_000, Duration::from_secs(4), 5, 256 << 20)
    };
    // Large payloads take fewer unloaded samples, so a round stays within seconds.
    let samples = samples.min((budget / args.payload).max(50));
    let threads_list = args
        .threads
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    if args.mixed {
        println!(
            "cluster_fanout --mixed: 1 worker, {}-byte round trips alone and under 1 sender of {}-byte round trips on the same connection, {threads_list} runtime thread(s) per process, {}",
            mixed::SMALL,
            mixed::BULK,
            if args.quick { "quick" } else { "full" }
        );
    } else {
        println!(
            "cluster_fanout: {} workers, {} senders, {threads_list} runtime thread(s) per process, {}-byte payload, {}",
            args.workers,
            args.senders,
            args.payload,
            if args.quick { "quick" } else { "full" }
        );
    }

    let runs = |system: &str| args.only.as_deref().is_none_or(|o| o == system);
    // The systems (and thread counts) take turns, round after round, and each figure is
    // the median over the rounds: a shared machine's noise then hits all alike.
    let mut plain = Rounds(Vec::new());
    let mut mixed_rounds = Rounds(Vec::new());
    for round in 1..=rounds {
        for &threads in &args.threads {
            let rt = runtime(threads);
            for system in SYSTEMS.into_iter().filter(|s| runs(s)) {
                let worker_system = if system == "atoll" { "atoll" } else { "raw" };
                let workers = if args.mixed { 1 } else { args.workers };
                rt.block_on(async {
                    let workers = start_workers(worker_system, &dir, workers, threads);
                    let client = Client::connect(system, &dir, &workers.addrs).await;
                    let label = format!("{system} #{round}");
                    if args.mixed {
                        let r = mixed::measure(&client, 1, saturate).await;
                        mixed::report(&label, &r, threads);
                        mixed_rounds.push(system, threads, r);
                    } else {
                        let r =
                            measure(&client, args.senders, samples, saturate, args.payload).await;
                        report(&label, r, threads, args.payload);
                        plain.push(system, threads, r);
                    }
                    let _ = std::io::stdout().flush();
                    client.close().await;
                });
            }
        }
    }
    println!("medians over {rounds} round(s):");
    let mut bench_lines = Vec::new();
    for &threads in &args.threads {
        if args.mixed {
            let atoll = mixed_rounds.get("atoll", threads).map(mixed::median);
            let raw = mixed_rounds.get("raw_quinn", threads).map(mixed::median);
            for (system, r) in [("atoll", &atoll), ("raw_quinn", &raw)] {
                if let Some(r) = r {
                    mixed::report(system, r, threads);
                    bench_lines.push(mixed::bench_line(system, r, threads));
                }
            }
            if let (Some(a), Some(r)) = (atoll, raw) {
                println!(
                    "atoll / raw quinn ({threads} thread(s)): small rtt under bulk p50 {:.2}x, p99 {:.2}x, bulk MB/s {:.2}x",
                    a.small_p50_us / r.small_p50_us,
                    a.small_p99_us / r.small_p99_us,
                    a.bulk_mb_per_s / r.bulk_mb_per_s
                );
            }
            continue;
        }
        let atoll = plain.get("atoll", threads).map(median);
        let raw = plain.get("raw_quinn", threads).map(median);
        for (system, r) in [("atoll", atoll), ("raw_quinn", raw)] {
            if let Some(r) = r {
                report(system, r, threads, args.payload);
                bench_lines.push(format!(
                    "BENCH {{\"bench\":\"cluster_fanout\",\"system\":\"{system}\",\"rtt_p50_us\":{:.1},\"rtt_p99_us\":{:.1},\"msgs_per_s\":{:.0},\"runtime_threads\":{threads},\"mb_per_s\":{:.1},\"payload_bytes\":{},\"datagrams_per_msg\":{:.2}}}",
                    r.p50_us,
                    r.p99_us,
                    r.msgs_per_s,
                    r.mb_per_s(args.payload),
                    args.payload,
                    r.datagrams_per_msg
                ));
            }
        }
        if let (Some(atoll), Some(raw)) = (atoll, raw) {
            println!(
                "atoll / raw quinn ({threads} thread(s)): rtt p50 {:.2}x, rtt p99 {:.2}x, msgs/s {:.2}x",
                atoll.p50_us / raw.p50_us,
                atoll.p99_us / raw.p99_us,
                atoll.msgs_per_s / raw.msgs_per_s
            );
        }
    }
    if !args.mixed
        && let [first, .., last] = args.threads.as_slice()
    {
        for system in SYSTEMS {
            if let (Some(a), Some(b)) = (plain.get(system, *first), plain.get(system, *last)) {
                println!(
                    "{system}: {last} thread(s) / {first} thread(s): msgs/s {:.2}x",
                    median(b).msgs_per_s / median(a).msgs_per_s
                );
            }
        }
    }
    for line in bench_lines {
        println!("{line}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    ExitCode::SUCCESS
}

/// Each figure's median over the rounds.
fn median(rounds: &[Result3]) -> Result3 {
    let pick = |f: fn(&Result3) -> f64| {
        let mut v: Vec<f64> = rounds.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Result3 {
        p50_us: pick(|r| r.p50_us),
        p99_us: pick(|r| r.p99_us),
        msgs_per_s: pick(|r| r.msgs_per_s),
        datagrams_per_msg: pick(|r| r.datagrams_per_msg),
    }
}

fn report(system: &str, r: Result3, threads: usize, payload: usize) {
    println!(
        "{system:<13} unloaded rtt p50 {:>8.1} us  p99 {:>8.1} us   saturated {:>10.0} msgs/s {:>8.1} MB/s {:>5.2} datagrams/msg   ({threads} thread(s))",
        r.p50_us,
        r.p99_us,
        r.msgs_per_s,
        r.mb_per_s(payload),
        r.datagrams_per_msg
    );
    let _ = std::io::stdout().flush();
}

/// Measures one system: round trips of `payload` bytes, one at a time and then from
/// `senders` senders at once.
async fn measure(
    client: &Client,
    senders: usize,
    samples: usize,
    saturate: Duration,
    payload: usize,
) -> Result3 {
    // Phase 1: one in flight.
    let mut one = client.tripper(0, payload, false).await;
    for _ in 0..samples / 10 {
        one().await;
    }
    let mut rtts = Vec::with_capacity(samples);
    for _ in 0..samples {
        let start = Instant::now();
        one().await;
        rtts.push(elapsed_ns(start));
    }
    let (p50, p99) = p50_p99(rtts);

    // Phase 2: every sender keeps one in flight.
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for s in 0..senders {
        let mut trip = client.tripper(s, payload, false).await;
        let (done, stop) = (done.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                trip().await;
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(saturate / 5).await;
    let before = done.load(Ordering::Relaxed);
    let datagrams_before = client.datagrams().await;
    let start = Instant::now();
    tokio::time::sleep(saturate).await;
    let trips = done.load(Ordering::Relaxed) - before;
    let elapsed = start.elapsed();
    let datagrams = client.datagrams().await - datagrams_before;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    Result3 {
        p50_us: p50 as f64 / 1000.0,
        p99_us: p99 as f64 / 1000.0,
        msgs_per_s: 2.0 * trips as f64 / elapsed.as_secs_f64(),
        datagrams_per_msg: datagrams as f64 / (2 * trips).max(1) as f64,
    }
}
