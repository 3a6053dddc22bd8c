//! The local actor runtime of atoll: typed processes with private state and a mailbox,
//! links and monitors with exit reasons, supervisors, timers, a local registry and
//! introspection.
//!
//! ```
//! use atoll_actor::{Actor, ActorResult, Ctx, ReplyTo, Runtime};
//! use std::time::Duration;
//!
//! struct Counter(u64);
//! enum Msg { Add(u64), Get(ReplyTo<u64>) }
//!
//! impl Actor for Counter {
//!     type Msg = Msg;
//!     async fn handle(&mut self, msg: Msg, _ctx: &mut Ctx<Self>) -> ActorResult {
//!         match msg {
//!             Msg::Add(n) => self.0 += n,
//!             Msg::Get(reply) => { reply.reply(self.0); }
//!         }
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let rt = Runtime::new();
//! let counter = rt.spawn(Counter(0));
//! counter.send(Msg::Add(2)).unwrap();
//! let total = counter.call(Msg::Get, Duration::from_secs(1)).await.unwrap();
//! assert_eq!(total, 2);
//! # }
//! ```
//!
//! Delivery, ordering and exit-signal guarantees are in `docs/semantics.md`.
#![deny(missing_docs)]

mod actor;
mod actor_ref;
mod cell;
mod error;
mod info;
mod monitor;
mod options;
mod process;
mod remote;
mod runtime;
mod supervisor;
mod table;
mod timer;

pub use actor::{Actor, ActorResult, Ctx};
pub use actor_ref::{ActorRef, ReplyTo};
pub use atoll_core::{ExitKind, ExitReason, NodeId, Pid, Signal};
pub use error::{ActorError, CallError, DeliverError, LookupError, RegisterError, SendError};
pub use info::{ProcessInfo, ProcessStatus};
pub use monitor::{Down, MonitorRef};
pub use options::SpawnOptions;
pub use remote::{
    Decoder, EncodeInto, NoConnection, Remote, RemoteSendError, decode_from, encode_for,
    serde_decoder,
};
pub use runtime::{Runtime, Undeliverable};
pub use supervisor::{
    Backoff, ChildInfo, ChildSpec, ChildStarter, Intensity, Restart, Shutdown, Strategy,
    Supervisor, SupervisorMsg, SupervisorSpec,
};
pub use timer::TimerRef;
