//! Real QUIC handshakes on 127.0.0.1: who is let in, who is kept out.

use std::future::Future;
use std::time::Duration;

use atoll_net::{
    ClusterCa, NodeCertificate, NodeId, NodeIdentity, RevocationList, SharedIdentity,
    TransportSettings, TrustConfig, bind, client_config, connect, peer_node_id, server_config,
};
use quinn::{Connection, ConnectionError, Endpoint};

/// Generous: a handshake on loopback takes milliseconds, even on a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(30);

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what} did not finish within {DEADLINE:?}"),
    }
}

/// A chain check failure: an unknown issuer, or (same CA name) a signature that does not verify.
const FOREIGN: &[&str] = &["UnknownIssuer", "BadSignature"];

struct Node {
    id: NodeId,
    endpoint: Endpoint,
}

fn node_with(key: &NodeIdentity, cert: &NodeCertificate, trust: &TrustConfig) -> Node {
    let settings = TransportSettings::default();
    let endpoint = bind(
        "127.0.0.1:0".parse().unwrap(),
        server_config(key, cert, trust, &settings).unwrap(),
        client_config(key, cert, trust, &settings).unwrap(),
        &settings,
    )
    .unwrap()
    .endpoint;
    Node {
        id: key.node_id(),
        endpoint,
    }
}

fn ca_node(ca: &ClusterCa, name: &str, trust: &TrustConfig) -> Node {
    let key = NodeIdentity::generate().unwrap();
    let cert = ca.issue(name, &key.public_key()).unwrap();
    node_with(&key, &cert, trust)
}

fn shared_node(shared: &SharedIdentity, trust: &TrustConfig) -> Node {
    node_with(shared.identity(), shared.certificate(), trust)
}

/// Both ends of one handshake: `(client's view, server's view)`.
///
/// A client may finish its half of the handshake before the server has checked the
/// client's certificate; if the server then refuses, the client's connection closes with
/// the server's error. So a client that got a connection waits for it to close when
/// `expect_ok` is false.
async fn handshake(
    client: &Node,
    server: &Node,
    expected: Option<&NodeId>,
    expect_ok: bool,
) -> (
    Result<Connection, ConnectionError>,
    Result<Connection, ConnectionError>,
) {
    let addr = server.endpoint.local_addr().unwrap();
    let dial = async {
        let conn = connect(&client.endpoint, addr, expected).unwrap().await?;
        if expect_ok {
            Ok(conn)
        } else {
            Err(conn.closed().await)
        }
    };
    let accept = async {
        let incoming = server.endpoint.accept().await.expect("endpoint open");
        incoming.await
    };
    within("handshake", async { tokio::join!(dial, accept) }).await
}

async fn assert_connects(client: &Node, server: &Node, expected: Option<&NodeId>) {
    let (at_client, at_server) = handshake(client, server, expected, true).await;
    let at_client = at_client.expect("client side of the handshake");
    let at_server = at_server.expect("server side of the handshake");
    assert_eq!(peer_node_id(&at_client), Some(server.id));
    assert_eq!(peer_node_id(&at_server), Some(client.id));
    assert_eq!(
        at_client.handshake_data().and_then(|d| {
            d.downcast::<quinn::crypto::rustls::HandshakeData>()
                .ok()
                .and_then(|d| d.protocol)
        }),
        Some(atoll_net::ALPN.to_vec())
    );
    // Datagrams are on (SWIM needs them), and a stream carries data both ways.
    assert!(at_client.max_datagram_size().is_some());
    let echo = async {
        let (mut send, mut recv) = at_server.accept_bi().await.unwrap();
        let got = recv.read_to_end(64).await.unwrap();
        send.write_all(&got).await.unwrap();
        send.finish().unwrap();
    };
    let ask = async {
        let (mut send, mut recv) = at_client.open_bi().await.unwrap();
        send.write_all(b"ping").await.unwrap();
        send.finish().unwrap();
        recv.read_to_end(64).await.unwrap()
    };
    let ((), reply) = within("echo", async { tokio::join!(echo, ask) }).await;
    assert_eq!(reply, b"ping");
    at_client.close(0u32.into(), b"done");
}

/// Asserts the handshake fails on both sides, for a reason mentioning one of `why` (the
/// refusing side's verifier error travels to the other side in the close frame).
async fn assert_refused(client: &Node, server: &Node, expected: Option<&NodeId>, why: &[&str]) {
    let (at_client, at_server) = handshake(client, server, expected, false).await;
    let client_err = at_client.expect_err("client side should fail");
    let server_err = at_server.expect_err("server side should fail");
    assert!(
        !matches!(client_err, ConnectionError::LocallyClosed),
        "client: {client_err}"
    );
    assert!(
        !matches!(server_err, ConnectionError::LocallyClosed),
        "server: {server_err}"
    );
    for err in [client_err.to_string(), server_err.to_string()] {
        assert!(
            why.iter().any(|w| err.contains(w)),
            "expected a refusal for {why:?}, got {err:?}"
        );
    }
}

#[tokio::test]
async fn ca_nodes_connect_and_learn_each_others_ids() {
    let ca = ClusterCa::create("test").unwrap();
    let trust = ca.trust(RevocationList::new());
    let a = ca_node(&ca, "a", &trust);
    let b = ca_node(&ca, "b", &trust);
    // Knowing whom we dial…
    assert_connects(&a, &b, Some(&b.id)).await;
    // …and first contact by address alone.
    assert_connects(&b, &a, None).await;
}

#[tokio::test]
async fn certificate_from_another_ca_is_refused() {
    let ca = ClusterCa::create("test").unwrap();
    let other_ca = ClusterCa::create("test").unwrap();
    let trust = ca.trust(RevocationList::new());
    let a = ca_node(&ca, "a", &trust);
    // Trusts our CA, so only its own certificate can be what fails.
    let stranger = ca_node(&other_ca, "stranger", &trust);
    // The server refuses the client's certificate…
    assert_refused(&stranger, &a, None, FOREIGN).await;
    // …and the client refuses the server's.
    assert_refused(&a, &stranger, None, FOREIGN).await;
    assert_refused(&a, &stranger, Some(&stranger.id), FOREIGN).await;
}

#[tokio::test]
async fn revoked_node_is_refused_on_the_next_handshake() {
    let ca = ClusterCa::create("test").unwrap();
    let revoked = RevocationList::new();
    let trust = ca.trust(revoked.clone());
    let a = ca_node(&ca, "a", &trust);
    let b = ca_node(&ca, "b", &trust);
    assert_connects(&b, &a, Some(&a.id)).await;

    revoked.revoke(b.id);
    assert_refused(&b, &a, Some(&a.id), &["Revoked"]).await;
    assert_refused(&a, &b, Some(&b.id), &["Revoked"]).await;

    revoked.reinstate(&b.id);
    assert_connects(&b, &a, Some(&a.id)).await;
}

#[tokio::test]
async fn certificate_claiming_another_node_id_is_refused() {
    let ca = ClusterCa::create("test").unwrap();
    let trust = ca.trust(RevocationList::new());
    let a = ca_node(&ca, "a", &trust);
    let victim = ca_node(&ca, "victim", &trust);
    let key = NodeIdentity::generate().unwrap();
    let forged = ca
        .issue_with_claimed_node_id("mallory", &key.public_key(), victim.id)
        .unwrap();
    let mallory = node_with(&key, &forged, &trust);

    assert_refused(&mallory, &a, Some(&a.id), &["NodeIdMismatch"]).await;
    assert_refused(&a, &mallory, None, &["NodeIdMismatch"]).await;
    assert_refused(&a, &mallory, Some(&victim.id), &["NodeIdMismatch"]).await;
}

#[tokio::test]
async fn server_that_is_not_the_expected_node_is_refused() {
    let ca = ClusterCa::create("test").unwrap();
    let trust = ca.trust(RevocationList::new());
    let a = ca_node(&ca, "a", &trust);
    let b = ca_node(&ca, "b", &trust);
    let c = ca_node(&ca, "c", &trust);
    // a dials b's address believing it is c.
    assert_refused(&a, &b, Some(&c.id), &["WrongNode"]).await;
    // The same pair connects when a expects the right node.
    assert_connects(&a, &b, Some(&b.id)).await;
}

#[tokio::test]
async fn shared_identity_nodes_connect() {
    let shared = SharedIdentity::generate("lab").unwrap();
    let trust = shared.trust();
    let a = shared_node(&shared, &trust);
    let b = shared_node(&shared, &trust);
    // Every node presents the shared identity, so that is the id each side sees.
    assert_eq!(a.id, shared.node_id());
    assert_connects(&a, &b, None).await;
}

#[tokio::test]
async fn another_shared_identity_is_refused() {
    let shared = SharedIdentity::generate("lab").unwrap();
    let other = SharedIdentity::generate("lab").unwrap();
    let trust = shared.trust();
    let a = shared_node(&shared, &trust);
    // Pins our certificate, so only its own certificate can be what fails.
    let stranger = shared_node(&other, &trust);
    assert_refused(&stranger, &a, None, &["NotPinned"]).await;
    assert_refused(&a, &stranger, None, &["NotPinned"]).await;
}

#[tokio::test]
async fn ca_node_and_shared_node_do_not_mix() {
    let ca = ClusterCa::create("test").unwrap();
    let shared = SharedIdentity::generate("test").unwrap();
    let a = ca_node(&ca, "a", &ca.trust(RevocationList::new()));
    let s = shared_node(&shared, &shared.trust());
    assert_refused(&a, &s, None, FOREIGN).await;
    assert_refused(&s, &a, None, &["NotPinned"]).await;
}
