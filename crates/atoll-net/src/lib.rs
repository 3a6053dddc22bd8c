//! atoll's secure transport: node identity, cluster CA and mutually authenticated QUIC.
//!
//! # Trust model
//!
//! - A node *is* its Ed25519 key: its [`NodeId`] is the first 16 bytes of
//!   SHAKE-256(public key) ([`node_id_of`]). Nobody assigns ids, so nobody can hand out a
//!   false one.
//! - **CA mode** (default): a [`ClusterCa`] issues each node a certificate over the node's
//!   own key, naming it `<hex node id>.node.atoll`. Every handshake is mutual TLS 1.3;
//!   each side checks that the peer's chain ends at the cluster CA (the only root), derives
//!   the id from the certified key, requires the certificate's name to claim exactly that
//!   id, and refuses ids on the shared [`RevocationList`]. A client that knows whom it is
//!   dialing puts `<id>.node.atoll` in the server name and refuses any other node.
//! - **Shared mode**: every node uses one self-signed certificate ([`SharedIdentity`]),
//!   pinned byte for byte. It proves cluster membership only: all peers share one id.
//! - Whatever the mode, [`peer_node_id`] reads the peer's id from the certificate it
//!   proved possession of — never from anything the peer merely says.
//!
//! # Example
//!
//! Two nodes of one cluster connect; each learns the other's id from the handshake.
//!
//! ```
//! use atoll_net::*;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//! rt.block_on(async {
//!     let ca = ClusterCa::create("demo")?;
//!     let trust = ca.trust(RevocationList::new());
//!     let settings = TransportSettings::default();
//!     let mut nodes = Vec::new();
//!     for name in ["a", "b"] {
//!         let key = NodeIdentity::generate()?;
//!         let cert = ca.issue(name, &key.public_key())?;
//!         let endpoint = bind(
//!             "127.0.0.1:0".parse()?,
//!             server_config(&key, &cert, &trust, &settings)?,
//!             client_config(&key, &cert, &trust, &settings)?,
//!             &settings,
//!         )?
//!         .endpoint;
//!         nodes.push((key.node_id(), endpoint));
//!     }
//!     let (a_id, a) = &nodes[0];
//!     let (b_id, b) = &nodes[1];
//!
//!     let accept = async {
//!         let incoming = b.accept().await.ok_or("endpoint closed")?;
//!         Ok::<_, Box<dyn std::error::Error>>(incoming.await?)
//!     };
//!     let dial = connect(a, b.local_addr()?, Some(b_id))?;
//!     let (at_a, at_b) = tokio::join!(dial, accept);
//!     let (at_a, at_b) = (at_a?, at_b?);
//!     assert_eq!(peer_node_id(&at_a), Some(*b_id));
//!     assert_eq!(peer_node_id(&at_b), Some(*a_id));
//!     Ok::<_, Box<dyn std::error::Error>>(())
//! })
//! # }
//! ```
#![deny(missing_docs)]

mod ca;
mod certificate;
mod directory;
mod endpoint;
mod files;
mod identity;
mod pem;
mod revocation;
mod runtime;
mod shared;
mod tls;

pub use atoll_core::NodeId;
pub use ca::{CA_CERT_FILE, CA_KEY_FILE, ClusterCa, CreateError, IssueError, MAX_NAME_LEN};
pub use certificate::{CertificateError, NODE_NAME_SUFFIX, NodeCertificate, node_dns_name};
pub use directory::{
    CaDirectory, DirectoryError, IssuedFiles, IssuedNode, Listing, REVOKED_FILE, Revoked,
    SharedDirectory,
};
pub use endpoint::{BindError, BoundEndpoint, UdpBuffer, bind, connect, udp_socket};
pub use files::{LoadError, SaveError};
pub use identity::{
    GenerateError, KeyError, NodeIdentity, PUBLIC_KEY_LEN, SIGNATURE_LEN, node_id_of, verify,
};
pub use revocation::{
    ParseRevocationError, REVOCATION_CHECK_INTERVAL, RevocationList, RevocationWatch,
    RevocationWatcher,
};
pub use shared::{SHARED_CERT_FILE, SHARED_KEY_FILE, SharedIdentity};
pub use tls::{
    ALPN, GENERIC_SERVER_NAME, TlsConfigError, TransportSettings, TrustConfig, client_config,
    peer_node_id, server_config, server_name,
};

/// A fresh path under the system's temporary directory for one test: unique to the process
/// and thread, and removed first if an earlier run left it behind (not created).
#[cfg(test)]
pub(crate) fn test_path(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "atoll-net-{tag}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}
