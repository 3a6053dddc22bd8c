//! `atoll demo`: a three-node cluster on loopback, as separate `atoll node` processes, with
//! the features narrated as they work: membership, the Raft core, a chat room with members
//! on every node, names in each scope, a lock, grains and the key-value store on them, and
//! then a node killed and what follows. With `--keep` the cluster stays up afterwards.
//!
//! The demo itself joins as a fourth member (not a voter) to drive the others: it spawns
//! processes on them from their built-in factories and calls them.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use atoll_cluster::builtin::{HoldArgs, HoldStatus, Holder, HolderMsg};
use atoll_cluster::chat::{Member, MemberMsg, Room, RoomMsg};
use atoll_cluster::{MemberEvent, MemberState, Node};
use atoll_core::{NodeId, Pid, Scope};

use crate::error::Error;

mod grains;

/// The longest any step may take before the demo gives up.
const STEP: Duration = Duration::from_secs(30);
/// Timeout of one call to a process.
const CALL: Duration = Duration::from_secs(5);
/// The nodes the demo starts.
const NODES: [&str; 3] = ["n1", "n2", "n3"];
/// The node the demo kills.
const VICTIM: usize = 2;

fn fail(what: impl Into<String>) -> Error {
    Error::Demo(what.into())
}

fn say(line: &str) {
    println!("{line}");
}

/// One `atoll node` child and the lines it prints.
struct NodeChild {
    name: &'static str,
    child: Child,
    lines: mpsc::Receiver<String>,
}

/// Everything the demo made: killed and removed on drop, however the demo ends.
struct Scene {
    dir: PathBuf,
    children: Vec<NodeChild>,
}

impl Drop for Scene {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.child.kill();
            let _ = c.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port(udp: bool) -> Result<u16, Error> {
    let port = if udp {
        std::net::UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr())
    } else {
        std::net::TcpListener::bind("127.0.0.1:0").and_then(|s| s.local_addr())
    };
    port.map(|a| a.port())
        .map_err(|e| fail(format!("no free port on 127.0.0.1: {e}")))
}

/// Waits for a line of `child` that `pick` accepts.
fn wait_line<T>(c: &NodeChild, what: &str, pick: impl Fn(&str) -> Option<T>) -> Result<T, Error> {
    let until = Instant::now() + STEP;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match c.lines.recv_timeout(left) {
            Ok(line) => {
                if let Some(found) = pick(&line) {
                    return Ok(found);
                }
            }
            Err(_) => {
                return Err(fail(format!(
                    "{} printed no line for {what} within {STEP:?} (its log is {}.log)",
                    c.name, c.name
                )));
            }
        }
    }
}

/// `atoll demo`; with `keep`, the cluster stays up after the narration until Ctrl-C.
pub fn run(keep: bool) -> Result<(), Error> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("atoll-demo-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
        path: dir.clone(),
        source,
    })?;
    let mut scene = Scene {
        dir: dir.clone(),
        children: Vec::new(),
    };
    say(&format!(
        "== atoll demo: three nodes on 127.0.0.1, each its own process (files in {})",
        dir.display()
    ));

    let ca_dir = dir.join("ca");
    let ca = atoll_net::CaDirectory::new(&ca_dir);
    ca.init("demo")
        .map_err(crate::ca::directory_error(&ca_dir))?;
    let mut ids = Vec::new();
    for name in NODES.iter().chain(&["demo"]) {
        ids.push(
            ca.issue(name, &ca_dir)
                .map_err(crate::ca::directory_error(&ca_dir))?
                .id,
        );
    }
    let ports = NODES
        .iter()
        .map(|_| free_port(true))
        .collect::<Result<Vec<_>, _>>()?;
    let http = NODES
        .iter()
        .map(|_| free_port(false))
        .collect::<Result<Vec<_>, _>>()?;
    let voters: Vec<String> = (0..NODES.len())
        .map(|i| format!("\"{}@127.0.0.1:{}\"", ids[i], ports[i]))
        .collect();
    let seed = format!("\"127.0.0.1:{}\"", ports[0]);
    let config = |name: &str, listen: String, seeds: &str, http: Option<u16>| {
        let http = http.map_or(String::new(), |p| format!("http = \"127.0.0.1:{p}\"\n"));
        format!(
            "name = \"{name}\"\nlisten = \"{listen}\"\nthreads = 1\ngrains = true\n{http}\n\
             [log]\nfilter = \"warn\"\n\n\
             [tls]\nkey = \"ca/{name}.key\"\ncert = \"ca/{name}.pem\"\nca = \"ca/ca.pem\"\n\n\
             [cluster]\nenabled = true\nseeds = [{seeds}]\n\n\
             [cluster.swim]\nprobe_interval_ms = 300\nping_timeout_ms = 150\n\
             suspect_timeout_ms = 1500\nindirect_probes = 2\n\n\
             [consensus]\nvoters = [{}]\nheartbeat_interval_ms = 50\n\
             election_timeout_min_ms = 300\nelection_timeout_max_ms = 600\n",
            voters.join(", ")
        )
    };
    let write = |file: &str, text: String| {
        let path = dir.join(file);
        std::fs::write(&path, text).map_err(|source| Error::Io { path, source })
    };
    for (i, name) in NODES.iter().enumerate() {
        let seeds = if i == 0 { "" } else { seed.as_str() };
        let listen = format!("127.0.0.1:{}", ports[i]);
        write(
            &format!("{name}.toml"),
            config(name, listen, seeds, Some(http[i])),
        )?;
    }
    write(
        "demo.toml",
        config("demo", "127.0.0.1:0".into(), &seed, None),
    )?;

    let exe = std::env::current_exe().map_err(|source| Error::Runtime {
        what: "path of this program",
        source,
    })?;
    for name in NODES {
        scene.children.push(start_node(&exe, &dir, name)?);
    }
    for c in &scene.children {
        wait_line(c, "its ready line", |l| {
            l.starts_with("atoll node ").then_some(())
        })?;
        wait_line(c, "its Raft voter", |l| {
            l.starts_with("consensus voter").then_some(())
        })?;
    }
    let pids: Vec<String> = scene
        .children
        .iter()
        .map(|c| format!("{} (pid {})", c.name, c.child.id()))
        .collect();
    say(&format!("started {}", pids.join(", ")));
    for (name, port) in NODES.iter().zip(&http) {
        say(&format!(
            "  {name}: status page http://127.0.0.1:{port}/ (atoll status --http 127.0.0.1:{port})"
        ));
    }

    let file = crate::config::NodeFile::load(&dir.join("demo.toml"))?;
    let loaded = file.node_config()?;
    let runtime = crate::node::runtime(2)?;
    let result = runtime.block_on(async {
        let node = Node::start(loaded.config)?;
        let grains = crate::grains::caller(&node);
        let result = narrate(&node, &grains, &mut scene, &http).await;
        node.shutdown(Duration::from_secs(2)).await;
        result
    });
    result?;
    if keep {
        let victim = NODES[VICTIM];
        scene.children[VICTIM] = start_node(&exe, &dir, victim)?;
        wait_line(&scene.children[VICTIM], "its ready line", |l| {
            l.starts_with("atoll node ").then_some(())
        })?;
        say(&format!(
            "\n== {victim} restarted; the cluster keeps running until Ctrl-C"
        ));
        for (name, port) in NODES.iter().zip(&http) {
            say(&format!(
                "  {name}: http://127.0.0.1:{port}/  (atoll status --http 127.0.0.1:{port}; atoll attach {name} --http 127.0.0.1:{port})"
            ));
        }
        runtime
            .block_on(tokio::signal::ctrl_c())
            .map_err(|source| Error::Runtime {
                what: "Ctrl-C handler",
                source,
            })?;
        say("");
    }
    runtime.shutdown_timeout(Duration::from_secs(1));

    for c in &scene.children {
        let _ = Command::new("kill")
            .args(["-TERM", &c.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
    }
    for c in &mut scene.children {
        let until = Instant::now() + STEP;
        while c.child.try_wait().ok().flatten().is_none() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    drop(scene);
    say("== done: nodes stopped, files removed");
    Ok(())
}

fn start_node(exe: &Path, dir: &Path, name: &'static str) -> Result<NodeChild, Error> {
    let log =
        std::fs::File::create(dir.join(format!("{name}.log"))).map_err(|source| Error::Io {
            path: dir.join(format!("{name}.log")),
            source,
        })?;
    let mut child = Command::new(exe)
        .args(["node", "--config"])
        .arg(dir.join(format!("{name}.toml")))
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(|source| Error::Runtime {
            what: "node process",
            source,
        })?;
    let stdout = child.stdout.take().expect("piped");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    Ok(NodeChild { name, child, lines })
}

/// Polls `check` every 20 ms until it gives a value, for at most [`STEP`].
async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> Result<T, Error> {
    let until = tokio::time::Instant::now() + STEP;
    loop {
        if let Some(v) = check() {
            return Ok(v);
        }
        if tokio::time::Instant::now() > until {
            return Err(fail(format!("{what}: not within {STEP:?}")));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn node_id(node: &Node, name: &str) -> Result<NodeId, Error> {
    node.remote(name)
        .map(|r| r.id())
        .ok_or_else(|| fail(format!("{name} is not a member")))
}

fn call_err(what: &str) -> impl Fn(atoll_actor::CallError) -> Error + '_ {
    move |e| fail(format!("{what}: {e}"))
}

async fn narrate(
    node: &Node,
    grains: &atoll_grain::Grains,
    scene: &mut Scene,
    http: &[u16],
) -> Result<(), Error> {
    let swim = node.membership().ok_or_else(|| fail("no membership"))?;
    let mut events = node
        .member_events()
        .ok_or_else(|| fail("no membership events"))?;

    say("\n== membership (SWIM gossip over QUIC datagrams)");
    eventually("every node active", || {
        let active = swim
            .members()
            .iter()
            .filter(|m| m.state == MemberState::Active)
            .count();
        (active == NODES.len()).then_some(())
    })
    .await?;
    let mut members = swim.members();
    members.sort_by(|a, b| a.identity.name().cmp(b.identity.name()));
    for m in members {
        say(&format!(
            "  {} active at {} (generation {})",
            m.identity.name(),
            m.identity.addr,
            m.identity.generation
        ));
    }
    let addr = format!("127.0.0.1:{}", http[0]);
    let raft = tokio::task::spawn_blocking(move || {
        let until = Instant::now() + STEP;
        loop {
            if let Ok(s) = crate::status::fetch_status(&addr)
                && let Some(raft) = s.raft
                && raft.leader.is_some()
                // Voters are shown by name once n1 has met them all.
                && raft.voters.iter().all(|v| NODES.contains(&v.as_str()))
            {
                return Ok(raft);
            }
            if Instant::now() > until {
                return Err(fail("no Raft leader"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .map_err(|e| fail(e.to_string()))??;
    let mut voters = raft.voters.clone();
    voters.sort();
    say(&format!(
        "  raft: voters {}; leader {}, term {}",
        voters.join(", "),
        raft.leader.unwrap_or_default(),
        raft.term.unwrap_or(0)
    ));

    say("\n== chat: a room on n1, members on n1, n2 and n3");
    let ids: Vec<NodeId> = NODES
        .iter()
        .map(|n| node_id(node, n))
        .collect::<Result<_, _>>()?;
    let ids = &ids;
    let spawn = |at: usize, factory: &'static str| async move {
        node.spawn_remote(ids[at], factory, &())
            .await
            .map_err(|e| fail(format!("spawning {factory} on {}: {e}", NODES[at])))
    };
    let room_pid = node
        .spawn_remote(ids[0], "chat_room", &"lobby".to_string())
        .await
        .map_err(|e| fail(format!("spawning the room: {e}")))?;
    let room = node
        .actor_ref::<Room>(room_pid)
        .map_err(|e| fail(e.to_string()))?;
    let nicks = ["ann", "bob", "cat"];
    let mut members = Vec::new();
    for (at, nick) in nicks.iter().enumerate() {
        let pid = spawn(at, "chat_member").await?;
        let present = room
            .call(
                |reply| RoomMsg::Join {
                    nick: nick.to_string(),
                    member: pid,
                    reply,
                },
                CALL,
            )
            .await
            .map_err(call_err("join"))?;
        say(&format!(
            "  {nick} ({pid} on {}) joined lobby; present: {}",
            NODES[at],
            present.join(", ")
        ));
        members.push(
            node.actor_ref::<Member>(pid)
                .map_err(|e| fail(e.to_string()))?,
        );
    }
    for (nick, text) in [
        ("ann", "hello from n1"),
        ("bob", "hi ann, n2 here"),
        ("cat", "and n3 says hi"),
    ] {
        let seq = room
            .call(
                |reply| RoomMsg::Post {
                    nick: nick.into(),
                    text: text.into(),
                    reply,
                },
                CALL,
            )
            .await
            .map_err(call_err("post"))?;
        say(&format!("  {nick} says {text:?} -> line #{seq}"));
    }
    let history = room
        .call(|reply| RoomMsg::History { last: 10, reply }, CALL)
        .await
        .map_err(call_err("history"))?;
    say(&format!("  history has {} lines:", history.len()));
    for line in &history {
        say(&format!("    #{} {}: {}", line.seq, line.from, line.text));
    }
    let heard = eventually_heard(&members[2], 3).await?;
    say(&format!(
        "  cat on n3 heard: {}",
        heard
            .iter()
            .filter(|l| l.starts_with('#'))
            .cloned()
            .collect::<Vec<_>>()
            .join(" | ")
    ));
    let left = room
        .call(
            |reply| RoomMsg::Leave {
                member: members[1].pid(),
                reply,
            },
            CALL,
        )
        .await
        .map_err(call_err("leave"))?;
    let present = room
        .call(RoomMsg::Members, CALL)
        .await
        .map_err(call_err("members"))?;
    say(&format!(
        "  bob left (was a member: {left}); present: {}",
        present.join(", ")
    ));

    say("\n== names in every scope, and a lock");
    let hold = |at: usize, args: HoldArgs| async move {
        let pid = node
            .spawn_remote(ids[at], "holder", &args)
            .await
            .map_err(|e| fail(format!("spawning a holder on {}: {e}", NODES[at])))?;
        let status: HoldStatus = node
            .actor_ref::<Holder>(pid)
            .map_err(|e| fail(e.to_string()))?
            .call(HolderMsg::Status, Duration::from_secs(15))
            .await
            .map_err(call_err("holder status"))?;
        Ok::<_, Error>((pid, status))
    };
    let named = |name: &str, scope| HoldArgs {
        name: Some((name.to_string(), scope)),
        lock: None,
    };
    let scopes = [
        (0, "demo-local", Scope::Local),
        (1, "demo-eventual", Scope::Eventual),
        (VICTIM, "demo-consistent", Scope::Consistent),
        (VICTIM, "demo-strong", Scope::Strong),
    ];
    for (at, name, scope) in scopes {
        let (pid, status) = hold(at, named(name, scope)).await?;
        status
            .registered
            .map_err(|e| fail(format!("registering {name}: {e}")))?;
        let seen = match scope {
            Scope::Local => "resolves on n1 only".to_string(),
            _ => {
                eventually(&format!("{name} resolved here"), || {
                    (node.whereis(name) == Some(pid)).then_some(())
                })
                .await?;
                "resolves on every node".to_string()
            }
        };
        say(&format!(
            "  {name}: {} name of {pid} on {}; {seen}",
            atoll_cluster::scope_name(scope),
            NODES[at]
        ));
    }
    let (holder, status) = hold(
        VICTIM,
        HoldArgs {
            name: None,
            lock: Some("demo-lock".into()),
        },
    )
    .await?;
    let token = status
        .lock
        .map_err(|e| fail(format!("taking demo-lock: {e}")))?
        .ok_or_else(|| fail("no lock token"))?;
    say(&format!(
        "  demo-lock: held by {holder} on {} with fencing token {token}",
        NODES[VICTIM]
    ));

    // Grain routers of the three nodes and this one's.
    eventually("every grain router in the process table", || {
        (node.find_by_type("GrainRouter").len() > NODES.len()).then_some(())
    })
    .await?;
    let grain_scene = grains::before_kill(grains, ids).await?;

    let victim = NODES[VICTIM];
    say(&format!(
        "\n== {victim} is killed (SIGKILL): no goodbye, only silence"
    ));
    let killed = Instant::now();
    let _ = scene.children[VICTIM].child.kill();
    let _ = scene.children[VICTIM].child.wait();
    let mut suspect = false;
    loop {
        let event = tokio::time::timeout(STEP, events.recv())
            .await
            .map_err(|_| fail(format!("{victim} was not declared unreachable")))?
            .ok_or_else(|| fail("membership events ended"))?;
        let at = killed.elapsed().as_secs_f64();
        match event {
            MemberEvent::Suspect(m) if m.name() == victim && !suspect => {
                suspect = true;
                say(&format!(
                    "  {at:.1} s: {victim} suspect (missed its probes)"
                ));
            }
            MemberEvent::Unreachable(m) if m.name() == victim => {
                say(&format!(
                    "  {at:.1} s: {victim} unreachable (suspect timeout passed)"
                ));
                break;
            }
            _ => {}
        }
    }
    for name in ["demo-consistent", "demo-strong"] {
        eventually(&format!("{name} released"), || {
            node.whereis(name).is_none().then_some(())
        })
        .await?;
        say(&format!(
            "  {:.1} s: {name} released (its owner's node is gone)",
            killed.elapsed().as_secs_f64()
        ));
    }
    eventually("demo-lock released", || {
        node.lock_holder("demo-lock").is_none().then_some(())
    })
    .await?;
    say(&format!(
        "  {:.1} s: demo-lock released",
        killed.elapsed().as_secs_f64()
    ));
    let (new_holder, status) = hold(
        0,
        HoldArgs {
            name: None,
            lock: Some("demo-lock".into()),
        },
    )
    .await?;
    let new_token = status
        .lock
        .map_err(|e| fail(format!("taking demo-lock again: {e}")))?
        .ok_or_else(|| fail("no lock token"))?;
    if new_token <= token {
        return Err(fail(format!(
            "fencing token went backwards: {token} then {new_token}"
        )));
    }
    say(&format!(
        "  demo-lock taken again by {new_holder} on n1: token {new_token} > {token}"
    ));
    let present = eventually_members(&room, &["ann"]).await?;
    say(&format!(
        "  chat: cat left with its node; present: {}",
        present.join(", ")
    ));
    let eventual = node.whereis("demo-eventual");
    say(&format!(
        "  demo-eventual still resolves to {} on n2",
        eventual.map_or("nothing".to_string(), |p: Pid| p.to_string())
    ));
    grains::after_kill(grains, ids, &grain_scene, killed).await
}

async fn eventually_heard(
    member: &atoll_actor::ActorRef<Member>,
    lines: usize,
) -> Result<Vec<String>, Error> {
    let until = tokio::time::Instant::now() + STEP;
    loop {
        let heard = member
            .call(MemberMsg::Heard, CALL)
            .await
            .map_err(call_err("heard"))?;
        if heard.iter().filter(|l| l.starts_with('#')).count() >= lines {
            return Ok(heard);
        }
        if tokio::time::Instant::now() > until {
            return Err(fail(format!("a member heard only {heard:?}")));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn eventually_members(
    room: &atoll_actor::ActorRef<Room>,
    expected: &[&str],
) -> Result<Vec<String>, Error> {
    let until = tokio::time::Instant::now() + STEP;
    loop {
        let present = room
            .call(RoomMsg::Members, CALL)
            .await
            .map_err(call_err("members"))?;
        if present == expected {
            return Ok(present);
        }
        if tokio::time::Instant::now() > until {
            return Err(fail(format!("room members are {present:?}")));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
