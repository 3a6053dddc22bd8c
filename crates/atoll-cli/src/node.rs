//! `atoll node`: run a node until told to stop.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use atoll_cluster::{MemberEvent, Node};
use atoll_net::REVOCATION_CHECK_INTERVAL;
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::config::{LogFormat, NodeFile};
use crate::error::Error;

/// How long processes get to stop on shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How often a starting Raft voter is checked for having started.
const VOTER_POLL_INTERVAL: Duration = Duration::from_millis(20);
/// How long a Raft voter may take to start before a warning is logged.
const VOTER_START_WARNING: Duration = Duration::from_secs(10);

/// `atoll node --config FILE`: loads the configuration, runs the node on a runtime of
/// `threads` workers and returns after SIGINT or SIGTERM and an orderly shutdown.
pub fn run(config_path: &Path) -> Result<(), Error> {
    let file = NodeFile::load(config_path)?;
    let loaded = file.node_config()?;
    init_logging(&file);
    let runtime = runtime(file.threads)?;
    let result = runtime.block_on(serve(file, loaded));
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

/// The multi-threaded tokio runtime a node runs on, with `threads` workers.
///
/// Without tokio's LIFO slot: with it, a task woken by the one running runs right after
/// it. The QUIC drivers already queue themselves behind the tasks woken before them on any
/// multi-thread runtime (`atoll_net::bind`); without the slot the processes do too, so the
/// replies to a burst are written before the processes woken by them send again, and more
/// frames share a packet (0.17 datagrams per message against 0.31 with the slot, on two
/// workers; BENCHMARKS.md, cluster_fanout and grains).
pub(crate) fn runtime(threads: usize) -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .disable_lifo_slot()
        .worker_threads(threads)
        .thread_name("atoll-worker")
        .enable_all()
        .build()
        .map_err(|source| Error::Runtime {
            what: "async runtime",
            source,
        })
}

/// Logs to stderr: `log.filter` (or `RUST_LOG`, which wins) picks the lines, `log.format`
/// the form.
fn init_logging(file: &NodeFile) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&file.log_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match file.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

async fn serve(file: NodeFile, loaded: crate::config::Loaded) -> Result<(), Error> {
    // Handlers first: a signal that arrives once the ready line is out must be caught.
    let signals = |what| move |source| Error::Runtime { what, source };
    let mut sigterm = signal(SignalKind::terminate()).map_err(signals("SIGTERM handler"))?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(signals("SIGINT handler"))?;

    let mut config = loaded.config;
    // Grains need consensus for their activation claims (`grains = true` asks for it).
    let grain_dir = config
        .consensus
        .as_ref()
        .filter(|_| file.grains)
        .map(|c| c.data_dir.clone());
    if grain_dir.is_some()
        && let Some(m) = config.membership.as_mut()
        && !m
            .capabilities
            .iter()
            .any(|c| c == crate::grains::GRAINS_CAPABILITY)
    {
        m.capabilities
            .push(crate::grains::GRAINS_CAPABILITY.to_string());
    }
    let node = Node::start(config)?;
    // Taken at once, before the grain service opens its store, so no event is missed;
    // printed after the ready line.
    let member_events = node.member_events();
    atoll_cluster::builtin::install(&node);
    let grains = match &grain_dir {
        Some(dir) => Some(crate::grains::host(&node, dir, file.rebalance)?),
        None => None,
    };

    // Re-reads the revocation list when its file changes, so `atoll ca revoke` reaches a
    // running node; kept until the node stops.
    let _revocations = loaded
        .revoked
        .map(|(list, path)| list.watch(path, REVOCATION_CHECK_INTERVAL));
    // The library dials each configured peer until it answers and keeps it connected, with
    // backoff; checked as HOST:PORT when the file was loaded.
    for peer in &file.peers {
        match peer.parse() {
            Ok(peer) => node.keep_connected(peer),
            Err(e) => warn!("{e}"),
        }
    }
    let mut tasks = JoinSet::new();

    {
        let mut out = std::io::stdout().lock();
        let line = format!(
            "atoll node {} id={} listening on {}",
            node.name(),
            node.id(),
            node.local_addr()
        );
        if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
            warn!("cannot write to stdout: {e}");
        }
    }
    // Kept until the node stops: dropping it stops the HTTP service.
    let _http = match file.http {
        Some(addr) => {
            let (bound, task) = crate::http::serve(node.clone(), grains.clone(), addr).await?;
            print_line(&format!("http listening on {bound}"));
            Some(task)
        }
        None => None,
    };
    if let Some(events) = member_events {
        tasks.spawn(print_member_events(events));
    }
    if let Some(consensus) = &file.consensus {
        let voters = consensus.voters.len();
        if consensus.is_voter(node.id()) {
            tasks.spawn(announce_voter(
                node.clone(),
                voters,
                consensus.data_dir.clone(),
            ));
        } else {
            print_line(&format!("consensus member voters={voters}"));
        }
    }

    let which = tokio::select! {
        _ = sigterm.recv() => "SIGTERM",
        _ = sigint.recv() => "SIGINT",
    };
    info!(signal = which, "shutting down");
    tasks.shutdown().await;
    // The grace is for processes; the extra time is for closing connections.
    let stop = tokio::time::timeout(
        SHUTDOWN_GRACE + Duration::from_secs(5),
        node.shutdown(SHUTDOWN_GRACE),
    );
    tokio::select! {
        done = stop => match done {
            Ok(()) => info!("stopped"),
            Err(_) => warn!("shutdown did not finish in time; exiting anyway"),
        },
        _ = sigterm.recv() => warn!("second signal: exiting without waiting"),
        _ = sigint.recv() => warn!("second signal: exiting without waiting"),
    }
    Ok(())
}

/// Prints one line per membership event on stdout, flushed at once.
async fn print_member_events(mut events: tokio::sync::mpsc::UnboundedReceiver<MemberEvent>) {
    while let Some(event) = events.recv().await {
        print_line(&member_line(&event));
    }
}

/// Writes `line` to stdout and flushes it.
fn print_line(line: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
        warn!("cannot write to stdout: {e}");
    }
}

/// Waits for this node's Raft voter to run (its store open), then prints
/// `consensus voter raft_id=ID voters=N data=PATH`. A voter that cannot start is logged
/// by the node and never printed.
async fn announce_voter(node: Node, voters: usize, data_dir: PathBuf) {
    let started = tokio::time::Instant::now();
    let mut warned = false;
    loop {
        if let Some(status) = node.raft_status().await {
            print_line(&format!(
                "consensus voter raft_id={} voters={voters} data={}",
                status.id,
                data_dir.display()
            ));
            return;
        }
        if !warned && started.elapsed() > VOTER_START_WARNING {
            warn!(data = %data_dir.display(), "the raft voter has not started yet");
            warned = true;
        }
        tokio::time::sleep(VOTER_POLL_INTERVAL).await;
    }
}

/// The stdout line for a membership event:
///
/// ```text
/// member active NAME id=ID gen=GEN             (this node)
/// member joined NAME id=ID gen=GEN addr=ADDR
/// member suspect NAME id=ID gen=GEN
/// member recovered NAME id=ID gen=GEN
/// member unreachable NAME id=ID gen=GEN
/// member left NAME id=ID gen=GEN
/// member fenced NAME old_gen=OLD new_gen=NEW   (this node rejoined as a new generation)
/// ```
pub fn member_line(event: &MemberEvent) -> String {
    let plain = |what: &str, m: &atoll_cluster::MemberIdentity| {
        format!(
            "member {what} {} id={} gen={}",
            m.name(),
            m.node,
            m.generation
        )
    };
    match event {
        MemberEvent::Active(m) => plain("active", m),
        MemberEvent::Joined(m) => format!("{} addr={}", plain("joined", m), m.addr),
        MemberEvent::Suspect(m) => plain("suspect", m),
        MemberEvent::Recovered(m) => plain("recovered", m),
        MemberEvent::Unreachable(m) => plain("unreachable", m),
        MemberEvent::Left(m) => plain("left", m),
        MemberEvent::Fenced { old, new } => format!(
            "member fenced {} old_gen={} new_gen={}",
            new.name(),
            old.generation,
            new.generation
        ),
    }
}
