//! The node configuration file: its TOML shape, mapped onto [`atoll_cluster::NodeConfig`]
//! and its parts, which check the values ([`atoll_cluster::ConfigError`]); errors are
//! reported with the file and the TOML field.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use atoll_cluster::{
    ConfigError, ConsensusConfig, DEFAULT_MAX_FRAME_LEN, DEFAULT_MESSAGE_STREAMS, MembershipConfig,
    NodeConfig,
};
use atoll_net::{
    NodeCertificate, NodeIdentity, RevocationList, SHARED_CERT_FILE, SHARED_KEY_FILE,
    SharedIdentity, TransportSettings, TrustConfig,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::Deserialize;

use crate::ca::shell_quote;
use crate::error::Error;

mod errors;
mod tables;

use errors::{config_error, toml_error};
use tables::{consensus, is_host_port, membership};

/// Worker threads when the configuration does not say.
pub const DEFAULT_THREADS: usize = 2;
/// `log.filter` when the configuration does not say: atoll's own INFO lines, warnings and
/// errors from the libraries underneath, and nothing from openraft, which logs a dozen
/// lines on every election and several per heartbeat while a voter is down. atoll reports
/// what matters of the Raft core itself (`raft voter started`, `raft leader elected`,
/// `raft core stopped`).
pub const DEFAULT_LOG_FILTER: &str = "warn,atoll=info,openraft=off";

// The file's shape. Values are checked by the library's configuration types they are
// mapped onto; only what the file itself adds (paths, peers, threads, HTTP, logging) is
// checked here.

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
    #[serde(default)]
    grains: bool,
    rebalance: Option<RawRebalance>,
    state_dir: Option<PathBuf>,
    http: Option<String>,
    #[serde(default)]
    log: RawLog,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRebalance {
    interval_ms: Option<u64>,
    threshold: Option<u64>,
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
    heartbeat_interval_ms: Option<u64>,
    election_timeout_min_ms: Option<u64>,
    election_timeout_max_ms: Option<u64>,
    request_timeout_ms: Option<u64>,
    push_interval_ms: Option<u64>,
    release_interval_ms: Option<u64>,
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
    #[serde(default)]
    split_brain: RawSplitBrain,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSplitBrain {
    #[serde(default)]
    policy: SplitBrainMode,
    window_ms: Option<u64>,
}

/// Which split-brain policy the `[cluster.split_brain]` table names.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum SplitBrainMode {
    /// No policy: SWIM's suspect timeout downs members (the default).
    #[default]
    Off,
    /// Keep-majority with a stability window.
    KeepMajority,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSwim {
    probe_interval_ms: Option<u64>,
    ping_timeout_ms: Option<u64>,
    suspect_timeout_ms: Option<u64>,
    indirect_probes: Option<u64>,
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
    max_frame_len: Option<u64>,
    message_streams: Option<u64>,
}

/// A checked node configuration: the library's settings, and what only the file has.
/// Paths are resolved against the configuration file's directory; the files they name
/// have not been read yet ([`NodeFile::node_config`] does).
#[derive(Debug, Clone, PartialEq)]
pub struct NodeFile {
    /// The configuration file.
    pub path: PathBuf,
    /// The node's name ([`NodeConfig::name`]).
    pub name: String,
    /// The address to listen on ([`NodeConfig::listen`]).
    pub listen: SocketAddr,
    /// Peers to dial, as `host:port` (an IP address or a name to resolve).
    pub peers: Vec<String>,
    /// Worker threads of the async runtime.
    pub threads: usize,
    /// The TLS files.
    pub tls: TlsFiles,
    /// `limits.max_frame_len` ([`NodeConfig::max_frame_len`]).
    pub max_frame_len: usize,
    /// `limits.message_streams` ([`NodeConfig::message_streams`]).
    pub message_streams: usize,
    /// `[cluster]`, when `cluster.enabled` is true ([`NodeConfig::membership`]).
    pub membership: Option<MembershipConfig>,
    /// `[consensus]`, when there is such a table ([`NodeConfig::consensus`]).
    pub consensus: Option<ConsensusConfig>,
    /// `grains`: whether the node hosts grains (the built-in types, its store in the
    /// consensus data directory). Needs a `[consensus]` table.
    pub grains: bool,
    /// `[rebalance]`: how this node sheds grain activations when it holds too many more
    /// than the least loaded node (`atoll_grain::Rebalance`); never on its own when absent.
    /// Needs `grains = true`.
    pub rebalance: Option<atoll_grain::Rebalance>,
    /// `state_dir`: where the node records its incarnations
    /// ([`NodeConfig::state_dir`]); `state-NAME` beside the file by default, so every
    /// node's incarnations keep growing across restarts, voter or not.
    pub state_dir: PathBuf,
    /// `http`: where the status page, the JSON API and the metrics are served, if set.
    pub http: Option<SocketAddr>,
    /// `log.format`: how log lines are written.
    pub log_format: LogFormat,
    /// `log.filter`: which log lines are written (an env-filter directive; `RUST_LOG`
    /// overrides it; [`DEFAULT_LOG_FILTER`] when unset).
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
        let checked = |e: ConfigError| config_error(path, &raw.name, e);
        let base = path.parent().unwrap_or(Path::new("")).to_path_buf();
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };

        let name = raw.name.trim();
        let in_cluster = raw.cluster.as_ref().is_some_and(|c| c.enabled);
        NodeConfig::validate_name(name, in_cluster).map_err(checked)?;
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
        let size = |n: Option<u64>, default| {
            n.map_or(default, |n| usize::try_from(n).unwrap_or(usize::MAX))
        };
        let max_frame_len = size(raw.limits.max_frame_len, DEFAULT_MAX_FRAME_LEN);
        let message_streams = size(raw.limits.message_streams, DEFAULT_MESSAGE_STREAMS);
        NodeConfig::validate_limits(max_frame_len, message_streams).map_err(checked)?;

        let membership = match &raw.cluster {
            Some(c) => {
                let membership = membership(c, &field)?;
                // Checked even when disabled, so a table switched on later is known good.
                membership.validate().map_err(checked)?;
                c.enabled.then_some(membership)
            }
            None => None,
        };
        let consensus = match &raw.consensus {
            Some(c) => {
                let consensus = consensus(c, name, &base, &field)?;
                consensus.validate().map_err(checked)?;
                Some(consensus)
            }
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
        if raw.grains && raw.consensus.is_none() {
            return Err(field(
                "grains",
                "a node hosts grains only with a [consensus] table (activations are consensus claims)".into(),
            ));
        }
        let rebalance = match &raw.rebalance {
            None => None,
            Some(_) if !raw.grains => {
                return Err(field(
                    "rebalance",
                    "only a node that hosts grains (grains = true) rebalances them".into(),
                ));
            }
            Some(r) => {
                let defaults = atoll_grain::Rebalance::default();
                let interval = match r.interval_ms {
                    None => defaults.interval,
                    Some(ms @ 100..=3_600_000) => std::time::Duration::from_millis(ms),
                    Some(ms) => {
                        return Err(field(
                            "rebalance.interval_ms",
                            format!("{ms} is not between 100 and 3600000"),
                        ));
                    }
                };
                let threshold = match r.threshold {
                    None => defaults.threshold,
                    Some(n @ 1..=1_000_000) => n as usize,
                    Some(n) => {
                        return Err(field(
                            "rebalance.threshold",
                            format!("{n} is not between 1 and 1000000"),
                        ));
                    }
                };
                Some(atoll_grain::Rebalance {
                    interval,
                    threshold,
                })
            }
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
        let log_filter = raw.log.filter.unwrap_or_else(|| DEFAULT_LOG_FILTER.into());
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
            membership,
            consensus,
            grains: raw.grains,
            rebalance,
            state_dir: raw
                .state_dir
                .map(|p| resolve(&p))
                .unwrap_or_else(|| base.join(format!("state-{name}"))),
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
        config.max_frame_len = self.max_frame_len;
        config.message_streams = self.message_streams;
        config.membership = self.membership.clone();
        config.consensus = self.consensus.clone();
        config.state_dir = Some(self.state_dir.clone());
        // Checked part by part in `parse`; this catches a `NodeFile` changed since.
        config
            .validate()
            .map_err(|e| config_error(&self.path, &self.name, e))?;
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

#[cfg(test)]
mod tests;
