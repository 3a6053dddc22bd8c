//! Supervisors: processes that start children, watch them, and restart them by a strategy,
//! within a restart intensity, with exponential backoff between restarts.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use atoll_core::{ExitReason, Pid, SplitMix64};
use tokio::time::Instant;

use crate::actor::{Actor, ActorResult, Ctx};
use crate::actor_ref::{ActorRef, ReplyTo};
use crate::error::ActorError;
use crate::options::SpawnOptions;
use crate::runtime::Runtime;

/// Which children restart when one of them fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Only the failed child.
    OneForOne,
    /// Every child: the others are stopped in reverse start order, then all start again in
    /// order.
    OneForAll,
    /// The failed child and every child started after it.
    RestForOne,
}

/// When a child is restarted after it exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Always.
    Permanent,
    /// Only if it exited abnormally (not `Normal` or `Shutdown`).
    Transient,
    /// Never; it is forgotten once it exits.
    Temporary,
}

/// How a child is stopped when its supervisor stops it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Killed at once.
    Brutal,
    /// Sent `Shutdown`, killed if still alive after this long.
    Timeout(Duration),
    /// Sent `Shutdown` and waited for (the default for child supervisors).
    Infinity,
}

/// Restart intensity: more than `max_restarts` restarts within `period` and the supervisor
/// gives up: it stops its children and exits with an error, failing upward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intensity {
    /// Restarts allowed within the period.
    pub max_restarts: u32,
    /// The sliding window.
    pub period: Duration,
}

impl Default for Intensity {
    fn default() -> Self {
        Intensity {
            max_restarts: 3,
            period: Duration::from_secs(5),
        }
    }
}

/// Exponential backoff between restarts of the same child: the n-th consecutive restart
/// waits `initial * multiplier^n`, capped at `max`, spread by ±`jitter` (a fraction) and
/// capped again. A child that ran longer than the intensity period starts again at n = 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay before the first restart.
    pub initial: Duration,
    /// The cap.
    pub max: Duration,
    /// Growth per consecutive restart.
    pub multiplier: f64,
    /// Random spread, as a fraction of the delay (0.2 = ±20%).
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_secs(5),
            multiplier: 2.0,
            jitter: 0.2,
        }
    }
}

impl Backoff {
    /// Restart at once, every time.
    pub fn none() -> Self {
        Backoff {
            initial: Duration::ZERO,
            max: Duration::ZERO,
            multiplier: 1.0,
            jitter: 0.0,
        }
    }

    /// The delay before consecutive restart number `attempt` (0-based).
    ///
    /// ```
    /// use atoll_actor::Backoff;
    /// use atoll_core::SplitMix64;
    /// use std::time::Duration;
    ///
    /// let b = Backoff { initial: Duration::from_millis(10), max: Duration::from_secs(1), multiplier: 2.0, jitter: 0.0 };
    /// let mut rng = SplitMix64::new(1);
    /// assert_eq!(b.delay(3, &mut rng), Duration::from_millis(80));
    /// assert_eq!(b.delay(30, &mut rng), Duration::from_secs(1));
    /// ```
    pub fn delay(&self, attempt: u32, rng: &mut SplitMix64) -> Duration {
        let max = self.max.as_secs_f64();
        let base =
            (self.initial.as_secs_f64() * self.multiplier.powi(attempt.min(64) as i32)).min(max);
        let spread = 1.0 + self.jitter * (2.0 * rng.next_f64() - 1.0);
        // Settings that make no number (NaN jitter, an endless cap) fall back to the cap.
        Duration::try_from_secs_f64((base * spread).clamp(0.0, max)).unwrap_or(self.max)
    }
}

type StartFn = dyn Fn(&ChildStarter<'_>) -> Result<Pid, ActorError> + Send + Sync;

/// How to start, restart and stop one child.
#[derive(Clone)]
pub struct ChildSpec {
    id: String,
    restart: Restart,
    shutdown: Shutdown,
    start: Arc<StartFn>,
}

impl fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildSpec")
            .field("id", &self.id)
            .field("restart", &self.restart)
            .field("shutdown", &self.shutdown)
            .finish()
    }
}

impl ChildSpec {
    /// A child started by `start`, which must spawn it linked through the [`ChildStarter`].
    /// A permanent worker with a 5 s shutdown timeout unless changed.
    pub fn new(
        id: impl Into<String>,
        start: impl Fn(&ChildStarter<'_>) -> Result<Pid, ActorError> + Send + Sync + 'static,
    ) -> Self {
        ChildSpec {
            id: id.into(),
            restart: Restart::Permanent,
            shutdown: Shutdown::Timeout(Duration::from_secs(5)),
            start: Arc::new(start),
        }
    }

    /// A worker: each (re)start spawns a fresh actor from `make`.
    pub fn worker<A: Actor>(
        id: impl Into<String>,
        make: impl Fn() -> A + Send + Sync + 'static,
    ) -> Self {
        ChildSpec::new(id, move |s| Ok(s.spawn_link(make()).pid()))
    }

    /// A nested supervisor built from `spec` on each (re)start; stopped with
    /// [`Shutdown::Infinity`] so it can stop its own children in order.
    pub fn supervisor(
        id: impl Into<String>,
        spec: impl Fn() -> SupervisorSpec + Send + Sync + 'static,
    ) -> Self {
        ChildSpec::new(id, move |s| {
            let opts = SpawnOptions {
                trap_exit: true,
                ..Default::default()
            };
            Ok(s.spawn_link_opts(Supervisor::new(spec()), opts).pid())
        })
        .shutdown(Shutdown::Infinity)
    }

    /// Sets the restart policy.
    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }

    /// Sets how the child is stopped.
    pub fn shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// The child's id within its supervisor.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// Lets a [`ChildSpec`]'s start function spawn its process linked to the supervisor.
pub struct ChildStarter<'a> {
    ctx: &'a Ctx<Supervisor>,
}

impl fmt::Debug for ChildStarter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildStarter")
            .field("supervisor", &self.ctx.pid())
            .finish()
    }
}

impl ChildStarter<'_> {
    /// Spawns `actor` linked to the supervisor.
    pub fn spawn_link<A: Actor>(&self, actor: A) -> ActorRef<A> {
        self.ctx.spawn_link(actor)
    }

    /// Spawns `actor` linked to the supervisor, with options.
    pub fn spawn_link_opts<A: Actor>(&self, actor: A, opts: SpawnOptions) -> ActorRef<A> {
        self.ctx.spawn_link_opts(actor, opts)
    }

    /// The runtime.
    pub fn runtime(&self) -> &Runtime {
        self.ctx.runtime()
    }
}

/// A supervisor's configuration: strategy, intensity, backoff and children in start order.
#[derive(Debug, Clone)]
pub struct SupervisorSpec {
    strategy: Strategy,
    intensity: Intensity,
    backoff: Backoff,
    children: Vec<ChildSpec>,
}

impl SupervisorSpec {
    /// A spec with the given strategy, default intensity (3 in 5 s) and backoff.
    pub fn new(strategy: Strategy) -> Self {
        SupervisorSpec {
            strategy,
            intensity: Intensity::default(),
            backoff: Backoff::default(),
            children: Vec::new(),
        }
    }

    /// Sets the restart intensity.
    pub fn intensity(mut self, max_restarts: u32, period: Duration) -> Self {
        self.intensity = Intensity {
            max_restarts,
            period,
        };
        self
    }

    /// Sets the backoff between restarts.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Adds a child, started after those added before it.
    pub fn child(mut self, child: ChildSpec) -> Self {
        self.children.push(child);
        self
    }
}

/// One child as its supervisor sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildInfo {
    /// Its id.
    pub id: String,
    /// Its current process, `None` while stopped or waiting to restart.
    pub pid: Option<Pid>,
    /// Its restart policy.
    pub restart: Restart,
    /// How often it has been restarted.
    pub restarts: u32,
}

/// Requests a supervisor answers.
#[derive(Debug)]
pub enum SupervisorMsg {
    /// Lists the children in start order.
    WhichChildren(ReplyTo<Vec<ChildInfo>>),
    /// Restarts the named children if they are still down (sent to itself after a backoff).
    Restart(Vec<String>),
}

struct Child {
    spec: ChildSpec,
    pid: Option<Pid>,
    started_at: Instant,
    /// Consecutive restarts, for backoff.
    failures: u32,
    restarts: u32,
}

/// The supervisor actor. Start one with [`Supervisor::start`] or nest it with
/// [`ChildSpec::supervisor`].
///
/// ```
/// use atoll_actor::{Actor, ActorResult, ChildSpec, Ctx, Runtime, Strategy, Supervisor, SupervisorSpec};
///
/// struct Worker;
/// impl Actor for Worker {
///     type Msg = ();
///     async fn handle(&mut self, _: (), _: &mut Ctx<Self>) -> ActorResult { Ok(()) }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let rt = Runtime::new();
/// let sup = Supervisor::start(&rt, SupervisorSpec::new(Strategy::OneForOne)
///     .child(ChildSpec::worker("a", || Worker))
///     .child(ChildSpec::worker("b", || Worker)));
/// let children = Supervisor::which_children(&sup).await.unwrap();
/// assert_eq!(children.len(), 2);
/// # }
/// ```
pub struct Supervisor {
    strategy: Strategy,
    intensity: Intensity,
    backoff: Backoff,
    children: Vec<Child>,
    restarts: VecDeque<Instant>,
    rng: SplitMix64,
}

impl fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Supervisor")
            .field("strategy", &self.strategy)
            .field("children", &self.children.len())
            .finish()
    }
}

impl Supervisor {
    /// A supervisor actor for `spec`, to spawn with exits trapped.
    pub fn new(spec: SupervisorSpec) -> Self {
        Supervisor {
            strategy: spec.strategy,
            intensity: spec.intensity,
            backoff: spec.backoff,
            children: spec
                .children
                .into_iter()
                .map(|spec| Child {
                    spec,
                    pid: None,
                    started_at: Instant::now(),
                    failures: 0,
                    restarts: 0,
                })
                .collect(),
            restarts: VecDeque::new(),
            rng: SplitMix64::new(0),
        }
    }

    /// Spawns a top-level supervisor on `rt`.
    pub fn start(rt: &Runtime, spec: SupervisorSpec) -> ActorRef<Supervisor> {
        let opts = SpawnOptions {
            trap_exit: true,
            ..Default::default()
        };
        rt.spawn_opts(Supervisor::new(spec), opts)
    }

    /// Lists a supervisor's children.
    pub async fn which_children(
        sup: &ActorRef<Supervisor>,
    ) -> Result<Vec<ChildInfo>, crate::CallError> {
        sup.call(SupervisorMsg::WhichChildren, Duration::from_secs(5))
            .await
    }

    /// Starts child `i` and waits for its `started` callback, so children come up one after
    /// another in order, each after the ones it may depend on.
    async fn start_child(&mut self, i: usize, ctx: &Ctx<Self>) -> Result<(), ExitReason> {
        let child = &mut self.children[i];
        let pid = (child.spec.start)(&ChildStarter { ctx }).map_err(|e| e.to_reason())?;
        ctx.runtime().wait_started(pid).await?;
        child.pid = Some(pid);
        child.started_at = Instant::now();
        Ok(())
    }

    /// Stops the running children among `which`, in reverse order, waiting for each.
    async fn stop_children(&mut self, which: &[usize], ctx: &Ctx<Self>) {
        for &i in which.iter().rev() {
            let child = &mut self.children[i];
            if let Some(pid) = child.pid.take() {
                stop_child(ctx, pid, child.spec.shutdown).await;
            }
        }
    }

    /// Records a restart; false if that exceeds the intensity.
    fn note_restart(&mut self) -> bool {
        let now = Instant::now();
        self.restarts.push_back(now);
        while let Some(first) = self.restarts.front() {
            if now.duration_since(*first) > self.intensity.period {
                self.restarts.pop_front();
            } else {
                break;
            }
        }
        self.restarts.len() <= self.intensity.max_restarts as usize
    }

    fn give_up(&self, ctx: &mut Ctx<Self>) {
        ctx.stop(ExitReason::error(format!(
            "restart intensity exceeded: more than {} restarts in {:?}",
            self.intensity.max_restarts, self.intensity.period
        )));
    }

    /// Handles the exit of child `i`: restart it (and its group) or forget it.
    async fn child_exited(&mut self, i: usize, reason: &ExitReason, ctx: &mut Ctx<Self>) {
        let child = &mut self.children[i];
        // A child that ran longer than the intensity period starts its backoff afresh.
        if child.started_at.elapsed() > self.intensity.period {
            child.failures = 0;
        }
        let restart = match child.spec.restart {
            Restart::Permanent => true,
            Restart::Transient => !reason.is_clean(),
            Restart::Temporary => false,
        };
        if !restart {
            if child.spec.restart == Restart::Temporary {
                self.children.remove(i);
            }
            return;
        }
        if !self.note_restart() {
            self.give_up(ctx);
            return;
        }
        let group: Vec<usize> = match self.strategy {
            Strategy::OneForOne => vec![i],
            Strategy::OneForAll => (0..self.children.len()).collect(),
            Strategy::RestForOne => (i..self.children.len()).collect(),
        };
        self.stop_children(&group, ctx).await;
        // Temporary siblings stopped for the group restart are not restarted.
        let ids: Vec<String> = group
            .iter()
            .map(|&j| &self.children[j])
            .filter(|c| c.spec.restart != Restart::Temporary || c.pid.is_some())
            .map(|c| c.spec.id.clone())
            .collect();
        self.children
            .retain(|c| c.spec.restart != Restart::Temporary || c.pid.is_some());
        self.schedule_restart(ids, ctx);
    }

    fn schedule_restart(&mut self, ids: Vec<String>, ctx: &mut Ctx<Self>) {
        let Some(first) = ids.first() else { return };
        let Some(child) = self.children.iter_mut().find(|c| &c.spec.id == first) else {
            return;
        };
        let delay = self.backoff.delay(child.failures, &mut self.rng);
        child.failures = child.failures.saturating_add(1);
        if delay.is_zero() {
            // Through the mailbox: the restart happens right after what is already queued.
            let _ = ctx.myself().send(SupervisorMsg::Restart(ids));
        } else {
            ctx.send_after(delay, SupervisorMsg::Restart(ids));
        }
    }

    async fn restart(&mut self, ids: Vec<String>, ctx: &mut Ctx<Self>) {
        for (n, id) in ids.iter().enumerate() {
            let Some(i) = self.children.iter().position(|c| &c.spec.id == id) else {
                continue;
            };
            if self.children[i].pid.is_some() {
                continue;
            }
            if self.start_child(i, ctx).await.is_err() {
                // A failed start counts as another failure of the same child.
                if !self.note_restart() {
                    self.give_up(ctx);
                    return;
                }
                self.schedule_restart(ids[n..].to_vec(), ctx);
                return;
            }
            self.children[i].restarts += 1;
        }
    }
}

async fn stop_child(ctx: &Ctx<Supervisor>, pid: Pid, shutdown: Shutdown) {
    let rt = ctx.runtime();
    let exited = rt.wait_exit(pid);
    match shutdown {
        Shutdown::Brutal => rt.kill(pid),
        Shutdown::Timeout(grace) => {
            ctx.exit(pid, ExitReason::Shutdown);
            if tokio::time::timeout(grace, rt.wait_exit(pid))
                .await
                .is_err()
            {
                rt.kill(pid);
            }
        }
        Shutdown::Infinity => ctx.exit(pid, ExitReason::Shutdown),
    }
    exited.await;
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;

    async fn started(&mut self, ctx: &mut Ctx<Self>) -> ActorResult {
        ctx.trap_exit(true);
        self.rng = SplitMix64::new(ctx.runtime().seed_for(ctx.pid()));
        for (i, c) in self.children.iter().enumerate() {
            if self.children[..i].iter().any(|d| d.spec.id == c.spec.id) {
                return Err(ActorError::msg(format!(
                    "duplicate child id {:?}",
                    c.spec.id
                )));
            }
        }
        for i in 0..self.children.len() {
            if let Err(reason) = self.start_child(i, ctx).await {
                let started: Vec<usize> = (0..i).collect();
                self.stop_children(&started, ctx).await;
                return Err(ActorError::msg(format!(
                    "child {:?} failed to start: {reason}",
                    self.children[i].spec.id
                )));
            }
        }
        Ok(())
    }

    async fn handle(&mut self, msg: SupervisorMsg, ctx: &mut Ctx<Self>) -> ActorResult {
        match msg {
            SupervisorMsg::WhichChildren(reply) => {
                reply.reply(
                    self.children
                        .iter()
                        .map(|c| ChildInfo {
                            id: c.spec.id.clone(),
                            pid: c.pid,
                            restart: c.spec.restart,
                            restarts: c.restarts,
                        })
                        .collect(),
                );
            }
            SupervisorMsg::Restart(ids) => self.restart(ids, ctx).await,
        }
        Ok(())
    }

    async fn handle_exit(
        &mut self,
        from: Pid,
        reason: ExitReason,
        ctx: &mut Ctx<Self>,
    ) -> ActorResult {
        if Some(from) == ctx.parent() || from == ctx.runtime().node_pid() {
            ctx.stop(reason);
        } else if let Some(i) = self.children.iter().position(|c| c.pid == Some(from)) {
            self.children[i].pid = None;
            self.child_exited(i, &reason, ctx).await;
        }
        // Anything else is an exit of a child already stopped on purpose.
        Ok(())
    }

    async fn stopped(&mut self, _reason: &ExitReason, ctx: &mut Ctx<Self>) {
        let all: Vec<usize> = (0..self.children.len()).collect();
        self.stop_children(&all, ctx).await;
    }
}
