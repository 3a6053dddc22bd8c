use super::*;
use atoll_net::{ClusterCa, NodeIdentity, RevocationList};

fn node(name: &str) -> NodeConfig {
    let ca = ClusterCa::create("test").unwrap();
    let key = NodeIdentity::generate().unwrap();
    let cert = ca.issue("n", &key.public_key()).unwrap();
    NodeConfig::with_ca(
        name,
        "127.0.0.1:0".parse().unwrap(),
        key,
        cert,
        ca.trust(RevocationList::new()),
    )
}

fn id(byte: u8) -> NodeId {
    NodeId::from_bytes([byte; 16])
}

fn consensus() -> ConsensusConfig {
    ConsensusConfig::new(
        vec![
            (id(1), "127.0.0.1:1".parse().unwrap()),
            (id(2), "127.0.0.1:2".parse().unwrap()),
            (id(3), "127.0.0.1:3".parse().unwrap()),
        ],
        "raft",
    )
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn the_defaults_are_valid() {
    let config = node("london")
        .with_membership(MembershipConfig::new([]).with_roles(["voter"]))
        .with_consensus(consensus());
    assert_eq!(config.validate(), Ok(()));
}

#[test]
fn names_and_limits() {
    assert_eq!(node(" ").validate(), Err(ConfigError::EmptyName));
    assert!(matches!(
        node("a\u{7}b").validate(),
        Err(ConfigError::BadName { .. })
    ));
    assert!(matches!(
        node(&"x".repeat(65)).validate(),
        Err(ConfigError::BadName { .. })
    ));
    assert_eq!(NodeConfig::validate_name(&"x".repeat(64), true), Ok(()));

    let mut config = node("a");
    config.max_frame_len = 10;
    let e = config.validate().unwrap_err();
    assert_eq!(
        e,
        ConfigError::OutOfRange {
            setting: Setting::MaxFrameLen,
            value: 10,
            min: 4096,
            max: u64::from(u32::MAX),
        }
    );
    assert_eq!(
        e.to_string(),
        "max_frame_len is 10 bytes, not between 4096 and 4294967295 bytes"
    );
    config.max_frame_len = MIN_FRAME_LEN;
    config.message_streams = 0;
    assert!(matches!(
        config.validate(),
        Err(ConfigError::OutOfRange {
            setting: Setting::MessageStreams,
            ..
        })
    ));
    config.message_streams = MAX_MESSAGE_STREAMS;
    assert_eq!(config.validate(), Ok(()));
}

#[test]
fn membership_labels_and_timings() {
    let check = |m: MembershipConfig| node("a").with_membership(m).validate();
    assert_eq!(
        check(MembershipConfig::new([]).with_capabilities(["gpu", "has space"])),
        Err(ConfigError::BadLabel {
            kind: LabelKind::Capability,
            index: 1,
            label: "has space".into()
        })
    );
    assert!(matches!(
        check(MembershipConfig::new([]).with_roles([""])),
        Err(ConfigError::BadLabel {
            kind: LabelKind::Role,
            index: 0,
            ..
        })
    ));
    let many: Vec<String> = (0..17).map(|i| format!("r{i}")).collect();
    assert_eq!(
        check(MembershipConfig::new([]).with_roles(many)),
        Err(ConfigError::TooManyLabels { count: 17 })
    );
    assert!(matches!(
        node(&"x".repeat(65))
            .with_membership(MembershipConfig::default())
            .validate(),
        Err(ConfigError::BadName { .. })
    ));

    let swim = |f: &dyn Fn(&mut atoll_swim::SwimConfig)| {
        let mut m = MembershipConfig::default();
        f(&mut m.swim);
        check(m)
    };
    let e = swim(&|s| s.suspect_timeout = Duration::ZERO).unwrap_err();
    assert_eq!(
        e.to_string(),
        "membership.swim.suspect_timeout is 0 ms, not between 1 and 3600000 ms"
    );
    assert!(matches!(
        swim(&|s| s.probe_interval = Duration::from_secs(7200)),
        Err(ConfigError::OutOfRange {
            setting: Setting::ProbeInterval,
            value: 7_200_000,
            ..
        })
    ));
    assert_eq!(
        swim(&|s| s.ping_timeout = s.probe_interval),
        Err(ConfigError::PingTimeoutNotBelowProbeInterval {
            ping_timeout: 1000,
            probe_interval: 1000
        })
    );
    assert!(matches!(
        swim(&|s| s.indirect_probes = 0),
        Err(ConfigError::OutOfRange {
            setting: Setting::IndirectProbes,
            ..
        })
    ));
}

#[test]
fn consensus_voters_directory_and_timings() {
    let check = |c: ConsensusConfig| node("a").with_consensus(c).validate();
    let mut c = consensus();
    c.voters.clear();
    assert_eq!(check(c), Err(ConfigError::NoVoters));

    let mut c = consensus();
    c.voters.push(c.voters[1]);
    assert_eq!(
        check(c),
        Err(ConfigError::DuplicateVoter {
            index: 3,
            first: 1,
            id: id(2)
        })
    );
    let mut c = consensus();
    let mut bytes = [1u8; 16];
    bytes[15] = 9;
    c.voters
        .push((NodeId::from_bytes(bytes), "127.0.0.1:4".parse().unwrap()));
    assert!(matches!(
        check(c),
        Err(ConfigError::VoterCollision {
            index: 3,
            first: 0,
            ..
        })
    ));

    let mut c = consensus();
    c.data_dir = Default::default();
    assert_eq!(check(c), Err(ConfigError::EmptyDataDir));

    let mut c = consensus();
    c.request_timeout = Duration::ZERO;
    assert!(matches!(
        check(c),
        Err(ConfigError::OutOfRange {
            setting: Setting::RequestTimeout,
            ..
        })
    ));
    let mut c = consensus();
    c.heartbeat_interval = ms(400);
    assert_eq!(
        check(c),
        Err(ConfigError::ElectionTimeoutMinNotAboveHeartbeat {
            min: 400,
            heartbeat: 400
        })
    );
    let mut c = consensus();
    c.election_timeout_max = ms(300);
    assert_eq!(
        check(c),
        Err(ConfigError::ElectionTimeoutMaxNotAboveMin { max: 300, min: 400 })
    );

    let c = consensus();
    assert!(c.is_voter(id(3)) && !c.is_voter(id(4)));
}
