//! The atoll node: a local runtime whose processes reach processes on other nodes over
//! mutually authenticated QUIC.
//!
//! - [`Node::connect`] joins a peer; [`RemoteNode`] is the handle to it.
//!   [`Node::keep_connected`] keeps a connection to a [`PeerAddress`] up from the start,
//!   with backoff, whether or not the peer answers at first.
//! - `ActorRef<A>` works the same for remote processes: messages are encoded with serde and
//!   decoded on arrival with the process's own message type (actors opt in with
//!   `Actor::remote_decoder`). Pids and reply handles inside messages survive the trip.
//! - Links and monitors cross nodes; a lost peer breaks them with `NoConnection`.
//! - Global names: [`Node::register_global`], [`Node::whereis_global`], [`Node::send_global`].
//! - Remote spawn from registered factories: [`Node::register_spawnable`],
//!   [`Node::spawn_remote`].
//! - Live attach: [`Node::remote_processes`]; operator status: [`Node::status`], and
//!   the same as Prometheus metrics: [`Node::metrics`], [`render_metrics`].
//! - SWIM membership ([`MembershipConfig`], [`Node::membership`], [`Node::member_events`]):
//!   nodes find each other through seeds and gossip, members found that way are reachable
//!   by name, and members declared unreachable or gone are disconnected.
//! - Configuration ([`NodeConfig`]) checked by [`NodeConfig::validate`], with typed
//!   [`ConfigError`]s.
//! - Naming scopes and locks ([`ConsensusConfig`], [`Node::register`], [`Node::whereis`],
//!   [`Node::lock`]): Local, Eventual and Consistent names, the Consistent ones and the
//!   locks held by a fixed set of Raft voters and pushed to every member, so names resolve
//!   locally.
#![deny(missing_docs)]

mod address;
pub mod builtin;
pub mod chat;
mod config;
mod convert;
mod error;
pub mod groups;
mod metrics;
mod node;
mod peer;
pub mod protocol;
pub mod transport;
mod validate;

pub use address::{PeerAddress, PeerAddressError};
pub use atoll_data::{
    HashRing, ProcessAdvertisement, ProcessStatus as AdvertisedStatus, ResourceSummary,
    ServiceAdvertisement,
};
pub use atoll_raft::{ConsensusError, RaftStatus, Role as RaftRole};
pub use atoll_swim::{
    Identity as MemberIdentity, IdentityError, Load, MAX_LABEL_LEN, MAX_LABELS, Member,
    MemberEvent, MemberMeta, MemberState, Swim, SwimConfig, SwimStats,
};
pub use atoll_wire::{Payload, ProcessInfoWire, StatusWire};
pub use config::{
    ConsensusConfig, DEFAULT_MAX_FRAME_LEN, DEFAULT_MESSAGE_STREAMS, DataConfig, MembershipConfig,
    NodeConfig, RegistryPush, TlsIdentity,
};
pub use error::{
    ClusterSendError, ConnectError, DatagramError, GlobalError, GroupJoinError, LockError,
    NameError, RpcError, StartError,
};
pub use metrics::{METRICS_CONTENT_TYPE, render_metrics};
pub use node::{
    DataStatus, FencedStatus, FencingStatus, GroupStatus, LockGuard, LockStatus, MAX_NAME_LEN,
    MemberStatus, NameLost, NameStatus, Node, NodeStatus, PeerInfo, PeerStatus, RTT_BUCKETS_US,
    RaftView, RegistryFeedStats, RegistryIndex, RemoteNode, RttSnapshot, ServiceError,
    ServiceOffer, ServiceStatus, UdpBufferStatus, WeakNode, scope_name,
};
pub use protocol::data::{DataSettings, DataStats};
/// What a process that asked ([`Node::notify_fenced`]) is told when its node was fenced.
pub use protocol::fence::FenceNotice;
pub use protocol::split_brain::SplitBrainPolicy;
pub use validate::{
    ConfigError, LabelKind, MAX_FRAME_LEN, MAX_INDIRECT_PROBES, MAX_MESSAGE_STREAMS, MAX_TIMING,
    MIN_FRAME_LEN, MIN_TIMING, Setting,
};
