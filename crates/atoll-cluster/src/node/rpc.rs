//! Requests between nodes over the control stream: remote spawn, live attach, and the
//! request/answer plumbing the naming code uses too.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use atoll_actor::{Actor, decode_from, encode_for};
use atoll_core::{NodeId, Pid};
use atoll_wire::{Control, ProcessInfoWire, RemoteError, Request, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;

use super::connect::dial;
use super::{Factory, Inner, Node};
use crate::convert::process_to_wire;
use crate::error::RpcError;
use crate::peer::Peer;

impl Node {
    /// Teaches this node to spawn `A` from arguments sent by other nodes: `make` builds
    /// the actor from the decoded arguments. Only registered factories can be spawned
    /// remotely.
    pub fn register_spawnable<Args, A>(
        &self,
        name: &str,
        make: impl Fn(Args) -> A + Send + Sync + 'static,
    ) where
        Args: DeserializeOwned,
        A: Actor,
    {
        let factory: Factory = Arc::new(move |rt, from, bytes| {
            let args = decode_from::<Args>(rt, from, bytes).map_err(RemoteError::BadArgs)?;
            Ok(rt.spawn(make(args)).pid())
        });
        self.inner
            .spawnables
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), factory);
    }

    /// Spawns a process on `node` (an id) from its factory `factory`, with `args`.
    pub async fn spawn_remote<Args: Serialize>(
        &self,
        node: NodeId,
        factory: &str,
        args: &Args,
    ) -> Result<Pid, RpcError> {
        let args = encode_for(&self.inner.rt, node, args).map_err(RpcError::Unencodable)?;
        let body = Request::Spawn {
            factory: factory.to_string(),
            args,
        };
        match self.inner.request(node, body).await? {
            Response::Spawned(pid) => Ok(pid),
            Response::Error(e) => Err(RpcError::Remote(e)),
            Response::Processes(_)
            | Response::Raft(_)
            | Response::NameApplied(_)
            | Response::LockWait(_) => Err(RpcError::ConnectionLost),
        }
    }

    /// The live processes of `node`, with their introspection data (live attach).
    pub async fn remote_processes(&self, node: NodeId) -> Result<Vec<ProcessInfoWire>, RpcError> {
        if node == self.inner.id {
            return Ok(self
                .inner
                .rt
                .processes()
                .into_iter()
                .map(process_to_wire)
                .collect());
        }
        match self.inner.request(node, Request::Processes).await? {
            Response::Processes(list) => Ok(list),
            Response::Error(e) => Err(RpcError::Remote(e)),
            Response::Spawned(_)
            | Response::Raft(_)
            | Response::NameApplied(_)
            | Response::LockWait(_) => Err(RpcError::ConnectionLost),
        }
    }
}

/// Why a control request got no answer.
pub(super) enum AskError {
    /// It could not be queued: the connection is gone.
    NotSent,
    /// The connection went away before the answer came.
    Lost,
    /// No answer within the deadline.
    TimedOut,
}

impl Inner {
    /// Sends a request to `node` and waits for the answer. A node that is not connected
    /// but whose address is known (and that is not down) is connected first.
    pub(super) async fn request(
        self: &Arc<Self>,
        node: NodeId,
        body: Request,
    ) -> Result<Response, RpcError> {
        let peer = match self.peer(node) {
            Some(peer) => peer,
            None => {
                let addr = self
                    .known_address(node)
                    .ok_or_else(|| RpcError::UnknownNode(node.to_string()))?;
                let peer = dial(self, addr).await.map_err(RpcError::Connect)?;
                if peer.id != node {
                    return Err(RpcError::UnknownNode(node.to_string()));
                }
                peer
            }
        };
        match self.ask(&peer, body, self.request_timeout).await {
            Ok(response) => Ok(response),
            Err(AskError::NotSent | AskError::Lost) => Err(RpcError::ConnectionLost),
            Err(AskError::TimedOut) => Err(RpcError::Timeout),
        }
    }

    /// Sends a request over `peer`'s control stream and waits up to `timeout` for the
    /// answer. Cancel-safe: the pending entry is removed however the wait ends.
    pub(super) async fn ask(
        &self,
        peer: &Arc<Peer>,
        body: Request,
        timeout: Duration,
    ) -> Result<Response, AskError> {
        struct Pending<'a>(&'a Peer, u64);
        impl Drop for Pending<'_> {
            fn drop(&mut self) {
                self.0
                    .requests
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&self.1);
            }
        }
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        peer.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        let _pending = Pending(peer, id);
        if peer.send_control(&Control::Request { id, body }).is_err() {
            return Err(AskError::NotSent);
        }
        let sent = tokio::time::Instant::now();
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(response)) => {
                self.request_rtt.record(sent.elapsed());
                Ok(response)
            }
            Ok(Err(_)) => Err(AskError::Lost),
            Err(_) => Err(AskError::TimedOut),
        }
    }

    pub(super) fn serve(&self, from: NodeId, body: Request) -> Response {
        match body {
            Request::Spawn { factory, args } => {
                let f = self
                    .spawnables
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&factory)
                    .cloned();
                match f {
                    None => Response::Error(RemoteError::UnknownFactory(factory)),
                    Some(f) => match f(&self.rt, from, &args) {
                        Ok(pid) => Response::Spawned(pid),
                        Err(e) => Response::Error(e),
                    },
                }
            }
            Request::Processes => Response::Processes(
                self.rt
                    .processes()
                    .into_iter()
                    .map(process_to_wire)
                    .collect(),
            ),
            // Served asynchronously by the control loop; never reaches here.
            Request::Raft(_) => Response::Raft(Vec::new()),
            Request::AwaitName { .. } => Response::NameApplied(None),
            Request::AwaitLock { .. } => Response::LockWait(atoll_wire::LockWait::Waiting),
        }
    }
}
