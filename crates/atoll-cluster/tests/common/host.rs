//! A node on a tokio runtime of its own, so a test can kill one node's runtime (and with it
//! every task and the endpoint driver) without a word to its peers; and the helpers the
//! multi-node tests share.

use std::future::Future;
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use atoll_cluster::{Node, NodeConfig, StartError, SwimConfig};
use atoll_core::Pid;

use super::{DEADLINE, Probe, ProbeMsg};

/// Membership timings short enough for tests, long enough for a loaded 2-core machine.
pub fn fast_swim() -> SwimConfig {
    SwimConfig {
        probe_interval: Duration::from_millis(300),
        ping_timeout: Duration::from_millis(150),
        suspect_timeout: Duration::from_millis(1500),
        rejoin_interval: Duration::from_millis(500),
        ..SwimConfig::default()
    }
}

/// The multi-node tests start several nodes each and measure timings: one at a time keeps
/// them from starving each other on a small machine.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A loopback address with a free UDP port (for nodes whose addresses must be known before
/// they start).
pub fn free_addr() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap()
}

/// Polls `cond` from a plain thread until it holds, failing after [`DEADLINE`].
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < until, "not within {DEADLINE:?}: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until every host resolves `name` to `expected`.
pub fn everywhere(hosts: &[Host], name: &str, expected: Option<Pid>) {
    wait_until(
        &format!("{name} resolves to {expected:?} on every node"),
        || hosts.iter().all(|h| h.node().whereis(name) == expected),
    );
}

/// One node on a runtime of its own.
pub struct Host {
    rt: Option<tokio::runtime::Runtime>,
    node: Option<Node>,
}

impl Host {
    /// Starts a node on a fresh one-worker runtime. A node restarted on its predecessor's
    /// address (or a reserved free port) may find the old socket held a moment: it retries.
    pub fn start(config: NodeConfig) -> Host {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let until = Instant::now() + DEADLINE;
        let node = loop {
            let started = {
                let _in = rt.enter();
                Node::start(config.clone())
            };
            match started {
                Ok(node) => break node,
                Err(StartError::Bind { .. }) if Instant::now() < until => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => panic!("node did not start: {e}"),
            }
        };
        Host {
            rt: Some(rt),
            node: Some(node),
        }
    }

    /// The running node.
    pub fn node(&self) -> &Node {
        self.node.as_ref().expect("node is running")
    }

    /// The node's name.
    pub fn name(&self) -> String {
        self.node().name().to_string()
    }

    /// The node's Raft status, if it runs consensus.
    pub fn status(&self) -> Option<atoll_cluster::RaftStatus> {
        self.run(|n| async move { n.raft_status().await })
    }

    /// The node's runtime.
    pub fn rt(&self) -> &tokio::runtime::Runtime {
        self.rt.as_ref().expect("node is running")
    }

    /// Runs `f` inside this node's runtime (sends may open connections on it).
    pub fn within<R>(&self, f: impl FnOnce(&Node) -> R) -> R {
        let _in = self.rt().enter();
        f(self.node())
    }

    /// Runs `f` on this node's runtime and waits for it.
    pub fn run<F, Fut, R>(&self, f: F) -> R
    where
        F: FnOnce(Node) -> Fut,
        Fut: Future<Output = R> + Send + 'static,
        R: Send + 'static,
    {
        let rt = self.rt();
        rt.block_on(rt.spawn(f(self.node().clone())))
            .expect("task panicked")
    }

    /// Starts `f` on this node's runtime.
    pub fn spawn<F, Fut, R>(&self, f: F) -> tokio::task::JoinHandle<R>
    where
        F: FnOnce(Node) -> Fut,
        Fut: Future<Output = R> + Send + 'static,
        R: Send + 'static,
    {
        self.rt().spawn(f(self.node().clone()))
    }

    /// Waits for a task started with [`spawn`](Self::spawn).
    pub fn join<R>(&self, handle: tokio::task::JoinHandle<R>) -> R {
        self.rt().block_on(handle).expect("task panicked")
    }

    /// A probe process on this node (what it sees is not needed: it ignores a closed
    /// channel).
    pub fn probe(&self) -> Pid {
        let (probe, rx) = self.within(super::probe);
        drop(rx);
        probe.pid()
    }

    /// Makes a probe of this node exit.
    pub fn end(&self, pid: Pid) {
        self.within(|node| {
            let probe = node.actor_ref::<Probe>(pid).unwrap();
            probe.send(ProbeMsg::Fail("done".into())).unwrap();
        });
    }

    /// Stops the node gracefully: it leaves the membership and closes its stores.
    pub fn stop(mut self) {
        let node = self.node.take().unwrap();
        let rt = self.rt.take().unwrap();
        rt.block_on(node.shutdown(Duration::from_secs(1)));
        drop(node);
        rt.shutdown_timeout(Duration::from_secs(1));
    }

    /// Kills the node without a word: its runtime, with every task and the endpoint driver,
    /// is dropped in the background.
    pub fn kill(mut self) {
        let rt = self.rt.take().unwrap();
        rt.shutdown_background();
        drop(self.node.take());
    }

    /// Kills the node without a word, waiting up to a second for its tasks to drop so that
    /// its files (the Raft store) are free to open again.
    pub fn kill_and_release(mut self) {
        let rt = self.rt.take().unwrap();
        rt.shutdown_timeout(Duration::from_secs(1));
        drop(self.node.take());
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}
