//! A key-value store on grains: every key is a grain whose state is the value, kept in
//! each node's redb store (`LocalExclusive`). Three nodes run in this one process (Raft
//! voters over QUIC on loopback); clients on every node set, get and delete keys without
//! knowing where they live, and the example prints where each key was activated.
//!
//! ```sh
//! cargo run --release -p atoll-grain --example kv
//! ```

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use atoll_cluster::{ConsensusConfig, MembershipConfig, Node, NodeConfig};
use atoll_core::NodeId;
use atoll_grain::{Durability, Grain, GrainCtx, GrainId, Grains, GrainsConfig, RedbStore};
use atoll_net::{ClusterCa, NodeIdentity, RevocationList};
use serde::{Deserialize, Serialize};

/// One key of the store.
struct Entry;

#[derive(Debug, Serialize, Deserialize)]
enum EntryMsg {
    Get,
    Set(String),
    Delete,
}

impl Grain for Entry {
    const TYPE: &'static str = "kv";
    const DURABILITY: Durability = Durability::LocalExclusive;
    type State = Option<String>;
    type Msg = EntryMsg;
    /// The value before the message.
    type Reply = Option<String>;

    async fn handle(&mut self, msg: EntryMsg, ctx: &mut GrainCtx<Self>) -> Option<String> {
        let before = ctx.state().clone();
        match msg {
            EntryMsg::Get => return before,
            EntryMsg::Set(value) => *ctx.state_mut() = Some(value),
            EntryMsg::Delete => *ctx.state_mut() = None,
        }
        // Durable before the caller hears of it.
        if let Err(e) = ctx.save().await {
            eprintln!("{}: not saved: {e}", ctx.id());
        }
        before
    }
}

fn free_addr() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free loopback port")
}

async fn wait(what: &str, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let ca = ClusterCa::create("kv")?;
    let names = ["london", "paris", "rome"];
    let keys: Vec<NodeIdentity> = names
        .iter()
        .map(|_| NodeIdentity::generate())
        .collect::<Result<_, _>>()?;
    let addrs: Vec<SocketAddr> = names.iter().map(|_| free_addr()).collect();
    let voters: Vec<(NodeId, SocketAddr)> = keys
        .iter()
        .zip(&addrs)
        .map(|(k, a)| (k.node_id(), *a))
        .collect();

    let mut nodes = Vec::new();
    let mut services = Vec::new();
    for (i, key) in keys.into_iter().enumerate() {
        let cert = ca.issue(names[i], &key.public_key())?;
        let seeds = if i == 0 { vec![] } else { vec![addrs[0]] };
        let config = NodeConfig::with_ca(
            names[i],
            addrs[i],
            key,
            cert,
            ca.trust(RevocationList::new()),
        )
        .with_membership(MembershipConfig::new(seeds))
        .with_consensus(ConsensusConfig::new(
            voters.clone(),
            dir.path().join(names[i]),
        ));
        let node = Node::start(config)?;
        let store = RedbStore::open(dir.path().join(format!("{}-grains.redb", names[i])))?;
        let grains = Grains::start(&node, GrainsConfig::default().with_store(store));
        grains.register(|_key| Entry)?;
        println!("started {} ({})", names[i], node.id().short());
        nodes.push(node);
        services.push(grains);
    }
    wait("a Raft leader and every grain router", || {
        nodes
            .iter()
            .all(|n| n.find_by_type("GrainRouter").len() == 3)
    })
    .await;
    loop {
        if nodes[0]
            .raft_status()
            .await
            .and_then(|s| s.leader)
            .is_some()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let name_of = |id: NodeId| {
        nodes
            .iter()
            .position(|n| n.id() == id)
            .map_or("?", |i| names[i])
    };

    println!("\n-- set, from every node in turn");
    let pairs = [
        ("apple", "red"),
        ("banana", "yellow"),
        ("cherry", "dark red"),
        ("lime", "green"),
    ];
    for (i, (key, value)) in pairs.iter().enumerate() {
        let client = &services[i % 3];
        client
            .get::<Entry>(key)?
            .call(EntryMsg::Set(value.to_string()))
            .await?;
        let host = client
            .cached(&GrainId::new("kv", *key))
            .expect("just called");
        println!(
            "{:>7} set {key} = {value:?}  (grain on {}, epoch {})",
            names[i % 3],
            name_of(host.pid.node),
            host.epoch
        );
    }

    println!("\n-- get, from every node");
    for (i, client) in services.iter().enumerate() {
        let mut seen = Vec::new();
        for (key, _) in &pairs {
            let value = client.get::<Entry>(key)?.call(EntryMsg::Get).await?;
            seen.push(format!("{key}={}", value.as_deref().unwrap_or("-")));
        }
        println!("{:>7} sees {}", names[i], seen.join(" "));
    }

    println!("\n-- delete banana from rome, overwrite apple from paris");
    let old = services[2]
        .get::<Entry>("banana")?
        .call(EntryMsg::Delete)
        .await?;
    println!("   rome deleted banana (was {old:?})");
    let old = services[1]
        .get::<Entry>("apple")?
        .call(EntryMsg::Set("green".into()))
        .await?;
    println!("  paris set apple = \"green\" (was {old:?})");
    for (key, _) in &pairs {
        let value = services[0].get::<Entry>(key)?.call(EntryMsg::Get).await?;
        println!(" london get {key} -> {value:?}");
    }

    println!("\n-- where the grains live");
    for (i, grains) in services.iter().enumerate() {
        let keys: Vec<String> = grains.active().into_iter().map(|id| id.key).collect();
        let stats = grains.stats();
        println!(
            "{:>7} hosts {:?} ({} activations)",
            names[i], keys, stats.activations
        );
    }
    for node in &nodes {
        node.shutdown(Duration::from_secs(1)).await;
    }
    Ok(())
}
