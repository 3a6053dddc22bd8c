//! Several nodes in one process, on loopback, over real QUIC and TLS.

mod common;

use std::time::Duration;

use atoll_actor::{
    Actor, ActorResult, CallError, Ctx, Decoder, ExitReason, ReplyTo, SendError, serde_decoder,
};
use atoll_cluster::{ClusterSendError, NameLost, RpcError};
use atoll_core::Scope;
use atoll_wire::RemoteError;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_flow_by_handle_and_by_node_name_in_both_directions() {
    init_logs();
    let cluster = Cluster::new();
    let (a, b) = (cluster.node("alpha"), cluster.node("beta"));
    let remote_b = a.connect(b.local_addr()).await.unwrap();
    assert_eq!(remote_b.name(), "beta");
    assert_eq!(remote_b.id(), b.id());
    eventually("beta sees alpha", || b.remote("alpha").is_some()).await;

    let (pa, mut seen_a) = probe(&a);
    let (pb, mut seen_b) = probe(&b);
    b.runtime().register("greeter", pb.pid()).unwrap();
    a.runtime().register("greeter", pa.pid()).unwrap();

    // By node and name, both ways over the one connection.
    a.send::<Probe>("beta", "greeter", ProbeMsg::Text("hi beta".into()))
        .unwrap();
    b.send::<Probe>("alpha", "greeter", ProbeMsg::Text("hi alpha".into()))
        .unwrap();
    assert_eq!(
        next(&mut seen_b, "by name").await,
        Seen::Text("hi beta".into())
    );
    assert_eq!(
        next(&mut seen_a, "by name").await,
        Seen::Text("hi alpha".into())
    );

    // By handle: a remote ActorRef, typed, and a pid inside the message survives.
    let to_b = a.actor_ref::<Probe>(pb.pid()).unwrap();
    assert!(!to_b.is_local());
    to_b.send(ProbeMsg::Pid(pa.pid())).unwrap();
    assert_eq!(next(&mut seen_b, "a pid").await, Seen::Pid(pa.pid()));

    // Ordering per process: many messages arrive in order.
    for i in 0..200 {
        to_b.send(ProbeMsg::Text(i.to_string())).unwrap();
    }
    for i in 0..200 {
        assert_eq!(
            next(&mut seen_b, "ordered").await,
            Seen::Text(i.to_string())
        );
    }

    // Local fast path: a local pid gives a local reference.
    assert!(a.actor_ref::<Probe>(pa.pid()).unwrap().is_local());
    assert_eq!(a.peers().len(), 1);

    // Unknown node and unknown name are typed errors that hand the message back.
    match a.send::<Probe>("gamma", "greeter", ProbeMsg::Text("x".into())) {
        Err(ClusterSendError::UnknownNode {
            node,
            msg: ProbeMsg::Text(t),
        }) => {
            assert_eq!((node.as_str(), t.as_str()), ("gamma", "x"))
        }
        other => panic!("expected UnknownNode, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_calls_reply_and_reply_handles_travel_on() {
    init_logs();
    let cluster = Cluster::new();
    let (a, b, c) = (cluster.node("a"), cluster.node("b"), cluster.node("c"));
    a.connect(b.local_addr()).await.unwrap();
    b.connect(c.local_addr()).await.unwrap();
    let (pb, _) = probe(&b);
    let (pc, _) = probe(&c);

    let to_b = a.actor_ref::<Probe>(pb.pid()).unwrap();
    let sum = to_b
        .call(|r| ProbeMsg::Add(40, 2, r), DEADLINE)
        .await
        .unwrap();
    assert_eq!(sum, 42);

    // b forwards a's reply handle to c, which answers a directly... a and c are not
    // connected, so c's answer goes nowhere; connect them and it arrives.
    c.connect(a.local_addr()).await.unwrap();
    let to_c_from_b = b.actor_ref::<Probe>(pc.pid()).unwrap();
    let to_c = a.actor_ref::<Probe>(pc.pid()).unwrap();
    assert!(!to_c.is_local());
    let n = to_b
        .call(
            |r| ProbeMsg::Forward(b_ref_for_a(&a, &to_c_from_b), 9, r),
            DEADLINE,
        )
        .await
        .unwrap();
    assert_eq!(n, 10);
}

/// Keeps every reply handle it is sent, and never answers.
struct Hoarder(Vec<ReplyTo<u64>>);

impl Actor for Hoarder {
    type Msg = ReplyTo<u64>;

    fn remote_decoder() -> Option<Decoder<ReplyTo<u64>>> {
        serde_decoder()
    }

    async fn handle(&mut self, reply: ReplyTo<u64>, _: &mut Ctx<Self>) -> ActorResult {
        self.0.push(reply);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_call_nobody_answers_ends_at_its_deadline_and_leaves_nothing_parked() {
    init_logs();
    let cluster = Cluster::new();
    let (a, b) = (cluster.node("a"), cluster.node("b"));
    a.connect(b.local_addr()).await.unwrap();
    let hoarder = b.runtime().spawn(Hoarder(Vec::new()));
    let to_b = a.actor_ref::<Hoarder>(hoarder.pid()).unwrap();
    let calls: Vec<_> = (0..20u64)
        .map(|i| {
            let to_b = to_b.clone();
            // Deadlines out of order: each call ends at its own.
            let wait = Duration::from_millis(100 + (i * 7919) % 400);
            tokio::spawn(async move {
                let started = tokio::time::Instant::now();
                let answer = to_b.call(|reply| reply, wait).await;
                (answer, started.elapsed() >= wait)
            })
        })
        .collect();
    for call in calls {
        let (answer, waited) = call.await.unwrap();
        assert_eq!(answer, Err(CallError::Timeout));
        assert!(waited, "a call ended before its deadline");
    }
    assert_eq!(a.runtime().waiting_replies(), 0);

    // A call whose peer goes away ends at once with no reply, not at its deadline.
    let call = tokio::spawn({
        let to_b = to_b.clone();
        async move { to_b.call(|reply| reply, DEADLINE).await }
    });
    eventually("the call is parked", || a.runtime().waiting_replies() == 1).await;
    b.shutdown(Duration::from_millis(200)).await;
    assert_eq!(call.await.unwrap(), Err(CallError::NoReply));
    assert_eq!(a.runtime().waiting_replies(), 0);
}

/// An ActorRef to c's process as a sends it inside a message to b.
fn b_ref_for_a(
    a: &atoll_cluster::Node,
    r: &atoll_actor::ActorRef<Probe>,
) -> atoll_actor::ActorRef<Probe> {
    a.actor_ref::<Probe>(r.pid()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_names_reach_peers_on_connect_and_late_and_go_with_their_owner() {
    init_logs();
    let cluster = Cluster::new();
    let (a, b) = (cluster.node("a"), cluster.node("b"));
    let (early, _) = probe(&a);
    a.register_global("early", early.pid()).unwrap();
    assert!(a.register_global("early", early.pid()).is_err());

    b.connect(a.local_addr()).await.unwrap();
    eventually("b learns the early name on connect", || {
        b.whereis_global("early") == Some(early.pid())
    })
    .await;

    let (late, mut seen_late) = probe(&a);
    a.register_global("late", late.pid()).unwrap();
    eventually("b learns the late name", || {
        b.whereis_global("late") == Some(late.pid())
    })
    .await;
    b.send_global::<Probe>("late", ProbeMsg::Text("via global".into()))
        .unwrap();
    assert_eq!(
        next(&mut seen_late, "global send").await,
        Seen::Text("via global".into())
    );

    // The name goes when its owner exits.
    let gone = a.runtime().wait_exit(late.pid());
    late.send(ProbeMsg::Fail("bye".into())).unwrap();
    gone.await;
    eventually("b forgets the late name", || {
        b.whereis_global("late").is_none()
    })
    .await;
    assert!(matches!(
        b.send_global::<Probe>("late", ProbeMsg::Text("x".into())),
        Err(ClusterSendError::NotRegistered { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eventual_name_claimed_on_both_sides_of_a_split_has_one_winner_and_the_loser_is_told() {
    init_logs();
    let cluster = Cluster::new();
    let (a, b) = (cluster.node("a"), cluster.node("b"));
    // Not connected: each side takes the name.
    let (on_a, mut seen_a) = probe(&a);
    let (on_b, mut seen_b) = probe(&b);
    for (node, pid) in [(&a, on_a.pid()), (&b, on_b.pid())] {
        node.notify_name_lost::<Probe>(pid).unwrap();
        node.register("svc", pid, Scope::Eventual).await.unwrap();
        assert_eq!(node.whereis("svc"), Some(pid));
    }

    a.connect(b.local_addr()).await.unwrap();
    let (winner, loser) = if on_a.pid() < on_b.pid() {
        (on_a.pid(), on_b.pid())
    } else {
        (on_b.pid(), on_a.pid())
    };
    eventually("both nodes resolve the name to the smaller pid", || {
        a.whereis("svc") == Some(winner) && b.whereis("svc") == Some(winner)
    })
    .await;
    let loser_seen = if loser == on_a.pid() {
        &mut seen_a
    } else {
        &mut seen_b
    };
    assert_eq!(
        next(loser_seen, "the loser's notification").await,
        Seen::NameLost(NameLost {
            name: "svc".into(),
            winner
        })
    );
    // The loser is told, not stopped; the winner hears nothing.
    assert!(a.runtime().is_alive(loser) || b.runtime().is_alive(loser));
    let winner_seen = if winner == on_a.pid() {
        &mut seen_a
    } else {
        &mut seen_b
    };
    assert!(winner_seen.try_recv().is_err());
    assert_eq!(a.globals(), vec![("svc".to_string(), winner)]);
    assert_eq!(b.globals(), vec![("svc".to_string(), winner)]);

    // A third node that meets both later sees only the winner.
    let c = cluster.node("c");
    c.connect(a.local_addr()).await.unwrap();
    c.connect(b.local_addr()).await.unwrap();
    eventually("c resolves the name to the winner", || {
        c.whereis("svc") == Some(winner)
    })
    .await;

    // The winner exits: the name goes everywhere (the loser does not get it back).
    let host = if winner.node == a.id() { &a } else { &b };
    host.actor_ref::<Probe>(winner)
        .unwrap()
        .send(ProbeMsg::Fail("bye".into()))
        .unwrap();
    eventually("the name is gone on every node", || {
        [&a, &b, &c].iter().all(|n| n.whereis("svc").is_none())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_spawn_runs_registered_factories_only_and_live_attach_lists_processes() {
    init_logs();
    let cluster = Cluster::new();
    let (a, b) = (cluster.node("a"), cluster.node("b"));
    let (sink, mut seen) = probe(&a);
    let sink_pid = sink.pid();
    b.register_spawnable("echoer", move |greeting: String| {
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        // The spawned probe greets the sink on a as its first act.
        let _ = greeting;
        Probe {
            seen: tx,
            trap: false,
        }
    });
    let remote_b = a.connect(b.local_addr()).await.unwrap();

    let pid = remote_b
        .spawn("echoer", &"hello".to_string())
        .await
        .unwrap();
    assert_eq!(pid.node, b.id());
    assert!(b.runtime().is_alive(pid));
    let spawned = a.actor_ref::<Probe>(pid).unwrap();
    assert_eq!(
        spawned.call(|r| ProbeMsg::Add(1, 1, r), DEADLINE).await,
        Ok(2)
    );
    let _ = (sink_pid, &mut seen);

    match remote_b.spawn("nope", &()).await {
        Err(RpcError::Remote(RemoteError::UnknownFactory(f))) => assert_eq!(f, "nope"),
        other => panic!("expected UnknownFactory, got {other:?}"),
    }

    b.runtime().register("named", pid).unwrap();
    let list = remote_b.processes().await.unwrap();
    let entry = list
        .iter()
        .find(|p| p.pid == pid)
        .expect("spawned process listed");
    assert_eq!(entry.name.as_deref(), Some("named"));
    assert!(entry.actor_type.ends_with("Probe"));
    assert_eq!(entry.messages_handled, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_and_monitors_cross_nodes_and_break_with_noconnection() {
    init_logs();
    let cluster = Cluster::new();
    let (a, b) = (cluster.node("a"), cluster.node("b"));
    a.connect(b.local_addr()).await.unwrap();
    let (watcher, mut seen) = trapping_probe(&a);
    let (target, _) = probe(&b);
    let (victim, _) = probe(&b);

    // A monitor across nodes fires with the real reason.
    watcher.send(ProbeMsg::Monitor(victim.pid())).unwrap();
    eventually("b records the remote monitor", || {
        b.runtime()
            .process_info(victim.pid())
            .is_some_and(|i| i.monitored_by == vec![watcher.pid()])
    })
    .await;
    victim.send(ProbeMsg::Fail("remote crash".into())).unwrap();
    match next(&mut seen, "remote down").await {
        Seen::Down(d) => {
            assert_eq!(d.pid, victim.pid());
            assert_eq!(d.reason, ExitReason::error("remote crash"));
        }
        other => panic!("expected a Down, got {other:?}"),
    }

    // Monitor and link the target, then lose b: both fire with NoConnection.
    watcher.send(ProbeMsg::Monitor(target.pid())).unwrap();
    watcher.send(ProbeMsg::Link(target.pid())).unwrap();
    eventually("b records link and monitor", || {
        b.runtime().process_info(target.pid()).is_some_and(|i| {
            i.links == vec![watcher.pid()] && i.monitored_by == vec![watcher.pid()]
        })
    })
    .await;
    let to_target = a.actor_ref::<Probe>(target.pid()).unwrap();
    b.shutdown(std::time::Duration::from_secs(1)).await;
    let mut got = Vec::new();
    while got.len() < 2 {
        got.push(next(&mut seen, "noconnection").await);
    }
    assert!(
        got.iter()
            .any(|s| matches!(s, Seen::Down(d) if d.pid == target.pid())),
        "{got:?}"
    );
    for s in &got {
        match s {
            Seen::Down(d) => assert!(
                d.reason == ExitReason::NoConnection || d.reason == ExitReason::Shutdown,
                "{got:?}"
            ),
            Seen::Exit(from, reason) => {
                assert_eq!(*from, target.pid());
                assert!(*reason == ExitReason::NoConnection || *reason == ExitReason::Shutdown);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    eventually("a forgets b", || a.peers().is_empty()).await;
    assert!(matches!(
        to_target.send(ProbeMsg::Text("x".into())),
        Err(SendError::NoConnection(_))
    ));
    assert_eq!(
        to_target.call(|r| ProbeMsg::Add(1, 2, r), DEADLINE).await,
        Err(CallError::NoConnection)
    );
    // Refused before encoding: the call's reply handle was never parked.
    assert_eq!(a.runtime().waiting_replies(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagrams_reach_the_peer_and_oversized_ones_are_refused() {
    init_logs();
    let cluster = Cluster::new();
    let (a, b) = (cluster.node("a"), cluster.node("b"));
    let mut inbox = b.datagrams(16);
    a.connect(b.local_addr()).await.unwrap();
    let max = a.max_datagram_size(b.id()).expect("datagrams on");
    assert!(max > 1000, "{max}");
    // Datagrams may be lost: send until one arrives.
    let got = tokio::time::timeout(DEADLINE, async {
        loop {
            a.send_datagram(b.id(), bytes::Bytes::from_static(b"ping"))
                .unwrap();
            if let Ok(Some(d)) =
                tokio::time::timeout(std::time::Duration::from_millis(50), inbox.recv()).await
            {
                return d;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(got, (a.id(), bytes::Bytes::from_static(b"ping")));
    assert_eq!(
        a.send_datagram(b.id(), bytes::Bytes::from(vec![0u8; 64 * 1024])),
        Err(atoll_cluster::DatagramError::TooLarge)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_connects_leave_one_connection_that_carries_both_ways() {
    init_logs();
    let cluster = Cluster::new();
    for _ in 0..5 {
        let (a, b) = (cluster.node("a"), cluster.node("b"));
        let (ab, ba) = tokio::join!(a.connect(b.local_addr()), b.connect(a.local_addr()));
        let (ab, ba) = (ab.unwrap(), ba.unwrap());
        assert_eq!((ab.id(), ba.id()), (b.id(), a.id()));
        eventually("one peer each", || {
            a.peers().len() == 1 && b.peers().len() == 1
        })
        .await;
        let (pa, mut seen_a) = probe(&a);
        let (pb, mut seen_b) = probe(&b);
        b.actor_ref::<Probe>(pa.pid())
            .unwrap()
            .send(ProbeMsg::Text("to a".into()))
            .unwrap();
        a.actor_ref::<Probe>(pb.pid())
            .unwrap()
            .send(ProbeMsg::Text("to b".into()))
            .unwrap();
        assert_eq!(
            next(&mut seen_a, "a's message").await,
            Seen::Text("to a".into())
        );
        assert_eq!(
            next(&mut seen_b, "b's message").await,
            Seen::Text("to b".into())
        );
        a.shutdown(std::time::Duration::from_secs(1)).await;
        b.shutdown(std::time::Duration::from_secs(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_to_a_known_node_reopens_its_connection_on_demand() {
    init_logs();
    let cluster = Cluster::new();
    let (a, b) = (cluster.node("a"), cluster.node("b"));
    a.connect(b.local_addr()).await.unwrap();
    let (pb, mut seen) = probe(&b);
    let to_b = a.actor_ref::<Probe>(pb.pid()).unwrap();
    assert!(a.disconnect(b.id()));
    eventually("both sides forget the connection", || {
        a.peers().is_empty() && b.peers().is_empty()
    })
    .await;
    // Messages sent while the connection reopens wait for it, in order.
    for i in 0..50 {
        to_b.send(ProbeMsg::Text(i.to_string())).unwrap();
    }
    for i in 0..50 {
        assert_eq!(
            next(&mut seen, "after reconnect").await,
            Seen::Text(i.to_string())
        );
    }
    assert_eq!(to_b.call(|r| ProbeMsg::Add(2, 3, r), DEADLINE).await, Ok(5));
    assert_eq!(a.peers().len(), 1);
}
