//! The bounds of a node's configuration: [`NodeConfig::validate`] and the checks of its
//! parts, so every way of building a configuration (code, a file, flags) refuses the same
//! values with the same typed errors.

use std::fmt;
use std::time::Duration;

use atoll_core::NodeId;
use atoll_swim::{MAX_LABEL_LEN, MAX_LABELS};

use crate::config::{ConsensusConfig, MembershipConfig, NodeConfig};

/// The smallest `max_frame_len` accepted: introductions and registry snapshots must fit.
pub const MIN_FRAME_LEN: usize = 4096;
/// The largest `max_frame_len` accepted (frame lengths are 32-bit on the wire).
pub const MAX_FRAME_LEN: usize = u32::MAX as usize;
/// The most `message_streams` accepted (QUIC allows 100 streams open at once).
pub const MAX_MESSAGE_STREAMS: usize = 64;
/// The most SWIM `indirect_probes` accepted.
pub const MAX_INDIRECT_PROBES: usize = 64;
/// The shortest membership or consensus timing accepted.
pub const MIN_TIMING: Duration = Duration::from_millis(1);
/// The longest membership or consensus timing accepted.
pub const MAX_TIMING: Duration = Duration::from_secs(3600);

/// A bounded numeric setting, as named in [`ConfigError::OutOfRange`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Setting {
    /// [`NodeConfig::max_frame_len`], in bytes.
    MaxFrameLen,
    /// [`NodeConfig::message_streams`].
    MessageStreams,
    /// [`atoll_swim::SwimConfig::probe_interval`], in milliseconds.
    ProbeInterval,
    /// [`atoll_swim::SwimConfig::ping_timeout`], in milliseconds.
    PingTimeout,
    /// [`atoll_swim::SwimConfig::suspect_timeout`], in milliseconds.
    SuspectTimeout,
    /// [`atoll_swim::SwimConfig::indirect_probes`].
    IndirectProbes,
    /// The window of [`crate::SplitBrainPolicy::KeepMajority`], in milliseconds.
    SplitBrainWindow,
    /// [`ConsensusConfig::heartbeat_interval`], in milliseconds.
    HeartbeatInterval,
    /// [`ConsensusConfig::election_timeout_min`], in milliseconds.
    ElectionTimeoutMin,
    /// [`ConsensusConfig::election_timeout_max`], in milliseconds.
    ElectionTimeoutMax,
    /// [`ConsensusConfig::request_timeout`], in milliseconds.
    RequestTimeout,
    /// [`ConsensusConfig::push_interval`], in milliseconds.
    PushInterval,
    /// [`ConsensusConfig::release_interval`], in milliseconds.
    ReleaseInterval,
}

impl Setting {
    /// The setting's path in the configuration types, e.g. `membership.swim.ping_timeout`.
    pub fn path(self) -> &'static str {
        match self {
            Setting::MaxFrameLen => "max_frame_len",
            Setting::MessageStreams => "message_streams",
            Setting::ProbeInterval => "membership.swim.probe_interval",
            Setting::PingTimeout => "membership.swim.ping_timeout",
            Setting::SuspectTimeout => "membership.swim.suspect_timeout",
            Setting::IndirectProbes => "membership.swim.indirect_probes",
            Setting::SplitBrainWindow => "membership.split_brain.window",
            Setting::HeartbeatInterval => "consensus.heartbeat_interval",
            Setting::ElectionTimeoutMin => "consensus.election_timeout_min",
            Setting::ElectionTimeoutMax => "consensus.election_timeout_max",
            Setting::RequestTimeout => "consensus.request_timeout",
            Setting::PushInterval => "consensus.push_interval",
            Setting::ReleaseInterval => "consensus.release_interval",
        }
    }

    /// The unit of the values in [`ConfigError::OutOfRange`]: `ms`, `bytes` or none.
    pub fn unit(self) -> &'static str {
        match self {
            Setting::MaxFrameLen => " bytes",
            Setting::MessageStreams | Setting::IndirectProbes => "",
            _ => " ms",
        }
    }
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.path())
    }
}

/// What a membership label is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LabelKind {
    /// One of [`MembershipConfig::roles`].
    Role,
    /// One of [`MembershipConfig::capabilities`].
    Capability,
}

impl fmt::Display for LabelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LabelKind::Role => "role",
            LabelKind::Capability => "capability",
        })
    }
}

/// A configuration a node would refuse or misbehave with. Validation only reads the
/// configuration; nothing was started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The node name is empty (or only spaces).
    #[error("the node name is empty")]
    EmptyName,
    /// The node name cannot be a certificate common name.
    #[error(
        "the node name {name:?} is unusable (at most {} bytes, no control characters)",
        atoll_net::MAX_NAME_LEN
    )]
    BadName {
        /// The name.
        name: String,
    },
    /// With membership, the node name is announced as a label, which is shorter.
    #[error("the node name {name:?} is longer than {MAX_LABEL_LEN} bytes, too long for membership")]
    NameTooLongForMembership {
        /// The name.
        name: String,
    },
    /// A number is out of its bounds.
    #[error("{setting} is {value}{unit}, not between {min} and {max}{unit}", unit = setting.unit())]
    OutOfRange {
        /// Which setting.
        setting: Setting,
        /// Its value (milliseconds for timings).
        value: u64,
        /// The least accepted.
        min: u64,
        /// The most accepted.
        max: u64,
    },
    /// A probe would time out after the next probe started.
    #[error(
        "the ping timeout ({ping_timeout} ms) must be less than the probe interval \
         ({probe_interval} ms)"
    )]
    PingTimeoutNotBelowProbeInterval {
        /// The ping timeout, in milliseconds.
        ping_timeout: u64,
        /// The probe interval, in milliseconds.
        probe_interval: u64,
    },
    /// A role or capability is empty, too long or contains whitespace.
    #[error("{kind} {index} {label:?} is unusable (1 to {MAX_LABEL_LEN} bytes, no spaces)")]
    BadLabel {
        /// Role or capability.
        kind: LabelKind,
        /// Its position in its list.
        index: usize,
        /// The label.
        label: String,
    },
    /// More roles and capabilities than a membership packet carries.
    #[error("{count} roles and capabilities together: more than {MAX_LABELS}")]
    TooManyLabels {
        /// Roles plus capabilities.
        count: usize,
    },
    /// Consensus without voters.
    #[error("the consensus voter set is empty")]
    NoVoters,
    /// A voter is listed twice.
    #[error("voter {index} (node {id}) is already voter {first}")]
    DuplicateVoter {
        /// The position of the second listing.
        index: usize,
        /// The position of the first.
        first: usize,
        /// The node.
        id: NodeId,
    },
    /// Two voters share their Raft id (the first 8 bytes of the node id).
    #[error("voter {index} (node {id}) collides with voter {first} (same first 16 hex digits)")]
    VoterCollision {
        /// The position of the second voter.
        index: usize,
        /// The position of the first.
        first: usize,
        /// The second voter's node.
        id: NodeId,
    },
    /// The Raft directory is an empty path.
    #[error("the consensus data directory is empty")]
    EmptyDataDir,
    /// Followers would call elections between heartbeats.
    #[error(
        "the election timeout minimum ({min} ms) must be greater than the heartbeat interval \
         ({heartbeat} ms)"
    )]
    ElectionTimeoutMinNotAboveHeartbeat {
        /// The election timeout minimum, in milliseconds.
        min: u64,
        /// The heartbeat interval, in milliseconds.
        heartbeat: u64,
    },
    /// The election timeout range is empty.
    #[error("the election timeout maximum ({max} ms) must be greater than its minimum ({min} ms)")]
    ElectionTimeoutMaxNotAboveMin {
        /// The election timeout maximum, in milliseconds.
        max: u64,
        /// The election timeout minimum, in milliseconds.
        min: u64,
    },
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn timing(setting: Setting, d: Duration) -> Result<(), ConfigError> {
    if (MIN_TIMING..=MAX_TIMING).contains(&d) {
        return Ok(());
    }
    Err(ConfigError::OutOfRange {
        setting,
        value: ms(d),
        min: ms(MIN_TIMING),
        max: ms(MAX_TIMING),
    })
}

fn count(setting: Setting, n: usize, min: usize, max: usize) -> Result<(), ConfigError> {
    if (min..=max).contains(&n) {
        return Ok(());
    }
    let wide = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    Err(ConfigError::OutOfRange {
        setting,
        value: wide(n),
        min: wide(min),
        max: wide(max),
    })
}

impl NodeConfig {
    /// Checks every setting against its bounds: the name, the limits, membership and
    /// consensus. A configuration that passes is one [`crate::Node::start`] takes (TLS and
    /// the listen address aside, which only starting can check).
    pub fn validate(&self) -> Result<(), ConfigError> {
        Self::validate_name(&self.name, self.membership.is_some())?;
        Self::validate_limits(self.max_frame_len, self.message_streams)?;
        if let Some(m) = &self.membership {
            m.validate()?;
        }
        if let Some(c) = &self.consensus {
            c.validate()?;
        }
        Ok(())
    }

    /// Checks a node name: not empty, a usable certificate common name, and with
    /// `membership` short enough to be announced.
    pub fn validate_name(name: &str, membership: bool) -> Result<(), ConfigError> {
        if name.trim().is_empty() {
            return Err(ConfigError::EmptyName);
        }
        if name.len() > atoll_net::MAX_NAME_LEN || name.chars().any(char::is_control) {
            return Err(ConfigError::BadName { name: name.into() });
        }
        if membership && name.len() > MAX_LABEL_LEN {
            return Err(ConfigError::NameTooLongForMembership { name: name.into() });
        }
        Ok(())
    }

    /// Checks [`NodeConfig::max_frame_len`] ([`MIN_FRAME_LEN`] to [`MAX_FRAME_LEN`]) and
    /// [`NodeConfig::message_streams`] (1 to [`MAX_MESSAGE_STREAMS`]).
    pub fn validate_limits(
        max_frame_len: usize,
        message_streams: usize,
    ) -> Result<(), ConfigError> {
        count(
            Setting::MaxFrameLen,
            max_frame_len,
            MIN_FRAME_LEN,
            MAX_FRAME_LEN,
        )?;
        count(
            Setting::MessageStreams,
            message_streams,
            1,
            MAX_MESSAGE_STREAMS,
        )
    }
}

impl MembershipConfig {
    /// Checks the roles and capabilities (each 1 to [`MAX_LABEL_LEN`] bytes without
    /// whitespace, at most [`MAX_LABELS`] together) and the SWIM timings ([`MIN_TIMING`]
    /// to [`MAX_TIMING`], the ping timeout less than the probe interval, 1 to
    /// [`MAX_INDIRECT_PROBES`] indirect probes).
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (kind, labels) in [
            (LabelKind::Role, &self.roles),
            (LabelKind::Capability, &self.capabilities),
        ] {
            for (index, label) in labels.iter().enumerate() {
                if label.is_empty()
                    || label.len() > MAX_LABEL_LEN
                    || label.chars().any(char::is_whitespace)
                {
                    return Err(ConfigError::BadLabel {
                        kind,
                        index,
                        label: label.clone(),
                    });
                }
            }
        }
        let labels = self.roles.len() + self.capabilities.len();
        if labels > MAX_LABELS {
            return Err(ConfigError::TooManyLabels { count: labels });
        }
        let swim = &self.swim;
        timing(Setting::ProbeInterval, swim.probe_interval)?;
        timing(Setting::PingTimeout, swim.ping_timeout)?;
        timing(Setting::SuspectTimeout, swim.suspect_timeout)?;
        if let crate::SplitBrainPolicy::KeepMajority { window } = self.split_brain {
            timing(Setting::SplitBrainWindow, window)?;
        }
        if swim.ping_timeout >= swim.probe_interval {
            return Err(ConfigError::PingTimeoutNotBelowProbeInterval {
                ping_timeout: ms(swim.ping_timeout),
                probe_interval: ms(swim.probe_interval),
            });
        }
        count(
            Setting::IndirectProbes,
            swim.indirect_probes,
            1,
            MAX_INDIRECT_PROBES,
        )
    }
}

impl ConsensusConfig {
    /// Checks the voters (at least one, none listed twice, no two with the same Raft id),
    /// the data directory (not empty) and the timings ([`MIN_TIMING`] to [`MAX_TIMING`],
    /// heartbeat < election timeout minimum < maximum).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.voters.is_empty() {
            return Err(ConfigError::NoVoters);
        }
        for (index, (id, _)) in self.voters.iter().enumerate() {
            let raft_id = atoll_raft::raft_id_of(id);
            let earlier = self.voters[..index]
                .iter()
                .position(|(other, _)| atoll_raft::raft_id_of(other) == raft_id);
            if let Some(first) = earlier {
                let id = *id;
                return Err(if self.voters[first].0 == id {
                    ConfigError::DuplicateVoter { index, first, id }
                } else {
                    ConfigError::VoterCollision { index, first, id }
                });
            }
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::EmptyDataDir);
        }
        timing(Setting::HeartbeatInterval, self.heartbeat_interval)?;
        timing(Setting::ElectionTimeoutMin, self.election_timeout_min)?;
        timing(Setting::ElectionTimeoutMax, self.election_timeout_max)?;
        timing(Setting::RequestTimeout, self.request_timeout)?;
        timing(Setting::PushInterval, self.push_interval)?;
        timing(Setting::ReleaseInterval, self.release_interval)?;
        if self.election_timeout_min <= self.heartbeat_interval {
            return Err(ConfigError::ElectionTimeoutMinNotAboveHeartbeat {
                min: ms(self.election_timeout_min),
                heartbeat: ms(self.heartbeat_interval),
            });
        }
        if self.election_timeout_max <= self.election_timeout_min {
            return Err(ConfigError::ElectionTimeoutMaxNotAboveMin {
                max: ms(self.election_timeout_max),
                min: ms(self.election_timeout_min),
            });
        }
        Ok(())
    }

    /// Whether `id` is one of the voters.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.iter().any(|(v, _)| *v == id)
    }
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
