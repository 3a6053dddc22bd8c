//! One chaos run: the cluster up, the workload and the nemesis for the time asked, every
//! fault healed, the views snapshotted until they agree, the history checked and summed up.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::check::{self, Anomaly, Limits, Report};
use crate::cluster::{Cluster, NODES, SetupError, VOTERS};
use crate::history::{Declaration, Fault, History, Outcome, Request};
use crate::nemesis::{self, ALL};
use crate::rng::Rng;
use crate::summary;
use crate::workload::{self, ClientLink, Recorder};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Minutes of chaos (the workload runs throughout).
    pub minutes: f64,
    /// The seed of the nemesis and the workload.
    pub seed: u64,
    /// Where to keep the run's files; a fresh temporary directory if `None`.
    pub dir: Option<PathBuf>,
}

/// What a run found.
#[derive(Debug)]
pub struct RunResult {
    /// The recorded history.
    pub history: History,
    /// The checkers' findings (and processes that died on their own).
    pub report: Report,
    /// The summary table.
    pub summary: String,
    /// The `BENCH {...}` line.
    pub bench: String,
    /// The run's directory (logs, `history.json`).
    pub dir: PathBuf,
    /// Grain activations the nodes moved since they last started, at the end.
    pub grain_migrations: u64,
}

fn wait(what: &str, within: Duration, mut done: impl FnMut() -> bool) -> Result<(), SetupError> {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if done() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(SetupError::Timeout(within, what.to_string()))
}

/// Starts every node and waits until they run, the voters have a leader.
fn start_nodes(cluster: &mut Cluster) -> Result<(), SetupError> {
    let within = Duration::from_secs(60);
    cluster.start_node(1)?;
    cluster.wait_node_line(1, "member active", within, |l| {
        l.starts_with("member active n1 ")
    })?;
    for i in 2..=NODES {
        cluster.start_node(i)?;
    }
    for i in 1..=NODES {
        let me = format!("member active n{i} ");
        cluster.wait_node_line(i, "member active", within, |l| l.starts_with(&me))?;
    }
    for v in 1..=VOTERS {
        cluster.wait_node_line(v, "consensus voter", within, |l| {
            l.starts_with("consensus voter ")
        })?;
    }
    wait("a Raft leader", within, || cluster.leader().is_some())
}

/// Starts incarnation `incarnation` of client `i` and waits until its node runs.
fn start_client(
    cluster: &mut Cluster,
    rec: &Arc<Recorder>,
    i: usize,
    incarnation: u32,
) -> Result<Arc<ClientLink>, SetupError> {
    let (stdin, stdout) = cluster.start_client(i, incarnation)?;
    let link = Arc::new(ClientLink::new(i, incarnation, stdin, stdout, rec.clone()));
    Ok(link)
}

/// Starts the thread that drives `link` until `stop`, with the workload of `rng`.
fn drive(
    link: &Arc<ClientLink>,
    rec: &Arc<Recorder>,
    rng: Rng,
    stop: &Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let (link, rec, stop) = (link.clone(), rec.clone(), stop.clone());
    std::thread::spawn(move || link.drive(&rec, rng, &stop))
}

fn log(rec: &Recorder, what: &str) {
    println!("[{:>7.1}s] {what}", rec.now_ms() as f64 / 1000.0);
}

/// Runs the whole thing.
pub fn run(opts: &Options) -> Result<RunResult, SetupError> {
    let dir = opts.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("atoll-chaos-{}-{}", std::process::id(), opts.seed))
    });
    let mut cluster = Cluster::new(&dir)?;
    let rec = Recorder::new();
    log(
        &rec,
        &format!(
            "seed {}, {} min, files in {}",
            opts.seed,
            opts.minutes,
            dir.display()
        ),
    );
    start_nodes(&mut cluster)?;
    log(&rec, "5 nodes up (n1..n3 voters), a leader elected");
    let mut links = Vec::new();
    for i in 1..=NODES {
        links.push(start_client(&mut cluster, &rec, i, 0)?);
    }
    wait("clients ready", Duration::from_secs(60), || {
        links.iter().all(|l| l.is_ready())
    })?;
    log(&rec, "5 clients up, workload starts");

    let mut rng = Rng::new(opts.seed);
    let mut nemesis_rng = rng.fork(1);
    let stop = Arc::new(AtomicBool::new(false));
    let mut drivers: Vec<_> = links
        .iter()
        .map(|link| drive(link, &rec, rng.fork(10 + link.client as u64), &stop))
        .collect();

    let mut crashed: Vec<Anomaly> = Vec::new();
    let mut round = Vec::new();
    let deadline = Instant::now() + Duration::from_secs_f64(opts.minutes * 60.0);
    let sleep_until_deadline = |ms: u64| {
        let left = deadline.saturating_duration_since(Instant::now());
        std::thread::sleep(Duration::from_millis(ms).min(left));
    };
    loop {
        sleep_until_deadline(nemesis_rng.range(2000, 5000));
        if Instant::now() >= deadline {
            break;
        }
        // Every kind once per round, in an order the seed shuffles.
        if round.is_empty() {
            round = ALL.to_vec();
            for i in (1..round.len()).rev() {
                round.swap(i, nemesis_rng.range(0, i as u64 + 1) as usize);
            }
        }
        let kind = round.pop().expect("refilled above");
        let start_ms = rec.now_ms();
        let injected = nemesis::inject(kind, &mut cluster, &mut nemesis_rng, &rec, &links)?;
        let hold = nemesis_rng.range(3000, 8000);
        std::thread::sleep(Duration::from_millis(hold));
        if let Some(c) = nemesis::heal(&injected, &mut cluster)? {
            // A new process, a new node id: the killed one's operations stay open.
            let incarnation = links[c - 1].incarnation + 1;
            let link = start_client(&mut cluster, &rec, c, incarnation)?;
            wait("a restarted client ready", Duration::from_secs(60), || {
                link.is_ready()
            })?;
            let tag = 10 + c as u64 + 100 * u64::from(incarnation);
            drivers.push(drive(&link, &rec, rng.fork(tag), &stop));
            links[c - 1] = link;
        }
        let end_ms = rec.now_ms();
        log(
            &rec,
            &format!(
                "{}: {} ({} ms)",
                kind.label(),
                injected.detail,
                end_ms - start_ms
            ),
        );
        rec.history().faults.push(Fault {
            kind: kind.label().to_string(),
            detail: injected.detail,
            clients: injected.clients,
            paused_clients: injected.paused_clients,
            paused_nodes: injected.paused_nodes,
            start_ms,
            end_ms,
        });
        crashed.extend(exited(&mut cluster));
    }

    // Everything healed and running, then every operation in flight answered.
    stop.store(true, Ordering::SeqCst);
    rec.history().stopped_ms = rec.now_ms();
    cluster.heal()?;
    for i in 1..=NODES {
        if let Some(pid) = cluster.node_pid(i) {
            cluster.signal(pid, "-CONT");
        }
        if let Some(pid) = cluster.client_pid(i) {
            cluster.signal(pid, "-CONT");
        }
        if !cluster.node_running(i) {
            cluster.start_node(i)?;
        }
    }
    log(&rec, "chaos over: healed, waiting for operations in flight");
    let _ = wait("operations in flight", Duration::from_secs(60), || {
        rec.pending() == 0
    });
    for d in drivers {
        if d.is_finished() {
            let _ = d.join();
        }
    }
    let healed_ms = rec.now_ms();
    rec.history().healed_ms = healed_ms;

    // Snapshots until every client sees the same names and groups.
    let limits = Limits::default();
    let until = Instant::now() + Duration::from_millis(limits.converge_bound_ms + 5000);
    while Instant::now() < until {
        let round: Vec<_> = links
            .iter()
            .filter_map(|l| l.snapshot(Duration::from_secs(5)))
            .collect();
        let complete = round.len() == links.len();
        let agree = complete
            && round
                .windows(2)
                .all(|w| w[0].names == w[1].names && w[0].groups == w[1].groups);
        // Until the killed clients' names and members are gone too (or the time is up:
        // the checker then says which are left).
        let dead = agree && !check::converge::dead_owners(&rec.history(), &round[0]).is_empty();
        if complete {
            rec.history().snapshots.push(round);
        }
        if agree && !dead {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    // A final read of every key-value key, retried while its shard is still moving: the
    // reads are checked like any other.
    if let Some(reader) = links.first() {
        for key in workload::kv_keys() {
            let until = Instant::now() + Duration::from_millis(limits.op_bound_ms);
            while let Some(outcome) = reader.perform(&rec, Request::KvGet { key: key.clone() }) {
                if outcome.is_ok() || Instant::now() > until {
                    break;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
    // Every lock taken once more, retried while a dead client's grant or place in its queue
    // is still being released: no lock may stay blocked for good.
    if let Some(locker) = links.first() {
        for l in 0..workload::LOCKS {
            let until =
                Instant::now() + Duration::from_millis(limits.grace_ms + limits.op_bound_ms);
            let request = Request::Lock {
                name: format!("L{l}"),
                hold_ms: 50,
            };
            while let Some(outcome) = locker.perform(&rec, request.clone()) {
                let granted = match &outcome {
                    Outcome::Failed { kind } => kind.starts_with("Unlock::"),
                    _ => true,
                };
                if granted || Instant::now() > until {
                    break;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
    crashed.extend(exited(&mut cluster));
    log(&rec, "views snapshotted, keys read, locks taken; checking");

    let mut history = rec.finish();
    history.declarations = cluster
        .declarations()
        .into_iter()
        .map(|(at, by, client, incarnation)| Declaration {
            at_ms: rec.ms_at(at),
            by: format!("n{by}"),
            client,
            incarnation,
        })
        .collect();
    // Saved before checking, so a check that fails or runs long leaves it to read.
    let _ = std::fs::write(
        dir.join("history.json"),
        serde_json::to_string_pretty(&history).unwrap_or_default(),
    );
    let mut report = check::check_all(&history, &limits);
    report.anomalies.extend(crashed);
    let end_ms = rec.now_ms();
    let rows = summary::per_kind(&history, history.workload_end_ms().min(end_ms));
    let all_unavailable: Vec<u64> = rows
        .iter()
        .filter(|(k, _)| k.as_str() != "none")
        .flat_map(|(_, r)| r.unavailable_ms.iter().copied())
        .collect();
    let kinds: BTreeSet<&str> = history.faults.iter().map(|f| f.kind.as_str()).collect();
    // The fields in the order the report format gives them.
    let bench = format!(
        "{{\"bench\":\"chaos\",\"minutes\":{},\"ops\":{},\"faults\":{},\"fault_kinds\":{},\"anomalies\":{},\"unavailable_ms_p99\":{}}}",
        opts.minutes,
        history.ops.len(),
        history.faults.len(),
        kinds.len(),
        report.anomalies.len(),
        summary::percentile(&all_unavailable, 99),
    );
    let grain_migrations = cluster.grain_migrations();
    drop(cluster);
    Ok(RunResult {
        grain_migrations,
        summary: summary::render(&rows),
        bench: format!("BENCH {bench}"),
        history,
        report,
        dir,
    })
}

fn exited(cluster: &mut Cluster) -> Vec<Anomaly> {
    cluster
        .exited()
        .into_iter()
        .map(|(process, status)| Anomaly::Crashed { process, status })
        .collect()
}

/// The operations an anomaly names, as JSON lines: the history excerpt to read.
pub fn excerpt(history: &History, anomaly: &Anomaly) -> Vec<String> {
    let ids: Vec<u64> = match anomaly {
        Anomaly::NotLinearizable { ops, .. } => ops.clone(),
        Anomaly::PhantomRead { op, .. }
        | Anomaly::StaleWriteAccepted { op, .. }
        | Anomaly::LostWrite { op, .. }
        | Anomaly::NeverCompleted { op }
        | Anomaly::NotReleased { op, .. }
        | Anomaly::Unbounded { op, .. }
        | Anomaly::Untyped { op, .. } => vec![*op],
        Anomaly::DuplicateToken { a, b, .. } | Anomaly::OverlappingHolds { a, b, .. } => {
            vec![*a, *b]
        }
        Anomaly::TokenOrder { earlier, later, .. } => vec![*earlier, *later],
        Anomaly::NotConverged { .. } | Anomaly::Crashed { .. } | Anomaly::DeadOwner { .. } => {
            vec![]
        }
    };
    ids.iter()
        .filter_map(|id| history.ops.get((*id as usize).checked_sub(1)?))
        .map(|op| serde_json::to_string(op).unwrap_or_default())
        .collect()
}
