//! The client side of a namespace test: the test binary re-run as a cluster member (see
//! [`super::Cluster::start_client`]). [`run`] joins the cluster, does the test's work until
//! a `stop` line on stdin, and each step is printed as a `W ...` line ([`record`]).

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use atoll_cli::config::NodeFile;
use atoll_cluster::Node;

/// Prints one step for the test to read.
pub fn record(line: String) {
    println!("W {line}");
}

/// The variant of a typed error and of the errors it wraps, as one word:
/// `Consensus(Unreachable { leader: .. })` is `Consensus::Unreachable`.
pub fn kind(e: &impl std::fmt::Debug) -> String {
    let text = format!("{e:?}");
    let mut parts = Vec::new();
    let mut rest = text.as_str();
    loop {
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let word = &rest[..end];
        if !word.starts_with(char::is_uppercase) {
            break;
        }
        parts.push(word);
        match rest[end..].strip_prefix('(') {
            Some(inner) => rest = inner,
            None => break,
        }
    }
    parts.join("::")
}

/// The work and the node configuration the test passed (`ATOLL_WORKLOAD`,
/// `ATOLL_WORKLOAD_CONFIG`), if this run is a client.
pub fn from_env() -> Option<(String, std::path::PathBuf)> {
    let work = std::env::var("ATOLL_WORKLOAD").ok()?;
    let config = std::env::var("ATOLL_WORKLOAD_CONFIG").ok()?;
    Some((work, config.into()))
}

/// Starts the node from `config` on a one-worker runtime, prints `ready NAME`, runs `work`
/// (given the node and the flag a `stop` line sets), prints `stopped`, and shuts the node
/// down once stdin closes.
pub fn run<F, Fut>(config: &Path, work: F)
where
    F: FnOnce(Node, Arc<AtomicBool>) -> Fut,
    Fut: Future<Output = ()>,
{
    let file = NodeFile::load(config).unwrap();
    let loaded = file.node_config().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (exit_tx, exit_rx) = tokio::sync::oneshot::channel::<()>();
    {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut line = String::new();
            while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {
                if line.trim() == "stop" {
                    stop.store(true, Ordering::SeqCst);
                }
                line.clear();
            }
            stop.store(true, Ordering::SeqCst);
            let _ = exit_tx.send(());
        });
    }
    rt.block_on(async move {
        let node = Node::start(loaded.config).unwrap();
        record(format!("ready {}", node.name()));
        work(node.clone(), stop).await;
        record("stopped".into());
        let _ = exit_rx.await;
        node.shutdown(Duration::from_secs(1)).await;
    });
}

/// Microseconds since the Unix epoch: the clock every process on this machine shares.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}
