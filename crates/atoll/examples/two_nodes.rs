//! Two nodes over real QUIC with mutual TLS: a send by node name, a global name, a remote
//! spawn, a remote call, and a live listing of the other node's processes.
//!
//! Run: `cargo run --release --example two_nodes`

use std::time::Duration;

use atoll::net::{ClusterCa, NodeIdentity, RevocationList};
use atoll::serde::{Deserialize, Serialize};
use atoll::{Actor, ActorResult, Ctx, Decoder, Node, NodeConfig, ReplyTo, serde_decoder};

const TIMEOUT: Duration = Duration::from_secs(5);

/// Greets whoever it is told about and counts greetings.
#[derive(Default)]
struct Greeter {
    greeted: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(crate = "atoll::serde")]
enum GreeterMsg {
    Greet(String),
    Count(ReplyTo<u64>),
}

impl Actor for Greeter {
    type Msg = GreeterMsg;

    // Accept messages from other nodes, decoded with serde.
    fn remote_decoder() -> Option<Decoder<GreeterMsg>> {
        serde_decoder()
    }

    async fn handle(&mut self, msg: GreeterMsg, ctx: &mut Ctx<Self>) -> ActorResult {
        match msg {
            GreeterMsg::Greet(name) => {
                self.greeted += 1;
                println!("  [{}] hello, {name}!", ctx.pid());
            }
            GreeterMsg::Count(reply) => drop(reply.reply(self.greeted)),
        }
        Ok(())
    }
}

fn node(ca: &ClusterCa, name: &str) -> Node {
    let key = NodeIdentity::generate().expect("key");
    let cert = ca.issue(name, &key.public_key()).expect("certificate");
    let config = NodeConfig::with_ca(
        name,
        "127.0.0.1:0".parse().expect("address"),
        key,
        cert,
        ca.trust(RevocationList::new()),
    );
    Node::start(config).expect("node starts")
}

#[tokio::main]
async fn main() {
    let ca = ClusterCa::create("example").expect("cluster CA");
    let london = node(&ca, "london");
    let paris = node(&ca, "paris");
    println!("london {} on {}", london.id().short(), london.local_addr());
    println!("paris  {} on {}", paris.id().short(), paris.local_addr());

    // paris runs a greeter registered as "greeter", and teaches its node to spawn more.
    let greeter = paris.runtime().spawn(Greeter::default());
    paris
        .runtime()
        .register("greeter", greeter.pid())
        .expect("name");
    paris.register_spawnable("greeter", |(): ()| Greeter::default());

    let to_paris = london.connect(paris.local_addr()).await.expect("connect");
    println!(
        "london connected to {} (creation {})",
        to_paris.name(),
        to_paris.creation()
    );

    println!("send by node name:");
    london
        .send::<Greeter>("paris", "greeter", GreeterMsg::Greet("london".into()))
        .expect("send");

    println!("global name:");
    paris
        .register_global("greeter.paris", greeter.pid())
        .expect("global name");
    let start = tokio::time::Instant::now();
    while london.whereis_global("greeter.paris").is_none() {
        assert!(start.elapsed() < TIMEOUT, "the global name did not arrive");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    london
        .send_global::<Greeter>("greeter.paris", GreeterMsg::Greet("a global sender".into()))
        .expect("send_global");

    println!("remote spawn and a remote call:");
    let pid = to_paris.spawn("greeter", &()).await.expect("remote spawn");
    let spawned = london.actor_ref::<Greeter>(pid).expect("reference");
    spawned
        .send(GreeterMsg::Greet("the spawner".into()))
        .expect("send");
    let count = spawned
        .call(GreeterMsg::Count, TIMEOUT)
        .await
        .expect("call");
    println!("  the spawned greeter on paris greeted {count} time(s)");
    assert_eq!(count, 1);
    let remote_greeter = london
        .actor_ref::<Greeter>(greeter.pid())
        .expect("reference");
    assert_eq!(remote_greeter.call(GreeterMsg::Count, TIMEOUT).await, Ok(2));

    println!("live attach: paris's processes, as seen from london:");
    for p in to_paris.processes().await.expect("listing") {
        println!(
            "  {:<24} {:<8} {:<30} handled={} mailbox={}",
            p.pid.to_string(),
            p.name.as_deref().unwrap_or("-"),
            p.actor_type,
            p.messages_handled,
            p.mailbox_len
        );
    }

    paris.shutdown(TIMEOUT).await;
    london.shutdown(TIMEOUT).await;
    println!("both nodes shut down");
}
