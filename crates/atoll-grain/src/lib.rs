//! Grains: virtual actors addressed by (type, key).
//!
//! A grain exists virtually: any node makes a [`GrainRef`] to it with [`Grains::get`] and
//! calls it, and the first message activates it on a node chosen by placement (the hash
//! ring filtered by the grain type's requirements, the less loaded of the first two
//! candidates; see [`Placement`]). At most one activation exists cluster-wide at a time:
//! an activation is a consensus lock named after the grain, held by the hosting process,
//! and the lock's fencing token is the activation's *epoch*. Callers cache where a grain
//! lives, so calls to an active grain do not touch Raft.
//!
//! State ([`Grain::State`]) is restored on activation and saved on deactivation and on
//! [`GrainCtx::save`], in the durability class the grain type declares ([`Durability`]);
//! every durable write carries the epoch and the [`GrainStore`] refuses one older than the
//! newest it has seen, so an old activation that was paused or cut off cannot overwrite its
//! successor. Idle activations deactivate after [`GrainsConfig::idle_timeout`].
//!
//! ```
//! use atoll_grain::{Durability, Grain, GrainCtx};
//! use serde::{Deserialize, Serialize};
//!
//! /// A bank account: its balance is its state.
//! struct Account;
//!
//! #[derive(Serialize, Deserialize)]
//! enum AccountMsg { Deposit(u64), Balance }
//!
//! impl Grain for Account {
//!     const TYPE: &'static str = "account";
//!     const DURABILITY: Durability = Durability::LocalExclusive;
//!     type State = u64;
//!     type Msg = AccountMsg;
//!     type Reply = u64;
//!
//!     async fn handle(&mut self, msg: AccountMsg, ctx: &mut GrainCtx<Self>) -> u64 {
//!         if let AccountMsg::Deposit(n) = msg {
//!             *ctx.state_mut() += n;
//!         }
//!         *ctx.state()
//!     }
//! }
//! ```
//!
//! Every node that may host grains starts a [`Grains`] service on its node and registers
//! the grain types with their factories; see [`Grains`] for a whole cluster. Any node then
//! reaches a grain with `node.grain::<Account>("alice")` ([`NodeGrainsExt`]) or
//! [`Grains::get`].
//!
//! Lifecycle: [`Grains::migrate`] moves an activation to another node with its state
//! (messages sent meanwhile wait and follow it; none is lost), [`GrainsConfig::rebalance`]
//! moves activations off a node holding more than a threshold above the least loaded, and
//! [`Grains::shutdown`] saves and releases every activation of a node. `Replicated` state
//! ([`Durability::Replicated`]) is acknowledged only once `R` other nodes hold it and
//! survives the loss of its host. [`GrainStats`] counts activations, deactivations and
//! migrations. The repository's `docs/grains.md` describes the classes and what each
//! survives.
//!
//! A grain can send to plain processes through [`GrainCtx::runtime`] and watch them with
//! [`GrainCtx::monitor`] ([`Grain::on_down`]); [`chat::ChatRoom`], the rooms of the `chat`
//! example, does both.
#![deny(missing_docs)]

pub mod chat;
pub mod core;
mod ext;
mod grains;
mod host;
mod migrate;
mod placement;
mod rebalance;
mod replica;
mod router;
mod shared;
mod store;

use atoll_actor::{ExitReason, Runtime};
use atoll_core::Pid;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::future::Future;

pub use crate::core::{Activation, GrainId, MAX_KEY_LEN, Refusal, StaleEpoch};
pub use ext::NodeGrainsExt;
pub use grains::{GrainError, GrainRef, GrainStats, Grains, GrainsConfig, RegisterError};
pub use placement::{Placement, PlacementView, TwoChoices};
pub use rebalance::Rebalance;
pub use replica::{MAX_STATE_BYTES, ReplicaAnswer, decode_versioned};
pub use store::{GrainStore, MemoryStore, RedbStore, StoreError};

/// Decodes `bytes` as a direct call from `peer` the way a hosting node does (with `rt` as
/// the codec context), then drops it unhandled, which answers its reply handle `Gone`: the
/// entry point of the `direct_call` fuzz target. Not part of the API.
#[doc(hidden)]
pub fn fuzz_direct_call(rt: &Runtime, peer: atoll_core::NodeId, bytes: &[u8]) -> bool {
    shared::undeliverable_from(rt, peer, bytes)
}

/// A well-formed direct call carrying `payload`, answered to call `call` on `reply_node`:
/// a seed of the `direct_call` fuzz target. Not part of the API.
#[doc(hidden)]
pub fn fuzz_direct_call_seed(payload: &[u8], reply_node: atoll_core::NodeId, call: u64) -> Vec<u8> {
    shared::direct_call_bytes(payload, reply_node, call)
}

/// Where a grain type's state lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Durability {
    /// Memory only: the state starts from `Default` on every activation and is lost when
    /// the grain deactivates or its node is lost. Nothing is written anywhere.
    Volatile,
    /// The hosting node's [`GrainStore`] (redb by default): kept across deactivation and
    /// node restarts, on that node's disk only. A new activation restores the freshest copy
    /// that it or any other live node running a grain service holds, so a migration
    /// ([`Grains::migrate`], rebalancing) moves the state to the target's disk. A copy on
    /// a node that is down is not seen: the grain starts from an older copy (or
    /// `Default`) meanwhile, and the lost copy comes back with its node only if no newer
    /// one was saved in between.
    LocalExclusive,
    /// Every save is written to the hosting node's store and to the stores of `R + 1`
    /// consensus voters in all (the host counting if it is one; `R` is
    /// [`GrainsConfig::replicas`], 2 by default) before it is acknowledged, each copy fenced
    /// by epoch. A new activation on any node restores the freshest copy of any `voters -
    /// R` voters, so every acknowledged save survives the loss of the host (and of up to
    /// `R` voters), whatever nodes joined or left in between.
    Replicated,
}

/// An activation that failed to start; its claim is released and callers get
/// [`GrainError::Failed`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("activation failed: {0}")]
pub struct ActivationFailed(pub String);

/// A virtual actor type: a message type, its replies, and a serializable state.
///
/// Messages and replies travel encoded (serde + postcard) even to a grain on the caller's
/// node, and must be plain data (no actor references or reply handles). Callbacks run one
/// at a time on the activation's own process, in arrival order.
pub trait Grain: Send + Sized + 'static {
    /// The type's name, the same on every node: the first half of every grain's address.
    const TYPE: &'static str;

    /// Where the state lives. The default is [`Durability::Volatile`].
    const DURABILITY: Durability = Durability::Volatile;

    /// The capabilities a node must announce (in its membership metadata) to host this
    /// type. The default is none.
    const REQUIRES: &'static [&'static str] = &[];

    /// Whether a message whose host was lost while its caller waited for the answer (the
    /// host's node declared dead and the grain's claim released) is sent again, to the
    /// grain's next activation. The lost activation may have handled the message before it
    /// died (what it had not saved died with it), so a resent message may be handled twice.
    /// The default, `false`, keeps every call at most once, as an Erlang `call` or an
    /// Orleans grain call is: such a call fails with [`GrainError::Timeout`]. A type whose
    /// messages are idempotent, or that recognises a resend (a request id kept with its
    /// state, as the `kv` example's shards do), sets `true` and its callers see a failover
    /// only as a slower answer.
    const RESEND_IN_DOUBT: bool = false;

    /// The state restored on activation and saved on deactivation.
    type State: Serialize + DeserializeOwned + Default + Send + 'static;

    /// The messages the grain handles.
    type Msg: Serialize + DeserializeOwned + Send + 'static;

    /// What handling a message answers.
    type Reply: Serialize + DeserializeOwned + Send + 'static;

    /// Runs when the grain activates, after its state is restored and before the first
    /// message. An error ends the activation: the waiting messages fail.
    fn on_activate(
        &mut self,
        ctx: &mut GrainCtx<Self>,
    ) -> impl Future<Output = Result<(), ActivationFailed>> + Send {
        let _ = ctx;
        async { Ok(()) }
    }

    /// Handles one message.
    fn handle(
        &mut self,
        msg: Self::Msg,
        ctx: &mut GrainCtx<Self>,
    ) -> impl Future<Output = Self::Reply> + Send;

    /// Runs when a process the activation watches ([`GrainCtx::monitor`]) has exited,
    /// with why (`NoProc` if it was gone already, `NoConnection` if its node is lost).
    fn on_down(
        &mut self,
        pid: Pid,
        reason: ExitReason,
        ctx: &mut GrainCtx<Self>,
    ) -> impl Future<Output = ()> + Send {
        let _ = (pid, reason, ctx);
        async {}
    }

    /// Runs when the grain deactivates (idle), before its state is saved.
    fn on_deactivate(&mut self, ctx: &mut GrainCtx<Self>) -> impl Future<Output = ()> + Send {
        let _ = ctx;
        async {}
    }
}

/// An activation's handle on itself: its identity, epoch and state.
pub struct GrainCtx<G: Grain> {
    id: GrainId,
    pid: Pid,
    epoch: u64,
    state: G::State,
    /// The state's encoding as last restored or saved: a save of the same writes nothing.
    stored: Option<Vec<u8>>,
    saver: replica::Saver,
    fenced: bool,
    rt: Runtime,
    /// Processes watched by this activation, and those still to be monitored once the
    /// current callback returns (monitors belong to the hosting process).
    watched: std::collections::HashSet<Pid>,
    to_watch: Vec<Pid>,
}

impl<G: Grain> std::fmt::Debug for GrainCtx<G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrainCtx")
            .field("id", &self.id)
            .field("pid", &self.pid)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl<G: Grain> GrainCtx<G> {
    pub(crate) fn new(
        id: GrainId,
        pid: Pid,
        epoch: u64,
        state: G::State,
        saver: replica::Saver,
        rt: Runtime,
    ) -> Self {
        let stored = postcard::to_allocvec(&state).ok();
        GrainCtx {
            id,
            pid,
            epoch,
            state,
            stored,
            saver,
            fenced: false,
            rt,
            watched: Default::default(),
            to_watch: Vec::new(),
        }
    }

    /// The runtime of the hosting node: a grain sends to plain processes through it
    /// (`ctx.runtime().remote_ref::<A>(pid).send(..)`, or `actor_ref` for local ones).
    pub fn runtime(&self) -> &Runtime {
        &self.rt
    }

    /// Watches `pid`: [`Grain::on_down`] runs once it exits (at once if it is gone
    /// already or its node cannot be reached). The monitor is set when the current
    /// callback returns; a process already watched is not watched twice. Monitors end
    /// with the activation: a grain that keeps processes in its state watches them again
    /// in [`Grain::on_activate`].
    pub fn monitor(&mut self, pid: Pid) {
        if self.watched.insert(pid) {
            self.to_watch.push(pid);
        }
    }

    /// The monitors asked for since the last call, for the host to set.
    pub(crate) fn take_watches(&mut self) -> Vec<Pid> {
        std::mem::take(&mut self.to_watch)
    }

    /// `pid` exited: it is no longer watched (watching it again sets a new monitor).
    pub(crate) fn unwatch(&mut self, pid: Pid) -> bool {
        self.watched.remove(&pid)
    }

    /// True once a save was refused as stale: a newer activation exists, and this one
    /// stops after the current message without saving again.
    pub fn is_fenced(&self) -> bool {
        self.fenced
    }

    /// The grain's identity.
    pub fn id(&self) -> &GrainId {
        &self.id
    }

    /// The grain's key.
    pub fn key(&self) -> &str {
        &self.id.key
    }

    /// The process hosting this activation.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// This activation's epoch: larger than that of every earlier activation of the grain.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The state.
    pub fn state(&self) -> &G::State {
        &self.state
    }

    /// The state, to change (saved on deactivation, or now with [`Self::save`]).
    pub fn state_mut(&mut self) -> &mut G::State {
        &mut self.state
    }

    /// Saves the state now, fenced by this activation's epoch: [`StoreError::Stale`] if a
    /// newer activation of the grain has used the store (or, `Replicated`, any replica)
    /// since (this activation then stops after the current message: see
    /// [`Self::is_fenced`]). A `Replicated` save returns once the host's store and
    /// [`GrainsConfig::replicas`] other nodes hold it ([`StoreError::Backend`] if too few
    /// answered: the save may or may not survive the host). A state unchanged since it was
    /// restored or last saved is not written again. A `Volatile` grain saves nothing and
    /// always succeeds.
    pub async fn save(&mut self) -> Result<(), StoreError> {
        if !self.saver.is_durable() {
            return Ok(());
        }
        let bytes =
            postcard::to_allocvec(&self.state).map_err(|e| StoreError::Codec(e.to_string()))?;
        if self.stored.as_ref() == Some(&bytes) {
            return Ok(());
        }
        let saved = self.saver.save(&self.id, self.epoch, &bytes).await;
        match &saved {
            Ok(()) => self.stored = Some(bytes),
            Err(StoreError::Stale(_)) => self.fenced = true,
            Err(_) => {}
        }
        saved
    }
}
