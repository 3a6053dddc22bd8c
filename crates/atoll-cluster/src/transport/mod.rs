//! The node's seam to the network: an endpoint that dials and accepts connections, and
//! connections carrying ordered reliable streams and unreliable datagrams, with their
//! close events.
//!
//! Production runs over QUIC with mutual TLS ([`quinn`]); simulations run over
//! [`MemNetwork`], an in-memory network on tokio's clock that can delay, lose, duplicate
//! and partition. The node's code above this seam is the same for both. Dispatch is by
//! enum, so the production path pays no boxing per read or write.

pub mod mem;

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use atoll_core::NodeId;
use bytes::Bytes;

pub use mem::{Faults, MemNetwork, NetStats, TraceEvent};

/// How a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// The other side closed it with this application code.
    ByPeer(u32),
    /// This side closed it.
    Locally,
    /// It was lost (timed out, reset, or the endpoint went away).
    Lost(String),
}

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Closed::ByPeer(code) => write!(f, "closed by peer (code {code})"),
            Closed::Locally => f.write_str("closed locally"),
            Closed::Lost(why) => write!(f, "lost: {why}"),
        }
    }
}

/// Why a datagram was not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DatagramRefused {
    #[error("too large")]
    TooLarge,
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// A stream failed or its connection went away.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub(crate) struct StreamError(pub(crate) String);

fn stream_error(e: impl std::fmt::Display) -> StreamError {
    StreamError(e.to_string())
}

/// Traffic counters of one connection.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LinkStats {
    pub(crate) bytes_sent: u64,
    pub(crate) bytes_received: u64,
    /// UDP datagrams sent and received (QUIC only: 0 on the in-memory network, which has
    /// no packets).
    pub(crate) datagrams_sent: u64,
    pub(crate) datagrams_received: u64,
    pub(crate) rtt: std::time::Duration,
}

/// Where a node accepts connections and dials from.
pub(crate) enum Endpoint {
    Quic(quinn::Endpoint),
    Mem(mem::Endpoint),
}

/// A connection to one peer.
#[derive(Clone)]
pub(crate) enum Connection {
    Quic(quinn::Connection),
    Mem(mem::Connection),
}

/// The sending half of a stream.
pub(crate) enum SendStream {
    Quic(quinn::SendStream),
    Mem(mem::SendStream),
}

/// The receiving half of a stream.
pub(crate) enum RecvStream {
    Quic(quinn::RecvStream),
    Mem(mem::RecvStream),
}

/// A connection being accepted.
pub(crate) enum Incoming {
    Quic(Box<quinn::Incoming>),
    Mem(mem::Connection),
}

impl Incoming {
    pub(crate) async fn accept(self) -> Result<Connection, String> {
        match self {
            Incoming::Quic(i) => (*i).await.map(Connection::Quic).map_err(|e| e.to_string()),
            Incoming::Mem(c) => Ok(Connection::Mem(c)),
        }
    }
}

impl Endpoint {
    pub(crate) fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self {
            Endpoint::Quic(e) => e.local_addr(),
            Endpoint::Mem(e) => Ok(e.local_addr()),
        }
    }

    pub(crate) async fn accept(&self) -> Option<Incoming> {
        match self {
            Endpoint::Quic(e) => e.accept().await.map(|i| Incoming::Quic(Box::new(i))),
            Endpoint::Mem(e) => e.accept().await.map(Incoming::Mem),
        }
    }

    /// Dials `addr`; completes when the connection is up (the caller bounds the wait).
    pub(crate) async fn connect(&self, addr: SocketAddr) -> Result<Connection, String> {
        match self {
            Endpoint::Quic(e) => {
                let connecting = atoll_net::connect(e, addr, None).map_err(|e| e.to_string())?;
                connecting
                    .await
                    .map(Connection::Quic)
                    .map_err(|e| e.to_string())
            }
            Endpoint::Mem(e) => e.connect(addr).await.map(Connection::Mem),
        }
    }

    pub(crate) fn close(&self, code: u32, reason: &[u8]) {
        match self {
            Endpoint::Quic(e) => e.close(quinn::VarInt::from_u32(code), reason),
            Endpoint::Mem(e) => e.close(code),
        }
    }

    pub(crate) async fn wait_idle(&self) {
        match self {
            Endpoint::Quic(e) => e.wait_idle().await,
            Endpoint::Mem(_) => {}
        }
    }
}

impl Connection {
    /// Stays the same for the connection's life and differs between live connections.
    pub(crate) fn stable_id(&self) -> usize {
        match self {
            Connection::Quic(c) => c.stable_id(),
            Connection::Mem(c) => c.stable_id(),
        }
    }

    pub(crate) fn close(&self, code: u32, reason: &[u8]) {
        match self {
            Connection::Quic(c) => c.close(quinn::VarInt::from_u32(code), reason),
            Connection::Mem(c) => c.close(code),
        }
    }

    pub(crate) fn close_reason(&self) -> Option<Closed> {
        match self {
            Connection::Quic(c) => c.close_reason().map(quic_closed),
            Connection::Mem(c) => c.close_reason(),
        }
    }

    pub(crate) async fn closed(&self) -> Closed {
        match self {
            Connection::Quic(c) => quic_closed(c.closed().await),
            Connection::Mem(c) => c.closed().await,
        }
    }

    pub(crate) async fn open_bi(&self) -> Result<(SendStream, RecvStream), StreamError> {
        match self {
            Connection::Quic(c) => c
                .open_bi()
                .await
                .map(|(s, r)| (SendStream::Quic(s), RecvStream::Quic(r)))
                .map_err(stream_error),
            Connection::Mem(c) => c
                .open_bi()
                .map(|(s, r)| (SendStream::Mem(s), RecvStream::Mem(r))),
        }
    }

    pub(crate) async fn accept_bi(&self) -> Result<(SendStream, RecvStream), StreamError> {
        match self {
            Connection::Quic(c) => c
                .accept_bi()
                .await
                .map(|(s, r)| (SendStream::Quic(s), RecvStream::Quic(r)))
                .map_err(stream_error),
            Connection::Mem(c) => c
                .accept_bi()
                .await
                .map(|(s, r)| (SendStream::Mem(s), RecvStream::Mem(r))),
        }
    }

    pub(crate) async fn open_uni(&self) -> Result<SendStream, StreamError> {
        match self {
            Connection::Quic(c) => c
                .open_uni()
                .await
                .map(SendStream::Quic)
                .map_err(stream_error),
            Connection::Mem(c) => c.open_uni().map(SendStream::Mem),
        }
    }

    /// Opens a unidirectional stream if that needs no waiting (the peer's stream limit
    /// allows it); `None` if it would have to wait.
    pub(crate) fn try_open_uni(&self) -> Option<Result<SendStream, StreamError>> {
        match self {
            Connection::Quic(c) => {
                let open = std::pin::pin!(c.open_uni());
                let mut cx = Context::from_waker(std::task::Waker::noop());
                match std::future::Future::poll(open, &mut cx) {
                    Poll::Ready(r) => Some(r.map(SendStream::Quic).map_err(stream_error)),
                    Poll::Pending => None,
                }
            }
            Connection::Mem(c) => Some(c.open_uni().map(SendStream::Mem)),
        }
    }

    pub(crate) async fn accept_uni(&self) -> Result<RecvStream, StreamError> {
        match self {
            Connection::Quic(c) => c
                .accept_uni()
                .await
                .map(RecvStream::Quic)
                .map_err(stream_error),
            Connection::Mem(c) => c.accept_uni().await.map(RecvStream::Mem),
        }
    }

    pub(crate) fn send_datagram(&self, payload: Bytes) -> Result<(), DatagramRefused> {
        match self {
            Connection::Quic(c) => c.send_datagram(payload).map_err(|e| match e {
                quinn::SendDatagramError::TooLarge => DatagramRefused::TooLarge,
                other => DatagramRefused::Unavailable(other.to_string()),
            }),
            Connection::Mem(c) => c.send_datagram(payload),
        }
    }

    pub(crate) async fn read_datagram(&self) -> Result<Bytes, StreamError> {
        match self {
            Connection::Quic(c) => c.read_datagram().await.map_err(stream_error),
            Connection::Mem(c) => c.read_datagram().await,
        }
    }

    pub(crate) fn max_datagram_size(&self) -> Option<usize> {
        match self {
            Connection::Quic(c) => c.max_datagram_size(),
            Connection::Mem(_) => Some(mem::MAX_DATAGRAM),
        }
    }

    pub(crate) fn datagram_send_buffer_space(&self) -> usize {
        match self {
            Connection::Quic(c) => c.datagram_send_buffer_space(),
            Connection::Mem(_) => usize::MAX,
        }
    }

    pub(crate) fn stats(&self) -> LinkStats {
        match self {
            Connection::Quic(c) => {
                let s = c.stats();
                LinkStats {
                    bytes_sent: s.udp_tx.bytes,
                    bytes_received: s.udp_rx.bytes,
                    datagrams_sent: s.udp_tx.datagrams,
                    datagrams_received: s.udp_rx.datagrams,
                    rtt: s.path.rtt,
                }
            }
            Connection::Mem(c) => c.stats(),
        }
    }

    /// A secret both ends share and nobody else knows, which each side signs to prove it
    /// holds its key (the TLS exporter secret on QUIC).
    pub(crate) fn exporter_secret(&self, label: &[u8]) -> Option<[u8; 32]> {
        match self {
            Connection::Quic(c) => {
                let mut secret = [0u8; 32];
                c.export_keying_material(&mut secret, label, b"")
                    .ok()
                    .map(|_| secret)
            }
            Connection::Mem(c) => Some(c.secret()),
        }
    }

    /// The node id the peer's certificate names, if any.
    pub(crate) fn peer_node_id(&self) -> Option<NodeId> {
        match self {
            Connection::Quic(c) => atoll_net::peer_node_id(c),
            Connection::Mem(c) => Some(c.peer_node()),
        }
    }
}

fn quic_closed(e: quinn::ConnectionError) -> Closed {
    match e {
        quinn::ConnectionError::ApplicationClosed(c) => {
            Closed::ByPeer(u32::try_from(c.error_code.into_inner()).unwrap_or(u32::MAX))
        }
        quinn::ConnectionError::LocallyClosed => Closed::Locally,
        other => Closed::Lost(other.to_string()),
    }
}

impl SendStream {
    pub(crate) fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<Result<usize, StreamError>> {
        match self {
            SendStream::Quic(s) => {
                tokio::io::AsyncWrite::poll_write(Pin::new(s), cx, buf).map_err(stream_error)
            }
            SendStream::Mem(s) => Poll::Ready(s.write(buf)),
        }
    }

    /// As [`poll_write`](Self::poll_write), but QUIC takes the bytes it accepts by
    /// reference count instead of copying them.
    pub(crate) fn poll_write_chunk(
        &mut self,
        cx: &mut Context<'_>,
        chunk: &Bytes,
    ) -> Poll<Result<usize, StreamError>> {
        match self {
            SendStream::Quic(s) => {
                let mut chunks = [chunk.clone()];
                let write = std::pin::pin!(s.write_chunks(&mut chunks));
                write
                    .poll(cx)
                    .map(|r| r.map(|w| w.bytes).map_err(stream_error))
            }
            SendStream::Mem(s) => Poll::Ready(s.write(chunk)),
        }
    }

    pub(crate) async fn write_all(&mut self, buf: &[u8]) -> Result<(), StreamError> {
        match self {
            SendStream::Quic(s) => s.write_all(buf).await.map_err(stream_error),
            SendStream::Mem(s) => s.write(buf).map(|_| ()),
        }
    }

    /// Lets other streams' data go first (QUIC only; the in-memory network has no
    /// congestion to schedule around).
    pub(crate) fn set_low_priority(&mut self) {
        if let SendStream::Quic(s) = self {
            let _ = s.set_priority(-1);
        }
    }

    pub(crate) fn finish(&mut self) {
        match self {
            SendStream::Quic(s) => {
                let _ = s.finish();
            }
            SendStream::Mem(s) => s.finish(),
        }
    }
}

impl RecvStream {
    /// The next chunk of at most `max` bytes, or `None` at the end of the stream.
    pub(crate) async fn read_chunk(&mut self, max: usize) -> Result<Option<Bytes>, StreamError> {
        match self {
            RecvStream::Quic(r) => r
                .read_chunk(max, true)
                .await
                .map(|c| c.map(|c| c.bytes))
                .map_err(stream_error),
            RecvStream::Mem(r) => r.read_chunk(max).await,
        }
    }

    pub(crate) fn stop(&mut self, code: u32) {
        match self {
            RecvStream::Quic(r) => {
                let _ = r.stop(quinn::VarInt::from_u32(code));
            }
            RecvStream::Mem(r) => r.stop(),
        }
    }
}
