//! The `atoll` binary, run for real: CA commands, configuration errors, nodes that connect,
//! crash and stop.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use atoll_actor::{
    Actor, ActorRef, ActorResult, CallError, Ctx, Down, ExitReason, Pid, ReplyTo, SendError,
};
use atoll_cluster::builtin::{Echo, EchoMsg};
use atoll_cluster::{Node, NodeConfig};
use atoll_core::NodeId;
use atoll_net::{ClusterCa, NodeCertificate, NodeIdentity, RevocationList};
use tokio::sync::mpsc as tmpsc;

const BIN: &str = env!("CARGO_BIN_EXE_atoll");
const DEADLINE: Duration = Duration::from_secs(30);

/// A fresh directory, removed when the test passes.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir =
            std::env::temp_dir().join(format!("atoll-cli-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Runs `atoll ARGS` in `dir` to completion.
fn atoll(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `atoll ARGS` and insists it succeeds; returns its stdout.
fn ok(dir: &Path, args: &[&str]) -> String {
    let o = atoll(dir, args);
    assert!(
        o.status.success(),
        "atoll {args:?} failed: {}\n{}",
        o.status,
        stderr(&o)
    );
    stdout(&o)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A running `atoll node`; killed if the test ends without stopping it.
struct NodeProcess {
    child: Child,
    name: String,
    id: NodeId,
    addr: std::net::SocketAddr,
    stdout: mpsc::Receiver<String>,
    /// Stdout lines after the ready line, as read so far.
    printed: std::cell::RefCell<Vec<String>>,
    stderr: mpsc::Receiver<String>,
}

impl NodeProcess {
    /// Starts `atoll node --config CONFIG` and waits for its ready line.
    fn start(dir: &Path, config: &str) -> NodeProcess {
        let mut child = Command::new(BIN)
            .args(["node", "--config", config])
            .current_dir(dir)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = lines(child.stdout.take().unwrap());
        let stderr = lines(child.stderr.take().unwrap());
        let line = match stdout.recv_timeout(DEADLINE) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait();
                let mut logs = Vec::new();
                while let Ok(line) = stderr.recv_timeout(Duration::from_secs(1)) {
                    logs.push(line);
                }
                panic!(
                    "no ready line from {config} ({status:?}); stderr:\n{}",
                    logs.join("\n")
                );
            }
        };
        // atoll node NAME id=NODEID listening on ADDR
        let words: Vec<&str> = line.split_whitespace().collect();
        assert!(
            words.len() == 7
                && words[..2] == ["atoll", "node"]
                && words[4..6] == ["listening", "on"],
            "unexpected ready line {line:?}"
        );
        NodeProcess {
            name: words[2].to_string(),
            id: words[3].strip_prefix("id=").unwrap().parse().unwrap(),
            addr: words[6].parse().unwrap(),
            child,
            stdout,
            printed: Default::default(),
            stderr,
        }
    }

    /// The first stdout line (after the ready line) that `pick` accepts, waiting for it if
    /// it has not been printed yet.
    fn wait_for_line<T>(&self, what: &str, mut pick: impl FnMut(&str) -> Option<T>) -> T {
        if let Some(found) = self.printed.borrow().iter().find_map(|l| pick(l)) {
            return found;
        }
        let until = Instant::now() + DEADLINE;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) => {
                    let found = pick(&line);
                    self.printed.borrow_mut().push(line);
                    if let Some(found) = found {
                        return found;
                    }
                }
                Err(_) => panic!(
                    "node {}: no stdout line for {what}; printed:\n{}",
                    self.name,
                    self.printed.borrow().join("\n")
                ),
            }
        }
    }

    /// Waits for `member KIND NAME id=ID gen=GEN ...` about `about`; returns its fields.
    fn wait_for_member(&self, kind: &str, about: &NodeProcess) -> MemberLine {
        self.wait_for_line(&format!("member {kind} {}", about.name), |line| {
            MemberLine::parse(line).filter(|m| m.kind == kind && m.id == about.id)
        })
    }

    /// Waits for a log line containing every one of `needles`.
    fn wait_for_log(&self, needles: &[&str]) -> String {
        let until = Instant::now() + DEADLINE;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) if needles.iter().all(|n| line.contains(n)) => return line,
                Ok(_) => {}
                Err(_) => panic!("node {}: no log line with {needles:?}", self.name),
            }
        }
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {sig} failed");
    }

    /// Waits for the process to exit.
    fn wait(&mut self) -> ExitStatus {
        let until = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < until,
                "node {} did not exit within {DEADLINE:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A `member ...` line of `atoll node`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MemberLine {
    kind: String,
    name: String,
    id: NodeId,
    generation: u64,
    addr: Option<std::net::SocketAddr>,
}

impl MemberLine {
    /// `member KIND NAME id=ID gen=GEN [addr=ADDR]`, checked strictly: `addr` on `joined`
    /// lines and only there.
    fn parse(line: &str) -> Option<MemberLine> {
        let words: Vec<&str> = line.split(' ').collect();
        if words.first() != Some(&"member") || words.len() < 5 {
            return None;
        }
        let kind = words[1].to_string();
        let id = words[3].strip_prefix("id=")?.parse().ok()?;
        let generation = words[4].strip_prefix("gen=")?.parse().ok()?;
        let addr = match (kind.as_str(), &words[5..]) {
            ("joined", [addr]) => Some(addr.strip_prefix("addr=")?.parse().ok()?),
            ("active" | "suspect" | "recovered" | "unreachable" | "left", []) => None,
            _ => panic!("malformed member line {line:?}"),
        };
        Some(MemberLine {
            kind,
            name: words[2].to_string(),
            id,
            generation,
            addr,
        })
    }
}

/// Lines of `from`, on a channel, read by a thread of their own.
fn lines(from: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// A CA in `dir/ca` with the given nodes issued into it.
fn ca_with(dir: &Path, nodes: &[&str]) {
    ok(dir, &["ca", "init", "--dir", "ca", "--name", "test"]);
    for n in nodes {
        ok(dir, &["ca", "issue", n, "--dir", "ca"]);
    }
}

/// A CA-mode configuration for node `name` whose files are in `dir/ca`.
fn write_config(dir: &Path, name: &str, peers: &[std::net::SocketAddr]) -> String {
    let peers: Vec<String> = peers.iter().map(|p| format!("\"{p}\"")).collect();
    let text = format!(
        "name = \"{name}\"\nlisten = \"127.0.0.1:0\"\npeers = [{}]\nthreads = 1\n\n\
         [tls]\nkey = \"ca/{name}.key\"\ncert = \"ca/{name}.pem\"\nca = \"ca/ca.pem\"\n\
         revoked = \"ca/revoked.txt\"\n",
        peers.join(", ")
    );
    let file = format!("{name}.toml");
    std::fs::write(dir.join(&file), text).unwrap();
    file
}

/// A CA-mode configuration with membership: short timings, joining through `seeds`.
fn write_cluster_config(dir: &Path, name: &str, seeds: &[std::net::SocketAddr]) -> String {
    let file = write_config(dir, name, &[]);
    let seeds: Vec<String> = seeds.iter().map(|p| format!("\"{p}\"")).collect();
    let cluster = format!(
        "\n[cluster]\nenabled = true\nseeds = [{}]\nroles = [\"worker\"]\n\n\
         [cluster.swim]\nprobe_interval_ms = 300\nping_timeout_ms = 150\n\
         suspect_timeout_ms = 1500\nindirect_probes = 2\n",
        seeds.join(", ")
    );
    let path = dir.join(&file);
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&cluster);
    std::fs::write(path, text).unwrap();
    file
}

#[test]
fn ca_init_issue_list_revoke() {
    let tmp = TempDir::new("ca");
    let dir = tmp.path();
    ok(dir, &["ca", "init", "--name", "demo"]);
    let ca = dir.join("atoll-ca");
    assert!(ca.join("ca.pem").is_file());
    assert_eq!(mode(&ca.join("ca.key")), 0o600);
    assert_eq!(
        RevocationList::load(ca.join("revoked.txt")).unwrap().len(),
        0
    );

    let a_id = ok(dir, &["ca", "issue", "a"]).trim().to_string();
    let b_id = ok(dir, &["ca", "issue", "b"]).trim().to_string();
    for (n, id) in [("a", &a_id), ("b", &b_id)] {
        assert_eq!(mode(&ca.join(format!("{n}.key"))), 0o600);
        let cert = NodeCertificate::load(ca.join(format!("{n}.pem"))).unwrap();
        assert_eq!(&cert.node_id().to_string(), id);
        let key = NodeIdentity::load(ca.join(format!("{n}.key"))).unwrap();
        assert_eq!(key.node_id(), cert.node_id());
    }
    assert_ne!(a_id, b_id);

    let list = ok(dir, &["ca", "list"]);
    let row = |list: &str, name: &str| {
        list.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row for {name} in\n{list}"))
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(row(&list, "a"), ["a", a_id.as_str(), "valid"]);
    assert_eq!(row(&list, "b"), ["b", b_id.as_str(), "valid"]);

    let revoked = ok(dir, &["ca", "revoke", "b"]);
    assert!(
        revoked.contains("revoked b") && revoked.contains(&b_id),
        "{revoked}"
    );
    let list = ok(dir, &["ca", "list"]);
    assert_eq!(row(&list, "a"), ["a", a_id.as_str(), "valid"]);
    assert_eq!(row(&list, "b"), ["b", b_id.as_str(), "revoked"]);
    let on_file = RevocationList::load(ca.join("revoked.txt")).unwrap();
    assert_eq!(on_file.ids(), vec![b_id.parse().unwrap()]);

    // By id, too; revoking twice appends nothing.
    let other = "0123456789abcdef0123456789abcdef";
    assert!(ok(dir, &["ca", "revoke", other]).contains(other));
    ok(dir, &["ca", "revoke", other]);
    assert_eq!(
        RevocationList::load(ca.join("revoked.txt")).unwrap().len(),
        2
    );
    let text = std::fs::read_to_string(ca.join("revoked.txt")).unwrap();
    assert_eq!(text.matches(other).count(), 1, "{text}");

    let o = atoll(dir, &["ca", "revoke", "nobody"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));

    // Nothing is overwritten.
    let before = std::fs::read(ca.join("ca.key")).unwrap();
    let o = atoll(dir, &["ca", "init"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("ca.pem already exists"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read(ca.join("ca.key")).unwrap(), before);
    let o = atoll(dir, &["ca", "issue", "a"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("a.key already exists"),
        "{}",
        stderr(&o)
    );

    // Issued elsewhere: the CA keeps a copy of the certificate.
    let c_id = ok(dir, &["ca", "issue", "c", "--out", "nodes"]);
    assert_eq!(mode(&dir.join("nodes/c.key")), 0o600);
    assert!(dir.join("nodes/c.pem").is_file() && ca.join("c.pem").is_file());
    assert_eq!(row(&ok(dir, &["ca", "list"]), "c")[1], c_id.trim());

    // No CA: the error says how to make one.
    let o = atoll(dir, &["ca", "issue", "d", "--dir", "elsewhere"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("atoll ca init --dir elsewhere"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn config_errors_exit_2_naming_file_and_field() {
    let tmp = TempDir::new("config");
    let dir = tmp.path();
    ca_with(dir, &["a"]);
    let good = std::fs::read_to_string(dir.join(write_config(dir, "a", &[]))).unwrap();
    let cases: [(&str, String, &[&str]); 5] = [
        (
            "missing field",
            good.replace("listen = \"127.0.0.1:0\"\n", ""),
            &["bad.toml: field \"listen\": missing"],
        ),
        (
            "bad address",
            good.replace("127.0.0.1:0", "x"),
            &["bad.toml: field \"listen\": invalid socket address \"x\""],
        ),
        (
            "unknown field",
            good.replace("threads = 1", "threads = 1\ncolour = \"blue\""),
            &["bad.toml: field \"colour\": unknown field"],
        ),
        (
            "unknown nested field",
            good.replace("[tls]", "[tls]\npassword = \"x\""),
            &["bad.toml: field \"tls.password\": unknown field"],
        ),
        (
            "missing certificate",
            good.replace("ca/a.pem", "certs/a.pem"),
            &[
                "bad.toml: field \"tls.cert\"",
                "certs/a.pem does not exist",
                // The CA kept a copy.
                "copy ca/a.pem there",
            ],
        ),
    ];
    for (what, text, expected) in cases {
        std::fs::write(dir.join("bad.toml"), text).unwrap();
        let o = atoll(dir, &["node", "--config", "bad.toml"]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{what}: {err}");
        for e in expected {
            assert!(err.contains(e), "{what}: expected {e:?} in {err:?}");
        }
        assert!(stdout(&o).is_empty(), "{what}: {}", stdout(&o));
    }
    // The cluster table: a bad seed and a bad protocol setting.
    let clustered = std::fs::read_to_string(dir.join(write_cluster_config(dir, "a", &[]))).unwrap();
    let cases: [(&str, String, &str); 3] = [
        (
            "bad seed",
            clustered.replace("seeds = []", "seeds = [\"127.0.0.1:7000\", \"seven\"]"),
            "bad.toml: field \"cluster.seeds[1]\": invalid address \"seven\"",
        ),
        (
            "ping timeout not below the probe interval",
            clustered.replace("ping_timeout_ms = 150", "ping_timeout_ms = 300"),
            "bad.toml: field \"cluster.swim.ping_timeout_ms\": 300 must be less than \
             probe_interval_ms (300)",
        ),
        (
            "zero suspect timeout",
            clustered.replace("suspect_timeout_ms = 1500", "suspect_timeout_ms = 0"),
            "bad.toml: field \"cluster.swim.suspect_timeout_ms\": 0 is not between",
        ),
    ];
    for (what, text, expected) in cases {
        std::fs::write(dir.join("bad.toml"), text).unwrap();
        let o = atoll(dir, &["node", "--config", "bad.toml"]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{what}: {err}");
        assert!(
            err.contains(expected),
            "{what}: expected {expected:?} in {err:?}"
        );
        assert!(stdout(&o).is_empty(), "{what}: {}", stdout(&o));
    }
    // The consensus table: a bad voter entry and a bad timing.
    let id = "0123456789abcdef0123456789abcdef";
    let voting = format!("{good}\n[consensus]\nvoters = [\"{id}@127.0.0.1:7000\"]\n");
    let cases: [(&str, String, &str); 3] = [
        (
            "voter without an id",
            voting.replace(&format!("{id}@"), ""),
            "bad.toml: field \"consensus.voters[0]\": \"127.0.0.1:7000\" is not \
             NODE_ID@HOST:PORT",
        ),
        (
            "voter id not hex",
            voting.replace(id, "london"),
            "bad.toml: field \"consensus.voters[0]\": \"london\" in",
        ),
        (
            "election timeout not above the heartbeat",
            voting.replace(
                "127.0.0.1:7000\"]",
                "127.0.0.1:7000\"]\nheartbeat_interval_ms = 500",
            ),
            "bad.toml: field \"consensus.election_timeout_min_ms\": 400 must be greater than \
             heartbeat_interval_ms (500)",
        ),
    ];
    for (what, text, expected) in cases {
        std::fs::write(dir.join("bad.toml"), text).unwrap();
        let o = atoll(dir, &["node", "--config", "bad.toml"]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{what}: {err}");
        assert!(
            err.contains(expected),
            "{what}: expected {expected:?} in {err:?}"
        );
        assert!(stdout(&o).is_empty(), "{what}: {}", stdout(&o));
    }
    write_config(dir, "a", &[]);
    // A missing certificate the CA has no copy of: issue again.
    std::fs::remove_file(dir.join("ca/a.pem")).unwrap();
    let o = atoll(dir, &["node", "--config", "a.toml"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("a.toml: field \"tls.cert\"")
            && err.contains("ca/a.pem does not exist")
            && err.contains("run `atoll ca issue a --dir ca --out ca`"),
        "{err}"
    );
    // A missing key names `atoll ca issue` with the directories to use.
    std::fs::rename(dir.join("ca/a.key"), dir.join("a.key.bak")).unwrap();
    let o = atoll(dir, &["node", "--config", "a.toml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("run `atoll ca issue a --dir ca --out ca`"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn sigterm_stops_a_node_with_exit_0() {
    let tmp = TempDir::new("sigterm");
    let dir = tmp.path();
    ca_with(dir, &["solo"]);
    let config = write_config(dir, "solo", &[]);
    let mut node = NodeProcess::start(dir, &config);
    assert_eq!(node.name, "solo");
    assert_ne!(node.addr.port(), 0);
    let cert = NodeCertificate::load(dir.join("ca/solo.pem")).unwrap();
    assert_eq!(node.id, cert.node_id());
    node.signal("-TERM");
    let status = node.wait();
    assert_eq!(status.code(), Some(0), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_node_picks_up_revocations() {
    let tmp = TempDir::new("revoke");
    let dir = tmp.path().to_path_buf();
    let mut node = None;
    tokio::task::block_in_place(|| {
        ca_with(&dir, &["solo", "probe"]);
        node = Some(NodeProcess::start(&dir, &write_config(&dir, "solo", &[])));
    });
    let mut node = node.unwrap();
    let ca = ClusterCa::load(dir.join("ca")).unwrap();
    let start_probe = || {
        let mut config = NodeConfig::with_ca(
            "probe",
            "127.0.0.1:0".parse().unwrap(),
            NodeIdentity::load(dir.join("ca/probe.key")).unwrap(),
            NodeCertificate::load(dir.join("ca/probe.pem")).unwrap(),
            ca.trust(RevocationList::new()),
        );
        config.connect_timeout = Duration::from_secs(5);
        Node::start(config).unwrap()
    };

    let probe = start_probe();
    probe.connect(node.addr).await.unwrap();
    probe.shutdown(Duration::from_secs(1)).await;

    tokio::task::block_in_place(|| {
        ok(&dir, &["ca", "revoke", "probe", "--dir", "ca"]);
        node.wait_for_log(&["revocation list reloaded", "revoked=1"]);
    });
    let probe = start_probe();
    let refused = probe.connect(node.addr).await;
    assert!(refused.is_err(), "{refused:?}");
    probe.shutdown(Duration::from_secs(1)).await;

    tokio::task::block_in_place(|| {
        node.signal("-INT");
        assert_eq!(node.wait().code(), Some(0));
    });
}

/// Holds a monitor and reports what it sees; forwards calls to an echo and reports how
/// the send went.
struct Watcher {
    downs: tmpsc::UnboundedSender<Down>,
    sends: tmpsc::UnboundedSender<&'static str>,
}

#[derive(Debug)]
enum WatcherMsg {
    Monitor(Pid),
    /// Asks `to` to answer `reply` with `n`: the reply handle travels on.
    Forward(ActorRef<Echo>, u64, ReplyTo<u64>),
}

impl Actor for Watcher {
    type Msg = WatcherMsg;

    async fn handle(&mut self, msg: WatcherMsg, ctx: &mut Ctx<Self>) -> ActorResult {
        match msg {
            WatcherMsg::Monitor(pid) => drop(ctx.monitor(pid)),
            WatcherMsg::Forward(to, n, reply) => {
                let outcome = match to.send(EchoMsg::Ping(n, reply)) {
                    Ok(()) => "sent",
                    Err(SendError::NoConnection(_)) => "no connection",
                    Err(SendError::NoProc(_)) => "no proc",
                    Err(SendError::Full(_)) => "full",
                    Err(SendError::Unencodable(..)) => "unencodable",
                };
                let _ = self.sends.send(outcome);
            }
        }
        Ok(())
    }

    async fn handle_down(&mut self, down: Down, _ctx: &mut Ctx<Self>) -> ActorResult {
        let _ = self.downs.send(down);
        Ok(())
    }
}

async fn eventually(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let until = tokio::time::Instant::now() + DEADLINE;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < until,
            "not within {DEADLINE:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_connect_serve_echo_and_a_killed_node_breaks_monitors() {
    let tmp = TempDir::new("cluster");
    let dir = tmp.path().to_path_buf();
    let blocking = |f: &mut dyn FnMut()| tokio::task::block_in_place(f);

    // Two `atoll node` processes; the second dials the first.
    let mut n1 = None;
    let mut n2 = None;
    blocking(&mut || {
        ca_with(&dir, &["n1", "n2", "probe"]);
        let first = NodeProcess::start(&dir, &write_config(&dir, "n1", &[]));
        let second = NodeProcess::start(&dir, &write_config(&dir, "n2", &[first.addr]));
        second.wait_for_log(&["kept connection established", &first.id.to_string()]);
        n1 = Some(first);
        n2 = Some(second);
    });
    let (mut n1, mut n2) = (n1.unwrap(), n2.unwrap());

    // An in-process node of the same cluster, with its own issued certificate.
    let ca = ClusterCa::load(dir.join("ca")).unwrap();
    let mut config = NodeConfig::with_ca(
        "probe",
        "127.0.0.1:0".parse().unwrap(),
        NodeIdentity::load(dir.join("ca/probe.key")).unwrap(),
        NodeCertificate::load(dir.join("ca/probe.pem")).unwrap(),
        ca.trust(RevocationList::new()),
    );
    // The idle timeout is the smaller of both sides': a killed peer is noticed quickly.
    config.transport.keep_alive_interval = Some(Duration::from_millis(200));
    config.transport.max_idle_timeout = Duration::from_secs(2);
    let probe = Node::start(config).unwrap();
    let remote = probe.connect(n1.addr).await.unwrap();
    assert_eq!(remote.id(), n1.id);
    assert_eq!(remote.name(), "n1");

    // Live attach: the built-in echo is registered.
    let processes = probe.remote_processes(n1.id).await.unwrap();
    assert!(
        processes.iter().any(|p| p.name.as_deref() == Some("echo")),
        "{processes:?}"
    );

    // Remote spawn from the `echo` factory, and a call to it.
    let pid = probe.spawn_remote(n1.id, "echo", &()).await.unwrap();
    assert_eq!(pid.node, n1.id);
    let echo = probe.actor_ref::<Echo>(pid).unwrap();
    let n = echo.call(|r| EchoMsg::Ping(42, r), DEADLINE).await.unwrap();
    assert_eq!(n, 42);

    // A local process monitors it, and sends to it (answering our call from there).
    let (downs_tx, mut downs) = tmpsc::unbounded_channel();
    let (sends_tx, mut sends) = tmpsc::unbounded_channel();
    let watcher = probe.runtime().spawn(Watcher {
        downs: downs_tx,
        sends: sends_tx,
    });
    let forwarded = watcher
        .call(|r| WatcherMsg::Forward(echo.clone(), 7, r), DEADLINE)
        .await;
    assert_eq!(forwarded, Ok(7));
    assert_eq!(sends.recv().await, Some("sent"));
    watcher.send(WatcherMsg::Monitor(pid)).unwrap();
    eventually("n1 records the monitor", async || {
        probe.remote_processes(n1.id).await.is_ok_and(|ps| {
            ps.iter()
                .any(|p| p.pid == pid && p.monitored_by == [watcher.pid()])
        })
    })
    .await;

    // SIGKILL n1: no goodbye.
    n1.child.kill().unwrap();
    blocking(&mut || {
        n1.wait();
    });
    let down = tokio::time::timeout(DEADLINE, downs.recv())
        .await
        .expect("no Down within the deadline")
        .unwrap();
    assert_eq!(down.pid, pid);
    assert_eq!(down.reason, ExitReason::NoConnection);
    eventually("the probe forgets n1", async || {
        probe.peers().iter().all(|p| p.id != n1.id)
    })
    .await;
    assert!(!remote.is_connected());
    // The send fails at once with NoConnection; the message comes back with the reply
    // handle still usable, and dropping it ends the forwarded call with NoReply.
    let forwarded = watcher
        .call(|r| WatcherMsg::Forward(echo.clone(), 8, r), DEADLINE)
        .await;
    assert_eq!(forwarded, Err(CallError::NoReply));
    assert_eq!(sends.recv().await, Some("no connection"));
    assert_eq!(
        echo.call(|r| EchoMsg::Ping(9, r), DEADLINE).await,
        Err(CallError::NoConnection)
    );
    assert!(probe.globals().iter().all(|(_, p)| p.node != n1.id));

    // n2 is still up and stops cleanly.
    blocking(&mut || {
        n2.signal("-TERM");
        assert_eq!(n2.wait().code(), Some(0));
    });
    probe.shutdown(Duration::from_secs(1)).await;
}

#[test]
fn cluster_nodes_report_each_other_and_a_killed_one_unreachable() {
    let tmp = TempDir::new("membership");
    let dir = tmp.path();
    ca_with(dir, &["m1", "m2", "m3"]);

    // m1 founds the cluster; m2 and m3 join through it.
    let mut m1 = NodeProcess::start(dir, &write_cluster_config(dir, "m1", &[]));
    let active = m1.wait_for_member("active", &m1);
    assert_eq!(active.name, "m1");
    let seeds = [m1.addr];
    let mut m2 = NodeProcess::start(dir, &write_cluster_config(dir, "m2", &seeds));
    let mut m3 = NodeProcess::start(dir, &write_cluster_config(dir, "m3", &seeds));
    assert_eq!(m2.wait_for_member("active", &m2).name, "m2");
    assert_eq!(m3.wait_for_member("active", &m3).name, "m3");

    // Everyone reports every other one joined, with the address it listens on.
    let mut generations = std::collections::HashMap::new();
    for observer in [&m1, &m2, &m3] {
        for other in [&m1, &m2, &m3] {
            if observer.id == other.id {
                continue;
            }
            let joined = observer.wait_for_member("joined", other);
            assert_eq!(joined.name, other.name);
            assert_eq!(joined.addr, Some(other.addr));
            let generation = *generations.entry(other.id).or_insert(joined.generation);
            assert_eq!(joined.generation, generation);
        }
    }

    // SIGKILL m3: no goodbye. The others declare it unreachable.
    m3.child.kill().unwrap();
    m3.wait();
    for observer in [&m1, &m2] {
        let gone = observer.wait_for_member("unreachable", &m3);
        assert_eq!(gone.name, "m3");
        assert_eq!(gone.generation, generations[&m3.id]);
    }

    // SIGTERM m2: it leaves, and m1 sees it left.
    m2.signal("-TERM");
    let left = m1.wait_for_member("left", &m2);
    assert_eq!(left.generation, generations[&m2.id]);
    assert_eq!(m2.wait().code(), Some(0));
    m1.signal("-TERM");
    assert_eq!(m1.wait().code(), Some(0));
}

/// A free UDP port on 127.0.0.1 (free when asked; voters need addresses known up front).
fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn three_voters_and_a_member_start_consensus_and_stop_cleanly() {
    let tmp = TempDir::new("consensus");
    let dir = tmp.path();
    let names = ["v1", "v2", "v3"];
    ca_with(dir, &["v1", "v2", "v3", "w1"]);
    let id_of = |name: &str| {
        NodeCertificate::load(dir.join(format!("ca/{name}.pem")))
            .unwrap()
            .node_id()
    };
    let ports: Vec<u16> = names.iter().map(|_| free_port()).collect();
    let voters: Vec<String> = names
        .iter()
        .zip(&ports)
        .map(|(name, port)| format!("\"{}@127.0.0.1:{port}\"", id_of(name)))
        .collect();
    let consensus = format!(
        "\n[consensus]\nvoters = [{}]\nheartbeat_interval_ms = 50\n\
         election_timeout_min_ms = 200\nelection_timeout_max_ms = 400\n",
        voters.join(", ")
    );
    let configure = |name: &str, port: u16| {
        let file = write_config(dir, name, &[]);
        let path = dir.join(&file);
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
        std::fs::write(path, format!("{text}{consensus}")).unwrap();
        file
    };

    let mut nodes: Vec<NodeProcess> = names
        .iter()
        .zip(&ports)
        .map(|(name, port)| NodeProcess::start(dir, &configure(name, *port)))
        .collect();
    for (node, port) in nodes.iter().zip(&ports) {
        assert_eq!(node.addr.port(), *port);
        let line = node.wait_for_line("consensus voter", |l| {
            l.starts_with("consensus ").then(|| l.to_string())
        });
        let b = node.id.as_bytes();
        let raft_id = u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
        assert_eq!(
            line,
            format!(
                "consensus voter raft_id={raft_id} voters=3 data=raft-{}",
                node.name
            )
        );
        assert!(dir.join(format!("raft-{}", node.name)).is_dir());
    }
    // A node that is not among the voters proposes through them.
    let member = NodeProcess::start(dir, &configure("w1", 0));
    let line = member.wait_for_line("consensus member", |l| {
        l.starts_with("consensus ").then(|| l.to_string())
    });
    assert_eq!(line, "consensus member voters=3");
    assert!(!dir.join("raft-w1").exists());
    nodes.push(member);

    // They stay up through elections and heartbeats, then stop cleanly.
    std::thread::sleep(Duration::from_secs(2));
    for node in &mut nodes {
        assert!(
            node.child.try_wait().unwrap().is_none(),
            "node {} exited",
            node.name
        );
    }
    for node in &nodes {
        node.signal("-TERM");
    }
    for node in &mut nodes {
        let status = node.wait();
        assert_eq!(status.code(), Some(0), "node {}: {status}", node.name);
    }
}

/// A free TCP port on 127.0.0.1.
fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Three nodes, each a Raft voter and a member, each serving HTTP: `(processes, http
/// addresses)`. v1 founds the membership; v2 and v3 join through it.
fn start_voters_with_http(dir: &Path) -> (Vec<NodeProcess>, Vec<String>) {
    let names = ["v1", "v2", "v3"];
    ca_with(dir, &names);
    let id_of = |name: &str| {
        NodeCertificate::load(dir.join(format!("ca/{name}.pem")))
            .unwrap()
            .node_id()
    };
    let ports: Vec<u16> = names.iter().map(|_| free_port()).collect();
    let http: Vec<String> = names
        .iter()
        .map(|_| format!("127.0.0.1:{}", free_tcp_port()))
        .collect();
    let voters: Vec<String> = names
        .iter()
        .zip(&ports)
        .map(|(name, port)| format!("\"{}@127.0.0.1:{port}\"", id_of(name)))
        .collect();
    let seed: std::net::SocketAddr = format!("127.0.0.1:{}", ports[0]).parse().unwrap();
    let nodes = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let seeds = if i == 0 { vec![] } else { vec![seed] };
            let file = write_cluster_config(dir, name, &seeds);
            let path = dir.join(&file);
            let text = std::fs::read_to_string(&path)
                .unwrap()
                .replace("127.0.0.1:0", &format!("127.0.0.1:{}", ports[i]))
                .replace(
                    "threads = 1\n",
                    &format!("threads = 1\nhttp = \"{}\"\n", http[i]),
                );
            let consensus = format!(
                "\n[consensus]\nvoters = [{}]\nheartbeat_interval_ms = 50\n\
                 election_timeout_min_ms = 200\nelection_timeout_max_ms = 400\n",
                voters.join(", ")
            );
            std::fs::write(&path, format!("{text}{consensus}")).unwrap();
            let node = NodeProcess::start(dir, &file);
            let line = node.wait_for_line("http", |l| {
                l.strip_prefix("http listening on ").map(str::to_string)
            });
            assert_eq!(line, http[i]);
            node
        })
        .collect();
    (nodes, http)
}

/// `atoll status --http ADDR --json`, parsed.
fn status_json(dir: &Path, addr: &str) -> serde_json::Value {
    let out = ok(dir, &["status", "--http", addr, "--json"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Polls `atoll status` on `addr` until `done` accepts it.
fn wait_status(
    dir: &Path,
    addr: &str,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let until = Instant::now() + DEADLINE;
    loop {
        let s = status_json(dir, addr);
        if done(&s) {
            return s;
        }
        assert!(
            Instant::now() < until,
            "not within {DEADLINE:?}: {what}\n{s:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn member_state(s: &serde_json::Value, name: &str) -> Option<String> {
    s["members"]
        .as_array()?
        .iter()
        .rfind(|m| m["name"] == name)
        .and_then(|m| m["state"].as_str().map(str::to_string))
}

#[test]
fn status_api_and_metrics_show_members_raft_names_and_a_node_going_down() {
    let tmp = TempDir::new("status");
    let dir = tmp.path();
    let (mut nodes, http) = start_voters_with_http(dir);

    // Every member active and a leader known, as v1 sees it.
    let s = wait_status(dir, &http[0], "3 active members and a leader", |s| {
        ["v1", "v2", "v3"]
            .iter()
            .all(|n| member_state(s, n).as_deref() == Some("active"))
            && s["raft"]["leader"].is_string()
    });
    assert_eq!(s["name"], "v1");
    assert_eq!(s["raft"]["voter"], true);
    assert_eq!(s["raft"]["voters"].as_array().unwrap().len(), 3);
    let leader = s["raft"]["leader"].as_str().unwrap().to_string();
    let leader_status = status_json(
        dir,
        &http[["v1", "v2", "v3"]
            .iter()
            .position(|n| *n == leader)
            .unwrap()],
    );
    assert_eq!(leader_status["raft"]["role"], "leader");
    assert!(leader_status["raft"]["term"].as_u64().unwrap() >= 1);
    // The built-in `echo` process is a Local name on every node.
    let echo: Vec<_> = s["names"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["name"] == "echo")
        .collect();
    assert_eq!(echo.len(), 1, "{s:#}");
    assert_eq!(echo[0]["scope"], "local");
    assert_eq!(echo[0]["node"], "v1");

    // The tables, once v2 has heard from the leader too.
    wait_status(dir, &http[1], "v2 knows the leader", |s| {
        s["raft"]["leader"] == leader.as_str()
    });
    let text = ok(dir, &["status", "--http", &http[1]]);
    assert!(text.starts_with("node v2 id="), "{text}");
    for needle in [
        "MEMBERS",
        "v1 ",
        "v2*",
        "v3 ",
        "active",
        "RAFT",
        "role=",
        &format!("leader={leader}"),
        "NAMES",
        "echo",
        "local",
        "GROUPS",
        "SERVICES",
        "PROCESS TABLE",
        "LOCKS",
    ] {
        assert!(text.contains(needle), "no {needle:?} in:\n{text}");
    }

    // The JSON API: known things answer, unknown ones are 404 with a JSON error.
    let get = |path: &str| atoll_cli::status::get(&http[0], path).unwrap();
    let (code, body) = get("/api/nodes/v2");
    assert_eq!(code, 200, "{body}");
    let v2: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v2["state"], "active");
    let (code, body) = get("/api/nodes/v2/processes");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"echo\""), "{body}");
    for path in [
        "/api/nodes/nowhere",
        "/api/nodes/nowhere/processes",
        "/api/names/nobody",
        "/api/groups/none",
        "/api/locks/none",
        "/no/such/path",
    ] {
        let (code, body) = get(path);
        assert_eq!(code, 404, "{path}: {body}");
        let e: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(e["error"].is_string(), "{path}: {body}");
    }
    let (code, body) = get("/api/names/echo");
    assert_eq!(code, 200, "{body}");
    // Cluster data: every node's echo in the process table and offering the echo service.
    let echoes = |body: &str| -> Vec<String> {
        let all: serde_json::Value = serde_json::from_str(body).unwrap();
        let mut nodes: Vec<String> = all
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["agent_type"] == "Echo")
            .map(|p| p["node"].as_str().unwrap().to_string())
            .collect();
        nodes.sort();
        nodes
    };
    let len = |v: &serde_json::Value| v.as_array().map_or(0, Vec::len);
    wait_status(
        dir,
        &http[0],
        "every node's echo in the table and its service",
        |s| {
            len(&s["data"]["per_node"]) == 3
                && len(&s["services"]) == 1
                && len(&s["services"][0]["offers"]) == 3
        },
    );
    assert_eq!(echoes(&get("/api/processes").1), ["v1", "v2", "v3"]);
    let (code, body) = get("/api/services/echo");
    assert_eq!(code, 200, "{body}");
    assert_eq!(body.matches("\"pid\"").count(), 3, "{body}");
    assert_eq!(get("/api/services/none").0, 404);
    let (code, metrics) = get("/metrics");
    assert_eq!(code, 200);
    for needle in [
        "atoll_members{state=\"active\"} 3",
        "# TYPE atoll_request_rtt_seconds histogram",
        "atoll_request_rtt_seconds_bucket{le=\"+Inf\"}",
        "atoll_raft_term ",
        "atoll_raft_commit_index ",
        "atoll_names{scope=\"local\"} 1",
        "atoll_peer_frames_sent_total{peer=\"v2\"}",
        "atoll_peer_rtt_seconds{peer=\"v3\"}",
        "atoll_processes ",
        "atoll_mailbox_longest ",
        "atoll_process_table_entries ",
        "atoll_services 1",
        "atoll_data_deltas_sent_total ",
    ] {
        assert!(metrics.contains(needle), "no {needle:?} in:\n{metrics}");
    }
    let (code, page) = get("/");
    assert_eq!(code, 200);
    assert!(page.contains("/api/status"), "{page}");

    // Live attach, through v1, to v2's processes; an unknown node is a clear error.
    let listing = ok(
        dir,
        &[
            "attach", "v2", "--http", &http[0], "--once", "--sort", "handled",
        ],
    );
    assert!(
        listing.starts_with("node v2: ") && listing.contains("sorted by handled"),
        "{listing}"
    );
    let echo_row = listing
        .lines()
        .find(|l| l.contains(" echo "))
        .unwrap_or_else(|| panic!("{listing}"));
    assert!(echo_row.contains("Echo"), "{listing}");
    let out = atoll(dir, &["attach", "nowhere", "--http", &http[0], "--once"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no reachable node named \"nowhere\""),
        "{}",
        stderr(&out)
    );

    // v3 dies: v1 reports it unreachable, and asking v3 is a clear error, not a hang.
    nodes[2].child.kill().unwrap();
    nodes[2].wait();
    wait_status(dir, &http[0], "v3 unreachable", |s| {
        member_state(s, "v3").as_deref() == Some("unreachable")
    });
    let started = Instant::now();
    let out = atoll(dir, &["status", "--http", &http[2]]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("cannot reach the node at {}", http[2])),
        "{}",
        stderr(&out)
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    for node in &nodes[..2] {
        node.signal("-TERM");
    }
    for node in &mut nodes[..2] {
        assert_eq!(node.wait().code(), Some(0));
    }
}

/// The browser to check the status page with, if this machine has one.
fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
}

/// The status page at `url` as headless Chromium renders it (the DOM after its script ran).
fn rendered_page(browser: &str, url: &str) -> String {
    let profile = TempDir::new("chromium");
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--virtual-time-budget=5000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .output()
        .unwrap();
    assert!(out.status.success(), "{browser}: {}", stderr(&out));
    stdout(&out)
}

/// Renders the page until `done` accepts it.
fn wait_page(browser: &str, url: &str, what: &str, done: impl Fn(&str) -> bool) -> String {
    let until = Instant::now() + DEADLINE;
    loop {
        let page = rendered_page(browser, url);
        if done(&page) {
            return page;
        }
        assert!(
            Instant::now() < until,
            "not within {DEADLINE:?}: {what}\n{page}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_status_page_shows_the_cluster_in_a_browser_and_a_node_going_down() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var_os("ATOLL_REQUIRE_BROWSER").is_none(),
            "ATOLL_REQUIRE_BROWSER is set but no chromium is installed"
        );
        eprintln!("skipping: no chromium (apt-get install chromium chromium-driver)");
        return;
    };
    let tmp = TempDir::new("page");
    let dir = tmp.path();
    let (mut nodes, http) = start_voters_with_http(dir);
    let url = format!("http://{}/", http[0]);
    let row = |name: &str, state: &str| format!("data-node=\"{name}\" data-state=\"{state}\"");

    let page = wait_page(browser, &url, "three active nodes and a leader", |p| {
        ["v1", "v2", "v3"]
            .iter()
            .all(|n| p.contains(&row(n, "active")))
            && p.contains("data-key=\"leader\"")
            && !p.contains("<td>unknown</td>")
            && p.contains("data-service=\"echo\" data-node=\"v3\"")
    });
    assert!(page.contains("data-ready=\"1\""), "{page}");
    assert!(page.contains("v1 (this node)"), "{page}");
    assert!(page.contains("data-name=\"echo\""), "{page}");
    assert!(
        page.contains("<circle"),
        "the cluster picture is drawn: {page}"
    );

    nodes[2].child.kill().unwrap();
    nodes[2].wait();
    wait_page(browser, &url, "v3 shown unreachable", |p| {
        p.contains(&row("v3", "unreachable")) && p.contains(&row("v2", "active"))
    });
    for node in &nodes[..2] {
        node.signal("-TERM");
    }
    for node in &mut nodes[..2] {
        assert_eq!(node.wait().code(), Some(0));
    }
}

#[test]
fn demo_narrates_the_cluster_and_a_node_loss_then_cleans_up() {
    let started = Instant::now();
    let mut child = Command::new(BIN)
        .arg("demo")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = lines(child.stdout.take().unwrap());
    let err = lines(child.stderr.take().unwrap());
    let until = started + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > until {
            let _ = child.kill();
            panic!("atoll demo did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // The readers end at end of file, now that the process is gone.
    let printed: Vec<String> = out.iter().collect();
    let text = printed.join("\n");
    let errors: Vec<String> = err.iter().collect();
    assert!(status.success(), "{status}\n{text}\n{}", errors.join("\n"));
    let expected = [
        "== atoll demo: three nodes on 127.0.0.1",
        "  n1 active at 127.0.0.1:",
        "  raft: voters n1, n2, n3; leader n",
        "  cat (",
        "  history has 3 lines:",
        "    #2 bob: hi ann, n2 here",
        "  cat on n3 heard: #1 ann: hello from n1 | #2 bob: hi ann, n2 here | #3 cat: and n3 says hi",
        "  bob left (was a member: true); present: ann, cat",
        "  demo-local: local name of",
        "  demo-eventual: eventual name of",
        "  demo-consistent: consistent name of",
        "  demo-strong: strong name of",
        "  demo-lock: held by",
        "== n3 is killed (SIGKILL)",
        "s: n3 unreachable",
        "s: demo-consistent released",
        "s: demo-strong released",
        "s: demo-lock released",
        "  demo-lock taken again by",
        "  chat: cat left with its node; present: ann",
        "== done: nodes stopped, files removed",
    ];
    let mut from = 0;
    for needle in expected {
        let at = printed[from..]
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} (in order) in:\n{text}"));
        from += at + 1;
    }
    // The temporary directory named on the first line is gone.
    let dir = printed[0]
        .split("files in ")
        .nth(1)
        .and_then(|d| d.strip_suffix(')'))
        .unwrap();
    assert!(!Path::new(dir).exists(), "{dir} was left behind");
}

#[test]
fn log_format_json_writes_one_json_object_per_line() {
    let tmp = TempDir::new("jsonlog");
    let dir = tmp.path();
    ca_with(dir, &["j1"]);
    let file = write_config(dir, "j1", &[]);
    let path = dir.join(&file);
    let text = std::fs::read_to_string(&path).unwrap();
    // Top-level fields go before the first table.
    std::fs::write(&path, format!("{text}\n[log]\nformat = \"json\"\n")).unwrap();
    let mut node = NodeProcess::start(dir, &file);
    let line = node.wait_for_log(&["node started"]);
    let v: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    assert_eq!(v["level"], "INFO", "{line}");
    assert_eq!(v["fields"]["message"], "node started", "{line}");
    node.signal("-TERM");
    assert_eq!(node.wait().code(), Some(0));
}
