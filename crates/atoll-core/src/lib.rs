//! Pure core types of atoll: node ids, process ids, exit reasons and naming scopes.
//!
//! Nothing in this crate does I/O, reads a clock or holds global state; every other atoll
//! crate builds on these types.
//!
//! ```
//! use atoll_core::{ExitReason, NodeId, Pid};
//!
//! let node = NodeId::from_bytes([7; 16]);
//! let pid = Pid::new(node, 1, 42);
//! assert_eq!(pid.serial, 42);
//! assert!(ExitReason::Normal.is_normal());
//! assert!(!ExitReason::error("boom").is_normal());
//! ```
#![deny(missing_docs)]

mod exit;
mod id;
mod rng;
mod signal;

pub use exit::ExitReason;
pub use id::{NodeId, ParseNodeIdError, Pid, Scope};
pub use rng::SplitMix64;
pub use signal::{ExitKind, Signal};
