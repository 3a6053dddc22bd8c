use super::*;

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        TempDir(crate::test_path(&format!("dir-{tag}")))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

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
fn init_writes_the_layout_once() {
    let tmp = TempDir::new("init");
    let ca = CaDirectory::new(tmp.0.join("ca"));
    let files = ca.init("prod").unwrap();
    assert_eq!(files, [ca.cert_path(), ca.key_path(), ca.revoked_path()]);
    assert_eq!(mode(&ca.key_path()), 0o600);
    assert!(ca.revocations().unwrap().is_empty());
    assert_eq!(ca.load_ca().unwrap().cluster_name(), "prod");

    let key = std::fs::read(ca.key_path()).unwrap();
    assert!(matches!(
        ca.init("other"),
        Err(DirectoryError::Save(SaveError::Exists { .. }))
    ));
    assert_eq!(std::fs::read(ca.key_path()).unwrap(), key);
    assert!(matches!(
        CaDirectory::new(tmp.0.join("x")).init("a b"),
        Err(DirectoryError::BadName {
            what: "cluster",
            ..
        })
    ));
    assert!(!tmp.0.join("x").exists());
}

#[test]
fn issue_writes_a_key_and_a_certificate_once_and_keeps_a_copy() {
    let tmp = TempDir::new("issue");
    let ca = CaDirectory::new(&tmp.0);
    ca.init("prod").unwrap();
    let a = ca.issue("a", &tmp.0).unwrap();
    assert_eq!(a.key, tmp.0.join("a.key"));
    assert_eq!(mode(&a.key), 0o600);
    let cert = NodeCertificate::load(&a.cert).unwrap();
    assert_eq!(cert.node_id(), a.id);
    assert_eq!(NodeIdentity::load(&a.key).unwrap().node_id(), a.id);
    assert!(matches!(
        ca.issue("a", &tmp.0),
        Err(DirectoryError::Save(SaveError::Exists { .. }))
    ));

    // Issued elsewhere: the CA keeps a copy of the certificate, and the name is taken.
    let out = tmp.0.join("nodes");
    let c = ca.issue("c", &out).unwrap();
    assert_eq!(c.cert, out.join("c.pem"));
    let copy = NodeCertificate::load(tmp.0.join("c.pem")).unwrap();
    assert_eq!(copy.node_id(), c.id);
    std::fs::remove_file(out.join("c.key")).unwrap();
    std::fs::remove_file(out.join("c.pem")).unwrap();
    assert!(matches!(
        ca.issue("c", &out),
        Err(DirectoryError::Save(SaveError::Exists { .. }))
    ));
    assert!(
        !out.join("c.key").exists(),
        "a refused issue writes nothing"
    );

    assert!(matches!(
        ca.issue("ca", &tmp.0),
        Err(DirectoryError::BadName { what: "node", .. })
    ));
    let none = CaDirectory::new(tmp.0.join("none"));
    match none.issue("d", &tmp.0) {
        Err(DirectoryError::NoCa { missing, .. }) => assert_eq!(missing, none.cert_path()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn revoke_appends_each_id_once_and_list_shows_it() {
    let tmp = TempDir::new("revoke");
    let ca = CaDirectory::new(&tmp.0);
    ca.init("prod").unwrap();
    let a = ca.issue("a", &tmp.0).unwrap();
    let b = ca.issue("b", &tmp.0).unwrap();
    let listing = ca.list().unwrap();
    let names: Vec<_> = listing.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert!(listing.nodes.iter().all(|n| !n.revoked));

    let done = ca.revoke("b").unwrap();
    assert_eq!(
        done,
        Revoked {
            name: Some("b".into()),
            id: b.id,
            newly: true
        }
    );
    assert!(!ca.revoke(&b.id.to_string()).unwrap().newly);
    let other: NodeId = "0123456789abcdef0123456789abcdef".parse().unwrap();
    assert_eq!(ca.revoke(&other.to_string()).unwrap().name, None);
    assert!(!ca.revoke(&other.to_string()).unwrap().newly);

    let text = std::fs::read_to_string(ca.revoked_path()).unwrap();
    assert!(text.starts_with("# Revoked node ids"), "{text}");
    assert!(
        text.ends_with(&format!("# b\n{}\n{other}\n", b.id)),
        "{text}"
    );
    assert_eq!(text.matches(&other.to_string()).count(), 1);

    let listing = ca.list().unwrap();
    let status: Vec<_> = listing.nodes.iter().map(|n| (n.id, n.revoked)).collect();
    assert_eq!(status, [(a.id, false), (b.id, true)]);
    assert_eq!(listing.revoked_elsewhere, [other]);

    assert!(matches!(
        ca.revoke("nobody"),
        Err(DirectoryError::UnknownNode { .. })
    ));
    // A file without a final newline gets one before the appended entry.
    std::fs::write(ca.revoked_path(), other.to_string()).unwrap();
    ca.revoke("a").unwrap();
    assert_eq!(ca.revocations().unwrap().ids().len(), 2);
}

#[test]
fn list_reports_what_it_cannot_read() {
    let tmp = TempDir::new("list");
    let ca = CaDirectory::new(&tmp.0);
    assert!(matches!(ca.list(), Err(DirectoryError::NoCa { .. })));
    ca.init("prod").unwrap();
    std::fs::write(tmp.0.join("junk.pem"), "not a certificate").unwrap();
    let listing = ca.list().unwrap();
    assert!(listing.nodes.is_empty());
    assert_eq!(listing.unreadable.len(), 1);
    assert_eq!(listing.unreadable[0].0, tmp.0.join("junk.pem"));

    std::fs::write(ca.revoked_path(), "zz\n").unwrap();
    assert!(matches!(
        ca.list(),
        Err(DirectoryError::Unusable {
            what: "revocation list",
            ..
        })
    ));
}

#[test]
fn shared_directory_init_and_node_keys() {
    let tmp = TempDir::new("shared");
    let shared = SharedDirectory::new(&tmp.0);
    let files = shared.init("lab").unwrap();
    assert_eq!(
        files,
        [tmp.0.join(SHARED_CERT_FILE), tmp.0.join(SHARED_KEY_FILE)]
    );
    SharedIdentity::load(&tmp.0).unwrap();
    assert!(matches!(
        shared.init("lab"),
        Err(DirectoryError::Save(SaveError::Exists { .. }))
    ));
    let (id, path) = shared.node_key("n1").unwrap();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(NodeIdentity::load(&path).unwrap().node_id(), id);
    assert!(matches!(
        shared.node_key("n1"),
        Err(DirectoryError::Save(SaveError::Exists { .. }))
    ));
    assert!(matches!(
        shared.node_key("shared"),
        Err(DirectoryError::BadName { .. })
    ));
}
