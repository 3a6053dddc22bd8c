//! Mutually authenticated TLS 1.3 for quinn: configurations and the certificate verifiers.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use atoll_core::NodeId;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError as TlsCertError, DigitallySignedStruct, DistinguishedName, OtherError,
    RootCertStore, SignatureScheme,
};

use crate::certificate::{
    CertificateError, NodeCertificate, inspect, node_dns_name, node_id_in_dns_name,
};
use crate::identity::NodeIdentity;
use crate::revocation::RevocationList;

/// The ALPN protocol id every atoll connection negotiates.
pub const ALPN: &[u8] = b"atoll/1";

/// The server name to connect with when the peer's node id is not known yet (first
/// contact by address): the server is then checked only for chain and self-consistency.
pub const GENERIC_SERVER_NAME: &str = "peer.atoll";

/// The TLS server name to connect with: `<hex id>.node.atoll` when the peer's id is
/// known (the handshake then fails unless the server is that node), else
/// [`GENERIC_SERVER_NAME`].
pub fn server_name(expected: Option<&NodeId>) -> String {
    match expected {
        Some(id) => node_dns_name(id),
        None => GENERIC_SERVER_NAME.to_owned(),
    }
}

/// What a node trusts.
#[derive(Clone)]
pub enum TrustConfig {
    /// Certificates issued by this cluster CA (the only root), except revoked node ids.
    Ca {
        /// The CA certificate (DER).
        ca_cert_der: CertificateDer<'static>,
        /// Node ids refused at handshake; shared, so updates reach running endpoints.
        revoked: RevocationList,
    },
    /// Exactly this certificate, byte for byte (shared-identity mode).
    Shared {
        /// The pinned certificate (DER).
        cert_der: CertificateDer<'static>,
    },
}

impl fmt::Debug for TrustConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrustConfig::Ca { revoked, .. } => f
                .debug_struct("TrustConfig::Ca")
                .field("revoked", revoked)
                .finish_non_exhaustive(),
            TrustConfig::Shared { .. } => f
                .debug_struct("TrustConfig::Shared")
                .finish_non_exhaustive(),
        }
    }
}

/// QUIC transport tuning shared by the server and client side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportSettings {
    /// How often to send a keep-alive when idle; `None` disables keep-alives.
    pub keep_alive_interval: Option<Duration>,
    /// A connection silent this long is closed (should exceed the keep-alive interval).
    pub max_idle_timeout: Duration,
    /// Buffer for received datagrams; `None` disables receiving datagrams.
    pub datagram_receive_buffer: Option<usize>,
    /// Buffer for datagrams waiting to be sent.
    pub datagram_send_buffer: usize,
    /// The kernel receive and send buffer asked for the endpoint's UDP socket, in bytes
    /// (the kernel caps it at `net.core.rmem_max` / `wmem_max`). A burst of datagrams larger
    /// than the receive buffer is dropped while the endpoint's thread is busy, and QUIC then
    /// retransmits and cuts its congestion window: large messages need room.
    pub udp_buffer: usize,
}

impl Default for TransportSettings {
    /// Keep-alive every 5 s, idle timeout 30 s, datagrams on with 1 MiB buffers, 4 MiB
    /// UDP socket buffers.
    fn default() -> Self {
        TransportSettings {
            keep_alive_interval: Some(Duration::from_secs(5)),
            max_idle_timeout: Duration::from_secs(30),
            datagram_receive_buffer: Some(1 << 20),
            datagram_send_buffer: 1 << 20,
            udp_buffer: 4 << 20,
        }
    }
}

impl TransportSettings {
    /// The quinn transport configuration these settings describe.
    pub fn transport_config(&self) -> Result<quinn::TransportConfig, TlsConfigError> {
        let idle = quinn::IdleTimeout::try_from(self.max_idle_timeout)
            .map_err(|_| TlsConfigError::IdleTimeout(self.max_idle_timeout))?;
        let mut transport = quinn::TransportConfig::default();
        transport
            .keep_alive_interval(self.keep_alive_interval)
            .max_idle_timeout(Some(idle))
            .datagram_receive_buffer_size(self.datagram_receive_buffer)
            .datagram_send_buffer_size(self.datagram_send_buffer);
        Ok(transport)
    }
}

/// Why a server or client configuration could not be built. Nothing was built.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    /// The certificate is not over the given key.
    #[error("the certificate is for node {cert_node} but the key belongs to node {key_node}")]
    KeyMismatch {
        /// The node id the certificate's key derives to.
        cert_node: NodeId,
        /// The node id of the identity given.
        key_node: NodeId,
    },
    /// The CA certificate cannot be a trust anchor.
    #[error("the CA certificate is not usable as a trust root: {0}")]
    TrustRoot(#[source] rustls::Error),
    /// rustls could not build the chain verifier.
    #[error("could not build the certificate chain verifier: {0}")]
    Verifier(#[source] rustls::server::VerifierBuilderError),
    /// rustls rejected the certificate, key or protocol settings.
    #[error("rustls rejected the TLS configuration: {0}")]
    Rustls(#[source] rustls::Error),
    /// The crypto provider lacks the cipher suite QUIC's initial packets need.
    #[error("the crypto provider lacks TLS_AES_128_GCM_SHA256, which QUIC requires: {0}")]
    NoInitialCipherSuite(#[source] quinn::crypto::rustls::NoInitialCipherSuite),
    /// The idle timeout is too large for QUIC.
    #[error("idle timeout {0:?} is too large for QUIC (max 2^62 ms)")]
    IdleTimeout(Duration),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn key_for(
    identity: &NodeIdentity,
    cert: &NodeCertificate,
) -> Result<PrivateKeyDer<'static>, TlsConfigError> {
    if identity.node_id() != cert.node_id() {
        return Err(TlsConfigError::KeyMismatch {
            cert_node: cert.node_id(),
            key_node: identity.node_id(),
        });
    }
    Ok(PrivateKeyDer::Pkcs8(identity.to_pkcs8_der()))
}

fn root_store(ca_cert_der: &CertificateDer<'static>) -> Result<Arc<RootCertStore>, TlsConfigError> {
    let mut roots = RootCertStore::empty();
    roots
        .add(ca_cert_der.clone())
        .map_err(TlsConfigError::TrustRoot)?;
    Ok(Arc::new(roots))
}

/// The quinn server configuration for a node presenting `cert` (over `identity`'s key),
/// requiring and verifying client certificates according to `trust`.
///
/// TLS 1.3 only, ALPN `atoll/1`, no session resumption (every handshake verifies the
/// peer afresh, so revocations apply to the next connection).
pub fn server_config(
    identity: &NodeIdentity,
    cert: &NodeCertificate,
    trust: &TrustConfig,
    settings: &TransportSettings,
) -> Result<quinn::ServerConfig, TlsConfigError> {
    let key = key_for(identity, cert)?;
    let provider = provider();
    let mode = match trust {
        TrustConfig::Ca {
            ca_cert_der,
            revoked,
        } => ClientMode::Ca {
            webpki: WebPkiClientVerifier::builder_with_provider(
                root_store(ca_cert_der)?,
                provider.clone(),
            )
            .build()
            .map_err(TlsConfigError::Verifier)?,
            revoked: revoked.clone(),
        },
        TrustConfig::Shared { cert_der } => ClientMode::Shared {
            pinned: cert_der.clone(),
        },
    };
    let verifier = Arc::new(ClientVerifier {
        mode,
        algorithms: provider.signature_verification_algorithms,
    });
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsConfigError::Rustls)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![cert.cert_der().clone()], key)
        .map_err(TlsConfigError::Rustls)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    // Resumption would skip certificate verification, and with it the revocation check.
    tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    tls.send_tls13_tickets = 0;
    let quic = QuicServerConfig::try_from(tls).map_err(TlsConfigError::NoInitialCipherSuite)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(Arc::new(settings.transport_config()?));
    Ok(config)
}

/// The quinn client configuration for a node presenting `cert` (over `identity`'s key)
/// and verifying servers according to `trust`.
///
/// Connect with [`server_name`]`(Some(&id))` to require that the server is node `id`, or
/// with [`GENERIC_SERVER_NAME`] when its id is not known yet.
pub fn client_config(
    identity: &NodeIdentity,
    cert: &NodeCertificate,
    trust: &TrustConfig,
    settings: &TransportSettings,
) -> Result<quinn::ClientConfig, TlsConfigError> {
    let key = key_for(identity, cert)?;
    let provider = provider();
    let mode = match trust {
        TrustConfig::Ca {
            ca_cert_der,
            revoked,
        } => ServerMode::Ca {
            webpki: WebPkiServerVerifier::builder_with_provider(
                root_store(ca_cert_der)?,
                provider.clone(),
            )
            .build()
            .map_err(TlsConfigError::Verifier)?,
            revoked: revoked.clone(),
        },
        TrustConfig::Shared { cert_der } => ServerMode::Shared {
            pinned: cert_der.clone(),
        },
    };
    let verifier = Arc::new(ServerVerifier {
        mode,
        algorithms: provider.signature_verification_algorithms,
    });
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsConfigError::Rustls)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(vec![cert.cert_der().clone()], key)
        .map_err(TlsConfigError::Rustls)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.resumption = rustls::client::Resumption::disabled();
    tls.enable_early_data = false;
    let quic = QuicClientConfig::try_from(tls).map_err(TlsConfigError::NoInitialCipherSuite)?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(Arc::new(settings.transport_config()?));
    Ok(config)
}

/// The node id of the peer of an established connection, derived from the key in the
/// certificate it presented (already verified during the handshake). `None` before the
/// handshake completes or if the peer presented no certificate.
pub fn peer_node_id(conn: &quinn::Connection) -> Option<NodeId> {
    let identity = conn.peer_identity()?;
    let certs = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    let leaf = certs.first()?;
    inspect(leaf).ok().map(|info| info.node_id)
}

/// Why a peer's certificate was refused, beyond what the chain check reports.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("peer certificate is not a valid atoll node certificate: {0}")]
    Certificate(#[from] CertificateError),
    #[error("peer certificate is not the pinned shared certificate")]
    NotPinned,
    #[error("expected node {expected} but the server is node {actual}")]
    WrongNode { expected: NodeId, actual: NodeId },
    #[error("server name {0:?} is inside .node.atoll but does not start with a node id")]
    BadServerName(String),
}

fn refuse(side: &str, refusal: Refusal) -> rustls::Error {
    tracing::warn!(side, %refusal, "refusing peer certificate");
    rustls::Error::InvalidCertificate(TlsCertError::Other(OtherError(Arc::new(refusal))))
}

fn refuse_revoked(side: &str, id: &NodeId) -> rustls::Error {
    tracing::warn!(side, node = %id, "refusing revoked node");
    rustls::Error::InvalidCertificate(TlsCertError::Revoked)
}

fn chain_failed(side: &str, err: rustls::Error) -> rustls::Error {
    tracing::warn!(side, error = %err, "peer certificate chain rejected");
    err
}

/// Checks the peer's certificate on the client side (the server's certificate).
struct ServerVerifier {
    mode: ServerMode,
    algorithms: WebPkiSupportedAlgorithms,
}

enum ServerMode {
    Ca {
        webpki: Arc<WebPkiServerVerifier>,
        revoked: RevocationList,
    },
    Shared {
        pinned: CertificateDer<'static>,
    },
}

impl fmt::Debug for ServerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match self.mode {
            ServerMode::Ca { .. } => "ca",
            ServerMode::Shared { .. } => "shared",
        };
        f.debug_struct("ServerVerifier")
            .field("mode", &mode)
            .finish_non_exhaustive()
    }
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        const SIDE: &str = "client";
        let expected = match server_name {
            ServerName::DnsName(dns) => match node_id_in_dns_name(dns.as_ref()) {
                Some(Ok(id)) => Some(id),
                Some(Err(_)) => {
                    return Err(refuse(
                        SIDE,
                        Refusal::BadServerName(dns.as_ref().to_owned()),
                    ));
                }
                None => None,
            },
            _ => None,
        };
        let leaf = inspect(end_entity).map_err(|e| refuse(SIDE, e.into()))?;
        match &self.mode {
            ServerMode::Ca { webpki, revoked } => {
                // Check the chain under the name the key derives to; `inspect` has already
                // made sure it is the only node name the certificate carries.
                let own_name = ServerName::try_from(node_dns_name(&leaf.node_id))
                    .map_err(|_| refuse(SIDE, CertificateError::NoNodeName.into()))?;
                webpki
                    .verify_server_cert(end_entity, intermediates, &own_name, ocsp_response, now)
                    .map_err(|e| chain_failed(SIDE, e))?;
                if revoked.is_revoked(&leaf.node_id) {
                    return Err(refuse_revoked(SIDE, &leaf.node_id));
                }
            }
            ServerMode::Shared { pinned } => {
                if end_entity.as_ref() != pinned.as_ref() {
                    return Err(refuse(SIDE, Refusal::NotPinned));
                }
            }
        }
        if let Some(expected) = expected
            && expected != leaf.node_id
        {
            return Err(refuse(
                SIDE,
                Refusal::WrongNode {
                    expected,
                    actual: leaf.node_id,
                },
            ));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Checks the peer's certificate on the server side (the client's certificate).
struct ClientVerifier {
    mode: ClientMode,
    algorithms: WebPkiSupportedAlgorithms,
}

enum ClientMode {
    Ca {
        webpki: Arc<dyn ClientCertVerifier>,
        revoked: RevocationList,
    },
    Shared {
        pinned: CertificateDer<'static>,
    },
}

impl fmt::Debug for ClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match self.mode {
            ClientMode::Ca { .. } => "ca",
            ClientMode::Shared { .. } => "shared",
        };
        f.debug_struct("ClientVerifier")
            .field("mode", &mode)
            .finish_non_exhaustive()
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        match &self.mode {
            ClientMode::Ca { webpki, .. } => webpki.root_hint_subjects(),
            ClientMode::Shared { .. } => &[],
        }
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        const SIDE: &str = "server";
        let leaf = inspect(end_entity).map_err(|e| refuse(SIDE, e.into()))?;
        match &self.mode {
            ClientMode::Ca { webpki, revoked } => {
                webpki
                    .verify_client_cert(end_entity, intermediates, now)
                    .map_err(|e| chain_failed(SIDE, e))?;
                if revoked.is_revoked(&leaf.node_id) {
                    return Err(refuse_revoked(SIDE, &leaf.node_id));
                }
            }
            ClientMode::Shared { pinned } => {
                if end_entity.as_ref() != pinned.as_ref() {
                    return Err(refuse(SIDE, Refusal::NotPinned));
                }
            }
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::ClusterCa;
    use crate::identity::NodeIdentity;

    fn ca_server_verifier(ca: &ClusterCa, revoked: &RevocationList) -> ServerVerifier {
        let provider = provider();
        let webpki = WebPkiServerVerifier::builder_with_provider(
            root_store(ca.cert_der()).unwrap(),
            provider.clone(),
        )
        .build()
        .unwrap();
        ServerVerifier {
            mode: ServerMode::Ca {
                webpki,
                revoked: revoked.clone(),
            },
            algorithms: provider.signature_verification_algorithms,
        }
    }

    fn ca_client_verifier(ca: &ClusterCa, revoked: &RevocationList) -> ClientVerifier {
        let provider = provider();
        let webpki = WebPkiClientVerifier::builder_with_provider(
            root_store(ca.cert_der()).unwrap(),
            provider.clone(),
        )
        .build()
        .unwrap();
        ClientVerifier {
            mode: ClientMode::Ca {
                webpki,
                revoked: revoked.clone(),
            },
            algorithms: provider.signature_verification_algorithms,
        }
    }

    fn check_server(
        v: &ServerVerifier,
        cert: &NodeCertificate,
        name: &str,
    ) -> Result<(), rustls::Error> {
        let name = ServerName::try_from(name.to_owned()).unwrap();
        v.verify_server_cert(cert.cert_der(), &[], &name, &[], UnixTime::now())
            .map(|_| ())
    }

    fn check_client(v: &ClientVerifier, cert: &NodeCertificate) -> Result<(), rustls::Error> {
        v.verify_client_cert(cert.cert_der(), &[], UnixTime::now())
            .map(|_| ())
    }

    fn node(ca: &ClusterCa, name: &str) -> (NodeIdentity, NodeCertificate) {
        let key = NodeIdentity::generate().unwrap();
        let cert = ca.issue(name, &key.public_key()).unwrap();
        (key, cert)
    }

    #[test]
    fn ca_verifiers_accept_good_certificates() {
        let ca = ClusterCa::create("c").unwrap();
        let revoked = RevocationList::new();
        let (key, cert) = node(&ca, "a");
        let sv = ca_server_verifier(&ca, &revoked);
        let cv = ca_client_verifier(&ca, &revoked);
        check_server(&sv, &cert, GENERIC_SERVER_NAME).unwrap();
        check_server(&sv, &cert, &server_name(Some(&key.node_id()))).unwrap();
        check_server(&sv, &cert, "127.0.0.1").unwrap();
        check_client(&cv, &cert).unwrap();
        assert!(cv.client_auth_mandatory());
    }

    #[test]
    fn ca_verifiers_refuse_bad_certificates() {
        let ca = ClusterCa::create("c").unwrap();
        let other_ca = ClusterCa::create("c").unwrap();
        let revoked = RevocationList::new();
        let sv = ca_server_verifier(&ca, &revoked);
        let cv = ca_client_verifier(&ca, &revoked);

        // Issued by another CA (even one with the same cluster name).
        let (_, foreign) = node(&other_ca, "f");
        assert!(check_server(&sv, &foreign, GENERIC_SERVER_NAME).is_err());
        assert!(check_client(&cv, &foreign).is_err());

        // The name claims another node.
        let (key, good) = node(&ca, "a");
        let (victim, _) = node(&ca, "v");
        let forged = ca
            .issue_with_claimed_node_id("m", &key.public_key(), victim.node_id())
            .unwrap();
        assert!(check_server(&sv, &forged, GENERIC_SERVER_NAME).is_err());
        assert!(check_server(&sv, &forged, &server_name(Some(&victim.node_id()))).is_err());
        assert!(check_client(&cv, &forged).is_err());

        // The caller expected another node.
        assert!(check_server(&sv, &good, &server_name(Some(&victim.node_id()))).is_err());
        assert!(check_server(&sv, &good, "zz.node.atoll").is_err());

        // Revoked after issue: refused from the next check on, through the shared list.
        check_client(&cv, &good).unwrap();
        revoked.revoke(key.node_id());
        assert_eq!(
            check_client(&cv, &good).unwrap_err(),
            rustls::Error::InvalidCertificate(TlsCertError::Revoked)
        );
        assert_eq!(
            check_server(&sv, &good, GENERIC_SERVER_NAME).unwrap_err(),
            rustls::Error::InvalidCertificate(TlsCertError::Revoked)
        );
        revoked.reinstate(&key.node_id());
        check_client(&cv, &good).unwrap();

        // The CA certificate itself is no node certificate.
        assert!(
            cv.verify_client_cert(ca.cert_der(), &[], UnixTime::now())
                .is_err()
        );
    }

    #[test]
    fn shared_verifiers_pin_the_certificate() {
        let shared = crate::shared::SharedIdentity::generate("s").unwrap();
        let other = crate::shared::SharedIdentity::generate("s").unwrap();
        let provider = provider();
        let pinned = shared.certificate().cert_der().clone();
        let sv = ServerVerifier {
            mode: ServerMode::Shared {
                pinned: pinned.clone(),
            },
            algorithms: provider.signature_verification_algorithms,
        };
        let cv = ClientVerifier {
            mode: ClientMode::Shared { pinned },
            algorithms: provider.signature_verification_algorithms,
        };
        check_server(&sv, shared.certificate(), GENERIC_SERVER_NAME).unwrap();
        check_client(&cv, shared.certificate()).unwrap();
        assert!(check_server(&sv, other.certificate(), GENERIC_SERVER_NAME).is_err());
        assert!(check_client(&cv, other.certificate()).is_err());
    }

    #[test]
    fn configs_refuse_a_key_that_is_not_the_certificates() {
        let ca = ClusterCa::create("c").unwrap();
        let (_, cert) = node(&ca, "a");
        let stranger = NodeIdentity::generate().unwrap();
        let trust = ca.trust(RevocationList::new());
        let settings = TransportSettings::default();
        assert!(matches!(
            server_config(&stranger, &cert, &trust, &settings),
            Err(TlsConfigError::KeyMismatch { .. })
        ));
        assert!(matches!(
            client_config(&stranger, &cert, &trust, &settings),
            Err(TlsConfigError::KeyMismatch { .. })
        ));
    }

    #[test]
    fn transport_settings_apply() {
        let settings = TransportSettings::default();
        assert_eq!(settings.keep_alive_interval, Some(Duration::from_secs(5)));
        assert_eq!(settings.max_idle_timeout, Duration::from_secs(30));
        settings.transport_config().unwrap();
        let huge = TransportSettings {
            max_idle_timeout: Duration::from_secs(u64::MAX / 2),
            ..settings
        };
        assert!(matches!(
            huge.transport_config(),
            Err(TlsConfigError::IdleTimeout(_))
        ));
    }
}
