//! What the tests of the `atoll` binary share: temporary directories, running the binary,
//! node processes and their output, configurations, the status API.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use atoll_core::NodeId;
use atoll_net::NodeCertificate;

pub const BIN: &str = env!("CARGO_BIN_EXE_atoll");
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A fresh directory, removed when the test passes.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir =
            std::env::temp_dir().join(format!("atoll-cli-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
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
pub fn atoll(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `atoll ARGS` and insists it succeeds; returns its stdout.
pub fn ok(dir: &Path, args: &[&str]) -> String {
    let o = atoll(dir, args);
    assert!(
        o.status.success(),
        "atoll {args:?} failed: {}\n{}",
        o.status,
        stderr(&o)
    );
    stdout(&o)
}

pub fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A running `atoll node`; killed if the test ends without stopping it.
pub struct NodeProcess {
    pub child: Child,
    pub name: String,
    pub id: NodeId,
    pub addr: std::net::SocketAddr,
    pub stdout: mpsc::Receiver<String>,
    /// Stdout lines after the ready line, as read so far.
    pub printed: std::cell::RefCell<Vec<String>>,
    pub stderr: mpsc::Receiver<String>,
}

impl NodeProcess {
    /// Starts `atoll node --config CONFIG` and waits for its ready line.
    pub fn start(dir: &Path, config: &str) -> NodeProcess {
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
    pub fn wait_for_line<T>(&self, what: &str, mut pick: impl FnMut(&str) -> Option<T>) -> T {
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
    pub fn wait_for_member(&self, kind: &str, about: &NodeProcess) -> MemberLine {
        self.wait_for_line(&format!("member {kind} {}", about.name), |line| {
            MemberLine::parse(line).filter(|m| m.kind == kind && m.id == about.id)
        })
    }

    /// Waits for a log line containing every one of `needles`.
    pub fn wait_for_log(&self, needles: &[&str]) -> String {
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

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {sig} failed");
    }

    /// Waits for the process to exit.
    pub fn wait(&mut self) -> ExitStatus {
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
pub struct MemberLine {
    pub kind: String,
    pub name: String,
    pub id: NodeId,
    pub generation: u64,
    pub addr: Option<std::net::SocketAddr>,
}

impl MemberLine {
    /// `member KIND NAME id=ID gen=GEN [addr=ADDR]`, checked strictly: `addr` on `joined`
    /// lines and only there.
    pub fn parse(line: &str) -> Option<MemberLine> {
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
pub fn lines(from: impl Read + Send + 'static) -> mpsc::Receiver<String> {
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
pub fn ca_with(dir: &Path, nodes: &[&str]) {
    ok(dir, &["ca", "init", "--dir", "ca", "--name", "test"]);
    for n in nodes {
        ok(dir, &["ca", "issue", n, "--dir", "ca"]);
    }
}

/// A CA-mode configuration for node `name` whose files are in `dir/ca`.
pub fn write_config(dir: &Path, name: &str, peers: &[std::net::SocketAddr]) -> String {
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
pub fn write_cluster_config(dir: &Path, name: &str, seeds: &[std::net::SocketAddr]) -> String {
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

pub fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Three nodes, each a Raft voter and a member, each serving HTTP: `(processes, http
/// addresses)`. v1 founds the membership; v2 and v3 join through it.
pub fn start_voters_with_http(dir: &Path) -> (Vec<NodeProcess>, Vec<String>) {
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
                    &format!("threads = 1\ngrains = true\nhttp = \"{}\"\n", http[i]),
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
pub fn status_json(dir: &Path, addr: &str) -> serde_json::Value {
    let out = ok(dir, &["status", "--http", addr, "--json"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Polls `atoll status` on `addr` until `done` accepts it.
pub fn wait_status(
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

pub fn member_state(s: &serde_json::Value, name: &str) -> Option<String> {
    s["members"]
        .as_array()?
        .iter()
        .rfind(|m| m["name"] == name)
        .and_then(|m| m["state"].as_str().map(str::to_string))
}

/// A member in this test process that calls grains on the `atoll node` processes and hosts
/// none (it announces no grains capability): a non-voting consensus member joined
/// through the first node.
pub struct GrainClient {
    pub rt: tokio::runtime::Runtime,
    pub node: atoll_cluster::Node,
    pub grains: atoll_grain::Grains,
}

impl GrainClient {
    pub fn start(dir: &Path, nodes: &[NodeProcess]) -> GrainClient {
        ok(dir, &["ca", "issue", "client", "--dir", "ca"]);
        let voters: Vec<String> = nodes
            .iter()
            .map(|n| format!("\"{}@{}\"", n.id, n.addr))
            .collect();
        let text = format!(
            "name = \"client\"\nlisten = \"127.0.0.1:0\"\n\n\
             [tls]\nkey = \"ca/client.key\"\ncert = \"ca/client.pem\"\nca = \"ca/ca.pem\"\n\n\
             [cluster]\nenabled = true\nseeds = [\"{}\"]\n\n\
             [cluster.swim]\nprobe_interval_ms = 300\nping_timeout_ms = 150\n\
             suspect_timeout_ms = 1500\nindirect_probes = 2\n\n\
             [consensus]\nvoters = [{}]\nheartbeat_interval_ms = 50\n\
             election_timeout_min_ms = 200\nelection_timeout_max_ms = 400\n",
            nodes[0].addr,
            voters.join(", ")
        );
        let path = dir.join("client.toml");
        std::fs::write(&path, text).unwrap();
        let config = atoll_cli::config::NodeFile::load(&path)
            .unwrap()
            .node_config()
            .unwrap()
            .config;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (node, grains) = rt.block_on(async {
            let node = atoll_cluster::Node::start(config).unwrap();
            let grains = atoll_cli::grains::caller(&node);
            (node, grains)
        });
        let client = GrainClient { rt, node, grains };
        client.wait("every grain router in the process table", |c| {
            c.node.find_by_type("GrainRouter").len() == nodes.len() + 1
        });
        client
    }

    /// Waits (polling) until `done` holds.
    pub fn wait(&self, what: &str, done: impl Fn(&GrainClient) -> bool) {
        let until = Instant::now() + DEADLINE;
        while !done(self) {
            assert!(Instant::now() < until, "not within {DEADLINE:?}: {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Calls the grain `key` of type `G` and waits for its reply.
    pub fn call<G: atoll_grain::Grain>(&self, key: &str, msg: G::Msg) -> G::Reply {
        let grain = self.grains.get::<G>(key).unwrap();
        self.rt
            .block_on(grain.call(msg))
            .unwrap_or_else(|e| panic!("calling {key}: {e}"))
    }
}

impl Drop for GrainClient {
    fn drop(&mut self) {
        let node = self.node.clone();
        self.rt.block_on(node.shutdown(Duration::from_millis(500)));
    }
}
