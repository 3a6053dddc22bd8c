//! The node: a local runtime plus QUIC connections to its peers.

mod membership;
mod naming;
mod status;

pub use naming::{LockGuard, MAX_NAME_LEN};
pub use status::{
    GroupStatus, LockStatus, MemberStatus, NameStatus, NodeStatus, PeerStatus, RTT_BUCKETS_US,
    RaftView, RttSnapshot, scope_name,
};

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::Duration;

use atoll_actor::{
    Actor, ActorRef, LookupError, NoConnection, Remote, Runtime, SendError, Signal, decode_from,
    encode_for,
};
use atoll_core::{NodeId, Pid};
use atoll_swim::{Member, MemberEvent, MemberMeta, Swim};
use atoll_wire::{
    Control, Data, DataRef, Hello, ProcessInfoWire, RegistryGossip, RemoteError, Request, Response,
    decode, decode_ref,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::config::NodeConfig;
use crate::convert::process_to_wire;
use crate::error::{
    ClusterSendError, ConnectError, DatagramError, GlobalError, GroupJoinError, NameError,
    RpcError, StartError,
};
use crate::groups::{Groups, MAX_GROUP_NAME};
use crate::peer::{FrameReader, Peer, ReadError};

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

/// Tells one local process that it lost an Eventual name.
type NameLostSink = Box<dyn Fn(NameLost) + Send + Sync>;

/// The message a process gets when it loses an Eventual name to a conflicting claim.
///
/// Two nodes that were not connected can each bind one Eventual (global) name; when they
/// meet, the smaller pid keeps it on every node and the other process loses it. The loser
/// is not stopped: its node removes the binding and, if the process asked for it with
/// [`Node::notify_name_lost`], sends it this value as an ordinary message (converted with
/// `From<NameLost>` into the actor's message type).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct NameLost {
    /// The name that was lost.
    pub name: String,
    /// The process that holds it now.
    pub winner: Pid,
}

const EXPORTER_LABEL: &[u8] = b"atoll hello v1";

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
    endpoint: quinn::Endpoint,
    local_addr: SocketAddr,
    max_frame_len: usize,
    message_streams: usize,
    reconnect: (Duration, Duration),
    connect_timeout: Duration,
    request_timeout: Duration,
    peers: RwLock<HashMap<NodeId, Arc<Peer>, NodeIdHash>>,
    /// Addresses this node keeps connections to, reconnecting when they drop.
    wanted: Mutex<HashSet<SocketAddr>>,
    globals: RwLock<HashMap<String, Pid>>,
    /// Local processes that asked to be told when they lose an Eventual name.
    name_lost: Mutex<HashMap<Pid, NameLostSink>>,
    /// Process groups: this node's members and what each peer said of its own.
    groups: Mutex<Groups>,
    spawnables: RwLock<HashMap<String, Factory>>,
    next_request: AtomicU64,
    closing: AtomicBool,
    /// Where each node that was connected can be reached again, and whether its last
    /// connection was lost (then sends fail fast until a reconnection succeeds); a send to a
    /// known node that is not down opens a connection on demand.
    known: Mutex<HashMap<NodeId, (SocketAddr, bool)>>,
    /// Envelopes waiting for a connection being opened on demand.
    backlogs: Mutex<HashMap<NodeId, Backlog>>,
    /// How many backlogs exist (read without the lock on every send).
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
    /// Round trips of the requests this node sent.
    request_rtt: status::RttHistogram,
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
    /// Starts a node: binds its QUIC endpoint and accepts peers.
    ///
    /// Must run inside a tokio runtime. The node's incarnation (`creation`) is new on every
    /// start, so pids of an earlier run are never taken for pids of this one.
    ///
    /// With [`NodeConfig::membership`] set, the node also joins the cluster through the
    /// configured seeds (see [`Node::membership`]).
    pub fn start(config: NodeConfig) -> Result<Node, StartError> {
        // Checked before anything is bound.
        let member_meta = match &config.membership {
            Some(m) => {
                let meta = MemberMeta {
                    name: config.name.clone(),
                    roles: m.roles.clone(),
                    capabilities: m.capabilities.clone(),
                };
                meta.validate()?;
                Some(meta)
            }
            None => None,
        };
        let server = atoll_net::server_config(
            &config.tls.key,
            &config.tls.cert,
            &config.tls.trust,
            &config.transport,
        )
        .map_err(|e| StartError::Tls(e.to_string()))?;
        let client = atoll_net::client_config(
            &config.tls.key,
            &config.tls.cert,
            &config.tls.trust,
            &config.transport,
        )
        .map_err(|e| StartError::Tls(e.to_string()))?;
        let endpoint =
            atoll_net::bind(config.listen, server, client).map_err(|e| StartError::Bind {
                addr: config.listen,
                source: std::io::Error::other(e.to_string()),
            })?;
        let local_addr = endpoint.local_addr().map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
        let id = config.identity.node_id();
        let naming = config
            .consensus
            .map(|c| naming::Naming::new(c, id))
            .transpose()?;
        let creation = new_creation();
        let rt = Runtime::with_identity(id, creation);
        let inner = Arc::new(Inner {
            name: config.name,
            id,
            rt: rt.clone(),
            identity: config.identity,
            certificate_proves_id: config.tls.proves_node_id,
            endpoint,
            local_addr,
            max_frame_len: config.max_frame_len,
            message_streams: config.message_streams.max(1),
            reconnect: (config.reconnect_initial, config.reconnect_max),
            connect_timeout: config.connect_timeout,
            request_timeout: config.request_timeout,
            peers: RwLock::default(),
            wanted: Mutex::default(),
            globals: RwLock::default(),
            name_lost: Mutex::default(),
            groups: Mutex::new(Groups::new(id)),
            spawnables: RwLock::default(),
            next_request: AtomicU64::new(1),
            closing: AtomicBool::new(false),
            datagrams: Mutex::default(),
            datagram_send_buffer: config.transport.datagram_send_buffer,
            swim: OnceLock::new(),
            member_events: Mutex::default(),
            known: Mutex::default(),
            backlogs: Mutex::default(),
            backlog_count: std::sync::atomic::AtomicUsize::new(0),
            naming,
            request_rtt: status::RttHistogram::default(),
        });
        rt.set_remote(Arc::new(Link(Arc::downgrade(&inner))));
        tokio::spawn(accept_loop(Arc::downgrade(&inner), inner.endpoint.clone()));
        info!(node = %inner.name, id = %id, addr = %local_addr, creation, "node started");
        if let (Some(settings), Some(meta)) = (config.membership, member_meta) {
            membership::start(&inner, settings, meta)?;
        }
        naming::start(&inner);
        Ok(Node { inner })
    }

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

    /// Connects to the node at `addr` (or returns the existing connection to it) and keeps
    /// the connection up: if it drops, it is re-established with backoff.
    pub async fn connect(&self, addr: SocketAddr) -> Result<RemoteNode, ConnectError> {
        let peer = dial(&self.inner, addr).await?;
        self.inner
            .wanted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(addr);
        Ok(self.remote_node(&peer))
    }

    fn remote_node(&self, peer: &Peer) -> RemoteNode {
        RemoteNode {
            node: self.clone(),
            id: peer.id,
            name: peer.name.clone(),
            creation: peer.creation,
        }
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
        drop(wanted);
        peer.closed_on_purpose.store(true, Ordering::Release);
        peer.conn.close(quinn::VarInt::from_u32(0), b"disconnect");
        true
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

    /// Adds the local process `pid` to the process group `group` (a process may be in many
    /// groups; joining twice is a no-op). Every peer learns it; it leaves every group when it
    /// exits, and other nodes forget it when this node is lost to them.
    pub fn join_group(&self, group: &str, pid: Pid) -> Result<(), GroupJoinError> {
        let inner = &self.inner;
        if group.is_empty() || group.len() > MAX_GROUP_NAME {
            return Err(GroupJoinError::BadName(group.len()));
        }
        if pid.node != inner.id || !inner.rt.is_alive(pid) {
            return Err(GroupJoinError::NotLocal(pid));
        }
        let joined = inner
            .groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join(group, pid);
        if let Some(message) = joined {
            inner.broadcast(&Control::Groups(message));
            let exited = inner.rt.wait_exit(pid);
            let weak = Arc::downgrade(inner);
            tokio::spawn(async move {
                exited.await;
                if let Some(inner) = weak.upgrade() {
                    let left = inner
                        .groups
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .exited(pid);
                    for message in left {
                        inner.broadcast(&Control::Groups(message));
                    }
                }
            });
        }
        Ok(())
    }

    /// Takes the local process `pid` out of `group`; false if it was not in it.
    pub fn leave_group(&self, group: &str, pid: Pid) -> bool {
        let left = self
            .inner
            .groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .leave(group, pid);
        match left {
            Some(message) => {
                self.inner.broadcast(&Control::Groups(message));
                true
            }
            None => false,
        }
    }

    /// Every member of `group` this node knows of, on every node, in pid order. Answered
    /// locally.
    pub fn group_members(&self, group: &str) -> Vec<Pid> {
        self.inner
            .groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .members(group)
    }

    /// The members of `group` on this node, in pid order.
    pub fn local_group_members(&self, group: &str) -> Vec<Pid> {
        self.inner
            .groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .local_members(group)
    }

    /// Every group with a member anywhere, in name order.
    pub fn groups(&self) -> Vec<String> {
        self.inner
            .groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .groups()
    }

    /// Sends `msg` to every member of `group` (typed as `A`); returns how many sends were
    /// accepted for delivery (delivery itself is as for any send).
    pub fn broadcast_group<A: Actor>(&self, group: &str, msg: A::Msg) -> usize
    where
        A::Msg: Clone + Serialize,
    {
        self.group_members(group)
            .into_iter()
            .filter_map(|pid| self.actor_ref::<A>(pid).ok())
            .filter(|r| r.send(msg.clone()).is_ok())
            .count()
    }

    /// Registers the local process `pid` under a cluster-wide `name`: every peer learns it
    /// now, peers that connect later learn it on connect, and it is released when the
    /// process exits.
    pub fn register_global(&self, name: &str, pid: Pid) -> Result<(), GlobalError> {
        let inner = &self.inner;
        if pid.node != inner.id || !inner.rt.is_alive(pid) {
            return Err(GlobalError::NotLocal(pid));
        }
        {
            let mut globals = inner.globals.write().unwrap_or_else(|e| e.into_inner());
            if let Some(owner) = globals.get(name) {
                return Err(GlobalError::NameTaken {
                    name: name.to_string(),
                    owner: *owner,
                });
            }
            globals.insert(name.to_string(), pid);
        }
        inner.broadcast(&Control::Gossip(RegistryGossip::Registered {
            name: name.to_string(),
            pid,
        }));
        let exited = inner.rt.wait_exit(pid);
        let weak = Arc::downgrade(inner);
        let name = name.to_string();
        tokio::spawn(async move {
            exited.await;
            if let Some(inner) = weak.upgrade() {
                inner.release_global(&name, pid);
            }
        });
        Ok(())
    }

    /// Asks that the local process `pid`, an `A`, be sent a [`NameLost`] message whenever it
    /// loses an Eventual (global) name to a conflicting claim from another node. Without
    /// this the loser only loses the binding (and the node logs it). The request lasts as
    /// long as the process; asking again replaces it.
    pub fn notify_name_lost<A: Actor>(&self, pid: Pid) -> Result<(), NameError>
    where
        A::Msg: From<NameLost>,
    {
        let inner = &self.inner;
        if pid.node != inner.id || !inner.rt.is_alive(pid) {
            return Err(NameError::NotLocal(pid));
        }
        let target = inner.rt.actor_ref::<A>(pid).map_err(NameError::Lookup)?;
        let sink: NameLostSink = Box::new(move |lost| {
            let _ = target.send(A::Msg::from(lost));
        });
        let fresh = inner
            .name_lost
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(pid, sink)
            .is_none();
        if fresh {
            let exited = inner.rt.wait_exit(pid);
            let weak = Arc::downgrade(inner);
            tokio::spawn(async move {
                exited.await;
                if let Some(inner) = weak.upgrade() {
                    inner
                        .name_lost
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&pid);
                }
            });
        }
        Ok(())
    }

    /// Releases a global name held by a local process.
    pub fn unregister_global(&self, name: &str) -> Option<Pid> {
        let pid = self.whereis_global(name)?;
        if pid.node != self.inner.id {
            return None;
        }
        self.inner.release_global(name, pid);
        Some(pid)
    }

    /// The process holding a global name, on whichever node.
    pub fn whereis_global(&self, name: &str) -> Option<Pid> {
        self.inner
            .globals
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .copied()
    }

    /// Every global name this node knows, sorted.
    pub fn globals(&self) -> Vec<(String, Pid)> {
        let mut all: Vec<_> = self
            .inner
            .globals
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(n, p)| (n.clone(), *p))
            .collect();
        all.sort();
        all
    }

    /// Sends `msg` to the process holding the global `name`, wherever it runs.
    pub fn send_global<A: Actor>(
        &self,
        name: &str,
        msg: A::Msg,
    ) -> Result<(), ClusterSendError<A::Msg>>
    where
        A::Msg: Serialize,
    {
        self.send_resolved::<A>(name, self.whereis_global(name), msg)
    }

    /// Sends `msg` to the process `name` resolved to, if it did.
    fn send_resolved<A: Actor>(
        &self,
        name: &str,
        pid: Option<Pid>,
        msg: A::Msg,
    ) -> Result<(), ClusterSendError<A::Msg>>
    where
        A::Msg: Serialize,
    {
        let Some(pid) = pid else {
            return Err(ClusterSendError::NotRegistered {
                name: name.to_string(),
                msg,
            });
        };
        match self.actor_ref::<A>(pid) {
            Ok(r) => Ok(r.send(msg)?),
            Err(_) => Err(ClusterSendError::Send(SendError::NoProc(msg))),
        }
    }

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

    /// Sends an unreliable, unordered QUIC datagram to a connected peer (for protocols such
    /// as membership gossip that must not wait behind streams). It must fit
    /// [`Node::max_datagram_size`].
    pub fn send_datagram(&self, node: NodeId, payload: bytes::Bytes) -> Result<(), DatagramError> {
        let peer = self
            .inner
            .peer(node)
            .ok_or_else(|| DatagramError::UnknownNode(node.to_string()))?;
        peer.conn.send_datagram(payload).map_err(|e| match e {
            quinn::SendDatagramError::TooLarge => DatagramError::TooLarge,
            other => DatagramError::Unavailable(other.to_string()),
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
        self.inner.closing.store(true, Ordering::SeqCst);
        naming::shutdown(&self.inner).await;
        self.inner
            .endpoint
            .close(quinn::VarInt::from_u32(0), b"shutdown");
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
        // Give the close frames a moment to leave; a peer that is already gone would
        // otherwise hold this up for the whole draining period.
        let _ =
            tokio::time::timeout(Duration::from_millis(200), self.inner.endpoint.wait_idle()).await;
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

fn send_named<M: Serialize>(
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
fn send_named_routed<M: Serialize>(
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

/// Picks the stream for sends by name: the same on every call, so sends to one name stay in
/// order (FNV-1a; it only has to spread names over a handful of streams).
fn name_key(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A new incarnation number: quarter-seconds since 2024-01-01 UTC, and larger than any
/// taken before in this process. A restart therefore gets a larger creation than the run it
/// replaces, which is what releasing the names of older incarnations relies on (valid until
/// about 2058).
fn new_creation() -> u32 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    const EPOCH_2024: u64 = 1_704_067_200;
    let quarters = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() / 250);
    let now = u64::try_from(quarters)
        .unwrap_or(u64::MAX)
        .saturating_sub(EPOCH_2024 * 4)
        .max(1);
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(last + 1);
        match LAST.compare_exchange(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return u32::try_from(next).unwrap_or(u32::MAX),
            Err(seen) => last = seen,
        }
    }
}

/// Why a control request got no answer.
enum AskError {
    /// It could not be queued: the connection is gone.
    NotSent,
    /// The connection went away before the answer came.
    Lost,
    /// No answer within the deadline.
    TimedOut,
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
        match self
            .known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&node)
        {
            Some(&(addr, false)) => Some(addr),
            _ => None,
        }
    }

    /// Records where `node` can be reached, unless an address is known already.
    fn learn_address(&self, node: NodeId, addr: SocketAddr) {
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(node)
            .or_insert((addr, false));
    }

    /// The live member named `name`, with its address recorded for connections on demand.
    fn live_member_named(&self, name: &str) -> Option<Member> {
        let member = self
            .swim
            .get()?
            .member_named(name)
            .filter(|m| m.state.is_live())?;
        self.learn_address(member.identity.node, member.identity.addr);
        Some(member)
    }

    fn datagram_receiver(&self, capacity: usize) -> mpsc::Receiver<(NodeId, bytes::Bytes)> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        *self.datagrams.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        rx
    }

    fn mark_down(&self, node: NodeId, down: bool) {
        if let Some(entry) = self
            .known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&node)
        {
            entry.1 = down;
        }
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

    fn broadcast(&self, msg: &Control) {
        let peers: Vec<Arc<Peer>> = self
            .peers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        for p in peers {
            let _ = p.send_control(msg);
        }
    }

    fn release_global(&self, name: &str, pid: Pid) {
        let removed = {
            let mut globals = self.globals.write().unwrap_or_else(|e| e.into_inner());
            if globals.get(name) == Some(&pid) {
                globals.remove(name);
                true
            } else {
                false
            }
        };
        if removed {
            self.broadcast(&Control::Gossip(RegistryGossip::Unregistered {
                name: name.to_string(),
                pid,
            }));
        }
    }

    fn local_globals(&self) -> Vec<(String, Pid)> {
        self.globals
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, p)| p.node == self.id)
            .map(|(n, p)| (n.clone(), *p))
            .collect()
    }

    /// Applies a peer's claim to a global name. A node may only claim names for its own
    /// processes; when two processes claim one name, the smaller pid wins on every node. A
    /// local process that loses is told so ([`NameLost`]), and the peers learn that it no
    /// longer holds the name.
    fn learn_global(&self, from: NodeId, name: String, pid: Pid) {
        if pid.node != from {
            warn!(peer = %from, %name, %pid, "ignored a global name claimed for another node's process");
            return;
        }
        let replaced = {
            let mut globals = self.globals.write().unwrap_or_else(|e| e.into_inner());
            match globals.get(&name) {
                Some(owner) if *owner <= pid => return,
                Some(owner) => {
                    let loser = *owner;
                    globals.insert(name.clone(), pid);
                    Some(loser)
                }
                None => {
                    globals.insert(name.clone(), pid);
                    None
                }
            }
        };
        if let Some(loser) = replaced.filter(|l| l.node == self.id) {
            self.lost_global(name, loser, pid);
        }
    }

    /// A local process lost the global `name` to `winner`: the peers forget its claim, and
    /// it is told if it asked to be.
    fn lost_global(&self, name: String, loser: Pid, winner: Pid) {
        self.broadcast(&Control::Gossip(RegistryGossip::Unregistered {
            name: name.clone(),
            pid: loser,
        }));
        let sinks = self.name_lost.lock().unwrap_or_else(|e| e.into_inner());
        match sinks.get(&loser) {
            Some(sink) => {
                info!(node = %self.name, %name, %loser, %winner, "a local process lost a global name; telling it");
                sink(NameLost { name, winner });
            }
            None => {
                warn!(node = %self.name, %name, %loser, %winner, "a local process lost a global name (it asked for no notification)")
            }
        }
    }

    /// Sends a request to `node` and waits for the answer. A node that is not connected
    /// but whose address is known (and that is not down) is connected first.
    async fn request(self: &Arc<Self>, node: NodeId, body: Request) -> Result<Response, RpcError> {
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
    async fn ask(
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
        let sent = std::time::Instant::now();
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(response)) => {
                self.request_rtt.record(sent.elapsed());
                Ok(response)
            }
            Ok(Err(_)) => Err(AskError::Lost),
            Err(_) => Err(AskError::TimedOut),
        }
    }

    fn serve(&self, from: NodeId, body: Request) -> Response {
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

    fn hello(&self, conn: &quinn::Connection) -> Result<Hello, ConnectError> {
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

    /// Checks a peer's introduction: its key derives to the id it claims, it signed this
    /// connection's secret with that key, and (in CA mode) its certificate is for that id.
    fn check_hello(&self, hello: &Hello, conn: &quinn::Connection) -> Result<(), ConnectError> {
        let refuse = |why: &str| Err(ConnectError::Handshake(why.to_string()));
        let Ok(public_key) = <[u8; 32]>::try_from(hello.public_key.as_slice()) else {
            return refuse("public key is not 32 bytes");
        };
        let Ok(proof) = <[u8; 64]>::try_from(hello.proof.as_slice()) else {
            return refuse("proof is not 64 bytes");
        };
        if atoll_net::node_id_of(&public_key) != hello.node_id {
            return refuse("claimed node id does not derive from the public key");
        }
        if !atoll_net::verify(&public_key, &exporter_secret(conn)?, &proof) {
            return refuse("proof of key possession does not verify");
        }
        if self.certificate_proves_id && atoll_net::peer_node_id(conn) != Some(hello.node_id) {
            return refuse("certificate is for another node id");
        }
        if hello.node_id == self.id {
            return Err(ConnectError::ToItself);
        }
        Ok(())
    }
}

fn exporter_secret(conn: &quinn::Connection) -> Result<[u8; 32], ConnectError> {
    let mut secret = [0u8; 32];
    conn.export_keying_material(&mut secret, EXPORTER_LABEL, b"")
        .map_err(|_| ConnectError::Handshake("no TLS exporter secret".into()))?;
    Ok(secret)
}

async fn accept_loop(weak: Weak<Inner>, endpoint: quinn::Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        let weak = weak.clone();
        tokio::spawn(async move {
            let Some(inner) = weak.upgrade() else { return };
            let attempt = async {
                let conn = incoming
                    .await
                    .map_err(|e| ConnectError::Connection(e.to_string()))?;
                establish(&inner, conn, None).await.map_err(|e| match e {
                    EstablishError::Refused(e) => e,
                    EstablishError::Superseded(_) => {
                        ConnectError::Handshake("superseded by a simultaneous connection".into())
                    }
                })
            };
            match tokio::time::timeout(inner.connect_timeout, attempt).await {
                Ok(Ok(_)) => {}
                Ok(Err(ConnectError::ToItself)) => {
                    debug!(node = %inner.name, "a connection from this node to itself was closed")
                }
                Ok(Err(e)) => warn!(node = %inner.name, "refused an incoming connection: {e}"),
                Err(_) => warn!(node = %inner.name, "an incoming connection timed out"),
            }
        });
    }
}

async fn dial(inner: &Arc<Inner>, addr: SocketAddr) -> Result<Arc<Peer>, ConnectError> {
    dial_within(inner, addr, inner.connect_timeout).await
}

/// Connects to `addr` (or finds the connection to the node there) within `timeout`.
async fn dial_within(
    inner: &Arc<Inner>,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<Arc<Peer>, ConnectError> {
    let attempt = async {
        let connecting = atoll_net::connect(&inner.endpoint, addr, None)
            .map_err(|e| ConnectError::Connection(e.to_string()))?;
        let conn = connecting
            .await
            .map_err(|e| ConnectError::Connection(e.to_string()))?;
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
/// dialed, if it opened the connection) and makes it a peer.
async fn establish(
    inner: &Arc<Inner>,
    conn: quinn::Connection,
    dialed_addr: Option<SocketAddr>,
) -> Result<Arc<Peer>, EstablishError> {
    let fail = |e: ConnectError, id: Option<NodeId>| match conn.close_reason() {
        Some(quinn::ConnectionError::ApplicationClosed(c))
            if c.error_code == quinn::VarInt::from_u32(DUPLICATE) =>
        {
            EstablishError::Superseded(id)
        }
        _ => EstablishError::Refused(e),
    };
    let (hello, send, reader) = introduce(inner, &conn, dialed_addr.is_some())
        .await
        .map_err(|e| fail(e, None))?;
    let mut streams = Vec::with_capacity(inner.message_streams);
    for _ in 0..inner.message_streams {
        let stream = conn
            .open_uni()
            .await
            .map_err(|e| fail(ConnectError::Handshake(e.to_string()), Some(hello.node_id)))?;
        streams.push(stream);
    }
    let dialer = if dialed_addr.is_some() {
        inner.id
    } else {
        hello.node_id
    };
    let peer = Arc::new(Peer::new(
        &hello,
        conn.clone(),
        dialer,
        dialed_addr,
        send,
        streams,
    ));
    let peer = adopt(inner, peer);
    if peer.conn.stable_id() == conn.stable_id() {
        start_peer_tasks(inner, &peer, reader);
        let snapshot = inner.local_globals();
        let _ = peer.send_control(&Control::Gossip(RegistryGossip::Snapshot(snapshot)));
        let groups = inner
            .groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .sync();
        let _ = peer.send_control(&Control::Groups(groups));
        naming::greet(inner, &peer);
        info!(node = %inner.name, peer = %peer.name, id = %peer.id, creation = peer.creation, "peer connected");
    }
    Ok(peer)
}

/// The introductions: the dialer speaks first, each side checks the other's proof.
async fn introduce(
    inner: &Inner,
    conn: &quinn::Connection,
    dialed: bool,
) -> Result<(Hello, quinn::SendStream, FrameReader), ConnectError> {
    let io = |e: &dyn std::fmt::Display| ConnectError::Handshake(e.to_string());
    let (mut send, recv) = if dialed {
        conn.open_bi().await.map_err(|e| io(&e))?
    } else {
        conn.accept_bi().await.map_err(|e| io(&e))?
    };
    let mut reader = FrameReader::new(recv, inner.max_frame_len);
    let mine = atoll_wire::encode_frame(&Control::Hello(inner.hello(conn)?)).map_err(|e| io(&e))?;
    // The dialer speaks first: a QUIC stream reaches the other side with its first bytes.
    if dialed {
        send.write_all(&mine).await.map_err(|e| io(&e))?;
    }
    let hello = match reader.next().await.map_err(|e| io(&e))? {
        Some(body) => match decode::<Control>(&body).map_err(|e| io(&e))? {
            Control::Hello(h) => h,
            _ => return Err(ConnectError::Handshake("expected an introduction".into())),
        },
        None => return Err(ConnectError::Handshake("stream closed".into())),
    };
    if let Err(e) = inner.check_hello(&hello, conn) {
        if !dialed && e == ConnectError::ToItself {
            // Answer, so the dialing side learns it reached this very node; it closes the
            // connection then.
            if send.write_all(&mine).await.is_ok() {
                let _ = tokio::time::timeout(inner.connect_timeout, conn.closed()).await;
            }
        }
        return Err(e);
    }
    if !dialed {
        send.write_all(&mine).await.map_err(|e| io(&e))?;
    }
    Ok((hello, send, reader))
}

/// Registers a freshly introduced peer, resolving a duplicate: of two live connections
/// between the same pair, the one dialed by the smaller node id survives; a connection from
/// a new incarnation replaces the old one.
fn adopt(inner: &Arc<Inner>, peer: Arc<Peer>) -> Arc<Peer> {
    let address = peer
        .dialed_addr
        .or_else(|| peer.listen.as_deref().and_then(|a| a.parse().ok()));
    if let Some(addr) = address {
        inner
            .known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(peer.id, (addr, false));
    }
    let mut peers = inner.peers.write().unwrap_or_else(|e| e.into_inner());
    if let Some(existing) = peers.get(&peer.id).cloned() {
        let alive = existing.conn.close_reason().is_none();
        let same_incarnation = existing.creation == peer.creation;
        if alive && same_incarnation {
            let keep_new = peer.dialer == peer.id.min(inner.id) && existing.dialer != peer.dialer;
            if !keep_new {
                peer.conn
                    .close(quinn::VarInt::from_u32(DUPLICATE), b"duplicate connection");
                return existing;
            }
        }
        peers.insert(peer.id, peer.clone());
        drop(peers);
        existing
            .conn
            .close(quinn::VarInt::from_u32(DUPLICATE), b"replaced");
        if alive && same_incarnation {
            // The same peer over the other of two simultaneous connections: its processes
            // are as alive as before, so links and monitors stand.
            existing.fail_requests();
        } else {
            forget_peer(inner, &existing);
        }
        return peer;
    }
    peers.insert(peer.id, peer.clone());
    peer
}

/// Cleans up after a peer connection: its processes' links and monitors see
/// `NoConnection`, its global names go, its pending requests fail.
fn forget_peer(inner: &Arc<Inner>, peer: &Arc<Peer>) {
    peer.fail_requests();
    inner.rt.node_down(peer.id);
    inner
        .globals
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|_, p| p.node != peer.id);
    inner
        .groups
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .node_down(peer.id);
}

fn start_peer_tasks(inner: &Arc<Inner>, peer: &Arc<Peer>, control: FrameReader) {
    tokio::spawn(control_loop(Arc::downgrade(inner), peer.clone(), control));
    tokio::spawn(accept_message_streams(Arc::downgrade(inner), peer.clone()));
    tokio::spawn(watch_connection(Arc::downgrade(inner), peer.clone()));
    tokio::spawn(datagram_loop(Arc::downgrade(inner), peer.clone()));
}

async fn datagram_loop(weak: Weak<Inner>, peer: Arc<Peer>) {
    while let Ok(datagram) = peer.conn.read_datagram().await {
        let Some(inner) = weak.upgrade() else { return };
        let sink = inner
            .datagrams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        // Datagrams are unreliable by nature: with no reader, or a full queue, drop them.
        if let Some(sink) = sink {
            let _ = sink.try_send((peer.id, datagram));
        }
    }
}

async fn control_loop(weak: Weak<Inner>, peer: Arc<Peer>, mut reader: FrameReader) {
    loop {
        let body = match reader.next().await {
            Ok(Some(body)) => body,
            Ok(None) => return,
            // The connection went away: the connection watcher takes it from here.
            Err(ReadError::Stream(_)) => return,
            Err(e) => {
                warn!(peer = %peer.name, "control stream failed: {e}");
                peer.conn
                    .close(quinn::VarInt::from_u32(3), b"bad control frame");
                return;
            }
        };
        peer.frames_received.fetch_add(1, Ordering::Relaxed);
        let Some(inner) = weak.upgrade() else { return };
        let msg = match decode::<Control>(&body) {
            Ok(m) => m,
            Err(e) => {
                warn!(peer = %peer.name, "malformed control frame: {e}");
                peer.conn
                    .close(quinn::VarInt::from_u32(3), b"bad control frame");
                return;
            }
        };
        match msg {
            Control::Hello(_) => warn!(peer = %peer.name, "ignored a second introduction"),
            Control::Gossip(RegistryGossip::Snapshot(names)) => {
                for (name, pid) in names {
                    inner.learn_global(peer.id, name, pid);
                }
            }
            Control::Gossip(RegistryGossip::Registered { name, pid }) => {
                inner.learn_global(peer.id, name, pid);
            }
            Control::Gossip(RegistryGossip::Unregistered { name, pid }) => {
                let mut globals = inner.globals.write().unwrap_or_else(|e| e.into_inner());
                if pid.node == peer.id && globals.get(&name) == Some(&pid) {
                    globals.remove(&name);
                }
            }
            Control::Request { id, body } => {
                // Served off this loop, so a slow request never holds up gossip.
                let peer = peer.clone();
                tokio::spawn(async move {
                    let body = match body {
                        Request::Raft(raft) => naming::serve(&inner, raft).await,
                        Request::AwaitName { name, pid, wait_ms } => {
                            naming::serve_await_name(&inner, &name, pid, wait_ms).await
                        }
                        Request::AwaitLock {
                            name,
                            holder,
                            after,
                            wait_ms,
                        } => naming::serve_await_lock(&inner, &name, holder, after, wait_ms).await,
                        other => inner.serve(peer.id, other),
                    };
                    let _ = peer.send_control(&Control::Response { id, body });
                });
            }
            Control::Registry(view) => naming::learn_view(&inner, peer.id, view),
            Control::Groups(message) => {
                let applied = inner
                    .groups
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .apply(peer.id, message);
                if let Err(e) = applied {
                    warn!(peer = %peer.name, "refused a process-group message: {e}");
                }
            }
            Control::Response { id, body } => {
                let waiter = peer
                    .requests
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
                if let Some(w) = waiter {
                    let _ = w.send(body);
                }
            }
        }
    }
}

async fn accept_message_streams(weak: Weak<Inner>, peer: Arc<Peer>) {
    while let Ok(recv) = peer.conn.accept_uni().await {
        let Some(inner) = weak.upgrade() else { return };
        let reader = FrameReader::new(recv, inner.max_frame_len);
        tokio::spawn(message_loop(weak.clone(), peer.clone(), reader));
    }
}

async fn message_loop(weak: Weak<Inner>, peer: Arc<Peer>, mut reader: FrameReader) {
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let handled = reader
            .next_with(|body| match decode_ref::<DataRef<'_>>(body) {
                Ok(data) => {
                    peer.frames_received.fetch_add(1, Ordering::Relaxed);
                    dispatch(&inner, &peer, data);
                    Ok(())
                }
                Err(e) => Err(e),
            })
            .await;
        drop(inner);
        match handled {
            Ok(Some(Ok(()))) => {}
            Ok(None) => return,
            Ok(Some(Err(e))) => {
                warn!(peer = %peer.name, "message stream refused: {e}");
                reader.refuse();
                return;
            }
            Err(ReadError::Stream(_)) => return,
            Err(e) => {
                warn!(peer = %peer.name, "message stream refused: {e}");
                reader.refuse();
                return;
            }
        }
    }
}

fn dispatch(inner: &Inner, peer: &Peer, data: DataRef<'_>) {
    match data {
        DataRef::Send { to, payload } => {
            if let Err(e) = inner.rt.deliver_encoded(peer.id, to, payload) {
                debug!(peer = %peer.name, "dropped a message: {e}");
            }
        }
        DataRef::SendNamed { name, payload } => match inner.rt.whereis(name) {
            Some(to) => {
                if let Err(e) = inner.rt.deliver_encoded(peer.id, to, payload) {
                    debug!(peer = %peer.name, %name, "dropped a message: {e}");
                }
            }
            None => debug!(peer = %peer.name, %name, "dropped a message for an unknown name"),
        },
        DataRef::Reply { call, payload } => {
            inner.rt.deliver_reply(call, payload);
        }
        DataRef::Signal(signal) => {
            let sender = signal.sender();
            if sender.node != peer.id {
                warn!(peer = %peer.name, %sender, "ignored a signal sent on behalf of another node");
                return;
            }
            inner.rt.deliver_signal(signal);
        }
    }
}

async fn watch_connection(weak: Weak<Inner>, peer: Arc<Peer>) {
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
            inner.mark_down(peer.id, !peer.closed_on_purpose.load(Ordering::Acquire));
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
    let wanted = [peer.dialed_addr, advertised]
        .into_iter()
        .flatten()
        .find(|a| {
            inner
                .wanted
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(a)
        });
    if let Some(addr) = wanted {
        tokio::spawn(reconnect(weak, addr));
    }
}

async fn reconnect(weak: Weak<Inner>, addr: SocketAddr) {
    let Some((mut delay, max)) = weak.upgrade().map(|i| i.reconnect) else {
        return;
    };
    loop {
        tokio::time::sleep(delay).await;
        let Some(inner) = weak.upgrade() else { return };
        if inner.closing.load(Ordering::SeqCst) {
            return;
        }
        match dial(&inner, addr).await {
            Ok(_) => return,
            Err(e) => debug!(node = %inner.name, %addr, "reconnect failed: {e}"),
        }
        delay = (delay * 2).min(max);
    }
}

/// The runtime's way out to other nodes.
struct Link(Weak<Inner>);

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
fn route(
    inner: &Arc<Inner>,
    node: NodeId,
    key: u64,
    data: &Data,
    signal: Option<Signal>,
) -> Result<(), NoConnection> {
    // The common case, a connected node and no backlog anywhere, takes no lock here.
    if inner.backlog_count.load(Ordering::Acquire) == 0
        && let Some(peer) = inner.peer(node)
    {
        return peer.send_data(key, data).map_err(|_| NoConnection);
    }
    let mut backlogs = inner.backlogs.lock().unwrap_or_else(|e| e.into_inner());
    // While a backlog drains, later envelopes join it, so none overtakes another.
    if let Some(backlog) = backlogs.get_mut(&node) {
        return backlog.push(key, data, signal);
    }
    if let Some(peer) = inner.peer(node) {
        drop(backlogs);
        return peer.send_data(key, data).map_err(|_| NoConnection);
    }
    let addr = inner.known_address(node).ok_or(NoConnection)?;
    let mut backlog = Backlog::default();
    backlog.push(key, data, signal)?;
    backlogs.insert(node, backlog);
    inner.backlog_count.fetch_add(1, Ordering::AcqRel);
    drop(backlogs);
    tokio::spawn(connect_lazily(Arc::downgrade(inner), node, addr));
    Ok(())
}

/// Envelopes waiting for a lazily opened connection.
#[derive(Default)]
struct Backlog {
    frames: Vec<(u64, Vec<u8>)>,
    /// Links and monitors among them, answered locally with `NoConnection` if the
    /// connection cannot be opened.
    signals: Vec<Signal>,
}

/// The most envelopes held for a node while its connection opens.
const BACKLOG_LIMIT: usize = 4096;

impl Backlog {
    fn push(&mut self, key: u64, data: &Data, signal: Option<Signal>) -> Result<(), NoConnection> {
        if self.frames.len() >= BACKLOG_LIMIT {
            return Err(NoConnection);
        }
        let frame = atoll_wire::encode_frame(data).map_err(|_| NoConnection)?;
        self.frames.push((key, frame));
        self.signals.extend(signal);
        Ok(())
    }
}

async fn connect_lazily(weak: Weak<Inner>, node: NodeId, addr: SocketAddr) {
    let Some(inner) = weak.upgrade() else { return };
    let connected = match dial(&inner, addr).await {
        Ok(peer) if peer.id == node => Some(peer),
        Ok(_) | Err(_) => None,
    };
    let backlog = {
        let mut backlogs = inner.backlogs.lock().unwrap_or_else(|e| e.into_inner());
        let backlog = backlogs.remove(&node);
        if backlog.is_some() {
            inner.backlog_count.fetch_sub(1, Ordering::AcqRel);
        }
        let backlog = backlog.unwrap_or_default();
        if let Some(peer) = &connected {
            // Drained under the lock: nothing sent meanwhile can overtake it.
            for (key, frame) in &backlog.frames {
                let _ = peer.send_frame(*key, frame);
            }
            return;
        }
        backlog
    };
    debug!(node = %inner.name, peer = %node, %addr, "lazy connection failed");
    for signal in backlog.signals {
        match signal {
            Signal::Link { from, to } => inner.rt.deliver_signal(Signal::Exit {
                from: to,
                to: from,
                reason: atoll_core::ExitReason::NoConnection,
                kind: atoll_actor::ExitKind::Link,
            }),
            Signal::Monitor { from, to, monitor } => inner.rt.deliver_signal(Signal::Down {
                to: from,
                monitor,
                pid: to,
                reason: atoll_core::ExitReason::NoConnection,
            }),
            _ => {}
        }
    }
    // Reply handles that went into the backlog will not be answered.
    inner.rt.node_down(node);
}

impl Remote for Link {
    fn send(&self, to: Pid, payload: Vec<u8>) -> Result<(), NoConnection> {
        self.route(
            to.node,
            Peer::stream_key(to),
            &Data::Send { to, payload },
            None,
        )
    }

    fn reply(&self, node: NodeId, call: u64, payload: Vec<u8>) -> Result<(), NoConnection> {
        self.route(node, call, &Data::Reply { call, payload }, None)
    }

    fn is_connected(&self, node: NodeId) -> bool {
        self.0
            .upgrade()
            .is_some_and(|i| i.peer(node).is_some() || i.known_address(node).is_some())
    }

    fn signal(&self, signal: Signal) -> Result<(), NoConnection> {
        let to = signal.target();
        let data = Data::Signal(signal.clone());
        self.route(to.node, Peer::stream_key(to), &data, Some(signal))
    }
}
