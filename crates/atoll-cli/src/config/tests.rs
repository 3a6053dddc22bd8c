use super::tables::is_host_port;
use super::*;
use std::time::Duration;

use atoll_cluster::{DEFAULT_MAX_FRAME_LEN, DEFAULT_MESSAGE_STREAMS};
use atoll_core::NodeId;

fn parse(text: &str) -> Result<NodeFile, Error> {
    NodeFile::parse(Path::new("/etc/atoll/node.toml"), text)
}

fn err(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

/// `docs/node.toml`, the commented example with every field, parses as documented.
#[test]
fn the_commented_example_file_parses() {
    let text = include_str!("../../../../docs/node.toml");
    let c = NodeFile::parse(Path::new("/srv/atoll/london.toml"), text).unwrap();
    assert_eq!(c.name, "london");
    assert_eq!(c.http, Some("127.0.0.1:7100".parse().unwrap()));
    assert_eq!(c.log_format, LogFormat::Text);
    assert_eq!(c.log_filter, DEFAULT_LOG_FILTER);
    assert_eq!(c.threads, 2);
    assert!(c.grains);
    assert_eq!(
        c.rebalance,
        Some(atoll_grain::Rebalance {
            interval: Duration::from_secs(10),
            threshold: 10
        })
    );
    assert_eq!(c.state_dir, Path::new("/srv/atoll/state/london"));
    let cluster = c.membership.as_ref().unwrap();
    assert_eq!(
        cluster.seeds,
        ["127.0.0.1:7001".parse::<SocketAddr>().unwrap()]
    );
    let consensus = c.consensus.as_ref().unwrap();
    assert_eq!(consensus.voters.len(), 3);
    assert_eq!(consensus.data_dir, Path::new("/srv/atoll/raft-london"));
}

#[test]
fn the_default_log_filter_keeps_atoll_info_lines_and_drops_openraft() {
    use tracing::Level;
    let c =
        parse("name = \"a\"\nlisten = \"[::1]:0\"\n[tls]\nkey = \"k\"\ncert = \"c\"\nca = \"a\"\n")
            .unwrap();
    assert_eq!(c.log_filter, DEFAULT_LOG_FILTER);
    let filter = tracing_subscriber::EnvFilter::try_new(&c.log_filter).unwrap();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::sink)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        assert!(tracing::enabled!(target: "atoll_cluster::node", Level::INFO));
        assert!(tracing::enabled!(target: "atoll_raft::report", Level::INFO));
        assert!(tracing::enabled!(target: "atoll_net::revocation", Level::INFO));
        assert!(tracing::enabled!(target: "atoll_cli::node", Level::INFO));
        assert!(!tracing::enabled!(target: "atoll_cluster::node", Level::DEBUG));
        assert!(!tracing::enabled!(target: "openraft::core::raft_core", Level::INFO));
        assert!(!tracing::enabled!(target: "openraft::replication", Level::ERROR));
        assert!(tracing::enabled!(target: "quinn::endpoint", Level::WARN));
        assert!(!tracing::enabled!(target: "quinn::endpoint", Level::INFO));
    });
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
    assert_eq!(c.max_frame_len, 65536);
    assert_eq!(c.message_streams, 2);
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
    assert_eq!(c.max_frame_len, DEFAULT_MAX_FRAME_LEN);
    assert_eq!(c.message_streams, DEFAULT_MESSAGE_STREAMS);
    assert_eq!(c.state_dir, PathBuf::from("/etc/atoll/state-a"));
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
    let cluster = c.membership.unwrap();
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
    let m = &cluster;
    assert_eq!(m.swim.probe_interval, Duration::from_millis(300));
    assert_eq!(m.swim.ping_timeout, Duration::from_millis(100));
    assert_eq!(m.swim.suspect_timeout, Duration::from_millis(5000));
    assert_eq!(m.swim.indirect_probes, 3);

    // Absent or disabled: no membership (the table is still checked).
    assert_eq!(parse(GOOD).unwrap().membership, None);
    let disabled = CLUSTER.replace("enabled = true", "enabled = false");
    assert_eq!(
        parse(&format!("{GOOD}{disabled}")).unwrap().membership,
        None
    );
    let e = err(&format!("{GOOD}{}", disabled.replace("7002", "x")));
    assert!(e.contains("field \"cluster.seeds[1]\""), "{e}");
    let bare = parse(&format!("{GOOD}[cluster]\nenabled = true\n")).unwrap();
    let bare = bare.membership.unwrap();
    assert!(bare.seeds.is_empty());
    assert_eq!(bare, MembershipConfig::default());
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
    let defaults = ConsensusConfig::new(c.voters.clone(), "/etc/atoll/raft-london");
    assert_eq!(c, defaults);

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
    assert!(
        e.contains("field \"consensus.request_timeout_ms\"") && e.contains("non-negative"),
        "{e}"
    );
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

#[test]
fn the_split_brain_table_names_a_policy_and_its_window() {
    let cluster = |table: &str| {
        parse(&format!("{GOOD}{CLUSTER}{table}"))
            .unwrap()
            .membership
            .unwrap()
            .split_brain
    };
    assert_eq!(cluster(""), atoll_cluster::SplitBrainPolicy::Off);
    assert_eq!(
        cluster("\n[cluster.split_brain]\npolicy = \"keep-majority\"\n"),
        atoll_cluster::SplitBrainPolicy::KeepMajority {
            window: Duration::from_secs(10)
        }
    );
    assert_eq!(
        cluster("\n[cluster.split_brain]\npolicy = \"keep-majority\"\nwindow_ms = 2500\n"),
        atoll_cluster::SplitBrainPolicy::KeepMajority {
            window: Duration::from_millis(2500)
        }
    );
    let e = err(&format!(
        "{GOOD}{CLUSTER}\n[cluster.split_brain]\npolicy = \"keep-minority\"\n"
    ));
    assert!(e.contains("field \"cluster.split_brain.policy\""), "{e}");
    let e = err(&format!(
        "{GOOD}{CLUSTER}\n[cluster.split_brain]\npolicy = \"keep-majority\"\nwindow_ms = 0\n"
    ));
    assert!(
        e.contains("field \"cluster.split_brain.window_ms\": 0 is not between"),
        "{e}"
    );
}

#[test]
fn grains_need_a_consensus_table() {
    let message = err(&format!("grains = true\n{GOOD}"));
    assert!(message.contains("field \"grains\""), "{message}");
}

#[test]
fn rebalancing_needs_grains_and_sane_figures() {
    let message = err(&format!("{GOOD}\n[rebalance]\ninterval_ms = 1000\n"));
    assert!(message.contains("field \"rebalance\""), "{message}");
    assert_eq!(parse(GOOD).unwrap().rebalance, None);
    let with = |table: &str| {
        parse(&format!(
            "grains = true\n{GOOD}\n[consensus]\nvoters = [\"{A}@127.0.0.1:7000\"]\n\n[rebalance]\n{table}"
        ))
    };
    assert_eq!(
        with("interval_ms = 2000\nthreshold = 1\n")
            .unwrap()
            .rebalance,
        Some(atoll_grain::Rebalance {
            interval: Duration::from_secs(2),
            threshold: 1
        })
    );
    let e = with("threshold = 0\n").unwrap_err().to_string();
    assert!(
        e.contains("field \"rebalance.threshold\": 0 is not between"),
        "{e}"
    );
    let e = with("interval_ms = 5\n").unwrap_err().to_string();
    assert!(e.contains("field \"rebalance.interval_ms\""), "{e}");
}
