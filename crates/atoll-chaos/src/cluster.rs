//! The processes: `atoll node` `n1..n5` (n1..n3 Raft voters), one per network namespace
//! on a private bridge (`netns.sh`), and client `cI` beside node `nI` in its namespace.
//! Every process is signalled by its pid; dropping the cluster kills them and deletes the
//! namespaces.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Nodes in the cluster.
pub const NODES: usize = 5;
/// The first `VOTERS` nodes are Raft voters.
pub const VOTERS: usize = 3;
const PORT: u16 = 7000;
const CLIENT_PORT: u16 = 7001;
const HTTP_PORT: u16 = 7100;
/// How long a registration or lock request may take before it fails.
pub const REQUEST_TIMEOUT_MS: u64 = 3000;
const SCRIPT: &str = include_str!("netns.sh");

/// Why the cluster could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// Namespaces need root.
    #[error("atoll-chaos needs root to make network namespaces (uid is not 0): run it with sudo")]
    NotRoot,
    /// A tool is missing.
    #[error("atoll-chaos needs `{0}` ({1})")]
    Missing(&'static str, &'static str),
    /// A command failed.
    #[error("{what} failed: {detail}")]
    Command {
        /// The command.
        what: String,
        /// Its stderr, or the I/O error.
        detail: String,
    },
    /// Something did not happen in time.
    #[error("not within {0:?}: {1}")]
    Timeout(Duration, String),
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next())
            == Some("0")
    })
}

fn have(program: &str) -> bool {
    Command::new(program)
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The `atoll` command, as this binary embeds it (`atoll-chaos __atoll ARGS` runs
/// `atoll ARGS`: the same `atoll_cli::run`), so the nodes always run the code this binary
/// was built from, never an `atoll` binary left over from an older build.
pub fn atoll_command() -> Command {
    let me = std::env::current_exe().expect("the running binary has a path");
    let mut c = Command::new(me);
    c.arg("__atoll");
    c
}

/// Stdout lines of a process, each with when it was read, collected by a thread.
pub type Lines = Arc<Mutex<Vec<(Instant, String)>>>;

/// The running cluster.
#[derive(Debug)]
pub struct Cluster {
    prefix: String,
    subnet: String,
    /// The run's directory: CA, configurations, Raft data, logs.
    pub dir: PathBuf,
    script: PathBuf,
    nodes: Vec<Option<Child>>,
    node_lines: Vec<Lines>,
    clients: Vec<Option<Child>>,
    consensus: String,
}

/// How often each node looks for an imbalance of grain activations, and how large one it
/// leaves alone: small, so the key-value shards (8 over 5 nodes) move now and then on
/// their own, and every time the nemesis piles them on one node.
const REBALANCE: &str = "\n[rebalance]\ninterval_ms = 2000\nthreshold = 2\n";

impl Cluster {
    /// Makes the namespaces, a CA and every configuration in `dir`; starts nothing.
    pub fn new(dir: &Path) -> Result<Cluster, SetupError> {
        if !is_root() {
            return Err(SetupError::NotRoot);
        }
        if !have("ip") {
            return Err(SetupError::Missing("ip", "iproute2"));
        }
        if !have("nft") {
            return Err(SetupError::Missing("nft", "nftables"));
        }
        std::fs::create_dir_all(dir).map_err(|e| SetupError::Command {
            what: format!("mkdir {}", dir.display()),
            detail: e.to_string(),
        })?;
        let script = dir.join("netns.sh");
        std::fs::write(&script, SCRIPT).map_err(|e| SetupError::Command {
            what: "writing netns.sh".into(),
            detail: e.to_string(),
        })?;
        let pid = std::process::id();
        let mut cluster = Cluster {
            prefix: format!("chaos-{pid}"),
            subnet: format!("10.78.{}", pid % 250 + 1),
            dir: dir.to_path_buf(),
            script,
            nodes: (0..NODES).map(|_| None).collect(),
            node_lines: (0..NODES).map(|_| Lines::default()).collect(),
            clients: (0..NODES).map(|_| None).collect(),
            consensus: String::new(),
        };
        let _ = cluster.netns(&["sweep"]);
        cluster.netns(&["up", &cluster.prefix.clone(), &cluster.subnet.clone(), "5"])?;
        cluster.atoll(&["ca", "init", "--dir", "ca", "--name", "chaos"])?;
        let mut ids = Vec::new();
        for i in 1..=NODES {
            ids.push(cluster.atoll(&["ca", "issue", &format!("n{i}"), "--dir", "ca"])?);
            cluster.atoll(&["ca", "issue", &format!("c{i}"), "--dir", "ca"])?;
        }
        let voters: Vec<String> = (1..=VOTERS)
            .map(|v| format!("\"{}@{}\"", ids[v - 1], cluster.addr(v, PORT)))
            .collect();
        let consensus = format!(
            "\n[consensus]\nvoters = [{}]\nrequest_timeout_ms = {REQUEST_TIMEOUT_MS}\n",
            voters.join(", ")
        );
        let with_rebalance = format!("{consensus}{REBALANCE}");
        for i in 1..=NODES {
            // Every node hosts grains (the key-value store the workload writes).
            let http = format!("http = \"{}\"\ngrains = true\n", cluster.addr(i, HTTP_PORT));
            cluster.write_config(
                &format!("n{i}"),
                &cluster.addr(i, PORT),
                &http,
                &with_rebalance,
            )?;
            cluster.write_config(
                &format!("c{i}"),
                &cluster.addr(i, CLIENT_PORT),
                "",
                &consensus,
            )?;
        }
        cluster.consensus = consensus;
        Ok(cluster)
    }

    fn addr(&self, i: usize, port: u16) -> String {
        format!("{}.{i}:{port}", self.subnet)
    }

    fn ns(&self, i: usize) -> String {
        format!("{}-n{i}", self.prefix)
    }

    /// `NAME.toml`, joining through n1 (unless it is n1), with short membership timings.
    fn write_config(
        &self,
        name: &str,
        addr: &str,
        extra: &str,
        consensus: &str,
    ) -> Result<(), SetupError> {
        let seeds = if addr == self.addr(1, PORT) {
            String::new()
        } else {
            format!("\"{}\"", self.addr(1, PORT))
        };
        let text = format!(
            "name = \"{name}\"\nlisten = \"{addr}\"\nthreads = 1\n{extra}\n\
             [tls]\nkey = \"ca/{name}.key\"\ncert = \"ca/{name}.pem\"\nca = \"ca/ca.pem\"\n\n\
             [cluster]\nenabled = true\nseeds = [{seeds}]\n\n\
             [cluster.swim]\nprobe_interval_ms = 500\nping_timeout_ms = 250\n\
             suspect_timeout_ms = 2500\nindirect_probes = 3\n{consensus}"
        );
        std::fs::write(self.dir.join(format!("{name}.toml")), text).map_err(|e| {
            SetupError::Command {
                what: format!("writing {name}.toml"),
                detail: e.to_string(),
            }
        })
    }

    fn netns(&self, args: &[&str]) -> Result<String, SetupError> {
        let out = Command::new("bash")
            .arg(&self.script)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| SetupError::Command {
                what: format!("netns.sh {args:?}"),
                detail: e.to_string(),
            })?;
        if !out.status.success() {
            return Err(SetupError::Command {
                what: format!("netns.sh {args:?}"),
                detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    fn atoll(&self, args: &[&str]) -> Result<String, SetupError> {
        let out = atoll_command()
            .args(args)
            .current_dir(&self.dir)
            .output()
            .map_err(|e| SetupError::Command {
                what: format!("atoll {args:?}"),
                detail: e.to_string(),
            })?;
        if !out.status.success() {
            return Err(SetupError::Command {
                what: format!("atoll {args:?}"),
                detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Starts node `i` with its configuration (and its Raft data directory, kept across
    /// restarts).
    pub fn start_node(&mut self, i: usize) -> Result<(), SetupError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("n{i}.log")))
            .map_err(|e| SetupError::Command {
                what: "opening a log".into(),
                detail: e.to_string(),
            })?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns(i)]);
        let atoll = atoll_command();
        cmd.arg(atoll.get_program()).args(atoll.get_args());
        let mut child = cmd
            .args(["node", "--config"])
            .arg(self.dir.join(format!("n{i}.toml")))
            .current_dir(&self.dir)
            .env(
                "RUST_LOG",
                std::env::var("ATOLL_CHAOS_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| SetupError::Command {
                what: format!("starting n{i}"),
                detail: e.to_string(),
            })?;
        let stdout = child.stdout.take().expect("piped");
        // Kept across restarts: every line the node ever printed.
        let lines = self.node_lines[i - 1].clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                lines
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((Instant::now(), line));
            }
        });
        self.nodes[i - 1] = Some(child);
        Ok(())
    }

    /// Waits until node `i` printed a line `pick` accepts.
    pub fn wait_node_line(
        &self,
        i: usize,
        what: &str,
        within: Duration,
        pick: impl Fn(&str) -> bool,
    ) -> Result<(), SetupError> {
        let until = Instant::now() + within;
        while Instant::now() < until {
            if self.node_lines[i - 1]
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .any(|(_, l)| pick(l))
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(SetupError::Timeout(within, format!("n{i}: {what}")))
    }

    /// Every `member unreachable cI ...` (or `cI-K`) line any node printed:
    /// `(when, node, client, incarnation)`.
    pub fn declarations(&self) -> Vec<(Instant, usize, usize, u32)> {
        let mut found = Vec::new();
        for (n, lines) in self.node_lines.iter().enumerate() {
            for (at, line) in lines.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                let client = line
                    .strip_prefix("member unreachable ")
                    .and_then(|rest| rest.split(' ').next())
                    .and_then(crate::history::parse_client_name);
                if let Some((c, k)) = client {
                    found.push((*at, n + 1, c, k));
                }
            }
        }
        found.sort();
        found
    }

    /// Starts incarnation `incarnation` of client `i` beside node `i`, a node named
    /// [`client_name`](crate::history::client_name)`(i, incarnation)`: each later
    /// incarnation gets a key and certificate of its own, so a new node id. Returns its
    /// stdin and stdout.
    pub fn start_client(
        &mut self,
        i: usize,
        incarnation: u32,
    ) -> Result<(ChildStdin, std::process::ChildStdout), SetupError> {
        let name = crate::history::client_name(i, incarnation);
        if !self.dir.join(format!("{name}.toml")).exists() {
            self.atoll(&["ca", "issue", &name, "--dir", "ca"])?;
            let consensus = self.consensus.clone();
            self.write_config(&name, &self.addr(i, CLIENT_PORT), "", &consensus)?;
        }
        let log = std::fs::File::create(self.dir.join(format!("{name}.log"))).map_err(|e| {
            SetupError::Command {
                what: "opening a log".into(),
                detail: e.to_string(),
            }
        })?;
        let me = std::env::current_exe().map_err(|e| SetupError::Command {
            what: "finding atoll-chaos".into(),
            detail: e.to_string(),
        })?;
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns(i)])
            .arg(me)
            .args(["__client", "--config"])
            .arg(self.dir.join(format!("{name}.toml")))
            .current_dir(&self.dir)
            .env(
                "RUST_LOG",
                std::env::var("ATOLL_CHAOS_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| SetupError::Command {
                what: format!("starting {name}"),
                detail: e.to_string(),
            })?;
        let io = (
            child.stdin.take().expect("piped"),
            child.stdout.take().expect("piped"),
        );
        self.clients[i - 1] = Some(child);
        Ok(io)
    }

    /// The pid of node `i`, while it runs.
    pub fn node_pid(&self, i: usize) -> Option<u32> {
        self.nodes[i - 1].as_ref().map(Child::id)
    }

    /// The pid of client `i`.
    pub fn client_pid(&self, i: usize) -> Option<u32> {
        self.clients[i - 1].as_ref().map(Child::id)
    }

    /// Kills client `i` with SIGKILL and reaps it.
    pub fn kill_client(&mut self, i: usize) {
        if let Some(mut child) = self.clients[i - 1].take() {
            let _ = child.kill();
            signal(child.id(), "-CONT");
            let _ = child.wait();
        }
    }

    /// Kills node `i` with SIGKILL and reaps it.
    pub fn kill_node(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i - 1].take() {
            signal(child.id(), "-CONT");
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops node `i` with SIGTERM and waits (up to `within`, then SIGKILL) for it to exit.
    pub fn stop_node(&mut self, i: usize, within: Duration) {
        if let Some(mut child) = self.nodes[i - 1].take() {
            signal(child.id(), "-TERM");
            let until = Instant::now() + within;
            while Instant::now() < until {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Processes that exited without being told to: `(name, status)`.
    pub fn exited(&mut self) -> Vec<(String, String)> {
        let mut gone = Vec::new();
        for (i, child) in self.nodes.iter_mut().enumerate() {
            if let Some(c) = child
                && let Ok(Some(status)) = c.try_wait()
            {
                gone.push((format!("n{}", i + 1), status.to_string()));
                *child = None;
            }
        }
        for (i, child) in self.clients.iter_mut().enumerate() {
            if let Some(c) = child
                && let Ok(Some(status)) = c.try_wait()
            {
                gone.push((format!("c{}", i + 1), status.to_string()));
                *child = None;
            }
        }
        gone
    }

    /// Whether node `i` runs.
    pub fn node_running(&self, i: usize) -> bool {
        self.nodes[i - 1].is_some()
    }

    /// `atoll status --json` of node `i`, if it runs and answers.
    fn status(&self, i: usize) -> Option<serde_json::Value> {
        if !self.node_running(i) {
            return None;
        }
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns(i)]);
        let atoll = atoll_command();
        let out = cmd
            .arg(atoll.get_program())
            .args(atoll.get_args())
            .args(["status", "--json", "--http", &self.addr(i, HTTP_PORT)])
            .output()
            .ok()?;
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Grain activations the nodes moved away since they last started (migrations the
    /// nemesis asked for and the nodes' own rebalancing), summed over the nodes that answer.
    pub fn grain_migrations(&self) -> u64 {
        (1..=NODES)
            .filter_map(|i| self.status(i)?["grains"]["migrations"].as_u64())
            .sum()
    }

    /// The Raft leader's node number, as the first voter that answers sees it.
    pub fn leader(&self) -> Option<usize> {
        for v in 1..=VOTERS {
            let Some(status) = self.status(v) else {
                continue;
            };
            if let Some(name) = status["raft"]["leader"].as_str()
                && let Some(n) = name.strip_prefix('n').and_then(|n| n.parse().ok())
            {
                return Some(n);
            }
        }
        None
    }

    /// Node `a` and node `b` cannot reach each other.
    pub fn cut(&self, a: usize, b: usize) -> Result<(), SetupError> {
        self.netns(&[
            "cut",
            &self.prefix,
            &self.subnet,
            &a.to_string(),
            &b.to_string(),
        ])
        .map(drop)
    }

    /// Packets from node `a` to node `b` are dropped; `b` to `a` still pass.
    pub fn block(&self, a: usize, b: usize) -> Result<(), SetupError> {
        self.netns(&[
            "block",
            &self.prefix,
            &self.subnet,
            &a.to_string(),
            &b.to_string(),
        ])
        .map(drop)
    }

    /// `pct`% of every node's packets are lost.
    pub fn loss(&self, pct: u64) -> Result<(), SetupError> {
        self.netns(&["loss", &self.prefix, &pct.to_string()])
            .map(drop)
    }

    /// Every node sends at most `kbit` kbit/s.
    pub fn rate(&self, kbit: u64) -> Result<(), SetupError> {
        self.netns(&["rate", &self.prefix, &kbit.to_string()])
            .map(drop)
    }

    /// Removes every network fault.
    pub fn heal(&self) -> Result<(), SetupError> {
        self.netns(&["heal", &self.prefix]).map(drop)
    }

    /// Sends `sig` (`-STOP`, `-CONT`) to `pid`.
    pub fn signal(&self, pid: u32, sig: &str) {
        signal(pid, sig);
    }

    /// Closes every client's stdin (they shut down) and waits briefly for them.
    pub fn stop_clients(&mut self, stdins: Vec<ChildStdin>) {
        drop(stdins);
        let until = Instant::now() + Duration::from_secs(10);
        for child in self.clients.iter_mut().flatten() {
            while Instant::now() < until {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self
            .nodes
            .iter_mut()
            .chain(self.clients.iter_mut())
            .flatten()
        {
            signal(child.id(), "-CONT");
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = self.netns(&["down", &self.prefix]);
    }
}

/// Writes one line to a client.
pub fn send_line(to: &mut ChildStdin, line: &str) -> std::io::Result<()> {
    writeln!(to, "{line}")?;
    to.flush()
}
