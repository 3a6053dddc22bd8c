//! atoll: a distributed actor runtime for Rust, with Erlang/OTP processes, links and
//! supervision.
//!
//! This facade re-exports the pieces an application uses: the local runtime ([`Runtime`],
//! [`Actor`], [`ActorRef`], supervisors) and the node ([`Node`]) that connects runtimes over
//! authenticated QUIC. An `ActorRef` is the same type for a local or a remote process, so
//! code written against the local runtime does not change when it goes distributed.
//!
//! ```
//! use atoll::{Actor, ActorResult, ChildSpec, Ctx, Runtime, Strategy, Supervisor, SupervisorSpec};
//!
//! struct Worker;
//! impl Actor for Worker {
//!     type Msg = u32;
//!     async fn handle(&mut self, n: u32, _ctx: &mut Ctx<Self>) -> ActorResult {
//!         if n == 0 { return Err(atoll::ActorError::msg("zero")); }
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let rt = Runtime::new();
//! let sup = Supervisor::start(&rt, SupervisorSpec::new(Strategy::OneForOne)
//!     .child(ChildSpec::worker("worker", || Worker)));
//! # let _ = sup;
//! rt.shutdown(std::time::Duration::from_secs(1)).await;
//! # }
//! ```
#![deny(missing_docs)]

pub use atoll_actor::*;
pub use atoll_cluster::{
    ClusterSendError, ConfigError, ConnectError, ConsensusConfig, ConsensusError, GlobalError,
    GroupJoinError, IdentityError, Load, LockError, LockGuard, MAX_NAME_LEN, METRICS_CONTENT_TYPE,
    Member, MemberEvent, MemberIdentity, MemberMeta, MemberState, MembershipConfig, NameError,
    NameLost, Node, NodeConfig, NodeStatus, PeerInfo, RaftRole, RaftStatus, RemoteNode, RpcError,
    StartError, Swim, SwimConfig, SwimStats, WeakNode, builtin, chat, render_metrics,
};
pub use atoll_core::{Scope, SplitMix64};

/// Identity, certificates and trust: what a node needs to join a cluster.
pub mod net {
    pub use atoll_net::*;
}

/// Serde, re-exported so message types can derive it without another dependency line.
pub use serde;

/// The README's code blocks, compiled and run as doc tests so they stay true.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
