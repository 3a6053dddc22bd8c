//! Chat rooms as grains, with members in separate processes (separate nodes) talking over
//! QUIC.
//!
//! Run it with no arguments for a scripted session: it makes a cluster CA in a temporary
//! directory and starts itself three times (ann, bob and cat, the three voters of the
//! cluster's consensus core), each a node of its own, and prints what each one sees:
//!
//! ```sh
//! cargo run --release --example chat
//! ```
//!
//! Or run the members yourself, in separate terminals (lines you type are said in the
//! room; `/who`, `/history`, `/leave` do what they say, `/room NAME` moves you to another
//! room):
//!
//! ```sh
//! atoll ca init --dir chat-ca
//! cargo run --release --example chat -- --ca chat-ca --nick ann --listen 127.0.0.1:7401
//! cargo run --release --example chat -- --ca chat-ca --nick bob --join 127.0.0.1:7401
//! cargo run --release --example chat -- --ca chat-ca --nick cat --join 127.0.0.1:7401 --room attic
//! ```
//!
//! A room is a grain (`atoll::grain::chat::ChatRoom`) addressed by its name: any member
//! reaches it with `node.grain::<ChatRoom>("lobby")`, the first message activates it on
//! some node of the cluster, and its members and history are its `Replicated` state, so
//! it keeps them when it goes idle, moves, or loses its node. Grains need the consensus
//! core: the voters are listed in `DIR/voters` (node id and address a line). By hand, the
//! first member (the one without `--join`) writes it with itself as the only voter if
//! there is none; delete it to found a new cluster. Each member keeps its key, Raft log
//! and grain store in `DIR` too (`NICK.key`, `NICK-raft`, `NICK-grains.redb`).

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use atoll::chat::{Member, MemberMsg};
use atoll::grain::chat::{ChatMsg, ChatReply, ChatRoom};
use atoll::grain::{GrainId, Grains, GrainsConfig, NodeGrainsExt, RedbStore};
use atoll::net::{ClusterCa, NodeIdentity, RevocationList};
use atoll::{ActorRef, ConsensusConfig, MembershipConfig, Node, NodeConfig, SwimConfig};

const CALL: Duration = Duration::from_secs(5);
const WAIT: Duration = Duration::from_secs(30);
/// The members of the scripted session, and what each does.
const SCRIPT: [(&str, &str); 3] = [
    (
        "ann",
        "/wait 3;hello from ann;/heard 3;/wait 1;/history;/leave;/sync",
    ),
    (
        "bob",
        "/wait 3;hi ann, bob here;/heard 3;/who;/room attic;bob found the attic;/history;/leave;/sync",
    ),
    ("cat", "/wait 3;cat says hi;/heard 3;/who;/leave;/sync"),
];

struct Args {
    ca: PathBuf,
    nick: String,
    listen: SocketAddr,
    join: Option<SocketAddr>,
    room: String,
    script: Option<String>,
}

fn parse_args() -> Option<Args> {
    let mut it = std::env::args().skip(1);
    let mut ca = None;
    let mut nick = None;
    let mut listen = "127.0.0.1:0".parse().ok()?;
    let mut join = None;
    let mut room = "lobby".to_string();
    let mut script = None;
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        let addr = |v: &str| {
            v.parse()
                .unwrap_or_else(|_| usage(&format!("bad address {v:?}")))
        };
        match flag.as_str() {
            "--ca" => ca = Some(PathBuf::from(value)),
            "--nick" => nick = Some(value),
            "--listen" => listen = addr(&value),
            "--join" => join = Some(addr(&value)),
            "--room" => room = value,
            "--script" => script = Some(value),
            _ => usage(&format!("unknown flag {flag}")),
        }
    }
    if ca.is_none() && nick.is_none() {
        return None;
    }
    Some(Args {
        ca: ca.unwrap_or_else(|| usage("--ca DIR is required")),
        nick: nick.unwrap_or_else(|| usage("--nick NICK is required")),
        listen,
        join,
        room,
        script,
    })
}

fn usage(problem: &str) -> ! {
    eprintln!(
        "{problem}\nusage: chat [--ca DIR --nick NICK [--listen ADDR] [--join ADDR] [--room NAME] [--script 'LINE;LINE']]"
    );
    std::process::exit(2)
}

fn main() {
    match parse_args() {
        Some(args) => {
            let rt = tokio::runtime::Runtime::new().expect("runtime");
            if let Err(e) = rt.block_on(member(args)) {
                eprintln!("chat: {e}");
                std::process::exit(1);
            }
        }
        None => session(),
    }
}

fn free_addr() -> SocketAddr {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free port")
}

/// The scripted session: three processes of this program, one node each, the three
/// voters of the consensus core.
fn session() {
    let dir = std::env::temp_dir().join(format!("atoll-chat-{}", std::process::id()));
    let ca = ClusterCa::create("chat").expect("cluster CA");
    ca.save(&dir).expect("CA files");
    let addrs: Vec<SocketAddr> = SCRIPT.iter().map(|_| free_addr()).collect();
    let mut voters = String::new();
    for ((nick, _), addr) in SCRIPT.iter().zip(&addrs) {
        let key = NodeIdentity::generate().expect("key");
        key.save(dir.join(format!("{nick}.key"))).expect("key file");
        voters.push_str(&format!("{} {addr}\n", key.node_id()));
    }
    std::fs::write(dir.join("voters"), voters).expect("voters file");
    let exe = std::env::current_exe().expect("this program");
    println!(
        "chat: ann, bob and cat are three nodes in three processes, the voters of the consensus \
         core; a room is a grain any of them reaches by its name"
    );
    let mut members = Vec::new();
    for (i, (nick, script)) in SCRIPT.iter().enumerate() {
        let listen = addrs[i].to_string();
        let join = addrs[0].to_string();
        let mut cmd = Command::new(&exe);
        cmd.args(["--ca", dir.to_str().expect("utf-8 path"), "--nick", nick])
            .args(["--listen", &listen]);
        if i > 0 {
            cmd.args(["--join", &join]);
        }
        let child = cmd
            .args(["--script", script])
            .stdin(Stdio::null())
            .spawn()
            .expect("a member process");
        members.push(child);
    }
    // Every member is waited for, even after one failed.
    let exits: Vec<bool> = members
        .iter_mut()
        .map(|m| m.wait().is_ok_and(|s| s.success()))
        .collect();
    let ok = exits.iter().all(|&ok| ok);
    let _ = std::fs::remove_dir_all(&dir);
    if !ok {
        eprintln!("chat: a member failed");
        std::process::exit(1);
    }
    println!("chat: everyone left; done");
}

/// The voters listed in `DIR/voters`; the first member by hand lists itself if the file
/// is not there.
fn voters(
    dir: &Path,
    key: &NodeIdentity,
    listen: SocketAddr,
    founder: bool,
) -> Result<Vec<(atoll::NodeId, SocketAddr)>, String> {
    let path = dir.join("voters");
    if !path.exists() && founder {
        std::fs::write(&path, format!("{} {listen}\n", key.node_id()))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "{}: {e} (the first member, started without --join, writes it)",
            path.display()
        )
    })?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut words = l.split_whitespace();
            let id = words.next().and_then(|w| w.parse().ok());
            let addr = words.next().and_then(|w| w.parse().ok());
            id.zip(addr)
                .ok_or_else(|| format!("{}: bad line {l:?}", path.display()))
        })
        .collect()
}

fn start(args: &Args) -> Result<(Node, Grains), String> {
    let ca = ClusterCa::load(&args.ca)
        .map_err(|e| format!("the CA (make one with `atoll ca init --dir DIR`): {e}"))?;
    let key_path = args.ca.join(format!("{}.key", args.nick));
    let key = match NodeIdentity::load(&key_path) {
        Ok(key) => key,
        Err(_) => {
            let key = NodeIdentity::generate().map_err(|e| e.to_string())?;
            key.save(&key_path).map_err(|e| e.to_string())?;
            key
        }
    };
    // The founder's address goes into the voters file: it needs a real port.
    let listen = match (args.join, args.listen.port()) {
        (None, 0) => free_addr(),
        _ => args.listen,
    };
    let voters = voters(&args.ca, &key, listen, args.join.is_none())?;
    let cert = ca
        .issue(&args.nick, &key.public_key())
        .map_err(|e| e.to_string())?;
    let swim = SwimConfig {
        probe_interval: Duration::from_millis(300),
        ping_timeout: Duration::from_millis(150),
        suspect_timeout: Duration::from_millis(1500),
        ..SwimConfig::default()
    };
    let raft_dir = args.ca.join(format!("{}-raft", args.nick));
    let config = NodeConfig::with_ca(
        &args.nick,
        listen,
        key,
        cert,
        ca.trust(RevocationList::new()),
    )
    .with_membership(MembershipConfig {
        seeds: args.join.into_iter().collect(),
        swim,
        ..MembershipConfig::default()
    })
    .with_consensus(ConsensusConfig::new(voters, raft_dir));
    let node = Node::start(config).map_err(|e| format!("node: {e}"))?;
    let store = RedbStore::open(args.ca.join(format!("{}-grains.redb", args.nick)))
        .map_err(|e| format!("grain store: {e}"))?;
    let mut grains = GrainsConfig::default().with_store(store);
    grains.call_timeout = CALL;
    // One copy besides the host's: a room keeps storing its lines with one node down.
    grains.replicas = 1;
    let grains = Grains::start(&node, grains);
    grains
        .register(ChatRoom::new)
        .map_err(|e| format!("chat rooms: {e}"))?;
    Ok((node, grains))
}

/// One member's session: its room, its member process, and how to name nodes.
struct Chat {
    node: Node,
    nick: String,
    room: String,
    me: ActorRef<Member>,
}

impl Chat {
    fn say(&self, line: impl std::fmt::Display) {
        println!("[{}] {line}", self.nick);
    }

    async fn call(&self, msg: ChatMsg) -> Result<ChatReply, String> {
        self.node
            .grain::<ChatRoom>(&self.room)
            .call(msg)
            .await
            .map_err(|e| format!("room {}: {e}", self.room))
    }

    /// The room's members; the first call activates the room, once the cluster has a
    /// consensus leader and grain services to place it on.
    async fn members(&self) -> Result<Vec<String>, String> {
        match self.call(ChatMsg::Members).await? {
            ChatReply::Members(nicks) => Ok(nicks),
            other => Err(format!("members: unexpected {other:?}")),
        }
    }

    /// Which node runs the room, by name.
    fn host(&self) -> String {
        let id = GrainId::new("chat_room", &self.room);
        let Some(at) = self.node.grains().and_then(|g| g.cached(&id)) else {
            return "?".into();
        };
        if at.pid.node == self.node.id() {
            return format!("{}'s node (here), epoch {}", self.nick, at.epoch);
        }
        let name = self
            .node
            .peers()
            .into_iter()
            .find(|p| p.id == at.pid.node)
            .map_or_else(|| at.pid.node.short(), |p| p.name);
        format!("{name}'s node, epoch {}", at.epoch)
    }

    async fn join(&self) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + WAIT;
        // Until the cluster can activate grains (a leader elected, peers introduced).
        while let Err(e) = self.members().await {
            if tokio::time::Instant::now() > deadline {
                return Err(e);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let msg = ChatMsg::Join {
            nick: self.nick.clone(),
            member: self.me.pid(),
        };
        match self.call(msg).await? {
            ChatReply::Joined(present) => {
                self.say(format!(
                    "joined {} (the room runs on {}); present: {}",
                    self.room,
                    self.host(),
                    present.join(", ")
                ));
                Ok(())
            }
            other => Err(format!("join {}: {other:?}", self.room)),
        }
    }

    async fn leave(&self) -> Result<(), String> {
        let member = self.me.pid();
        self.call(ChatMsg::Leave { member }).await?;
        self.say(format!("left {}", self.room));
        Ok(())
    }

    async fn run_line(&mut self, line: &str, dir: &Path) -> Result<(), String> {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("/wait"), Some(n)) => {
                let n: usize = n.parse().map_err(|_| format!("bad count in {line:?}"))?;
                let deadline = tokio::time::Instant::now() + WAIT;
                while self.members().await?.len() != n {
                    if tokio::time::Instant::now() > deadline {
                        return Err(format!("{} never had {n} members", self.room));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            (Some("/heard"), Some(n)) => {
                let n: usize = n.parse().map_err(|_| format!("bad count in {line:?}"))?;
                let deadline = tokio::time::Instant::now() + WAIT;
                loop {
                    let heard = self
                        .me
                        .call(MemberMsg::Heard, CALL)
                        .await
                        .map_err(|e| format!("heard: {e}"))?;
                    if heard.iter().filter(|l| l.starts_with('#')).count() >= n {
                        break;
                    }
                    if tokio::time::Instant::now() > deadline {
                        return Err(format!("heard only {heard:?}"));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            (Some("/sync"), None) => sync(dir, &self.nick).await?,
            (Some("/who"), None) => self.say(format!(
                "present in {}: {}",
                self.room,
                self.members().await?.join(", ")
            )),
            (Some("/history"), None) => {
                let ChatReply::History(history) = self.call(ChatMsg::History { last: 20 }).await?
                else {
                    return Err("history: unexpected reply".into());
                };
                self.say(format!("history of {} ({}):", self.room, self.host()));
                for l in history {
                    self.say(format!("  #{} {}: {}", l.seq, l.from, l.text));
                }
            }
            (Some("/leave"), None) => self.leave().await?,
            (Some("/room"), Some(name)) => {
                self.leave().await?;
                self.room = name.to_string();
                self.join().await?;
            }
            (None, _) => {}
            _ => {
                let msg = ChatMsg::Post {
                    nick: self.nick.clone(),
                    text: line.to_string(),
                };
                match self.call(msg).await? {
                    ChatReply::Posted { stored: true, .. } => {}
                    ChatReply::Posted { seq, stored: false } => self.say(format!(
                        "(line #{seq} was said but not stored: no other node holds a copy)"
                    )),
                    other => return Err(format!("post: unexpected {other:?}")),
                }
            }
        }
        Ok(())
    }
}

/// Waits until every member of the scripted session has got here (a file each), so that
/// no node leaves the cluster while another still needs its vote or its copies.
async fn sync(dir: &Path, nick: &str) -> Result<(), String> {
    std::fs::write(dir.join(format!("{nick}.done")), "").map_err(|e| e.to_string())?;
    let deadline = tokio::time::Instant::now() + WAIT;
    while !SCRIPT
        .iter()
        .all(|(n, _)| dir.join(format!("{n}.done")).exists())
    {
        if tokio::time::Instant::now() > deadline {
            return Err("the other members never finished".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

async fn member(args: Args) -> Result<(), String> {
    let (node, grains) = start(&args)?;
    let me = {
        let nick = args.nick.clone();
        node.runtime().spawn(Member::with_listener(move |heard| {
            println!("[{nick}] {heard}")
        }))
    };
    let mut chat = Chat {
        node: node.clone(),
        nick: args.nick.clone(),
        room: args.room.clone(),
        me,
    };
    chat.say(format!("node up on {}", node.local_addr()));
    chat.join().await?;
    match &args.script {
        Some(script) => {
            for line in script.split(';') {
                chat.run_line(line, &args.ca).await?;
            }
        }
        None => {
            // Typed lines, read off the runtime's threads.
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            std::thread::spawn(move || {
                for line in std::io::stdin().lock().lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
            while let Some(line) = rx.recv().await {
                if let Err(e) = chat.run_line(&line, &args.ca).await {
                    chat.say(e);
                }
                if line.trim() == "/leave" {
                    break;
                }
            }
        }
    }
    // Hand this node's rooms over (saved, claims released) before leaving the cluster.
    grains.shutdown().await;
    node.shutdown(Duration::from_secs(1)).await;
    Ok(())
}
