//! `atoll ca ...` and `atoll shared ...`: the files a cluster's trust is made of, kept by
//! [`atoll_net::CaDirectory`] and [`atoll_net::SharedDirectory`]; this maps the
//! arguments onto them and prints what they did.

use std::path::Path;

use atoll_net::{CaDirectory, DirectoryError, Listing, SharedDirectory};

use crate::args::{CaCommand, SharedCommand};
use crate::error::Error;

/// Runs `atoll ca ...`.
pub fn run_ca(cmd: CaCommand) -> Result<(), Error> {
    match cmd {
        CaCommand::Init { dir, name } => {
            let files = CaDirectory::new(&dir)
                .init(&name)
                .map_err(directory_error(&dir))?;
            println!("created cluster CA {name:?} in {}", dir.display());
            print_files(&files);
            eprintln!(
                "keep {} secret: it issues certificates. Nodes need only {}.",
                files[1].display(),
                files[0].display()
            );
        }
        CaCommand::Issue { node, dir, out } => {
            let out = out.unwrap_or_else(|| dir.clone());
            let issued = CaDirectory::new(&dir)
                .issue(&node, &out)
                .map_err(directory_error(&dir))?;
            let id = issued.id;
            println!("{id}");
            eprintln!(
                "issued node {node:?} (id {id}): {} (secret, mode 0600) and {}",
                issued.key.display(),
                issued.cert.display()
            );
        }
        CaCommand::Revoke { node, dir } => {
            let ca = CaDirectory::new(&dir);
            let done = ca.revoke(&node).map_err(directory_error(&dir))?;
            let who = match &done.name {
                Some(name) => format!("{name} id={}", done.id),
                None => format!("id={}", done.id),
            };
            if done.newly {
                println!("revoked {who}");
                eprintln!(
                    "appended to {}; nodes refuse it on their next handshake",
                    ca.revoked_path().display()
                );
            } else {
                println!("already revoked {who}");
            }
        }
        CaCommand::List { dir } => {
            let listing = CaDirectory::new(&dir)
                .list()
                .map_err(directory_error(&dir))?;
            print_listing(&listing);
            for (path, why) in &listing.unreadable {
                eprintln!("skipped {}: {why}", path.display());
            }
        }
    }
    Ok(())
}

/// Runs `atoll shared ...`.
pub fn run_shared(cmd: SharedCommand) -> Result<(), Error> {
    match cmd {
        SharedCommand::Init { dir, name } => {
            let files = SharedDirectory::new(&dir)
                .init(&name)
                .map_err(directory_error(&dir))?;
            println!("created shared identity {name:?} in {}", dir.display());
            print_files(&files);
            eprintln!("copy both files to every node: they are the cluster's only credential");
        }
        SharedCommand::Key { node, dir } => {
            let (id, path) = SharedDirectory::new(&dir)
                .node_key(&node)
                .map_err(directory_error(&dir))?;
            println!("{id}");
            eprintln!(
                "generated the key of node {node:?} (id {id}): {} (secret, mode 0600)",
                path.display()
            );
        }
    }
    Ok(())
}

/// The command's error for a directory operation on `dir`: a missing CA says how to make
/// one.
pub(crate) fn directory_error(dir: &Path) -> impl FnOnce(DirectoryError) -> Error + '_ {
    move |e| match e {
        DirectoryError::NoCa { missing, .. } => Error::MissingFile {
            what: "cluster CA".into(),
            path: missing,
            hint: format!(
                "run `atoll ca init --dir {}` (or pass --dir)",
                shell_quote(dir)
            ),
        },
        e => Error::Directory(e),
    }
}

fn print_files(files: &[impl AsRef<Path>]) {
    for f in files {
        println!("  {}", f.as_ref().display());
    }
}

fn print_listing(listing: &Listing) {
    let width = listing
        .nodes
        .iter()
        .map(|n| n.name.len())
        .chain([4])
        .max()
        .unwrap_or(4);
    println!("{:width$}  {:32}  STATUS", "NAME", "NODE ID");
    for n in &listing.nodes {
        let status = if n.revoked { "revoked" } else { "valid" };
        println!("{:width$}  {}  {status}", n.name, n.id);
    }
    for id in &listing.revoked_elsewhere {
        println!("{:width$}  {id}  revoked", "-");
    }
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
    fn quoting() {
        assert_eq!(shell_quote(Path::new("/tmp/a-b/c.d")), "/tmp/a-b/c.d");
        assert_eq!(shell_quote(Path::new("my dir")), "'my dir'");
        assert_eq!(shell_quote(Path::new("it's")), r"'it'\''s'");
    }
}
