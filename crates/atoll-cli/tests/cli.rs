//! The `atoll` binary, run for real: CA commands, configuration errors, nodes that connect,
//! crash and stop.

mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use atoll_actor::{
    Actor, ActorRef, ActorResult, CallError, Ctx, Down, ExitReason, Pid, ReplyTo, SendError,
};
use atoll_cluster::builtin::{Echo, EchoMsg};
use atoll_cluster::{Node, NodeConfig};
use atoll_net::{ClusterCa, NodeCertificate, NodeIdentity, RevocationList};
use tokio::sync::mpsc as tmpsc;

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
    // It keeps no Raft log, and no grain store either without `grains = true`.
    assert!(!dir.join("raft-w1/raft.redb").exists());
    assert!(!dir.join("raft-w1/grains.redb").exists());
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
#[test]
fn demo_narrates_the_cluster_grains_and_a_node_loss_then_cleans_up() {
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
        "== grains: virtual actors",
        "  counter/visits activated on n",
        "its state moved with it: value 2",
        "  kv: 5 keys set in 8 Replicated shard grains (each change saved on two nodes before it is acknowledged); banana deleted; range: apple=red cherry=dark red lime=green plum=purple",
        "== n3 is killed (SIGKILL)",
        "s: n3 unreachable",
        "s: demo-consistent released",
        "s: demo-strong released",
        "s: demo-lock released",
        "  demo-lock taken again by",
        "  chat: cat left with its node; present: ann",
        "kv shard grains of n3 answer again from the survivors under new epochs",
        "s: kv: every key read back after n3's loss: apple=red cherry=dark red lime=green plum=purple",
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
