use std::any::TypeId;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use atoll_core::{ExitReason, NodeId, Pid};
use serde::Serialize;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::actor::Actor;
use crate::actor_ref::ActorRef;
use crate::cell::{Cell, Meta, ProcessCell, SignalKind, StartWait};
use crate::error::{DeliverError, LookupError, RegisterError};
use crate::info::ProcessInfo;
use crate::monitor::{Down, MonitorRef};
use crate::options::SpawnOptions;
use crate::process::run_process;
use crate::remote::{self, PendingReply, Remote, RemoteRef, RemoteSendError};
use crate::table::{SHARDS, Shard};
use crate::timer::{self, TimerRef};
use atoll_core::Signal;

mod replies;
use replies::Replies;
mod undeliverable;
pub use undeliverable::Undeliverable;

/// One node's local runtime: its processes, names and timers.
///
/// All state hangs off this value (cheap to clone): two runtimes in one program never see
/// each other's processes or names. Processes run as tasks on the tokio runtime that was
/// current when it was created.
///
/// ```
/// use atoll_actor::{Actor, ActorResult, Ctx, Runtime};
///
/// struct Greeter;
/// impl Actor for Greeter {
///     type Msg = String;
///     async fn handle(&mut self, name: String, _ctx: &mut Ctx<Self>) -> ActorResult {
///         println!("hello, {name}");
///         Ok(())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let rt = Runtime::new();
/// let greeter = rt.spawn(Greeter);
/// greeter.send("world".to_string()).unwrap();
/// rt.shutdown(std::time::Duration::from_secs(1)).await;
/// # }
/// ```
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    node: NodeId,
    creation: u32,
    next_serial: AtomicU64,
    next_ref: AtomicU64,
    seed: u64,
    handle: Handle,
    table: Vec<Shard>,
    names: RwLock<HashMap<Arc<str>, Pid>>,
    /// The node's connections, set once when the runtime joins a node (read by every
    /// remote send and reply: no lock, no shared count).
    remote: OnceLock<Arc<dyn Remote>>,
    replies: Arc<Replies>,
    undeliverable: RwLock<Vec<(&'static str, Undeliverable)>>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("node", &self.inner.node)
            .field("creation", &self.inner.creation)
            .finish()
    }
}

impl Default for Runtime {
    fn default() -> Self {
        Self::new()
    }
}

impl Runtime {
    /// A runtime with a random node id and a creation taken from the clock.
    ///
    /// # Panics
    /// Outside a tokio runtime (processes need one to run on).
    pub fn new() -> Self {
        let random = RandomState::new();
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&random.hash_one(1u8).to_le_bytes());
        bytes[8..].copy_from_slice(&random.hash_one(2u8).to_le_bytes());
        let creation = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1);
        Self::with_identity(NodeId::from_bytes(bytes), creation)
    }

    /// A runtime for a known node identity and incarnation.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn with_identity(node: NodeId, creation: u32) -> Self {
        let seed = u64::from_le_bytes(node.as_bytes()[..8].try_into().expect("8 bytes"))
            ^ u64::from(creation);
        let rt = Runtime {
            inner: Arc::new(Inner {
                node,
                creation,
                // Serial 0 is the node itself.
                next_serial: AtomicU64::new(1),
                next_ref: AtomicU64::new(1),
                seed,
                handle: Handle::current(),
                table: (0..SHARDS).map(|_| Mutex::default()).collect(),
                names: RwLock::default(),
                remote: OnceLock::new(),
                replies: Arc::default(),
                undeliverable: RwLock::default(),
            }),
        };
        rt.start_reply_sweep();
        rt
    }

    /// This node's id.
    pub fn node(&self) -> NodeId {
        self.inner.node
    }

    /// This node's incarnation.
    pub fn creation(&self) -> u32 {
        self.inner.creation
    }

    /// The pid standing for the node itself: signals sent from outside any process carry it.
    pub fn node_pid(&self) -> Pid {
        Pid::new(self.inner.node, self.inner.creation, 0)
    }

    /// A seed for deterministic per-process randomness (backoff jitter).
    pub(crate) fn seed_for(&self, pid: Pid) -> u64 {
        self.inner.seed ^ pid.serial.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Spawns a process running `actor` with an unbounded mailbox.
    pub fn spawn<A: Actor>(&self, actor: A) -> ActorRef<A> {
        self.spawn_opts(actor, SpawnOptions::default())
    }

    /// Spawns a process with options.
    pub fn spawn_opts<A: Actor>(&self, actor: A, opts: SpawnOptions) -> ActorRef<A> {
        self.spawn_related(actor, opts, None, false).0
    }

    /// Spawns a process linked to (or, with `monitor`, monitored by) `related`.
    pub(crate) fn spawn_related<A: Actor>(
        &self,
        actor: A,
        opts: SpawnOptions,
        related: Option<&dyn ProcessCell>,
        monitor: bool,
    ) -> (ActorRef<A>, Option<MonitorRef>) {
        let serial = self.inner.next_serial.fetch_add(1, Ordering::Relaxed);
        let pid = Pid::new(self.inner.node, self.inner.creation, serial);
        let (mut links, mut watchers, mut mref, mut parent) = (Vec::new(), Vec::new(), None, None);
        if let Some(rel) = related {
            let rel_pid = rel.meta().pid;
            if monitor {
                let r = self.next_monitor_ref();
                rel.add_monitoring(r, pid);
                watchers.push((r, rel_pid));
                mref = Some(r);
            } else if rel.add_link(pid) {
                links.push(rel_pid);
                parent = Some(rel_pid);
            }
        }
        let meta = Meta {
            pid,
            parent,
            actor_type: TypeId::of::<A>(),
            actor_name: std::any::type_name::<A>(),
            capacity: opts.mailbox_capacity.map(|c| c.max(1)),
            capabilities: opts.capabilities.into_boxed_slice(),
            started: Instant::now(),
        };
        let cell = Arc::new(Cell::<A::Msg>::new(
            meta,
            A::remote_decoder(),
            opts.trap_exit,
            links,
            watchers,
        ));
        self.shard(serial)
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(serial, cell.clone());
        self.inner
            .handle
            .spawn(run_process(actor, cell.clone(), self.clone()));
        (ActorRef::from_cell(cell), mref)
    }

    fn shard(&self, serial: u64) -> &Shard {
        &self.inner.table[serial as usize % SHARDS]
    }

    fn next_monitor_ref(&self) -> MonitorRef {
        MonitorRef(self.inner.next_ref.fetch_add(1, Ordering::Relaxed))
    }

    fn lookup_cell(&self, pid: Pid) -> Option<Arc<dyn ProcessCell>> {
        if pid.node != self.inner.node || pid.creation != self.inner.creation {
            return None;
        }
        self.shard(pid.serial)
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&pid.serial)
            .cloned()
    }

    /// True while `pid` names a live process of this runtime.
    pub fn is_alive(&self, pid: Pid) -> bool {
        self.lookup_cell(pid).is_some()
    }

    /// A typed reference to the live process `pid`.
    pub fn actor_ref<A: Actor>(&self, pid: Pid) -> Result<ActorRef<A>, LookupError> {
        let cell = self.lookup_cell(pid).ok_or(LookupError::NoProc(pid))?;
        let meta = cell.meta();
        if meta.actor_type != TypeId::of::<A>() {
            return Err(LookupError::WrongType {
                pid,
                expected: std::any::type_name::<A>(),
                actual: meta.actor_name,
            });
        }
        let cell = cell
            .into_any()
            .downcast::<Cell<A::Msg>>()
            .map_err(|_| LookupError::NoProc(pid))?;
        Ok(ActorRef::from_cell(cell))
    }

    /// Sends an exit signal to `pid` from the node itself. Trapping processes get it as a
    /// message; others exit with `reason` unless it is `Normal`.
    pub fn exit(&self, pid: Pid, reason: ExitReason) {
        self.exit_from(self.node_pid(), pid, reason);
    }

    pub(crate) fn exit_from(&self, from: Pid, pid: Pid, reason: ExitReason) {
        self.signal(Signal::Exit {
            from,
            to: pid,
            reason,
            kind: SignalKind::Exit,
        });
    }

    /// Kills `pid` unconditionally: it exits with `Killed`, even if it traps exits or is in
    /// the middle of a callback.
    pub fn kill(&self, pid: Pid) {
        self.signal(Signal::Exit {
            from: self.node_pid(),
            to: pid,
            reason: ExitReason::Killed,
            kind: SignalKind::Kill,
        });
    }

    /// Waits until `pid` exits and returns its reason (`NoProc` if it is already gone).
    ///
    /// The wait is registered when this is called, not when the future is first polled, so
    /// an exit caused right after the call is never missed.
    pub fn wait_exit(
        &self,
        pid: Pid,
    ) -> impl std::future::Future<Output = ExitReason> + Send + 'static {
        let rx = self.lookup_cell(pid).and_then(|cell| {
            let (tx, rx) = oneshot::channel();
            cell.add_exit_waiter(tx).ok().map(|()| rx)
        });
        async move {
            match rx {
                Some(rx) => rx.await.unwrap_or(ExitReason::NoProc),
                None => ExitReason::NoProc,
            }
        }
    }

    /// Waits until `pid` has finished its `started` callback: `Ok` once it has, or the exit
    /// reason if it exited first (`NoProc` if it was never alive here).
    pub fn wait_started(
        &self,
        pid: Pid,
    ) -> impl std::future::Future<Output = Result<(), ExitReason>> + Send + 'static {
        let exit = self.wait_exit(pid);
        let started = match self.lookup_cell(pid) {
            None => Err(()),
            Some(cell) => {
                let (tx, rx) = oneshot::channel();
                match cell.add_start_waiter(tx) {
                    StartWait::Waiting => Ok(Some(rx)),
                    StartWait::Started => Ok(None),
                    StartWait::Gone => Err(()),
                }
            }
        };
        async move {
            let ok = match started {
                Ok(None) => true,
                Ok(Some(rx)) => rx.await.is_ok(),
                Err(()) => false,
            };
            if ok { Ok(()) } else { Err(exit.await) }
        }
    }

    pub(crate) fn link(&self, me: &dyn ProcessCell, other: Pid) {
        let my_pid = me.meta().pid;
        // Record our side first: if the other exits right after accepting, its exit signal
        // finds the link and removes it.
        if other == my_pid || !me.add_link(other) {
            return;
        }
        self.signal(Signal::Link {
            from: my_pid,
            to: other,
        });
    }

    pub(crate) fn unlink(&self, me: &dyn ProcessCell, other: Pid) {
        me.remove_link(other);
        self.signal(Signal::Unlink {
            from: me.meta().pid,
            to: other,
        });
    }

    pub(crate) fn monitor(&self, me: &dyn ProcessCell, target: Pid) -> MonitorRef {
        let mref = self.next_monitor_ref();
        me.add_monitoring(mref, target);
        self.signal(Signal::Monitor {
            from: me.meta().pid,
            to: target,
            monitor: mref.0,
        });
        mref
    }

    pub(crate) fn demonitor(&self, me: &dyn ProcessCell, mref: MonitorRef) {
        if let Some(target) = me.remove_monitoring(mref) {
            self.signal(Signal::Demonitor {
                from: me.meta().pid,
                to: target,
                monitor: mref.0,
            });
        }
    }

    /// Delivers a signal to its target, here or through the node's connections. When the
    /// target's node cannot be reached, the sender learns it as it would of a lost peer.
    fn signal(&self, signal: Signal) {
        if signal.target().node == self.inner.node {
            return self.deliver_signal(signal);
        }
        let undeliverable = match self.remote() {
            Some(remote) => remote.signal(signal.clone()).is_err(),
            None => true,
        };
        if undeliverable {
            match signal {
                Signal::Link { from, to } => self.deliver_signal(Signal::Exit {
                    from: to,
                    to: from,
                    reason: ExitReason::NoConnection,
                    kind: SignalKind::Link,
                }),
                Signal::Monitor { from, to, monitor } => self.deliver_signal(Signal::Down {
                    to: from,
                    monitor,
                    pid: to,
                    reason: ExitReason::NoConnection,
                }),
                _ => {}
            }
        }
    }

    /// Applies a signal addressed to a process of this node (from this node or, through the
    /// cluster layer, from another). Signals for processes that are gone answer as Erlang
    /// does: a link gets a `NoProc` exit back, a monitor a `NoProc` down.
    pub fn deliver_signal(&self, signal: Signal) {
        let target = signal.target();
        if target.node != self.inner.node {
            return;
        }
        let cell = self.lookup_cell(target);
        match signal {
            Signal::Link { from, to } => {
                if !cell.is_some_and(|c| c.add_link(from)) {
                    self.signal(Signal::Exit {
                        from: to,
                        to: from,
                        reason: ExitReason::NoProc,
                        kind: SignalKind::Link,
                    });
                }
            }
            Signal::Unlink { from, .. } => {
                if let Some(c) = cell {
                    c.remove_link(from);
                }
            }
            Signal::Exit {
                from, reason, kind, ..
            } => {
                if let Some(c) = cell {
                    c.exit_signal(from, reason, kind);
                }
            }
            Signal::Monitor { from, to, monitor } => {
                if !cell.is_some_and(|c| c.add_watcher(MonitorRef(monitor), from)) {
                    self.signal(Signal::Down {
                        to: from,
                        monitor,
                        pid: to,
                        reason: ExitReason::NoProc,
                    });
                }
            }
            Signal::Demonitor { from, monitor, .. } => {
                if let Some(c) = cell {
                    c.remove_watcher(MonitorRef(monitor), from);
                }
            }
            Signal::Down {
                monitor,
                pid,
                reason,
                ..
            } => {
                if let Some(c) = cell {
                    c.deliver_down(Down {
                        monitor: MonitorRef(monitor),
                        pid,
                        reason,
                    });
                }
            }
        }
    }

    /// Announces a process's exit: links, monitors, waiters and its name.
    pub(crate) fn process_exited(&self, cell: &dyn ProcessCell, reason: ExitReason) {
        let pid = cell.meta().pid;
        // Queued messages are dropped when this function returns, after everyone was told:
        // their destructors are user code and may panic.
        let (cold, _queued) = cell.finish();
        self.shard(pid.serial)
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&pid.serial);
        let Some(cold) = cold else { return };
        if let Some(name) = &cold.name {
            let mut names = self.inner.names.write().unwrap_or_else(|e| e.into_inner());
            if names.get(name) == Some(&pid) {
                names.remove(name);
            }
        }
        for &other in &cold.links {
            self.signal(Signal::Exit {
                from: pid,
                to: other,
                reason: reason.clone(),
                kind: SignalKind::Link,
            });
        }
        for &(mref, watcher) in &cold.watchers {
            self.signal(Signal::Down {
                to: watcher,
                monitor: mref.0,
                pid,
                reason: reason.clone(),
            });
        }
        for &(mref, target) in &cold.monitoring {
            self.signal(Signal::Demonitor {
                from: pid,
                to: target,
                monitor: mref.0,
            });
        }
        for waiter in cold.exit_waiters {
            let _ = waiter.send(reason.clone());
        }
    }

    /// Connects this runtime to a node's connections: from now on, what is addressed to
    /// other nodes goes through `remote`. A runtime belongs to one node: only the first
    /// call connects it, and a later one returns false and changes nothing.
    pub fn set_remote(&self, remote: Arc<dyn Remote>) -> bool {
        self.inner.remote.set(remote).is_ok()
    }

    fn remote(&self) -> Option<&Arc<dyn Remote>> {
        self.inner.remote.get()
    }

    /// A reference to a process on another node. Nothing checks here that it runs `A`:
    /// the receiving node decodes each message with the process's own message type and drops
    /// what does not decode.
    pub fn remote_ref<A: Actor>(&self, pid: Pid) -> ActorRef<A>
    where
        A::Msg: Serialize,
    {
        ActorRef::from_remote(RemoteRef {
            pid,
            rt: self.clone(),
            encode: remote::encoder::<A::Msg>(),
        })
    }

    pub(crate) fn remote_send(
        &self,
        to: Pid,
        encode: remote::EncodeInto<'_>,
    ) -> Result<(), RemoteSendError> {
        self.remote()
            .ok_or(RemoteSendError::NoConnection)?
            .send(to, encode)
    }

    pub(crate) fn remote_reply(
        &self,
        node: NodeId,
        call: u64,
        encode: remote::EncodeInto<'_>,
    ) -> bool {
        if node == self.inner.node {
            let mut payload = Vec::new();
            return encode(&mut payload).is_ok() && self.deliver_reply(call, &payload);
        }
        self.remote()
            .is_some_and(|r| r.reply(node, call, encode).is_ok())
    }

    /// Queues a message that came from `from_node` for the local process `to`, decoding it
    /// with the process's message type.
    pub fn deliver_encoded(
        &self,
        from_node: NodeId,
        to: Pid,
        payload: &[u8],
    ) -> Result<(), DeliverError> {
        let Some(cell) = self.lookup_cell(to) else {
            self.show_undeliverable(from_node, to, payload);
            return Err(DeliverError::NoProc(to));
        };
        remote::with_codec(self, from_node, || cell.deliver_encoded(payload))
    }

    /// Parks a reply handle that is about to travel to another node; returns its call id.
    pub(crate) fn park_reply(&self, pending: Box<dyn PendingReply>) -> u64 {
        self.inner.replies.park(pending)
    }

    /// How many calls on this node wait for an answer from another node.
    pub fn waiting_replies(&self) -> usize {
        self.inner.replies.len()
    }

    /// Hands an answer that came from another node to the caller waiting under `call`.
    /// Returns false if nobody waits for it any more.
    pub fn deliver_reply(&self, call: u64, payload: &[u8]) -> bool {
        let pending = self.inner.replies.take(call);
        pending.is_some_and(|p| p.deliver(payload, self))
    }

    /// The connection to `node` is gone: links to its processes break with `NoConnection`,
    /// monitors on them fire with `NoConnection`, its monitors here are dropped, and calls
    /// whose reply handle went there fail with `NoReply`.
    pub fn node_down(&self, node: NodeId) {
        if node == self.inner.node {
            return;
        }
        for cell in self.cells() {
            let (links, monitoring) = cell.sever(node);
            for other in links {
                cell.exit_signal(other, ExitReason::NoConnection, SignalKind::Link);
            }
            for (monitor, pid) in monitoring {
                cell.deliver_down(Down {
                    monitor,
                    pid,
                    reason: ExitReason::NoConnection,
                });
            }
        }
        self.inner.replies.drop_peer(node);
    }

    /// Registers `pid` under `name` on this node. The name is released when the process
    /// exits.
    pub fn register(&self, name: &str, pid: Pid) -> Result<(), RegisterError> {
        let mut names = self.inner.names.write().unwrap_or_else(|e| e.into_inner());
        if let Some(owner) = names.get(name) {
            return Err(RegisterError::NameTaken {
                name: name.to_string(),
                owner: *owner,
            });
        }
        let cell = self.lookup_cell(pid).ok_or(RegisterError::NoProc(pid))?;
        let name: Arc<str> = name.into();
        cell.set_name(&name)?;
        names.insert(name, pid);
        Ok(())
    }

    /// Removes a name; returns the pid that held it.
    pub fn unregister(&self, name: &str) -> Option<Pid> {
        let pid = self
            .inner
            .names
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)?;
        if let Some(cell) = self.lookup_cell(pid) {
            cell.clear_name(name);
        }
        Some(pid)
    }

    /// The pid registered under `name`, if any.
    pub fn whereis(&self, name: &str) -> Option<Pid> {
        self.inner
            .names
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .copied()
    }

    /// A typed reference to the process registered under `name`.
    pub fn whereis_ref<A: Actor>(&self, name: &str) -> Result<ActorRef<A>, LookupError> {
        let pid = self
            .whereis(name)
            .ok_or_else(|| LookupError::NotRegistered(name.to_string()))?;
        self.actor_ref(pid)
    }

    /// All registered names with their pids, sorted by name.
    pub fn registered(&self) -> Vec<(String, Pid)> {
        let names = self.inner.names.read().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<_> = names.iter().map(|(n, p)| (n.to_string(), *p)).collect();
        all.sort();
        all
    }

    /// Snapshots of all live processes, in spawn order.
    pub fn processes(&self) -> Vec<ProcessInfo> {
        let mut all: Vec<ProcessInfo> = self.cells().iter().map(|c| c.info()).collect();
        all.sort_by_key(|i| i.pid.serial);
        all
    }

    /// A snapshot of one live process.
    pub fn process_info(&self, pid: Pid) -> Option<ProcessInfo> {
        self.lookup_cell(pid).map(|c| c.info())
    }

    /// How many processes are alive.
    pub fn process_count(&self) -> usize {
        self.inner
            .table
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    fn cells(&self) -> Vec<Arc<dyn ProcessCell>> {
        self.inner
            .table
            .iter()
            .flat_map(|s| {
                s.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .values()
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Sends `msg` to `target` after `delay`.
    pub fn send_after<A: Actor>(
        &self,
        target: &ActorRef<A>,
        delay: Duration,
        msg: A::Msg,
    ) -> TimerRef {
        timer::send_after(&self.inner.handle, target.clone(), delay, msg)
    }

    /// Sends a copy of `msg` to `target` every `period` until cancelled or `target` exits.
    pub fn send_interval<A: Actor>(
        &self,
        target: &ActorRef<A>,
        period: Duration,
        msg: A::Msg,
    ) -> TimerRef
    where
        A::Msg: Clone,
    {
        timer::send_interval(&self.inner.handle, target.clone(), period, msg)
    }

    /// Stops every process: top-level processes (those without a live parent) in reverse
    /// spawn order, each with a `Shutdown` exit signal and `grace` to finish (supervisors
    /// stop their children in reverse start order), then kills whatever is left. Returns
    /// when no process is alive.
    pub async fn shutdown(&self, grace: Duration) {
        let mut roots: Vec<Pid> = self
            .cells()
            .iter()
            .map(|c| c.meta())
            .filter(|m| m.parent.is_none_or(|p| !self.is_alive(p)))
            .map(|m| m.pid)
            .collect();
        roots.sort_by_key(|p| std::cmp::Reverse(p.serial));
        for pid in roots {
            let exited = self.wait_exit(pid);
            self.exit(pid, ExitReason::Shutdown);
            if tokio::time::timeout(grace, exited).await.is_err() {
                self.kill(pid);
                self.wait_exit(pid).await;
            }
        }
        loop {
            let left = self.cells();
            if left.is_empty() {
                return;
            }
            for cell in &left {
                self.kill(cell.meta().pid);
            }
            for cell in left {
                self.wait_exit(cell.meta().pid).await;
            }
        }
    }
}
