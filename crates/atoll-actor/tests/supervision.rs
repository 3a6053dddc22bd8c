//! Supervisor strategies, restart policies, intensity, backoff and orderly shutdown.

mod common;

use std::time::Duration;

use atoll_actor::{
    ActorRef, Backoff, ChildSpec, ExitReason, Pid, Restart, Runtime, Strategy, Supervisor,
    SupervisorSpec,
};
use common::*;
use tokio::sync::mpsc;

type Events = mpsc::UnboundedReceiver<Event>;

fn worker(label: &'static str, tx: &mpsc::UnboundedSender<Event>) -> ChildSpec {
    let tx = tx.clone();
    ChildSpec::worker(label, move || Probe::new(label, &tx).trapping())
}

fn spec(
    strategy: Strategy,
    labels: &[&'static str],
    tx: &mpsc::UnboundedSender<Event>,
) -> SupervisorSpec {
    labels.iter().fold(
        SupervisorSpec::new(strategy)
            .backoff(Backoff::none())
            .intensity(10, Duration::from_secs(60)),
        |s, l| s.child(worker(l, tx)),
    )
}

/// Collects `n` Started events, in order, as (label, pid).
async fn started(rx: &mut Events, n: usize) -> Vec<(String, Pid)> {
    let mut out = Vec::new();
    while out.len() < n {
        if let Event::Started(l, p) = next(rx, "children to start").await {
            out.push((l, p));
        }
    }
    out
}

/// The next `n` lifecycle events (Started/Stopped), as short strings like "+a" / "-a".
async fn lifecycle(rx: &mut Events, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    while out.len() < n {
        match next(rx, "lifecycle events").await {
            Event::Started(l, _) => out.push(format!("+{l}")),
            Event::Stopped(l, _) => out.push(format!("-{l}")),
            _ => {}
        }
    }
    out
}

fn crash(rt: &Runtime, pid: Pid) {
    let r: ActorRef<Probe> = rt.actor_ref(pid).expect("child alive");
    r.send(Cmd::Fail("crash".into())).unwrap();
}

async fn children(sup: &ActorRef<Supervisor>) -> Vec<Option<Pid>> {
    Supervisor::which_children(sup)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.pid)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_for_one_restarts_only_the_failed_child() {
    let rt = Runtime::new();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let sup = Supervisor::start(&rt, spec(Strategy::OneForOne, &["a", "b", "c"], &tx));
    let first = started(&mut rx, 3).await;
    assert_eq!(
        first.iter().map(|(l, _)| l.as_str()).collect::<Vec<_>>(),
        ["a", "b", "c"]
    );
    crash(&rt, first[1].1);
    assert_eq!(lifecycle(&mut rx, 2).await, ["-b", "+b"]);
    let now = children(&sup).await;
    assert_eq!(now[0], Some(first[0].1));
    assert_ne!(now[1], Some(first[1].1));
    assert_eq!(now[2], Some(first[2].1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_for_all_stops_the_others_in_reverse_then_restarts_all_in_order() {
    let rt = Runtime::new();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let sup = Supervisor::start(&rt, spec(Strategy::OneForAll, &["a", "b", "c"], &tx));
    let first = started(&mut rx, 3).await;
    crash(&rt, first[1].1);
    assert_eq!(
        lifecycle(&mut rx, 6).await,
        ["-b", "-c", "-a", "+a", "+b", "+c"]
    );
    let now = children(&sup).await;
    for (old, new) in first.iter().zip(now) {
        assert_ne!(Some(old.1), new);
        assert!(!rt.is_alive(old.1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_for_one_restarts_the_failed_child_and_those_after_it() {
    let rt = Runtime::new();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let sup = Supervisor::start(&rt, spec(Strategy::RestForOne, &["a", "b", "c", "d"], &tx));
    let first = started(&mut rx, 4).await;
    crash(&rt, first[1].1);
    assert_eq!(
        lifecycle(&mut rx, 6).await,
        ["-b", "-d", "-c", "+b", "+c", "+d"]
    );
    let now = children(&sup).await;
    assert_eq!(now[0], Some(first[0].1), "a started before b is untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_policies_decide_what_comes_back() {
    let rt = Runtime::new();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (t1, t2) = (tx.clone(), tx.clone());
    let sup = Supervisor::start(
        &rt,
        SupervisorSpec::new(Strategy::OneForOne)
            .backoff(Backoff::none())
            .child(
                ChildSpec::worker("trans", move || Probe::new("trans", &t1))
                    .restart(Restart::Transient),
            )
            .child(
                ChildSpec::worker("temp", move || Probe::new("temp", &t2))
                    .restart(Restart::Temporary),
            ),
    );
    let first = started(&mut rx, 2).await;
    // Transient: an error exit restarts it...
    crash(&rt, first[0].1);
    let again = started(&mut rx, 1).await;
    assert_eq!(again[0].0, "trans");
    // ...a normal exit does not.
    let r: ActorRef<Probe> = rt.actor_ref(again[0].1).unwrap();
    let gone = rt.wait_exit(again[0].1);
    r.send(Cmd::Stop(ExitReason::Normal)).unwrap();
    within(gone).await;
    // Temporary: never restarted, and forgotten.
    let gone = rt.wait_exit(first[1].1);
    crash(&rt, first[1].1);
    within(gone).await;
    let list = Supervisor::which_children(&sup).await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].id, "trans");
    assert_eq!(list[0].pid, None);
    assert_eq!(list[0].restarts, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exceeding_the_intensity_fails_upward_to_the_parent_supervisor() {
    let rt = Runtime::new();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let inner_tx = tx.clone();
    let top = Supervisor::start(
        &rt,
        SupervisorSpec::new(Strategy::OneForOne)
            .backoff(Backoff::none())
            .child(ChildSpec::supervisor("inner", move || {
                SupervisorSpec::new(Strategy::OneForOne)
                    .backoff(Backoff::none())
                    .intensity(2, Duration::from_secs(60))
                    .child(worker("w", &inner_tx))
            })),
    );
    let inner = children(&top).await[0].expect("inner supervisor running");
    let mut w = started(&mut rx, 1).await[0].1;
    let inner_exit = rt.wait_exit(inner);
    // Two restarts are allowed; the third failure exceeds the intensity.
    for _ in 0..2 {
        crash(&rt, w);
        w = started(&mut rx, 1).await[0].1;
    }
    crash(&rt, w);
    match within(inner_exit).await {
        ExitReason::Error(text) => assert!(text.contains("restart intensity exceeded"), "{text}"),
        other => panic!("the inner supervisor should fail with an error, got {other}"),
    }
    // The top supervisor restarts the inner one, which starts its worker afresh.
    let w2 = started(&mut rx, 1).await[0].1;
    assert!(rt.is_alive(w2));
    let new_inner = children(&top).await[0].expect("inner supervisor restarted");
    assert_ne!(new_inner, inner);
    assert!(rt.is_alive(top.pid()));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn backoff_between_restarts_grows_and_is_capped() {
    let rt = Runtime::new();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let backoff = Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_millis(400),
        multiplier: 2.0,
        jitter: 0.0,
    };
    let _sup = Supervisor::start(
        &rt,
        SupervisorSpec::new(Strategy::OneForOne)
            .backoff(backoff)
            .intensity(100, Duration::from_secs(3600))
            .child(worker("w", &tx)),
    );
    let mut pid = started(&mut rx, 1).await[0].1;
    let mut gaps = Vec::new();
    for _ in 0..5 {
        let crashed_at = tokio::time::Instant::now();
        crash(&rt, pid);
        pid = started(&mut rx, 1).await[0].1;
        gaps.push(crashed_at.elapsed());
    }
    let expected = [100, 200, 400, 400, 400];
    for (gap, want) in gaps.iter().zip(expected) {
        let want = Duration::from_millis(want);
        assert!(
            *gap >= want && *gap < want + Duration::from_millis(20),
            "gaps {gaps:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_shutdown_stops_trees_in_reverse_order_and_leaves_nothing() {
    let rt = Runtime::new();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let inner_tx = tx.clone();
    let _sup = Supervisor::start(
        &rt,
        spec(Strategy::OneForOne, &["a", "b"], &tx).child(ChildSpec::supervisor(
            "inner",
            move || {
                SupervisorSpec::new(Strategy::OneForOne)
                    .child(worker("c", &inner_tx))
                    .child(worker("d", &inner_tx))
            },
        )),
    );
    started(&mut rx, 4).await;
    // Loose processes too, one of them stuck in a callback so it must be killed.
    let loose = rt.spawn(Probe::new("loose", &tx));
    let stuck = rt.spawn(Probe::new("stuck", &tx).trapping());
    stuck.send(Cmd::Hang).unwrap();
    started(&mut rx, 2).await;
    assert_eq!(rt.process_count(), 8);

    // Long enough for the tree on a loaded machine; the stuck process is killed after it.
    rt.shutdown(Duration::from_secs(2)).await;
    assert_eq!(rt.process_count(), 0);
    assert!(rt.processes().is_empty());
    let _ = loose;
    let mut stops = Vec::new();
    while let Ok(e) = rx.try_recv() {
        if let Event::Stopped(l, reason) = e {
            assert_eq!(reason, ExitReason::Shutdown);
            stops.push(l);
        }
    }
    assert_eq!(
        stops,
        ["d", "c", "b", "a"],
        "children stop in reverse start order"
    );
}

/// Starts a supervisor monitored from its first moment and reports how it exited (a
/// supervisor that fails in `started` may be gone before `wait_exit` could be asked).
struct Monitoring(Option<SupervisorSpec>, mpsc::UnboundedSender<ExitReason>);

impl atoll_actor::Actor for Monitoring {
    type Msg = ();

    async fn started(&mut self, ctx: &mut atoll_actor::Ctx<Self>) -> atoll_actor::ActorResult {
        if let Some(spec) = self.0.take() {
            ctx.spawn_monitor(Supervisor::new(spec));
        }
        Ok(())
    }

    async fn handle(&mut self, _: (), _: &mut atoll_actor::Ctx<Self>) -> atoll_actor::ActorResult {
        Ok(())
    }

    async fn handle_down(
        &mut self,
        down: atoll_actor::Down,
        _: &mut atoll_actor::Ctx<Self>,
    ) -> atoll_actor::ActorResult {
        let _ = self.1.send(down.reason);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_child_ids_are_refused() {
    let rt = Runtime::new();
    let (tx, _rx) = mpsc::unbounded_channel();
    let (exits, mut exited) = mpsc::unbounded_channel();
    let parent = rt.spawn(Monitoring(
        Some(spec(Strategy::OneForOne, &["a", "a"], &tx)),
        exits,
    ));
    let reason = tokio::time::timeout(Duration::from_secs(20), exited.recv())
        .await
        .expect("the supervisor exits")
        .expect("the monitor reports it");
    match reason {
        ExitReason::Error(text) => assert!(text.contains("duplicate child id"), "{text}"),
        other => panic!("expected an error, got {other}"),
    }
    rt.kill(parent.pid());
    eventually("no process left", || rt.process_count() == 0).await;
}
