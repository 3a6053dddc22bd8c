//! The node: a local runtime plus QUIC connections to its peers.

mod clock;
mod connect;
mod control;
mod data;
mod eventual;
mod fence;
mod groups;
mod incarnation;
mod membership;
mod naming;
mod routing;
mod rpc;
mod split_brain;
mod start;
mod status;

pub use data::ServiceError;
pub use eventual::NameLost;

pub use naming::{LockGuard, MAX_NAME_LEN, RegistryFeedStats, RegistryIndex};
pub use status::{
    DataStatus, FencedStatus, FencingStatus, GroupStatus, LockStatus, MemberStatus, NameStatus,
    NodeStatus, PeerStatus, RTT_BUCKETS_US, RaftView, RttSnapshot, ServiceOffer, ServiceStatus,
    UdpBufferStatus, scope_name,
};

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::Duration;

use atoll_actor::{Actor, ActorRef, LookupError, Runtime};
use atoll_core::{NodeId, Pid};
use atoll_swim::{Member, MemberEvent, Swim};
use atoll_wire::{Control, ProcessInfoWire, RemoteError};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::error::{ClusterSendError, DatagramError, RpcError};
use crate::groups::Groups;
use crate::peer::Peer;
use crate::protocol::eventual::EventualNames;
use crate::protocol::routes::Routes;
use crate::transport::{DatagramRefused, Endpoint};
use connect::forget_peer;
use eventual::NameLostSink;
use routing::{send_named, send_named_routed};

/// Node ids are already uniformly random (a hash of a public key): their first eight bytes
/// serve as the hash, which keeps the peer lookup on every remote send cheap.
#[derive(Default, Clone, Copy)]
struct NodeIdHash;

impl std::hash::BuildHasher for NodeIdHash {
    type Hasher = NodeIdHasher;
    fn build_hasher(&self) -> NodeIdHasher {
        NodeIdHasher(0)
    }
}

struct NodeIdHasher(u64);

impl std::hash::Hasher for NodeIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(word);
        }
    }
}

/// Builds a process from arguments sent by another node; returns its pid.
type Factory = Arc<dyn Fn(&Runtime, NodeId, &[u8]) -> Result<Pid, RemoteError> + Send + Sync>;

/// A node: a local [`Runtime`] whose processes can reach processes on other nodes.
///
/// Cheap to clone. Everything a node knows hangs off this value, so several nodes run side
/// by side in one process (as the tests do).
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    id: NodeId,
    rt: Runtime,
    identity: Arc<atoll_net::NodeIdentity>,
    certificate_proves_id: bool,
    endpoint: Arc<Endpoint>,
    /// Where this node's own randomness starts (membership's probe order and timers).
    seed: u64,
    /// Wall time for the data tables' hybrid clocks.
    clock: clock::WallClock,
    local_addr: SocketAddr,
    /// The UDP socket's receive buffer, for the status (none on a simulated network).
    udp_buffer: Option<atoll_net::UdpBuffer>,
    max_frame_len: usize,
    message_streams: usize,
    reconnect: (Duration, Duration),
    connect_timeout: Duration,
    request_timeout: Duration,
    peers: RwLock<HashMap<NodeId, Arc<Peer>, NodeIdHash>>,
    /// Addresses this node keeps connections to, reconnecting when they drop, and where
    /// each was asked for.
    wanted: Mutex<BTreeMap<SocketAddr, crate::PeerAddress>>,
    /// Eventual (global) names.
    globals: RwLock<EventualNames>,
    /// Local processes that asked to be told when they lose an Eventual name.
    name_lost: Mutex<BTreeMap<Pid, NameLostSink>>,
    /// Process groups: this node's members and what each peer said of its own.
    groups: Mutex<Groups>,
    spawnables: RwLock<BTreeMap<String, Factory>>,
    next_request: AtomicU64,
    closing: AtomicBool,
    /// Where each node that was connected can be reached again, whether its last
    /// connection was lost (then sends fail fast until a reconnection succeeds), and the
    /// envelopes waiting for connections opened on demand.
    routes: Mutex<Routes>,
    /// How many backlogs `routes` holds (read without the lock on every send).
    backlog_count: std::sync::atomic::AtomicUsize,
    /// Where datagrams from peers go, once someone asked for them.
    datagrams: Mutex<Option<mpsc::Sender<(NodeId, bytes::Bytes)>>>,
    /// The size of each connection's buffer of datagrams waiting to be sent.
    datagram_send_buffer: usize,
    /// SWIM membership, when configured.
    swim: OnceLock<Swim>,
    /// Who hears about membership events through the node.
    member_events: Mutex<membership::EventHub>,
    /// Consensus names and locks, when configured.
    naming: Option<naming::Naming>,
    /// Local processes that asked to be told when this node is fenced.
    fence_sinks: fence::FenceSinks,
    /// Round trips of the requests this node sent.
    request_rtt: status::RttHistogram,
    /// The process table and service registry.
    data: data::DataShell,
}

/// A handle to a node that does not keep it running (for processes and factories the node
/// itself holds).
#[derive(Clone)]
pub struct WeakNode(Weak<Inner>);

impl std::fmt::Debug for WeakNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WeakNode")
    }
}

impl WeakNode {
    /// The node, if it still exists.
    pub fn upgrade(&self) -> Option<Node> {
        self.0.upgrade().map(|inner| Node { inner })
    }
}

/// A connected peer, as seen from this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// Its id.
    pub id: NodeId,
    /// Its name.
    pub name: String,
    /// Its incarnation.
    pub creation: u32,
    /// Where it accepts connections.
    pub listen: Option<String>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.inner.name)
            .field("id", &self.inner.id)
            .finish()
    }
}

impl Node {
    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// This node's incarnation.
    pub fn creation(&self) -> u32 {
        self.inner.rt.creation()
    }

    /// The address peers connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// The local runtime: spawn, link, supervise as on a single node.
    pub fn runtime(&self) -> &Runtime {
        &self.inner.rt
    }

    fn remote_node(&self, peer: &Peer) -> RemoteNode {
        RemoteNode {
            node: self.clone(),
            id: peer.id,
            name: peer.name.clone(),
            creation: peer.creation,
        }
    }

    /// A handle that does not keep this node running.
    pub fn downgrade(&self) -> WeakNode {
        WeakNode(Arc::downgrade(&self.inner))
    }

    /// The connected peers.
    pub fn peers(&self) -> Vec<PeerInfo> {
        let mut all: Vec<PeerInfo> = self
            .inner
            .peers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|p| PeerInfo {
                id: p.id,
                name: p.name.clone(),
                creation: p.creation,
                listen: p.listen.clone(),
            })
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// The incarnation of the connected peer `node`, if connected: a pid of `node` with
    /// another creation names a process of an earlier (or later) run of it, which is gone.
    pub fn peer_creation(&self, node: NodeId) -> Option<u32> {
        self.inner.peer(node).map(|p| p.creation)
    }

    /// The connected peer with this name or, failing that, the live member of the
    /// membership with this name (its connection opens on the first send).
    pub fn remote(&self, name: &str) -> Option<RemoteNode> {
        if let Some(peer) = self.inner.peer_named(name) {
            return Some(self.remote_node(&peer));
        }
        let member = self.inner.live_member_named(name)?;
        Some(RemoteNode {
            node: self.clone(),
            id: member.identity.node,
            name: member.identity.name().to_string(),
            creation: 0,
        })
    }

    /// A reference to any process: typed and checked for a local pid, a remote reference
    /// for a pid of another node.
    pub fn actor_ref<A: Actor>(&self, pid: Pid) -> Result<ActorRef<A>, LookupError>
    where
        A::Msg: Serialize,
    {
        if pid.node == self.inner.id {
            self.inner.rt.actor_ref(pid)
        } else {
            Ok(self.inner.rt.remote_ref(pid))
        }
    }

    /// Sends `msg` to the process registered as `name` on the node named `node`: a connected
    /// peer or, failing that, a live member of the membership (the connection to it opens
    /// on demand, and the message waits for it).
    pub fn send<A: Actor>(
        &self,
        node: &str,
        name: &str,
        msg: A::Msg,
    ) -> Result<(), ClusterSendError<A::Msg>>
    where
        A::Msg: Serialize,
    {
        if node == self.inner.name {
            return match self.inner.rt.whereis_ref::<A>(name) {
                Ok(r) => Ok(r.send(msg)?),
                Err(_) => Err(ClusterSendError::NotRegistered {
                    name: name.to_string(),
                    msg,
                }),
            };
        }
        if let Some(peer) = self.inner.peer_named(node) {
            return send_named(&self.inner, &peer, name, msg);
        }
        match self.inner.live_member_named(node) {
            Some(member) => send_named_routed(&self.inner, member.identity.node, name, msg),
            None => Err(ClusterSendError::UnknownNode {
                node: node.to_string(),
                msg,
            }),
        }
    }

    /// Sends an unreliable, unordered QUIC datagram to a connected peer (for protocols such
    /// as membership gossip that must not wait behind streams). It must fit
    /// [`Node::max_datagram_size`].
    pub fn send_datagram(&self, node: NodeId, payload: bytes::Bytes) -> Result<(), DatagramError> {
        let peer = self
            .inner
            .peer(node)
            .ok_or_else(|| DatagramError::UnknownNode(node.to_string()))?;
        peer.conn.send_datagram(payload).map_err(|e| match e {
            DatagramRefused::TooLarge => DatagramError::TooLarge,
            DatagramRefused::Unavailable(why) => DatagramError::Unavailable(why),
        })
    }

    /// The largest datagram the connection to `node` carries now (it varies with the path).
    pub fn max_datagram_size(&self, node: NodeId) -> Option<usize> {
        self.inner.peer(node)?.conn.max_datagram_size()
    }

    /// Datagrams from peers, as (sender, payload), from now on; replaces an earlier receiver.
    /// Up to `capacity` wait unread; more are dropped.
    ///
    /// A node with membership reads its datagrams itself: taking them away here cuts it off
    /// from the cluster.
    pub fn datagrams(&self, capacity: usize) -> mpsc::Receiver<(NodeId, bytes::Bytes)> {
        self.inner.datagram_receiver(capacity)
    }

    /// The running membership, if the node was started with one: this node's identity and
    /// state, the members, their load summaries, and counters.
    pub fn membership(&self) -> Option<&Swim> {
        self.inner.swim.get()
    }

    /// Membership events from now on, after the node has acted on them (a `Joined` member
    /// is reachable by name, an `Unreachable` or `Left` one is disconnected). If this node
    /// is already active, the first event is its `Active`. `None` without membership.
    pub fn member_events(&self) -> Option<mpsc::UnboundedReceiver<MemberEvent>> {
        let swim = self.inner.swim.get()?;
        Some(
            self.inner
                .member_events
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .subscribe(swim),
        )
    }

    /// Stops the node: leaves the membership (peers see it `Left`), closes every connection
    /// (peers see this node go) and shuts the runtime down, giving processes `grace` to
    /// stop.
    pub async fn shutdown(&self, grace: Duration) {
        if !self.inner.closing.load(Ordering::SeqCst) {
            membership::leave(&self.inner).await;
        }
        self.stop(grace).await;
        // Give the close frames a moment to leave; a peer that is already gone would
        // otherwise hold this up for the whole draining period.
        let _ =
            tokio::time::timeout(Duration::from_millis(200), self.inner.endpoint.wait_idle()).await;
    }

    /// Stops the node at once, as a crashed process: no goodbye to the membership, no
    /// grace for its processes. On a simulated network, crash its address first
    /// ([`MemNetwork::crash`](crate::transport::MemNetwork::crash)) so that nothing it still says gets out.
    pub async fn halt(&self) {
        self.stop(Duration::ZERO).await;
    }

    async fn stop(&self, grace: Duration) {
        self.inner.closing.store(true, Ordering::SeqCst);
        // Membership stops too (after a graceful leave it already has): a halted node's
        // driver would otherwise go on probing, and suspecting, everyone.
        if let Some(swim) = self.inner.swim.get() {
            swim.stop();
        }
        naming::shutdown(&self.inner).await;
        self.inner.endpoint.close(0, b"shutdown");
        let peers: Vec<Arc<Peer>> = self
            .inner
            .peers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, p)| p)
            .collect();
        for peer in &peers {
            forget_peer(&self.inner, peer);
        }
        drop(peers);
        self.inner.rt.shutdown(grace).await;
    }
}

/// A connected peer node.
#[derive(Clone)]
pub struct RemoteNode {
    node: Node,
    id: NodeId,
    name: String,
    creation: u32,
}

impl std::fmt::Debug for RemoteNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteNode")
            .field("name", &self.name)
            .field("id", &self.id)
            .field("creation", &self.creation)
            .finish()
    }
}

impl RemoteNode {
    /// Its id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its incarnation when the connection was made (0 for a member found through the
    /// membership before any connection to it).
    pub fn creation(&self) -> u32 {
        self.creation
    }

    /// True while a connection to it is up.
    pub fn is_connected(&self) -> bool {
        self.node.inner.peer(self.id).is_some()
    }

    /// Sends `msg` to the process registered as `name` on this node. Without a connection,
    /// one is opened on demand if the node's address is known and it is not down;
    /// otherwise the send fails with `NoConnection`.
    pub fn send<A: Actor>(&self, name: &str, msg: A::Msg) -> Result<(), ClusterSendError<A::Msg>>
    where
        A::Msg: Serialize,
    {
        match self.node.inner.peer(self.id) {
            Some(peer) => send_named(&self.node.inner, &peer, name, msg),
            None => send_named_routed(&self.node.inner, self.id, name, msg),
        }
    }

    /// Spawns a process here from a registered factory.
    pub async fn spawn<Args: Serialize>(
        &self,
        factory: &str,
        args: &Args,
    ) -> Result<Pid, RpcError> {
        self.node.spawn_remote(self.id, factory, args).await
    }

    /// Its live processes.
    pub async fn processes(&self) -> Result<Vec<ProcessInfoWire>, RpcError> {
        self.node.remote_processes(self.id).await
    }
}

impl Inner {
    fn peer(&self, id: NodeId) -> Option<Arc<Peer>> {
        self.peers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }

    /// The address to open a connection to `node` on demand, unless it is known to be down.
    fn known_address(&self, node: NodeId) -> Option<SocketAddr> {
        self.routes().address(node)
    }

    fn routes(&self) -> std::sync::MutexGuard<'_, Routes> {
        self.routes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The live member named `name`, with its address recorded for connections on demand.
    fn live_member_named(&self, name: &str) -> Option<Member> {
        let member = self
            .swim
            .get()?
            .member_named(name)
            .filter(|m| m.state.is_live())?;
        self.routes()
            .learn(member.identity.node, member.identity.addr);
        Some(member)
    }

    fn datagram_receiver(&self, capacity: usize) -> mpsc::Receiver<(NodeId, bytes::Bytes)> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        *self.datagrams.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        rx
    }

    /// The peer this node dialed at `addr`, or that listens there.
    fn peer_at(&self, addr: SocketAddr) -> Option<Arc<Peer>> {
        let listen = addr.to_string();
        self.peers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .find(|p| p.dialed_addr == Some(addr) || p.listen.as_deref() == Some(&listen))
            .cloned()
    }

    fn peer_named(&self, name: &str) -> Option<Arc<Peer>> {
        self.peers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .find(|p| p.name == name)
            .cloned()
    }

    fn connected_peers(&self) -> Vec<Arc<Peer>> {
        self.peers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    fn broadcast(&self, msg: &Control) {
        for p in self.connected_peers() {
            let _ = p.send_control(msg);
        }
    }
}
