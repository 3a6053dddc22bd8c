//! The three voters of `names --names N --members M`, each a separate OS process: this
//! binary started again as `names --scale-voter DIR INDEX PUSH ADDRS`, one voter node on
//! its own 2-worker runtime, answering one request line on stdin with one line on stdout.
//!
//! The driving process keeps the members (and the clock); the registrations at the
//! leader's node are made inside the leader's process, so what the figures measure is the
//! node API there, as before, without the members and the other voters sharing its
//! runtime and allocator.
//!
//! Requests (one line each; names are `PREFIX-NNNNNNNN`, `N` from `FIRST` on):
//! - `leader`: `1` if this voter leads, else `0`;
//! - `index`: the registry index it resolves names from;
//! - `feed`: bytes and snapshots it pushed to members so far, space-separated;
//! - `register PREFIX FIRST COUNT IN_FLIGHT`: registers `COUNT` names with `IN_FLIGHT` at
//!   once, answers how many succeeded;
//! - `unregister PREFIX FIRST COUNT`: unregisters them, 64 at once, answers `0`;
//! - `one NAME`: registers `NAME`, answers `1` once it returned successfully, else `0`;
//! - `quit`: shuts the node down, answers `0` and exits.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atoll::net::{ClusterCa, NodeIdentity, RevocationList};
use atoll::{ConsensusConfig, Node, NodeConfig, RegistryPush};
use atoll_core::{NodeId, Pid, Scope};
use atoll_raft::Role;

use super::Holder;

/// The first argument of a voter process.
pub const FLAG: &str = "--scale-voter";

fn key_path(dir: &Path, index: usize) -> PathBuf {
    dir.join(format!("v{index}.key"))
}

fn push_name(push: RegistryPush) -> &'static str {
    match push {
        RegistryPush::Deltas => "deltas",
        RegistryPush::Snapshots => "snapshots",
    }
}

/// One voter process, spoken to over its stdin and stdout.
struct VoterProcess {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl VoterProcess {
    fn ask(&mut self, request: &str) -> String {
        writeln!(self.stdin, "{request}").expect("the voter process reads its requests");
        self.stdin
            .flush()
            .expect("the voter process reads its requests");
        let mut line = String::new();
        let read = self.stdout.read_line(&mut line).expect("the voter answers");
        assert!(read > 0, "voter process {} exited", self.child.id());
        line.trim_end().to_string()
    }
}

impl Drop for VoterProcess {
    fn drop(&mut self) {
        // After `quit` it is gone already; otherwise (a panic in the driver) make sure.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The three voter processes of one cluster.
pub struct Voters {
    procs: Vec<Arc<Mutex<VoterProcess>>>,
    /// Each voter's node id and address, as the members are configured with them.
    pub ids: Vec<(NodeId, SocketAddr)>,
    /// The OS process ids.
    pub pids: Vec<u32>,
}

impl Voters {
    /// Starts three voter processes with their keys and the CA in `dir`, and waits until
    /// each has its node listening.
    pub fn spawn(dir: &Path, ca: &ClusterCa, push: RegistryPush) -> Voters {
        std::fs::create_dir_all(dir).expect("voter directory");
        ca.save(dir.join("ca")).expect("CA saved");
        let mut ids = Vec::new();
        for i in 0..3 {
            let key = NodeIdentity::generate().expect("key");
            key.save(key_path(dir, i)).expect("key saved");
            let addr = std::net::UdpSocket::bind("127.0.0.1:0")
                .and_then(|s| s.local_addr())
                .expect("a free port");
            ids.push((key.node_id(), addr));
        }
        let addrs: Vec<String> = ids.iter().map(|(_, a)| a.to_string()).collect();
        let exe = std::env::current_exe().expect("this binary");
        let mut procs = Vec::new();
        let mut pids = Vec::new();
        for i in 0..3 {
            let mut child = Command::new(&exe)
                .arg(FLAG)
                .arg(dir)
                .arg(i.to_string())
                .arg(push_name(push))
                .arg(addrs.join(","))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("a voter process starts");
            let stdin = child.stdin.take().expect("piped stdin");
            let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
            pids.push(child.id());
            let mut p = VoterProcess {
                child,
                stdin,
                stdout,
            };
            let mut ready = String::new();
            p.stdout.read_line(&mut ready).expect("the voter starts");
            assert_eq!(ready.trim_end(), "ready", "voter process {i} did not start");
            procs.push(Arc::new(Mutex::new(p)));
        }
        Voters { procs, ids, pids }
    }

    /// Sends `request` to voter `i` and returns its answer (off the async workers: the
    /// members share them).
    pub async fn ask(&self, i: usize, request: String) -> String {
        let p = self.procs[i].clone();
        tokio::task::spawn_blocking(move || {
            p.lock().unwrap_or_else(|e| e.into_inner()).ask(&request)
        })
        .await
        .expect("the request completes")
    }

    /// Asks voter `i` for a number.
    pub async fn number(&self, i: usize, request: String) -> u64 {
        let answer = self.ask(i, request).await;
        answer
            .split(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("voter {i} answered {answer:?}"))
    }

    /// Bytes and snapshots all voters pushed to members so far.
    pub async fn pushed(&self) -> (u64, u64) {
        let mut sum = (0, 0);
        for i in 0..self.procs.len() {
            let answer = self.ask(i, "feed".into()).await;
            let mut parts = answer.split(' ').map(|n| n.parse::<u64>().unwrap_or(0));
            sum.0 += parts.next().unwrap_or(0);
            sum.1 += parts.next().unwrap_or(0);
        }
        sum
    }

    /// Shuts every voter down and waits for its process to exit.
    pub async fn quit(self) {
        for i in 0..self.procs.len() {
            let _ = self.ask(i, "quit".into()).await;
        }
        for p in self.procs {
            let mut p = p.lock().unwrap_or_else(|e| e.into_inner());
            let _ = p.child.wait();
        }
    }
}

/// Runs this process as voter `INDEX` (the arguments after [`FLAG`]) until `quit`.
pub fn voter_main(args: &[String]) {
    let [dir, index, push, addrs] = args else {
        panic!("{FLAG} DIR INDEX PUSH ADDRS");
    };
    let dir = PathBuf::from(dir);
    let index: usize = index.parse().expect("a voter index");
    let push = match push.as_str() {
        "snapshots" => RegistryPush::Snapshots,
        _ => RegistryPush::Deltas,
    };
    let addrs: Vec<SocketAddr> = addrs
        .split(',')
        .map(|a| a.parse().expect("an address"))
        .collect();
    let ca = ClusterCa::load(dir.join("ca")).expect("the CA");
    let mut keys: Vec<NodeIdentity> = (0..addrs.len())
        .map(|i| NodeIdentity::load(key_path(&dir, i)).expect("a voter key"))
        .collect();
    let voters: Vec<(NodeId, SocketAddr)> = keys
        .iter()
        .zip(&addrs)
        .map(|(k, a)| (k.node_id(), *a))
        .collect();
    let key = keys.swap_remove(index);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let name = format!("v{index}");
    let cert = ca.issue(&name, &key.public_key()).expect("certificate");
    let mut consensus = ConsensusConfig::new(voters, dir.join(&name));
    consensus.push = push;
    let config = NodeConfig::with_ca(
        &name,
        addrs[index],
        key,
        cert,
        ca.trust(RevocationList::new()),
    )
    .with_consensus(consensus);
    let (node, owner) = rt.block_on(async {
        let node = Node::start(config).expect("node starts");
        let owner = node.runtime().spawn(Holder).pid();
        (node, owner)
    });
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "ready");
    let _ = out.flush();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        let answer = rt.block_on(serve(&node, owner, &words));
        let _ = writeln!(out, "{answer}");
        let _ = out.flush();
        if words.first() == Some(&"quit") {
            break;
        }
    }
}

async fn serve(node: &Node, owner: Pid, words: &[&str]) -> String {
    let number = |i: usize| -> u64 {
        words
            .get(i)
            .and_then(|w| w.parse().ok())
            .expect("a number argument")
    };
    match words.first().copied() {
        Some("leader") => {
            let leads = node
                .raft_status()
                .await
                .is_some_and(|s| s.role == Role::Leader);
            u8::from(leads).to_string()
        }
        Some("index") => node.registry_index().to_string(),
        Some("feed") => {
            let f = node.registry_feed_stats();
            format!("{} {}", f.bytes_sent, f.snapshots_sent)
        }
        Some("register") => {
            let prefix = words.get(1).copied().unwrap_or("r").to_string();
            let (first, count, in_flight) = (number(2), number(3), number(4));
            register_range(node, owner, prefix, first, count, in_flight)
                .await
                .to_string()
        }
        Some("unregister") => {
            let prefix = words.get(1).copied().unwrap_or("r").to_string();
            unregister_range(node, prefix, number(2), number(3)).await;
            "0".into()
        }
        Some("one") => {
            let name = words.get(1).copied().unwrap_or("one");
            let ok = node.register(name, owner, Scope::Consistent).await.is_ok();
            u8::from(ok).to_string()
        }
        Some("quit") => {
            node.shutdown(Duration::from_secs(1)).await;
            "0".into()
        }
        _ => "unknown request".into(),
    }
}

/// A name of the range: of one length at every size, so the bytes pushed compare.
pub fn range_name(prefix: &str, n: u64) -> String {
    format!("{prefix}-{n:08}")
}

/// Registers the names `first..first + count` at `node` with `in_flight` at once: how many
/// succeeded.
async fn register_range(
    node: &Node,
    owner: Pid,
    prefix: String,
    first: u64,
    count: u64,
    in_flight: u64,
) -> u64 {
    let next = Arc::new(AtomicU64::new(first));
    let ok = Arc::new(AtomicU64::new(0));
    let prefix = Arc::new(prefix);
    let end = first + count;
    let tasks: Vec<_> = (0..in_flight)
        .map(|_| {
            let (node, next, ok, prefix) = (node.clone(), next.clone(), ok.clone(), prefix.clone());
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= end {
                        return;
                    }
                    let name = range_name(&prefix, n);
                    if node.register(&name, owner, Scope::Consistent).await.is_ok() {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    ok.load(Ordering::Relaxed)
}

/// Unregisters the names `first..first + count` at `node`, 64 at once.
async fn unregister_range(node: &Node, prefix: String, first: u64, count: u64) {
    let next = Arc::new(AtomicU64::new(first));
    let prefix = Arc::new(prefix);
    let end = first + count;
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (node, next, prefix) = (node.clone(), next.clone(), prefix.clone());
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= end {
                        return;
                    }
                    let _ = node.unregister(&range_name(&prefix, n)).await;
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
}
