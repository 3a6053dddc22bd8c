//! A cluster of real `atoll node` processes, one per network namespace, all on one private
//! bridge, with faults injected per node and per direction (see `cluster.sh` beside this
//! file for the topology). Needs root; [`Cluster::new`] returns `None` (and says why)
//! where namespaces cannot be made, so the tests using it skip, unless
//! `ATOLL_REQUIRE_NETNS` is set: then every reason to skip is a failure (see [`skip`]).
//!
//! With consensus ([`Cluster::with_voters`]) the first nodes are Raft voters, every node
//! serves HTTP (read with [`Cluster::status`]), and client nodes ([`Cluster::start_client`])
//! can run beside them: the test binary itself, re-run in a namespace as a cluster member
//! that does what the test asks and prints what happened.

// Each test file uses a part of the harness.
#![allow(dead_code)]

pub mod client;

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const BIN: &str = env!("CARGO_BIN_EXE_atoll");
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/netns/cluster.sh");
/// Every node listens on this port of its own address.
const PORT: u16 = 7000;
/// A client node listens on this port of its namespace's address.
const CLIENT_PORT: u16 = 7001;
/// Every node serves HTTP on this port of its own address.
const HTTP_PORT: u16 = 7100;
/// How long a registration or lock request may take before it fails.
pub const REQUEST_TIMEOUT_MS: u64 = 3000;

/// The membership timings every node runs with: shorter than the defaults, still realistic.
pub const PROBE_MS: u64 = 500;
pub const PING_TIMEOUT_MS: u64 = 250;
pub const SUSPECT_MS: u64 = 2500;
pub const INDIRECT_PROBES: u64 = 3;
/// How long any expected line may take.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// One cluster at a time: five nodes are as much as two cores take.
static SERIAL: Mutex<()> = Mutex::new(());

/// A `member ...` stdout line: `member KIND NAME id=ID gen=GEN [addr=ADDR]`, or
/// `member fenced NAME old_gen=OLD new_gen=NEW` (then `generation` is NEW).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: String,
    pub name: String,
    pub generation: u64,
    pub old_generation: Option<u64>,
}

impl Event {
    pub fn parse(line: &str) -> Option<Event> {
        let words: Vec<&str> = line.split(' ').collect();
        if words.len() < 5 || words[0] != "member" {
            return None;
        }
        let field = |key: &str| {
            words[3..]
                .iter()
                .find_map(|w| w.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
        };
        let (generation, old_generation) = if words[1] == "fenced" {
            (field("new_gen")?, Some(field("old_gen")?))
        } else {
            (field("gen")?, None)
        };
        Some(Event {
            kind: words[1].to_string(),
            name: words[2].to_string(),
            generation,
            old_generation,
        })
    }

    /// Whether `line` is a `member KIND NAME ...` line.
    pub fn is(line: &str, kind: &str, name: &str) -> bool {
        Event::parse(line).is_some_and(|e| e.kind == kind && e.name == name)
    }
}

/// One node's stdout lines, each with when it was read.
type Lines = Arc<Mutex<Vec<(Duration, String)>>>;

struct Starver {
    stop: Arc<AtomicBool>,
    /// Returns how many times it stopped the process.
    thread: JoinHandle<u32>,
    pid: u32,
}

/// N nodes `n1..nN` at `10.77.NET.1..N`, each `atoll node` in namespace `PREFIX-nI`.
/// Dropping it kills the processes (by pid) and deletes the namespaces.
pub struct Cluster {
    prefix: String,
    subnet: String,
    n: usize,
    dir: PathBuf,
    children: Vec<Option<Child>>,
    /// Each node's stdout lines, with when they were read (since `started`).
    output: Vec<Lines>,
    started: Instant,
    /// What the test did to the cluster, and when.
    notes: Mutex<Vec<(Duration, String)>>,
    starver: Option<Starver>,
    /// How many of the nodes (the first ones) are Raft voters; 0 without consensus.
    voters: usize,
    /// Each node's id, from `atoll ca issue`.
    ids: Vec<String>,
    /// More of every member's configuration (tables appended to it).
    extra: String,
    /// Whether the nodes host grains (`grains = true`).
    grains: bool,
    clients: Vec<Client>,
    _serial: MutexGuard<'static, ()>,
}

/// A client node: the test binary run as a cluster member in node `i`'s namespace (see
/// the `workload` entry of the test file). It prints `W ...` lines; a `stop` line on its
/// stdin ends its work, closing stdin ends the process.
pub struct Client {
    pub i: usize,
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    lines: Lines,
}

impl Client {
    /// The `W ...` lines so far, each split into words (without the `W`).
    pub fn records(&self) -> Vec<Vec<String>> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(_, l)| l.strip_prefix("W "))
            .map(|l| l.split(' ').map(str::to_string).collect())
            .collect()
    }

    /// How many records start with `kind`.
    pub fn count(&self, kind: &str) -> usize {
        self.records().iter().filter(|r| r[0] == kind).count()
    }

    /// Tells the client to stop its work (it prints `W stopped`).
    pub fn stop(&mut self) {
        use std::io::Write;
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = writeln!(stdin, "stop");
            let _ = stdin.flush();
        }
    }
}

fn script(args: &[&str]) -> Output {
    Command::new("bash")
        .arg(SCRIPT)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("bash runs")
}

fn script_ok(args: &[&str]) -> String {
    let out = script(args);
    assert!(
        out.status.success(),
        "cluster.sh {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Set (to anything) where the namespace tests must run, as in CI: then [`skip`] fails the
/// test instead of letting it pass without having run.
pub const REQUIRE: &str = "ATOLL_REQUIRE_NETNS";

/// Says why this machine cannot run a namespace test, which then returns early (skips).
/// With [`REQUIRE`] set it panics instead, so a test can never pass without having run.
pub fn skip(why: &str) {
    assert!(
        std::env::var_os(REQUIRE).is_none(),
        "{REQUIRE} is set, but this test cannot run here: {why}"
    );
    eprintln!("skipping: {why} (set {REQUIRE}=1 to make this a failure)");
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next())
            == Some("0")
    })
}

/// Whether `program` can be run (`program -V` succeeds: `ip` and `nft` print their version).
pub fn have(program: &str) -> bool {
    Command::new(program)
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Cluster {
    /// Makes the namespaces, a CA and the node configurations; starts nothing. `None`
    /// (with a message on stderr) when this machine cannot run it.
    pub fn new(tag: &str, net: u8, n: usize) -> Option<Cluster> {
        Self::with_voters(tag, net, n, 0)
    }

    /// Like [`Cluster::new`], with consensus: nodes `1..=voters` are the Raft voters, every
    /// node (and client) lists them, and every node serves HTTP.
    pub fn with_voters(tag: &str, net: u8, n: usize, voters: usize) -> Option<Cluster> {
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        if !is_root() {
            skip("needs root for network namespaces (uid is not 0)");
            return None;
        }
        if !have("ip") {
            skip("needs `ip` (iproute2) for network namespaces");
            return None;
        }
        // Clusters left behind by test runs that were killed.
        let _ = script(&["sweep"]);
        let prefix = format!("atoll-{}-{tag}", std::process::id());
        let subnet = format!("10.77.{net}");
        let up = script(&["up", &prefix, &subnet, &n.to_string()]);
        if !up.status.success() {
            let _ = script(&["down", &prefix]);
            skip(&format!(
                "cannot create network namespaces: {}",
                String::from_utf8_lossy(&up.stderr).trim()
            ));
            return None;
        }
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!("{prefix}-{nanos}"));
        let cluster = Cluster {
            prefix,
            subnet,
            n,
            dir,
            children: (0..n).map(|_| None).collect(),
            output: (0..n).map(|_| Arc::default()).collect(),
            started: Instant::now(),
            notes: Mutex::default(),
            starver: None,
            voters,
            ids: Vec::new(),
            extra: String::new(),
            grains: false,
            clients: Vec::new(),
            _serial: serial,
        };
        let mut cluster = cluster;
        std::fs::create_dir_all(&cluster.dir).unwrap();
        cluster.atoll(&["ca", "init", "--dir", "ca", "--name", "netns"]);
        for i in 1..=n {
            let id = cluster.atoll(&["ca", "issue", &cluster.name(i), "--dir", "ca"]);
            cluster.ids.push(id);
        }
        for i in 1..=n {
            cluster.write_config(i);
        }
        Some(cluster)
    }

    /// Every member (nodes and the clients started from now on) runs the keep-majority
    /// split-brain policy with this window. Call before starting anything.
    pub fn keep_majority(&mut self, window_ms: u64) {
        self.extra = format!(
            "\n[cluster.split_brain]\npolicy = \"keep-majority\"\nwindow_ms = {window_ms}\n"
        );
        for i in 1..=self.n {
            self.write_config(i);
        }
    }

    /// Every node hosts grains (`grains = true`; needs voters). Call before starting
    /// anything.
    pub fn host_grains(&mut self) {
        self.grains = true;
        for i in 1..=self.n {
            self.write_config(i);
        }
    }

    pub fn name(&self, i: usize) -> String {
        format!("n{i}")
    }

    fn addr(&self, i: usize) -> String {
        format!("{}.{i}:{PORT}", self.subnet)
    }

    fn ns(&self, i: usize) -> String {
        format!("{}-n{i}", self.prefix)
    }

    fn atoll(&self, args: &[&str]) -> String {
        let out = Command::new(BIN)
            .args(args)
            .current_dir(&self.dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "atoll {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn http_addr(&self, i: usize) -> String {
        format!("{}.{i}:{HTTP_PORT}", self.subnet)
    }

    /// The `[consensus]` table and `http` line every node's configuration gets.
    fn consensus_table(&self) -> String {
        if self.voters == 0 {
            return String::new();
        }
        let voters: Vec<String> = (1..=self.voters)
            .map(|v| format!("\"{}@{}\"", self.ids[v - 1], self.addr(v)))
            .collect();
        format!(
            "\n[consensus]\nvoters = [{}]\nrequest_timeout_ms = {REQUEST_TIMEOUT_MS}\n",
            voters.join(", ")
        )
    }

    /// `nI.toml`: n1 founds the cluster, the others join through it.
    fn write_config(&self, i: usize) {
        let mut http = if self.voters > 0 {
            format!("http = \"{}\"\n", self.http_addr(i))
        } else {
            String::new()
        };
        if self.grains {
            http.push_str("grains = true\n");
        }
        self.write_member_config(&self.name(i), &self.addr(i), &http);
    }

    /// `NAME.toml` for a member listening on `addr`, joining through n1 (unless it is n1).
    fn write_member_config(&self, name: &str, addr: &str, extra: &str) {
        let seeds = if addr == self.addr(1) {
            String::new()
        } else {
            format!("\"{}\"", self.addr(1))
        };
        let text = format!(
            "name = \"{name}\"\nlisten = \"{addr}\"\nthreads = 1\n{extra}\n\
             [tls]\nkey = \"ca/{name}.key\"\ncert = \"ca/{name}.pem\"\nca = \"ca/ca.pem\"\n\n\
             [cluster]\nenabled = true\nseeds = [{seeds}]\n\n\
             [cluster.swim]\nprobe_interval_ms = {PROBE_MS}\nping_timeout_ms = {PING_TIMEOUT_MS}\n\
             suspect_timeout_ms = {SUSPECT_MS}\nindirect_probes = {INDIRECT_PROBES}\n{}{}",
            self.consensus_table(),
            self.extra
        );
        std::fs::write(self.dir.join(format!("{name}.toml")), text).unwrap();
    }

    /// Starts client node `cI` in node `i`'s namespace, running the test binary's
    /// `workload` entry with `ATOLL_WORKLOAD=work` (what the test file's entry understands).
    /// Returns its index for [`Cluster::client`].
    pub fn start_client(&mut self, i: usize, work: &str) -> usize {
        let name = format!("c{i}");
        if !self.dir.join(format!("ca/{name}.pem")).exists() {
            self.atoll(&["ca", "issue", &name, "--dir", "ca"]);
        }
        let addr = format!("{}.{i}:{CLIENT_PORT}", self.subnet);
        self.write_member_config(&name, &addr, "");
        self.note(format!("start client {name}: {work}"));
        let log = File::create(self.dir.join(format!("{name}.log"))).unwrap();
        let exe = std::env::current_exe().unwrap();
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns(i)])
            .arg(exe)
            .args([
                "workload",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .current_dir(&self.dir)
            .env("ATOLL_WORKLOAD", work)
            .env(
                "ATOLL_WORKLOAD_CONFIG",
                self.dir.join(format!("{name}.toml")),
            )
            .env(
                "RUST_LOG",
                std::env::var("ATOLL_NETNS_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines: Lines = Arc::default();
        let sink = lines.clone();
        let started = self.started;
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                sink.lock().unwrap().push((started.elapsed(), line));
            }
        });
        self.clients.push(Client {
            i,
            stdin: child.stdin.take(),
            child,
            lines,
        });
        self.clients.len() - 1
    }

    /// A client started with [`Cluster::start_client`].
    pub fn client(&self, k: usize) -> &Client {
        &self.clients[k]
    }

    /// Tells client `k` to stop its work and waits for its `W stopped`.
    pub fn stop_client(&mut self, k: usize) {
        self.note(format!("stop client c{}", self.clients[k].i));
        self.clients[k].stop();
        self.wait_for("a client to stop", |c| c.clients[k].count("stopped") > 0);
    }

    /// Node `i`'s status (`atoll status --json`, asked in its namespace).
    pub fn status(&self, i: usize) -> serde_json::Value {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns(i),
                BIN,
                "status",
                "--json",
                "--http",
            ])
            .arg(self.http_addr(i))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "atoll status on n{i}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.dump()
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Waits until node `i`'s status satisfies `done`; returns that status.
    pub fn wait_status(
        &self,
        i: usize,
        what: &str,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let until = Instant::now() + DEADLINE;
        loop {
            let s = self.status(i);
            if done(&s) {
                return s;
            }
            if Instant::now() > until {
                panic!(
                    "n{i}: not within {DEADLINE:?}: {what}\n{s:#}\n{}",
                    self.dump()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The voter that leads, as node `i` sees it (waits for one to be known).
    pub fn leader(&self, i: usize) -> usize {
        let s = self.wait_status(i, "a known Raft leader", |s| {
            s["raft"]["leader"].is_string()
        });
        let name = s["raft"]["leader"].as_str().unwrap();
        (1..=self.n).find(|&v| self.name(v) == name).unwrap()
    }

    /// Starts node `i` in its namespace; its stdout lines are collected from now on.
    pub fn start(&mut self, i: usize) {
        let name = self.name(i);
        let log = File::create(self.dir.join(format!("{name}.log"))).unwrap();
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns(i), BIN, "node", "--config"])
            .arg(self.dir.join(format!("{name}.toml")))
            .current_dir(&self.dir)
            // Each node logs to nI.log; ATOLL_NETNS_LOG sets the filter (default `info`).
            .env(
                "RUST_LOG",
                std::env::var("ATOLL_NETNS_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = self.output[i - 1].clone();
        let started = self.started;
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                lines.lock().unwrap().push((started.elapsed(), line));
            }
        });
        self.children[i - 1] = Some(child);
    }

    /// Starts every node (n1 first) and waits until each reports every other one joined.
    /// Returns the generation of each node (index 0 is n1's).
    pub fn start_all(&mut self) -> Vec<u64> {
        let started = Instant::now();
        self.start(1);
        self.wait_line(1, "n1 active", |l| Event::is(l, "active", "n1"));
        for i in 2..=self.n {
            self.start(i);
        }
        let active = |i| {
            let name = self.name(i);
            let line = self.wait_line(i, "active", |l| Event::is(l, "active", &name));
            Event::parse(&line).unwrap().generation
        };
        let generations: Vec<u64> = (1..=self.n).map(active).collect();
        for i in 1..=self.n {
            for j in (1..=self.n).filter(|&j| j != i) {
                let name = self.name(j);
                let line = self.wait_line(i, &format!("{name} joined"), |l| {
                    Event::is(l, "joined", &name)
                });
                assert_eq!(
                    Event::parse(&line).unwrap().generation,
                    generations[j - 1],
                    "{line}"
                );
            }
        }
        self.note("cluster formed".into());
        eprintln!(
            "{}: {} nodes formed a cluster in {:?}",
            self.prefix,
            self.n,
            started.elapsed()
        );
        generations
    }

    /// Node `i`'s stdout lines so far.
    pub fn lines(&self, i: usize) -> Vec<String> {
        let lines = self.output[i - 1].lock().unwrap();
        lines.iter().map(|(_, l)| l.clone()).collect()
    }

    /// The first stdout line of node `i` that `pick` accepts, waiting up to [`DEADLINE`]
    /// for it; panics with every node's output if none comes.
    pub fn wait_line(&self, i: usize, what: &str, pick: impl Fn(&str) -> bool) -> String {
        let until = Instant::now() + DEADLINE;
        loop {
            let found = self.output[i - 1]
                .lock()
                .unwrap()
                .iter()
                .find(|(_, l)| pick(l))
                .map(|(_, l)| l.clone());
            if let Some(found) = found {
                return found;
            }
            if Instant::now() > until {
                panic!(
                    "n{i}: no line for {what} within {DEADLINE:?}\n{}",
                    self.dump()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits up to [`DEADLINE`] for `done` to hold; panics with every node's output if it
    /// does not.
    pub fn wait_for(&self, what: &str, done: impl Fn(&Cluster) -> bool) {
        let until = Instant::now() + DEADLINE;
        while !done(self) {
            if Instant::now() > until {
                panic!("not within {DEADLINE:?}: {what}\n{}", self.dump());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// For `window`, checks every node's stdout for a line `bad` accepts; panics at the
    /// first one.
    pub fn assert_quiet(&self, window: Duration, what: &str, bad: impl Fn(&str) -> bool) {
        let until = Instant::now() + window;
        loop {
            for i in 1..=self.n {
                if let Some(line) = self.lines(i).iter().find(|l| bad(l)) {
                    panic!("n{i} printed {line:?} ({what})\n{}", self.dump());
                }
            }
            if Instant::now() > until {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn pid(&self, i: usize) -> u32 {
        self.children[i - 1].as_ref().expect("node started").id()
    }

    /// Records what the test does, for [`Cluster::dump`].
    fn note(&self, what: String) {
        let at = self.started.elapsed();
        self.notes.lock().unwrap().push((at, what));
    }

    /// Sends `sig` (`KILL`, `STOP`, `CONT`, `TERM`) to node `i`'s process.
    pub fn kill(&mut self, i: usize, sig: &str) {
        self.note(format!("SIG{sig} n{i}"));
        signal(self.pid(i), sig);
        if sig == "KILL" {
            let _ = self.children[i - 1].as_mut().unwrap().wait();
        }
    }

    /// Cuts node `i`'s cable: every packet to or from it is lost.
    pub fn isolate(&self, i: usize) {
        self.note(format!("isolate n{i}"));
        script_ok(&["isolate", &self.prefix, &i.to_string()]);
    }

    /// Packets from node `a` to node `b` are lost; `b` to `a` still arrive.
    pub fn block_one_way(&self, a: usize, b: usize) {
        self.note(format!("block n{a} -> n{b}"));
        script_ok(&[
            "block",
            &self.prefix,
            &self.subnet,
            &a.to_string(),
            &b.to_string(),
        ]);
    }

    /// Cuts the nodes in `a` (and the clients in their namespaces) from those in `b`, both
    /// ways; each group still talks within itself. Needs `nft`.
    pub fn partition(&self, a: &[usize], b: &[usize]) {
        let list = |g: &[usize]| -> String {
            g.iter().map(usize::to_string).collect::<Vec<_>>().join(",")
        };
        self.note(format!("partition {} | {}", list(a), list(b)));
        script_ok(&["partition", &self.prefix, &self.subnet, &list(a), &list(b)]);
    }

    /// `pct`% of the packets each node sends are lost. Returns how (`netem` or
    /// `nftables`), or why it cannot be done here.
    pub fn loss(&self, pct: u8) -> Result<String, String> {
        self.note(format!("{pct}% loss everywhere"));
        let out = script(&["loss", &self.prefix, &pct.to_string()]);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// Removes every network fault.
    pub fn heal(&self) {
        let dropped = script_ok(&["heal", &self.prefix]);
        if !dropped.is_empty() {
            eprintln!("{}: {dropped}", self.prefix);
        }
        self.note(format!("heal ({dropped})"));
    }

    /// Starves node `i` of CPU from a thread: stopped for `stopped`, running for
    /// `running`, over and over, until [`Cluster::stop_starving`].
    pub fn starve(&mut self, i: usize, stopped: Duration, running: Duration) {
        self.note(format!(
            "starve n{i}: stopped {stopped:?}, running {running:?}"
        ));
        let stop = Arc::new(AtomicBool::new(false));
        let pid = self.pid(i);
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut cycles = 0;
            while !flag.load(Ordering::SeqCst) {
                signal(pid, "STOP");
                std::thread::sleep(stopped);
                signal(pid, "CONT");
                std::thread::sleep(running);
                cycles += 1;
            }
            cycles
        });
        self.starver = Some(Starver { stop, thread, pid });
    }

    pub fn stop_starving(&mut self) {
        if let Some(s) = self.starver.take() {
            s.stop.store(true, Ordering::SeqCst);
            let cycles = s.thread.join().unwrap_or(0);
            signal(s.pid, "CONT");
            self.note(format!("stop starving (stopped the node {cycles} times)"));
            eprintln!("{}: stopped the starved node {cycles} times", self.prefix);
        }
    }

    /// Every node's stdout, and the end of its log.
    pub fn dump(&self) -> String {
        let mut out = format!(
            "node files in {}\n--- what the test did\n",
            self.dir.display()
        );
        for (at, what) in self.notes.lock().unwrap().iter() {
            out.push_str(&format!("  {:8.3}s {what}\n", at.as_secs_f64()));
        }
        for i in 1..=self.n {
            out.push_str(&format!("--- n{i} stdout\n"));
            for (at, line) in self.output[i - 1].lock().unwrap().iter() {
                out.push_str(&format!("  {:8.3}s {line}\n", at.as_secs_f64()));
            }
            let log =
                std::fs::read_to_string(self.dir.join(format!("n{i}.log"))).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            out.push_str(&format!("--- n{i} log (last {} lines)\n", tail.len()));
            for line in tail.iter().rev() {
                out.push_str(&format!("  {line}\n"));
            }
        }
        for c in &self.clients {
            let i = c.i;
            let lines = c.lines.lock().unwrap();
            out.push_str(&format!(
                "--- c{i} stdout (last 30 of {} lines)\n",
                lines.len()
            ));
            for (at, line) in lines.iter().rev().take(30).rev() {
                out.push_str(&format!("  {:8.3}s {line}\n", at.as_secs_f64()));
            }
            let log =
                std::fs::read_to_string(self.dir.join(format!("c{i}.log"))).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            out.push_str(&format!("--- c{i} log (last {} lines)\n", tail.len()));
            for line in tail.iter().rev() {
                out.push_str(&format!("  {line}\n"));
            }
        }
        out
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_starving();
        for c in &mut self.clients {
            c.stdin = None;
            let _ = c.child.kill();
            let _ = c.child.wait();
        }
        for child in self.children.iter_mut().flatten() {
            signal(child.id(), "CONT");
            let _ = child.kill();
            let _ = child.wait();
        }
        // Anything else still in the namespaces goes too, by pid.
        let _ = script(&["down", &self.prefix]);
        if std::thread::panicking() || std::env::var_os("ATOLL_KEEP_NODE_FILES").is_some() {
            eprintln!("kept node files in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
