//! Binding a node's QUIC endpoint and dialing peers.

use std::io;
use std::net::SocketAddr;

use atoll_core::NodeId;

use crate::tls::server_name;

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
/// `client` by default. Must be called inside a tokio runtime.
pub fn bind(
    addr: SocketAddr,
    server: quinn::ServerConfig,
    client: quinn::ClientConfig,
) -> Result<quinn::Endpoint, BindError> {
    let mut endpoint =
        quinn::Endpoint::server(server, addr).map_err(|source| BindError { addr, source })?;
    endpoint.set_default_client_config(client);
    Ok(endpoint)
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
