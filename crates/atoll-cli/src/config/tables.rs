//! The `[cluster]` and `[consensus]` tables mapped onto the library's settings: addresses
//! parsed and resolved, paths resolved, milliseconds made durations, defaults filled in.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use atoll_cluster::{ConsensusConfig, MembershipConfig, SplitBrainPolicy, SwimConfig};
use atoll_core::NodeId;

use super::{RawCluster, RawConsensus, SplitBrainMode};
use crate::error::Error;

/// The keep-majority window unless `window_ms` says otherwise: twice SWIM's default
/// suspect timeout.
const DEFAULT_SPLIT_BRAIN_WINDOW: Duration = Duration::from_secs(10);

/// The `[cluster]` table as membership settings (seeds and `advertise` resolved).
pub(super) fn membership(
    raw: &RawCluster,
    field: &impl Fn(&str, String) -> Error,
) -> Result<MembershipConfig, Error> {
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
    let defaults = SwimConfig::default();
    let swim = SwimConfig {
        probe_interval: millis(raw.swim.probe_interval_ms, defaults.probe_interval),
        ping_timeout: millis(raw.swim.ping_timeout_ms, defaults.ping_timeout),
        suspect_timeout: millis(raw.swim.suspect_timeout_ms, defaults.suspect_timeout),
        indirect_probes: raw
            .swim
            .indirect_probes
            .map_or(defaults.indirect_probes, |n| {
                usize::try_from(n).unwrap_or(usize::MAX)
            }),
        ..defaults
    };
    let split_brain = match raw.split_brain.policy {
        SplitBrainMode::Off => SplitBrainPolicy::Off,
        SplitBrainMode::KeepMajority => SplitBrainPolicy::KeepMajority {
            window: millis(raw.split_brain.window_ms, DEFAULT_SPLIT_BRAIN_WINDOW),
        },
    };
    Ok(MembershipConfig {
        seeds,
        advertise,
        ..MembershipConfig::new([])
            .with_swim(swim)
            .with_split_brain(split_brain)
            .with_roles(raw.roles.iter().cloned())
            .with_capabilities(raw.capabilities.iter().cloned())
    })
}

/// The `[consensus]` table as consensus settings (voters parsed and resolved, the data
/// directory resolved against `base`, by default `raft-NAME`).
pub(super) fn consensus(
    raw: &RawConsensus,
    name: &str,
    base: &Path,
    field: &impl Fn(&str, String) -> Error,
) -> Result<ConsensusConfig, Error> {
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
        voters.push((id, addr));
    }
    let data_dir = match &raw.data_dir {
        // Left empty for the library to refuse, rather than resolved to `base` itself.
        Some(p) if p.as_os_str().is_empty() => PathBuf::new(),
        Some(p) if p.is_absolute() => p.clone(),
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
    let d = ConsensusConfig::new(voters, data_dir);
    Ok(ConsensusConfig {
        heartbeat_interval: millis(raw.heartbeat_interval_ms, d.heartbeat_interval),
        election_timeout_min: millis(raw.election_timeout_min_ms, d.election_timeout_min),
        election_timeout_max: millis(raw.election_timeout_max_ms, d.election_timeout_max),
        request_timeout: millis(raw.request_timeout_ms, d.request_timeout),
        push_interval: millis(raw.push_interval_ms, d.push_interval),
        release_interval: millis(raw.release_interval_ms, d.release_interval),
        ..d
    })
}

fn millis(value: Option<u64>, default: Duration) -> Duration {
    value.map_or(default, Duration::from_millis)
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

/// `HOST:PORT` with a numeric port; IPv6 hosts in brackets (what
/// [`atoll_cluster::PeerAddress`] accepts).
pub(super) fn is_host_port(s: &str) -> bool {
    s.parse::<atoll_cluster::PeerAddress>().is_ok()
}
