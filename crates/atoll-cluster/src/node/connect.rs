//! Connections: dialing and accepting, the introductions, the duplicate rule (decided by
//! [`crate::protocol::connect`]), and what happens when a connection goes.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use atoll_core::NodeId;
use atoll_wire::{Control, Hello, decode};
use tracing::{debug, info, warn};

use super::control::start_peer_tasks;
use super::{Inner, Node, RemoteNode, naming};
use crate::PeerAddress;
use crate::error::ConnectError;
use crate::peer::{FrameReader, Peer};
use crate::protocol::backoff::Backoff;
use crate::protocol::connect::{self as protocol, Adopt, Proven, check_hello};
use crate::transport::{Closed, Connection, Endpoint, SendStream};

const EXPORTER_LABEL: &[u8] = b"atoll hello v1";

impl Inner {
    fn hello(&self, conn: &Connection) -> Result<Hello, ConnectError> {
        let secret = exporter_secret(conn)?;
        Ok(Hello {
            node_name: self.name.clone(),
            node_id: self.id,
            creation: self.rt.creation(),
            listen: Some(self.local_addr.to_string()),
            public_key: self.identity.public_key().to_vec(),
            proof: self.identity.sign(&secret).to_vec(),
        })
    }

    /// Checks a peer's introduction on `conn` (see [`check_hello`]).
    fn check_hello(&self, hello: &Hello, conn: &Connection) -> Result<(), ConnectError> {
        let proven = Proven {
            secret: &exporter_secret(conn)?,
            certificate_id: conn.peer_node_id(),
            certificate_proves_id: self.certificate_proves_id,
        };
        check_hello(self.id, hello, proven)
    }
}

fn exporter_secret(conn: &Connection) -> Result<[u8; 32], ConnectError> {
    conn.exporter_secret(EXPORTER_LABEL)
        .ok_or_else(|| ConnectError::Handshake("no TLS exporter secret".into()))
}

impl Node {
    /// Connects to the node at `addr` (or returns the existing connection to it) and keeps
    /// the connection up: if it drops, it is re-established with backoff.
    pub async fn connect(&self, addr: SocketAddr) -> Result<RemoteNode, ConnectError> {
        let peer = dial(&self.inner, addr).await?;
        // A disconnect racing this call wins: the connection is not kept then.
        keep(&self.inner, &peer, addr, &PeerAddress::Addr(addr));
        Ok(self.remote_node(&peer))
    }

    /// Closes the connection to `node` and stops keeping it up. Links and monitors across
    /// it break with `NoConnection`; a later send to the node opens a new connection on
    /// demand.
    pub fn disconnect(&self, node: NodeId) -> bool {
        let Some(peer) = self.inner.peer(node) else {
            return false;
        };
        let mut wanted = self.inner.wanted.lock().unwrap_or_else(|e| e.into_inner());
        for addr in [
            peer.dialed_addr,
            peer.listen.as_deref().and_then(|a| a.parse().ok()),
        ]
        .into_iter()
        .flatten()
        {
            wanted.remove(&addr);
        }
        // Marked under the lock, so a reconnection finishing now either sees the mark or
        // has its entry removed above (see `keep`).
        peer.closed_on_purpose.store(true, Ordering::Release);
        drop(wanted);
        peer.conn.close(0, b"disconnect");
        true
    }

    /// Keeps a connection to `peer` up from now on, whether or not it answers at first: dials
    /// it at once and, until it answers, again and again with backoff (from
    /// [`NodeConfig::reconnect_initial`](crate::NodeConfig::reconnect_initial), doubling up to
    /// [`NodeConfig::reconnect_max`](crate::NodeConfig::reconnect_max)); once connected, the
    /// connection is kept up as [`Node::connect`] keeps it. A host name is looked up anew on
    /// every attempt. Returns at once; failed attempts are logged. Ends when the node stops;
    /// [`Node::disconnect`] stops keeping a connection that is up.
    ///
    /// ```no_run
    /// # async fn demo(node: atoll_cluster::Node) -> Result<(), atoll_cluster::PeerAddressError> {
    /// node.keep_connected("seed-1.internal:7000".parse()?);
    /// node.keep_connected("10.0.0.2:7000".parse()?);
    /// # Ok(())
    /// # }
    /// ```
    pub fn keep_connected(&self, peer: PeerAddress) {
        tokio::spawn(reconnect(self.downgrade().0, peer, false));
    }
}

pub(super) async fn accept_loop(weak: Weak<Inner>, endpoint: Arc<Endpoint>) {
    while let Some(incoming) = endpoint.accept().await {
        let weak = weak.clone();
        tokio::spawn(async move {
            let Some(inner) = weak.upgrade() else { return };
            let attempt = async {
                let conn = incoming
                    .accept()
                    .await
                    .map_err(|e| EstablishError::Refused(ConnectError::Connection(e)))?;
                establish(&inner, conn, None).await
            };
            match tokio::time::timeout(inner.connect_timeout, attempt).await {
                Ok(Ok(_)) => {}
                Ok(Err(EstablishError::Superseded(_))) => {
                    debug!(node = %inner.name, "an incoming connection lost to a simultaneous one")
                }
                Ok(Err(EstablishError::Refused(ConnectError::ToItself))) => {
                    debug!(node = %inner.name, "a connection from this node to itself was closed")
                }
                Ok(Err(EstablishError::Refused(e))) => {
                    warn!(node = %inner.name, "refused an incoming connection: {e}")
                }
                Err(_) => warn!(node = %inner.name, "an incoming connection timed out"),
            }
        });
    }
}

pub(super) async fn dial(inner: &Arc<Inner>, addr: SocketAddr) -> Result<Arc<Peer>, ConnectError> {
    dial_within(inner, addr, inner.connect_timeout).await
}

/// Connects to `addr` (or finds the connection to the node there) within `timeout`.
pub(super) async fn dial_within(
    inner: &Arc<Inner>,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<Arc<Peer>, ConnectError> {
    let attempt = async {
        let conn = inner
            .endpoint
            .connect(addr)
            .await
            .map_err(ConnectError::Connection)?;
        match establish(inner, conn, Some(addr)).await {
            Ok(peer) => Ok(peer),
            // Both sides dialed at once and the peer kept the other connection: it is being
            // set up on this side too; wait for it.
            Err(EstablishError::Superseded(id)) => loop {
                let found = match id {
                    Some(id) => inner.peer(id),
                    None => inner.peer_at(addr),
                };
                if let Some(peer) = found {
                    break Ok(peer);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            },
            Err(EstablishError::Refused(e)) => Err(e),
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| ConnectError::Timeout)?
}

/// Why a connection did not become a peer.
enum EstablishError {
    /// Refused or failed.
    Refused(ConnectError),
    /// The peer dropped it in favour of a simultaneous connection the other way (whose
    /// peer id is given if the introductions got that far).
    Superseded(Option<NodeId>),
}

/// Closed by the other side as a duplicate of a simultaneous connection.
const DUPLICATE: u32 = 2;

/// Exchanges introductions on a new connection (`dialed_addr` is the address this node
/// dialed, if it opened the connection) and makes it a peer once the node that decides for
/// the pair (see [`protocol::decides`]) has kept it.
async fn establish(
    inner: &Arc<Inner>,
    conn: Connection,
    dialed_addr: Option<SocketAddr>,
) -> Result<Arc<Peer>, EstablishError> {
    let fail = |e: ConnectError, id: Option<NodeId>| match conn.close_reason() {
        Some(Closed::ByPeer(DUPLICATE)) => EstablishError::Superseded(id),
        _ => EstablishError::Refused(e),
    };
    let dialed = dialed_addr.is_some();
    let (hello, mut send, mut reader) = introduce(inner, &conn, dialed)
        .await
        .map_err(|e| fail(e, None))?;
    let decides = protocol::decides(inner.id, hello.node_id);
    if !decides && !dialed {
        // Answer, then wait until the decider keeps this connection (a dialing follower
        // got the decider's introduction only because it kept it).
        follow(inner, &conn, &mut send, &mut reader)
            .await
            .map_err(|e| fail(e, Some(hello.node_id)))?;
    }
    let mut streams = Vec::with_capacity(inner.message_streams);
    for _ in 0..inner.message_streams {
        let stream = conn
            .open_uni()
            .await
            .map_err(|e| fail(ConnectError::Handshake(e.to_string()), Some(hello.node_id)))?;
        streams.push(stream);
    }
    let peer = Arc::new(Peer::new(
        &hello,
        conn.clone(),
        dialed_addr,
        send,
        streams,
        inner.max_frame_len,
    ));
    let answer = match (decides, dialed) {
        (false, _) => None,
        (true, true) => Some(Control::Kept),
        (true, false) => Some(Control::Hello(
            inner.hello(&conn).map_err(|e| fail(e, None))?,
        )),
    };
    let peer = adopt(inner, peer, decides, answer);
    if peer.conn.stable_id() == conn.stable_id() {
        start_peer_tasks(inner, &peer, reader);
        let _ = peer.send_control(&inner.globals_snapshot());
        let groups = inner
            .groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .sync();
        let _ = peer.send_control(&Control::Groups(groups));
        naming::greet(inner, &peer);
        super::data::connected(inner, peer.id);
        info!(node = %inner.name, peer = %peer.name, id = %peer.id, creation = peer.creation, "peer connected");
    } else if !dialed {
        return Err(EstablishError::Superseded(Some(peer.id)));
    }
    Ok(peer)
}

/// The introductions: the dialer speaks first, the accepting side checks it and (if it
/// decides for the pair) answers only once it keeps the connection; the dialer checks the
/// answer.
async fn introduce(
    inner: &Inner,
    conn: &Connection,
    dialed: bool,
) -> Result<(Hello, SendStream, FrameReader), ConnectError> {
    let io = |e: &dyn std::fmt::Display| ConnectError::Handshake(e.to_string());
    let (mut send, recv) = if dialed {
        conn.open_bi().await.map_err(|e| io(&e))?
    } else {
        conn.accept_bi().await.map_err(|e| io(&e))?
    };
    let mut reader = FrameReader::new(recv, inner.max_frame_len);
    // The dialer speaks first: a QUIC stream reaches the other side with its first bytes.
    if dialed {
        write_control(&mut send, &Control::Hello(inner.hello(conn)?)).await?;
    }
    let hello = match read_control(&mut reader).await? {
        Control::Hello(h) => h,
        _ => return Err(ConnectError::Handshake("expected an introduction".into())),
    };
    if let Err(e) = inner.check_hello(&hello, conn) {
        if !dialed && e == ConnectError::ToItself {
            // Answer, so the dialing side learns it reached this very node; it closes the
            // connection then.
            if write_control(&mut send, &Control::Hello(inner.hello(conn)?))
                .await
                .is_ok()
            {
                let _ = tokio::time::timeout(inner.connect_timeout, conn.closed()).await;
            }
        }
        return Err(e);
    }
    Ok((hello, send, reader))
}

/// On an accepted connection from the node that decides for the pair: answers its
/// introduction and waits for it to keep the connection.
async fn follow(
    inner: &Inner,
    conn: &Connection,
    send: &mut SendStream,
    reader: &mut FrameReader,
) -> Result<(), ConnectError> {
    write_control(send, &Control::Hello(inner.hello(conn)?)).await?;
    match read_control(reader).await? {
        Control::Kept => Ok(()),
        _ => Err(ConnectError::Handshake(
            "expected the connection kept".into(),
        )),
    }
}

async fn write_control(send: &mut SendStream, msg: &Control) -> Result<(), ConnectError> {
    let io = |e: &dyn std::fmt::Display| ConnectError::Handshake(e.to_string());
    let frame = atoll_wire::encode_frame(msg).map_err(|e| io(&e))?;
    send.write_all(&frame).await.map_err(|e| io(&e))
}

async fn read_control(reader: &mut FrameReader) -> Result<Control, ConnectError> {
    let io = |e: &dyn std::fmt::Display| ConnectError::Handshake(e.to_string());
    match reader.next().await.map_err(|e| io(&e))? {
        Some(body) => decode::<Control>(&body).map_err(|e| io(&e)),
        None => Err(ConnectError::Handshake("stream closed".into())),
    }
}

/// Registers a freshly introduced peer unless the node keeps another connection to it (see
/// [`protocol::adopt`]); returns the peer kept. A deciding node's `answer` (its
/// introduction or [`Control::Kept`]) is queued while the peer table is locked, so it is
/// the first frame the other side reads after the introductions.
fn adopt(inner: &Arc<Inner>, peer: Arc<Peer>, decides: bool, answer: Option<Control>) -> Arc<Peer> {
    let address = peer
        .dialed_addr
        .or_else(|| peer.listen.as_deref().and_then(|a| a.parse().ok()));
    if let Some(addr) = address {
        inner.routes().reachable(peer.id, addr);
    }
    let view = |p: &Peer| protocol::Connection {
        creation: p.creation,
        alive: p.conn.close_reason().is_none(),
    };
    let mut peers = inner.peers.write().unwrap_or_else(|e| e.into_inner());
    let existing = peers.get(&peer.id).cloned();
    let decision = protocol::adopt(decides, existing.as_deref().map(view), view(&peer));
    if decision != Adopt::KeepExisting
        && let Some(answer) = &answer
    {
        let _ = peer.send_control(answer);
    }
    match (decision, existing) {
        (Adopt::KeepExisting, Some(existing)) => {
            peer.conn.close(DUPLICATE, b"duplicate connection");
            existing
        }
        (Adopt::Replace, Some(existing)) => {
            peers.insert(peer.id, peer.clone());
            drop(peers);
            existing.conn.close(DUPLICATE, b"replaced");
            forget_peer(inner, &existing);
            peer
        }
        _ => {
            peers.insert(peer.id, peer.clone());
            peer
        }
    }
}

/// Cleans up after a peer connection: its processes' links and monitors see
/// `NoConnection`, its global names go, its pending requests fail.
pub(super) fn forget_peer(inner: &Arc<Inner>, peer: &Arc<Peer>) {
    peer.fail_requests();
    inner.rt.node_down(peer.id);
    inner
        .globals
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .node_down(peer.id);
    inner
        .groups
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .node_down(peer.id);
    if inner.swim.get().is_none() {
        // Without membership, a lost connection is the only word that a node went.
        super::data::node_lost(inner, peer.id);
    }
}

pub(super) async fn watch_connection(weak: Weak<Inner>, peer: Arc<Peer>) {
    let reason = peer.conn.closed().await;
    let Some(inner) = weak.upgrade() else { return };
    let current = {
        let mut peers = inner.peers.write().unwrap_or_else(|e| e.into_inner());
        let current = peers.get(&peer.id).is_some_and(|p| Arc::ptr_eq(p, &peer));
        if current {
            // Marked before the peer leaves the table, so no send slips in between and
            // opens a connection on demand: a connection this node closed on purpose can
            // be reopened that way; a lost one makes sends fail fast until a reconnection
            // succeeds.
            inner
                .routes()
                .mark_down(peer.id, !peer.closed_on_purpose.load(Ordering::Acquire));
            peers.remove(&peer.id);
        }
        current
    };
    if !current {
        return;
    }
    info!(node = %inner.name, peer = %peer.name, "peer disconnected: {reason}");
    forget_peer(&inner, &peer);
    if inner.closing.load(Ordering::SeqCst) {
        return;
    }
    // Reconnect to the address this node dialed, or to the one the peer advertised, if this
    // node asked to stay connected to it.
    let advertised = peer
        .listen
        .as_deref()
        .and_then(|a| a.parse::<SocketAddr>().ok());
    let wanted = {
        let wanted = inner.wanted.lock().unwrap_or_else(|e| e.into_inner());
        [peer.dialed_addr, advertised]
            .into_iter()
            .flatten()
            .find_map(|a| wanted.get(&a).cloned())
    };
    if let Some(target) = wanted {
        tokio::spawn(reconnect(weak, target, true));
    }
}

/// Remembers that the connection to `peer`, reached by dialing `addr` for `target`, is to be
/// kept up: when it drops, [`watch_connection`] reconnects. Returns false, remembering
/// nothing, if [`Node::disconnect`] let the connection go meanwhile.
fn keep(inner: &Inner, peer: &Peer, addr: SocketAddr, target: &PeerAddress) -> bool {
    let mut wanted = inner.wanted.lock().unwrap_or_else(|e| e.into_inner());
    if peer.closed_on_purpose.load(Ordering::Acquire) {
        return false;
    }
    for addr in [Some(addr), peer.dialed_addr].into_iter().flatten() {
        wanted.insert(addr, target.clone());
    }
    true
}

/// Dials `target` until a connection to it is up and kept (see [`keep`]), waiting as
/// [`Backoff`] says between attempts (and before the first, if `wait_first`). Ends when the
/// node stops.
async fn reconnect(weak: Weak<Inner>, target: PeerAddress, wait_first: bool) {
    let Some((initial, max)) = weak.upgrade().map(|i| i.reconnect) else {
        return;
    };
    let mut backoff = Backoff::new(initial, max);
    let mut failures = 0u32;
    if wait_first {
        tokio::time::sleep(backoff.next_delay()).await;
    }
    loop {
        let Some(inner) = weak.upgrade() else { return };
        if inner.closing.load(Ordering::SeqCst) {
            return;
        }
        match dial_target(&inner, &target).await {
            Ok((peer, addr)) => {
                if !keep(&inner, &peer, addr, &target) {
                    info!(node = %inner.name, to = %target, "connection let go while it was being kept");
                    return;
                }
                // A connection that went before it was marked as kept was not reconnected
                // by `watch_connection`: go on here.
                if inner.peer(peer.id).is_some_and(|p| Arc::ptr_eq(&p, &peer)) {
                    info!(node = %inner.name, to = %target, peer = %peer.name, id = %peer.id, "kept connection established");
                    return;
                }
                backoff.reset();
            }
            Err(e) => {
                failures += 1;
                let delay = backoff.next_delay();
                if failures == 1 {
                    warn!(node = %inner.name, to = %target, "cannot connect: {e}; retrying with backoff");
                } else {
                    debug!(node = %inner.name, to = %target, "cannot connect: {e}; retrying in {delay:?}");
                }
                drop(inner);
                tokio::time::sleep(delay).await;
                continue;
            }
        }
        drop(inner);
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// Connects to the first of `target`'s addresses that answers.
async fn dial_target(
    inner: &Arc<Inner>,
    target: &PeerAddress,
) -> Result<(Arc<Peer>, SocketAddr), ConnectError> {
    let addrs = target.resolve().await.map_err(|e| ConnectError::Resolve {
        host: target.to_string(),
        reason: e.to_string(),
    })?;
    let mut last = ConnectError::Resolve {
        host: target.to_string(),
        reason: "no address".into(),
    };
    for addr in addrs {
        match dial(inner, addr).await {
            Ok(peer) => return Ok((peer, addr)),
            Err(e) => last = e,
        }
    }
    Err(last)
}
