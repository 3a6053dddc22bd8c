//! Nodes of one test cluster, and an actor that reports what it receives.
#![allow(dead_code)]

pub mod host;

use std::time::Duration;

use atoll_actor::{
    Actor, ActorRef, ActorResult, Ctx, Decoder, Down, ExitReason, Pid, ReplyTo, serde_decoder,
};
use atoll_cluster::{NameLost, Node, NodeConfig};
use atoll_net::{ClusterCa, NodeIdentity, RevocationList};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

pub const DEADLINE: Duration = Duration::from_secs(20);

pub struct Cluster {
    pub ca: ClusterCa,
    pub revoked: RevocationList,
}

impl Cluster {
    pub fn new() -> Self {
        Cluster {
            ca: ClusterCa::create("test").unwrap(),
            revoked: RevocationList::new(),
        }
    }

    pub fn config(&self, name: &str) -> NodeConfig {
        self.config_with_key(name, NodeIdentity::generate().unwrap())
    }

    pub fn config_with_key(&self, name: &str, key: NodeIdentity) -> NodeConfig {
        let cert = self.ca.issue(name, &key.public_key()).unwrap();
        let mut config = NodeConfig::with_ca(
            name,
            "127.0.0.1:0".parse().unwrap(),
            key,
            cert,
            self.ca.trust(self.revoked.clone()),
        );
        config.reconnect_initial = Duration::from_millis(20);
        config.reconnect_max = Duration::from_millis(200);
        config.connect_timeout = Duration::from_secs(5);
        config
    }

    pub fn node(&self, name: &str) -> Node {
        Node::start(self.config(name)).unwrap()
    }
}

pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// What a probe reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Text(String),
    Pid(Pid),
    Down(Down),
    Exit(Pid, ExitReason),
    NameLost(NameLost),
}

#[derive(Debug, Serialize, Deserialize)]
pub enum ProbeMsg {
    Text(String),
    Pid(Pid),
    Add(u64, u64, ReplyTo<u64>),
    /// Answer `reply` from another process: the handle travels on.
    Forward(ActorRef<Probe>, u64, ReplyTo<u64>),
    Monitor(Pid),
    Link(Pid),
    Fail(String),
    NameLost(NameLost),
}

impl From<NameLost> for ProbeMsg {
    fn from(lost: NameLost) -> ProbeMsg {
        ProbeMsg::NameLost(lost)
    }
}

pub struct Probe {
    pub seen: mpsc::UnboundedSender<Seen>,
    pub trap: bool,
}

impl Actor for Probe {
    type Msg = ProbeMsg;

    fn remote_decoder() -> Option<Decoder<ProbeMsg>> {
        serde_decoder()
    }

    async fn started(&mut self, ctx: &mut Ctx<Self>) -> ActorResult {
        ctx.trap_exit(self.trap);
        Ok(())
    }

    async fn handle(&mut self, msg: ProbeMsg, ctx: &mut Ctx<Self>) -> ActorResult {
        match msg {
            ProbeMsg::Text(t) => drop(self.seen.send(Seen::Text(t))),
            ProbeMsg::Pid(p) => drop(self.seen.send(Seen::Pid(p))),
            ProbeMsg::Add(a, b, reply) => drop(reply.reply(a + b)),
            ProbeMsg::Forward(to, n, reply) => {
                let _ = to.send(ProbeMsg::Add(n, 1, reply));
            }
            ProbeMsg::Monitor(p) => drop(ctx.monitor(p)),
            ProbeMsg::Link(p) => ctx.link(p),
            ProbeMsg::Fail(why) => return Err(atoll_actor::ActorError::msg(why)),
            ProbeMsg::NameLost(lost) => drop(self.seen.send(Seen::NameLost(lost))),
        }
        Ok(())
    }

    async fn handle_down(&mut self, down: Down, _ctx: &mut Ctx<Self>) -> ActorResult {
        let _ = self.seen.send(Seen::Down(down));
        Ok(())
    }

    async fn handle_exit(
        &mut self,
        from: Pid,
        reason: ExitReason,
        _ctx: &mut Ctx<Self>,
    ) -> ActorResult {
        let _ = self.seen.send(Seen::Exit(from, reason));
        Ok(())
    }
}

pub fn probe(node: &Node) -> (ActorRef<Probe>, mpsc::UnboundedReceiver<Seen>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (
        node.runtime().spawn(Probe {
            seen: tx,
            trap: false,
        }),
        rx,
    )
}

pub fn trapping_probe(node: &Node) -> (ActorRef<Probe>, mpsc::UnboundedReceiver<Seen>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (
        node.runtime().spawn(Probe {
            seen: tx,
            trap: true,
        }),
        rx,
    )
}

pub async fn next(rx: &mut mpsc::UnboundedReceiver<Seen>, what: &str) -> Seen {
    tokio::time::timeout(DEADLINE, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("nothing within {DEADLINE:?} while waiting for {what}"))
        .expect("probe gone")
}

pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = tokio::time::Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < DEADLINE,
            "not within {DEADLINE:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
