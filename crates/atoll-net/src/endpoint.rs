//! Binding a node's QUIC endpoint and dialing peers.

use std::io;
use std::net::SocketAddr;

use atoll_core::NodeId;

use crate::tls::{TransportSettings, server_name};

/// The UDP socket for a node's endpoint could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("could not bind the QUIC endpoint to {addr}: {source}")]
pub struct BindError {
    /// The address asked for.
    pub addr: SocketAddr,
    /// What the operating system (or quinn, outside a tokio runtime) said.
    #[source]
    pub source: io::Error,
}

/// A bound QUIC endpoint and the UDP receive buffer its socket got.
#[derive(Debug)]
pub struct BoundEndpoint {
    /// The endpoint.
    pub endpoint: quinn::Endpoint,
    /// The socket's receive buffer, as asked for and as granted.
    pub udp_buffer: UdpBuffer,
}

/// A UDP socket's kernel receive buffer: what was asked for and what the kernel granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpBuffer {
    /// Bytes asked for ([`TransportSettings::udp_buffer`]).
    pub asked: usize,
    /// Bytes granted (Linux caps requests at `net.core.rmem_max`).
    pub granted: usize,
}

impl UdpBuffer {
    /// True when the kernel granted less than asked: a burst of datagrams larger than the
    /// buffer (a large message arriving while the receiving thread is busy) is then dropped
    /// and retransmitted, at a fraction of the throughput.
    ///
    /// ```
    /// let buffer = atoll_net::UdpBuffer { asked: 4 << 20, granted: 212_992 };
    /// assert!(buffer.capped());
    /// ```
    pub fn capped(&self) -> bool {
        self.granted < self.asked
    }
}

/// Binds a QUIC endpoint on `addr` that accepts connections with `server` and dials with
/// `client` by default, on a socket from [`udp_socket`]. On a tokio multi-thread runtime
/// the endpoint's and connections' drivers, when woken, run after the tasks already queued
/// (so frames written meanwhile share packets) rather than next. Must be called inside a
/// tokio runtime.
pub fn bind(
    addr: SocketAddr,
    server: quinn::ServerConfig,
    client: quinn::ClientConfig,
    settings: &TransportSettings,
) -> Result<BoundEndpoint, BindError> {
    let err = |source| BindError { addr, source };
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(err(io::Error::other("not inside a tokio runtime")));
    }
    let (socket, udp_buffer) = udp_socket(addr, settings)?;
    let mut endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server),
        socket,
        std::sync::Arc::new(crate::runtime::QueuedDrivers),
    )
    .map_err(err)?;
    endpoint.set_default_client_config(client);
    Ok(BoundEndpoint {
        endpoint,
        udp_buffer,
    })
}

/// Binds the UDP socket for an endpoint on `addr`, its kernel buffers sized by `settings`.
/// A buffer the kernel caps below the request is logged as a warning, with the settings to
/// raise.
pub fn udp_socket(
    addr: SocketAddr,
    settings: &TransportSettings,
) -> Result<(std::net::UdpSocket, UdpBuffer), BindError> {
    let socket = std::net::UdpSocket::bind(addr).map_err(|source| BindError { addr, source })?;
    let udp_buffer = size_buffers(&socket, settings.udp_buffer);
    if udp_buffer.capped() {
        tracing::warn!(
            %addr,
            asked = udp_buffer.asked,
            granted = udp_buffer.granted,
            "the kernel capped the UDP receive buffer: large messages may see drops and \
             retransmissions; raise net.core.rmem_max and net.core.wmem_max (sysctl) to at \
             least the asked size"
        );
    }
    Ok((socket, udp_buffer))
}

/// Asks for `bytes` of kernel buffer each way and returns the receive buffer granted. The
/// kernel may grant less (it caps requests at `net.core.rmem_max` / `wmem_max`): the
/// endpoint works either way, so that is reported, not refused.
fn size_buffers(socket: &std::net::UdpSocket, bytes: usize) -> UdpBuffer {
    let socket = socket2::SockRef::from(socket);
    let _ = socket.set_recv_buffer_size(bytes);
    let _ = socket.set_send_buffer_size(bytes);
    // Linux reports twice what it grants (the doubling covers its own bookkeeping).
    let granted = socket.recv_buffer_size().unwrap_or(0) / 2;
    UdpBuffer {
        asked: bytes,
        granted,
    }
}

/// Starts a connection to `addr`. With `expected = Some(id)` the handshake fails unless
/// the server proves it is node `id`; with `None` (first contact) any trusted node is
/// accepted and [`peer_node_id`](crate::peer_node_id) tells which one it was.
pub fn connect(
    endpoint: &quinn::Endpoint,
    addr: SocketAddr,
    expected: Option<&NodeId>,
) -> Result<quinn::Connecting, quinn::ConnectError> {
    endpoint.connect(addr, &server_name(expected))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn the_socket_gets_the_buffer_asked_for_up_to_the_kernel_cap() {
        let cap: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let asked = 2 << 20;
        let buffer = size_buffers(&socket, asked);
        assert_eq!(buffer.granted, asked.min(cap));
        assert_eq!(buffer.capped(), cap < asked);
    }
}
