//! The nemesis: which fault comes next and on whom is a function of the seed (and of which
//! node leads, which the cluster decides); each fault is injected, held, then healed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use crate::client::MIGRATE_WAIT;
use crate::cluster::{Cluster, NODES, SetupError, VOTERS};
use crate::history::{Kill, client_name};
use crate::rng::Rng;
use crate::workload::{ClientLink, Recorder};

/// The kinds of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// SIGKILL a node, start it again later with the same data directory.
    Kill9,
    /// SIGTERM a node, start it again with the same data directory.
    Restart,
    /// SIGSTOP the Raft leader, SIGCONT it later.
    PauseLeader,
    /// SIGSTOP a client that holds a lock (or any client), SIGCONT it later.
    PauseHolder,
    /// The leader and a non-voter apart from the other three.
    PartitionLeaderMinority,
    /// The leader, a voter and a non-voter apart from the other two.
    PartitionLeaderMajority,
    /// Two halves that cannot reach each other, and a node that reaches both.
    Bridge,
    /// The leader's packets to everyone are dropped; theirs to it pass.
    OneWay,
    /// Every node loses a share of its packets.
    Loss,
    /// Every node sends at a low rate.
    RateLimit,
    /// SIGKILL a client process (a lock holder, or one with an operation in flight); start
    /// a new one in its place under a new identity.
    KillClient,
    /// Pile several key-value shards onto one node by migration while the workload reads
    /// and writes them; the nodes' rebalancing then spreads them out again.
    GrainMove,
}

/// Every kind, in the order summaries list them.
pub const ALL: [Kind; 12] = [
    Kind::Kill9,
    Kind::Restart,
    Kind::PauseLeader,
    Kind::PauseHolder,
    Kind::PartitionLeaderMinority,
    Kind::PartitionLeaderMajority,
    Kind::Bridge,
    Kind::OneWay,
    Kind::Loss,
    Kind::RateLimit,
    Kind::KillClient,
    Kind::GrainMove,
];

impl Kind {
    /// Its name in summaries and histories.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Kill9 => "kill9",
            Kind::Restart => "restart",
            Kind::PauseLeader => "pause-leader",
            Kind::PauseHolder => "pause-holder",
            Kind::PartitionLeaderMinority => "partition-leader-minority",
            Kind::PartitionLeaderMajority => "partition-leader-majority",
            Kind::Bridge => "bridge",
            Kind::OneWay => "one-way",
            Kind::Loss => "loss",
            Kind::RateLimit => "rate-limit",
            Kind::KillClient => "kill-client",
            Kind::GrainMove => "grain-move",
        }
    }
}

/// How to undo an injected fault.
#[derive(Debug)]
pub enum Undo {
    /// Start node `i` again.
    StartNode(usize),
    /// SIGCONT this pid.
    Continue(u32),
    /// Heal the network.
    Network,
    /// Start client `i` again, as a new incarnation.
    RestartClient(usize),
    /// Nothing to undo.
    Nothing,
}

/// An injected fault.
#[derive(Debug)]
pub struct Injected {
    /// Its kind.
    pub kind: Kind,
    /// What was done.
    pub detail: String,
    /// Clients whose node may be declared unreachable because of it.
    pub clients: BTreeSet<usize>,
    /// Clients stopped by it.
    pub paused_clients: BTreeSet<usize>,
    /// Nodes stopped by it.
    pub paused_nodes: BTreeSet<usize>,
    /// How to heal it.
    pub undo: Undo,
}

fn others(of: &[usize]) -> Vec<usize> {
    (1..=NODES).filter(|i| !of.contains(i)).collect()
}

fn cut_between(cluster: &Cluster, a: &[usize], b: &[usize]) -> Result<(), SetupError> {
    for &x in a {
        for &y in b {
            cluster.cut(x, y)?;
        }
    }
    Ok(())
}

/// Injects a fault of `kind`.
pub fn inject(
    kind: Kind,
    cluster: &mut Cluster,
    rng: &mut Rng,
    rec: &Recorder,
    links: &[Arc<ClientLink>],
) -> Result<Injected, SetupError> {
    let all: BTreeSet<usize> = (1..=NODES).collect();
    // Without a known leader (an election under way), a voter stands in.
    let leader = cluster
        .leader()
        .unwrap_or_else(|| rng.range(1, VOTERS as u64 + 1) as usize);
    let non_voters: Vec<usize> = (VOTERS + 1..=NODES).collect();
    let injected =
        |detail: String, clients: BTreeSet<usize>, paused: BTreeSet<usize>, undo| Injected {
            kind,
            detail,
            clients,
            paused_clients: paused,
            paused_nodes: BTreeSet::new(),
            undo,
        };
    Ok(match kind {
        Kind::Kill9 => {
            let i = rng.range(1, NODES as u64 + 1) as usize;
            cluster.kill_node(i);
            injected(
                format!("SIGKILL n{i}"),
                BTreeSet::new(),
                BTreeSet::new(),
                Undo::StartNode(i),
            )
        }
        Kind::Restart => {
            let i = rng.range(1, NODES as u64 + 1) as usize;
            cluster.stop_node(i, Duration::from_secs(15));
            injected(
                format!("SIGTERM n{i}"),
                BTreeSet::new(),
                BTreeSet::new(),
                Undo::StartNode(i),
            )
        }
        Kind::PauseLeader => {
            let pid = cluster.node_pid(leader).unwrap_or(0);
            cluster.signal(pid, "-STOP");
            Injected {
                paused_nodes: [leader].into(),
                ..injected(
                    format!("SIGSTOP leader n{leader}"),
                    BTreeSet::new(),
                    BTreeSet::new(),
                    Undo::Continue(pid),
                )
            }
        }
        Kind::PauseHolder => {
            let (c, holding) = match rec.a_holder() {
                Some(c) => (c, "lock holder"),
                None => (
                    rng.range(1, NODES as u64 + 1) as usize,
                    "client (no lock held)",
                ),
            };
            let pid = cluster.client_pid(c).unwrap_or(0);
            cluster.signal(pid, "-STOP");
            injected(
                format!("SIGSTOP {holding} c{c}"),
                [c].into(),
                [c].into(),
                Undo::Continue(pid),
            )
        }
        Kind::PartitionLeaderMinority => {
            let minority = vec![leader, *rng.pick(&non_voters)];
            let majority = others(&minority);
            cut_between(cluster, &minority, &majority)?;
            let detail = format!("{minority:?} | {majority:?} (leader n{leader} in the minority)");
            injected(
                detail,
                minority.into_iter().collect(),
                BTreeSet::new(),
                Undo::Network,
            )
        }
        Kind::PartitionLeaderMajority => {
            let voters: Vec<usize> = (1..=VOTERS).filter(|&v| v != leader).collect();
            let majority = vec![leader, *rng.pick(&voters), *rng.pick(&non_voters)];
            let minority = others(&majority);
            cut_between(cluster, &majority, &minority)?;
            let detail = format!("{majority:?} | {minority:?} (leader n{leader} in the majority)");
            injected(
                detail,
                minority.into_iter().collect(),
                BTreeSet::new(),
                Undo::Network,
            )
        }
        Kind::Bridge => {
            let mut order: Vec<usize> = (1..=NODES).collect();
            for i in (1..order.len()).rev() {
                order.swap(i, rng.range(0, i as u64 + 1) as usize);
            }
            let (a, bridge, b) = (&order[..2], order[2], &order[3..]);
            cut_between(cluster, a, b)?;
            let detail = format!("{a:?} | {b:?}, n{bridge} reaches both");
            injected(detail, all, BTreeSet::new(), Undo::Network)
        }
        Kind::OneWay => {
            for i in others(&[leader]) {
                cluster.block(leader, i)?;
            }
            injected(
                format!("n{leader} (leader) -> everyone dropped"),
                all,
                BTreeSet::new(),
                Undo::Network,
            )
        }
        Kind::Loss => {
            let pct = rng.range(10, 35);
            cluster.loss(pct)?;
            injected(format!("{pct}% loss"), all, BTreeSet::new(), Undo::Network)
        }
        Kind::KillClient => {
            let holder = if rng.range(0, 2) == 0 {
                rec.a_holder()
            } else {
                None
            };
            let (c, what) = match holder {
                Some(c) => (c, "lock holder"),
                None => match rec.a_busy_client() {
                    Some(c) => (c, "client with an operation in flight"),
                    None => (rng.range(1, NODES as u64 + 1) as usize, "idle client"),
                },
            };
            let incarnation = links[c - 1].incarnation;
            rec.history().kills.push(Kill {
                client: c,
                incarnation,
                at_ms: rec.now_ms(),
            });
            cluster.kill_client(c);
            injected(
                format!("SIGKILL {what} {}", client_name(c, incarnation)),
                [c].into(),
                BTreeSet::new(),
                Undo::RestartClient(c),
            )
        }
        Kind::GrainMove => {
            let to = rng.range(1, NODES as u64 + 1);
            let c = rng.range(1, NODES as u64 + 1) as usize;
            let mut shards: Vec<usize> = (0..atoll_cli::kv::SHARDS).collect();
            for i in (1..shards.len()).rev() {
                shards.swap(i, rng.range(0, i as u64 + 1) as usize);
            }
            shards.truncate(rng.range(3, 6) as usize);
            let results = links[c - 1]
                .migrate(&shards, &format!("n{to}"), MIGRATE_WAIT * 6)
                .unwrap_or_default();
            let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
            for r in &results {
                *counts.entry(r.as_str()).or_default() += 1;
            }
            let outcome: Vec<String> = counts.iter().map(|(k, n)| format!("{k}={n}")).collect();
            injected(
                format!(
                    "c{c} moves kv shards {shards:?} to n{to}: {}",
                    if outcome.is_empty() {
                        "no answer".to_string()
                    } else {
                        outcome.join(" ")
                    }
                ),
                BTreeSet::new(),
                BTreeSet::new(),
                Undo::Nothing,
            )
        }
        Kind::RateLimit => {
            let kbit = rng.range(64, 512);
            cluster.rate(kbit)?;
            injected(
                format!("{kbit} kbit/s"),
                all,
                BTreeSet::new(),
                Undo::Network,
            )
        }
    })
}

/// Heals `fault`; returns the client to start again, if it killed one (the runner starts
/// it, as it drives the clients).
pub fn heal(fault: &Injected, cluster: &mut Cluster) -> Result<Option<usize>, SetupError> {
    match fault.undo {
        Undo::StartNode(i) => cluster.start_node(i)?,
        Undo::Continue(pid) => cluster.signal(pid, "-CONT"),
        Undo::Network => cluster.heal()?,
        Undo::RestartClient(c) => return Ok(Some(c)),
        Undo::Nothing => {}
    }
    Ok(None)
}
