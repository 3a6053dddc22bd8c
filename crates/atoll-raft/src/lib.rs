//! The consensus core of atoll: a fixed set of Raft voters (openraft 0.9, `storage-v2`)
//! replicating the cluster's Consistent/Strong names, distributed locks and configuration,
//! with the log and vote durable in redb.
//!
//! # Layers
//!
//! - [`Registry`] is the pure state machine: [`Registry::apply`] maps a log index and a
//!   [`Command`] to an [`Outcome`], deterministically, without I/O. Lock grants carry the log
//!   index of the granting entry as their fencing token, so tokens of a lock strictly
//!   increase, also across restarts.
//! - [`store`] keeps the Raft log, vote, commit index and last snapshot in one redb file.
//!   Every append and vote is an fsynced redb commit before openraft hears it is flushed (the
//!   commit index, an optional hint, rides along with the next one). The registry itself
//!   lives in memory and is rebuilt on start from the stored snapshot plus the committed log.
//! - [`network`] is the seam to the wire: Raft RPCs, forwarded proposals and read-index
//!   requests are postcard bodies carried by any [`RaftTransport`] (request in, response
//!   out). [`MemRouter`] is an in-process transport for tests; the node crate provides the
//!   QUIC one.
//! - [`feed`] is how nodes outside the voter set follow the registry: a voter remembers
//!   the commands of its latest entries and sends each member the entries it lacks
//!   ([`Delta`]), or a snapshot when the member is behind that window ([`plan_push`]);
//!   the member replays them into its copy ([`FollowedRegistry`]).
//! - [`chase`] decides where a request that must reach the leader goes next, when to pause
//!   and when to give up ([`LeaderChase`]); every proposal and linearizable read, on a voter
//!   or (in the node crate) on a node without one, follows it.
//! - [`Consensus`] is the thin async shell the node uses. At the leader it groups concurrent
//!   proposals: while one log entry is under way, new proposals queue and then go together
//!   as one [`Command::Batch`] entry, so many share one durable append and one replication
//!   round. [`Consensus::watch_applied`] signals each advance of the applied index.
//!
//! # Driving it
//!
//! Start one [`Consensus`] per voter with [`RaftSettings`] (its id, the voter set, its data
//! directory, timeouts) and a transport. Hand every request body the transport receives to
//! [`Consensus::handle`] and send back what it returns. The voter with the smallest id
//! initializes the cluster when its log is empty; the others wait to hear from a leader.
//!
//! ```
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use atoll_core::{NodeId, Pid, Scope};
//! use atoll_raft::{Command, Consensus, MemRouter, Node, Outcome, RaftSettings, raft_id_of};
//!
//! let dir = tempfile::tempdir()?;
//! let node_id = NodeId::from_bytes([1; 16]);
//! let id = raft_id_of(&node_id);
//! let settings = RaftSettings::new(id, vec![(id, Node::new(node_id, "127.0.0.1:4000"))], dir.path());
//! let router = MemRouter::new();
//! let raft = Consensus::start(settings, router.transport(id)).await?;
//! let served = raft.clone();
//! router.serve(id, move |body: Vec<u8>| {
//!     let raft = served.clone();
//!     async move { raft.handle(&body).await }
//! });
//!
//! let pid = Pid::new(node_id, 1, 42);
//! let register = Command::Register { name: "db".into(), pid, scope: Scope::Consistent };
//! assert_eq!(raft.propose(register).await?, Outcome::Registered);
//! assert_eq!(raft.whereis("db").map(|b| b.pid), Some(pid));
//! raft.shutdown().await?;
//! # Ok(())
//! # }
//! # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
//! ```
//!
//! # Guarantees
//!
//! - [`Consensus::propose`] returns an outcome only once the command is committed by a
//!   majority and applied; at a follower it is forwarded to the leader. Errors say what is
//!   known: [`ConsensusError::NoLeader`] and [`ConsensusError::Unreachable`] mean the
//!   command was not applied; [`ConsensusError::Timeout`] means its outcome is unknown
//!   (registration and locking are idempotent for the same pid, so proposing again is safe).
//!   Every call ends within the request timeout, also on a node cut off from the majority.
//! - Local reads ([`Consensus::whereis`], [`Consensus::names`], [`Consensus::locks`]) read
//!   this node's replica without any network round trip: they may lag, never run ahead of
//!   the committed log, and keep working in a partition. After
//!   [`Consensus::linearizable_read`] returns, they reflect every write committed before it
//!   was called.
//! - The voter set is fixed by configuration; there is no membership change here.
#![deny(missing_docs)]

pub mod chase;
mod consensus;
pub mod disk;
pub mod feed;
pub mod memory;
pub mod network;
pub mod registry;
mod report;
pub mod runtime;
pub mod store;
pub mod types;

pub use chase::{ChaseError, LeaderChase};
pub use consensus::{Consensus, ConsensusError, RaftSettings, RaftStatus, Role};
pub use disk::{Disk, Failpoint, SimDisk, SimDiskStats};
pub use feed::{
    Delta, DeltaDecodeError, FollowedRegistry, Push, Receipt, RecentEntries, plan_push,
};
pub use memory::{MemRouter, MemTransport};
pub use network::{NetworkFactory, RaftTransport, TransportError};
pub use registry::{Binding, Command, LockGrant, Outcome, Registry, SnapshotDecodeError};
pub use runtime::seed_thread_rng;
pub use store::{LogStore, StateMachineStore, StoreError, StoreStats, open};
pub use types::{Node, RaftId, TypeConfig, raft_id_of};
