//! Process groups across nodes over real QUIC: joins and leaves spread, broadcasts reach
//! every member, exits and lost nodes take their members along, and after a reconnection
//! only the living come back.

mod common;

use atoll_actor::{Actor, ActorResult, Ctx, Decoder, Pid, serde_decoder};
use atoll_cluster::{GroupJoinError, Node};
use common::*;
use tokio::sync::mpsc;

/// A room member: reports every line it gets.
struct Member {
    heard: mpsc::UnboundedSender<(Pid, String)>,
}

impl Actor for Member {
    type Msg = String;

    fn remote_decoder() -> Option<Decoder<String>> {
        serde_decoder()
    }

    async fn handle(&mut self, line: String, ctx: &mut Ctx<Self>) -> ActorResult {
        let _ = self.heard.send((ctx.pid(), line));
        Ok(())
    }
}

fn member(node: &Node, heard: &mpsc::UnboundedSender<(Pid, String)>) -> Pid {
    node.runtime()
        .spawn(Member {
            heard: heard.clone(),
        })
        .pid()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_spread_broadcast_and_forget_the_dead() {
    init_logs();
    let cluster = Cluster::new();
    let (a, b, c) = (cluster.node("a"), cluster.node("b"), cluster.node("c"));
    a.connect(b.local_addr()).await.unwrap();
    a.connect(c.local_addr()).await.unwrap();
    b.connect(c.local_addr()).await.unwrap();

    let (tx, mut heard) = mpsc::unbounded_channel();
    let pa = member(&a, &tx);
    let pb = member(&b, &tx);
    let pc1 = member(&c, &tx);
    let pc2 = member(&c, &tx);
    a.join_group("room", pa).unwrap();
    b.join_group("room", pb).unwrap();
    c.join_group("room", pc1).unwrap();
    c.join_group("room", pc2).unwrap();
    c.join_group("other", pc2).unwrap();
    assert_eq!(
        a.join_group("room", pb),
        Err(GroupJoinError::NotLocal(pb)),
        "a node joins only its own processes"
    );
    assert_eq!(a.join_group("", pa), Err(GroupJoinError::BadName(0)));

    let mut everyone = vec![pa, pb, pc1, pc2];
    everyone.sort();
    for n in [&a, &b, &c] {
        eventually("every node sees the whole room", || {
            n.group_members("room") == everyone
        })
        .await;
    }
    assert_eq!(c.local_group_members("room"), {
        let mut v = vec![pc1, pc2];
        v.sort();
        v
    });
    // c's join of "other" follows its joins of "room" on the same stream: it may land just
    // after the room looked whole.
    eventually("a knows both groups", || a.groups() == ["other", "room"]).await;

    // A broadcast from any node reaches every member once.
    assert_eq!(b.broadcast_group::<Member>("room", "hello".into()), 4);
    let mut got = Vec::new();
    for _ in 0..4 {
        let (pid, line) = tokio::time::timeout(DEADLINE, heard.recv())
            .await
            .expect("a member heard the broadcast")
            .unwrap();
        assert_eq!(line, "hello");
        got.push(pid);
    }
    got.sort();
    assert_eq!(got, everyone);

    // Leaving and exiting spread.
    assert!(b.leave_group("room", pb));
    assert!(!b.leave_group("room", pb));
    c.runtime().kill(pc2);
    let remaining = {
        let mut v = vec![pa, pc1];
        v.sort();
        v
    };
    for n in [&a, &b, &c] {
        eventually("leave and exit seen everywhere", || {
            n.group_members("room") == remaining && !n.groups().contains(&"other".to_string())
        })
        .await;
    }

    // c is cut off; while it is away one of its members dies. After reconnecting only the
    // living member comes back.
    let pc3 = member(&c, &tx);
    c.join_group("room", pc3).unwrap();
    eventually("a sees pc3", || a.group_members("room").contains(&pc3)).await;
    a.disconnect(c.id());
    b.disconnect(c.id());
    c.disconnect(a.id());
    c.disconnect(b.id());
    eventually("c's members gone from a", || {
        a.group_members("room") == vec![pa]
    })
    .await;
    eventually("c's members gone from b", || {
        b.group_members("room") == vec![pa]
    })
    .await;
    c.runtime().kill(pc1);
    eventually("pc1 dead", || !c.runtime().is_alive(pc1)).await;
    a.connect(c.local_addr()).await.unwrap();
    b.connect(c.local_addr()).await.unwrap();
    let mut healed = vec![pa, pc3];
    healed.sort();
    for n in [&a, &b] {
        eventually("only the living come back", || {
            n.group_members("room") == healed
        })
        .await;
    }
    assert!(!a.group_members("room").contains(&pc1));
}
