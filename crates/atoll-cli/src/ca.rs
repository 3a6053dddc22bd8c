//! `atoll ca ...` and `atoll shared ...`: the files a cluster's trust is made of.

use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use atoll_core::NodeId;
use atoll_net::{
    CA_CERT_FILE, CA_KEY_FILE, ClusterCa, MAX_NAME_LEN, NodeCertificate, NodeIdentity,
    RevocationList, SHARED_CERT_FILE, SHARED_KEY_FILE, SharedIdentity,
};

use crate::error::Error;

/// File name of the revocation list inside a CA directory.
pub const REVOKED_FILE: &str = "revoked.txt";

/// One node certificate found by `atoll ca list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedNode {
    /// The name the files carry (`NAME.pem`).
    pub name: String,
    /// The node id the certificate is for.
    pub id: NodeId,
    /// Whether the id is on the revocation list.
    pub revoked: bool,
}

/// What `atoll ca list` finds in a CA directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// The node certificates, by name.
    pub nodes: Vec<IssuedNode>,
    /// Revoked ids with no certificate in the directory.
    pub revoked_elsewhere: Vec<NodeId>,
    /// `.pem` files that are not node certificates, with the reason.
    pub unreadable: Vec<(PathBuf, String)>,
}

/// `atoll ca init`: creates the CA files in `dir`; returns the files written.
pub fn ca_init(dir: &Path, cluster: &str) -> Result<Vec<PathBuf>, Error> {
    check_name("cluster", cluster)?;
    let files = [
        dir.join(CA_CERT_FILE),
        dir.join(CA_KEY_FILE),
        dir.join(REVOKED_FILE),
    ];
    // Check all three first, so a refusal writes nothing.
    for f in &files {
        ensure_absent(f)?;
    }
    let ca = ClusterCa::create(cluster)?;
    ca.save(dir)?;
    create_new(
        &files[2],
        b"# Revoked node ids, one a line (written by `atoll ca revoke`).\n",
    )?;
    Ok(files.to_vec())
}

/// `atoll ca issue`: generates `node`'s key and certificate into `out`; returns the node
/// id and the two files.
pub fn ca_issue(dir: &Path, node: &str, out: &Path) -> Result<(NodeId, PathBuf, PathBuf), Error> {
    check_name("node", node)?;
    let ca = load_ca(dir)?;
    std::fs::create_dir_all(out).map_err(|source| Error::Io {
        path: out.to_path_buf(),
        source,
    })?;
    let key_path = out.join(format!("{node}.key"));
    let cert_path = out.join(format!("{node}.pem"));
    // The CA keeps a copy of every certificate it issues elsewhere, so that `ca list` and
    // `ca revoke NODE` know the node, and a name is issued only once.
    let record = (!same_dir(dir, out)?).then(|| dir.join(format!("{node}.pem")));
    for path in [Some(&key_path), Some(&cert_path), record.as_ref()]
        .into_iter()
        .flatten()
    {
        ensure_absent(path)?;
    }
    let key = NodeIdentity::generate()?;
    let cert = ca.issue(node, &key.public_key())?;
    key.save(&key_path)?;
    for (i, path) in [Some(&cert_path), record.as_ref()]
        .into_iter()
        .flatten()
        .enumerate()
    {
        if let Err(e) = cert.save(path) {
            // A key without its certificate would block the next attempt: take it back.
            let _ = std::fs::remove_file(&key_path);
            if i > 0 {
                let _ = std::fs::remove_file(&cert_path);
            }
            return Err(e.into());
        }
    }
    Ok((key.node_id(), key_path, cert_path))
}

fn same_dir(a: &Path, b: &Path) -> Result<bool, Error> {
    let canonical = |p: &Path| {
        std::fs::canonicalize(p).map_err(|source| Error::Io {
            path: p.to_path_buf(),
            source,
        })
    };
    Ok(canonical(a)? == canonical(b)?)
}

/// What `atoll ca revoke` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    /// The node's name, when it was given by name.
    pub name: Option<String>,
    /// The revoked id.
    pub id: NodeId,
    /// False if the id was already on the list (nothing was appended).
    pub newly: bool,
}

/// `atoll ca revoke`: `node` is a node name with a certificate `dir/NODE.pem`, or a node
/// id; appends the id to `dir/revoked.txt` unless it is there already.
pub fn ca_revoke(dir: &Path, node: &str) -> Result<Revoked, Error> {
    let ca_cert = dir.join(CA_CERT_FILE);
    if !ca_cert.exists() {
        return Err(no_ca(dir));
    }
    let cert_path = dir.join(format!("{node}.pem"));
    let (name, id) = if is_plain_name(node) && node != "ca" && cert_path.is_file() {
        let cert = NodeCertificate::load(&cert_path).map_err(|source| Error::BadFile {
            context: "node certificate".into(),
            source,
        })?;
        (Some(node.to_string()), cert.node_id())
    } else if let Ok(id) = node.parse::<NodeId>() {
        (None, id)
    } else {
        return Err(Error::UnknownNode {
            node: node.to_string(),
            dir: dir.to_path_buf(),
        });
    };
    let list_path = dir.join(REVOKED_FILE);
    let existing = read_revoked(&list_path)?;
    if existing.is_revoked(&id) {
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
    append_line(&list_path, &entry)?;
    Ok(Revoked {
        name,
        id,
        newly: true,
    })
}

/// `atoll ca list`: the node certificates in `dir` and their revocation status.
pub fn ca_list(dir: &Path) -> Result<Listing, Error> {
    if !dir.join(CA_CERT_FILE).exists() {
        return Err(no_ca(dir));
    }
    let revoked = read_revoked(&dir.join(REVOKED_FILE))?;
    let io_err = |source| Error::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut listing = Listing::default();
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err)? {
        let path = entry.map_err(io_err)?.path();
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

/// `atoll shared init`: creates `dir/shared.pem` and `dir/shared.key`.
pub fn shared_init(dir: &Path, cluster: &str) -> Result<Vec<PathBuf>, Error> {
    check_name("cluster", cluster)?;
    let shared = SharedIdentity::generate(cluster)?;
    shared.save(dir)?;
    Ok(vec![dir.join(SHARED_CERT_FILE), dir.join(SHARED_KEY_FILE)])
}

/// `atoll shared key`: generates `dir/NODE.key`; returns the node id and the file.
pub fn shared_key(dir: &Path, node: &str) -> Result<(NodeId, PathBuf), Error> {
    check_name("node", node)?;
    let path = dir.join(format!("{node}.key"));
    ensure_absent(&path)?;
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let key = NodeIdentity::generate()?;
    key.save(&path)?;
    Ok((key.node_id(), path))
}

/// Loads the CA of `dir`, explaining how to create it if it is not there.
fn load_ca(dir: &Path) -> Result<ClusterCa, Error> {
    for file in [CA_CERT_FILE, CA_KEY_FILE] {
        if !dir.join(file).exists() {
            let mut err = no_ca(dir);
            if let Error::MissingFile { path, .. } = &mut err {
                *path = dir.join(file);
            }
            return Err(err);
        }
    }
    ClusterCa::load(dir).map_err(|source| Error::BadFile {
        context: "cluster CA".into(),
        source,
    })
}

fn no_ca(dir: &Path) -> Error {
    Error::MissingFile {
        what: "cluster CA".into(),
        path: dir.join(CA_CERT_FILE),
        hint: format!(
            "run `atoll ca init --dir {}` (or pass --dir)",
            shell_quote(dir)
        ),
    }
}

/// The revocation list of a CA directory; a missing file is an empty list.
fn read_revoked(path: &Path) -> Result<RevocationList, Error> {
    if !path.exists() {
        return Ok(RevocationList::new());
    }
    RevocationList::load(path).map_err(|source| Error::BadFile {
        context: "revocation list".into(),
        source,
    })
}

/// Appends `entry` to `path` (creating it), starting on a fresh line.
fn append_line(path: &Path, entry: &str) -> Result<(), Error> {
    let io_err = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(io_err)?;
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(io_err)?;
    let mut out = String::new();
    if !text.is_empty() && !text.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(entry);
    file.write_all(out.as_bytes()).map_err(io_err)?;
    file.sync_all().map_err(io_err)
}

fn ensure_absent(path: &Path) -> Result<(), Error> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => Err(atoll_net::SaveError::Exists {
            path: path.to_path_buf(),
        }
        .into()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn create_new(path: &Path, contents: &[u8]) -> Result<(), Error> {
    let io_err = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io_err)?;
    file.write_all(contents).map_err(io_err)?;
    file.sync_all().map_err(io_err)
}

/// A name that is safe as a file name and as a certificate common name.
fn is_plain_name(name: &str) -> bool {
    name.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
}

fn check_name(what: &'static str, name: &str) -> Result<(), Error> {
    let bad = |reason: &str| {
        Err(Error::BadName {
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

/// `path` as a shell word (quoted if it needs to be), for commands shown in hints.
pub(crate) fn shell_quote(path: &Path) -> String {
    let s = path.display().to_string();
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':' | '+'));
    if plain {
        s
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("node", "london-1.eu_west").is_ok());
        assert!(check_name("node", "").is_err());
        assert!(check_name("node", "../x").is_err());
        assert!(check_name("node", ".hidden").is_err());
        assert!(check_name("node", "-rf").is_err());
        assert!(check_name("node", "a b").is_err());
        assert!(check_name("node", "ca").is_err());
        assert!(check_name("cluster", "ca").is_ok());
        assert!(check_name("node", &"x".repeat(65)).is_err());
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote(Path::new("/tmp/a-b/c.d")), "/tmp/a-b/c.d");
        assert_eq!(shell_quote(Path::new("my dir")), "'my dir'");
        assert_eq!(shell_quote(Path::new("it's")), r"'it'\''s'");
    }
}
