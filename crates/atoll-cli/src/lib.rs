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
//! Every node configured for consensus hosts grains ([`grains`]): the built-in grain
//! types, among them the shards of a replicated key-value store ([`kv`]).
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
pub mod grains;
pub mod http;
pub mod kv;
pub mod node;
pub mod status;

pub use error::{EXIT_CONFIG, EXIT_FAILURE, Error};

use args::{Cli, Command};

/// Runs one command, printing its results to stdout (and notes to stderr).
pub fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Ca(cmd) => ca::run_ca(cmd),
        Command::Shared(cmd) => ca::run_shared(cmd),
        Command::Node(args) => node::run(&args.config),
        Command::Status(args) => run_status(args),
        Command::Demo(args) => demo::run(args.keep),
        Command::Attach(args) => {
            let http = http_address(args.ask)?;
            if args.once {
                let list = attach::fetch(&http, &args.node, args.sort)?;
                print!("{}", attach::render_once(&args.node, &list, args.sort));
                let grains = attach::fetch_grains(&http, &args.node)?;
                print!("{}", attach::render_grains(&args.node, grains.as_deref()));
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
    let grains = status::fetch_grains(&addr)?;
    if args.json {
        let mut json = serde_json::to_value(&s).expect("a status serializes");
        json["grains"] = serde_json::to_value(&grains).expect("grains serialize");
        println!(
            "{}",
            serde_json::to_string_pretty(&json).expect("a status serializes")
        );
    } else {
        print!("{}", status::render(&s));
        print!("{}", status::render_grains(grains.as_ref()));
    }
    Ok(())
}
