//! SWIM membership for atoll.
//!
//! [`Membership`] is the protocol as a deterministic state machine: foca (SWIM with
//! suspicion) plus the trust rules that make gossip safe on an authenticated transport and
//! the mapping onto atoll's node lifecycle `Joining → Active → Suspect → Unreachable → Left`.
//! [`Swim`] drives it on tokio over any [`Transport`]: real QUIC datagrams in a node, an
//! in-memory network in the simulator.
//!
//! ```
//! use atoll_core::NodeId;
//! use atoll_swim::{Identity, MemberMeta, MemberState, Membership, SwimConfig};
//! use std::time::Instant;
//!
//! let me = Identity::new(
//!     NodeId::from_bytes([1; 16]),
//!     1,
//!     "127.0.0.1:7000".parse().unwrap(),
//!     MemberMeta::named("london"),
//! )
//! .unwrap();
//! let mut m = Membership::new(me, SwimConfig::default(), 42);
//! m.join(Instant::now(), &[]); // no seeds: this node founds the cluster
//! assert_eq!(m.state(), MemberState::Active);
//! ```
#![deny(missing_docs)]

mod config;
mod driver;
mod error;
mod identity;
mod membership;
mod packet;

pub use config::SwimConfig;
pub use driver::{Swim, Transport};
pub use error::{IdentityError, PacketError};
pub use identity::{Identity, MAX_LABEL_LEN, MAX_LABELS, MemberMeta};
pub use membership::{Member, MemberEvent, MemberState, Membership, SwimStats, Transmit};
pub use packet::Load;
