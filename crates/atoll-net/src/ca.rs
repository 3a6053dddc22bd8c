//! The cluster certificate authority: creating it, issuing node certificates, saving and
//! loading it.

use std::fmt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use atoll_core::NodeId;
use ring::rand::{SecureRandom, SystemRandom};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::certificate::{
    CertificateError, NodeCertificate, key_and_name, node_dns_name, parse_x509,
};
use crate::files::{self, LoadError, Replace, SaveError};
use crate::identity::{GenerateError, NodeIdentity, PUBLIC_KEY_LEN, node_id_of};
use crate::revocation::RevocationList;
use crate::tls::TrustConfig;

/// Longest node or cluster name accepted as a certificate common name (X.520 upper bound).
pub const MAX_NAME_LEN: usize = 64;

const CA_VALIDITY_YEARS: i32 = 30;
const NODE_VALIDITY_YEARS: i32 = 10;

/// Why a CA or shared identity could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// The cluster name cannot be a certificate common name; nothing was created.
    #[error("cluster name {name:?} is unusable: {reason}")]
    BadClusterName {
        /// The rejected name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// No key or serial number could be drawn; nothing was created.
    #[error("could not generate the key or serial number: {0}")]
    Key(#[from] GenerateError),
    /// The certificate could not be built; nothing was created.
    #[error("could not build the certificate: {0}")]
    Certificate(#[source] rcgen::Error),
}

/// Why a node certificate could not be issued. Nothing was issued.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The node name cannot be a certificate common name.
    #[error("node name {name:?} is unusable: {reason}")]
    BadNodeName {
        /// The rejected name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// No random serial number could be drawn.
    #[error("could not draw a serial number: {0}")]
    Random(#[from] GenerateError),
    /// rcgen could not build or sign the certificate.
    #[error("could not build the certificate for node {node_name:?}: {source}")]
    Certificate {
        /// The node the certificate was for.
        node_name: String,
        /// What rcgen reported.
        #[source]
        source: rcgen::Error,
    },
}

pub(crate) fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        Err("it is empty")
    } else if name.len() > MAX_NAME_LEN {
        Err("it is longer than 64 bytes")
    } else if name.chars().any(char::is_control) {
        Err("it contains control characters")
    } else {
        Ok(())
    }
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year as i32, month as u8, day as u8)
}

/// Valid from yesterday (tolerating clock skew between nodes) for `years` years.
pub(crate) fn set_validity(params: &mut rcgen::CertificateParams, years: i32) {
    let today = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| (d.as_secs() / 86_400) as i64)
        .unwrap_or(0);
    let (y, m, d) = civil_from_days(today - 1);
    params.not_before = rcgen::date_time_ymd(y, m, d);
    let (y, m, d) = civil_from_days(today);
    // Day 28 at most, so the date exists in every month of every year.
    params.not_after = rcgen::date_time_ymd(y + years, m, d.min(28));
}

pub(crate) fn random_serial() -> Result<rcgen::SerialNumber, GenerateError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| GenerateError)?;
    // Positive, and exactly 16 bytes long in DER.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(rcgen::SerialNumber::from_slice(&bytes))
}

/// A raw Ed25519 public key in the form rcgen certifies.
struct Ed25519Public<'a>(&'a [u8; PUBLIC_KEY_LEN]);

impl rcgen::PublicKeyData for Ed25519Public<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.0
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ED25519
    }
}

/// Parameters of a node (leaf) certificate claiming `claimed`.
pub(crate) fn node_params(
    node_name: &str,
    claimed: &NodeId,
    serial: rcgen::SerialNumber,
) -> Result<rcgen::CertificateParams, rcgen::Error> {
    let mut params = rcgen::CertificateParams::new(vec![node_dns_name(claimed)])?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, node_name);
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.serial_number = Some(serial);
    set_validity(&mut params, NODE_VALIDITY_YEARS);
    Ok(params)
}

/// The cluster's certificate authority: a self-signed Ed25519 CA certificate and its key.
///
/// Every node gets a certificate over its own key from [`ClusterCa::issue`]; nodes trust
/// exactly this CA ([`ClusterCa::trust`]). The CA key only needs to exist where
/// certificates are issued; nodes need only the CA certificate.
///
/// # Example
///
/// ```
/// use atoll_net::{ClusterCa, NodeIdentity, RevocationList};
///
/// let ca = ClusterCa::create("prod")?;
/// let node = NodeIdentity::generate()?;
/// let cert = ca.issue("node-a", &node.public_key())?;
/// assert_eq!(cert.node_id(), node.node_id());
/// assert_eq!(cert.node_name(), Some("node-a"));
///
/// // What every node of the cluster trusts; revoking takes effect on the next handshake.
/// let revoked = RevocationList::new();
/// let trust = ca.trust(revoked.clone());
/// revoked.revoke(node.node_id());
/// # let _ = trust;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ClusterCa {
    cluster_name: String,
    key: NodeIdentity,
    der: CertificateDer<'static>,
    pem: String,
}

/// File name of the CA certificate inside a CA directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA private key inside a CA directory (mode 0600).
pub const CA_KEY_FILE: &str = "ca.key";

impl ClusterCa {
    /// Creates a CA for `cluster_name` with a fresh Ed25519 key. The name becomes the CA
    /// certificate's common name.
    pub fn create(cluster_name: &str) -> Result<Self, CreateError> {
        check_name(cluster_name).map_err(|reason| CreateError::BadClusterName {
            name: cluster_name.to_owned(),
            reason,
        })?;
        let key = NodeIdentity::generate()?;
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "atoll");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cluster_name);
        // Node certificates are issued directly by the CA: no intermediates.
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial()?);
        set_validity(&mut params, CA_VALIDITY_YEARS);
        let cert = params
            .self_signed(key.cert_key())
            .map_err(CreateError::Certificate)?;
        Ok(ClusterCa {
            cluster_name: cluster_name.to_owned(),
            key,
            pem: crate::pem::encode("CERTIFICATE", cert.der()),
            der: cert.der().clone(),
        })
    }

    /// The cluster name (the CA certificate's common name).
    pub fn cluster_name(&self) -> &str {
        &self.cluster_name
    }

    /// The CA certificate as DER: the trust root nodes need.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.der
    }

    /// The CA certificate as PEM.
    pub fn cert_pem(&self) -> &str {
        &self.pem
    }

    /// Trust in this CA, with `revoked` consulted on every handshake.
    pub fn trust(&self, revoked: RevocationList) -> TrustConfig {
        TrustConfig::Ca {
            ca_cert_der: self.der.clone(),
            revoked,
        }
    }

    /// Issues a certificate over `node_public_key` (the node's raw Ed25519 key) naming the
    /// node `<node id>.node.atoll` and `node_name` (common name).
    pub fn issue(
        &self,
        node_name: &str,
        node_public_key: &[u8; PUBLIC_KEY_LEN],
    ) -> Result<NodeCertificate, IssueError> {
        self.issue_claiming(node_name, node_public_key, &node_id_of(node_public_key))
    }

    /// Issues a certificate whose name claims `claimed` while certifying
    /// `node_public_key`: the forgery a compromised or careless CA could produce. For tests
    /// of the handshake's self-consistency check only.
    #[doc(hidden)]
    pub fn issue_with_claimed_node_id(
        &self,
        node_name: &str,
        node_public_key: &[u8; PUBLIC_KEY_LEN],
        claimed: NodeId,
    ) -> Result<NodeCertificate, IssueError> {
        self.issue_claiming(node_name, node_public_key, &claimed)
    }

    fn issue_claiming(
        &self,
        node_name: &str,
        node_public_key: &[u8; PUBLIC_KEY_LEN],
        claimed: &NodeId,
    ) -> Result<NodeCertificate, IssueError> {
        check_name(node_name).map_err(|reason| IssueError::BadNodeName {
            name: node_name.to_owned(),
            reason,
        })?;
        let build_err = |source| IssueError::Certificate {
            node_name: node_name.to_owned(),
            source,
        };
        let params = node_params(node_name, claimed, random_serial()?).map_err(build_err)?;
        let issuer =
            rcgen::Issuer::from_ca_cert_der(&self.der, self.key.cert_key()).map_err(build_err)?;
        let cert = params
            .signed_by(&Ed25519Public(node_public_key), &issuer)
            .map_err(build_err)?;
        Ok(NodeCertificate {
            pem: crate::pem::encode("CERTIFICATE", cert.der()),
            der: cert.der().clone(),
            node_id: node_id_of(node_public_key),
            node_name: Some(node_name.to_owned()),
        })
    }

    /// Writes `ca.pem` (0644) and `ca.key` (0600) into `dir`, creating it if needed.
    /// Refuses, writing nothing, if either file exists.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<(), SaveError> {
        self.save_files(dir.as_ref(), Replace::No)
    }

    /// Like [`ClusterCa::save`], but atomically replaces existing files.
    pub fn save_replacing(&self, dir: impl AsRef<Path>) -> Result<(), SaveError> {
        self.save_files(dir.as_ref(), Replace::Yes)
    }

    fn save_files(&self, dir: &Path, replace: Replace) -> Result<(), SaveError> {
        save_pair(
            dir,
            (CA_CERT_FILE, self.pem.as_bytes()),
            (CA_KEY_FILE, &self.key),
            replace,
        )
    }

    /// Reads a CA saved by [`ClusterCa::save`] and checks the key belongs to the certificate.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self, LoadError> {
        let dir = dir.as_ref();
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let cert_err = |source| LoadError::Certificate {
            path: cert_path.clone(),
            source,
        };
        let text = files::read_text(&cert_path)?;
        let der = CertificateDer::from_pem_slice(text.as_bytes())
            .map_err(|e| {
                cert_err(CertificateError::Pem {
                    reason: e.to_string(),
                })
            })?
            .into_owned();
        let info = key_and_name(&parse_x509(&der).map_err(cert_err)?).map_err(cert_err)?;
        let cluster_name = info
            .common_name
            .ok_or_else(|| cert_err(CertificateError::NoCommonName))?;
        let key = NodeIdentity::load(&key_path)?;
        if key.public_key() != info.public_key {
            return Err(LoadError::KeyMismatch {
                cert_path,
                key_path,
            });
        }
        // Fail now, not at the first issue, if rcgen cannot issue under this certificate.
        rcgen::Issuer::from_ca_cert_der(&der, key.cert_key()).map_err(|e| {
            cert_err(CertificateError::NotUsableAsCa {
                reason: e.to_string(),
            })
        })?;
        Ok(ClusterCa {
            cluster_name,
            key,
            pem: crate::pem::encode("CERTIFICATE", &der),
            der,
        })
    }
}

impl fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterCa")
            .field("cluster_name", &self.cluster_name)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// Writes a certificate and its key side by side, checking both targets first.
pub(crate) fn save_pair(
    dir: &Path,
    (cert_file, cert_pem): (&str, &[u8]),
    (key_file, key): (&str, &NodeIdentity),
    replace: Replace,
) -> Result<(), SaveError> {
    files::create_dir(dir)?;
    let cert_path = dir.join(cert_file);
    let key_path = dir.join(key_file);
    if replace == Replace::No {
        files::ensure_absent(&cert_path)?;
        files::ensure_absent(&key_path)?;
    }
    // Key first: a certificate without its key is useless, a key alone is merely unused.
    files::write(&key_path, key.to_pem().as_bytes(), 0o600, replace)?;
    files::write(&cert_path, cert_pem, 0o644, replace)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certificate::inspect;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(20_000), (2024, 10, 4));
        assert_eq!(civil_from_days(2_932_896), (9999, 12, 31));
    }

    #[test]
    fn issued_certificate_names_the_node() {
        let ca = ClusterCa::create("test").unwrap();
        let node = NodeIdentity::generate().unwrap();
        let cert = ca.issue("node-a", &node.public_key()).unwrap();
        assert_eq!(cert.node_id(), node.node_id());
        assert_eq!(cert.node_name(), Some("node-a"));
        let info = inspect(cert.cert_der()).unwrap();
        assert_eq!(info.public_key, node.public_key());
        // PEM and DER agree and re-parse to the same thing.
        let again = NodeCertificate::from_pem(cert.cert_pem()).unwrap();
        assert_eq!(again.cert_der(), cert.cert_der());
        assert_eq!(again.node_id(), cert.node_id());
        assert_eq!(again.node_name(), Some("node-a"));
    }

    #[test]
    fn bad_names_are_refused() {
        assert!(matches!(
            ClusterCa::create(""),
            Err(CreateError::BadClusterName { .. })
        ));
        let ca = ClusterCa::create("test").unwrap();
        let key = [9u8; 32];
        assert!(matches!(
            ca.issue(&"x".repeat(65), &key),
            Err(IssueError::BadNodeName { .. })
        ));
        assert!(matches!(
            ca.issue("a\nb", &key),
            Err(IssueError::BadNodeName { .. })
        ));
    }

    #[test]
    fn ca_certificate_is_not_a_node_certificate() {
        let ca = ClusterCa::create("test").unwrap();
        assert_eq!(
            NodeCertificate::from_der(ca.cert_der().to_vec()).unwrap_err(),
            CertificateError::NoNodeName
        );
    }

    #[test]
    fn ca_save_load_round_trip() {
        let dir = crate::test_path("ca-roundtrip");
        let ca = ClusterCa::create("prod").unwrap();
        ca.save(&dir).unwrap();
        let key_mode = std::fs::metadata(dir.join(CA_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(key_mode & 0o777, 0o600, "mode {key_mode:o}");

        let loaded = ClusterCa::load(&dir).unwrap();
        assert_eq!(loaded.cluster_name(), "prod");
        assert_eq!(loaded.cert_der(), ca.cert_der());
        assert_eq!(loaded.cert_pem(), ca.cert_pem());

        // The loaded CA issues certificates under the same issuer name and key.
        let node = NodeIdentity::generate().unwrap();
        let cert = loaded.issue("n", &node.public_key()).unwrap();
        let (_, leaf) = x509_parser::parse_x509_certificate(cert.cert_der()).unwrap();
        let (_, root) = x509_parser::parse_x509_certificate(ca.cert_der()).unwrap();
        assert_eq!(leaf.issuer().as_raw(), root.subject().as_raw());
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::ED25519,
            &root.public_key().subject_public_key.data,
        )
        .verify(leaf.tbs_certificate.as_ref(), &leaf.signature_value.data)
        .unwrap();

        // Saving again refuses and leaves the files alone.
        let other = ClusterCa::create("other").unwrap();
        assert!(matches!(other.save(&dir), Err(SaveError::Exists { .. })));
        assert_eq!(ClusterCa::load(&dir).unwrap().cert_der(), ca.cert_der());
        other.save_replacing(&dir).unwrap();
        assert_eq!(ClusterCa::load(&dir).unwrap().cluster_name(), "other");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn ca_load_detects_a_foreign_key() {
        let dir = crate::test_path("ca-foreign");
        let ca = ClusterCa::create("prod").unwrap();
        ca.save(&dir).unwrap();
        NodeIdentity::generate()
            .unwrap()
            .save_replacing(dir.join(CA_KEY_FILE))
            .unwrap();
        assert!(matches!(
            ClusterCa::load(&dir),
            Err(LoadError::KeyMismatch { .. })
        ));
        std::fs::write(dir.join(CA_CERT_FILE), "garbage").unwrap();
        assert!(matches!(
            ClusterCa::load(&dir),
            Err(LoadError::Certificate { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(ClusterCa::load(&dir), Err(LoadError::Read { .. })));
    }
}
