//! What a node can tell an operator about itself and the cluster: one snapshot, read
//! locally (no network round trip), serializable for the HTTP API and `atoll status`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use atoll_core::{NodeId, Pid, Scope};
use serde::{Deserialize, Serialize};

use super::Node;

/// Upper bounds (in microseconds) of the request round-trip histogram's buckets; the last
/// bucket is unbounded.
pub const RTT_BUCKETS_US: [u64; 12] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
];

/// A histogram of request round trips (control requests to peers: remote spawn, process
/// lists, Raft RPCs, name acknowledgements), cumulative since the node started.
#[derive(Debug, Default)]
pub(crate) struct RttHistogram {
    /// One counter per bucket of [`RTT_BUCKETS_US`], then the unbounded one.
    buckets: [AtomicU64; RTT_BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
}

impl RttHistogram {
    pub(crate) fn record(&self, rtt: Duration) {
        let us = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX);
        let i = RTT_BUCKETS_US.partition_point(|&bound| bound < us);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    fn snapshot(&self) -> RttSnapshot {
        RttSnapshot {
            bucket_bounds_us: RTT_BUCKETS_US.to_vec(),
            counts: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            sum_us: self.sum_us.load(Ordering::Relaxed),
        }
    }
}

/// Request round trips: how many fell in each bucket (not cumulative; `counts` has one more
/// entry than `bucket_bounds_us`, for the slower ones) and their sum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RttSnapshot {
    /// Upper bound of each bucket, in microseconds.
    pub bucket_bounds_us: Vec<u64>,
    /// Requests per bucket.
    pub counts: Vec<u64>,
    /// Sum of all round trips, in microseconds.
    pub sum_us: u64,
}

/// Everything [`Node::status`] reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// This node's name.
    pub name: String,
    /// This node's id (hex).
    pub id: String,
    /// This node's incarnation.
    pub creation: u32,
    /// Where it accepts connections.
    pub addr: String,
    /// Live local processes.
    pub processes: usize,
    /// The membership as this node sees it (itself included), in name order; empty
    /// without membership.
    pub members: Vec<MemberStatus>,
    /// Connected peers and their traffic, in name order.
    pub peers: Vec<PeerStatus>,
    /// The Raft core as this node sees it; `None` without consensus.
    pub raft: Option<RaftView>,
    /// Every name this node resolves, in name order (a name may appear in several
    /// scopes; [`Node::whereis`] picks the highest).
    pub names: Vec<NameStatus>,
    /// Consensus locks held, in name order.
    pub locks: Vec<LockStatus>,
    /// Process groups with a member anywhere, in name order.
    pub groups: Vec<GroupStatus>,
    /// Request round trips to peers.
    pub request_rtt: RttSnapshot,
    /// Services offered in the cluster, in name order.
    pub services: Vec<ServiceStatus>,
    /// The process table and its gossip.
    pub data: DataStatus,
    /// Whether this node was fenced (declared down, or downed by itself under the
    /// split-brain policy) and rejoined as a new generation.
    #[serde(default)]
    pub fencing: FencingStatus,
    /// The UDP socket's receive buffer; `None` on a simulated network.
    #[serde(default)]
    pub udp_buffer: Option<UdpBufferStatus>,
}

/// A node's UDP receive buffer, as asked for and as the kernel granted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UdpBufferStatus {
    /// Bytes asked for (`TransportSettings::udp_buffer`).
    pub asked: u64,
    /// Bytes granted.
    pub granted: u64,
    /// True when the kernel granted less than asked (`net.core.rmem_max` is lower): large
    /// messages may then see drops and retransmissions.
    pub capped: bool,
}

impl From<atoll_net::UdpBuffer> for UdpBufferStatus {
    fn from(b: atoll_net::UdpBuffer) -> Self {
        UdpBufferStatus {
            asked: b.asked as u64,
            granted: b.granted as u64,
            capped: b.capped(),
        }
    }
}

/// This node's fencings since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FencingStatus {
    /// How many times this node was fenced.
    pub times: u64,
    /// The last fencing, if any.
    pub last: Option<FencedStatus>,
    /// True while this node has downed itself under the split-brain policy and not yet
    /// reached a majority of the membership it lost (it is cut off from it).
    pub self_downed: bool,
}

/// One fencing of this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FencedStatus {
    /// The generation that was declared down.
    pub old_generation: u64,
    /// The generation the node continued as.
    pub new_generation: u64,
    /// True when the split-brain policy of this node downed it (its side lost the
    /// majority); false when another member declared it down.
    pub by_itself: bool,
    /// The Consistent and Strong names its processes held, released.
    pub names: usize,
    /// The locks its processes held, released.
    pub locks: usize,
    /// The group memberships its processes held, left.
    pub groups: usize,
}

/// One service and its offers, least loaded first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// The service name.
    pub name: String,
    /// Who offers it.
    pub offers: Vec<ServiceOffer>,
}

/// One node's offer of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceOffer {
    /// The offering node's name (or id, when it is not a known member).
    pub node: String,
    /// The process serving it.
    pub pid: String,
    /// Its load; lower is preferred.
    pub load: u32,
    /// Its attributes.
    pub metadata: std::collections::BTreeMap<String, String>,
}

/// The replicated process table as this node holds it, and what its gossip has done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataStatus {
    /// Processes in the table, cluster-wide.
    pub table_size: usize,
    /// Processes in the table per node (name or id), in name order.
    pub per_node: Vec<(String, usize)>,
    /// The gossip's counters.
    pub stats: crate::protocol::data::DataStats,
}

/// One member of the membership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    /// Its name.
    pub name: String,
    /// Its node id (hex).
    pub id: String,
    /// Its generation.
    pub generation: u64,
    /// Where it listens.
    pub addr: String,
    /// `joining`, `active`, `suspect`, `unreachable` or `left`.
    pub state: String,
    /// Its roles.
    pub roles: Vec<String>,
    /// Its capabilities.
    pub capabilities: Vec<String>,
    /// Its live processes, as it last reported them.
    pub processes: Option<u32>,
    /// Whether this is the node answering.
    pub this_node: bool,
}

/// One connected peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// Its name.
    pub name: String,
    /// Its node id (hex).
    pub id: String,
    /// Frames (messages, replies, signals, control) sent to it on this connection.
    pub frames_sent: u64,
    /// Frames received from it on this connection.
    pub frames_received: u64,
    /// UDP payload bytes sent on this connection.
    pub bytes_sent: u64,
    /// UDP payload bytes received on this connection.
    pub bytes_received: u64,
    /// UDP datagrams sent on this connection (0 on the in-memory network of simulations).
    #[serde(default)]
    pub datagrams_sent: u64,
    /// UDP datagrams received on this connection (0 on the in-memory network).
    #[serde(default)]
    pub datagrams_received: u64,
    /// The connection's smoothed round-trip time, in microseconds.
    pub rtt_us: u64,
}

/// The Raft core as one node sees it (`system.raft`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftView {
    /// Whether this node is a voter.
    pub voter: bool,
    /// `leader`, `follower`, `candidate`, `learner`, `stopped` (a voter whose Raft is not
    /// running) or `none` (not a voter).
    pub role: String,
    /// The current term (voters only).
    pub term: Option<u64>,
    /// The leader's node name (or id, when it is not a known member), if one is known.
    pub leader: Option<String>,
    /// The last applied log index (voters only).
    pub last_applied: Option<u64>,
    /// The last committed log index (voters only).
    pub commit_index: Option<u64>,
    /// The log index of the registry this node resolves names from.
    pub registry_index: u64,
    /// The voters, by node name (or id), in Raft id order.
    pub voters: Vec<String>,
}

/// One name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameStatus {
    /// The name.
    pub name: String,
    /// `local`, `eventual`, `consistent` or `strong`.
    pub scope: String,
    /// The owner.
    pub pid: String,
    /// The owner's node name (or id).
    pub node: String,
}

/// One held lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockStatus {
    /// The lock's name.
    pub name: String,
    /// The holder.
    pub holder: String,
    /// The holder's node name (or id).
    pub node: String,
    /// The fencing token of the grant.
    pub token: u64,
}

/// One process group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupStatus {
    /// The group's name.
    pub name: String,
    /// Its members, in pid order.
    pub members: Vec<String>,
    /// How many of them run on this node.
    pub local: usize,
}

/// The lower-case name of a scope, as the status shows it.
pub fn scope_name(scope: Scope) -> &'static str {
    match scope {
        Scope::Local => "local",
        Scope::Eventual => "eventual",
        Scope::Consistent => "consistent",
        Scope::Strong => "strong",
    }
}

impl Node {
    /// This node's live processes, as live attach shows them (the same data
    /// [`super::RemoteNode::processes`] fetches from a peer).
    pub fn processes(&self) -> Vec<atoll_wire::ProcessInfoWire> {
        let mut all: Vec<_> = self
            .inner
            .rt
            .processes()
            .into_iter()
            .map(crate::convert::process_to_wire)
            .collect();
        all.sort_by_key(|p| p.pid);
        all
    }

    /// A snapshot of this node and of the cluster as this node sees it: members, peers and
    /// their traffic, the Raft core, names in every scope, locks and groups. Read locally.
    pub async fn status(&self) -> NodeStatus {
        let inner = &self.inner;
        // Read before the membership: a fencing follows its rejoin, so the snapshot never
        // shows a fencing into a generation newer than the node's own.
        let fencing = super::fence::status(inner);
        let mut names_of: HashMap<NodeId, String> = HashMap::new();
        names_of.insert(inner.id, inner.name.clone());
        let mut members = Vec::new();
        if let Some(swim) = self.membership() {
            let me = swim.identity();
            for m in swim.members() {
                let id = &m.identity;
                names_of.insert(id.node, id.name().to_string());
                members.push(member_status(
                    id,
                    m.state,
                    m.load.map(|l| l.processes),
                    false,
                ));
            }
            members.push(member_status(&me, swim.state(), None, true));
            if let Some(me) = members.last_mut() {
                me.processes = u32::try_from(inner.rt.process_count()).ok();
            }
            members.sort_by(|a, b| a.name.cmp(&b.name).then(a.generation.cmp(&b.generation)));
        }
        let peers: Vec<PeerStatus> = {
            let peers = inner.peers.read().unwrap_or_else(|e| e.into_inner());
            let mut all: Vec<PeerStatus> = peers
                .values()
                .map(|p| {
                    names_of.insert(p.id, p.name.clone());
                    let stats = p.conn.stats();
                    PeerStatus {
                        name: p.name.clone(),
                        id: p.id.to_string(),
                        frames_sent: p.frames_sent.load(Ordering::Relaxed),
                        frames_received: p.frames_received.load(Ordering::Relaxed),
                        bytes_sent: stats.bytes_sent,
                        bytes_received: stats.bytes_received,
                        datagrams_sent: stats.datagrams_sent,
                        datagrams_received: stats.datagrams_received,
                        rtt_us: u64::try_from(stats.rtt.as_micros()).unwrap_or(u64::MAX),
                    }
                })
                .collect();
            all.sort_by(|a, b| a.name.cmp(&b.name));
            all
        };
        let node_name = |id: NodeId| names_of.get(&id).cloned().unwrap_or(id.to_string());
        let pid_entry = |pid: Pid| (pid.to_string(), node_name(pid.node));

        let mut names = Vec::new();
        let mut locks = Vec::new();
        let mut raft = None;
        if let Some(naming) = self.naming() {
            let registry = naming.snapshot();
            for (name, binding) in registry.names() {
                let (pid, node) = pid_entry(binding.pid);
                names.push(NameStatus {
                    name: name.clone(),
                    scope: scope_name(binding.scope).into(),
                    pid,
                    node,
                });
            }
            for (name, grant) in registry.locks() {
                let (holder, node) = pid_entry(grant.holder);
                locks.push(LockStatus {
                    name: name.clone(),
                    holder,
                    node,
                    token: grant.token,
                });
            }
            raft = Some(naming.view(&node_name).await);
        }
        let local_scopes = [
            (Scope::Eventual, self.globals()),
            (Scope::Local, inner.rt.registered()),
        ];
        for (scope, list) in local_scopes {
            for (name, pid) in list {
                let (pid, node) = pid_entry(pid);
                names.push(NameStatus {
                    name,
                    scope: scope_name(scope).into(),
                    pid,
                    node,
                });
            }
        }
        names.sort_by(|a, b| a.name.cmp(&b.name));

        let groups = self
            .groups()
            .into_iter()
            .map(|name| {
                let members = self.group_members(&name);
                GroupStatus {
                    local: members.iter().filter(|p| p.node == inner.id).count(),
                    members: members.iter().map(Pid::to_string).collect(),
                    name,
                }
            })
            .collect();

        NodeStatus {
            name: inner.name.clone(),
            id: inner.id.to_string(),
            creation: inner.rt.creation(),
            addr: inner.local_addr.to_string(),
            processes: inner.rt.process_count(),
            members,
            peers,
            raft,
            names,
            locks,
            groups,
            request_rtt: inner.request_rtt.snapshot(),
            services: self
                .services()
                .into_iter()
                .map(|(name, offers)| ServiceStatus {
                    name,
                    offers: offers
                        .into_iter()
                        .map(|o| ServiceOffer {
                            node: node_name(o.pid.node),
                            pid: o.pid.to_string(),
                            load: o.load,
                            metadata: o.metadata,
                        })
                        .collect(),
                })
                .collect(),
            data: {
                let (table_size, stats) = self.data_stats();
                let mut per_node: Vec<(String, usize)> = self
                    .table_per_node()
                    .into_iter()
                    .map(|(n, count)| (node_name(n), count))
                    .collect();
                per_node.sort();
                DataStatus {
                    table_size,
                    per_node,
                    stats,
                }
            },
            fencing,
            udp_buffer: inner.udp_buffer.map(UdpBufferStatus::from),
        }
    }
}

fn member_status(
    id: &atoll_swim::Identity,
    state: atoll_swim::MemberState,
    processes: Option<u32>,
    this_node: bool,
) -> MemberStatus {
    use atoll_swim::MemberState as S;
    MemberStatus {
        name: id.name().to_string(),
        id: id.node.to_string(),
        generation: id.generation,
        addr: id.addr.to_string(),
        state: match state {
            S::Joining => "joining",
            S::Active => "active",
            S::Suspect => "suspect",
            S::Unreachable => "unreachable",
            S::Left => "left",
        }
        .into(),
        roles: id.meta.roles.clone(),
        capabilities: id.meta.capabilities.clone(),
        processes,
        this_node,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_land_in_the_bucket_of_their_upper_bound() {
        let h = RttHistogram::default();
        h.record(Duration::from_micros(100));
        h.record(Duration::from_micros(101));
        h.record(Duration::from_secs(5));
        let s = h.snapshot();
        assert_eq!(s.counts.len(), RTT_BUCKETS_US.len() + 1);
        assert_eq!(s.counts[0], 1);
        assert_eq!(s.counts[1], 1);
        assert_eq!(s.counts[RTT_BUCKETS_US.len()], 1);
        assert_eq!(s.counts.iter().sum::<u64>(), 3);
        assert_eq!(s.sum_us, 5_000_201);
    }
}
