//! The on-disk layout of a cluster's trust: a CA directory (the CA, the certificates it
//! issued, the revocation list) and a shared-identity directory.
//!
//! ```text
//! CA directory                         shared-identity directory
//!   ca.pem       CA certificate          shared.pem   the shared certificate
//!   ca.key       CA key (0600)           shared.key   the shared key (0600)
//!   revoked.txt  revoked node ids        NODE.key     a node's own key (0600)
//!   NODE.pem     every issued certificate
//!   NODE.key     a node's key (0600), when issued into the directory itself
//! ```

use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use atoll_core::NodeId;

use crate::ca::{CA_CERT_FILE, CA_KEY_FILE, ClusterCa, CreateError, IssueError, MAX_NAME_LEN};
use crate::certificate::NodeCertificate;
use crate::files::{self, LoadError, SaveError};
use crate::identity::{GenerateError, NodeIdentity};
use crate::revocation::RevocationList;
use crate::shared::{SHARED_CERT_FILE, SHARED_KEY_FILE, SharedIdentity};

/// File name of the revocation list inside a CA directory.
pub const REVOKED_FILE: &str = "revoked.txt";

/// What the revocation list of a fresh CA directory says about itself.
const REVOKED_HEADER: &[u8] = b"# Revoked node ids, one a line (written by `atoll ca revoke`).\n";

/// Why an operation on a CA or shared-identity directory failed. Every variant says what
/// was left on disk.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// A node or cluster name cannot name files and certificates; nothing was written.
    #[error("invalid {what} name {name:?}: {reason}")]
    BadName {
        /// `node` or `cluster`.
        what: &'static str,
        /// The name.
        name: String,
        /// Why it is unusable.
        reason: String,
    },
    /// The directory holds no cluster CA (`missing` does not exist); nothing was written.
    #[error("no cluster CA in {}: {} does not exist", dir.display(), missing.display())]
    NoCa {
        /// The CA directory.
        dir: PathBuf,
        /// The CA file that is missing.
        missing: PathBuf,
    },
    /// A file of the directory exists but cannot be used; nothing was written.
    #[error("{what}: {source}")]
    Unusable {
        /// What the file is: `cluster CA`, `node certificate` or `revocation list`.
        what: &'static str,
        /// Why (names the file).
        #[source]
        source: LoadError,
    },
    /// [`CaDirectory::revoke`] was given neither a node with a certificate in the directory
    /// nor a node id; nothing was written.
    #[error(
        "{node:?} is neither a node with a certificate in {} nor a node id (32 hex digits)",
        dir.display()
    )]
    UnknownNode {
        /// The argument.
        node: String,
        /// The CA directory.
        dir: PathBuf,
    },
    /// A file could not be written, or exists and would have been overwritten; files
    /// written before it in the same operation were removed again.
    #[error(transparent)]
    Save(#[from] SaveError),
    /// A file or directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// The CA or the shared identity could not be created; nothing was written.
    #[error("cannot create the identity: {0}")]
    Create(#[from] CreateError),
    /// A key could not be generated; nothing was written.
    #[error(transparent)]
    Generate(#[from] GenerateError),
    /// A node certificate could not be issued; nothing was written.
    #[error(transparent)]
    Issue(#[from] IssueError),
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> DirectoryError + '_ {
    move |source| DirectoryError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A node key and certificate written by [`CaDirectory::issue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedFiles {
    /// The node id of the new key.
    pub id: NodeId,
    /// The key file (mode 0600).
    pub key: PathBuf,
    /// The certificate file.
    pub cert: PathBuf,
}

/// One node certificate found by [`CaDirectory::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedNode {
    /// The name the files carry (`NAME.pem`).
    pub name: String,
    /// The node id the certificate is for.
    pub id: NodeId,
    /// Whether the id is on the revocation list.
    pub revoked: bool,
}

/// What [`CaDirectory::list`] finds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// The node certificates, by name.
    pub nodes: Vec<IssuedNode>,
    /// Revoked ids with no certificate in the directory.
    pub revoked_elsewhere: Vec<NodeId>,
    /// `.pem` files that are not node certificates, with the reason.
    pub unreadable: Vec<(PathBuf, String)>,
}

/// What [`CaDirectory::revoke`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    /// The node's name, when it was given by name.
    pub name: Option<String>,
    /// The revoked id.
    pub id: NodeId,
    /// False if the id was already on the list (nothing was appended).
    pub newly: bool,
}

/// A cluster CA's directory: `ca.pem`, `ca.key` (0600), `revoked.txt` and a copy of every
/// certificate issued (`NODE.pem`), so the CA knows its nodes by name and issues each
/// name once.
///
/// Nothing is read until an operation asks; every operation that writes checks all its
/// targets first and never overwrites a file.
///
/// # Example
///
/// ```
/// use atoll_net::CaDirectory;
///
/// let dir = std::env::temp_dir().join(format!("atoll-doc-ca-{}", std::process::id()));
/// # let _ = std::fs::remove_dir_all(&dir);
/// let ca = CaDirectory::new(&dir);
/// ca.init("prod")?;
/// let london = ca.issue("london", &dir)?;
/// assert!(ca.revoke("london")?.newly);
/// let listing = ca.list()?;
/// assert_eq!(listing.nodes[0].id, london.id);
/// assert!(listing.nodes[0].revoked);
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaDirectory {
    dir: PathBuf,
}

impl CaDirectory {
    /// The CA directory at `dir` (which need not exist yet).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        CaDirectory { dir: dir.into() }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// `ca.pem`: what nodes trust.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join(CA_CERT_FILE)
    }

    /// `ca.key`: what issues certificates.
    pub fn key_path(&self) -> PathBuf {
        self.dir.join(CA_KEY_FILE)
    }

    /// `revoked.txt`: the revocation list.
    pub fn revoked_path(&self) -> PathBuf {
        self.dir.join(REVOKED_FILE)
    }

    /// Creates the CA of cluster `cluster` (creating the directory if needed) and an empty
    /// revocation list; returns the files written: certificate, key, revocation list.
    /// Refuses, writing nothing, if any of them exists.
    pub fn init(&self, cluster: &str) -> Result<Vec<PathBuf>, DirectoryError> {
        check_name("cluster", cluster)?;
        let files = [self.cert_path(), self.key_path(), self.revoked_path()];
        for f in &files {
            files::ensure_absent(f)?;
        }
        let ca = ClusterCa::create(cluster)?;
        ca.save(&self.dir)?;
        create_new(&files[2], REVOKED_HEADER)?;
        Ok(files.to_vec())
    }

    /// Loads the CA (certificate and key).
    pub fn load_ca(&self) -> Result<ClusterCa, DirectoryError> {
        for path in [self.cert_path(), self.key_path()] {
            if !path.exists() {
                return Err(self.no_ca(path));
            }
        }
        ClusterCa::load(&self.dir).map_err(|source| DirectoryError::Unusable {
            what: "cluster CA",
            source,
        })
    }

    /// Generates `node`'s key and has the CA certify it, writing `out/NODE.key` (0600) and
    /// `out/NODE.pem`, plus a copy of the certificate in this directory when `out` is
    /// elsewhere. Refuses, writing nothing, if any of these files exists: a name is issued
    /// once.
    pub fn issue(&self, node: &str, out: &Path) -> Result<IssuedFiles, DirectoryError> {
        check_name("node", node)?;
        let ca = self.load_ca()?;
        std::fs::create_dir_all(out).map_err(io_error(out))?;
        let key_path = out.join(format!("{node}.key"));
        let cert_path = out.join(format!("{node}.pem"));
        let record = (!same_dir(&self.dir, out)?).then(|| self.dir.join(format!("{node}.pem")));
        let certs: Vec<&PathBuf> = [Some(&cert_path), record.as_ref()]
            .into_iter()
            .flatten()
            .collect();
        files::ensure_absent(&key_path)?;
        for path in &certs {
            files::ensure_absent(path)?;
        }
        let key = NodeIdentity::generate()?;
        let cert = ca.issue(node, &key.public_key())?;
        key.save(&key_path)?;
        for (i, path) in certs.iter().enumerate() {
            if let Err(e) = cert.save(path) {
                // A key without its certificate would block the next attempt: take it back.
                let _ = std::fs::remove_file(&key_path);
                if i > 0 {
                    let _ = std::fs::remove_file(&cert_path);
                }
                return Err(e.into());
            }
        }
        Ok(IssuedFiles {
            id: key.node_id(),
            key: key_path,
            cert: cert_path,
        })
    }

    /// Revokes `node` — a node name with a certificate `NODE.pem` here, or a node id — by
    /// appending its id (after a `# NAME` comment when named) to the revocation list,
    /// unless it is there already. Appending, rather than rewriting, keeps the file's
    /// comments and lets running nodes that watch it see one more line.
    pub fn revoke(&self, node: &str) -> Result<Revoked, DirectoryError> {
        if !self.cert_path().exists() {
            return Err(self.no_ca(self.cert_path()));
        }
        let cert_path = self.dir.join(format!("{node}.pem"));
        let (name, id) = if is_plain_name(node) && node != "ca" && cert_path.is_file() {
            let cert =
                NodeCertificate::load(&cert_path).map_err(|source| DirectoryError::Unusable {
                    what: "node certificate",
                    source,
                })?;
            (Some(node.to_string()), cert.node_id())
        } else if let Ok(id) = node.parse::<NodeId>() {
            (None, id)
        } else {
            return Err(DirectoryError::UnknownNode {
                node: node.to_string(),
                dir: self.dir.clone(),
            });
        };
        if self.revocations()?.is_revoked(&id) {
            return Ok(Revoked {
                name,
                id,
                newly: false,
            });
        }
        let mut entry = String::new();
        if let Some(name) = &name {
            entry.push_str(&format!("# {name}\n"));
        }
        entry.push_str(&format!("{id}\n"));
        append_line(&self.revoked_path(), &entry)?;
        Ok(Revoked {
            name,
            id,
            newly: true,
        })
    }

    /// The revocation list; a missing file is an empty list.
    pub fn revocations(&self) -> Result<RevocationList, DirectoryError> {
        let path = self.revoked_path();
        if !path.exists() {
            return Ok(RevocationList::new());
        }
        RevocationList::load(&path).map_err(|source| DirectoryError::Unusable {
            what: "revocation list",
            source,
        })
    }

    /// The node certificates in the directory and whether each is revoked.
    pub fn list(&self) -> Result<Listing, DirectoryError> {
        if !self.cert_path().exists() {
            return Err(self.no_ca(self.cert_path()));
        }
        let revoked = self.revocations()?;
        let mut listing = Listing::default();
        let mut seen = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(io_error(&self.dir))? {
            let path = entry.map_err(io_error(&self.dir))?.path();
            let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".pem"))
            else {
                continue;
            };
            if name == "ca" || !path.is_file() {
                continue;
            }
            match NodeCertificate::load(&path) {
                Ok(cert) => {
                    seen.push(cert.node_id());
                    listing.nodes.push(IssuedNode {
                        name: name.to_string(),
                        id: cert.node_id(),
                        revoked: revoked.is_revoked(&cert.node_id()),
                    });
                }
                Err(e) => listing.unreadable.push((path.clone(), e.to_string())),
            }
        }
        listing.nodes.sort_by(|a, b| a.name.cmp(&b.name));
        listing.unreadable.sort();
        listing.revoked_elsewhere = revoked
            .ids()
            .into_iter()
            .filter(|id| !seen.contains(id))
            .collect();
        Ok(listing)
    }

    fn no_ca(&self, missing: PathBuf) -> DirectoryError {
        DirectoryError::NoCa {
            dir: self.dir.clone(),
            missing,
        }
    }
}

/// A shared-identity directory: `shared.pem` and `shared.key`, the one TLS identity every
/// node presents, and the nodes' own keys (`NODE.key`), which decide their node ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedDirectory {
    dir: PathBuf,
}

impl SharedDirectory {
    /// The shared-identity directory at `dir` (which need not exist yet).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        SharedDirectory { dir: dir.into() }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Creates the shared identity of cluster `cluster`; returns the files written:
    /// certificate, key. Refuses, writing nothing, if either exists.
    pub fn init(&self, cluster: &str) -> Result<Vec<PathBuf>, DirectoryError> {
        check_name("cluster", cluster)?;
        SharedIdentity::generate(cluster)?.save(&self.dir)?;
        Ok(vec![
            self.dir.join(SHARED_CERT_FILE),
            self.dir.join(SHARED_KEY_FILE),
        ])
    }

    /// Generates `node`'s own key as `NODE.key` (0600); returns its node id and the file.
    /// Refuses if the file exists.
    pub fn node_key(&self, node: &str) -> Result<(NodeId, PathBuf), DirectoryError> {
        check_name("node", node)?;
        let path = self.dir.join(format!("{node}.key"));
        files::ensure_absent(&path)?;
        std::fs::create_dir_all(&self.dir).map_err(io_error(&self.dir))?;
        let key = NodeIdentity::generate()?;
        key.save(&path)?;
        Ok((key.node_id(), path))
    }
}

fn same_dir(a: &Path, b: &Path) -> Result<bool, DirectoryError> {
    let canonical = |p: &Path| std::fs::canonicalize(p).map_err(io_error(p));
    Ok(canonical(a)? == canonical(b)?)
}

/// Appends `entry` to `path` (creating it), starting on a fresh line.
fn append_line(path: &Path, entry: &str) -> Result<(), DirectoryError> {
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(io_error(path))?;
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(io_error(path))?;
    let mut out = String::new();
    if !text.is_empty() && !text.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(entry);
    file.write_all(out.as_bytes()).map_err(io_error(path))?;
    file.sync_all().map_err(io_error(path))
}

fn create_new(path: &Path, contents: &[u8]) -> Result<(), DirectoryError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io_error(path))?;
    file.write_all(contents).map_err(io_error(path))?;
    file.sync_all().map_err(io_error(path))
}

/// A name that is safe as a file name and as a certificate common name.
fn is_plain_name(name: &str) -> bool {
    name.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
}

fn check_name(what: &'static str, name: &str) -> Result<(), DirectoryError> {
    let bad = |reason: &str| {
        Err(DirectoryError::BadName {
            what,
            name: name.to_string(),
            reason: reason.to_string(),
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad(&format!("it is longer than {MAX_NAME_LEN} bytes"));
    }
    if !is_plain_name(name) {
        return bad("use letters, digits, '.', '_' and '-', starting with a letter or digit");
    }
    if what == "node" && matches!(name, "ca" | "shared") {
        return bad("it would clash with the CA's or the shared identity's files");
    }
    Ok(())
}

#[cfg(test)]
#[path = "directory_tests.rs"]
mod tests;
