//! A probe actor that reports what happens to it, for tests of the exit and restart rules.
#![allow(dead_code)]

use std::time::Duration;

use atoll_actor::{
    Actor, ActorError, ActorResult, Ctx, Down, ExitReason, MonitorRef, Pid, ReplyTo,
};
use tokio::sync::mpsc;

/// Generous: a loaded 2-core machine must never trip it.
pub const DEADLINE: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Started(String, Pid),
    Stopped(String, ExitReason),
    Exit {
        me: String,
        from: Pid,
        reason: ExitReason,
    },
    Down {
        me: String,
        down: Down,
    },
}

#[derive(Debug)]
pub enum Cmd {
    Fail(String),
    Panic,
    Stop(ExitReason),
    Link(Pid),
    Unlink(Pid),
    Monitor(Pid, ReplyTo<MonitorRef>),
    Demonitor(MonitorRef),
    Trap(bool),
    Ping(ReplyTo<Pid>),
    /// Never answers: awaits forever inside the handler.
    Hang,
    Echo(u64, ReplyTo<u64>),
}

pub struct Probe {
    pub label: String,
    pub events: mpsc::UnboundedSender<Event>,
    pub trap: bool,
}

impl Probe {
    pub fn new(label: &str, events: &mpsc::UnboundedSender<Event>) -> Self {
        Probe {
            label: label.to_string(),
            events: events.clone(),
            trap: false,
        }
    }

    pub fn trapping(mut self) -> Self {
        self.trap = true;
        self
    }
}

impl Actor for Probe {
    type Msg = Cmd;

    async fn started(&mut self, ctx: &mut Ctx<Self>) -> ActorResult {
        ctx.trap_exit(self.trap);
        let _ = self
            .events
            .send(Event::Started(self.label.clone(), ctx.pid()));
        Ok(())
    }

    async fn handle(&mut self, msg: Cmd, ctx: &mut Ctx<Self>) -> ActorResult {
        match msg {
            Cmd::Fail(text) => return Err(ActorError::msg(text)),
            Cmd::Panic => panic!("probe {} told to panic", self.label),
            Cmd::Stop(reason) => ctx.stop(reason),
            Cmd::Link(pid) => ctx.link(pid),
            Cmd::Unlink(pid) => ctx.unlink(pid),
            Cmd::Monitor(pid, reply) => {
                reply.reply(ctx.monitor(pid));
            }
            Cmd::Demonitor(m) => ctx.demonitor(m),
            Cmd::Trap(on) => ctx.trap_exit(on),
            Cmd::Ping(reply) => {
                reply.reply(ctx.pid());
            }
            Cmd::Hang => std::future::pending::<()>().await,
            Cmd::Echo(n, reply) => {
                reply.reply(n);
            }
        }
        Ok(())
    }

    async fn handle_exit(
        &mut self,
        from: Pid,
        reason: ExitReason,
        ctx: &mut Ctx<Self>,
    ) -> ActorResult {
        // Like a well-behaved server: a parent's exit signal still ends the process.
        if Some(from) == ctx.parent() && !reason.is_normal() {
            ctx.stop(reason.clone());
        }
        let _ = self.events.send(Event::Exit {
            me: self.label.clone(),
            from,
            reason,
        });
        Ok(())
    }

    async fn handle_down(&mut self, down: Down, _ctx: &mut Ctx<Self>) -> ActorResult {
        let _ = self.events.send(Event::Down {
            me: self.label.clone(),
            down,
        });
        Ok(())
    }

    async fn stopped(&mut self, reason: &ExitReason, _ctx: &mut Ctx<Self>) {
        let _ = self
            .events
            .send(Event::Stopped(self.label.clone(), reason.clone()));
    }
}

/// The next event, or a panic naming what was awaited once the deadline passes.
pub async fn next(rx: &mut mpsc::UnboundedReceiver<Event>, waiting_for: &str) -> Event {
    tokio::time::timeout(DEADLINE, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("no event within {DEADLINE:?} while waiting for {waiting_for}"))
        .expect("event channel closed")
}

/// Skips events until one matches.
pub async fn until(
    rx: &mut mpsc::UnboundedReceiver<Event>,
    waiting_for: &str,
    mut pred: impl FnMut(&Event) -> bool,
) -> Event {
    loop {
        let e = next(rx, waiting_for).await;
        if pred(&e) {
            return e;
        }
    }
}

/// Awaits an exit registered earlier with `Runtime::wait_exit`, with the deadline.
pub async fn within(exit: impl std::future::Future<Output = ExitReason>) -> ExitReason {
    tokio::time::timeout(DEADLINE, exit)
        .await
        .unwrap_or_else(|_| panic!("no exit within {DEADLINE:?}"))
}

/// Waits until `cond` holds, checking every few milliseconds, or panics at the deadline.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = tokio::time::Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < DEADLINE,
            "not within {DEADLINE:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
