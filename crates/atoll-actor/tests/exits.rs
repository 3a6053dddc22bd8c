//! Links, monitors, exit reasons and trap_exit.

mod common;

use std::time::Duration;

use atoll_actor::{CallError, ExitReason, Runtime, SendError, SpawnOptions};
use common::*;
use tokio::sync::mpsc;

async fn ping(r: &atoll_actor::ActorRef<Probe>) {
    r.call(Cmd::Ping, DEADLINE).await.expect("probe answers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_exit_propagates_through_a_chain_of_links() {
    let rt = Runtime::new();
    let (tx, _rx) = mpsc::unbounded_channel();
    let a = rt.spawn(Probe::new("a", &tx));
    let b = rt.spawn(Probe::new("b", &tx));
    let c = rt.spawn(Probe::new("c", &tx));
    a.send(Cmd::Link(b.pid())).unwrap();
    b.send(Cmd::Link(c.pid())).unwrap();
    ping(&a).await;
    ping(&b).await;
    let exits = [
        rt.wait_exit(c.pid()),
        rt.wait_exit(b.pid()),
        rt.wait_exit(a.pid()),
    ];
    c.send(Cmd::Fail("disk on fire".into())).unwrap();
    for exit in exits {
        assert_eq!(within(exit).await, ExitReason::error("disk on fire"));
    }
    assert_eq!(rt.process_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normal_exit_does_not_kill_linked_processes() {
    let rt = Runtime::new();
    let (tx, _rx) = mpsc::unbounded_channel();
    let a = rt.spawn(Probe::new("a", &tx));
    let b = rt.spawn(Probe::new("b", &tx));
    a.send(Cmd::Link(b.pid())).unwrap();
    ping(&a).await;
    let b_exit = rt.wait_exit(b.pid());
    b.send(Cmd::Stop(ExitReason::Normal)).unwrap();
    assert_eq!(within(b_exit).await, ExitReason::Normal);
    ping(&a).await;
    assert!(rt.is_alive(a.pid()));
    assert!(
        rt.process_info(a.pid()).unwrap().links.is_empty(),
        "the link is gone with b"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trap_exit_turns_exit_signals_into_messages() {
    let rt = Runtime::new();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let a = rt.spawn(Probe::new("a", &tx).trapping());
    let b = rt.spawn(Probe::new("b", &tx));
    a.send(Cmd::Link(b.pid())).unwrap();
    ping(&a).await;
    b.send(Cmd::Fail("bad".into())).unwrap();
    let e = until(&mut rx, "a's trapped exit", |e| {
        matches!(e, Event::Exit { .. })
    })
    .await;
    assert_eq!(
        e,
        Event::Exit {
            me: "a".into(),
            from: b.pid(),
            reason: ExitReason::error("bad")
        }
    );
    ping(&a).await;
    assert!(rt.is_alive(a.pid()));
    // A plain exit signal (not via a link) is trapped too, normal reason included.
    rt.exit(a.pid(), ExitReason::Normal);
    let e = until(&mut rx, "trapped normal exit", |e| {
        matches!(e, Event::Exit { .. })
    })
    .await;
    assert_eq!(
        e,
        Event::Exit {
            me: "a".into(),
            from: rt.node_pid(),
            reason: ExitReason::Normal
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrapped_exit_signal_kills_and_normal_is_ignored() {
    let rt = Runtime::new();
    let (tx, _rx) = mpsc::unbounded_channel();
    let a = rt.spawn(Probe::new("a", &tx));
    rt.exit(a.pid(), ExitReason::Normal);
    ping(&a).await;
    let a_exit = rt.wait_exit(a.pid());
    rt.exit(a.pid(), ExitReason::Shutdown);
    assert_eq!(within(a_exit).await, ExitReason::Shutdown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_cannot_be_trapped_and_reaches_a_process_stuck_in_a_callback() {
    let rt = Runtime::new();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let a = rt.spawn(Probe::new("a", &tx).trapping());
    let watcher = rt.spawn(Probe::new("w", &tx).trapping());
    watcher.send(Cmd::Link(a.pid())).unwrap();
    ping(&watcher).await;
    a.send(Cmd::Hang).unwrap();
    eventually("the hang is in hand", || {
        rt.process_info(a.pid())
            .is_some_and(|i| i.messages_handled == 1)
    })
    .await;
    let a_exit = rt.wait_exit(a.pid());
    rt.kill(a.pid());
    assert_eq!(within(a_exit).await, ExitReason::Killed);
    // The linked process gets `killed`, which it can trap.
    let e = until(&mut rx, "w's trapped exit", |e| {
        matches!(e, Event::Exit { .. })
    })
    .await;
    assert_eq!(
        e,
        Event::Exit {
            me: "w".into(),
            from: a.pid(),
            reason: ExitReason::Killed
        }
    );
    assert!(rt.is_alive(watcher.pid()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_process_exits_with_an_error_and_the_runtime_goes_on() {
    let rt = Runtime::new();
    let (tx, _rx) = mpsc::unbounded_channel();
    let a = rt.spawn(Probe::new("a", &tx));
    let b = rt.spawn(Probe::new("b", &tx));
    let a_exit = rt.wait_exit(a.pid());
    a.send(Cmd::Panic).unwrap();
    match within(a_exit).await {
        ExitReason::Error(text) => assert!(text.contains("told to panic"), "{text}"),
        other => panic!("expected an error exit, got {other}"),
    }
    ping(&b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linking_to_a_dead_process_delivers_noproc() {
    let rt = Runtime::new();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let dead = rt.spawn(Probe::new("dead", &tx));
    let dead_exit = rt.wait_exit(dead.pid());
    dead.send(Cmd::Stop(ExitReason::Normal)).unwrap();
    within(dead_exit).await;

    let trapper = rt.spawn(Probe::new("t", &tx).trapping());
    trapper.send(Cmd::Link(dead.pid())).unwrap();
    let e = until(&mut rx, "noproc exit", |e| matches!(e, Event::Exit { .. })).await;
    assert_eq!(
        e,
        Event::Exit {
            me: "t".into(),
            from: dead.pid(),
            reason: ExitReason::NoProc
        }
    );

    let plain = rt.spawn(Probe::new("p", &tx));
    let plain_exit = rt.wait_exit(plain.pid());
    plain.send(Cmd::Link(dead.pid())).unwrap();
    assert_eq!(within(plain_exit).await, ExitReason::NoProc);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitors_fire_once_with_the_reason_and_noproc_for_the_dead() {
    let rt = Runtime::new();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let watcher = rt.spawn(Probe::new("w", &tx));
    let target = rt.spawn(Probe::new("t", &tx));
    let m1 = watcher
        .call(|r| Cmd::Monitor(target.pid(), r), DEADLINE)
        .await
        .unwrap();
    let m2 = watcher
        .call(|r| Cmd::Monitor(target.pid(), r), DEADLINE)
        .await
        .unwrap();
    assert_ne!(m1, m2);
    target.send(Cmd::Fail("oops".into())).unwrap();
    let mut fired = Vec::new();
    for _ in 0..2 {
        match until(&mut rx, "down", |e| matches!(e, Event::Down { .. })).await {
            Event::Down { down, .. } => {
                assert_eq!(down.pid, target.pid());
                assert_eq!(down.reason, ExitReason::error("oops"));
                fired.push(down.monitor);
            }
            _ => unreachable!(),
        }
    }
    fired.sort();
    assert_eq!(
        fired,
        vec![m1.min(m2), m1.max(m2)],
        "each monitor fires exactly once"
    );
    // The watcher is not linked: it lives on, and no third Down comes.
    ping(&watcher).await;
    assert!(rx.try_recv().is_err());

    let m3 = watcher
        .call(|r| Cmd::Monitor(target.pid(), r), DEADLINE)
        .await
        .unwrap();
    match until(&mut rx, "noproc down", |e| matches!(e, Event::Down { .. })).await {
        Event::Down { down, .. } => {
            assert_eq!(down.monitor, m3);
            assert_eq!(down.reason, ExitReason::NoProc);
        }
        _ => unreachable!(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demonitor_stops_the_notification() {
    let rt = Runtime::new();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let watcher = rt.spawn(Probe::new("w", &tx));
    let target = rt.spawn(Probe::new("t", &tx));
    let m = watcher
        .call(|r| Cmd::Monitor(target.pid(), r), DEADLINE)
        .await
        .unwrap();
    assert_eq!(
        rt.process_info(target.pid()).unwrap().monitored_by,
        vec![watcher.pid()]
    );
    watcher.send(Cmd::Demonitor(m)).unwrap();
    ping(&watcher).await;
    assert!(
        rt.process_info(target.pid())
            .unwrap()
            .monitored_by
            .is_empty()
    );
    let target_exit = rt.wait_exit(target.pid());
    target.send(Cmd::Stop(ExitReason::Normal)).unwrap();
    within(target_exit).await;
    ping(&watcher).await;
    while let Ok(e) = rx.try_recv() {
        assert!(
            !matches!(e, Event::Down { .. }),
            "no Down after demonitor: {e:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_link_and_spawn_monitor_from_a_process() {
    use atoll_actor::{Actor, ActorResult, Ctx};
    struct Parent {
        events: mpsc::UnboundedSender<Event>,
    }
    impl Actor for Parent {
        type Msg = ReplyToPids;
        async fn handle(&mut self, reply: ReplyToPids, ctx: &mut Ctx<Self>) -> ActorResult {
            let linked = ctx.spawn_link(Probe::new("linked", &self.events));
            let (monitored, _m) = ctx.spawn_monitor(Probe::new("monitored", &self.events));
            reply.0.reply((linked.pid(), monitored.pid()));
            Ok(())
        }
    }
    struct ReplyToPids(atoll_actor::ReplyTo<(atoll_actor::Pid, atoll_actor::Pid)>);

    let rt = Runtime::new();
    let (tx, _rx) = mpsc::unbounded_channel();
    let parent = rt.spawn(Parent { events: tx });
    let (linked, monitored) = parent.call(ReplyToPids, DEADLINE).await.unwrap();
    let info = rt.process_info(linked).unwrap();
    assert_eq!(info.parent, Some(parent.pid()));
    assert_eq!(info.links, vec![parent.pid()]);
    assert_eq!(
        rt.process_info(monitored).unwrap().monitored_by,
        vec![parent.pid()]
    );
    let linked_exit = rt.wait_exit(linked);
    rt.exit(parent.pid(), ExitReason::error("parent down"));
    assert_eq!(within(linked_exit).await, ExitReason::error("parent down"));
    assert!(rt.is_alive(monitored), "a monitor does not kill");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sending_to_a_dead_process_hands_the_message_back() {
    let rt = Runtime::new();
    let (tx, _rx) = mpsc::unbounded_channel();
    let a = rt.spawn(Probe::new("a", &tx));
    let a_exit = rt.wait_exit(a.pid());
    a.send(Cmd::Stop(ExitReason::Normal)).unwrap();
    within(a_exit).await;
    match a.send(Cmd::Fail("x".into())) {
        Err(SendError::NoProc(Cmd::Fail(text))) => assert_eq!(text, "x"),
        other => panic!("expected NoProc with the message, got {other:?}"),
    }
    assert_eq!(a.call(Cmd::Ping, DEADLINE).await, Err(CallError::NoProc));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_past_its_timeout_is_a_typed_error() {
    let rt = Runtime::new();
    let (tx, _rx) = mpsc::unbounded_channel();
    let a = rt.spawn(Probe::new("a", &tx));
    a.send(Cmd::Hang).unwrap();
    let r = a.call(Cmd::Ping, Duration::from_millis(50)).await;
    assert_eq!(r, Err(CallError::Timeout));
    // A process that exits with the request queued drops the reply handle.
    let b = rt.spawn(Probe::new("b", &tx));
    b.send(Cmd::Hang).unwrap();
    let pending = tokio::spawn({
        let b = b.clone();
        async move { b.call(Cmd::Ping, DEADLINE).await }
    });
    eventually("the call is queued behind the hang", || {
        rt.process_info(b.pid())
            .is_some_and(|i| i.messages_handled == 1 && i.mailbox_len == 1)
    })
    .await;
    rt.kill(b.pid());
    assert_eq!(pending.await.unwrap(), Err(CallError::NoReply));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runtimes_never_see_each_other() {
    let rt1 = Runtime::new();
    let rt2 = Runtime::new();
    assert_ne!(rt1.node(), rt2.node());
    let (tx, _rx) = mpsc::unbounded_channel();
    let a = rt1.spawn(Probe::new("a", &tx));
    rt1.register("a", a.pid()).unwrap();
    assert!(!rt2.is_alive(a.pid()));
    assert_eq!(rt2.whereis("a"), None);
    rt2.kill(a.pid());
    ping(&a).await;
    assert_eq!(rt2.process_count(), 0);
}

/// Starts slowly, so a signal can arrive before it ever waits for mail.
struct SlowStart;

impl atoll_actor::Actor for SlowStart {
    type Msg = ();
    async fn started(&mut self, _ctx: &mut atoll_actor::Ctx<Self>) -> atoll_actor::ActorResult {
        std::thread::sleep(Duration::from_millis(20));
        Ok(())
    }
    async fn handle(
        &mut self,
        _: (),
        _ctx: &mut atoll_actor::Ctx<Self>,
    ) -> atoll_actor::ActorResult {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_during_the_start_callback_is_not_lost() {
    let rt = Runtime::new();
    for _ in 0..5 {
        let p = rt.spawn(SlowStart);
        let exit = rt.wait_exit(p.pid());
        tokio::task::yield_now().await;
        rt.kill(p.pid());
        assert_eq!(within(exit).await, ExitReason::Killed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_unlink_a_peer_exit_has_no_effect() {
    let rt = Runtime::new();
    let (tx, _rx) = mpsc::unbounded_channel();
    let a = rt.spawn(Probe::new("a", &tx));
    let b = rt.spawn(Probe::new("b", &tx));
    a.send(Cmd::Link(b.pid())).unwrap();
    ping(&a).await;
    assert_eq!(rt.process_info(b.pid()).unwrap().links, vec![a.pid()]);
    a.send(Cmd::Unlink(b.pid())).unwrap();
    ping(&a).await;
    assert!(rt.process_info(b.pid()).unwrap().links.is_empty());
    let b_exit = rt.wait_exit(b.pid());
    b.send(Cmd::Fail("alone".into())).unwrap();
    within(b_exit).await;
    ping(&a).await;
    assert!(rt.is_alive(a.pid()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapping_child_still_ends_when_its_parent_exits() {
    use atoll_actor::{Actor, ActorResult, Ctx, Pid, ReplyTo};
    struct Parent {
        events: mpsc::UnboundedSender<Event>,
    }
    impl Actor for Parent {
        type Msg = ReplyTo<Pid>;
        async fn handle(&mut self, reply: ReplyTo<Pid>, ctx: &mut Ctx<Self>) -> ActorResult {
            // Trapping from the first instant, so the parent's signal cannot beat `started`.
            let opts = SpawnOptions {
                trap_exit: true,
                ..Default::default()
            };
            let child = ctx.spawn_link_opts(Probe::new("child", &self.events).trapping(), opts);
            reply.reply(child.pid());
            Ok(())
        }
    }
    let rt = Runtime::new();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let parent = rt.spawn(Parent { events: tx });
    let child = parent.call(|r| r, DEADLINE).await.unwrap();
    let child_exit = rt.wait_exit(child);
    rt.exit(parent.pid(), ExitReason::error("parent gone"));
    assert_eq!(within(child_exit).await, ExitReason::error("parent gone"));
    // It saw the signal (trapping lets it clean up) and its `stopped` ran.
    until(&mut rx, "the trapped exit", |e| {
        matches!(e, Event::Exit { .. })
    })
    .await;
    let stopped = until(&mut rx, "stopped", |e| matches!(e, Event::Stopped(..))).await;
    assert_eq!(
        stopped,
        Event::Stopped("child".into(), ExitReason::error("parent gone"))
    );
}
