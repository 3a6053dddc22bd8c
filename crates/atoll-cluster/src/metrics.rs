//! The node's metrics in the Prometheus text exposition format, so `atoll node` and any
//! application embedding a node serve the same `/metrics`.
//!
//! | metric | type | what |
//! |---|---|---|
//! | `atoll_peer_frames_sent_total`, `atoll_peer_frames_received_total` | counter | frames per peer (label `peer`) |
//! | `atoll_peer_bytes_sent_total`, `atoll_peer_bytes_received_total` | counter | UDP payload bytes per peer |
//! | `atoll_peer_rtt_seconds` | gauge | smoothed QUIC round trip per peer |
//! | `atoll_request_rtt_seconds` | histogram | round trips of requests to peers |
//! | `atoll_udp_receive_buffer_bytes`, `atoll_udp_receive_buffer_requested_bytes` | gauge | the UDP socket's receive buffer as granted and as asked for (QUIC nodes) |
//! | `atoll_processes` | gauge | live processes |
//! | `atoll_mailbox_messages`, `atoll_mailbox_longest` | gauge | messages waiting, in all mailboxes and in the longest |
//! | `atoll_members` | gauge | members by `state` |
//! | `atoll_raft_term`, `atoll_raft_commit_index`, `atoll_raft_last_applied` | gauge | the Raft core (voters) |
//! | `atoll_raft_is_leader`, `atoll_registry_index` | gauge | with consensus |
//! | `atoll_names` | gauge | names by `scope` |
//! | `atoll_locks`, `atoll_groups`, `atoll_group_members` | gauge | locks held, groups, group members |
//! | `atoll_process_table_entries`, `atoll_services` | gauge | the replicated process table's size, services offered |
//! | `atoll_data_deltas_sent_total`, `atoll_data_delta_bytes_sent_total` | counter | gossip deltas sent and their bytes |
//! | `atoll_data_entries_applied_total` | counter | table entries applied from gossip |
//! | `atoll_data_repairs_total`, `atoll_data_entries_repaired_total` | counter | anti-entropy repairs and the entries they applied |
//!
//! ```no_run
//! # async fn serve(node: atoll_cluster::Node) {
//! let body: String = node.metrics().await;
//! // Answer GET /metrics with `body` and the content type `atoll_cluster::METRICS_CONTENT_TYPE`.
//! # let _ = body;
//! # }
//! ```

use std::fmt::Write as _;

use atoll_wire::ProcessInfoWire;

use crate::node::{Node, NodeStatus, PeerStatus, RTT_BUCKETS_US};

/// The content type of [`render_metrics`]' text (Prometheus text format 0.0.4).
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

impl Node {
    /// This node's metrics in the Prometheus text format ([`render_metrics`] of
    /// [`Node::status`] and [`Node::processes`]): what `/metrics` answers.
    pub async fn metrics(&self) -> String {
        render_metrics(&self.status().await, &self.processes())
    }
}

/// The Prometheus text exposition of a node's status and processes.
pub fn render_metrics(s: &NodeStatus, processes: &[ProcessInfoWire]) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, f64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let peer = |name: &str| format!("{{peer=\"{}\"}}", escape(name));
    let per_peer = |f: &dyn Fn(&PeerStatus) -> f64| -> Vec<(String, f64)> {
        s.peers.iter().map(|p| (peer(&p.name), f(p))).collect()
    };
    family(
        "atoll_peer_frames_sent_total",
        "counter",
        "Frames (messages, replies, signals, control) sent to a peer on its connection.",
        &per_peer(&|p| p.frames_sent as f64),
    );
    family(
        "atoll_peer_frames_received_total",
        "counter",
        "Frames received from a peer on its connection.",
        &per_peer(&|p| p.frames_received as f64),
    );
    family(
        "atoll_peer_bytes_sent_total",
        "counter",
        "UDP payload bytes sent to a peer on its connection.",
        &per_peer(&|p| p.bytes_sent as f64),
    );
    family(
        "atoll_peer_bytes_received_total",
        "counter",
        "UDP payload bytes received from a peer on its connection.",
        &per_peer(&|p| p.bytes_received as f64),
    );
    family(
        "atoll_peer_rtt_seconds",
        "gauge",
        "Smoothed QUIC round-trip time to a peer.",
        &per_peer(&|p| p.rtt_us as f64 / 1e6),
    );

    let rtt = &s.request_rtt;
    let mut buckets = Vec::new();
    let mut cumulative = 0;
    for (i, count) in rtt.counts.iter().enumerate() {
        cumulative += count;
        let le = RTT_BUCKETS_US
            .get(i)
            .map_or("+Inf".to_string(), |us| format!("{}", *us as f64 / 1e6));
        buckets.push((format!("_bucket{{le=\"{le}\"}}"), cumulative as f64));
    }
    buckets.push(("_sum".into(), rtt.sum_us as f64 / 1e6));
    buckets.push(("_count".into(), cumulative as f64));
    family(
        "atoll_request_rtt_seconds",
        "histogram",
        "Round trips of requests to peers (remote spawn, process lists, Raft RPCs, name acknowledgements).",
        &buckets,
    );

    if let Some(buffer) = &s.udp_buffer {
        family(
            "atoll_udp_receive_buffer_bytes",
            "gauge",
            "The UDP socket's receive buffer as the kernel granted it (capped at net.core.rmem_max).",
            &[(String::new(), buffer.granted as f64)],
        );
        family(
            "atoll_udp_receive_buffer_requested_bytes",
            "gauge",
            "The UDP socket's receive buffer as configured; more than granted means the kernel capped it.",
            &[(String::new(), buffer.asked as f64)],
        );
    }
    family(
        "atoll_processes",
        "gauge",
        "Live processes on this node.",
        &[(String::new(), s.processes as f64)],
    );
    let waiting: u64 = processes.iter().map(|p| p.mailbox_len).sum();
    let longest = processes.iter().map(|p| p.mailbox_len).max().unwrap_or(0);
    family(
        "atoll_mailbox_messages",
        "gauge",
        "Messages waiting in the mailboxes of this node's processes.",
        &[(String::new(), waiting as f64)],
    );
    family(
        "atoll_mailbox_longest",
        "gauge",
        "The longest mailbox on this node.",
        &[(String::new(), longest as f64)],
    );

    let states = ["joining", "active", "suspect", "unreachable", "left"];
    let members: Vec<(String, f64)> = states
        .iter()
        .map(|state| {
            let n = s.members.iter().filter(|m| m.state == *state).count();
            (format!("{{state=\"{state}\"}}"), n as f64)
        })
        .collect();
    family(
        "atoll_members",
        "gauge",
        "Members by state, as this node sees them (itself included).",
        &members,
    );

    if let Some(raft) = &s.raft {
        let one = |v: Option<u64>| -> Vec<(String, f64)> {
            v.map(|v| vec![(String::new(), v as f64)])
                .unwrap_or_default()
        };
        family(
            "atoll_raft_term",
            "gauge",
            "The current Raft term (voters).",
            &one(raft.term),
        );
        family(
            "atoll_raft_commit_index",
            "gauge",
            "The last committed Raft log index (voters).",
            &one(raft.commit_index),
        );
        family(
            "atoll_raft_last_applied",
            "gauge",
            "The last applied Raft log index (voters).",
            &one(raft.last_applied),
        );
        family(
            "atoll_raft_is_leader",
            "gauge",
            "1 if this node leads the Raft core.",
            &[(String::new(), f64::from(u8::from(raft.role == "leader")))],
        );
        family(
            "atoll_registry_index",
            "gauge",
            "The Raft log index of the registry this node resolves names from.",
            &[(String::new(), raft.registry_index as f64)],
        );
    }

    let scopes = ["local", "eventual", "consistent", "strong"];
    let names: Vec<(String, f64)> = scopes
        .iter()
        .map(|scope| {
            let n = s.names.iter().filter(|m| m.scope == *scope).count();
            (format!("{{scope=\"{scope}\"}}"), n as f64)
        })
        .collect();
    family(
        "atoll_names",
        "gauge",
        "Names this node resolves, by scope.",
        &names,
    );
    family(
        "atoll_locks",
        "gauge",
        "Consensus locks held.",
        &[(String::new(), s.locks.len() as f64)],
    );
    family(
        "atoll_groups",
        "gauge",
        "Process groups with a member anywhere.",
        &[(String::new(), s.groups.len() as f64)],
    );
    let members: usize = s.groups.iter().map(|g| g.members.len()).sum();
    family(
        "atoll_group_members",
        "gauge",
        "Members of all process groups.",
        &[(String::new(), members as f64)],
    );
    let one = |v: f64| [(String::new(), v)];
    let d = &s.data.stats;
    for (name, kind, help, value) in [
        (
            "atoll_process_table_entries",
            "gauge",
            "Processes in the replicated process table, cluster-wide.",
            s.data.table_size as f64,
        ),
        (
            "atoll_services",
            "gauge",
            "Services offered in the cluster.",
            s.services.len() as f64,
        ),
        (
            "atoll_data_deltas_sent_total",
            "counter",
            "Gossip deltas sent that carried entries.",
            d.deltas_sent as f64,
        ),
        (
            "atoll_data_delta_bytes_sent_total",
            "counter",
            "Bytes of the gossip deltas sent.",
            d.delta_bytes_sent as f64,
        ),
        (
            "atoll_data_entries_applied_total",
            "counter",
            "Table entries applied from gossip deltas.",
            d.entries_applied as f64,
        ),
        (
            "atoll_data_repairs_total",
            "counter",
            "Anti-entropy repairs that changed this node's tables.",
            d.repairs as f64,
        ),
        (
            "atoll_data_entries_repaired_total",
            "counter",
            "Table entries applied by anti-entropy repairs.",
            d.entries_repaired as f64,
        ),
    ] {
        family(name, kind, help, &one(value));
    }
    out
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::{GroupStatus, LockStatus, MemberStatus, NameStatus, RaftView, RttSnapshot};
    use atoll_core::{NodeId, Pid};
    use atoll_wire::StatusWire;

    fn member(name: &str, state: &str) -> MemberStatus {
        MemberStatus {
            name: name.into(),
            id: "00".into(),
            generation: 1,
            addr: "127.0.0.1:1".into(),
            state: state.into(),
            roles: Vec::new(),
            capabilities: Vec::new(),
            processes: None,
            this_node: false,
        }
    }

    fn process(mailbox_len: u64) -> ProcessInfoWire {
        ProcessInfoWire {
            pid: Pid::new(NodeId::from_bytes([1; 16]), 1, mailbox_len),
            name: None,
            actor_type: "T".into(),
            mailbox_len,
            status: StatusWire::Running,
            uptime_ms: 0,
            messages_handled: 0,
            trap_exit: false,
            links: Vec::new(),
            monitors: Vec::new(),
            monitored_by: Vec::new(),
        }
    }

    fn status() -> NodeStatus {
        let mut counts = vec![0; RTT_BUCKETS_US.len() + 1];
        counts[0] = 2;
        counts[RTT_BUCKETS_US.len()] = 1;
        NodeStatus {
            name: "london".into(),
            id: "00".into(),
            creation: 1,
            addr: "127.0.0.1:7000".into(),
            processes: 3,
            members: vec![
                member("london", "active"),
                member("paris", "active"),
                member("rome", "unreachable"),
            ],
            peers: vec![PeerStatus {
                name: "pa\"ris".into(),
                id: "01".into(),
                frames_sent: 10,
                frames_received: 12,
                bytes_sent: 1000,
                bytes_received: 1200,
                datagrams_sent: 8,
                datagrams_received: 9,
                rtt_us: 1500,
            }],
            raft: Some(RaftView {
                voter: true,
                role: "leader".into(),
                term: Some(4),
                leader: Some("london".into()),
                last_applied: Some(9),
                commit_index: Some(9),
                registry_index: 9,
                voters: vec!["london".into()],
            }),
            names: vec![
                NameStatus {
                    name: "a".into(),
                    scope: "consistent".into(),
                    pid: "<0.1>".into(),
                    node: "london".into(),
                },
                NameStatus {
                    name: "b".into(),
                    scope: "local".into(),
                    pid: "<0.2>".into(),
                    node: "london".into(),
                },
            ],
            locks: vec![LockStatus {
                name: "l".into(),
                holder: "<0.1>".into(),
                node: "london".into(),
                token: 7,
            }],
            groups: vec![GroupStatus {
                name: "g".into(),
                members: vec!["<0.1>".into(), "<0.2>".into()],
                local: 2,
            }],
            request_rtt: RttSnapshot {
                bucket_bounds_us: RTT_BUCKETS_US.to_vec(),
                counts,
                sum_us: 2_000_300,
            },
            services: vec![crate::ServiceStatus {
                name: "db".into(),
                offers: vec![],
            }],
            data: crate::DataStatus {
                table_size: 12,
                per_node: vec![("london".into(), 12)],
                stats: crate::DataStats {
                    repairs: 3,
                    ..Default::default()
                },
            },
            fencing: Default::default(),
            udp_buffer: Some(crate::UdpBufferStatus {
                asked: 4 << 20,
                granted: 212_992,
                capped: true,
            }),
        }
    }

    #[test]
    fn every_family_is_rendered_with_its_samples() {
        let text = render_metrics(&status(), &[process(4), process(0), process(2)]);
        for line in [
            "# TYPE atoll_peer_frames_sent_total counter",
            "atoll_peer_frames_sent_total{peer=\"pa\\\"ris\"} 10",
            "atoll_peer_frames_received_total{peer=\"pa\\\"ris\"} 12",
            "atoll_peer_bytes_sent_total{peer=\"pa\\\"ris\"} 1000",
            "atoll_peer_bytes_received_total{peer=\"pa\\\"ris\"} 1200",
            "atoll_peer_rtt_seconds{peer=\"pa\\\"ris\"} 0.0015",
            "# TYPE atoll_request_rtt_seconds histogram",
            "atoll_request_rtt_seconds_bucket{le=\"0.0001\"} 2",
            "atoll_request_rtt_seconds_bucket{le=\"1\"} 2",
            "atoll_request_rtt_seconds_bucket{le=\"+Inf\"} 3",
            "atoll_request_rtt_seconds_sum 2.0003",
            "atoll_request_rtt_seconds_count 3",
            "atoll_udp_receive_buffer_bytes 212992",
            "atoll_udp_receive_buffer_requested_bytes 4194304",
            "atoll_processes 3",
            "atoll_mailbox_messages 6",
            "atoll_mailbox_longest 4",
            "atoll_members{state=\"active\"} 2",
            "atoll_members{state=\"unreachable\"} 1",
            "atoll_members{state=\"joining\"} 0",
            "atoll_raft_term 4",
            "atoll_raft_commit_index 9",
            "atoll_raft_last_applied 9",
            "atoll_raft_is_leader 1",
            "atoll_registry_index 9",
            "atoll_names{scope=\"consistent\"} 1",
            "atoll_names{scope=\"local\"} 1",
            "atoll_names{scope=\"strong\"} 0",
            "atoll_locks 1",
            "atoll_groups 1",
            "atoll_process_table_entries 12",
            "atoll_services 1",
            "atoll_data_repairs_total 3",
            "atoll_group_members 2",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "no line {line:?} in:\n{text}"
            );
        }
        // Every sample belongs to a family announced with HELP and TYPE.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let name = l.split(['{', ' ']).next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            assert!(
                text.contains(&format!("# TYPE {family} ")),
                "{l}: no TYPE line"
            );
        }
    }

    #[test]
    fn without_consensus_there_are_no_raft_families() {
        let mut s = status();
        s.raft = None;
        s.udp_buffer = None;
        let text = render_metrics(&s, &[]);
        assert!(!text.contains("atoll_raft_"), "{text}");
        assert!(!text.contains("atoll_udp_"), "{text}");
        assert!(!text.contains("atoll_registry_index"), "{text}");
        assert!(
            text.lines().any(|l| l == "atoll_mailbox_longest 0"),
            "{text}"
        );
    }
}
