use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use atoll_core::NodeId;
use atoll_net::{NodeCertificate, NodeIdentity, SharedIdentity, TransportSettings, TrustConfig};
use atoll_swim::SwimConfig;

use crate::protocol::split_brain::SplitBrainPolicy;

/// [`NodeConfig::max_frame_len`] unless set otherwise: 8 MiB.
pub const DEFAULT_MAX_FRAME_LEN: usize = 8 << 20;
/// [`NodeConfig::message_streams`] unless set otherwise.
pub const DEFAULT_MESSAGE_STREAMS: usize = 4;

/// Everything a node needs to start.
///
/// [`NodeConfig::validate`] checks the settings against their bounds.
#[derive(Clone)]
pub struct NodeConfig {
    /// The human name peers know this node by, e.g. `london`.
    pub name: String,
    /// The UDP address to accept connections on (port 0 picks one).
    pub listen: SocketAddr,
    /// The node's own key: its node id derives from it.
    pub identity: Arc<NodeIdentity>,
    /// What this node presents in TLS and whom it trusts.
    pub tls: TlsIdentity,
    /// QUIC keep-alive, idle timeout and datagram settings.
    pub transport: TransportSettings,
    /// The largest frame accepted from a peer (version byte plus body); checked before any
    /// allocation.
    pub max_frame_len: usize,
    /// Message streams per peer: messages for one process always share one stream (so they
    /// stay in order) and processes spread over the streams (so one slow stream does not
    /// hold up the others).
    pub message_streams: usize,
    /// Delay before the first reconnection attempt to a dropped peer; doubles up to
    /// `reconnect_max`.
    pub reconnect_initial: Duration,
    /// The longest delay between reconnection attempts.
    pub reconnect_max: Duration,
    /// How long a connection attempt (QUIC handshake plus introduction) may take.
    pub connect_timeout: Duration,
    /// How long requests to other nodes (remote spawn, process listings) wait for an answer.
    pub request_timeout: Duration,
    /// SWIM membership: `None` (the default) runs the node without it, connecting only
    /// where told to.
    pub membership: Option<MembershipConfig>,
    /// Consensus names and locks: `None` (the default) runs the node without them.
    pub consensus: Option<ConsensusConfig>,
    /// How the process table and service registry gossip.
    pub data: DataConfig,
    /// A directory where the node records its last incarnation (synced before the number
    /// is used), so incarnations keep growing across restarts even when the wall clock
    /// steps back. `None` (the default): a voter records in its consensus `data_dir`, any
    /// other node has only the wall clock (see [`Node::start`](crate::Node::start)).
    pub state_dir: Option<PathBuf>,
}

/// How a node gossips cluster data (the process table and the service registry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataConfig {
    /// How often the node advertises what changed and opens gossip rounds.
    pub period: Duration,
    /// Fanout, byte budget and the rhythm of repairs.
    pub gossip: crate::protocol::data::DataSettings,
}

impl Default for DataConfig {
    /// A round every 500 ms with three members, 256 KiB of deltas per period, a Merkle
    /// comparison every fifth round.
    fn default() -> Self {
        DataConfig {
            period: Duration::from_millis(500),
            gossip: Default::default(),
        }
    }
}

/// How a node takes part in the cluster's consensus (Consistent names and locks).
///
/// Every node of a cluster is given the same voter set. A node whose id is one of the voters
/// runs a Raft voter with its log in `data_dir`; every other node sends its proposals to
/// the voters and resolves names from the registry the voters push to it.
#[derive(Clone, Debug, PartialEq)]
pub struct ConsensusConfig {
    /// The fixed voter set (3 or 5 nodes): each voter's node id and the address it accepts
    /// connections on.
    pub voters: Vec<(NodeId, SocketAddr)>,
    /// This node's Raft directory (one per node; unused on a non-voter).
    pub data_dir: PathBuf,
    /// How often the Raft leader sends heartbeats.
    pub heartbeat_interval: Duration,
    /// The shortest Raft election timeout; several heartbeat intervals.
    pub election_timeout_min: Duration,
    /// The longest Raft election timeout.
    pub election_timeout_max: Duration,
    /// How long a registration, unregistration or lock request may take before it fails
    /// with a typed error (no leader, unreachable, or outcome unknown).
    pub request_timeout: Duration,
    /// With [`RegistryPush::Deltas`], how often a voter looks for peers to bring up to date
    /// besides right after each change; with [`RegistryPush::Snapshots`], the least time
    /// between two pushes of the whole registry.
    pub push_interval: Duration,
    /// How voters keep the other nodes' registry copies up to date.
    pub push: RegistryPush,
    /// How many commands of the latest registry entries a voter keeps to send as deltas; a
    /// node further behind is sent the whole registry.
    pub delta_window: usize,
    /// How often the Raft leader looks for names and locks of lost nodes and of exited
    /// incarnations to release.
    pub release_interval: Duration,
}

impl ConsensusConfig {
    /// Consensus with these voters and this node's Raft directory, with defaults suited to a
    /// LAN: 100 ms heartbeats, 400–800 ms election timeouts, 5 s requests, registry
    /// changes pushed as deltas (a look for peers to bring up to date every 50 ms besides),
    /// release checks every 250 ms.
    pub fn new(voters: Vec<(NodeId, SocketAddr)>, data_dir: impl Into<PathBuf>) -> Self {
        ConsensusConfig {
            voters,
            data_dir: data_dir.into(),
            heartbeat_interval: Duration::from_millis(100),
            election_timeout_min: Duration::from_millis(400),
            election_timeout_max: Duration::from_millis(800),
            request_timeout: Duration::from_secs(5),
            push_interval: Duration::from_millis(50),
            push: RegistryPush::Deltas,
            delta_window: atoll_raft::feed::DEFAULT_WINDOW,
            release_interval: Duration::from_millis(250),
        }
    }
}

/// How voters keep the registry copies of the other nodes up to date.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RegistryPush {
    /// Each node is sent the entries it lacks right after they are applied, and the whole
    /// registry only to catch up (it is new, restarted, or behind the retained window).
    #[default]
    Deltas,
    /// Every node is sent the whole registry whenever it changed, at most every
    /// `push_interval` (costs every node a full copy per change: kept for comparison).
    Snapshots,
}

/// How a node takes part in SWIM membership (see [`crate::Node::membership`]).
#[derive(Clone, Debug, PartialEq)]
pub struct MembershipConfig {
    /// Addresses of nodes to join through. Empty, or only this node's own address: this node
    /// founds the cluster. Seeds that do not answer are retried every
    /// `swim.rejoin_interval`.
    pub seeds: Vec<SocketAddr>,
    /// Protocol timings and limits.
    pub swim: SwimConfig,
    /// Roles this node announces, such as `voter`.
    pub roles: Vec<String>,
    /// Capabilities this node announces, such as `storage_nvme`.
    pub capabilities: Vec<String>,
    /// The address other members reach this node on; `None` announces the bound address
    /// (set it when listening on an unspecified address such as `0.0.0.0`).
    pub advertise: Option<SocketAddr>,
    /// How long a connection opened for membership traffic may take (QUIC handshake plus
    /// introduction). Short, so an unreachable member does not hold attempts up.
    pub connect_timeout: Duration,
    /// Which side of a partition downs the other. With keep-majority, SWIM's suspect
    /// timeout no longer declares anyone down by itself: the policy does, once the view has
    /// been stable for its window (see docs/semantics.md).
    pub split_brain: SplitBrainPolicy,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        MembershipConfig {
            seeds: Vec::new(),
            swim: SwimConfig::default(),
            roles: Vec::new(),
            capabilities: Vec::new(),
            advertise: None,
            connect_timeout: Duration::from_secs(2),
            split_brain: SplitBrainPolicy::Off,
        }
    }
}

impl MembershipConfig {
    /// Membership joining through `seeds`, with default timings and no roles or
    /// capabilities.
    pub fn new(seeds: impl IntoIterator<Item = SocketAddr>) -> Self {
        MembershipConfig {
            seeds: seeds.into_iter().collect(),
            ..MembershipConfig::default()
        }
    }

    /// With this split-brain policy.
    pub fn with_split_brain(mut self, policy: SplitBrainPolicy) -> Self {
        self.split_brain = policy;
        self
    }

    /// With these protocol settings.
    pub fn with_swim(mut self, swim: SwimConfig) -> Self {
        self.swim = swim;
        self
    }

    /// With these roles.
    pub fn with_roles<S: Into<String>>(mut self, roles: impl IntoIterator<Item = S>) -> Self {
        self.roles = roles.into_iter().map(Into::into).collect();
        self
    }

    /// With these capabilities.
    pub fn with_capabilities<S: Into<String>>(
        mut self,
        capabilities: impl IntoIterator<Item = S>,
    ) -> Self {
        self.capabilities = capabilities.into_iter().map(Into::into).collect();
        self
    }
}

/// The TLS side of a node: its certificate, the key it is over, and the trust roots.
#[derive(Clone)]
pub struct TlsIdentity {
    /// The key the certificate is over (the node key in CA mode, the shared key otherwise).
    pub key: Arc<NodeIdentity>,
    /// The certificate presented to peers.
    pub cert: NodeCertificate,
    /// Whom to trust.
    pub trust: TrustConfig,
    /// True when the certificate proves the node id (CA mode); false in shared mode, where
    /// only the signed introduction does.
    pub proves_node_id: bool,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("cert_node_id", &self.cert.node_id())
            .field("proves_node_id", &self.proves_node_id)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeConfig")
            .field("name", &self.name)
            .field("listen", &self.listen)
            .field("node_id", &self.identity.node_id())
            .field("membership", &self.membership)
            .field("consensus", &self.consensus)
            .finish_non_exhaustive()
    }
}

impl NodeConfig {
    /// With SWIM membership: the node joins through `membership.seeds` when it starts.
    pub fn with_membership(mut self, membership: MembershipConfig) -> Self {
        self.membership = Some(membership);
        self
    }

    /// Recording incarnations in `dir` (see [`NodeConfig::state_dir`]).
    pub fn with_state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }

    /// With consensus names and locks (see [`ConsensusConfig`]).
    pub fn with_consensus(mut self, consensus: ConsensusConfig) -> Self {
        self.consensus = Some(consensus);
        self
    }

    /// A node of a CA-managed cluster: `cert` was issued by the cluster CA over `identity`'s
    /// key, and `trust` holds the CA and the revocation list.
    pub fn with_ca(
        name: impl Into<String>,
        listen: SocketAddr,
        identity: NodeIdentity,
        cert: NodeCertificate,
        trust: TrustConfig,
    ) -> Self {
        let identity = Arc::new(identity);
        Self::new(
            name.into(),
            listen,
            identity.clone(),
            TlsIdentity {
                key: identity,
                cert,
                trust,
                proves_node_id: true,
            },
        )
    }

    /// A node of a small trusted cluster sharing one TLS identity; the node's own key still
    /// decides its node id, proven by a signature in its introduction.
    pub fn with_shared_identity(
        name: impl Into<String>,
        listen: SocketAddr,
        identity: NodeIdentity,
        shared: &SharedIdentity,
    ) -> Result<Self, atoll_net::KeyError> {
        let key =
            NodeIdentity::from_pkcs8_der(shared.identity().to_pkcs8_der().secret_pkcs8_der())?;
        Ok(Self::new(
            name.into(),
            listen,
            Arc::new(identity),
            TlsIdentity {
                key: Arc::new(key),
                cert: shared.certificate().clone(),
                trust: shared.trust(),
                proves_node_id: false,
            },
        ))
    }

    fn new(
        name: String,
        listen: SocketAddr,
        identity: Arc<NodeIdentity>,
        tls: TlsIdentity,
    ) -> Self {
        NodeConfig {
            name,
            listen,
            identity,
            tls,
            // A dead peer is noticed within the idle timeout; keep-alives keep quiet
            // connections from reaching it.
            transport: TransportSettings {
                keep_alive_interval: Some(Duration::from_secs(2)),
                max_idle_timeout: Duration::from_secs(10),
                ..TransportSettings::default()
            },
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            message_streams: DEFAULT_MESSAGE_STREAMS,
            reconnect_initial: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            state_dir: None,
            membership: None,
            consensus: None,
            data: DataConfig::default(),
        }
    }
}
