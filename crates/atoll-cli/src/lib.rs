//! The `atoll` command: manages a cluster's certificate authority and runs nodes.
//!
//! - `atoll ca init | issue | revoke | list`: the cluster CA and node certificates
//!   ([`ca`]).
//! - `atoll shared init | key`: the CA-less shared identity.
//! - `atoll node --config FILE`: a node ([`node`]) configured by a TOML file ([`config`]),
//!   optionally serving a status page, a JSON API and metrics over HTTP ([`http`]).
//! - `atoll attach NODE`: a live view of a node's processes ([`attach`]).
//! - `atoll demo`: a three-node cluster on this machine, narrated ([`demo`]).
//! - `atoll status`: a running node's view of the cluster, from its HTTP service
//!   ([`status`]).
//!
//! The binary only parses the command line ([`args::Cli`]) and calls [`run`]; failures
//! are [`Error`]s whose text names the file, the field and, where one exists, the command
//! that fixes it, and whose [`Error::exit_code`] is 2 for bad input and 1 otherwise.
#![deny(missing_docs)]

pub mod args;
pub mod attach;
pub mod ca;
pub mod config;
pub mod demo;
mod error;
pub mod http;
pub mod node;
pub mod status;

use std::path::Path;

pub use error::{EXIT_CONFIG, EXIT_FAILURE, Error};

use args::{CaCommand, Cli, Command, SharedCommand};

/// Runs one command, printing its results to stdout (and notes to stderr).
pub fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Ca(cmd) => run_ca(cmd),
        Command::Shared(cmd) => run_shared(cmd),
        Command::Node(args) => node::run(&args.config),
        Command::Status(args) => run_status(args),
        Command::Demo => demo::run(),
        Command::Attach(args) => {
            let http = http_address(args.ask)?;
            if args.once {
                let list = attach::fetch(&http, &args.node, args.sort)?;
                print!("{}", attach::render_once(&args.node, &list, args.sort));
                Ok(())
            } else {
                let every = std::time::Duration::from_millis(args.interval_ms.max(100));
                attach::run_live(&http, &args.node, args.sort, every)
            }
        }
    }
}

/// The HTTP address given, or the one in the node configuration given.
fn http_address(ask: args::AskNode) -> Result<String, Error> {
    match (ask.http, ask.config) {
        (Some(addr), _) => Ok(addr),
        (None, Some(path)) => {
            let file = config::NodeFile::load(&path)?;
            match file.http {
                Some(addr) => Ok(addr.to_string()),
                None => Err(Error::NoHttp { path }),
            }
        }
        (None, None) => unreachable!("clap requires --http or --config"),
    }
}

fn run_status(args: args::StatusArgs) -> Result<(), Error> {
    let addr = http_address(args.ask)?;
    let s = status::fetch_status(&addr)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&s).expect("a status serializes")
        );
    } else {
        print!("{}", status::render(&s));
    }
    Ok(())
}

fn run_ca(cmd: CaCommand) -> Result<(), Error> {
    match cmd {
        CaCommand::Init { dir, name } => {
            let files = ca::ca_init(&dir, &name)?;
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
            let (id, key, cert) = ca::ca_issue(&dir, &node, &out)?;
            println!("{id}");
            eprintln!(
                "issued node {node:?} (id {id}): {} (secret, mode 0600) and {}",
                key.display(),
                cert.display()
            );
        }
        CaCommand::Revoke { node, dir } => {
            let done = ca::ca_revoke(&dir, &node)?;
            let who = match &done.name {
                Some(name) => format!("{name} id={}", done.id),
                None => format!("id={}", done.id),
            };
            if done.newly {
                println!("revoked {who}");
                eprintln!(
                    "appended to {}; nodes refuse it on their next handshake",
                    dir.join(ca::REVOKED_FILE).display()
                );
            } else {
                println!("already revoked {who}");
            }
        }
        CaCommand::List { dir } => {
            let listing = ca::ca_list(&dir)?;
            print_listing(&listing);
            for (path, why) in &listing.unreadable {
                eprintln!("skipped {}: {why}", path.display());
            }
        }
    }
    Ok(())
}

fn run_shared(cmd: SharedCommand) -> Result<(), Error> {
    match cmd {
        SharedCommand::Init { dir, name } => {
            let files = ca::shared_init(&dir, &name)?;
            println!("created shared identity {name:?} in {}", dir.display());
            print_files(&files);
            eprintln!("copy both files to every node: they are the cluster's only credential");
        }
        SharedCommand::Key { node, dir } => {
            let (id, path) = ca::shared_key(&dir, &node)?;
            println!("{id}");
            eprintln!(
                "generated the key of node {node:?} (id {id}): {} (secret, mode 0600)",
                path.display()
            );
        }
    }
    Ok(())
}

fn print_files(files: &[impl AsRef<Path>]) {
    for f in files {
        println!("  {}", f.as_ref().display());
    }
}

fn print_listing(listing: &ca::Listing) {
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
