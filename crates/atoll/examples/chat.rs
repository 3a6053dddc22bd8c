//! A chat room whose members are separate processes (separate nodes) talking over QUIC.
//!
//! Run it with no arguments for a scripted session: it makes a cluster CA in a temporary
//! directory and starts itself three times (ann hosts the room, bob and cat join it), each
//! a node of its own, and prints what each one sees:
//!
//! ```sh
//! cargo run --release --example chat
//! ```
//!
//! Or run the members yourself, in separate terminals (lines you type are said in the room;
//! `/who`, `/history` and `/leave` do what they say):
//!
//! ```sh
//! atoll ca init --dir chat-ca
//! cargo run --release --example chat -- --ca chat-ca --nick ann --listen 127.0.0.1:7401
//! cargo run --release --example chat -- --ca chat-ca --nick bob --join 127.0.0.1:7401
//! ```
//!
//! The first member hosts the room (a `Room` process registered under the cluster-wide
//! Eventual name `chat:lobby`); the others find it by that name once membership has
//! introduced them.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use atoll::chat::{Member, MemberMsg, Room, RoomMsg};
use atoll::net::{ClusterCa, NodeIdentity, RevocationList};
use atoll::{ActorRef, MembershipConfig, Node, NodeConfig, Scope, SwimConfig};

const ROOM: &str = "chat:lobby";
const CALL: Duration = Duration::from_secs(5);
const WAIT: Duration = Duration::from_secs(30);

struct Args {
    ca: PathBuf,
    nick: String,
    listen: SocketAddr,
    join: Option<SocketAddr>,
    script: Option<String>,
}

fn parse_args() -> Option<Args> {
    let mut it = std::env::args().skip(1);
    let mut ca = None;
    let mut nick = None;
    let mut listen = "127.0.0.1:0".parse().ok()?;
    let mut join = None;
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
        script,
    })
}

fn usage(problem: &str) -> ! {
    eprintln!(
        "{problem}\nusage: chat [--ca DIR --nick NICK [--listen ADDR] [--join ADDR] [--script 'LINE;LINE']]"
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

/// The scripted session: three processes of this program, one node each.
fn session() {
    let dir = std::env::temp_dir().join(format!("atoll-chat-{}", std::process::id()));
    let ca = ClusterCa::create("chat").expect("cluster CA");
    ca.save(&dir).expect("CA files");
    let exe = std::env::current_exe().expect("this program");
    let host_port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free port")
        .port();
    let host = format!("127.0.0.1:{host_port}");
    let spawn = |nick: &str, extra: &[&str], script: &str| {
        Command::new(&exe)
            .args(["--ca", dir.to_str().expect("utf-8 path"), "--nick", nick])
            .args(extra)
            .args(["--script", script])
            .stdin(Stdio::null())
            .spawn()
            .expect("a member process")
    };
    println!("chat: ann hosts the room on {host}; bob and cat join from their own processes");
    let mut members = vec![spawn(
        "ann",
        &["--listen", &host],
        "/wait 3;hello from ann;/heard 3;/wait 1;/history;/leave",
    )];
    for (nick, line) in [("bob", "hi ann, bob here"), ("cat", "cat says hi")] {
        members.push(spawn(
            nick,
            &["--join", &host],
            &format!("/wait 3;{line};/heard 3;/who;/leave"),
        ));
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

fn node(ca_dir: &Path, nick: &str, listen: SocketAddr, join: Option<SocketAddr>) -> Node {
    let ca = ClusterCa::load(ca_dir).expect("the CA (make one with `atoll ca init --dir DIR`)");
    let key = NodeIdentity::generate().expect("key");
    let cert = ca.issue(nick, &key.public_key()).expect("certificate");
    let swim = SwimConfig {
        probe_interval: Duration::from_millis(300),
        ping_timeout: Duration::from_millis(150),
        suspect_timeout: Duration::from_millis(1500),
        ..SwimConfig::default()
    };
    let config = NodeConfig::with_ca(nick, listen, key, cert, ca.trust(RevocationList::new()))
        .with_membership(MembershipConfig {
            seeds: join.into_iter().collect(),
            swim,
            ..MembershipConfig::default()
        });
    Node::start(config).expect("node starts")
}

async fn member(args: Args) -> Result<(), String> {
    let node = node(&args.ca, &args.nick, args.listen, args.join);
    let nick = args.nick.clone();
    let say = |line: String| println!("[{nick}] {line}");
    if args.join.is_none() {
        let room = node.runtime().spawn(Room::new("lobby"));
        node.register(ROOM, room.pid(), Scope::Eventual)
            .await
            .map_err(|e| e.to_string())?;
        say(format!(
            "hosting room lobby as {} on {}",
            room.pid(),
            node.local_addr()
        ));
    }
    let room = wait_for(|| node.whereis(ROOM), "the room").await?;
    let room: ActorRef<Room> = node.actor_ref(room).map_err(|e| e.to_string())?;
    let me = {
        let nick = nick.clone();
        node.runtime().spawn(Member::with_listener(move |heard| {
            println!("[{nick}] {heard}")
        }))
    };
    let present = room
        .call(
            |reply| RoomMsg::Join {
                nick: nick.clone(),
                member: me.pid(),
                reply,
            },
            CALL,
        )
        .await
        .map_err(|e| format!("join: {e}"))?;
    say(format!("joined; present: {}", present.join(", ")));

    match &args.script {
        Some(script) => {
            for line in script.split(';') {
                run_line(&room, &nick, line, &me).await?;
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
                run_line(&room, &nick, &line, &me).await?;
                if line.trim() == "/leave" {
                    break;
                }
            }
        }
    }
    node.shutdown(Duration::from_secs(1)).await;
    Ok(())
}

async fn run_line(
    room: &ActorRef<Room>,
    nick: &str,
    line: &str,
    me: &ActorRef<Member>,
) -> Result<(), String> {
    let members = || async {
        room.call(RoomMsg::Members, CALL)
            .await
            .map_err(|e| format!("members: {e}"))
    };
    let mut words = line.split_whitespace();
    match (words.next(), words.next()) {
        (Some("/wait"), Some(n)) => {
            let n: usize = n.parse().map_err(|_| format!("bad count in {line:?}"))?;
            let deadline = tokio::time::Instant::now() + WAIT;
            while members().await?.len() != n {
                if tokio::time::Instant::now() > deadline {
                    return Err(format!("the room never had {n} members"));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        (Some("/heard"), Some(n)) => {
            let n: usize = n.parse().map_err(|_| format!("bad count in {line:?}"))?;
            let deadline = tokio::time::Instant::now() + WAIT;
            loop {
                let heard = me
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
        (Some("/who"), None) => println!("[{nick}] present: {}", members().await?.join(", ")),
        (Some("/history"), None) => {
            let history = room
                .call(|reply| RoomMsg::History { last: 20, reply }, CALL)
                .await
                .map_err(|e| format!("history: {e}"))?;
            println!("[{nick}] history:");
            for l in history {
                println!("[{nick}]   #{} {}: {}", l.seq, l.from, l.text);
            }
        }
        (Some("/leave"), None) => {
            let member = me.pid();
            room.call(|reply| RoomMsg::Leave { member, reply }, CALL)
                .await
                .map_err(|e| format!("leave: {e}"))?;
            println!("[{nick}] left");
        }
        (None, _) => {}
        _ => {
            room.call(
                |reply| RoomMsg::Post {
                    nick: nick.to_string(),
                    text: line.to_string(),
                    reply,
                },
                CALL,
            )
            .await
            .map_err(|e| format!("post: {e}"))?;
        }
    }
    Ok(())
}

async fn wait_for<T>(mut check: impl FnMut() -> Option<T>, what: &str) -> Result<T, String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = check() {
            return Ok(v);
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("{what} did not appear within {WAIT:?}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
