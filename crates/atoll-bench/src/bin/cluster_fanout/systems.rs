//! The two systems under test, seen from the hub: how each connects to its workers and
//! makes one round trip of a given payload size.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use atoll::ActorRef;
use atoll_cluster::builtin::{Echo, EchoMsg};
use atoll_cluster::{Node, NodeConfig, Payload};
use tokio::io::AsyncWriteExt;

use crate::{CALL_TIMEOUT, material, raw_endpoint};

/// The largest payload a raw worker accepts in a stream's size header (checked before it
/// allocates the buffer).
pub const RAW_MAX_PAYLOAD: usize = 16 << 20;

/// One round trip, started anew each time the closure is called.
pub type RoundTrip = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
/// Makes round trips for one sender.
pub type Tripper = Box<dyn FnMut() -> RoundTrip + Send>;

/// The hub's side of one system, connected to every worker.
pub enum Client {
    /// An atoll node with an echo process on each worker, and a second echo on the first
    /// worker (for the bulk transfer of the mixed mode).
    Atoll {
        node: Node,
        echoes: Vec<ActorRef<Echo>>,
        bulk_echo: ActorRef<Echo>,
    },
    /// A bare quinn endpoint with one connection per worker.
    Raw {
        endpoint: quinn::Endpoint,
        conns: Vec<quinn::Connection>,
    },
}

impl Client {
    pub async fn connect(system: &str, dir: &Path, addrs: &[SocketAddr]) -> Client {
        let (key, cert, trust) = material(dir, "hub");
        if system == "atoll" {
            let node = Node::start(NodeConfig::with_ca(
                "hub",
                "127.0.0.1:0".parse().unwrap(),
                key,
                cert,
                trust,
            ))
            .expect("hub node");
            let mut echoes: Vec<ActorRef<Echo>> = Vec::new();
            let mut bulk_echo = None;
            for addr in addrs {
                let remote = node.connect(*addr).await.expect("connect to worker");
                let pid = remote.spawn("echo", &()).await.expect("spawn echo");
                echoes.push(node.actor_ref::<Echo>(pid).expect("ref"));
                if bulk_echo.is_none() {
                    let pid = remote.spawn("echo", &()).await.expect("spawn echo");
                    bulk_echo = Some(node.actor_ref::<Echo>(pid).expect("ref"));
                }
            }
            Client::Atoll {
                node,
                echoes,
                bulk_echo: bulk_echo.expect("at least one worker"),
            }
        } else {
            let endpoint = raw_endpoint(&key, &cert, &trust);
            let mut conns = Vec::new();
            for addr in addrs {
                let conn = atoll_net::connect(&endpoint, *addr, None)
                    .expect("connect")
                    .await
                    .expect("handshake");
                conns.push(conn);
            }
            Client::Raw { endpoint, conns }
        }
    }

    /// Round trips of `payload` bytes each way to worker `worker`'s echo (the first worker's
    /// bulk echo if `bulk`, a process of its own on the same connection).
    pub async fn tripper(&self, worker: usize, payload: usize, bulk: bool) -> Tripper {
        match self {
            Client::Atoll {
                echoes, bulk_echo, ..
            } => {
                let echo = if bulk {
                    bulk_echo.clone()
                } else {
                    echoes[worker % echoes.len()].clone()
                };
                // Like the floor's reused buffer, one payload per sender, sent again and
                // again (a clone is a reference count).
                let bytes = Payload::from(vec![0u8; payload]);
                Box::new(move || {
                    let (echo, bytes) = (echo.clone(), bytes.clone());
                    Box::pin(async move {
                        let back = echo
                            .call(|r| EchoMsg::Bytes(bytes, r), CALL_TIMEOUT)
                            .await
                            .expect("echo answers");
                        debug_assert_eq!(back.len(), payload);
                    }) as RoundTrip
                })
            }
            Client::Raw { conns, .. } => {
                // Each sender ping-pongs on its own bidirectional stream, which starts with
                // the payload size so the worker knows how much to echo.
                let conn = &conns[if bulk { 0 } else { worker % conns.len() }];
                let (mut send, recv) = conn.open_bi().await.expect("stream");
                let size = u32::try_from(payload).expect("payload size");
                send.write_all(&size.to_be_bytes()).await.expect("write");
                let stream = Arc::new(tokio::sync::Mutex::new((send, recv, vec![0u8; payload])));
                Box::new(move || {
                    let stream = stream.clone();
                    Box::pin(async move {
                        let mut guard = stream.lock().await;
                        let (send, recv, buf) = &mut *guard;
                        send.write_all(buf).await.expect("write");
                        send.flush().await.expect("flush");
                        recv.read_exact(buf).await.expect("read");
                    }) as RoundTrip
                })
            }
        }
    }

    /// UDP datagrams the hub sent and received on its connections to the workers.
    pub async fn datagrams(&self) -> u64 {
        match self {
            Client::Atoll { node, .. } => node
                .status()
                .await
                .peers
                .iter()
                .map(|p| p.datagrams_sent + p.datagrams_received)
                .sum(),
            Client::Raw { conns, .. } => conns
                .iter()
                .map(|c| {
                    let s = c.stats();
                    s.udp_tx.datagrams + s.udp_rx.datagrams
                })
                .sum(),
        }
    }

    pub async fn close(self) {
        match self {
            Client::Atoll { node, .. } => node.shutdown(Duration::from_secs(1)).await,
            Client::Raw { endpoint, .. } => endpoint.close(quinn::VarInt::from_u32(0), b"done"),
        }
    }
}

/// The raw worker: every bidirectional stream announces its payload size, then echoes
/// messages of that size until the hub finishes it.
pub async fn serve_raw(endpoint: quinn::Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                tokio::spawn(async move {
                    let mut size = [0u8; 4];
                    if recv.read_exact(&mut size).await.is_err() {
                        return;
                    }
                    let size = u32::from_be_bytes(size) as usize;
                    if size == 0 || size > RAW_MAX_PAYLOAD {
                        return;
                    }
                    let mut buf = vec![0u8; size];
                    while recv.read_exact(&mut buf).await.is_ok() {
                        if send.write_all(&buf).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
    }
}
