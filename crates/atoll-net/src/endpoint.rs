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

/// Binds a QUIC endpoint on `addr` that accepts connections with `server` and dials with
/// `client` by default, its UDP socket's kernel buffers sized by `settings`. Must be called
/// inside a tokio runtime.
pub fn bind(
    addr: SocketAddr,
    server: quinn::ServerConfig,
    client: quinn::ClientConfig,
    settings: &TransportSettings,
) -> Result<quinn::Endpoint, BindError> {
    let err = |source| BindError { addr, source };
    let socket = std::net::UdpSocket::bind(addr).map_err(err)?;
    size_buffers(&socket, settings.udp_buffer);
    let runtime = quinn::default_runtime()
        .ok_or_else(|| err(io::Error::other("not inside a tokio runtime")))?;
    let mut endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server),
        socket,
        runtime,
    )
    .map_err(err)?;
    endpoint.set_default_client_config(client);
    Ok(endpoint)
}

/// Asks for `bytes` of kernel buffer each way and returns the receive buffer granted. The
/// kernel may grant less (it caps requests at `net.core.rmem_max` / `wmem_max`): the
/// endpoint works either way, so that is logged, not refused.
fn size_buffers(socket: &std::net::UdpSocket, bytes: usize) -> usize {
    let socket = socket2::SockRef::from(socket);
    let _ = socket.set_recv_buffer_size(bytes);
    let _ = socket.set_send_buffer_size(bytes);
    // Linux reports twice what it grants (the doubling covers its own bookkeeping).
    let granted = socket.recv_buffer_size().unwrap_or(0) / 2;
    if granted < bytes {
        tracing::debug!(
            asked = bytes,
            granted,
            "UDP receive buffer capped by the kernel (net.core.rmem_max)"
        );
    }
    granted
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
        let granted = size_buffers(&socket, asked);
        assert_eq!(granted, asked.min(cap));
    }
}
