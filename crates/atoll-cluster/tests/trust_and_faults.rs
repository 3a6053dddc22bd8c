//! Who gets in, and what bad input and lost peers do to a node.

mod common;

use std::time::Duration;

use atoll_actor::ExitReason;
use atoll_cluster::{ConnectError, Node, NodeConfig};
use atoll_net::NodeIdentity;
use atoll_wire::{Control, Data, Hello, encode_frame};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_of_another_cluster_is_refused_at_the_handshake() {
    init_logs();
    let ours = Cluster::new();
    let theirs = Cluster::new();
    let a = ours.node("a");
    let stranger = theirs.node("stranger");
    let err = stranger.connect(a.local_addr()).await.unwrap_err();
    assert!(
        matches!(
            err,
            ConnectError::Connection(_) | ConnectError::Handshake(_)
        ),
        "{err}"
    );
    assert!(a.peers().is_empty());
    // The node keeps serving its own cluster.
    let b = ours.node("b");
    b.connect(a.local_addr()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_node_is_refused() {
    init_logs();
    let cluster = Cluster::new();
    let a = cluster.node("a");
    let key = NodeIdentity::generate().unwrap();
    let id = key.node_id();
    let b = Node::start(cluster.config_with_key("b", key)).unwrap();
    b.connect(a.local_addr()).await.unwrap();
    b.shutdown(Duration::from_secs(1)).await;
    eventually("a forgets b", || a.peers().is_empty()).await;

    cluster.revoked.revoke(id);
    let b2 = Node::start(cluster.config("b2")).unwrap();
    b2.connect(a.local_addr()).await.unwrap();
    // A fresh node with the revoked id cannot come back.
    let revoked = Node::start(revoked_config(&cluster, id)).unwrap();
    assert!(revoked.connect(a.local_addr()).await.is_err());
    assert!(a.peers().iter().all(|p| p.id != id));
}

/// A config whose certificate claims `id` though its key is another: only constructible
/// through the CA's test hook, and refused like a revoked or forged node.
fn revoked_config(cluster: &Cluster, id: atoll_core::NodeId) -> NodeConfig {
    let key = NodeIdentity::generate().unwrap();
    let cert = cluster
        .ca
        .issue_with_claimed_node_id("forged", &key.public_key(), id)
        .unwrap();
    NodeConfig::with_ca(
        "forged",
        "127.0.0.1:0".parse().unwrap(),
        key,
        cert,
        cluster.ca.trust(cluster.revoked.clone()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_claiming_another_node_id_is_refused() {
    init_logs();
    let cluster = Cluster::new();
    let a = cluster.node("a");
    let victim = NodeIdentity::generate().unwrap().node_id();
    let forger = Node::start(revoked_config(&cluster, victim)).unwrap();
    assert!(forger.connect(a.local_addr()).await.is_err());
    assert!(a.peers().is_empty());
}

/// A hand-made client that passes the handshake, then misbehaves on its streams.
async fn raw_client(cluster: &Cluster, target: &Node) -> (quinn::Connection, NodeIdentity) {
    let key = NodeIdentity::generate().unwrap();
    let cert = cluster.ca.issue("raw", &key.public_key()).unwrap();
    let trust = cluster.ca.trust(cluster.revoked.clone());
    let settings = atoll_net::TransportSettings::default();
    let endpoint = atoll_net::bind(
        "127.0.0.1:0".parse().unwrap(),
        atoll_net::server_config(&key, &cert, &trust, &settings).unwrap(),
        atoll_net::client_config(&key, &cert, &trust, &settings).unwrap(),
        &settings,
    )
    .unwrap()
    .endpoint;
    let conn = atoll_net::connect(&endpoint, target.local_addr(), Some(&target.id()))
        .unwrap()
        .await
        .unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let mut secret = [0u8; 32];
    conn.export_keying_material(&mut secret, b"atoll hello v1", b"")
        .unwrap();
    let hello = Control::Hello(Hello {
        node_name: "raw".into(),
        node_id: key.node_id(),
        creation: 1,
        listen: None,
        public_key: key.public_key().to_vec(),
        proof: key.sign(&secret).to_vec(),
    });
    send.write_all(&encode_frame(&hello).unwrap())
        .await
        .unwrap();
    // The node's introduction answers; the smaller id of the pair then keeps the connection.
    let mut len = [0u8; 4];
    recv.read_exact(&mut len).await.unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    recv.read_exact(&mut body).await.unwrap();
    if key.node_id() < target.id() {
        send.write_all(&encode_frame(&Control::Kept).unwrap())
            .await
            .unwrap();
    }
    // Keep the control stream open for the life of the connection.
    std::mem::forget((send, recv));
    (conn, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_oversized_frames_close_only_their_stream() {
    init_logs();
    let cluster = Cluster::new();
    let mut config = cluster.config("a");
    config.max_frame_len = atoll_cluster::MIN_FRAME_LEN;
    let a = Node::start(config).unwrap();
    let (pa, mut seen) = probe(&a);
    let (conn, _key) = raw_client(&cluster, &a).await;
    eventually("a adopts the raw peer", || a.peers().len() == 1).await;

    // An oversized frame: refused from its header, nothing allocated for its body.
    let mut oversized = conn.open_uni().await.unwrap();
    oversized
        .write_all(&[0x7f, 0xff, 0xff, 0xff, 1])
        .await
        .unwrap();
    // Garbage that is a well-sized frame but no envelope.
    let mut garbage = conn.open_uni().await.unwrap();
    garbage
        .write_all(&[0, 0, 0, 4, atoll_wire::WIRE_VERSION, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    // Random bytes.
    let mut random = conn.open_uni().await.unwrap();
    random.write_all(&[9; 300]).await.unwrap();
    for s in [&mut oversized, &mut garbage, &mut random] {
        let refused = tokio::time::timeout(DEADLINE, s.stopped()).await.unwrap();
        assert!(
            refused.is_ok(),
            "the node stops reading a stream it refused"
        );
    }

    // A good stream on the same connection still delivers.
    let mut good = conn.open_uni().await.unwrap();
    let payload =
        atoll_actor::encode_for(a.runtime(), a.id(), &ProbeMsg::Text("still here".into())).unwrap();
    let frame = encode_frame(&Data::Send {
        to: pa.pid(),
        payload,
    })
    .unwrap();
    good.write_all(&frame).await.unwrap();
    assert_eq!(
        next(&mut seen, "delivery after garbage").await,
        Seen::Text("still here".into())
    );

    // And the node serves other peers.
    let b = cluster.node("b");
    b.connect(a.local_addr()).await.unwrap();
    eventually("a adopts b", || a.peers().iter().any(|p| p.name == "b")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_peer_is_a_new_incarnation_and_old_pids_are_dead() {
    init_logs();
    let cluster = Cluster::new();
    let a = cluster.node("a");
    let key_pem = NodeIdentity::generate().unwrap().to_pem();
    let b1 = Node::start(cluster.config_with_key("b", NodeIdentity::from_pem(&key_pem).unwrap()))
        .unwrap();
    let addr = b1.local_addr();
    let (old, _) = probe(&b1);
    b1.runtime().register("greeter", old.pid()).unwrap();
    a.connect(addr).await.unwrap();
    let (watcher, mut seen) = probe(&a);
    watcher.send(ProbeMsg::Monitor(old.pid())).unwrap();
    eventually("b1 records the monitor", || {
        b1.runtime()
            .process_info(old.pid())
            .is_some_and(|i| !i.monitored_by.is_empty())
    })
    .await;
    let creation1 = b1.creation();
    b1.shutdown(Duration::from_secs(1)).await;
    // The socket is released with the last handle on the node.
    drop(b1);
    match next(&mut seen, "down of the old incarnation").await {
        Seen::Down(d) => assert!(matches!(
            d.reason,
            ExitReason::NoConnection | ExitReason::Shutdown
        )),
        other => panic!("{other:?}"),
    }

    // Same key, same address: a new incarnation. a reconnects by itself.
    let mut config = cluster.config_with_key("b", NodeIdentity::from_pem(&key_pem).unwrap());
    config.listen = addr;
    // The old socket closes once the old node's connections have wound down.
    let start = tokio::time::Instant::now();
    let b2 = loop {
        match Node::start(config.clone()) {
            Ok(node) => break node,
            Err(_) if start.elapsed() < DEADLINE => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("cannot rebind {addr}: {e}"),
        }
    };
    assert_ne!(b2.creation(), creation1);
    eventually("a reconnects to the new incarnation", || {
        a.peers()
            .iter()
            .any(|p| p.id == b2.id() && p.creation == b2.creation())
    })
    .await;
    let (fresh, mut fresh_seen) = probe(&b2);
    b2.runtime().register("greeter", fresh.pid()).unwrap();
    // The old pid names nothing on the new incarnation: a message to it goes nowhere,
    // while the same name reaches the new process.
    let stale = a.actor_ref::<Probe>(old.pid()).unwrap();
    stale.send(ProbeMsg::Text("to the old one".into())).unwrap();
    a.send::<Probe>("b", "greeter", ProbeMsg::Text("to the new one".into()))
        .unwrap();
    assert_eq!(
        next(&mut fresh_seen, "new process").await,
        Seen::Text("to the new one".into())
    );
    assert!(!b2.runtime().is_alive(old.pid()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_peer_is_dialed_until_it_answers_and_again_after_it_is_lost() {
    init_logs();
    let cluster = Cluster::new();
    let a = cluster.node("a");
    // A free address: a node that held it has gone.
    let gone = cluster.node("b");
    let addr = gone.local_addr();
    gone.shutdown(Duration::from_secs(1)).await;
    drop(gone);

    a.keep_connected(addr.into());
    let mut config = cluster.config("b");
    config.listen = addr;
    let start = tokio::time::Instant::now();
    let b = loop {
        match Node::start(config.clone()) {
            Ok(node) => break node,
            Err(_) if start.elapsed() < DEADLINE => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("cannot rebind {addr}: {e}"),
        }
    };
    eventually("a connects once b listens", || {
        a.peers().iter().any(|p| p.id == b.id())
    })
    .await;

    // b drops the connection (for a, it is lost; a monitor across it fires): a dials again
    // by itself.
    let (target, _) = probe(&b);
    let (watcher, mut seen) = probe(&a);
    watcher.send(ProbeMsg::Monitor(target.pid())).unwrap();
    eventually("b records the monitor", || {
        b.runtime()
            .process_info(target.pid())
            .is_some_and(|i| !i.monitored_by.is_empty())
    })
    .await;
    assert!(b.disconnect(a.id()));
    match next(&mut seen, "the monitor fires").await {
        Seen::Down(d) => assert!(matches!(d.reason, ExitReason::NoConnection)),
        other => panic!("{other:?}"),
    }
    eventually("a reconnects", || a.peers().iter().any(|p| p.id == b.id())).await;

    // Once a lets the peer go, it stays gone.
    assert!(a.disconnect(b.id()));
    eventually("both sides forget the connection", || {
        a.peers().is_empty() && b.peers().is_empty()
    })
    .await;
}
