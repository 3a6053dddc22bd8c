//! Node certificates: the `<id>.node.atoll` naming, what a certificate must say to be a
//! node's, and the certificate type nodes load and present.

use std::fmt;
use std::path::Path;

use atoll_core::{NodeId, ParseNodeIdError};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::oid_registry::OID_SIG_ED25519;

use crate::files::{self, LoadError, Replace, SaveError};
use crate::identity::{PUBLIC_KEY_LEN, node_id_of};

/// Every node certificate names its node as the DNS name `<hex node id>` + this suffix.
pub const NODE_NAME_SUFFIX: &str = ".node.atoll";

/// The DNS name that carries `id` in a node certificate and in the TLS server name:
/// `<32 hex digits>.node.atoll`.
pub fn node_dns_name(id: &NodeId) -> String {
    format!("{id}{NODE_NAME_SUFFIX}")
}

/// The node id in a `<hex id>.node.atoll` name, `None` for a name outside `.node.atoll`,
/// and an error for a name inside it whose first part is not a node id.
pub(crate) fn node_id_in_dns_name(name: &str) -> Option<Result<NodeId, ParseNodeIdError>> {
    let lower = name.to_ascii_lowercase();
    let lower = lower.strip_suffix('.').unwrap_or(&lower);
    lower
        .strip_suffix(NODE_NAME_SUFFIX)
        .map(|prefix| prefix.parse::<NodeId>())
}

/// Why a certificate is not usable as an atoll node (or CA) certificate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    /// No well-formed PEM `CERTIFICATE` block was found.
    #[error("no well-formed PEM \"CERTIFICATE\" block found ({reason})")]
    Pem {
        /// What the PEM reader reported.
        reason: String,
    },
    /// The DER is not an X.509 certificate.
    #[error("not a well-formed X.509 certificate ({reason})")]
    Malformed {
        /// What the parser reported.
        reason: String,
    },
    /// The certified key is not an Ed25519 key.
    #[error("the certified key is not Ed25519 (algorithm {algorithm})")]
    NotEd25519 {
        /// The key algorithm's OID.
        algorithm: String,
    },
    /// No DNS name `<hex id>.node.atoll` in the subject alternative names.
    #[error("the certificate names no node (no DNS name ending in {NODE_NAME_SUFFIX})")]
    NoNodeName,
    /// More than one `*.node.atoll` DNS name: a certificate names exactly one node.
    #[error("the certificate names {count} nodes; exactly one is allowed")]
    SeveralNodeNames {
        /// How many `*.node.atoll` names it carries.
        count: usize,
    },
    /// The `.node.atoll` name does not start with a node id.
    #[error("the node name {name:?} does not start with a node id")]
    BadNodeName {
        /// The offending name.
        name: String,
    },
    /// The node id in the certificate's name is not the one its key derives to.
    #[error(
        "the certificate claims node {claimed} but its key belongs to node {derived}; \
         it is rejected"
    )]
    NodeIdMismatch {
        /// The node id the subject alternative name claims.
        claimed: NodeId,
        /// The node id derived from the certified key.
        derived: NodeId,
    },
    /// The certificate has no subject common name (a CA names its cluster there).
    #[error("the certificate has no subject common name")]
    NoCommonName,
    /// The certificate cannot issue node certificates.
    #[error("the certificate cannot act as a CA ({reason})")]
    NotUsableAsCa {
        /// What rcgen reported.
        reason: String,
    },
}

/// What a certificate says about its subject, after the checks in [`inspect`].
#[derive(Debug, Clone)]
pub(crate) struct CertInfo {
    pub(crate) public_key: [u8; PUBLIC_KEY_LEN],
    pub(crate) node_id: NodeId,
    pub(crate) common_name: Option<String>,
}

pub(crate) fn parse_x509(der: &[u8]) -> Result<X509Certificate<'_>, CertificateError> {
    let (rest, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| CertificateError::Malformed {
            reason: e.to_string(),
        })?;
    if !rest.is_empty() {
        return Err(CertificateError::Malformed {
            reason: format!("{} trailing bytes after the certificate", rest.len()),
        });
    }
    Ok(cert)
}

/// Reads the Ed25519 key and common name of any certificate (a CA's too).
pub(crate) fn key_and_name(cert: &X509Certificate<'_>) -> Result<CertInfo, CertificateError> {
    let spki = cert.public_key();
    if spki.algorithm.algorithm != OID_SIG_ED25519 {
        return Err(CertificateError::NotEd25519 {
            algorithm: spki.algorithm.algorithm.to_id_string(),
        });
    }
    let public_key: [u8; PUBLIC_KEY_LEN] = spki
        .subject_public_key
        .data
        .as_ref()
        .try_into()
        .map_err(|_| CertificateError::NotEd25519 {
            algorithm: format!(
                "Ed25519 OID with a {}-byte key",
                spki.subject_public_key.data.len()
            ),
        })?;
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned);
    Ok(CertInfo {
        public_key,
        node_id: node_id_of(&public_key),
        common_name,
    })
}

/// Parses a node certificate and checks it is self-consistent: an Ed25519 key, and exactly
/// one `<id>.node.atoll` name whose id is the one the key derives to.
///
/// This says nothing about who issued it; the TLS verifiers check that separately.
pub(crate) fn inspect(der: &[u8]) -> Result<CertInfo, CertificateError> {
    let cert = parse_x509(der)?;
    let info = key_and_name(&cert)?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| CertificateError::Malformed {
            reason: format!("subject alternative names: {e}"),
        })?;
    let mut claimed = Vec::new();
    if let Some(san) = san {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(dns) = name
                && let Some(id) = node_id_in_dns_name(dns)
            {
                claimed.push(id.map_err(|_| CertificateError::BadNodeName {
                    name: (*dns).to_owned(),
                })?);
            }
        }
    }
    match claimed.as_slice() {
        [] => Err(CertificateError::NoNodeName),
        [id] if *id == info.node_id => Ok(info),
        [id] => Err(CertificateError::NodeIdMismatch {
            claimed: *id,
            derived: info.node_id,
        }),
        more => Err(CertificateError::SeveralNodeNames { count: more.len() }),
    }
}

/// A node's certificate: its own Ed25519 key, certified by the cluster CA (or the shared
/// self-signed certificate), naming the node as `<hex node id>.node.atoll` and carrying
/// the node's human-readable name as the subject common name.
///
/// A value of this type has been parsed and checked for self-consistency (the node id in
/// its name is the one its key derives to); whether it is trusted is decided at handshake
/// time against a [`TrustConfig`].
#[derive(Clone)]
pub struct NodeCertificate {
    pub(crate) der: CertificateDer<'static>,
    pub(crate) pem: String,
    pub(crate) node_id: NodeId,
    pub(crate) node_name: Option<String>,
}

impl NodeCertificate {
    /// Parses and checks a DER certificate.
    pub fn from_der(der: impl Into<Vec<u8>>) -> Result<Self, CertificateError> {
        let der = der.into();
        let info = inspect(&der)?;
        Ok(NodeCertificate {
            pem: crate::pem::encode("CERTIFICATE", &der),
            der: CertificateDer::from(der),
            node_id: info.node_id,
            node_name: info.common_name,
        })
    }

    /// Parses and checks the first PEM `CERTIFICATE` block in `pem`.
    pub fn from_pem(pem: &str) -> Result<Self, CertificateError> {
        let der =
            CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| CertificateError::Pem {
                reason: e.to_string(),
            })?;
        Self::from_der(der.to_vec())
    }

    /// The certificate as a PEM `CERTIFICATE` block.
    pub fn cert_pem(&self) -> &str {
        &self.pem
    }

    /// The certificate as DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.der
    }

    /// The node id derived from the certified key.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The node's human-readable name (the subject common name), if any.
    pub fn node_name(&self) -> Option<&str> {
        self.node_name.as_deref()
    }

    /// Writes the PEM to a new file (mode 0644); refuses if `path` exists.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), SaveError> {
        files::write(path.as_ref(), self.pem.as_bytes(), 0o644, Replace::No)
    }

    /// Writes the PEM (mode 0644), atomically replacing any existing file (renewal).
    pub fn save_replacing(&self, path: impl AsRef<Path>) -> Result<(), SaveError> {
        files::write(path.as_ref(), self.pem.as_bytes(), 0o644, Replace::Yes)
    }

    /// Reads and checks a certificate saved by [`NodeCertificate::save`].
    pub fn load(path: impl AsRef<Path>) -> Result<Self, LoadError> {
        let path = path.as_ref();
        let text = files::read_text(path)?;
        Self::from_pem(&text).map_err(|source| LoadError::Certificate {
            path: path.to_path_buf(),
            source,
        })
    }
}

impl fmt::Debug for NodeCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeCertificate")
            .field("node_id", &self.node_id)
            .field("node_name", &self.node_name)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::ClusterCa;
    use crate::identity::NodeIdentity;

    #[test]
    fn node_dns_names() {
        let id = NodeId::from_bytes([0xab; 16]);
        let name = node_dns_name(&id);
        assert_eq!(name, format!("{}.node.atoll", "ab".repeat(16)));
        assert_eq!(node_id_in_dns_name(&name), Some(Ok(id)));
        assert_eq!(node_id_in_dns_name(&name.to_uppercase()), Some(Ok(id)));
        assert_eq!(node_id_in_dns_name(&format!("{name}.")), Some(Ok(id)));
        assert_eq!(node_id_in_dns_name("peer.atoll"), None);
        assert_eq!(node_id_in_dns_name("node.atoll"), None);
        assert!(matches!(node_id_in_dns_name("x.node.atoll"), Some(Err(_))));
        assert!(matches!(node_id_in_dns_name(".node.atoll"), Some(Err(_))));
    }

    #[test]
    fn mismatched_claim_is_detected_by_inspection() {
        let ca = ClusterCa::create("test").unwrap();
        let node = NodeIdentity::generate().unwrap();
        let victim = NodeIdentity::generate().unwrap();
        let forged = ca
            .issue_with_claimed_node_id("evil", &node.public_key(), victim.node_id())
            .unwrap();
        assert_eq!(forged.node_id(), node.node_id());
        assert_eq!(
            inspect(forged.cert_der()).unwrap_err(),
            CertificateError::NodeIdMismatch {
                claimed: victim.node_id(),
                derived: node.node_id(),
            }
        );
        assert!(NodeCertificate::from_pem(forged.cert_pem()).is_err());
    }

    #[test]
    fn garbage_certificates_are_typed_errors() {
        assert!(matches!(
            NodeCertificate::from_pem("hello"),
            Err(CertificateError::Pem { .. })
        ));
        assert!(matches!(
            NodeCertificate::from_pem(&crate::pem::encode("CERTIFICATE", b"junk")),
            Err(CertificateError::Malformed { .. })
        ));
        assert!(matches!(
            NodeCertificate::from_der(Vec::new()),
            Err(CertificateError::Malformed { .. })
        ));
        // Trailing bytes after a valid certificate.
        let ca = ClusterCa::create("t").unwrap();
        let node = NodeIdentity::generate().unwrap();
        let mut der = ca
            .issue("n", &node.public_key())
            .unwrap()
            .cert_der()
            .to_vec();
        der.push(0);
        assert!(matches!(
            NodeCertificate::from_der(der),
            Err(CertificateError::Malformed { .. })
        ));
        // Truncation anywhere is an error, never a panic.
        let der = ca
            .issue("n", &node.public_key())
            .unwrap()
            .cert_der()
            .to_vec();
        for len in 0..der.len() {
            assert!(NodeCertificate::from_der(der[..len].to_vec()).is_err());
        }
    }

    #[test]
    fn non_ed25519_certificates_are_refused() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let params =
            rcgen::CertificateParams::new(vec![node_dns_name(&NodeId::from_bytes([1; 16]))])
                .unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert!(matches!(
            NodeCertificate::from_der(cert.der().to_vec()),
            Err(CertificateError::NotEd25519 { .. })
        ));
    }

    #[test]
    fn node_certificate_save_load() {
        let dir = crate::test_path("ca-nodecert");
        std::fs::create_dir_all(&dir).unwrap();
        let ca = ClusterCa::create("prod").unwrap();
        let node = NodeIdentity::generate().unwrap();
        let cert = ca.issue("n1", &node.public_key()).unwrap();
        let path = dir.join("node.pem");
        cert.save(&path).unwrap();
        assert!(matches!(cert.save(&path), Err(SaveError::Exists { .. })));
        let loaded = NodeCertificate::load(&path).unwrap();
        assert_eq!(loaded.cert_der(), cert.cert_der());
        assert_eq!(loaded.node_id(), node.node_id());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
