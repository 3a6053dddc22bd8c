//! The shared-identity alternative to a CA: every node presents one self-signed
//! certificate, and each proves its own node id with its own key.

use std::fmt;
use std::path::Path;

use atoll_core::NodeId;

use crate::ca::{CreateError, check_name, node_params, random_serial, save_pair};
use crate::certificate::NodeCertificate;
use crate::files::{LoadError, Replace, SaveError};
use crate::identity::NodeIdentity;
use crate::tls::TrustConfig;

/// Shared-identity mode: one self-signed certificate and key that every node of the
/// cluster uses, pinned as the only trust root.
///
/// Simpler to deploy than a CA (copy two files to every node) but weaker: every node has
/// the same TLS identity, so [`peer_node_id`](crate::peer_node_id) returns the same id for
/// every peer (this identity's), nodes cannot be told apart or revoked individually at
/// the TLS layer, and any node's key compromise compromises the whole cluster. A node's
/// own id must then be established above TLS.
///
/// # Example
///
/// ```
/// use atoll_net::SharedIdentity;
///
/// let shared = SharedIdentity::generate("lab")?;
/// assert_eq!(shared.certificate().node_id(), shared.node_id());
/// let trust = shared.trust();
/// # let _ = trust;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct SharedIdentity {
    identity: NodeIdentity,
    certificate: NodeCertificate,
}

/// File name of the shared certificate inside a shared-identity directory.
pub const SHARED_CERT_FILE: &str = "shared.pem";
/// File name of the shared private key inside a shared-identity directory (mode 0600).
pub const SHARED_KEY_FILE: &str = "shared.key";

impl SharedIdentity {
    /// Generates a key and a self-signed certificate named `<id>.node.atoll`, with
    /// `cluster_name` as its common name.
    pub fn generate(cluster_name: &str) -> Result<Self, CreateError> {
        check_name(cluster_name).map_err(|reason| CreateError::BadClusterName {
            name: cluster_name.to_owned(),
            reason,
        })?;
        let identity = NodeIdentity::generate()?;
        let mut params = node_params(cluster_name, &identity.node_id(), random_serial()?)
            .map_err(CreateError::Certificate)?;
        // Self-signed end-entity certificate: it is pinned, never used to issue.
        params.is_ca = rcgen::IsCa::NoCa;
        let cert = params
            .self_signed(identity.cert_key())
            .map_err(CreateError::Certificate)?;
        let certificate = NodeCertificate {
            pem: crate::pem::encode("CERTIFICATE", cert.der()),
            der: cert.der().clone(),
            node_id: identity.node_id(),
            node_name: Some(cluster_name.to_owned()),
        };
        Ok(SharedIdentity {
            identity,
            certificate,
        })
    }

    /// The shared key.
    pub fn identity(&self) -> &NodeIdentity {
        &self.identity
    }

    /// The shared certificate.
    pub fn certificate(&self) -> &NodeCertificate {
        &self.certificate
    }

    /// The node id of the shared key: what every peer presents.
    pub fn node_id(&self) -> NodeId {
        self.identity.node_id()
    }

    /// Trust pinned to exactly this certificate.
    pub fn trust(&self) -> TrustConfig {
        TrustConfig::Shared {
            cert_der: self.certificate.der.clone(),
        }
    }

    /// Writes `shared.pem` (0644) and `shared.key` (0600) into `dir`, creating it if
    /// needed. Refuses, writing nothing, if either file exists.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<(), SaveError> {
        self.save_files(dir.as_ref(), Replace::No)
    }

    /// Like [`SharedIdentity::save`], but atomically replaces existing files.
    pub fn save_replacing(&self, dir: impl AsRef<Path>) -> Result<(), SaveError> {
        self.save_files(dir.as_ref(), Replace::Yes)
    }

    fn save_files(&self, dir: &Path, replace: Replace) -> Result<(), SaveError> {
        save_pair(
            dir,
            (SHARED_CERT_FILE, self.certificate.pem.as_bytes()),
            (SHARED_KEY_FILE, &self.identity),
            replace,
        )
    }

    /// Reads an identity saved by [`SharedIdentity::save`] and checks the key belongs to
    /// the certificate.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self, LoadError> {
        let dir = dir.as_ref();
        let cert_path = dir.join(SHARED_CERT_FILE);
        let key_path = dir.join(SHARED_KEY_FILE);
        let certificate = NodeCertificate::load(&cert_path)?;
        let identity = NodeIdentity::load(&key_path)?;
        if identity.node_id() != certificate.node_id() {
            return Err(LoadError::KeyMismatch {
                cert_path,
                key_path,
            });
        }
        Ok(SharedIdentity {
            identity,
            certificate,
        })
    }
}

impl fmt::Debug for SharedIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedIdentity")
            .field("node_id", &self.identity.node_id())
            .field("certificate", &self.certificate)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certificate::inspect;

    #[test]
    fn shared_identity_round_trip() {
        let dir = crate::test_path("ca-shared");
        let shared = SharedIdentity::generate("lab").unwrap();
        assert_eq!(shared.certificate().node_id(), shared.node_id());
        inspect(shared.certificate().cert_der()).unwrap();
        shared.save(&dir).unwrap();
        let loaded = SharedIdentity::load(&dir).unwrap();
        assert_eq!(loaded.node_id(), shared.node_id());
        assert_eq!(
            loaded.certificate().cert_der(),
            shared.certificate().cert_der()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
