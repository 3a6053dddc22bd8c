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
    NameLost, Node, NodeConfig, NodeStatus, Payload, PeerAddress, PeerAddressError, PeerInfo,
    RaftRole, RaftStatus, RegistryFeedStats, RegistryPush, RemoteNode, RpcError, StartError, Swim,
    SwimConfig, SwimStats, WeakNode, builtin, chat, render_metrics,
};
pub use atoll_cluster::{
    DataConfig, DataSettings, DataStats, HashRing, ProcessAdvertisement, ServiceAdvertisement,
    ServiceError,
};
pub use atoll_core::{Scope, SplitMix64};

/// Identity, certificates and trust: what a node needs to join a cluster.
pub mod net {
    pub use atoll_net::*;
}

/// Grains: virtual actors addressed by (type, key), with single activation fenced by
/// consensus, placement and epoch-fenced state (see [`grain::Grains`]).
pub mod grain {
    pub use atoll_grain::*;
}

/// A deterministic test kit for a cluster of your own actors: real nodes in one process,
/// connected by an in-memory network on a paused clock, every random choice (network
/// delays, losses, the workload's and the faults' choices) drawn from one seed.
///
/// Start a [`SimCluster`](testkit::SimCluster), spawn your actors on chosen nodes, drive
/// your workload, inject faults ([`partition`](testkit::SimCluster::partition),
/// [`crash`](testkit::SimCluster::crash), [`restart`](testkit::SimCluster::restart),
/// [`MemNetwork::set_faults`](testkit::MemNetwork::set_faults) for loss, duplication and
/// delay), and check your invariants. [`check_seeds`](testkit::check_seeds) runs a scenario
/// over many seeds; a failing one is named, and `ATOLL_SIM_SEED=<seed>` replays it.
///
/// ```
/// use atoll::testkit::{ClusterSpec, SimCluster, check_seeds};
/// use atoll::{Actor, ActorResult, Ctx, Scope};
/// use std::time::Duration;
///
/// struct Service;
/// impl Actor for Service {
///     type Msg = ();
///     async fn handle(&mut self, _: (), _: &mut Ctx<Self>) -> ActorResult { Ok(()) }
/// }
///
/// check_seeds(0..3, |seed| async move {
///     let sim = SimCluster::start(seed, ClusterSpec::new(3)).unwrap();
///     assert!(sim.wait_until(Duration::from_secs(30), |s| s.converged()).await);
///     let node = sim.node(2).unwrap();
///     let pid = node.runtime().spawn(Service).pid();
///     node.register("service", pid, Scope::Consistent).await.unwrap();
///     // The invariant: every node resolves the name to the one process.
///     let resolved = sim
///         .wait_until(Duration::from_secs(5), |s| {
///             s.up().iter().all(|&i| s.node(i).unwrap().whereis("service") == Some(pid))
///         })
///         .await;
///     assert!(resolved, "seed {seed}: the name did not reach every node");
///     sim.shutdown().await;
/// });
/// ```
pub mod testkit {
    pub use atoll_cluster::transport::{Faults, MemNetwork, NetStats};
    pub use atoll_raft::{SimDisk, SimDiskStats};
    pub use atoll_sim::cluster::{ClusterSpec, SimCluster, SimError, check_seeds, simulate};
    pub use atoll_sim::history::{FencedResource, History, Violation};
    pub use atoll_sim::workload::{Report, WorkloadSpec, run as run_workload};
}

/// Serde, re-exported so message types can derive it without another dependency line.
pub use serde;

/// The README's code blocks, compiled and run as doc tests so they stay true.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
