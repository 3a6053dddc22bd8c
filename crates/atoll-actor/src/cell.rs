//! The process cell: a process's mailbox and the state other processes touch (links,
//! monitors, name, pending exit), behind one mutex.
//!
//! The message path is the hot one: a sender locks, pushes and wakes the owner only if it
//! is parked; the owner swaps the whole queue out in one lock and handles the batch
//! without touching the lock again. Everything rarely used lives in a lazily allocated
//! [`Cold`] box so an idle process stays small.

use std::any::{Any, TypeId};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use atoll_core::{ExitReason, NodeId, Pid};
use tokio::sync::oneshot;

use crate::error::{DeliverError, RegisterError, SendError};
use crate::info::{ProcessInfo, ProcessStatus};
use crate::monitor::{Down, MonitorRef};

/// What sits in a mailbox: a user message, or a system message (a trapped exit signal or a
/// monitor notification) that the owner handles in order with the messages around it.
pub(crate) enum Envelope<M> {
    Msg(M),
    Sys(Box<SysMsg>),
}

pub(crate) enum SysMsg {
    Exit { from: Pid, reason: ExitReason },
    Down(Down),
}

pub(crate) use atoll_core::ExitKind as SignalKind;

const STATUS_STARTING: u8 = 0;
const STATUS_RUNNING: u8 = 1;
const STATUS_WAITING: u8 = 2;
const STATUS_EXITING: u8 = 3;

#[derive(Default)]
pub(crate) struct Cold {
    pub(crate) links: Vec<Pid>,
    /// Monitors others hold on this process.
    pub(crate) watchers: Vec<(MonitorRef, Pid)>,
    /// Monitors this process holds on others.
    pub(crate) monitoring: Vec<(MonitorRef, Pid)>,
    pub(crate) name: Option<Arc<str>>,
    pub(crate) exit_waiters: Vec<oneshot::Sender<ExitReason>>,
    start_waiters: Vec<oneshot::Sender<()>>,
    send_waiters: VecDeque<Waker>,
}

struct Shared<M> {
    items: VecDeque<Envelope<M>>,
    /// The owning task's waker, kept once registered so a kill can always wake it.
    waker: Option<Waker>,
    /// The owner is waiting for mail: the next push must wake it.
    parked: bool,
    alive: bool,
    trap_exit: bool,
    pending_exit: Option<ExitReason>,
    cold: Option<Box<Cold>>,
}

impl<M> Shared<M> {
    fn cold(&mut self) -> &mut Cold {
        self.cold.get_or_insert_with(Default::default)
    }

    fn wake_owner(&mut self) {
        if self.parked {
            self.parked = false;
            if let Some(w) = &self.waker {
                w.wake_by_ref();
            }
        }
    }
}

/// Fixed facts about a process, decided at spawn.
pub(crate) struct Meta {
    pub(crate) pid: Pid,
    pub(crate) parent: Option<Pid>,
    pub(crate) actor_type: TypeId,
    pub(crate) actor_name: &'static str,
    pub(crate) capacity: Option<usize>,
    pub(crate) capabilities: Box<[String]>,
    pub(crate) started: Instant,
}

use crate::remote::Decoder;

/// A process's cell, typed by its message type.
pub(crate) struct Cell<M> {
    pub(crate) meta: Meta,
    /// Set for processes that accept messages from other nodes.
    decoder: Option<Decoder<M>>,
    /// Set when a fatal signal is pending: the owner must stop at its next poll.
    pub(crate) urgent: AtomicBool,
    status: AtomicU8,
    /// Messages taken in hand so far (written by the owner only).
    pub(crate) handled: AtomicU64,
    /// Messages moved from the queue into the owner's batch so far (owner only).
    pub(crate) taken: AtomicU64,
    shared: Mutex<Shared<M>>,
}

impl<M: Send + 'static> Cell<M> {
    pub(crate) fn new(
        meta: Meta,
        decoder: Option<Decoder<M>>,
        trap_exit: bool,
        links: Vec<Pid>,
        watchers: Vec<(MonitorRef, Pid)>,
    ) -> Self {
        let cold = if links.is_empty() && watchers.is_empty() {
            None
        } else {
            Some(Box::new(Cold {
                links,
                watchers,
                ..Default::default()
            }))
        };
        Cell {
            meta,
            decoder,
            urgent: AtomicBool::new(false),
            status: AtomicU8::new(STATUS_STARTING),
            handled: AtomicU64::new(0),
            taken: AtomicU64::new(0),
            shared: Mutex::new(Shared {
                items: VecDeque::new(),
                waker: None,
                parked: false,
                alive: true,
                trap_exit,
                pending_exit: None,
                cold,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Shared<M>> {
        // A panic never happens while the lock is held, but stay usable if one did.
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, env: Envelope<M>) -> Result<(), (Envelope<M>, bool)> {
        let mut s = self.lock();
        if !s.alive {
            return Err((env, false));
        }
        if let Some(cap) = self.meta.capacity
            && s.items.len() >= cap
        {
            return Err((env, true));
        }
        s.items.push_back(env);
        s.wake_owner();
        Ok(())
    }

    /// Queues a user message.
    pub(crate) fn send(&self, msg: M) -> Result<(), SendError<M>> {
        self.push(Envelope::Msg(msg)).map_err(|(env, full)| {
            let Envelope::Msg(m) = env else {
                unreachable!("push hands back what it was given")
            };
            if full {
                SendError::Full(m)
            } else {
                SendError::NoProc(m)
            }
        })
    }

    /// Queues the message in `slot`, or leaves it there and registers `cx` to be woken when
    /// a bounded mailbox has room.
    pub(crate) fn poll_send(
        &self,
        slot: &mut Option<M>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), SendError<M>>> {
        let mut s = self.lock();
        let Some(msg) = slot.take() else {
            panic!("poll_send polled after completion")
        };
        if !s.alive {
            return Poll::Ready(Err(SendError::NoProc(msg)));
        }
        if let Some(cap) = self.meta.capacity
            && s.items.len() >= cap
        {
            let waiters = &mut s.cold().send_waiters;
            if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
                waiters.push_back(cx.waker().clone());
            }
            *slot = Some(msg);
            return Poll::Pending;
        }
        s.items.push_back(Envelope::Msg(msg));
        s.wake_owner();
        Poll::Ready(Ok(()))
    }

    /// The owner takes its next messages: the whole queue when unbounded, one message when
    /// bounded (so capacity counts every message not yet handled).
    pub(crate) fn poll_take(
        &self,
        batch: &mut VecDeque<Envelope<M>>,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        let mut s = self.lock();
        if s.items.is_empty() {
            match &s.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => s.waker = Some(cx.waker().clone()),
            }
            s.parked = true;
            self.status.store(STATUS_WAITING, Ordering::Relaxed);
            return Poll::Pending;
        }
        if self.meta.capacity.is_some() {
            batch.extend(s.items.pop_front());
            // Every waiting sender is woken: one that gave up must not swallow the only
            // wake-up while another still waits.
            let waiters = s
                .cold
                .as_mut()
                .map(|c| std::mem::take(&mut c.send_waiters))
                .unwrap_or_default();
            drop(s);
            waiters.into_iter().for_each(Waker::wake);
        } else {
            std::mem::swap(&mut s.items, batch);
            drop(s);
        }
        self.taken.fetch_add(batch.len() as u64, Ordering::Relaxed);
        self.status.store(STATUS_RUNNING, Ordering::Relaxed);
        Poll::Ready(())
    }

    /// Makes sure a fatal signal can wake the owner even while it awaits something other
    /// than its mailbox.
    pub(crate) fn register_waker(&self, waker: &Waker) {
        let mut s = self.lock();
        match &s.waker {
            Some(w) if w.will_wake(waker) => {}
            _ => s.waker = Some(waker.clone()),
        }
    }

    /// Marks the end of the `started` callback and tells whoever waits for it.
    pub(crate) fn mark_started(&self) {
        let mut s = self.lock();
        self.status.store(STATUS_RUNNING, Ordering::Relaxed);
        let waiters = s
            .cold
            .as_mut()
            .map(|c| std::mem::take(&mut c.start_waiters))
            .unwrap_or_default();
        drop(s);
        for w in waiters {
            let _ = w.send(());
        }
    }

    pub(crate) fn set_trap_exit(&self, on: bool) {
        self.lock().trap_exit = on;
    }

    pub(crate) fn take_pending_exit(&self) -> Option<ExitReason> {
        self.lock().pending_exit.take()
    }
}

/// Where a process stands with respect to its `started` callback.
pub(crate) enum StartWait {
    /// Still in it; the waiter will hear when it ends.
    Waiting,
    /// Past it.
    Started,
    /// Exited.
    Gone,
}

/// The type-erased face of a cell, used by the runtime and by other processes.
pub(crate) trait ProcessCell: Send + Sync + 'static {
    fn meta(&self) -> &Meta;
    /// Marks the process dead and hands back what the runtime must notify, and the queued
    /// messages to drop once everyone is notified (their destructors are user code).
    fn finish(&self) -> (Option<Box<Cold>>, Box<dyn Any + Send>);
    /// Delivers an exit signal: trapped, ignored, or fatal.
    fn exit_signal(&self, from: Pid, reason: ExitReason, kind: SignalKind);
    /// Adds a link if alive; false if the process is gone.
    fn add_link(&self, other: Pid) -> bool;
    fn remove_link(&self, other: Pid);
    fn add_watcher(&self, mref: MonitorRef, watcher: Pid) -> bool;
    fn remove_watcher(&self, mref: MonitorRef, watcher: Pid);
    /// Records a monitor this process holds (before the target is asked, so a `Down` racing
    /// with the setup is never dropped).
    fn add_monitoring(&self, mref: MonitorRef, target: Pid);
    /// Removes a held monitor; returns its target if it was there.
    fn remove_monitoring(&self, mref: MonitorRef) -> Option<Pid>;
    fn deliver_down(&self, down: Down);
    fn add_exit_waiter(
        &self,
        tx: oneshot::Sender<ExitReason>,
    ) -> Result<(), oneshot::Sender<ExitReason>>;
    /// Registers interest in the end of the `started` callback.
    fn add_start_waiter(&self, tx: oneshot::Sender<()>) -> StartWait;
    fn set_name(&self, name: &Arc<str>) -> Result<(), RegisterError>;
    fn clear_name(&self, name: &str) -> bool;
    fn info(&self) -> ProcessInfo;
    /// Decodes a message that came over the network and queues it.
    fn deliver_encoded(&self, payload: &[u8]) -> Result<(), DeliverError>;
    /// What this process has to do with processes of `node`: its links and the monitors it
    /// holds there. Monitors that processes of `node` held on this one are dropped.
    fn sever(&self, node: NodeId) -> (Vec<Pid>, Vec<(MonitorRef, Pid)>);
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
}

impl<M: Send + 'static> ProcessCell for Cell<M> {
    fn meta(&self) -> &Meta {
        &self.meta
    }

    /// Marks the process dead and hands back what the runtime must notify. Queued messages
    /// are dropped outside the lock.
    fn finish(&self) -> (Option<Box<Cold>>, Box<dyn Any + Send>) {
        self.status.store(STATUS_EXITING, Ordering::Relaxed);
        let mut s = self.lock();
        s.alive = false;
        s.parked = false;
        s.waker = None;
        let items = std::mem::take(&mut s.items);
        let mut cold = s.cold.take();
        drop(s);
        if let Some(c) = cold.as_mut() {
            for w in c.send_waiters.drain(..) {
                w.wake();
            }
        }
        (cold, Box::new(items))
    }

    fn exit_signal(&self, from: Pid, reason: ExitReason, kind: SignalKind) {
        let mut s = self.lock();
        if !s.alive {
            return;
        }
        if kind == SignalKind::Link {
            // A link signal acts only through a link that still exists: after `unlink`
            // returns, the peer's exit has no effect here.
            let Some(c) = s.cold.as_mut() else { return };
            let Some(at) = c.links.iter().position(|p| *p == from) else {
                return;
            };
            c.links.swap_remove(at);
        }
        let fatal = match kind {
            SignalKind::Kill => Some(ExitReason::Killed),
            _ if s.trap_exit => {
                s.items
                    .push_back(Envelope::Sys(Box::new(SysMsg::Exit { from, reason })));
                s.wake_owner();
                None
            }
            _ if reason.is_normal() => None,
            _ => Some(reason),
        };
        if let Some(reason) = fatal {
            // The first fatal signal decides the exit reason.
            if s.pending_exit.is_none() {
                s.pending_exit = Some(reason);
            }
            self.urgent.store(true, Ordering::Release);
            s.parked = false;
            if let Some(w) = &s.waker {
                w.wake_by_ref();
            }
        }
    }

    fn add_link(&self, other: Pid) -> bool {
        let mut s = self.lock();
        if !s.alive {
            return false;
        }
        let links = &mut s.cold().links;
        if !links.contains(&other) {
            links.push(other);
        }
        true
    }

    fn remove_link(&self, other: Pid) {
        if let Some(c) = self.lock().cold.as_mut() {
            c.links.retain(|p| *p != other);
        }
    }

    fn add_watcher(&self, mref: MonitorRef, watcher: Pid) -> bool {
        let mut s = self.lock();
        if !s.alive {
            return false;
        }
        s.cold().watchers.push((mref, watcher));
        true
    }

    fn remove_watcher(&self, mref: MonitorRef, watcher: Pid) {
        if let Some(c) = self.lock().cold.as_mut() {
            c.watchers.retain(|&(r, w)| (r, w) != (mref, watcher));
        }
    }

    fn add_monitoring(&self, mref: MonitorRef, target: Pid) {
        let mut s = self.lock();
        if s.alive {
            s.cold().monitoring.push((mref, target));
        }
    }

    fn remove_monitoring(&self, mref: MonitorRef) -> Option<Pid> {
        let mut s = self.lock();
        let c = s.cold.as_mut()?;
        let at = c.monitoring.iter().position(|(r, _)| *r == mref)?;
        Some(c.monitoring.swap_remove(at).1)
    }

    fn deliver_down(&self, down: Down) {
        let mut s = self.lock();
        if !s.alive {
            return;
        }
        // A monitor fires once, and not at all after it was removed.
        let Some(c) = s.cold.as_mut() else { return };
        let before = c.monitoring.len();
        c.monitoring.retain(|(r, _)| *r != down.monitor);
        if c.monitoring.len() == before {
            return;
        }
        s.items
            .push_back(Envelope::Sys(Box::new(SysMsg::Down(down))));
        s.wake_owner();
    }

    fn add_exit_waiter(
        &self,
        tx: oneshot::Sender<ExitReason>,
    ) -> Result<(), oneshot::Sender<ExitReason>> {
        let mut s = self.lock();
        if !s.alive {
            return Err(tx);
        }
        s.cold().exit_waiters.push(tx);
        Ok(())
    }

    fn add_start_waiter(&self, tx: oneshot::Sender<()>) -> StartWait {
        let mut s = self.lock();
        if !s.alive {
            StartWait::Gone
        } else if self.status.load(Ordering::Relaxed) != STATUS_STARTING {
            StartWait::Started
        } else {
            s.cold().start_waiters.push(tx);
            StartWait::Waiting
        }
    }

    fn set_name(&self, name: &Arc<str>) -> Result<(), RegisterError> {
        let mut s = self.lock();
        if !s.alive {
            return Err(RegisterError::NoProc(self.meta.pid));
        }
        let cold = s.cold();
        if let Some(old) = &cold.name {
            return Err(RegisterError::AlreadyNamed {
                pid: self.meta.pid,
                name: old.to_string(),
            });
        }
        cold.name = Some(name.clone());
        Ok(())
    }

    fn clear_name(&self, name: &str) -> bool {
        let mut s = self.lock();
        match s.cold.as_mut() {
            Some(c) if c.name.as_deref() == Some(name) => {
                c.name = None;
                true
            }
            _ => false,
        }
    }

    fn info(&self) -> ProcessInfo {
        let s = self.lock();
        let in_batch = self
            .taken
            .load(Ordering::Relaxed)
            .saturating_sub(self.handled.load(Ordering::Relaxed));
        let status = match self.status.load(Ordering::Relaxed) {
            _ if !s.alive => ProcessStatus::Exiting,
            STATUS_STARTING => ProcessStatus::Starting,
            STATUS_WAITING => ProcessStatus::Waiting,
            STATUS_EXITING => ProcessStatus::Exiting,
            _ => ProcessStatus::Running,
        };
        let cold = s.cold.as_deref();
        ProcessInfo {
            pid: self.meta.pid,
            name: cold.and_then(|c| c.name.as_deref().map(str::to_string)),
            actor_type: self.meta.actor_name,
            mailbox_len: s.items.len() + in_batch as usize,
            mailbox_capacity: self.meta.capacity,
            capabilities: self.meta.capabilities.to_vec(),
            status,
            uptime: self.meta.started.elapsed(),
            messages_handled: self.handled.load(Ordering::Relaxed),
            trap_exit: s.trap_exit,
            parent: self.meta.parent,
            links: cold.map(|c| c.links.clone()).unwrap_or_default(),
            monitors: cold
                .map(|c| c.monitoring.iter().map(|(_, p)| *p).collect())
                .unwrap_or_default(),
            monitored_by: cold
                .map(|c| c.watchers.iter().map(|(_, p)| *p).collect())
                .unwrap_or_default(),
        }
    }

    fn deliver_encoded(&self, payload: &[u8]) -> Result<(), DeliverError> {
        let decode = self
            .decoder
            .ok_or(DeliverError::NotRemotable(self.meta.pid))?;
        let msg = decode(payload).map_err(DeliverError::Decode)?;
        self.send(msg).map_err(|e| match e {
            SendError::Full(_) => DeliverError::Full(self.meta.pid),
            _ => DeliverError::NoProc(self.meta.pid),
        })
    }

    fn sever(&self, node: NodeId) -> (Vec<Pid>, Vec<(MonitorRef, Pid)>) {
        let mut s = self.lock();
        let Some(c) = s.cold.as_mut() else {
            return Default::default();
        };
        c.watchers.retain(|(_, w)| w.node != node);
        let links = c.links.iter().copied().filter(|p| p.node == node).collect();
        let monitoring = c
            .monitoring
            .iter()
            .copied()
            .filter(|(_, p)| p.node == node)
            .collect();
        (links, monitoring)
    }

    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
}
