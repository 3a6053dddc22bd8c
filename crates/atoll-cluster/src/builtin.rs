//! Services every `atoll node` offers, so a bare node can be reached, spawned on and
//! measured.

use atoll_actor::{Actor, ActorResult, Ctx, Decoder, ReplyTo, serde_decoder};
use serde::{Deserialize, Serialize};

use crate::node::Node;

/// Answers what it is sent: the node program runs one registered as `echo` and can spawn
/// more from the factory `echo`.
#[derive(Debug, Default)]
pub struct Echo;

/// Bytes that travel as one block rather than number by number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bytes(#[serde(with = "serde_bytes")] pub Vec<u8>);

/// What [`Echo`] understands.
#[derive(Debug, Serialize, Deserialize)]
pub enum EchoMsg {
    /// Answers with the same number.
    Ping(u64, ReplyTo<u64>),
    /// Answers with the same bytes.
    Bytes(#[serde(with = "serde_bytes")] Vec<u8>, ReplyTo<Bytes>),
}

impl Actor for Echo {
    type Msg = EchoMsg;

    fn remote_decoder() -> Option<Decoder<EchoMsg>> {
        serde_decoder()
    }

    async fn handle(&mut self, msg: EchoMsg, _ctx: &mut Ctx<Self>) -> ActorResult {
        match msg {
            EchoMsg::Ping(n, reply) => drop(reply.reply(n)),
            EchoMsg::Bytes(b, reply) => drop(reply.reply(Bytes(b))),
        }
        Ok(())
    }
}

/// Starts the built-in services on `node`: an [`Echo`] registered as `echo`, and the
/// spawnable factory `echo` (no arguments).
pub fn install(node: &Node) {
    let echo = node.runtime().spawn(Echo);
    // A fresh node has no `echo` yet; if the application took the name, it keeps it.
    let _ = node.runtime().register("echo", echo.pid());
    node.register_spawnable("echo", |(): ()| Echo);
}
