use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use atoll_core::{ExitReason, Pid};

use crate::actor_ref::ActorRef;
use crate::cell::Cell;
use crate::error::{ActorError, RegisterError};
use crate::monitor::{Down, MonitorRef};
use crate::options::SpawnOptions;
use crate::remote::Decoder;
use crate::runtime::Runtime;
use crate::timer::TimerRef;

/// What an actor callback returns: `Err` stops the process with [`ExitReason::Error`].
pub type ActorResult = Result<(), ActorError>;

/// A typed actor: private state plus the one message type its mailbox accepts.
///
/// Only `handle` is required. Callbacks run one at a time, in mailbox order, on the
/// process's own task; they may `.await`.
///
/// ```
/// use atoll_actor::{Actor, ActorResult, Ctx, ReplyTo};
///
/// struct Counter { count: u64 }
///
/// enum CounterMsg { Add(u64), Get(ReplyTo<u64>) }
///
/// impl Actor for Counter {
///     type Msg = CounterMsg;
///
///     async fn handle(&mut self, msg: CounterMsg, _ctx: &mut Ctx<Self>) -> ActorResult {
///         match msg {
///             CounterMsg::Add(n) => self.count += n,
///             CounterMsg::Get(reply) => { reply.reply(self.count); }
///         }
///         Ok(())
///     }
/// }
/// ```
pub trait Actor: Send + Sized + 'static {
    /// The messages this actor accepts: usually an enum, matched exhaustively.
    type Msg: Send + 'static;

    /// How messages from other nodes are decoded, if this actor accepts any. The default,
    /// `None`, keeps the process local-only; an actor whose message type is serde-decodable
    /// opts in with `fn remote_decoder() -> Option<Decoder<Self::Msg>> { serde_decoder() }`.
    fn remote_decoder() -> Option<Decoder<Self::Msg>> {
        None
    }

    /// Runs once before the first message. An error ends the process with that error.
    fn started(&mut self, ctx: &mut Ctx<Self>) -> impl Future<Output = ActorResult> + Send {
        let _ = ctx;
        async { Ok(()) }
    }

    /// Handles one message.
    fn handle(
        &mut self,
        msg: Self::Msg,
        ctx: &mut Ctx<Self>,
    ) -> impl Future<Output = ActorResult> + Send;

    /// Handles an exit signal turned into a message (only while trapping exits).
    ///
    /// The default behaves as if not trapping: a reason other than `Normal` stops this
    /// process with the same reason.
    fn handle_exit(
        &mut self,
        from: Pid,
        reason: ExitReason,
        ctx: &mut Ctx<Self>,
    ) -> impl Future<Output = ActorResult> + Send {
        let _ = from;
        if !reason.is_normal() {
            ctx.stop(reason);
        }
        async { Ok(()) }
    }

    /// Handles the notification of a monitored process's exit. The default ignores it.
    fn handle_down(
        &mut self,
        down: Down,
        ctx: &mut Ctx<Self>,
    ) -> impl Future<Output = ActorResult> + Send {
        let _ = (down, ctx);
        async { Ok(()) }
    }

    /// Runs when the process stops by its own decision ([`Ctx::stop`], a handler error, or
    /// a trapped exit it chose to stop on). It does not run when the process is killed,
    /// dies of an untrapped exit signal, or panics.
    fn stopped(
        &mut self,
        reason: &ExitReason,
        ctx: &mut Ctx<Self>,
    ) -> impl Future<Output = ()> + Send {
        let _ = (reason, ctx);
        async {}
    }
}

/// A process's handle on itself and its runtime, passed to every callback.
pub struct Ctx<A: Actor> {
    pub(crate) cell: Arc<Cell<A::Msg>>,
    pub(crate) rt: Runtime,
    pub(crate) stop: Option<ExitReason>,
}

impl<A: Actor> std::fmt::Debug for Ctx<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx").field("pid", &self.pid()).finish()
    }
}

impl<A: Actor> Ctx<A> {
    /// This process's pid.
    pub fn pid(&self) -> Pid {
        self.cell.meta.pid
    }

    /// A reference to this process, to hand to others.
    pub fn myself(&self) -> ActorRef<A> {
        ActorRef::from_cell(self.cell.clone())
    }

    /// The process that spawned this one linked, if any.
    pub fn parent(&self) -> Option<Pid> {
        self.cell.meta.parent
    }

    /// The runtime this process runs on.
    pub fn runtime(&self) -> &Runtime {
        &self.rt
    }

    /// Stops this process after the current callback, with `reason`; `stopped` runs first.
    pub fn stop(&mut self, reason: ExitReason) {
        self.stop.get_or_insert(reason);
    }

    /// Turns exit signals into [`Actor::handle_exit`] calls (except kills, which always kill).
    pub fn trap_exit(&mut self, on: bool) {
        self.cell.set_trap_exit(on);
    }

    /// Links this process with `pid`: when either exits, the other gets an exit signal.
    /// Linking to a process that is gone delivers a `NoProc` exit signal to this process.
    pub fn link(&mut self, pid: Pid) {
        self.rt.link(&*self.cell, pid);
    }

    /// Removes a link, if there is one.
    pub fn unlink(&mut self, pid: Pid) {
        self.rt.unlink(&*self.cell, pid);
    }

    /// Monitors `pid`: a [`Down`] arrives once when it exits (at once, with `NoProc`, if it
    /// is already gone).
    pub fn monitor(&mut self, pid: Pid) -> MonitorRef {
        self.rt.monitor(&*self.cell, pid)
    }

    /// Removes a monitor; no `Down` for it arrives afterwards.
    pub fn demonitor(&mut self, monitor: MonitorRef) {
        self.rt.demonitor(&*self.cell, monitor);
    }

    /// Sends an exit signal from this process to `pid`.
    pub fn exit(&self, pid: Pid, reason: ExitReason) {
        self.rt.exit_from(self.pid(), pid, reason);
    }

    /// Spawns an unlinked process.
    pub fn spawn<B: Actor>(&self, actor: B) -> ActorRef<B> {
        self.rt.spawn(actor)
    }

    /// Spawns a process linked to this one (atomically: the link exists before it runs).
    pub fn spawn_link<B: Actor>(&self, actor: B) -> ActorRef<B> {
        self.spawn_link_opts(actor, SpawnOptions::default())
    }

    /// [`Ctx::spawn_link`] with options (bounded mailbox, trapping exits from the start).
    pub fn spawn_link_opts<B: Actor>(&self, actor: B, opts: SpawnOptions) -> ActorRef<B> {
        self.rt
            .spawn_related(actor, opts, Some(&*self.cell), false)
            .0
    }

    /// Spawns a process monitored by this one.
    pub fn spawn_monitor<B: Actor>(&self, actor: B) -> (ActorRef<B>, MonitorRef) {
        let (r, m) = self
            .rt
            .spawn_related(actor, SpawnOptions::default(), Some(&*self.cell), true);
        (r, m.expect("a monitored spawn returns its monitor"))
    }

    /// Registers this process under `name` on this runtime.
    pub fn register(&self, name: &str) -> Result<(), RegisterError> {
        self.rt.register(name, self.pid())
    }

    /// Sends `msg` to this process after `delay`.
    pub fn send_after(&self, delay: Duration, msg: A::Msg) -> TimerRef {
        self.rt.send_after(&self.myself(), delay, msg)
    }

    /// Sends a copy of `msg` to this process every `period`, until cancelled or the
    /// process exits.
    pub fn send_interval(&self, period: Duration, msg: A::Msg) -> TimerRef
    where
        A::Msg: Clone,
    {
        self.rt.send_interval(&self.myself(), period, msg)
    }
}
