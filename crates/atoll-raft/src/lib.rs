//! The consensus core of atoll: a bounded set of Raft voters (openraft) replicating the
//! cluster's Consistent/Strong names, distributed locks and configuration.
//!
//! The protocol state lives in a pure state machine, [`Registry`]: [`Registry::apply`] maps a
//! log index and a [`Command`] to an [`Outcome`] and never does I/O.
#![deny(missing_docs)]

pub mod memory;
pub mod network;
pub mod registry;
pub mod store;
pub mod types;

pub use memory::{MemRouter, MemTransport};
pub use network::{NetworkFactory, RaftTransport, TransportError};
pub use registry::{Binding, Command, LockGrant, Outcome, Registry, SnapshotDecodeError};
pub use store::{LogStore, StateMachineStore, StoreError, open};
pub use types::{Node, RaftId, TypeConfig, raft_id_of};
