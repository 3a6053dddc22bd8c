//! Bounded mailboxes, the local registry, timers and introspection.

mod common;

use std::time::Duration;

use atoll_actor::{
    Actor, ActorResult, Ctx, ExitReason, LookupError, ProcessStatus, RegisterError, Runtime,
    SendError, SpawnOptions,
};
use common::*;
use tokio::sync::mpsc;

/// Holds every message until released, so a test controls when the mailbox drains.
struct Gate {
    open: Option<tokio::sync::oneshot::Receiver<()>>,
    seen: mpsc::UnboundedSender<u32>,
}

impl Actor for Gate {
    type Msg = u32;
    async fn handle(&mut self, n: u32, _ctx: &mut Ctx<Self>) -> ActorResult {
        if let Some(open) = self.open.take() {
            let _ = open.await;
        }
        let _ = self.seen.send(n);
        Ok(())
    }
}

/// Polls a future exactly once with the current task's waker.
async fn poll_once<F: std::future::Future + Unpin>(f: &mut F) -> std::task::Poll<F::Output> {
    std::future::poll_fn(|cx| std::task::Poll::Ready(std::pin::Pin::new(&mut *f).poll(cx))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_bounded_mailbox_refuses_or_holds_the_sender_and_loses_nothing() {
    let rt = Runtime::new();
    let (open_tx, open_rx) = tokio::sync::oneshot::channel();
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let gate = rt.spawn_opts(
        Gate {
            open: Some(open_rx),
            seen: seen_tx,
        },
        SpawnOptions::bounded(2),
    );
    gate.send(0).unwrap();
    eventually("message 0 in hand", || {
        rt.process_info(gate.pid()).unwrap().messages_handled == 1
    })
    .await;
    gate.send(1).unwrap();
    gate.send(2).unwrap();
    match gate.send(3) {
        Err(SendError::Full(3)) => {}
        other => panic!("expected Full(3), got {other:?}"),
    }
    let info = rt.process_info(gate.pid()).unwrap();
    assert_eq!((info.mailbox_len, info.mailbox_capacity), (2, Some(2)));
    // Backpressure: send_wait parks until there is room. A waiter that gives up first
    // must not take the wake-up from the one still waiting.
    let mut quitter = Box::pin(gate.send_wait(99));
    assert!(poll_once(&mut quitter).await.is_pending());
    let mut waiting = Box::pin(gate.send_wait(3));
    assert!(poll_once(&mut waiting).await.is_pending());
    drop(quitter);
    open_tx.send(()).unwrap();
    tokio::time::timeout(DEADLINE, waiting)
        .await
        .unwrap()
        .unwrap();
    let mut got = Vec::new();
    while got.len() < 4 {
        got.push(
            tokio::time::timeout(DEADLINE, seen.recv())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    assert_eq!(got, [0, 1, 2, 3], "every message arrives, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_wait_fails_with_the_message_when_the_process_exits() {
    let rt = Runtime::new();
    let (_open_tx, open_rx) = tokio::sync::oneshot::channel();
    let (seen_tx, _seen) = mpsc::unbounded_channel();
    let gate = rt.spawn_opts(
        Gate {
            open: Some(open_rx),
            seen: seen_tx,
        },
        SpawnOptions::bounded(1),
    );
    gate.send(0).unwrap();
    eventually("message 0 in hand", || {
        rt.process_info(gate.pid()).unwrap().messages_handled == 1
    })
    .await;
    gate.send(1).unwrap();
    let mut waiting = Box::pin(gate.send_wait(2));
    assert!(poll_once(&mut waiting).await.is_pending());
    rt.kill(gate.pid());
    match tokio::time::timeout(DEADLINE, waiting).await.unwrap() {
        Err(SendError::NoProc(2)) => {}
        other => panic!("expected NoProc(2), got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_are_unique_typed_and_released_on_exit() {
    let rt = Runtime::new();
    let (tx, _rx) = mpsc::unbounded_channel();
    let a = rt.spawn(Probe::new("a", &tx));
    let b = rt.spawn(Probe::new("b", &tx));
    rt.register("svc", a.pid()).unwrap();
    assert_eq!(rt.whereis("svc"), Some(a.pid()));
    assert_eq!(
        rt.register("svc", b.pid()),
        Err(RegisterError::NameTaken {
            name: "svc".into(),
            owner: a.pid()
        })
    );
    assert!(matches!(
        rt.register("other", a.pid()),
        Err(RegisterError::AlreadyNamed { .. })
    ));
    let err = rt.register("svc", b.pid()).unwrap_err().to_string();
    assert!(
        err.contains(&a.pid().to_string()),
        "the error names the owner: {err}"
    );

    let by_name = rt.whereis_ref::<Probe>("svc").unwrap();
    assert_eq!(by_name.call(Cmd::Ping, DEADLINE).await.unwrap(), a.pid());
    assert!(matches!(
        rt.whereis_ref::<Gate>("svc"),
        Err(LookupError::WrongType { .. })
    ));
    assert!(matches!(
        rt.whereis_ref::<Probe>("nobody"),
        Err(LookupError::NotRegistered(_))
    ));
    assert_eq!(
        rt.process_info(a.pid()).unwrap().name.as_deref(),
        Some("svc")
    );

    let gone = rt.wait_exit(a.pid());
    a.send(Cmd::Stop(ExitReason::Normal)).unwrap();
    within(gone).await;
    assert_eq!(rt.whereis("svc"), None, "released on exit");
    rt.register("svc", b.pid()).unwrap();
    assert_eq!(rt.unregister("svc"), Some(b.pid()));
    assert_eq!(rt.process_info(b.pid()).unwrap().name, None);
    let dead = a.pid();
    assert_eq!(rt.register("late", dead), Err(RegisterError::NoProc(dead)));
}

struct Ticker {
    ticks: mpsc::UnboundedSender<&'static str>,
}

#[derive(Clone)]
enum TickMsg {
    Tick(&'static str),
    Arm,
}

impl Actor for Ticker {
    type Msg = TickMsg;
    async fn handle(&mut self, msg: TickMsg, ctx: &mut Ctx<Self>) -> ActorResult {
        match msg {
            TickMsg::Tick(t) => {
                let _ = self.ticks.send(t);
            }
            TickMsg::Arm => {
                ctx.send_after(Duration::from_millis(30), TickMsg::Tick("once"));
                let cancelled =
                    ctx.send_after(Duration::from_millis(10), TickMsg::Tick("cancelled"));
                cancelled.cancel();
            }
        }
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn timers_fire_repeat_and_cancel() {
    let rt = Runtime::new();
    let (tx, mut ticks) = mpsc::unbounded_channel();
    let t = rt.spawn(Ticker { ticks: tx });
    t.send(TickMsg::Arm).unwrap();
    let interval = rt.send_interval(&t, Duration::from_millis(100), TickMsg::Tick("every"));
    let start = tokio::time::Instant::now();
    assert_eq!(ticks.recv().await, Some("once"));
    assert!(start.elapsed() >= Duration::from_millis(29));
    for n in 1..=3u32 {
        assert_eq!(ticks.recv().await, Some("every"));
        assert!(start.elapsed() >= Duration::from_millis(100) * n);
    }
    interval.cancel();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        ticks.try_recv().is_err(),
        "nothing after cancel, and the cancelled timer never fired"
    );
    // An interval ends by itself when its target exits.
    let again = rt.send_interval(&t, Duration::from_millis(100), TickMsg::Tick("every"));
    rt.kill(t.pid());
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(again.is_finished());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_lists_live_processes_with_their_details() {
    let rt = Runtime::new();
    let (tx, _rx) = mpsc::unbounded_channel();
    let a = rt.spawn(Probe::new("a", &tx));
    let b = rt.spawn_opts(Probe::new("b", &tx).trapping(), SpawnOptions::bounded(8));
    rt.register("alpha", a.pid()).unwrap();
    a.send(Cmd::Link(b.pid())).unwrap();
    let m = b
        .call(|r| Cmd::Monitor(a.pid(), r), DEADLINE)
        .await
        .unwrap();
    for n in 0..5 {
        assert_eq!(a.call(|r| Cmd::Echo(n, r), DEADLINE).await.unwrap(), n);
    }
    eventually("a waits for mail again", || {
        rt.process_info(a.pid()).unwrap().status == ProcessStatus::Waiting
    })
    .await;
    let list = rt.processes();
    assert_eq!(list.len(), 2);
    let (ia, ib) = (&list[0], &list[1]);
    assert_eq!(ia.pid, a.pid());
    assert_eq!(ia.name.as_deref(), Some("alpha"));
    assert!(ia.actor_type.ends_with("Probe"), "{}", ia.actor_type);
    assert_eq!(ia.messages_handled, 6);
    assert_eq!(ia.mailbox_len, 0);
    assert_eq!(ia.links, vec![b.pid()]);
    assert_eq!(ia.monitored_by, vec![b.pid()]);
    assert_eq!(ib.links, vec![a.pid()]);
    assert_eq!(ib.monitors, vec![a.pid()]);
    assert!(ib.trap_exit);
    assert_eq!(ib.mailbox_capacity, Some(8));
    let _ = m;
}

/// One message a hook of the test below saw: (hook, from node, to, payload).
type Seen = (&'static str, atoll_core::NodeId, atoll_core::Pid, Vec<u8>);

/// What the undeliverable hooks of the test below saw.
static UNDELIVERABLE: std::sync::Mutex<Vec<Seen>> = std::sync::Mutex::new(Vec::new());

fn note(hook: &'static str, from: atoll_core::NodeId, to: atoll_core::Pid, payload: &[u8]) {
    UNDELIVERABLE
        .lock()
        .unwrap()
        .push((hook, from, to, payload.to_vec()));
}

/// Takes payloads that start with 1; passes on the rest.
fn takes_ones(_: &Runtime, from: atoll_core::NodeId, to: atoll_core::Pid, p: &[u8]) -> bool {
    note("ones", from, to, p);
    p.first() == Some(&1)
}

fn takes_all(_: &Runtime, from: atoll_core::NodeId, to: atoll_core::Pid, p: &[u8]) -> bool {
    note("all", from, to, p);
    true
}

fn takes_none(_: &Runtime, from: atoll_core::NodeId, to: atoll_core::Pid, p: &[u8]) -> bool {
    note("none", from, to, p);
    false
}

struct Remotable;

impl Actor for Remotable {
    type Msg = u8;
    fn remote_decoder() -> Option<atoll_actor::Decoder<u8>> {
        atoll_actor::serde_decoder()
    }
    async fn handle(&mut self, _: u8, _ctx: &mut Ctx<Self>) -> ActorResult {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_for_processes_that_do_not_exist_reach_the_undeliverable_hooks() {
    let rt = Runtime::new();
    let from = atoll_core::NodeId::from_bytes([9; 16]);
    let live = rt.spawn(Remotable);
    let gone = rt.spawn(Remotable);
    let gone_pid = gone.pid();
    rt.kill(gone_pid);
    eventually("the process gone", || rt.process_info(gone_pid).is_none()).await;

    // Without hooks: dropped, as before.
    assert!(rt.deliver_encoded(from, gone_pid, &[1]).is_err());
    assert!(UNDELIVERABLE.lock().unwrap().is_empty());

    rt.on_undeliverable("ones", takes_ones);
    rt.on_undeliverable("all", takes_none);
    // Replaced under the same key.
    rt.on_undeliverable("all", takes_all);

    // A live process gets its message; no hook runs.
    rt.deliver_encoded(from, live.pid(), &[1]).unwrap();
    assert!(UNDELIVERABLE.lock().unwrap().is_empty());

    // Still an error for the sender's node, and the hooks see it in turn until one takes it.
    assert!(rt.deliver_encoded(from, gone_pid, &[1]).is_err());
    assert!(rt.deliver_encoded(from, gone_pid, &[2]).is_err());
    let seen = std::mem::take(&mut *UNDELIVERABLE.lock().unwrap());
    let seen: Vec<(&str, Vec<u8>)> = seen
        .into_iter()
        .map(|(hook, f, to, p)| {
            assert_eq!((f, to), (from, gone_pid));
            (hook, p)
        })
        .collect();
    assert_eq!(
        seen,
        vec![("ones", vec![1]), ("ones", vec![2]), ("all", vec![2])]
    );
}
