//! Where a peer is found: an address, or a host name looked up on every attempt.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

/// Where to reach a peer that [`crate::Node::keep_connected`] keeps a connection to.
///
/// ```
/// use atoll_cluster::PeerAddress;
///
/// let ip: PeerAddress = "127.0.0.1:7000".parse()?;
/// assert_eq!(ip, PeerAddress::Addr("127.0.0.1:7000".parse()?));
/// let host: PeerAddress = "db-1.internal:7000".parse()?;
/// assert_eq!(host.to_string(), "db-1.internal:7000");
/// assert!("db-1.internal".parse::<PeerAddress>().is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PeerAddress {
    /// An IP address and port.
    Addr(SocketAddr),
    /// A host name and port (`HOST:PORT`), looked up anew on every connection attempt, so a
    /// peer that moves or whose name is not resolvable yet is still found.
    Host(String),
}

/// A peer address that is neither `IP:PORT` nor `HOST:PORT`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid peer address {0:?} (expected HOST:PORT)")]
pub struct PeerAddressError(pub String);

impl FromStr for PeerAddress {
    type Err = PeerAddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(PeerAddress::Addr(addr));
        }
        let valid = s.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty()
                && port.parse::<u16>().is_ok()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        });
        if valid {
            Ok(PeerAddress::Host(s.to_string()))
        } else {
            Err(PeerAddressError(s.to_string()))
        }
    }
}

impl From<SocketAddr> for PeerAddress {
    fn from(addr: SocketAddr) -> Self {
        PeerAddress::Addr(addr)
    }
}

impl fmt::Display for PeerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerAddress::Addr(addr) => addr.fmt(f),
            PeerAddress::Host(host) => f.write_str(host),
        }
    }
}

impl PeerAddress {
    /// The addresses it stands for now (a host name is looked up).
    pub(crate) async fn resolve(&self) -> std::io::Result<Vec<SocketAddr>> {
        match self {
            PeerAddress::Addr(addr) => Ok(vec![*addr]),
            PeerAddress::Host(host) => Ok(tokio::net::lookup_host(host.as_str()).await?.collect()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse() {
        for ok in ["127.0.0.1:1", "[::1]:7000", "node-1:7000", "a.b_c:65535"] {
            assert!(ok.parse::<PeerAddress>().is_ok(), "{ok}");
        }
        for bad in [
            "",
            ":7000",
            "node",
            "node:port",
            "node:70000",
            "no de:1",
            "a/b:1",
        ] {
            assert!(bad.parse::<PeerAddress>().is_err(), "{bad}");
        }
        assert!(matches!(
            "[::1]:7000".parse::<PeerAddress>(),
            Ok(PeerAddress::Addr(_))
        ));
    }
}
