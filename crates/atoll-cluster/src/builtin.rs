//! Services every `atoll node` offers, so a bare node can be reached, spawned on and
//! measured.

use std::time::Duration;

use atoll_actor::{Actor, ActorResult, Ctx, Decoder, ReplyTo, serde_decoder};
use atoll_core::Scope;
use atoll_wire::Payload;
use serde::{Deserialize, Serialize};

use crate::chat;
use crate::node::{LockGuard, Node, WeakNode};

/// How long a [`Holder`] waits for its lock.
pub const HOLDER_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// Answers what it is sent: the node program runs one registered as `echo` and can spawn
/// more from the factory `echo`.
#[derive(Debug, Default)]
pub struct Echo;

/// What [`Echo`] understands.
#[derive(Debug, Serialize, Deserialize)]
pub enum EchoMsg {
    /// Answers with the same number.
    Ping(u64, ReplyTo<u64>),
    /// Answers with the same bytes (a large payload from another node is passed back
    /// without a copy: see [`Payload`]).
    Bytes(Payload, ReplyTo<Payload>),
}

impl Actor for Echo {
    type Msg = EchoMsg;

    fn remote_decoder() -> Option<Decoder<EchoMsg>> {
        serde_decoder()
    }

    async fn handle(&mut self, msg: EchoMsg, _ctx: &mut Ctx<Self>) -> ActorResult {
        match msg {
            EchoMsg::Ping(n, reply) => drop(reply.reply(n)),
            EchoMsg::Bytes(b, reply) => drop(reply.reply(b)),
        }
        Ok(())
    }
}

/// What a [`Holder`] takes when it starts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HoldArgs {
    /// A name to register itself under, and in which scope.
    pub name: Option<(String, Scope)>,
    /// A consensus lock to take (waiting up to [`HOLDER_LOCK_TIMEOUT`]).
    pub lock: Option<String>,
}

/// What a [`Holder`] got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldStatus {
    /// The registration's outcome (`Ok` also when no name was asked for).
    pub registered: Result<(), String>,
    /// The lock's fencing token, or why it was not granted (`Ok(None)`: none asked for).
    pub lock: Result<Option<u64>, String>,
}

/// What a [`Holder`] understands.
#[derive(Debug, Serialize, Deserialize)]
pub enum HolderMsg {
    /// Answers with what it got.
    Status(ReplyTo<HoldStatus>),
}

/// A process that registers a name and takes a lock on its node when it starts, and holds
/// them until it exits (then the node releases them): the factory `holder` spawns one from
/// [`HoldArgs`].
#[derive(Debug)]
pub struct Holder {
    node: WeakNode,
    args: HoldArgs,
    status: HoldStatus,
    guard: Option<LockGuard>,
}

impl Holder {
    /// A holder on `node` that will take what `args` asks for.
    pub fn new(node: WeakNode, args: HoldArgs) -> Self {
        Holder {
            node,
            args,
            status: HoldStatus {
                registered: Ok(()),
                lock: Ok(None),
            },
            guard: None,
        }
    }
}

impl Actor for Holder {
    type Msg = HolderMsg;

    fn remote_decoder() -> Option<Decoder<HolderMsg>> {
        serde_decoder()
    }

    async fn started(&mut self, ctx: &mut Ctx<Self>) -> ActorResult {
        let Some(node) = self.node.upgrade() else {
            return Err(atoll_actor::ActorError::msg("the node is gone"));
        };
        if let Some((name, scope)) = &self.args.name {
            self.status.registered = node
                .register(name, ctx.pid(), *scope)
                .await
                .map_err(|e| e.to_string());
        }
        if let Some(lock) = &self.args.lock {
            match node.lock(lock, ctx.pid(), HOLDER_LOCK_TIMEOUT).await {
                Ok(guard) => {
                    self.status.lock = Ok(Some(guard.token()));
                    self.guard = Some(guard);
                }
                Err(e) => self.status.lock = Err(e.to_string()),
            }
        }
        Ok(())
    }

    async fn handle(&mut self, msg: HolderMsg, _ctx: &mut Ctx<Self>) -> ActorResult {
        match msg {
            HolderMsg::Status(reply) => drop(reply.reply(self.status.clone())),
        }
        Ok(())
    }
}

/// Starts the built-in services on `node`: an [`Echo`] registered as `echo` and offered
/// as the cluster service `echo` (see [`Node::resolve_preferred`]), and the
/// spawnable factories `echo` (no arguments), `chat_room` (the room's name, a
/// [`chat::Room`]), `chat_member` (no arguments, a [`chat::Member`]) and `holder`
/// ([`HoldArgs`], a [`Holder`]).
pub fn install(node: &Node) {
    let echo = node.runtime().spawn(Echo);
    // A fresh node has no `echo` yet; if the application took the name, it keeps it.
    let _ = node.runtime().register("echo", echo.pid());
    let _ = node.advertise_service("echo", echo.pid(), Default::default());
    node.register_spawnable("echo", |(): ()| Echo);
    node.register_spawnable("chat_room", |name: String| chat::Room::new(name));
    node.register_spawnable("chat_member", |(): ()| chat::Member::default());
    let weak = node.downgrade();
    node.register_spawnable("holder", move |args: HoldArgs| {
        Holder::new(weak.clone(), args)
    });
}
