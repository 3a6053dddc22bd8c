//! A node's Ed25519 key pair and the node id derived from it.

use std::fmt;
use std::path::Path;

use atoll_core::NodeId;
use ring::rand::SystemRandom;
use ring::signature::{self, Ed25519KeyPair, KeyPair as _};
use rustls::pki_types::PrivatePkcs8KeyDer;
use rustls::pki_types::pem::PemObject;
use sha3::Shake256;
use sha3::digest::{ExtendableOutput, Update, XofReader};

use crate::files::{self, LoadError, Replace, SaveError};

/// Length of an Ed25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// An Ed25519 key pair: a node's identity.
///
/// The node id is derived from the public key ([`node_id_of`]), so whoever holds the
/// private key is the node. The same key signs TLS handshakes and, for a cluster CA or a
/// shared identity, certificates.
///
/// `Debug` shows the node id, never the private key.
///
/// # Example
///
/// ```
/// use atoll_net::{NodeIdentity, node_id_of, verify};
///
/// let me = NodeIdentity::generate()?;
/// let sig = me.sign(b"hello");
/// assert!(verify(&me.public_key(), b"hello", &sig));
/// assert!(!verify(&me.public_key(), b"hullo", &sig));
/// assert_eq!(node_id_of(&me.public_key()), me.node_id());
///
/// // PEM round trip (PKCS#8 "PRIVATE KEY").
/// let again = NodeIdentity::from_pem(&me.to_pem())?;
/// assert_eq!(again.node_id(), me.node_id());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct NodeIdentity {
    signer: Ed25519KeyPair,
    /// The same key in the form rcgen signs certificates with.
    cert_key: rcgen::KeyPair,
    pkcs8: Vec<u8>,
    public: [u8; PUBLIC_KEY_LEN],
    node_id: NodeId,
}

/// The system random number generator failed; no key was produced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the system random number generator failed; no key was generated")]
pub struct GenerateError;

/// Why bytes or text are not a usable Ed25519 private key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// No well-formed PEM `PRIVATE KEY` block was found.
    #[error("no well-formed PEM \"PRIVATE KEY\" block found ({reason})")]
    Pem {
        /// What the PEM reader reported.
        reason: String,
    },
    /// The PKCS#8 document does not hold a valid Ed25519 key.
    #[error("not a valid Ed25519 PKCS#8 private key ({reason})")]
    NotEd25519 {
        /// What the key parser reported.
        reason: String,
    },
}

impl NodeIdentity {
    /// Generates a fresh key pair from the system random number generator.
    pub fn generate() -> Result<Self, GenerateError> {
        let doc =
            Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| GenerateError)?;
        // A key ring has just produced always parses; a failure still is no panic.
        Self::from_pkcs8_der(doc.as_ref()).map_err(|_| GenerateError)
    }

    /// The key whose Ed25519 seed is `seed`: the same seed gives the same key (and node
    /// id) every time. For simulations and tests; real nodes use [`NodeIdentity::generate`].
    pub fn from_seed(seed: &[u8; 32]) -> Result<Self, KeyError> {
        // PKCS#8 v1 for Ed25519 (RFC 8410): a fixed prefix, then the 32-byte seed.
        const PREFIX: [u8; 16] = [
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        let mut der = PREFIX.to_vec();
        der.extend_from_slice(seed);
        Self::from_pkcs8_der(&der)
    }

    /// Reads a key from PKCS#8 DER (v1 or v2, as written by ring or `openssl genpkey`).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        let not_ed25519 = |reason: String| KeyError::NotEd25519 { reason };
        let signer = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|e| not_ed25519(e.to_string()))?;
        let cert_key = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
            &PrivatePkcs8KeyDer::from(der),
            &rcgen::PKCS_ED25519,
        )
        .map_err(|e| not_ed25519(e.to_string()))?;
        let public: [u8; PUBLIC_KEY_LEN] = signer
            .public_key()
            .as_ref()
            .try_into()
            .map_err(|_| not_ed25519("public key is not 32 bytes".into()))?;
        Ok(NodeIdentity {
            signer,
            cert_key,
            pkcs8: der.to_vec(),
            public,
            node_id: node_id_of(&public),
        })
    }

    /// Reads a key from a PEM `PRIVATE KEY` (PKCS#8) block; other blocks are skipped.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let der =
            PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| KeyError::Pem {
                reason: e.to_string(),
            })?;
        Self::from_pkcs8_der(der.secret_pkcs8_der())
    }

    /// The key as a PEM `PRIVATE KEY` (PKCS#8) block. This is the secret: guard it.
    pub fn to_pem(&self) -> String {
        crate::pem::encode("PRIVATE KEY", &self.pkcs8)
    }

    /// The key as PKCS#8 DER. This is the secret: guard it.
    pub fn to_pkcs8_der(&self) -> PrivatePkcs8KeyDer<'static> {
        PrivatePkcs8KeyDer::from(self.pkcs8.clone())
    }

    /// Writes the key as PEM to a new file with mode 0600.
    ///
    /// Refuses ([`SaveError::Exists`]) if `path` exists: overwriting a node's key changes
    /// its identity. Use [`NodeIdentity::save_replacing`] to do that deliberately.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), SaveError> {
        files::write(path.as_ref(), self.to_pem().as_bytes(), 0o600, Replace::No)
    }

    /// Writes the key as PEM with mode 0600, atomically replacing any existing file.
    pub fn save_replacing(&self, path: impl AsRef<Path>) -> Result<(), SaveError> {
        files::write(path.as_ref(), self.to_pem().as_bytes(), 0o600, Replace::Yes)
    }

    /// Reads a key saved by [`NodeIdentity::save`] (or any PKCS#8 Ed25519 PEM file).
    pub fn load(path: impl AsRef<Path>) -> Result<Self, LoadError> {
        let path = path.as_ref();
        let text = files::read_text(path)?;
        Self::from_pem(&text).map_err(|source| LoadError::Key {
            path: path.to_path_buf(),
            source,
        })
    }

    /// The raw 32-byte Ed25519 public key.
    pub fn public_key(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.public
    }

    /// The node id: the first 16 bytes of SHAKE-256 of the public key.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// Signs `msg` (pure Ed25519, no prehash).
    pub fn sign(&self, msg: &[u8]) -> [u8; SIGNATURE_LEN] {
        let mut out = [0u8; SIGNATURE_LEN];
        // Ed25519 signatures are always 64 bytes.
        out.copy_from_slice(self.signer.sign(msg).as_ref());
        out
    }

    pub(crate) fn cert_key(&self) -> &rcgen::KeyPair {
        &self.cert_key
    }
}

impl fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeIdentity")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

/// Checks an Ed25519 signature. False for a bad signature or a malformed key.
pub fn verify(public_key: &[u8; PUBLIC_KEY_LEN], msg: &[u8], sig: &[u8; SIGNATURE_LEN]) -> bool {
    signature::UnparsedPublicKey::new(&signature::ED25519, public_key)
        .verify(msg, sig)
        .is_ok()
}

/// The node id belonging to a public key: the first 16 bytes of SHAKE-256(`public_key`).
///
/// Pass the raw 32-byte Ed25519 key (not its DER `SubjectPublicKeyInfo`).
pub fn node_id_of(public_key: &[u8]) -> NodeId {
    let mut hasher = Shake256::default();
    hasher.update(public_key);
    let mut out = [0u8; 16];
    hasher.finalize_xof().read(&mut out);
    NodeId::from_bytes(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn temp_dir(tag: &str) -> std::path::PathBuf {
        let dir = crate::test_path(&format!("identity-{tag}"));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_seed_gives_the_same_key_every_time() {
        let a = NodeIdentity::from_seed(&[7; 32]).unwrap();
        let b = NodeIdentity::from_seed(&[7; 32]).unwrap();
        let c = NodeIdentity::from_seed(&[8; 32]).unwrap();
        assert_eq!(a.node_id(), b.node_id());
        assert_ne!(a.node_id(), c.node_id());
        let sig = a.sign(b"x");
        assert!(verify(&b.public_key(), b"x", &sig));
        // It round-trips through PEM like any other key.
        assert_eq!(
            NodeIdentity::from_pem(&a.to_pem()).unwrap().node_id(),
            a.node_id()
        );
    }

    #[test]
    fn node_id_known_answer() {
        // python3 -c 'import hashlib; print(hashlib.shake_256(bytes(32)).hexdigest(16))'
        let id = node_id_of(&[0u8; 32]);
        assert_eq!(id.to_string(), "f5977c8283546a63723bc31d2619124f");
        assert_eq!(id.as_bytes().len(), 16);
        assert_eq!(node_id_of(&[0u8; 32]), id);
        assert_ne!(node_id_of(&[1u8; 32]), id);
    }

    #[test]
    fn node_id_matches_public_key() {
        let a = NodeIdentity::generate().unwrap();
        assert_eq!(a.node_id(), node_id_of(&a.public_key()));
        let b = NodeIdentity::generate().unwrap();
        assert_ne!(a.node_id(), b.node_id());
    }

    #[test]
    fn sign_and_verify() {
        let a = NodeIdentity::generate().unwrap();
        let b = NodeIdentity::generate().unwrap();
        let sig = a.sign(b"message");
        assert!(verify(&a.public_key(), b"message", &sig));
        assert!(!verify(&a.public_key(), b"messagf", &sig));
        assert!(!verify(&b.public_key(), b"message", &sig));
        let mut bad = sig;
        bad[10] ^= 1;
        assert!(!verify(&a.public_key(), b"message", &bad));
        // Not a curve point: rejected, no panic.
        assert!(!verify(&[0xff; 32], b"message", &sig));
    }

    #[test]
    fn pem_round_trip() {
        let a = NodeIdentity::generate().unwrap();
        let pem = a.to_pem();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let b = NodeIdentity::from_pem(&pem).unwrap();
        assert_eq!(a.public_key(), b.public_key());
        assert_eq!(a.node_id(), b.node_id());
        assert!(verify(&a.public_key(), b"x", &b.sign(b"x")));
        assert_eq!(b.to_pem(), pem);
    }

    #[test]
    fn debug_does_not_leak_the_key() {
        let a = NodeIdentity::generate().unwrap();
        let shown = format!("{a:?}");
        assert!(shown.contains(&a.node_id().to_string()));
        assert!(!shown.contains("PRIVATE"));
    }

    #[test]
    fn garbage_pem_is_a_typed_error() {
        assert!(matches!(
            NodeIdentity::from_pem("not pem at all"),
            Err(KeyError::Pem { .. })
        ));
        assert!(matches!(
            NodeIdentity::from_pem(
                "-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n"
            ),
            Err(KeyError::Pem { .. })
        ));
        let not_a_key = crate::pem::encode("PRIVATE KEY", b"definitely not pkcs8");
        assert!(matches!(
            NodeIdentity::from_pem(&not_a_key),
            Err(KeyError::NotEd25519 { .. })
        ));
        // A certificate block is not a key.
        let cert = crate::pem::encode("CERTIFICATE", b"xyz");
        assert!(matches!(
            NodeIdentity::from_pem(&cert),
            Err(KeyError::Pem { .. })
        ));
        // ECDSA keys are well-formed PKCS#8 but not Ed25519.
        let p256 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        assert!(matches!(
            NodeIdentity::from_pem(&p256.serialize_pem()),
            Err(KeyError::NotEd25519 { .. })
        ));
        assert!(NodeIdentity::from_pkcs8_der(&[]).is_err());
    }

    #[test]
    fn save_creates_0600_and_refuses_to_overwrite() {
        let dir = temp_dir("save");
        let path = dir.join("node.key");
        let a = NodeIdentity::generate().unwrap();
        a.save(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
        assert_eq!(NodeIdentity::load(&path).unwrap().node_id(), a.node_id());

        let b = NodeIdentity::generate().unwrap();
        assert!(matches!(b.save(&path), Err(SaveError::Exists { .. })));
        assert_eq!(NodeIdentity::load(&path).unwrap().node_id(), a.node_id());

        // Replacing keeps 0600 even if the old file was looser.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        b.save_replacing(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
        assert_eq!(NodeIdentity::load(&path).unwrap().node_id(), b.node_id());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn load_errors_are_typed() {
        let dir = temp_dir("load");
        assert!(matches!(
            NodeIdentity::load(dir.join("missing.key")),
            Err(LoadError::Read { .. })
        ));
        let junk = dir.join("junk.key");
        std::fs::write(&junk, [0xff, 0xfe, 0x00, 0x80]).unwrap();
        let err = NodeIdentity::load(&junk).unwrap_err();
        assert!(matches!(err, LoadError::NotText { .. }), "{err}");
        assert!(err.to_string().contains("junk.key"), "{err}");
        std::fs::write(&junk, "-----BEGIN PRIVATE KEY-----\nAAAA\n").unwrap();
        let err = NodeIdentity::load(&junk).unwrap_err();
        assert!(matches!(err, LoadError::Key { .. }), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
