//! Errors told in the file's terms: the TOML field and, for values the library refused,
//! the value as written.

use std::ops::Range;
use std::path::Path;

use atoll_cluster::{ConfigError, LabelKind, MAX_LABEL_LEN, MAX_LABELS, Setting};

use crate::error::Error;

/// The TOML key of a bounded setting.
fn toml_key(setting: Setting) -> &'static str {
    match setting {
        Setting::MaxFrameLen => "limits.max_frame_len",
        Setting::MessageStreams => "limits.message_streams",
        Setting::ProbeInterval => "cluster.swim.probe_interval_ms",
        Setting::PingTimeout => "cluster.swim.ping_timeout_ms",
        Setting::SuspectTimeout => "cluster.swim.suspect_timeout_ms",
        Setting::IndirectProbes => "cluster.swim.indirect_probes",
        Setting::SplitBrainWindow => "cluster.split_brain.window_ms",
        Setting::HeartbeatInterval => "consensus.heartbeat_interval_ms",
        Setting::ElectionTimeoutMin => "consensus.election_timeout_min_ms",
        Setting::ElectionTimeoutMax => "consensus.election_timeout_max_ms",
        Setting::RequestTimeout => "consensus.request_timeout_ms",
        Setting::PushInterval => "consensus.push_interval_ms",
        Setting::ReleaseInterval => "consensus.release_interval_ms",
    }
}

/// A refused setting, told in the file's terms: the TOML field and its value as written.
pub(super) fn config_error(path: &Path, raw_name: &str, e: ConfigError) -> Error {
    let (field, message) = match e {
        ConfigError::EmptyName => ("name".to_string(), "must not be empty".to_string()),
        ConfigError::BadName { .. } => (
            "name".into(),
            format!(
                "{raw_name:?} is unusable (at most {} bytes, no control characters)",
                atoll_net::MAX_NAME_LEN
            ),
        ),
        ConfigError::NameTooLongForMembership { .. } => (
            "name".into(),
            format!("at most {MAX_LABEL_LEN} bytes in a cluster"),
        ),
        ConfigError::OutOfRange {
            setting,
            value,
            min,
            max,
        } => (
            toml_key(setting).into(),
            format!("{value} is not between {min} and {max}"),
        ),
        ConfigError::PingTimeoutNotBelowProbeInterval {
            ping_timeout,
            probe_interval,
        } => (
            toml_key(Setting::PingTimeout).into(),
            format!("{ping_timeout} must be less than probe_interval_ms ({probe_interval})"),
        ),
        ConfigError::BadLabel { kind, index, label } => {
            let list = match kind {
                LabelKind::Role => "roles",
                LabelKind::Capability => "capabilities",
            };
            (
                format!("cluster.{list}[{index}]"),
                format!("{label:?} is unusable (1 to {MAX_LABEL_LEN} bytes, no spaces)"),
            )
        }
        ConfigError::TooManyLabels { .. } => (
            "cluster.roles".into(),
            format!("more than {MAX_LABELS} roles and capabilities together"),
        ),
        ConfigError::NoVoters => (
            "consensus.voters".into(),
            "must list the voters, as \"NODE_ID@HOST:PORT\" (3 or 5 of them)".into(),
        ),
        ConfigError::DuplicateVoter { index, first, id } => (
            format!("consensus.voters[{index}]"),
            format!("node {id} is already consensus.voters[{first}]"),
        ),
        ConfigError::VoterCollision { index, first, id } => (
            format!("consensus.voters[{index}]"),
            format!("node {id} collides with consensus.voters[{first}] (same first 16 hex digits)"),
        ),
        ConfigError::EmptyDataDir => ("consensus.data_dir".into(), "must not be empty".into()),
        ConfigError::ElectionTimeoutMinNotAboveHeartbeat { min, heartbeat } => (
            toml_key(Setting::ElectionTimeoutMin).into(),
            format!("{min} must be greater than heartbeat_interval_ms ({heartbeat})"),
        ),
        ConfigError::ElectionTimeoutMaxNotAboveMin { max, min } => (
            toml_key(Setting::ElectionTimeoutMax).into(),
            format!("{max} must be greater than election_timeout_min_ms ({min})"),
        ),
    };
    Error::ConfigField {
        path: path.to_path_buf(),
        field,
        message,
    }
}

/// Turns a TOML or schema error into one that names the field, found from the error's
/// position in the text.
pub(super) fn toml_error(path: &Path, text: &str, err: &toml::de::Error) -> Error {
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
            let message = message
                .replace("expected i64", "expected an integer")
                .replace("expected u64", "expected a non-negative integer");
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
