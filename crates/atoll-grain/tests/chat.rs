//! Chat rooms as grains on real nodes (three Raft voters over QUIC on loopback): members
//! on every node hear one ordered history, a member that goes away is dropped, and a room
//! keeps its history and its members across idle deactivation and the loss of its host,
//! dropping a member that went away while it was inactive.

mod common;

use std::time::Duration;

use atoll_actor::ActorRef;
use atoll_cluster::chat::{Member, MemberMsg};
use atoll_grain::chat::{ChatMsg, ChatReply, ChatRoom};
use atoll_grain::{GrainId, GrainsConfig};
use common::*;

const T: Duration = Duration::from_secs(20);

fn config(idle: Option<Duration>) -> impl Fn(usize, &std::path::Path) -> GrainsConfig {
    move |_, dir| {
        let mut config = GrainsConfig::default().with_store(open_store(&dir.join("grains.redb")));
        config.idle_timeout = idle;
        config.call_timeout = T;
        // One copy besides the host's: two survivors of three still store lines.
        config.replicas = 1;
        config
    }
}

fn register(setup: &Setup) {
    for h in &setup.hosts {
        h.grains.register(ChatRoom::new).unwrap();
    }
}

fn member(h: &Host) -> ActorRef<Member> {
    let node = h.node().clone();
    h.run(move |_| async move { node.runtime().spawn(Member::default()) })
}

fn room(h: &Host, key: &'static str, msg: ChatMsg) -> ChatReply {
    h.run(move |g| async move { g.get::<ChatRoom>(key)?.call(msg).await })
        .unwrap_or_else(|e| panic!("room {key}: {e}"))
}

fn join(h: &Host, key: &'static str, nick: &str, m: &ActorRef<Member>) -> Vec<String> {
    let msg = ChatMsg::Join {
        nick: nick.into(),
        member: m.pid(),
    };
    match room(h, key, msg) {
        ChatReply::Joined(present) => present,
        other => panic!("join: {other:?}"),
    }
}

fn post(h: &Host, key: &'static str, nick: &str, text: &str) -> u64 {
    let msg = ChatMsg::Post {
        nick: nick.into(),
        text: text.into(),
    };
    match room(h, key, msg) {
        ChatReply::Posted { seq, stored: true } => seq,
        other => panic!("post: {other:?}"),
    }
}

fn history(h: &Host, key: &'static str) -> Vec<String> {
    match room(h, key, ChatMsg::History { last: 100 }) {
        ChatReply::History(lines) => lines
            .iter()
            .map(|l| format!("#{} {}: {}", l.seq, l.from, l.text))
            .collect(),
        other => panic!("history: {other:?}"),
    }
}

fn heard(h: &Host, m: &ActorRef<Member>) -> Vec<String> {
    let m = m.clone();
    h.run(move |_| async move { m.call(MemberMsg::Heard, T).await })
        .unwrap()
}

/// The lines (not the notices) `m` has heard, once it has heard `n` of them.
fn lines_heard(h: &Host, m: &ActorRef<Member>, n: usize) -> Vec<String> {
    let mut lines = Vec::new();
    wait_until(&format!("{n} lines heard"), || {
        lines = heard(h, m)
            .into_iter()
            .filter(|l| l.starts_with('#'))
            .collect();
        lines.len() >= n
    });
    lines
}

#[test]
fn members_on_every_node_hear_one_ordered_history_and_a_dead_member_leaves() {
    let _serial = serial();
    init_logs();
    let setup = start_cluster(config(None));
    register(&setup);
    let [n0, n1, n2] = [&setup.hosts[0], &setup.hosts[1], &setup.hosts[2]];
    let (ann, bob, cat) = (member(n0), member(n1), member(n2));
    assert_eq!(join(n0, "lobby", "ann", &ann), ["ann"]);
    assert_eq!(join(n1, "lobby", "bob", &bob), ["ann", "bob"]);
    assert_eq!(join(n2, "lobby", "cat", &cat), ["ann", "bob", "cat"]);

    // Two nodes post at once, each from a task of its own.
    let posting = |h: &Host, nick: &'static str| {
        h.spawn(move |g| async move {
            let room = g.get::<ChatRoom>("lobby").unwrap();
            let mut seqs = Vec::new();
            for i in 0..5 {
                let text = format!("{nick} {i}");
                match room
                    .call(ChatMsg::Post {
                        nick: nick.into(),
                        text,
                    })
                    .await
                {
                    Ok(ChatReply::Posted { seq, stored: true }) => seqs.push(seq),
                    other => panic!("post: {other:?}"),
                }
            }
            seqs
        })
    };
    let (a, b) = (posting(n0, "ann"), posting(n1, "bob"));
    let (a, b) = (n0.join(a), n1.join(b));
    assert!(a.windows(2).all(|w| w[0] < w[1]), "{a:?}");
    assert!(b.windows(2).all(|w| w[0] < w[1]), "{b:?}");
    let mut all: Vec<u64> = a.iter().chain(&b).copied().collect();
    all.sort();
    assert_eq!(
        all,
        (1..=10).collect::<Vec<_>>(),
        "every line numbered once"
    );

    let history = history(n2, "lobby");
    assert_eq!(history.len(), 10);
    for (i, line) in history.iter().enumerate() {
        assert!(line.starts_with(&format!("#{} ", i + 1)), "{history:?}");
    }
    for nick in ["ann", "bob"] {
        let own: Vec<&String> = history
            .iter()
            .filter(|l| l.contains(&format!(" {nick}: ")))
            .collect();
        let texts: Vec<String> = own
            .iter()
            .map(|l| l.rsplit(": ").next().unwrap().to_string())
            .collect();
        assert_eq!(
            texts,
            (0..5).map(|i| format!("{nick} {i}")).collect::<Vec<_>>()
        );
    }
    for (h, m) in [(n0, &ann), (n1, &bob), (n2, &cat)] {
        assert_eq!(
            lines_heard(h, m, 10),
            history,
            "each member hears the history"
        );
    }
    let notices: Vec<String> = heard(n0, &ann)
        .into_iter()
        .filter(|l| l.starts_with('*'))
        .collect();
    assert_eq!(notices, ["* bob joined lobby", "* cat joined lobby"]);

    // cat's process ends without leaving: the room drops it and tells the others.
    n2.kill_process(cat.pid());
    wait_until("cat dropped from the room", || {
        room(n1, "lobby", ChatMsg::Members) == ChatReply::Members(vec!["ann".into(), "bob".into()])
    });
    wait_until("ann told that cat left", || {
        heard(n0, &ann)
            .iter()
            .any(|l| l.starts_with("* cat left lobby ("))
    });
    // A member that leaves is told no more.
    assert_eq!(
        room(n1, "lobby", ChatMsg::Leave { member: bob.pid() }),
        ChatReply::Left(true)
    );
    assert_eq!(post(n0, "lobby", "ann", "anyone?"), 11);
    assert_eq!(
        lines_heard(n0, &ann, 11).last().unwrap(),
        "#11 ann: anyone?"
    );
    assert_eq!(lines_heard(n1, &bob, 10).len(), 10, "bob hears no more");
}

#[test]
fn a_room_keeps_history_and_members_across_idle_deactivation_and_the_loss_of_its_host() {
    let _serial = serial();
    init_logs();
    let mut setup = start_cluster(config(Some(Duration::from_millis(1500))));
    register(&setup);
    let id = GrainId::new("chat_room", "attic");
    let ann = member(&setup.hosts[0]);
    join(&setup.hosts[0], "attic", "ann", &ann);
    let dee = member(&setup.hosts[1]);
    join(&setup.hosts[1], "attic", "dee", &dee);
    for text in ["one", "two", "three"] {
        post(&setup.hosts[0], "attic", "ann", text);
    }
    let before = history(&setup.hosts[1], "attic");
    assert_eq!(before.len(), 3);

    wait_until("the room deactivated for idleness", || {
        setup.hosts.iter().all(|h| h.grains.active().is_empty())
            && setup
                .hosts
                .iter()
                .map(|h| h.grains.stats().deactivations)
                .sum::<u64>()
                >= 1
    });
    // dee goes away while no activation watches it.
    setup.hosts[1].kill_process(dee.pid());
    // Reactivated by the next call, from any node: the history is there, the member that
    // went away meanwhile is dropped, and the one in the state still hears new lines.
    assert_eq!(history(&setup.hosts[2], "attic"), before);
    wait_until("dee dropped by the new activation", || {
        room(&setup.hosts[2], "attic", ChatMsg::Members) == ChatReply::Members(vec!["ann".into()])
    });
    wait_until("ann told that dee left", || {
        heard(&setup.hosts[0], &ann)
            .iter()
            .any(|l| l.starts_with("* dee left attic ("))
    });
    assert_eq!(post(&setup.hosts[1], "attic", "bob", "four"), 4);
    assert_eq!(lines_heard(&setup.hosts[0], &ann, 4)[3], "#4 bob: four");

    // The host of the room is lost (moved off ann's node first, so ann survives it).
    let ann_node = setup.hosts[0].id();
    let to = setup.hosts[1].id();
    let victim = loop {
        let at = setup.hosts[2].run(|g| async move {
            g.get::<ChatRoom>("attic")?.call(ChatMsg::Members).await?;
            Ok::<_, atoll_grain::GrainError>(g.cached(&GrainId::new("chat_room", "attic")))
        });
        let at = at.unwrap().expect("just called").pid.node;
        if at != ann_node {
            break setup.hosts.iter().position(|h| h.id() == at).unwrap();
        }
        // A move that fails (the room went idle meanwhile) is tried again.
        let _ = setup.hosts[0]
            .run(move |g| async move { g.migrate(&GrainId::new("chat_room", "attic"), to).await });
    };
    let lost = setup.hosts[victim].id();
    setup.hosts.remove(victim).kill();
    let survivors = &setup.hosts;
    wait_until("the survivors declare the host lost", || {
        survivors.iter().all(|h| {
            let swim = h.node().membership().unwrap();
            swim.members()
                .iter()
                .all(|m| m.identity.node != lost || !m.state.is_live())
        })
    });
    let after = history(&survivors[1], "attic");
    assert_eq!(after.len(), 4, "every acknowledged line: {after:?}");
    assert_eq!(after[..3], before[..]);
    assert_eq!(post(&survivors[1], "attic", "bob", "five"), 5);
    assert_eq!(lines_heard(&survivors[0], &ann, 5)[4], "#5 bob: five");
    let now = survivors[0].grains.registered(&id).unwrap();
    assert_ne!(now.pid.node, lost);
}
