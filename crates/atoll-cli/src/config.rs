//! The node configuration file: parsing, checking, and turning it into a
//! [`atoll_cluster::NodeConfig`].

use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use atoll_cluster::{
    ConsensusConfig, MAX_LABEL_LEN, MAX_LABELS, MembershipConfig, NodeConfig, SwimConfig,
};
use atoll_core::NodeId;
use atoll_net::{
    NodeCertificate, NodeIdentity, RevocationList, SHARED_CERT_FILE, SHARED_KEY_FILE,
    SharedIdentity, TransportSettings, TrustConfig,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::Deserialize;

use crate::ca::shell_quote;
use crate::error::Error;

/// Worker threads when the configuration does not say.
pub const DEFAULT_THREADS: usize = 2;
/// The smallest `limits.max_frame_len` accepted: introductions and registry snapshots must
/// fit.
pub const MIN_FRAME_LEN: usize = 4096;
/// The most `limits.message_streams` accepted (QUIC allows 100 streams open at once).
pub const MAX_MESSAGE_STREAMS: usize = 64;
/// The longest membership timing accepted, in milliseconds (one hour).
pub const MAX_SWIM_MS: i64 = 3_600_000;
/// The most `cluster.swim.indirect_probes` accepted.
pub const MAX_INDIRECT_PROBES: i64 = 64;
/// The longest consensus timing accepted, in milliseconds (one hour).
pub const MAX_CONSENSUS_MS: i64 = 3_600_000;

/// The file as written, before checking. Leaves are checked by hand so errors can say
/// which field is wrong and why.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    name: String,
    listen: String,
    #[serde(default)]
    peers: Vec<String>,
    threads: Option<i64>,
    tls: Option<RawTls>,
    #[serde(default)]
    limits: RawLimits,
    cluster: Option<RawCluster>,
    consensus: Option<RawConsensus>,
    http: Option<String>,
    #[serde(default)]
    log: RawLog,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    format: Option<String>,
    filter: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConsensus {
    #[serde(default)]
    voters: Vec<String>,
    data_dir: Option<PathBuf>,
    heartbeat_interval_ms: Option<i64>,
    election_timeout_min_ms: Option<i64>,
    election_timeout_max_ms: Option<i64>,
    request_timeout_ms: Option<i64>,
    push_interval_ms: Option<i64>,
    release_interval_ms: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    #[serde(default)]
    enabled: bool,
    #[serde(default)]
    seeds: Vec<String>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    capabilities: Vec<String>,
    advertise: Option<String>,
    #[serde(default)]
    swim: RawSwim,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSwim {
    probe_interval_ms: Option<i64>,
    ping_timeout_ms: Option<i64>,
    suspect_timeout_ms: Option<i64>,
    indirect_probes: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    #[serde(default)]
    mode: TlsMode,
    key: Option<PathBuf>,
    cert: Option<PathBuf>,
    ca: Option<PathBuf>,
    revoked: Option<PathBuf>,
    shared_dir: Option<PathBuf>,
}

/// How a node proves it belongs to the cluster.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// A certificate from the cluster CA (the default).
    #[default]
    Ca,
    /// One TLS identity shared by every node.
    Shared,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_frame_len: Option<i64>,
    message_streams: Option<i64>,
}

/// A checked node configuration. Paths are resolved against the configuration file's
/// directory; the files they name have not been read yet ([`NodeFile::node_config`] does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFile {
    /// The configuration file.
    pub path: PathBuf,
    /// The node's name.
    pub name: String,
    /// The address to listen on.
    pub listen: SocketAddr,
    /// Peers to dial, as `host:port` (an IP address or a name to resolve).
    pub peers: Vec<String>,
    /// Worker threads of the async runtime.
    pub threads: usize,
    /// The TLS files.
    pub tls: TlsFiles,
    /// `limits.max_frame_len`, if set.
    pub max_frame_len: Option<usize>,
    /// `limits.message_streams`, if set.
    pub message_streams: Option<usize>,
    /// Membership, when `cluster.enabled` is true.
    pub cluster: Option<ClusterFile>,
    /// Consensus names and locks, when there is a `[consensus]` table.
    pub consensus: Option<ConsensusFile>,
    /// `http`: where the status page, the JSON API and the metrics are served, if set.
    pub http: Option<SocketAddr>,
    /// `log.format`: how log lines are written.
    pub log_format: LogFormat,
    /// `log.filter`: which log lines are written (an env-filter directive; `RUST_LOG`
    /// overrides it).
    pub log_filter: String,
}

/// How log lines are written (to stderr).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The checked `[consensus]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsensusFile {
    /// `consensus.voters`: each voter's node id and address, resolved.
    pub voters: Vec<(NodeId, SocketAddr)>,
    /// `consensus.data_dir`, resolved (default: `raft-NAME` beside the file).
    pub data_dir: PathBuf,
    /// `consensus.heartbeat_interval_ms`.
    pub heartbeat_interval: Duration,
    /// `consensus.election_timeout_min_ms`.
    pub election_timeout_min: Duration,
    /// `consensus.election_timeout_max_ms`.
    pub election_timeout_max: Duration,
    /// `consensus.request_timeout_ms`.
    pub request_timeout: Duration,
    /// `consensus.push_interval_ms`.
    pub push_interval: Duration,
    /// `consensus.release_interval_ms`.
    pub release_interval: Duration,
}

impl ConsensusFile {
    /// The settings for [`NodeConfig::consensus`].
    pub fn consensus(&self) -> ConsensusConfig {
        ConsensusConfig {
            voters: self.voters.clone(),
            data_dir: self.data_dir.clone(),
            heartbeat_interval: self.heartbeat_interval,
            election_timeout_min: self.election_timeout_min,
            election_timeout_max: self.election_timeout_max,
            request_timeout: self.request_timeout,
            push_interval: self.push_interval,
            release_interval: self.release_interval,
        }
    }

    /// Whether the node `id` is one of the voters.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.iter().any(|(v, _)| *v == id)
    }
}

/// The checked `[cluster]` table of an enabled cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterFile {
    /// `cluster.seeds`, resolved.
    pub seeds: Vec<SocketAddr>,
    /// `cluster.roles`.
    pub roles: Vec<String>,
    /// `cluster.capabilities`.
    pub capabilities: Vec<String>,
    /// `cluster.advertise`, resolved, if set.
    pub advertise: Option<SocketAddr>,
    /// `cluster.swim.probe_interval_ms`.
    pub probe_interval: Duration,
    /// `cluster.swim.ping_timeout_ms`.
    pub ping_timeout: Duration,
    /// `cluster.swim.suspect_timeout_ms`.
    pub suspect_timeout: Duration,
    /// `cluster.swim.indirect_probes`.
    pub indirect_probes: usize,
}

impl ClusterFile {
    /// The membership settings for [`NodeConfig::membership`].
    pub fn membership(&self) -> MembershipConfig {
        MembershipConfig {
            seeds: self.seeds.clone(),
            roles: self.roles.clone(),
            capabilities: self.capabilities.clone(),
            advertise: self.advertise,
            swim: SwimConfig {
                probe_interval: self.probe_interval,
                ping_timeout: self.ping_timeout,
                suspect_timeout: self.suspect_timeout,
                indirect_probes: self.indirect_probes,
                ..SwimConfig::default()
            },
            ..MembershipConfig::default()
        }
    }
}

/// The TLS files a node uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsFiles {
    /// CA mode.
    Ca {
        /// The node's key.
        key: PathBuf,
        /// Its certificate, issued by the CA over that key.
        cert: PathBuf,
        /// The CA certificate.
        ca: PathBuf,
        /// The revocation list, if any.
        revoked: Option<PathBuf>,
    },
    /// Shared mode.
    Shared {
        /// The node's own key (it decides the node id).
        key: PathBuf,
        /// The directory of `shared.pem` and `shared.key`.
        shared_dir: PathBuf,
    },
}

/// What [`NodeFile::node_config`] builds.
#[derive(Debug)]
pub struct Loaded {
    /// The configuration for [`atoll_cluster::Node::start`].
    pub config: NodeConfig,
    /// In CA mode with `tls.revoked`: the list the node consults (shared with `config`)
    /// and the file it comes from, to re-read when it changes.
    pub revoked: Option<(RevocationList, PathBuf)>,
}

impl NodeFile {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<NodeFile, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ConfigRead {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Checks configuration text; `path` is where it came from (for messages and for
    /// resolving relative paths).
    pub fn parse(path: &Path, text: &str) -> Result<NodeFile, Error> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| toml_error(path, text, &e))?;
        let field = |field: &str, message: String| Error::ConfigField {
            path: path.to_path_buf(),
            field: field.to_string(),
            message,
        };
        let base = path.parent().unwrap_or(Path::new("")).to_path_buf();
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };

        let name = raw.name.trim();
        if name.is_empty() {
            return Err(field("name", "must not be empty".into()));
        }
        if name.len() > atoll_net::MAX_NAME_LEN || name.chars().any(char::is_control) {
            return Err(field(
                "name",
                format!(
                    "{:?} is unusable (at most {} bytes, no control characters)",
                    raw.name,
                    atoll_net::MAX_NAME_LEN
                ),
            ));
        }
        let listen: SocketAddr = raw.listen.parse().map_err(|_| {
            field(
                "listen",
                format!(
                    "invalid socket address {:?} (expected IP:PORT, e.g. \"127.0.0.1:7000\")",
                    raw.listen
                ),
            )
        })?;
        for (i, peer) in raw.peers.iter().enumerate() {
            if !is_host_port(peer) {
                return Err(field(
                    &format!("peers[{i}]"),
                    format!("invalid peer address {peer:?} (expected HOST:PORT)"),
                ));
            }
        }
        let threads = match raw.threads {
            None => DEFAULT_THREADS,
            Some(n @ 1..=1024) => n as usize,
            Some(n) => return Err(field("threads", format!("{n} is not between 1 and 1024"))),
        };
        let max_frame_len = match raw.limits.max_frame_len {
            None => None,
            Some(n) if n >= MIN_FRAME_LEN as i64 && n <= i64::from(u32::MAX) => Some(n as usize),
            Some(n) => {
                return Err(field(
                    "limits.max_frame_len",
                    format!("{n} is not between {MIN_FRAME_LEN} and {}", u32::MAX),
                ));
            }
        };
        let message_streams = match raw.limits.message_streams {
            None => None,
            Some(n) if n >= 1 && n <= MAX_MESSAGE_STREAMS as i64 => Some(n as usize),
            Some(n) => {
                return Err(field(
                    "limits.message_streams",
                    format!("{n} is not between 1 and {MAX_MESSAGE_STREAMS}"),
                ));
            }
        };

        let cluster = match raw.cluster {
            Some(c) => parse_cluster(c, name, &field)?,
            None => None,
        };
        let consensus = match raw.consensus {
            Some(c) => Some(parse_consensus(c, name, &base, &field)?),
            None => None,
        };

        let Some(tls) = raw.tls else {
            return Err(field(
                "tls",
                "missing: a [tls] table with key, cert and ca (or mode = \"shared\") is required"
                    .into(),
            ));
        };
        let mode_name = match tls.mode {
            TlsMode::Ca => "ca",
            TlsMode::Shared => "shared",
        };
        let required = |value: Option<PathBuf>, key: &str| {
            value.map(|p| resolve(&p)).ok_or_else(|| {
                field(
                    &format!("tls.{key}"),
                    format!("required in {mode_name} mode"),
                )
            })
        };
        let refuse = |present: bool, key: &str| {
            if present {
                Err(field(
                    &format!("tls.{key}"),
                    format!("not used in {mode_name} mode"),
                ))
            } else {
                Ok(())
            }
        };
        let tls = match tls.mode {
            TlsMode::Ca => {
                refuse(tls.shared_dir.is_some(), "shared_dir")?;
                TlsFiles::Ca {
                    key: required(tls.key, "key")?,
                    cert: required(tls.cert, "cert")?,
                    ca: required(tls.ca, "ca")?,
                    revoked: tls.revoked.map(|p| resolve(&p)),
                }
            }
            TlsMode::Shared => {
                refuse(tls.cert.is_some(), "cert")?;
                refuse(tls.ca.is_some(), "ca")?;
                refuse(tls.revoked.is_some(), "revoked")?;
                TlsFiles::Shared {
                    key: required(tls.key, "key")?,
                    shared_dir: required(tls.shared_dir, "shared_dir")?,
                }
            }
        };

        let http = match &raw.http {
            None => None,
            Some(text) => Some(text.parse().map_err(|_| {
                field(
                    "http",
                    format!(
                        "invalid socket address {text:?} (expected IP:PORT, e.g. \"127.0.0.1:7100\")"
                    ),
                )
            })?),
        };
        let log_format = match raw.log.format.as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(field(
                    "log.format",
                    format!("{other:?} is not a log format (expected \"text\" or \"json\")"),
                ));
            }
        };
        let log_filter = raw.log.filter.unwrap_or_else(|| "info".into());
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log_filter) {
            return Err(field("log.filter", format!("{log_filter:?}: {e}")));
        }

        Ok(NodeFile {
            path: path.to_path_buf(),
            name: name.to_string(),
            listen,
            peers: raw.peers,
            threads,
            tls,
            max_frame_len,
            message_streams,
            cluster,
            consensus,
            http,
            log_format,
            log_filter,
        })
    }

    /// Reads the key and certificate files and builds the node's configuration.
    ///
    /// A missing file is reported with the command that creates it; a file that exists
    /// but is unusable, or a key that does not belong to its certificate, names the file
    /// and the field.
    pub fn node_config(&self) -> Result<Loaded, Error> {
        let (mut config, revoked) = match &self.tls {
            TlsFiles::Ca {
                key,
                cert,
                ca,
                revoked,
            } => {
                let ca_dir = parent_dir(ca);
                let key_dir = parent_dir(key);
                let stem = file_stem(key).unwrap_or(&self.name).to_string();
                let issue = format!(
                    "atoll ca issue {stem} --dir {} --out {}",
                    shell_quote(&ca_dir),
                    shell_quote(&key_dir)
                );
                self.require(ca, "tls.ca", "the cluster CA certificate", || {
                    format!("run `atoll ca init --dir {}`", shell_quote(&ca_dir))
                })?;
                self.require(key, "tls.key", "the node key", || format!("run `{issue}`"))?;
                self.require(cert, "tls.cert", "the node certificate", || {
                    let copy = ca_dir.join(format!("{stem}.pem"));
                    if copy.is_file() {
                        format!(
                            "the CA keeps a copy of the certificates it issues: copy {} there",
                            copy.display()
                        )
                    } else {
                        format!(
                            "run `{issue}` (it writes the key and the certificate together: \
                             move {} away first)",
                            key.display()
                        )
                    }
                })?;
                if let Some(revoked) = revoked {
                    self.require(revoked, "tls.revoked", "the revocation list", || {
                        format!(
                            "`atoll ca init --dir {}` creates it; an empty file will do",
                            shell_quote(&ca_dir)
                        )
                    })?;
                }

                let identity = NodeIdentity::load(key).map_err(|e| self.bad("tls.key", e))?;
                let certificate =
                    NodeCertificate::load(cert).map_err(|e| self.bad("tls.cert", e))?;
                if certificate.node_id() != identity.node_id() {
                    return Err(self.field(
                        "tls.cert",
                        format!(
                            "{} is the certificate of node {}, but the key {} is node {}",
                            cert.display(),
                            certificate.node_id(),
                            key.display(),
                            identity.node_id()
                        ),
                    ));
                }
                let ca_der = read_ca_cert(ca).map_err(|why| {
                    self.field(
                        "tls.ca",
                        format!("{} is not a usable CA certificate: {why}", ca.display()),
                    )
                })?;
                let list = match revoked {
                    Some(path) => Some((
                        RevocationList::load(path).map_err(|e| self.bad("tls.revoked", e))?,
                        path.clone(),
                    )),
                    None => None,
                };
                let trust = TrustConfig::Ca {
                    ca_cert_der: ca_der,
                    revoked: list.as_ref().map(|(l, _)| l.clone()).unwrap_or_default(),
                };
                // Catches a CA certificate rustls will not take as a root, now and with
                // the file named, rather than at start with a bare TLS error.
                atoll_net::server_config(
                    &identity,
                    &certificate,
                    &trust,
                    &TransportSettings::default(),
                )
                .map_err(|e| self.field("tls.ca", format!("{}: {e}", ca.display())))?;
                let config =
                    NodeConfig::with_ca(&self.name, self.listen, identity, certificate, trust);
                (config, list)
            }
            TlsFiles::Shared { key, shared_dir } => {
                let init = || {
                    format!(
                        "run `atoll shared init --dir {}` and copy the directory to every node",
                        shell_quote(shared_dir)
                    )
                };
                self.require(
                    &shared_dir.join(SHARED_CERT_FILE),
                    "tls.shared_dir",
                    "the shared certificate",
                    init,
                )?;
                self.require(
                    &shared_dir.join(SHARED_KEY_FILE),
                    "tls.shared_dir",
                    "the shared key",
                    init,
                )?;
                self.require(key, "tls.key", "the node key", || {
                    format!(
                        "run `atoll shared key {} --dir {}`",
                        file_stem(key).unwrap_or(&self.name),
                        shell_quote(&parent_dir(key))
                    )
                })?;
                let identity = NodeIdentity::load(key).map_err(|e| self.bad("tls.key", e))?;
                let shared =
                    SharedIdentity::load(shared_dir).map_err(|e| self.bad("tls.shared_dir", e))?;
                let config =
                    NodeConfig::with_shared_identity(&self.name, self.listen, identity, &shared)
                        .map_err(|e| {
                            self.field(
                                "tls.shared_dir",
                                format!("{}: {e}", shared_dir.join(SHARED_KEY_FILE).display()),
                            )
                        })?;
                (config, None)
            }
        };
        if let Some(n) = self.max_frame_len {
            config.max_frame_len = n;
        }
        if let Some(n) = self.message_streams {
            config.message_streams = n;
        }
        config.membership = self.cluster.as_ref().map(ClusterFile::membership);
        config.consensus = self.consensus.as_ref().map(ConsensusFile::consensus);
        Ok(Loaded { config, revoked })
    }

    fn field(&self, field: &str, message: String) -> Error {
        Error::ConfigField {
            path: self.path.clone(),
            field: field.to_string(),
            message,
        }
    }

    fn bad(&self, field: &str, source: atoll_net::LoadError) -> Error {
        Error::BadFile {
            context: format!("{}: field \"{field}\"", self.path.display()),
            source,
        }
    }

    fn require(
        &self,
        path: &Path,
        field: &str,
        what: &str,
        hint: impl FnOnce() -> String,
    ) -> Result<(), Error> {
        if path.exists() {
            return Ok(());
        }
        Err(Error::MissingFile {
            what: format!("{}: field \"{field}\": {what}", self.path.display()),
            path: path.to_path_buf(),
            hint: hint(),
        })
    }
}

/// Checks the `[cluster]` table; `None` unless `enabled`. Every field is checked either way.
fn parse_cluster(
    raw: RawCluster,
    name: &str,
    field: &impl Fn(&str, String) -> Error,
) -> Result<Option<ClusterFile>, Error> {
    let mut seeds = Vec::new();
    for (i, seed) in raw.seeds.iter().enumerate() {
        seeds.extend(resolve_addr(seed).map_err(|why| field(&format!("cluster.seeds[{i}]"), why))?);
    }
    let advertise = match &raw.advertise {
        None => None,
        Some(a) => Some(
            resolve_addr(a)
                .map_err(|why| field("cluster.advertise", why))?
                .next()
                .ok_or_else(|| {
                    field("cluster.advertise", format!("{a:?} resolves to no address"))
                })?,
        ),
    };
    if raw.enabled && name.len() > MAX_LABEL_LEN {
        return Err(field(
            "name",
            format!("at most {MAX_LABEL_LEN} bytes in a cluster"),
        ));
    }
    for (key, labels) in [("roles", &raw.roles), ("capabilities", &raw.capabilities)] {
        for (i, label) in labels.iter().enumerate() {
            if label.is_empty()
                || label.len() > MAX_LABEL_LEN
                || label.chars().any(char::is_whitespace)
            {
                return Err(field(
                    &format!("cluster.{key}[{i}]"),
                    format!("{label:?} is unusable (1 to {MAX_LABEL_LEN} bytes, no spaces)"),
                ));
            }
        }
    }
    if raw.roles.len() + raw.capabilities.len() > MAX_LABELS {
        return Err(field(
            "cluster.roles",
            format!("more than {MAX_LABELS} roles and capabilities together"),
        ));
    }
    let defaults = SwimConfig::default();
    let ms = |value: Option<i64>, key: &str, default: Duration| match value {
        None => Ok(default),
        Some(n @ 1..=MAX_SWIM_MS) => Ok(Duration::from_millis(n as u64)),
        Some(n) => Err(field(
            &format!("cluster.swim.{key}"),
            format!("{n} is not between 1 and {MAX_SWIM_MS}"),
        )),
    };
    let probe_interval = ms(
        raw.swim.probe_interval_ms,
        "probe_interval_ms",
        defaults.probe_interval,
    )?;
    let ping_timeout = ms(
        raw.swim.ping_timeout_ms,
        "ping_timeout_ms",
        defaults.ping_timeout,
    )?;
    let suspect_timeout = ms(
        raw.swim.suspect_timeout_ms,
        "suspect_timeout_ms",
        defaults.suspect_timeout,
    )?;
    if ping_timeout >= probe_interval {
        return Err(field(
            "cluster.swim.ping_timeout_ms",
            format!(
                "{} must be less than probe_interval_ms ({})",
                ping_timeout.as_millis(),
                probe_interval.as_millis()
            ),
        ));
    }
    let indirect_probes = match raw.swim.indirect_probes {
        None => defaults.indirect_probes,
        Some(n @ 1..=MAX_INDIRECT_PROBES) => n as usize,
        Some(n) => {
            return Err(field(
                "cluster.swim.indirect_probes",
                format!("{n} is not between 1 and {MAX_INDIRECT_PROBES}"),
            ));
        }
    };
    if !raw.enabled {
        return Ok(None);
    }
    Ok(Some(ClusterFile {
        seeds,
        roles: raw.roles,
        capabilities: raw.capabilities,
        advertise,
        probe_interval,
        ping_timeout,
        suspect_timeout,
        indirect_probes,
    }))
}

/// Checks the `[consensus]` table; `base` is the configuration file's directory.
fn parse_consensus(
    raw: RawConsensus,
    name: &str,
    base: &Path,
    field: &impl Fn(&str, String) -> Error,
) -> Result<ConsensusFile, Error> {
    if raw.voters.is_empty() {
        return Err(field(
            "consensus.voters",
            "must list the voters, as \"NODE_ID@HOST:PORT\" (3 or 5 of them)".into(),
        ));
    }
    let mut voters: Vec<(NodeId, SocketAddr)> = Vec::with_capacity(raw.voters.len());
    for (i, entry) in raw.voters.iter().enumerate() {
        let key = format!("consensus.voters[{i}]");
        let (id, addr) = entry.split_once('@').ok_or_else(|| {
            field(
                &key,
                format!(
                    "{entry:?} is not NODE_ID@HOST:PORT (NODE_ID: the 32-hex node id \
                     `atoll ca issue` prints)"
                ),
            )
        })?;
        let id: NodeId = id.trim().parse().map_err(|_| {
            field(
                &key,
                format!("{id:?} in {entry:?} is not a node id (32 hex digits)"),
            )
        })?;
        let addr = resolve_addr(addr.trim())
            .map_err(|why| field(&key, why))?
            .next()
            .ok_or_else(|| field(&key, format!("{addr:?} resolves to no address")))?;
        // Raft knows a voter by the first 8 bytes of its id.
        if let Some(j) = voters
            .iter()
            .position(|(v, _)| v.as_bytes()[..8] == id.as_bytes()[..8])
        {
            let why = if voters[j].0 == id {
                format!("node {id} is already consensus.voters[{j}]")
            } else {
                format!("node {id} collides with consensus.voters[{j}] (same first 16 hex digits)")
            };
            return Err(field(&key, why));
        }
        voters.push((id, addr));
    }
    let data_dir = match raw.data_dir {
        Some(p) if p.as_os_str().is_empty() => {
            return Err(field("consensus.data_dir", "must not be empty".into()));
        }
        Some(p) if p.is_absolute() => p,
        Some(p) => base.join(p),
        None => {
            let safe: String = name
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            base.join(format!("raft-{safe}"))
        }
    };
    let defaults = ConsensusConfig::new(Vec::new(), PathBuf::new());
    let ms = |value: Option<i64>, key: &str, default: Duration| match value {
        None => Ok(default),
        Some(n @ 1..=MAX_CONSENSUS_MS) => Ok(Duration::from_millis(n as u64)),
        Some(n) => Err(field(
            &format!("consensus.{key}"),
            format!("{n} is not between 1 and {MAX_CONSENSUS_MS}"),
        )),
    };
    let heartbeat_interval = ms(
        raw.heartbeat_interval_ms,
        "heartbeat_interval_ms",
        defaults.heartbeat_interval,
    )?;
    let election_timeout_min = ms(
        raw.election_timeout_min_ms,
        "election_timeout_min_ms",
        defaults.election_timeout_min,
    )?;
    let election_timeout_max = ms(
        raw.election_timeout_max_ms,
        "election_timeout_max_ms",
        defaults.election_timeout_max,
    )?;
    let request_timeout = ms(
        raw.request_timeout_ms,
        "request_timeout_ms",
        defaults.request_timeout,
    )?;
    let push_interval = ms(
        raw.push_interval_ms,
        "push_interval_ms",
        defaults.push_interval,
    )?;
    let release_interval = ms(
        raw.release_interval_ms,
        "release_interval_ms",
        defaults.release_interval,
    )?;
    if election_timeout_min <= heartbeat_interval {
        return Err(field(
            "consensus.election_timeout_min_ms",
            format!(
                "{} must be greater than heartbeat_interval_ms ({})",
                election_timeout_min.as_millis(),
                heartbeat_interval.as_millis()
            ),
        ));
    }
    if election_timeout_max <= election_timeout_min {
        return Err(field(
            "consensus.election_timeout_max_ms",
            format!(
                "{} must be greater than election_timeout_min_ms ({})",
                election_timeout_max.as_millis(),
                election_timeout_min.as_millis()
            ),
        ));
    }
    Ok(ConsensusFile {
        voters,
        data_dir,
        heartbeat_interval,
        election_timeout_min,
        election_timeout_max,
        request_timeout,
        push_interval,
        release_interval,
    })
}

/// `IP:PORT`, or `HOST:PORT` resolved now.
fn resolve_addr(s: &str) -> Result<std::vec::IntoIter<SocketAddr>, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(vec![addr].into_iter());
    }
    if !is_host_port(s) {
        return Err(format!(
            "invalid address {s:?} (expected HOST:PORT, e.g. \"127.0.0.1:7000\")"
        ));
    }
    let addrs: Vec<SocketAddr> = s
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {s:?}: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("{s:?} resolves to no address"));
    }
    Ok(addrs.into_iter())
}

/// Reads the first PEM certificate of `path`.
fn read_ca_cert(path: &Path) -> Result<CertificateDer<'static>, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    CertificateDer::from_pem_slice(&bytes).map_err(|e| format!("no PEM certificate ({e})"))
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The name `atoll ca issue` / `atoll shared key` would need to write `path`.
fn file_stem(path: &Path) -> Option<&str> {
    path.file_name()?.to_str()?.strip_suffix(".key")
}

/// `HOST:PORT` with a numeric port; IPv6 hosts in brackets.
fn is_host_port(s: &str) -> bool {
    if s.parse::<SocketAddr>().is_ok() {
        return true;
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return false;
    };
    !host.is_empty()
        && port.parse::<u16>().is_ok()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// Turns a TOML or schema error into one that names the field, found from the error's
/// position in the text.
fn toml_error(path: &Path, text: &str, err: &toml::de::Error) -> Error {
    let message = err.message().trim().to_string();
    let span = err.span();
    let (line, column) = span.as_ref().map_or((1, 1), |s| line_col(text, s.start));
    let syntax = || Error::ConfigSyntax {
        path: path.to_path_buf(),
        line,
        column,
        message: message.clone(),
    };
    // Where in the document the error points; the key path of the deepest entry there.
    let container = span.as_ref().and_then(|s| field_at(text, s));
    let field = |field: String, message: String| Error::ConfigField {
        path: path.to_path_buf(),
        field,
        message,
    };
    if let Some(rest) = message.strip_prefix("missing field `") {
        let name = rest.split('`').next().unwrap_or_default();
        let full = match container {
            Some(c) if !c.is_empty() => format!("{c}.{name}"),
            _ => name.to_string(),
        };
        return field(full, "missing (it is required)".into());
    }
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let mut parts = rest.splitn(2, '`');
        let name = parts.next().unwrap_or_default();
        let expected = parts
            .next()
            .unwrap_or_default()
            .trim_start_matches(',')
            .trim();
        let full = match container {
            Some(c) if c == name || c.ends_with(&format!(".{name}")) => c,
            Some(c) if !c.is_empty() => format!("{c}.{name}"),
            _ => name.to_string(),
        };
        let message = if expected.is_empty() {
            "unknown field".to_string()
        } else {
            format!("unknown field ({expected})")
        };
        return field(full, message);
    }
    match container {
        Some(c) if !c.is_empty() => {
            let message = message.replace("expected i64", "expected an integer");
            field(c, format!("{message} (line {line})"))
        }
        _ => syntax(),
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// The dotted key path of the deepest entry whose key or value covers `span`; empty for
/// the document itself, `None` if the text does not parse.
fn field_at(text: &str, span: &Range<usize>) -> Option<String> {
    let doc = toml::de::DeTable::parse(text).ok()?;
    if span.is_empty() {
        // Errors about the document as a whole (a missing top-level field) point at 0..0.
        return Some(String::new());
    }
    let mut path = Vec::new();
    find_in_table(doc.get_ref(), span, &mut path);
    let mut out = String::new();
    for segment in path {
        if !out.is_empty() && !segment.starts_with('[') {
            out.push('.');
        }
        out.push_str(&segment);
    }
    Some(out)
}

fn covers(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end
}

/// Pushes the path to the entry of `table` covering `span`; false if none does. A table
/// value's own span is only its header, so nested tables are searched whatever it is.
fn find_in_table(
    table: &toml::de::DeTable<'_>,
    span: &Range<usize>,
    path: &mut Vec<String>,
) -> bool {
    for (key, value) in table.iter() {
        path.push(key.get_ref().to_string());
        if covers(&key.span(), span) || find_in_value(value, span, path) {
            return true;
        }
        path.pop();
    }
    false
}

fn find_in_value(
    value: &toml::Spanned<toml::de::DeValue<'_>>,
    span: &Range<usize>,
    path: &mut Vec<String>,
) -> bool {
    match value.get_ref() {
        toml::de::DeValue::Table(inner) => {
            find_in_table(inner, span, path) || covers(&value.span(), span)
        }
        toml::de::DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                path.push(format!("[{i}]"));
                if find_in_value(item, span, path) {
                    return true;
                }
                path.pop();
            }
            covers(&value.span(), span)
        }
        _ => covers(&value.span(), span),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<NodeFile, Error> {
        NodeFile::parse(Path::new("/etc/atoll/node.toml"), text)
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    /// `docs/node.toml`, the commented example with every field, parses as documented.
    #[test]
    fn the_commented_example_file_parses() {
        let text = include_str!("../../../docs/node.toml");
        let c = NodeFile::parse(Path::new("/srv/atoll/london.toml"), text).unwrap();
        assert_eq!(c.name, "london");
        assert_eq!(c.http, Some("127.0.0.1:7100".parse().unwrap()));
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(c.log_filter, "info");
        assert_eq!(c.threads, 2);
        let cluster = c.cluster.as_ref().unwrap();
        assert_eq!(
            cluster.seeds,
            ["127.0.0.1:7001".parse::<SocketAddr>().unwrap()]
        );
        let consensus = c.consensus.as_ref().unwrap();
        assert_eq!(consensus.voters.len(), 3);
        assert_eq!(consensus.data_dir, Path::new("/srv/atoll/raft-london"));
    }

    #[test]
    fn http_and_log_fields_are_checked() {
        let base = "name = \"a\"\nlisten = \"127.0.0.1:1\"\n";
        let tls = "[tls]\nkey = \"k\"\ncert = \"c\"\nca = \"a\"\n";
        let e = err(&format!("{base}http = \"nope\"\n{tls}"));
        assert!(
            e.contains("field \"http\": invalid socket address \"nope\""),
            "{e}"
        );
        let e = err(&format!("{base}{tls}[log]\nformat = \"xml\"\n"));
        assert!(
            e.contains("field \"log.format\": \"xml\" is not a log format"),
            "{e}"
        );
        let e = err(&format!("{base}{tls}[log]\nfilter = \"[[[\"\n"));
        assert!(e.contains("field \"log.filter\""), "{e}");
        let c = parse(&format!(
            "{base}{tls}[log]\nformat = \"json\"\nfilter = \"warn\"\n"
        ))
        .unwrap();
        assert_eq!(
            (c.log_format, c.log_filter.as_str()),
            (LogFormat::Json, "warn")
        );
    }

    const GOOD: &str = r#"
name = "london"
listen = "127.0.0.1:7000"
peers = ["127.0.0.1:7001", "paris.example:7000"]
threads = 3

[tls]
key = "london.key"
cert = "/abs/london.pem"
ca = "../ca/ca.pem"
revoked = "revoked.txt"

[limits]
max_frame_len = 65536
message_streams = 2
"#;

    #[test]
    fn a_full_config_parses_with_paths_resolved() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.name, "london");
        assert_eq!(c.listen, "127.0.0.1:7000".parse().unwrap());
        assert_eq!(c.peers.len(), 2);
        assert_eq!(c.threads, 3);
        assert_eq!(c.max_frame_len, Some(65536));
        assert_eq!(c.message_streams, Some(2));
        assert_eq!(
            c.tls,
            TlsFiles::Ca {
                key: "/etc/atoll/london.key".into(),
                cert: "/abs/london.pem".into(),
                ca: "/etc/atoll/../ca/ca.pem".into(),
                revoked: Some("/etc/atoll/revoked.txt".into()),
            }
        );
    }

    #[test]
    fn defaults() {
        let c = parse(
            "name = \"a\"\nlisten = \"[::1]:0\"\n[tls]\nkey = \"a.key\"\ncert = \"a.pem\"\nca = \"ca.pem\"\n",
        )
        .unwrap();
        assert_eq!(c.threads, DEFAULT_THREADS);
        assert!(c.peers.is_empty());
        assert_eq!(c.max_frame_len, None);
        let relative = NodeFile::parse(
            Path::new("node.toml"),
            "name = \"a\"\nlisten = \"[::1]:0\"\n[tls]\nmode = \"shared\"\nkey = \"a.key\"\nshared_dir = \"s\"\n",
        )
        .unwrap();
        assert_eq!(
            relative.tls,
            TlsFiles::Shared {
                key: "a.key".into(),
                shared_dir: "s".into()
            }
        );
    }

    #[test]
    fn errors_name_the_file_and_the_field() {
        let e = err("listen = \"127.0.0.1:1\"\n[tls]\nkey=\"k\"\ncert=\"c\"\nca=\"a\"\n");
        assert_eq!(
            e,
            "/etc/atoll/node.toml: field \"name\": missing (it is required)"
        );
        let e = err("name = \"a\"\nlisten = \"x\"\n");
        assert!(
            e.starts_with("/etc/atoll/node.toml: field \"listen\": invalid socket address \"x\""),
            "{e}"
        );
        let e = err(&GOOD.replace("threads = 3", "threads = 3\ncolour = 1"));
        assert!(
            e.starts_with("/etc/atoll/node.toml: field \"colour\": unknown field"),
            "{e}"
        );
        assert!(e.contains("`listen`"), "{e}");
        let e = err(&GOOD.replace("message_streams = 2", "message_streams = 2\nbogus = 1"));
        assert!(e.contains("field \"limits.bogus\": unknown field"), "{e}");
        let e = err(&GOOD.replace("revoked = ", "crl = "));
        assert!(e.contains("field \"tls.crl\": unknown field"), "{e}");
        let e = err(&GOOD.replace("key = \"london.key\"\n", ""));
        assert!(e.contains("field \"tls.key\": required in ca mode"), "{e}");
        let e = err(&GOOD.replace("threads = 3", "threads = \"many\""));
        assert!(e.contains("field \"threads\": invalid type"), "{e}");
        let e = err(&GOOD.replace("threads = 3", "threads = 0"));
        assert!(e.contains("field \"threads\": 0 is not between"), "{e}");
        let e = err(&GOOD.replace("[tls]", "[tls]\nmode = \"psk\""));
        assert!(
            e.contains("field \"tls.mode\": unknown variant `psk`"),
            "{e}"
        );
        let e = err(&GOOD.replace("\"paris.example:7000\"", "\"paris\""));
        assert!(
            e.contains("field \"peers[1]\": invalid peer address \"paris\""),
            "{e}"
        );
        let e = err(&GOOD.replace("\"paris.example:7000\"", "7"));
        assert!(e.contains("field \"peers[1]\""), "{e}");
        let e = err(&GOOD.replace("max_frame_len = 65536", "max_frame_len = 10"));
        assert!(e.contains("field \"limits.max_frame_len\""), "{e}");
        let e = err(&GOOD.replace("[tls]", "[tls]\nshared_dir = \"s\""));
        assert!(
            e.contains("field \"tls.shared_dir\": not used in ca mode"),
            "{e}"
        );
        let e = err("name = \"a\"\nlisten = \"127.0.0.1:1\"\n");
        assert!(e.contains("field \"tls\": missing"), "{e}");
        let e = err("name = \"a\"\nlisten = \"127.0.0.1:1\"\n[tls]\nkey = \"k\"\n[tls]\n");
        assert!(e.starts_with("/etc/atoll/node.toml: line 5"), "{e}");
        let e = err("name = \n");
        assert!(e.starts_with("/etc/atoll/node.toml: line 1"), "{e}");
    }

    const CLUSTER: &str = r#"
[cluster]
enabled = true
seeds = ["127.0.0.1:7001", "[::1]:7002"]
roles = ["voter"]
capabilities = ["gpu", "storage_nvme"]

[cluster.swim]
probe_interval_ms = 300
ping_timeout_ms = 100
"#;

    #[test]
    fn the_cluster_table_parses_with_defaults() {
        let c = parse(&format!("{GOOD}{CLUSTER}")).unwrap();
        let cluster = c.cluster.unwrap();
        assert_eq!(
            cluster.seeds,
            [
                "127.0.0.1:7001".parse::<SocketAddr>().unwrap(),
                "[::1]:7002".parse().unwrap()
            ]
        );
        assert_eq!(cluster.roles, ["voter"]);
        assert_eq!(cluster.capabilities, ["gpu", "storage_nvme"]);
        assert_eq!(cluster.advertise, None);
        let m = cluster.membership();
        assert_eq!(m.swim.probe_interval, Duration::from_millis(300));
        assert_eq!(m.swim.ping_timeout, Duration::from_millis(100));
        assert_eq!(m.swim.suspect_timeout, Duration::from_millis(5000));
        assert_eq!(m.swim.indirect_probes, 3);
        assert_eq!(m.seeds, cluster.seeds);

        // Absent or disabled: no membership (the table is still checked).
        assert_eq!(parse(GOOD).unwrap().cluster, None);
        let disabled = CLUSTER.replace("enabled = true", "enabled = false");
        assert_eq!(parse(&format!("{GOOD}{disabled}")).unwrap().cluster, None);
        let e = err(&format!("{GOOD}{}", disabled.replace("7002", "x")));
        assert!(e.contains("field \"cluster.seeds[1]\""), "{e}");
        let bare = parse(&format!("{GOOD}[cluster]\nenabled = true\n")).unwrap();
        let bare = bare.cluster.unwrap();
        assert!(bare.seeds.is_empty());
        assert_eq!(bare.probe_interval, Duration::from_millis(1000));
        assert_eq!(bare.ping_timeout, Duration::from_millis(500));
    }

    #[test]
    fn cluster_errors_name_the_field() {
        let with = |from: &str, to: &str| err(&format!("{GOOD}{}", CLUSTER.replace(from, to)));
        let e = with("\"[::1]:7002\"", "\"nowhere\"");
        assert!(
            e.starts_with(
                "/etc/atoll/node.toml: field \"cluster.seeds[1]\": invalid address \"nowhere\""
            ),
            "{e}"
        );
        let e = with("\"[::1]:7002\"", "7002");
        assert!(e.contains("field \"cluster.seeds[1]\""), "{e}");
        let e = with("probe_interval_ms = 300", "probe_interval_ms = 0");
        assert!(
            e.contains("field \"cluster.swim.probe_interval_ms\": 0 is not between"),
            "{e}"
        );
        let e = with("ping_timeout_ms = 100", "ping_timeout_ms = 300");
        assert!(
            e.contains(
                "field \"cluster.swim.ping_timeout_ms\": 300 must be less than probe_interval_ms (300)"
            ),
            "{e}"
        );
        let e = with("ping_timeout_ms = 100", "ping_timeout_ms = -5");
        assert!(e.contains("field \"cluster.swim.ping_timeout_ms\""), "{e}");
        let e = with(
            "ping_timeout_ms = 100",
            "ping_timeout_ms = 100\nsuspect_timeout_ms = 0",
        );
        assert!(
            e.contains("field \"cluster.swim.suspect_timeout_ms\""),
            "{e}"
        );
        let e = with(
            "ping_timeout_ms = 100",
            "ping_timeout_ms = 100\nindirect_probes = 0",
        );
        assert!(e.contains("field \"cluster.swim.indirect_probes\""), "{e}");
        let e = with("ping_timeout_ms = 100", "ping_timeout_ms = \"fast\"");
        assert!(
            e.contains("field \"cluster.swim.ping_timeout_ms\": invalid type"),
            "{e}"
        );
        let e = with("ping_timeout_ms = 100", "ping_timeout_ms = 100\nbogus = 1");
        assert!(
            e.contains("field \"cluster.swim.bogus\": unknown field"),
            "{e}"
        );
        let e = with("enabled = true", "enabled = \"yes\"");
        assert!(e.contains("field \"cluster.enabled\""), "{e}");
        let e = with("roles = [\"voter\"]", "roles = [\"\"]");
        assert!(e.contains("field \"cluster.roles[0]\""), "{e}");
        let e = with(
            "enabled = true",
            "enabled = true\nadvertise = \"somewhere\"",
        );
        assert!(e.contains("field \"cluster.advertise\""), "{e}");
        let many: Vec<String> = (0..20).map(|i| format!("\"r{i}\"")).collect();
        let e = with(
            "roles = [\"voter\"]",
            &format!("roles = [{}]", many.join(", ")),
        );
        assert!(e.contains("field \"cluster.roles\": more than"), "{e}");
    }

    const A: &str = "0123456789abcdef0123456789abcdef";
    const B: &str = "fedcba9876543210fedcba9876543210";

    fn consensus(table: &str) -> Result<NodeFile, Error> {
        parse(&format!("{GOOD}\n[consensus]\n{table}"))
    }

    fn consensus_err(table: &str) -> String {
        consensus(table).unwrap_err().to_string()
    }

    #[test]
    fn the_consensus_table_parses_with_defaults() {
        let c = consensus(&format!(
            "voters = [\"{A}@127.0.0.1:7000\", \"{B}@[::1]:7001\"]\n"
        ))
        .unwrap()
        .consensus
        .unwrap();
        let a: NodeId = A.parse().unwrap();
        let b: NodeId = B.parse().unwrap();
        assert_eq!(
            c.voters,
            [
                (a, "127.0.0.1:7000".parse().unwrap()),
                (b, "[::1]:7001".parse().unwrap())
            ]
        );
        assert!(c.is_voter(a) && !c.is_voter(NodeId::from_bytes([7; 16])));
        assert_eq!(c.data_dir, PathBuf::from("/etc/atoll/raft-london"));
        let config = c.consensus();
        let defaults = ConsensusConfig::new(c.voters.clone(), "/etc/atoll/raft-london");
        assert_eq!(config, defaults);

        let c = consensus(&format!(
            "voters = [\"{A}@127.0.0.1:7000\"]\ndata_dir = \"state/raft\"\n\
             heartbeat_interval_ms = 50\nelection_timeout_min_ms = 200\n\
             election_timeout_max_ms = 300\nrequest_timeout_ms = 2000\n\
             push_interval_ms = 10\nrelease_interval_ms = 100\n"
        ))
        .unwrap()
        .consensus
        .unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/etc/atoll/state/raft"));
        assert_eq!(c.heartbeat_interval, Duration::from_millis(50));
        assert_eq!(c.election_timeout_min, Duration::from_millis(200));
        assert_eq!(c.election_timeout_max, Duration::from_millis(300));
        assert_eq!(c.request_timeout, Duration::from_millis(2000));
        assert_eq!(c.push_interval, Duration::from_millis(10));
        assert_eq!(c.release_interval, Duration::from_millis(100));
        let abs = consensus(&format!(
            "voters = [\"{A}@127.0.0.1:7000\"]\ndata_dir = \"/var/lib/raft\"\n"
        ))
        .unwrap();
        assert_eq!(
            abs.consensus.unwrap().data_dir,
            PathBuf::from("/var/lib/raft")
        );
        assert_eq!(parse(GOOD).unwrap().consensus, None);
    }

    #[test]
    fn consensus_errors_name_the_field() {
        let one = format!("voters = [\"{A}@127.0.0.1:7000\"]\n");
        let e = consensus_err("");
        assert!(
            e.contains("field \"consensus.voters\": must list the voters"),
            "{e}"
        );
        let e = consensus_err(&format!(
            "voters = [\"{A}@127.0.0.1:7000\", \"127.0.0.1:7001\"]\n"
        ));
        assert!(
            e.starts_with(
                "/etc/atoll/node.toml: field \"consensus.voters[1]\": \"127.0.0.1:7001\" is not \
                 NODE_ID@HOST:PORT"
            ),
            "{e}"
        );
        let e = consensus_err("voters = [\"london@127.0.0.1:7000\"]\n");
        assert!(
            e.contains("field \"consensus.voters[0]\": \"london\" in \"london@127.0.0.1:7000\" is not a node id"),
            "{e}"
        );
        let e = consensus_err(&format!("voters = [\"{A}@nowhere\"]\n"));
        assert!(
            e.contains("field \"consensus.voters[0]\": invalid address \"nowhere\""),
            "{e}"
        );
        let e = consensus_err(&format!(
            "voters = [\"{A}@127.0.0.1:7000\", \"{B}@127.0.0.1:7001\", \"{A}@127.0.0.1:7002\"]\n"
        ));
        assert!(
            e.contains(&format!(
                "field \"consensus.voters[2]\": node {A} is already consensus.voters[0]"
            )),
            "{e}"
        );
        let e = consensus_err(&format!(
            "voters = [\"{A}@127.0.0.1:7000\", \"{}00000000000000ff@127.0.0.1:7001\"]\n",
            &A[..16]
        ));
        assert!(e.contains("field \"consensus.voters[1]\""), "{e}");
        assert!(e.contains("collides with consensus.voters[0]"), "{e}");
        let e = consensus_err("voters = [7]\n");
        assert!(e.contains("field \"consensus.voters[0]\""), "{e}");
        let e = consensus_err(&format!("{one}heartbeat_interval_ms = 0\n"));
        assert!(
            e.contains("field \"consensus.heartbeat_interval_ms\": 0 is not between"),
            "{e}"
        );
        let e = consensus_err(&format!("{one}request_timeout_ms = -1\n"));
        assert!(e.contains("field \"consensus.request_timeout_ms\""), "{e}");
        let e = consensus_err(&format!("{one}push_interval_ms = \"soon\"\n"));
        assert!(
            e.contains("field \"consensus.push_interval_ms\": invalid type"),
            "{e}"
        );
        let e = consensus_err(&format!("{one}heartbeat_interval_ms = 400\n"));
        assert!(
            e.contains(
                "field \"consensus.election_timeout_min_ms\": 400 must be greater than \
                 heartbeat_interval_ms (400)"
            ),
            "{e}"
        );
        let e = consensus_err(&format!("{one}election_timeout_max_ms = 300\n"));
        assert!(
            e.contains(
                "field \"consensus.election_timeout_max_ms\": 300 must be greater than \
                 election_timeout_min_ms (400)"
            ),
            "{e}"
        );
        let e = consensus_err(&format!("{one}data_dir = \"\"\n"));
        assert!(
            e.contains("field \"consensus.data_dir\": must not be empty"),
            "{e}"
        );
        let e = consensus_err(&format!("{one}election_timeout_ms = 5\n"));
        assert!(
            e.contains("field \"consensus.election_timeout_ms\": unknown field"),
            "{e}"
        );
    }

    #[test]
    fn host_port() {
        assert!(is_host_port("127.0.0.1:1"));
        assert!(is_host_port("[::1]:7000"));
        assert!(is_host_port("paris.example:7000"));
        assert!(!is_host_port("paris.example"));
        assert!(!is_host_port(":7000"));
        assert!(!is_host_port("a:70000"));
        assert!(!is_host_port("a b:1"));
    }
}
