//! Cross-node round trips: atoll next to a raw QUIC floor, over loopback, between separate
//! OS processes.
//!
//! Usage: `cargo run --release -p atoll-bench --bin cluster_fanout -- WORKERS SENDERS
//! [--quick] [--threads N]`.
//!
//! The hub (this process) starts WORKERS worker processes (this binary again, in worker
//! mode) for each system, connects to all of them, and measures:
//!
//! 1. unloaded round-trip time: one request in flight at a time, p50/p99;
//! 2. saturation: SENDERS sender tasks spread over the workers, each keeping one request in
//!    flight; messages/s counts both directions (a round trip is two messages).
//!
//! atoll sends `EchoMsg::Bytes` (64 bytes) calls to each worker's echo process. The raw
//! floor uses quinn with the same TLS configuration: each sender keeps one bidirectional
//! stream open and ping-pongs 64-byte messages on it. Every process runs a tokio runtime
//! with `--threads` worker threads (default 1), stated in the output.

use std::io::{BufRead, BufReader, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use atoll::ActorRef;
use atoll_bench::{elapsed_ns, p50_p99};
use atoll_cluster::builtin::{self, Echo, EchoMsg};
use atoll_cluster::{Node, NodeConfig};
use atoll_net::{ClusterCa, NodeCertificate, NodeIdentity, RevocationList, TransportSettings};
use tokio::io::AsyncWriteExt;

const PAYLOAD: usize = 64;
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

struct Args {
    workers: usize,
    senders: usize,
    quick: bool,
    threads: usize,
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
        threads: 1,
        worker: None,
        only: None,
    };
    let mut argv = std::env::args().skip(1);
    while let Some(arg) = argv.next() {
        match arg.as_str() {
            "--quick" => args.quick = true,
            "--threads" => {
                args.threads = argv
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|n| *n > 0)
                    .ok_or("--threads needs a positive number")?;
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
        _ => return Err("usage: cluster_fanout WORKERS SENDERS [--quick] [--threads N]".into()),
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    // One thread means the current-thread runtime: the measuring code then runs on the
    // same thread as the I/O, with no hand-off between threads on each round trip.
    let rt = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    }
    .expect("tokio runtime");
    match &args.worker {
        Some((system, dir, index)) => rt.block_on(worker(system, dir, *index)),
        None => rt.block_on(hub(&args)),
    }
}

// ---------- key material ----------

fn material(dir: &Path, name: &str) -> (NodeIdentity, NodeCertificate, atoll_net::TrustConfig) {
    let ca = ClusterCa::load(dir.join("ca")).expect("CA");
    let key = NodeIdentity::load(dir.join(format!("{name}.key"))).expect("key");
    let cert = NodeCertificate::load(dir.join(format!("{name}.pem"))).expect("cert");
    (key, cert, ca.trust(RevocationList::new()))
}

/// A bare quinn endpoint on loopback with the same TLS configuration nodes use.
fn raw_endpoint(
    key: &NodeIdentity,
    cert: &NodeCertificate,
    trust: &atoll_net::TrustConfig,
) -> quinn::Endpoint {
    let settings = TransportSettings::default();
    atoll_net::bind(
        "127.0.0.1:0".parse().unwrap(),
        atoll_net::server_config(key, cert, trust, &settings).expect("server config"),
        atoll_net::client_config(key, cert, trust, &settings).expect("client config"),
    )
    .expect("endpoint")
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
            let serve = async {
                while let Some(incoming) = endpoint.accept().await {
                    tokio::spawn(async move {
                        let Ok(conn) = incoming.await else { return };
                        while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                            tokio::spawn(async move {
                                let mut buf = [0u8; PAYLOAD];
                                while recv.read_exact(&mut buf).await.is_ok() {
                                    if send.write_all(&buf).await.is_err() {
                                        break;
                                    }
                                }
                            });
                        }
                    });
                }
            };
            tokio::select! {
                _ = serve => {}
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
}

async fn hub(args: &Args) -> ExitCode {
    let dir = std::env::temp_dir().join(format!("atoll-fanout-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut names: Vec<String> = (0..args.workers).map(|i| format!("worker{i}")).collect();
    names.push("hub".into());
    make_material(&dir, &names);
    let (samples, saturate, rounds) = if args.quick {
        (2_000, Duration::from_secs(2), 3)
    } else {
        (20_000, Duration::from_secs(4), 5)
    };
    println!(
        "cluster_fanout: {} workers, {} senders, {} runtime thread(s) per process, {}-byte payload, {}",
        args.workers,
        args.senders,
        args.threads,
        PAYLOAD,
        if args.quick { "quick" } else { "full" }
    );

    let runs = |system: &str| args.only.as_deref().is_none_or(|o| o == system);
    // The systems take turns, round after round, and each figure is the median over the
    // rounds: a shared machine's noise then hits both alike.
    let mut raw_rounds = Vec::new();
    let mut atoll_rounds = Vec::new();
    for round in 1..=rounds {
        if runs("raw_quinn") {
            let workers = start_workers("raw", &dir, args.workers, args.threads);
            let r = raw_quinn(&dir, &workers.addrs, args.senders, samples, saturate).await;
            report(&format!("raw_quinn #{round}"), r, args.threads);
            raw_rounds.push(r);
        }
        if runs("atoll") {
            let workers = start_workers("atoll", &dir, args.workers, args.threads);
            let r = atoll_system(&dir, &workers.addrs, args.senders, samples, saturate).await;
            report(&format!("atoll #{round}"), r, args.threads);
            atoll_rounds.push(r);
        }
    }
    let mut results = Vec::new();
    if !atoll_rounds.is_empty() {
        results.push(("atoll", median(&atoll_rounds)));
    }
    if !raw_rounds.is_empty() {
        results.push(("raw_quinn", median(&raw_rounds)));
    }
    println!("medians over {rounds} round(s):");
    for (system, r) in &results {
        report(system, *r, args.threads);
    }
    if let [("atoll", atoll), ("raw_quinn", raw)] = results.as_slice() {
        println!(
            "atoll / raw quinn: rtt p50 {:.2}x, rtt p99 {:.2}x, msgs/s {:.2}x",
            atoll.p50_us / raw.p50_us,
            atoll.p99_us / raw.p99_us,
            atoll.msgs_per_s / raw.msgs_per_s
        );
    }
    for (system, r) in results {
        println!(
            "BENCH {{\"bench\":\"cluster_fanout\",\"system\":\"{system}\",\"rtt_p50_us\":{:.1},\"rtt_p99_us\":{:.1},\"msgs_per_s\":{:.0},\"runtime_threads\":{}}}",
            r.p50_us, r.p99_us, r.msgs_per_s, args.threads
        );
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
    }
}

fn report(system: &str, r: Result3, threads: usize) {
    println!(
        "{system:<13} unloaded rtt p50 {:>7.1} us  p99 {:>7.1} us   saturated {:>10.0} msgs/s   ({threads} thread(s))",
        r.p50_us, r.p99_us, r.msgs_per_s
    );
    let _ = std::io::stdout().flush();
}

/// Measures a system given a round-trip function per sender.
async fn measure<F, Fut>(senders: usize, samples: usize, saturate: Duration, make: F) -> Result3
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Box<dyn FnMut() -> RoundTrip + Send>>,
{
    // Phase 1: one in flight.
    let mut one = make(0).await;
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
        let mut trip = make(s).await;
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
    let start = Instant::now();
    tokio::time::sleep(saturate).await;
    let trips = done.load(Ordering::Relaxed) - before;
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    Result3 {
        p50_us: p50 as f64 / 1000.0,
        p99_us: p99 as f64 / 1000.0,
        msgs_per_s: 2.0 * trips as f64 / elapsed.as_secs_f64(),
    }
}

type RoundTrip = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

async fn atoll_system(
    dir: &Path,
    addrs: &[SocketAddr],
    senders: usize,
    samples: usize,
    saturate: Duration,
) -> Result3 {
    let (key, cert, trust) = material(dir, "hub");
    let node = Node::start(NodeConfig::with_ca(
        "hub",
        "127.0.0.1:0".parse().unwrap(),
        key,
        cert,
        trust,
    ))
    .expect("hub node");
    let mut echoes: Vec<ActorRef<Echo>> = Vec::new();
    for addr in addrs {
        let remote = node.connect(*addr).await.expect("connect to worker");
        let pid = remote.spawn("echo", &()).await.expect("spawn echo");
        echoes.push(node.actor_ref::<Echo>(pid).expect("ref"));
    }
    let echoes = Arc::new(echoes);
    let result = measure(senders, samples, saturate, |s| {
        let echo = echoes[s % echoes.len()].clone();
        async move {
            Box::new(move || {
                let echo = echo.clone();
                Box::pin(async move {
                    let payload = vec![0u8; PAYLOAD];
                    let back = echo
                        .call(|r| EchoMsg::Bytes(payload, r), CALL_TIMEOUT)
                        .await
                        .expect("echo answers");
                    debug_assert_eq!(back.0.len(), PAYLOAD);
                }) as RoundTrip
            }) as Box<dyn FnMut() -> RoundTrip + Send>
        }
    })
    .await;
    node.shutdown(Duration::from_secs(1)).await;
    result
}

async fn raw_quinn(
    dir: &Path,
    addrs: &[SocketAddr],
    senders: usize,
    samples: usize,
    saturate: Duration,
) -> Result3 {
    let (key, cert, trust) = material(dir, "hub");
    let endpoint = raw_endpoint(&key, &cert, &trust);
    let mut conns = Vec::new();
    for addr in addrs {
        let conn = atoll_net::connect(&endpoint, *addr, None)
            .expect("connect")
            .await
            .expect("handshake");
        conns.push(conn);
    }
    let conns = Arc::new(conns);
    let result = measure(senders, samples, saturate, |s| {
        let conn = conns[s % conns.len()].clone();
        async move {
            let (send, recv) = conn.open_bi().await.expect("stream");
            let stream = Arc::new(tokio::sync::Mutex::new((send, recv)));
            Box::new(move || {
                let stream = stream.clone();
                Box::pin(async move {
                    let mut guard = stream.lock().await;
                    let (send, recv) = &mut *guard;
                    let mut buf = [0u8; PAYLOAD];
                    send.write_all(&buf).await.expect("write");
                    send.flush().await.expect("flush");
                    recv.read_exact(&mut buf).await.expect("read");
                }) as RoundTrip
            }) as Box<dyn FnMut() -> RoundTrip + Send>
        }
    })
    .await;
    endpoint.close(quinn::VarInt::from_u32(0), b"done");
    result
}
