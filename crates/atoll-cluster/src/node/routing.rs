//! Routing envelopes to other nodes: over a connection, or through the backlog of one
//! opened on demand ([`Routes`] decides); the runtime's way out ([`Link`]).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use atoll_actor::{
    EncodeInto, NoConnection, Remote, RemoteSendError, SendError, Signal, encode_for,
};
use atoll_core::{NodeId, Pid};
use atoll_wire::{DATA_HEAD_ROOM, Data, DataHead, encode_frame_in, finish_data_frame};
use serde::Serialize;
use tracing::debug;

use super::Inner;
use super::connect::dial;
use crate::error::ClusterSendError;
use crate::peer::{Peer, with_frame_buffer};
use crate::protocol::bulk::{Lane, lane, name_key};
use crate::protocol::routes::{Route, no_connection};
use bytes::Bytes;

pub(super) fn send_named<M: Serialize>(
    inner: &Inner,
    peer: &Peer,
    name: &str,
    msg: M,
) -> Result<(), ClusterSendError<M>> {
    let payload = match encode_for(&inner.rt, peer.id, &msg) {
        Ok(p) => p,
        Err(e) => return Err(SendError::Unencodable(msg, e).into()),
    };
    let data = Data::SendNamed {
        name: name.to_string(),
        payload,
    };
    peer.send_data(name_key(name), &data)
        .map_err(|_| ClusterSendError::Send(SendError::NoConnection(msg)))
}

/// Sends by name to a node that may not be connected: through its backlog and a
/// connection opened on demand, as any envelope for it.
pub(super) fn send_named_routed<M: Serialize>(
    inner: &Arc<Inner>,
    node: NodeId,
    name: &str,
    msg: M,
) -> Result<(), ClusterSendError<M>> {
    let payload = match encode_for(&inner.rt, node, &msg) {
        Ok(p) => p,
        Err(e) => return Err(SendError::Unencodable(msg, e).into()),
    };
    let data = Data::SendNamed {
        name: name.to_string(),
        payload,
    };
    route(inner, node, name_key(name), &data, None)
        .map_err(|_| ClusterSendError::Send(SendError::NoConnection(msg)))
}

/// The runtime's way out to other nodes.
pub(super) struct Link(pub(super) Weak<Inner>);

impl Link {
    /// Sends a data envelope to `node`: over its connection, or, if the node was connected
    /// before and its address is known, into a backlog that a fresh connection (opened now,
    /// lazily) drains in order.
    fn route(
        &self,
        node: NodeId,
        key: u64,
        data: &Data,
        signal: Option<Signal>,
    ) -> Result<(), NoConnection> {
        let inner = self.0.upgrade().ok_or(NoConnection)?;
        route(&inner, node, key, data, signal)
    }
}

/// Sends a data envelope to `node`: over its connection, or, if its address is known and
/// it is not down, into a backlog that a fresh connection (opened now, lazily) drains in
/// order.
pub(super) fn route(
    inner: &Arc<Inner>,
    node: NodeId,
    key: u64,
    data: &Data,
    signal: Option<Signal>,
) -> Result<(), NoConnection> {
    let direct = direct_peer(inner, node);
    with_frame_buffer(|buf| {
        *buf = encode_frame_in(data, std::mem::take(buf)).map_err(|_| NoConnection)?;
        route_frame(inner, direct, node, key, buf, signal)
    })
}

/// Sends the message `encode` writes as the payload of a data envelope (`head`) to `node`,
/// as [`route`] does: the message is encoded straight into its frame.
fn route_in_place(
    inner: &Arc<Inner>,
    node: NodeId,
    key: u64,
    head: DataHead,
    encode: EncodeInto<'_>,
) -> Result<(), RemoteSendError> {
    // Nothing is encoded for a node that cannot be reached (`Remote::send`).
    let direct = direct_peer(inner, node);
    if direct.is_none() && !reachable(inner, node) {
        return Err(RemoteSendError::NoConnection);
    }
    with_frame_buffer(|buf| {
        buf.resize(DATA_HEAD_ROOM, 0);
        encode(buf).map_err(RemoteSendError::Unencodable)?;
        let start = finish_data_frame(head, buf)
            .map_err(|e| RemoteSendError::Unencodable(e.to_string()))?;
        if let Some(peer) = &direct
            && lane(buf.len() - start) == Lane::Bulk
        {
            // The stream takes the encoded buffer itself, not a copy of it; the thread
            // gets a fresh one, room for a frame this size, for the next large frame.
            let frame = std::mem::replace(buf, Vec::with_capacity(buf.len()));
            return peer
                .send_owned_frame(key, Bytes::from(frame).slice(start..))
                .map_err(|_| RemoteSendError::NoConnection);
        }
        Ok(route_frame(inner, direct, node, key, &buf[start..], None)?)
    })
}

/// The peer to send to without going through the routes, in the common case: `node` is
/// connected and no backlog exists anywhere (then no lock is taken but the peer table's).
fn direct_peer(inner: &Inner, node: NodeId) -> Option<Arc<Peer>> {
    match inner.backlog_count.load(Ordering::Acquire) {
        0 => inner.peer(node),
        _ => None,
    }
}

/// Whether envelopes for `node` can go anywhere: over its connection, or into a backlog
/// for one opened on demand.
fn reachable(inner: &Inner, node: NodeId) -> bool {
    inner.peer(node).is_some() || inner.known_address(node).is_some()
}

/// Sends an encoded data frame as [`route`] does: to `direct` ([`direct_peer`]) if there is
/// one, else through the routes.
fn route_frame(
    inner: &Arc<Inner>,
    direct: Option<Arc<Peer>>,
    node: NodeId,
    key: u64,
    frame: &[u8],
    signal: Option<Signal>,
) -> Result<(), NoConnection> {
    if let Some(peer) = direct {
        return peer.send_frame(key, frame).map_err(|_| NoConnection);
    }
    let mut routes = inner.routes();
    let peer = inner.peer(node);
    match routes.route(node, peer.is_some(), key, || Some(frame.to_vec()), signal) {
        Route::Direct => {
            drop(routes);
            let peer = peer.ok_or(NoConnection)?;
            peer.send_frame(key, frame).map_err(|_| NoConnection)
        }
        Route::Queued(dial) => {
            inner
                .backlog_count
                .store(routes.backlogs(), Ordering::Release);
            drop(routes);
            if let Some(addr) = dial {
                tokio::spawn(connect_lazily(Arc::downgrade(inner), node, addr));
            }
            Ok(())
        }
        Route::Unreachable => Err(NoConnection),
    }
}

async fn connect_lazily(weak: Weak<Inner>, node: NodeId, addr: SocketAddr) {
    let Some(inner) = weak.upgrade() else { return };
    let connected = match dial(&inner, addr).await {
        Ok(peer) if peer.id == node => Some(peer),
        Ok(_) | Err(_) => None,
    };
    let unanswered = {
        let mut routes = inner.routes();
        let unanswered = match &connected {
            Some(peer) => {
                // Drained under the lock: nothing sent meanwhile can overtake it.
                for (key, frame) in routes.opened(node) {
                    let _ = peer.send_frame(key, &frame);
                }
                Vec::new()
            }
            None => routes.failed(node),
        };
        inner
            .backlog_count
            .store(routes.backlogs(), Ordering::Release);
        if connected.is_some() {
            return;
        }
        unanswered
    };
    debug!(node = %inner.name, peer = %node, %addr, "lazy connection failed");
    for signal in unanswered.into_iter().filter_map(no_connection) {
        inner.rt.deliver_signal(signal);
    }
    // Reply handles that went into the backlog will not be answered.
    inner.rt.node_down(node);
}

impl Remote for Link {
    fn send(&self, to: Pid, encode: EncodeInto<'_>) -> Result<(), RemoteSendError> {
        let inner = self.0.upgrade().ok_or(RemoteSendError::NoConnection)?;
        let key = Peer::stream_key(to);
        route_in_place(&inner, to.node, key, DataHead::Send { to }, encode)
    }

    fn reply(
        &self,
        node: NodeId,
        call: u64,
        encode: EncodeInto<'_>,
    ) -> Result<(), RemoteSendError> {
        let inner = self.0.upgrade().ok_or(RemoteSendError::NoConnection)?;
        route_in_place(&inner, node, call, DataHead::Reply { call }, encode)
    }

    fn signal(&self, signal: Signal) -> Result<(), NoConnection> {
        let to = signal.target();
        let data = Data::Signal(signal.clone());
        self.route(to.node, Peer::stream_key(to), &data, Some(signal))
    }
}
