//! The command line: what `atoll --help` shows.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// The default CA directory of the `ca` commands.
pub const DEFAULT_CA_DIR: &str = "atoll-ca";
/// The default directory of the `shared` commands.
pub const DEFAULT_SHARED_DIR: &str = "atoll-shared";

const MAIN_AFTER_HELP: &str = "\
Getting started (two nodes on one machine):
  atoll ca init --name demo            # ./atoll-ca/ca.pem, ca.key, revoked.txt
  atoll ca issue london                # ./atoll-ca/london.key, london.pem
  atoll ca issue paris
  atoll node --config london.toml      # see `atoll node --help` for the file format

Exit codes: 0 success, 1 failure, 2 bad arguments, configuration or input files.";

/// atoll: a distributed actor runtime. This program manages a cluster's certificates and
/// runs nodes.
#[derive(Debug, Parser)]
#[command(name = "atoll", version, after_help = MAIN_AFTER_HELP)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage the cluster certificate authority: create it, issue and revoke node
    /// certificates.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Manage a shared TLS identity: the CA-less mode for small trusted clusters.
    #[command(subcommand)]
    Shared(SharedCommand),
    /// Run a node until SIGINT or SIGTERM.
    #[command(
        long_about = "Run a node until SIGINT or SIGTERM.\n\n\
            Reads the TOML configuration, starts the node with its built-in services (a \
            process registered as `echo` and the spawnable factory `echo`), dials every \
            configured peer (retrying with backoff, never giving up) and prints one line \
            to stdout once it is listening:\n\n    \
            atoll node NAME id=NODEID listening on ADDR\n\n\
            ADDR is the bound address, so `listen = \"127.0.0.1:0\"` works.\n\n\
            With `[cluster] enabled = true` the node joins the SWIM membership through the \
            seeds and prints one line per membership event (ID is the 32-hex node id, GEN \
            the member's generation, which grows on every start):\n\n    \
            member active NAME id=ID gen=GEN            (this node)\n    \
            member joined NAME id=ID gen=GEN addr=ADDR\n    \
            member suspect NAME id=ID gen=GEN\n    \
            member recovered NAME id=ID gen=GEN\n    \
            member unreachable NAME id=ID gen=GEN\n    \
            member left NAME id=ID gen=GEN\n    \
            member fenced NAME old_gen=OLD new_gen=NEW  (this node rejoined)\n\n\
            With a `[consensus]` table the node takes part in the naming core (Consistent \
            names and locks). A node whose id is one of `consensus.voters` runs a Raft voter \
            with its log in `data_dir` and prints, once the voter runs:\n\n    \
            consensus voter raft_id=ID voters=N data=PATH\n\n\
            Any other node sends its proposals to the voters and prints at once:\n\n    \
            consensus member voters=N\n\n\
            Logs go to stderr; `log.filter` or RUST_LOG picks them (default: atoll's own INFO \
            lines, warnings from other libraries, nothing from openraft). On SIGINT or \
            SIGTERM the node leaves the membership, closes its connections, gives its \
            processes 5 s to stop and exits 0.",
        after_help = NODE_AFTER_HELP
    )]
    Node(NodeArgs),
    /// Show what a running node knows: members and their states, the Raft core (leader,
    /// term, this node's role), names per scope, groups and locks.
    ///
    /// Asks the node's HTTP service: give its address with --http, or the node's
    /// configuration with --config (its `http` field is used). Fails within a few seconds
    /// with a clear error when the node does not answer.
    Status(StatusArgs),
    /// Start a three-node cluster on this machine and show it working.
    ///
    /// Starts three `atoll node` processes on 127.0.0.1 (certificates and configuration
    /// in a temporary directory), joins them as a fourth member and narrates: membership
    /// and the Raft core, a chat room with members on every node, names in each scope, a
    /// lock, grains (virtual actors) activated by their first call and a replicated
    /// key-value store on them; then kills one node and shows it declared unreachable, its
    /// names and lock released, the lock taken again with a larger fencing token, its
    /// grains answering again from the survivors and every key still there. Stops the
    /// nodes, removes the directory and exits 0 (1 if a step does not happen in time).
    /// With --keep, restarts the killed node and leaves the cluster running with its
    /// status pages until Ctrl-C.
    Demo(DemoArgs),
    /// Watch a node's processes live: mailbox length, messages handled, uptime, status.
    ///
    /// NODE is a node name; any node of the cluster with an HTTP service (given with
    /// --http, or its configuration with --config) fetches the list from it over the
    /// live-attach RPC. Keys: m, h, u sort by mailbox, handled, uptime; r refreshes; q
    /// quits. With --once, prints the list once and exits.
    Attach(AttachArgs),
}

/// `atoll demo` arguments.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Leave the cluster running after the narration (the killed node restarted), with its
    /// status pages, until Ctrl-C; then stop it and remove its files.
    #[arg(long)]
    pub keep: bool,
}

/// `atoll attach` arguments.
#[derive(Debug, Args)]
pub struct AttachArgs {
    /// The node to watch, by name.
    #[arg(value_name = "NODE")]
    pub node: String,
    /// The node to ask.
    #[command(flatten)]
    pub ask: AskNode,
    /// The column to sort by, largest first.
    #[arg(long, value_enum, default_value = "mailbox")]
    pub sort: crate::attach::SortBy,
    /// Refresh interval, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub interval_ms: u64,
    /// Print the process list once and exit (no terminal view).
    #[arg(long)]
    pub once: bool,
}

/// Which running node to ask, through its HTTP service: its address, or its configuration.
#[derive(Debug, Args)]
pub struct AskNode {
    /// The node's HTTP address (HOST:PORT), as set by `http` in its configuration.
    #[arg(
        long,
        value_name = "HOST:PORT",
        required_unless_present = "config",
        conflicts_with = "config"
    )]
    pub http: Option<String>,
    /// The node's configuration file; its `http` address is asked.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// `atoll status` arguments.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The node to ask.
    #[command(flatten)]
    pub ask: AskNode,
    /// Print the full status as JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

const NODE_AFTER_HELP: &str = "\
Configuration (relative paths are relative to the configuration file's directory):

  name = \"london\"               # required: the name peers know this node by
  listen = \"127.0.0.1:7000\"     # required: UDP address to listen on (port 0: any)
  peers = [\"127.0.0.1:7001\"]    # optional: nodes to dial and keep connected (host:port)
  threads = 2                   # optional: async worker threads (default 2)
  grains = true                 # optional: host grains (needs [consensus]; default false)
  state_dir = \"state-london\"    # optional: where the node records its incarnation, so pids
                                #   of a restart never repeat an earlier run's (default:
                                #   state-NAME beside this file)
  http = \"127.0.0.1:7100\"       # optional: status page, JSON API (/api/...) and /metrics;
                                #   `atoll status` asks it

  [log]
  format = \"text\"               # optional: \"text\" (default) or \"json\" (one object per line)
  filter = \"info\"               # optional: which lines, e.g. \"info,atoll_raft=debug\"
                                #   (default \"warn,atoll=info,openraft=off\": atoll's INFO
                                #   lines, others' warnings); RUST_LOG overrides it

  [tls]
  mode = \"ca\"                   # \"ca\" (default) or \"shared\"
  key = \"london.key\"            # the node's own key (both modes)
  cert = \"london.pem\"           # ca mode: its certificate  (atoll ca issue)
  ca = \"ca.pem\"                 # ca mode: the cluster CA   (atoll ca init)
  revoked = \"revoked.txt\"       # ca mode, optional: revoked node ids, re-read when it changes
  shared_dir = \"atoll-shared\"   # shared mode: holds shared.pem and shared.key (atoll shared init)

  [limits]
  max_frame_len = 8388608       # optional: largest frame accepted from a peer, in bytes
  message_streams = 4           # optional: QUIC streams per peer for messages

  [cluster]                     # optional: SWIM membership
  enabled = true                # default false
  seeds = [\"127.0.0.1:7000\"]    # nodes to join through (host:port); none: found the cluster
  roles = [\"voter\"]             # announced to the other members
  capabilities = [\"gpu\"]        # announced to the other members
  advertise = \"10.0.0.1:7000\"   # optional: the address members reach this node on
                                #   (default: the bound address; set it with 0.0.0.0)

  [cluster.swim]                # optional: protocol timings
  probe_interval_ms = 1000      # a random member is probed this often
  ping_timeout_ms = 500         # wait for a direct answer (less than probe_interval_ms)
  suspect_timeout_ms = 5000     # a suspect not refuting this long is unreachable
  indirect_probes = 3           # witnesses asked to probe a member that did not answer

  [consensus]                   # optional: Raft-backed Consistent names and locks
  voters = [\"NODE_ID@127.0.0.1:7000\", ...]
                                # required: every voter (3 or 5), the same list on every
                                #   node; NODE_ID is the 32-hex id `atoll ca issue` prints.
                                #   A node listed here is a voter (listening on the address
                                #   given), any other proposes through the voters
  data_dir = \"raft-london\"      # the voter's Raft log (default: raft-NAME beside this file)
  heartbeat_interval_ms = 100   # optional timings (these are the defaults):
  election_timeout_min_ms = 400 #   more than heartbeat_interval_ms
  election_timeout_max_ms = 800 #   more than election_timeout_min_ms
  request_timeout_ms = 5000     # a registration or lock request fails after this long
  push_interval_ms = 50         # how often voters look for non-voters to bring up to date
                                #   (registry changes go out as deltas at once)
  release_interval_ms = 250     # how often names and locks of lost nodes are released

Unknown fields are errors. Exit code 2 means the configuration or a file it names is
wrong or missing; the message names the file, the field and, for a missing file, the
command that creates it.";

/// `atoll node` arguments.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// The node's TOML configuration file.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: PathBuf,
}

/// `atoll ca ...`
#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create the cluster CA.
    ///
    /// Writes DIR/ca.pem (the certificate every node trusts), DIR/ca.key (the CA's
    /// private key, mode 0600: keep it off the nodes) and an empty DIR/revoked.txt.
    /// Refuses to overwrite an existing CA.
    Init {
        /// The CA directory (created if needed).
        #[arg(long, value_name = "DIR", default_value = DEFAULT_CA_DIR)]
        dir: PathBuf,
        /// The cluster name, written into the CA certificate.
        #[arg(long, value_name = "CLUSTER", default_value = "atoll")]
        name: String,
    },
    /// Issue a node: generate its key and certificate.
    ///
    /// Generates the node's key and a certificate from the CA in DIR, written to
    /// OUT/NODE.key (mode 0600) and OUT/NODE.pem, and prints the node id (derived from
    /// the key) to stdout. When OUT is not DIR, a copy of the certificate is kept as
    /// DIR/NODE.pem, so `ca list` and `ca revoke NODE` know the node. Refuses to
    /// overwrite any of these files.
    Issue {
        /// The node name (letters, digits, `.`, `_`, `-`; it names the files too).
        #[arg(value_name = "NODE")]
        node: String,
        /// The CA directory.
        #[arg(long, value_name = "DIR", default_value = DEFAULT_CA_DIR)]
        dir: PathBuf,
        /// Where to write the key and certificate [default: DIR].
        #[arg(long, value_name = "OUT")]
        out: Option<PathBuf>,
    },
    /// Revoke a node.
    ///
    /// Appends the node's id to DIR/revoked.txt and prints what it revoked. Nodes
    /// configured with `tls.revoked` re-read the file within a few seconds and refuse
    /// the node on every new handshake; connections already up are not closed.
    Revoke {
        /// A node name with a certificate DIR/NODE.pem, or a node id (32 hex digits).
        #[arg(value_name = "NODE")]
        node: String,
        /// The CA directory.
        #[arg(long, value_name = "DIR", default_value = DEFAULT_CA_DIR)]
        dir: PathBuf,
    },
    /// List the issued nodes and whether they are revoked.
    ///
    /// Shows every node certificate in DIR (name, node id, `valid` or `revoked`), then
    /// revoked ids with no certificate there.
    List {
        /// The CA directory.
        #[arg(long, value_name = "DIR", default_value = DEFAULT_CA_DIR)]
        dir: PathBuf,
    },
}

/// `atoll shared ...`
#[derive(Debug, Subcommand)]
pub enum SharedCommand {
    /// Create the shared TLS identity.
    ///
    /// Writes DIR/shared.pem and DIR/shared.key (mode 0600), to be copied to every node.
    /// Simpler than a CA, but the files are the cluster's only credential and nodes
    /// cannot be revoked one by one. Refuses to overwrite.
    Init {
        /// The directory (created if needed).
        #[arg(long, value_name = "DIR", default_value = DEFAULT_SHARED_DIR)]
        dir: PathBuf,
        /// The cluster name, written into the certificate.
        #[arg(long, value_name = "CLUSTER", default_value = "atoll")]
        name: String,
    },
    /// Generate a node's own key.
    ///
    /// Writes DIR/NODE.key (mode 0600) and prints the node id to stdout: in shared mode
    /// the node's own key still decides its id. Refuses to overwrite.
    Key {
        /// The node name (letters, digits, `.`, `_`, `-`; it names the file too).
        #[arg(value_name = "NODE")]
        node: String,
        /// Where to write the key.
        #[arg(long, value_name = "DIR", default_value = DEFAULT_SHARED_DIR)]
        dir: PathBuf,
    },
}
