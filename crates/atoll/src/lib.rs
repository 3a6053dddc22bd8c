//! atoll: a distributed actor runtime for Rust, with Erlang/OTP processes, links and
//! supervision.
//!
//! This facade re-exports the pieces an application uses. Today that is the local runtime
//! ([`Runtime`], [`Actor`], [`ActorRef`], supervisors); the cluster layers build on the same
//! types, so code written against them does not change when it goes distributed.
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
pub use atoll_core::{Scope, SplitMix64};

/// The README's code blocks, compiled and run as doc tests so they stay true.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
