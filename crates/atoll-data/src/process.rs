//! The distributed process table: what every process advertises about itself, gossiped
//! as a last-writer-wins map with one writer per entry (the node the process runs on).

use std::collections::{BTreeMap, BTreeSet};

use atoll_core::{NodeId, Pid};
use serde::{Deserialize, Serialize};

use crate::hlc::HlcTimestamp;
use crate::lww::{Delta, Digest, LwwMap, MergeError, MergeReport};

/// Longest agent type or capability name, in bytes.
pub const MAX_NAME_LEN: usize = 255;
/// Most capabilities one process may advertise.
pub const MAX_CAPABILITIES: usize = 64;

/// What a process is doing.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub enum ProcessStatus {
    /// Started, not yet serving.
    Starting,
    /// Serving.
    Running,
    /// Serving, but saturated.
    Busy,
    /// Shutting down.
    Stopping,
}

/// A process's resource use, as it reports it.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize, Deserialize,
)]
pub struct ResourceSummary {
    /// Relative load, what placement balances. An atoll node reports one unit per waiting
    /// message plus ten for the process itself; an application may report its own measure
    /// (e.g. thousandths of a core) as long as every node uses the same.
    pub load: u32,
    /// Memory held, in bytes.
    pub memory_bytes: u64,
    /// Messages waiting in its mailbox.
    pub mailbox_len: u32,
    /// Messages handled so far.
    pub messages_handled: u64,
}

/// What one process advertises to the cluster.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct ProcessAdvertisement {
    /// The process (its node is the only writer of this entry).
    pub pid: Pid,
    /// Its kind, for [`ProcessTable::find_by_type`].
    pub agent_type: String,
    /// What it can do, for [`ProcessTable::find_by_capability`].
    pub capabilities: BTreeSet<String>,
    /// What it is doing.
    pub status: ProcessStatus,
    /// Its resource use.
    pub resource_summary: ResourceSummary,
}

impl ProcessAdvertisement {
    /// Checks the advertisement against the table's limits.
    pub fn validate(&self) -> Result<(), MergeError> {
        let bad = |what: &str| Err(MergeError::Invalid(format!("{} {what}", self.pid)));
        if self.agent_type.len() > MAX_NAME_LEN {
            return bad("agent type too long");
        }
        if self.capabilities.len() > MAX_CAPABILITIES {
            return bad("has too many capabilities");
        }
        if self.capabilities.iter().any(|c| c.len() > MAX_NAME_LEN) {
            return bad("capability name too long");
        }
        Ok(())
    }
}

/// The processes and summed load of one node.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct NodeLoad {
    /// Live processes advertised.
    pub processes: u64,
    /// Sum of their [`ResourceSummary::load`].
    pub load: u64,
}

/// Why a local advertisement was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdvertiseError {
    /// Only a process of this node can be advertised here.
    #[error("{pid} is not a process of this node")]
    NotLocal {
        /// The process.
        pid: Pid,
    },
    /// It breaks a limit.
    #[error(transparent)]
    Invalid(#[from] MergeError),
}

/// The process table: every process in the cluster, as last advertised, with indexes by
/// type, capability and node load.
///
/// ```
/// use atoll_core::{NodeId, Pid};
/// use atoll_data::{ProcessAdvertisement, ProcessStatus, ProcessTable, ResourceSummary};
///
/// let me = NodeId::from_bytes([1; 16]);
/// let mut table = ProcessTable::new(me);
/// table
///     .advertise(
///         ProcessAdvertisement {
///             pid: Pid::new(me, 1, 7),
///             agent_type: "worker".into(),
///             capabilities: ["gpu".to_string()].into(),
///             status: ProcessStatus::Running,
///             resource_summary: ResourceSummary { load: 250, ..Default::default() },
///         },
///         1_000,
///     )
///     .unwrap();
/// assert_eq!(table.find_by_type("worker").count(), 1);
/// assert_eq!(table.least_loaded_node(Some("gpu")), Some(me));
/// assert_eq!(table.least_loaded_node(Some("tpu")), None);
/// ```
#[derive(Clone, Debug)]
pub struct ProcessTable {
    map: LwwMap<Pid, ProcessAdvertisement>,
    by_type: BTreeMap<String, BTreeSet<Pid>>,
    /// Copies of the advertisements per capability: placement queries read them without a
    /// lookup per match in the main map.
    by_capability: BTreeMap<String, BTreeMap<Pid, ProcessAdvertisement>>,
    loads: BTreeMap<NodeId, NodeLoad>,
    /// capability → node → processes with it.
    capable_nodes: BTreeMap<String, BTreeMap<NodeId, u64>>,
}

struct Indexes<'a> {
    by_type: &'a mut BTreeMap<String, BTreeSet<Pid>>,
    by_capability: &'a mut BTreeMap<String, BTreeMap<Pid, ProcessAdvertisement>>,
    loads: &'a mut BTreeMap<NodeId, NodeLoad>,
    capable_nodes: &'a mut BTreeMap<String, BTreeMap<NodeId, u64>>,
}

impl Indexes<'_> {
    fn change(
        &mut self,
        pid: &Pid,
        old: Option<&ProcessAdvertisement>,
        new: Option<&ProcessAdvertisement>,
    ) {
        if let Some(old) = old {
            remove_from(self.by_type, &old.agent_type, pid);
            for c in &old.capabilities {
                if let Some(ads) = self.by_capability.get_mut(c) {
                    ads.remove(pid);
                    if ads.is_empty() {
                        self.by_capability.remove(c);
                    }
                }
                if let Some(nodes) = self.capable_nodes.get_mut(c) {
                    if let Some(n) = nodes.get_mut(&pid.node) {
                        *n -= 1;
                        if *n == 0 {
                            nodes.remove(&pid.node);
                        }
                    }
                    if nodes.is_empty() {
                        self.capable_nodes.remove(c);
                    }
                }
            }
            if let Some(l) = self.loads.get_mut(&pid.node) {
                l.processes -= 1;
                l.load -= u64::from(old.resource_summary.load);
                if l.processes == 0 {
                    self.loads.remove(&pid.node);
                }
            }
        }
        if let Some(new) = new {
            self.by_type
                .entry(new.agent_type.clone())
                .or_default()
                .insert(*pid);
            for c in &new.capabilities {
                self.by_capability
                    .entry(c.clone())
                    .or_default()
                    .insert(*pid, new.clone());
                *self
                    .capable_nodes
                    .entry(c.clone())
                    .or_default()
                    .entry(pid.node)
                    .or_default() += 1;
            }
            let l = self.loads.entry(pid.node).or_default();
            l.processes += 1;
            l.load += u64::from(new.resource_summary.load);
        }
    }
}

fn remove_from(index: &mut BTreeMap<String, BTreeSet<Pid>>, name: &str, pid: &Pid) {
    if let Some(set) = index.get_mut(name) {
        set.remove(pid);
        if set.is_empty() {
            index.remove(name);
        }
    }
}

impl ProcessTable {
    /// An empty table owned by `node`.
    pub fn new(node: NodeId) -> Self {
        ProcessTable {
            map: LwwMap::new(node),
            by_type: BTreeMap::new(),
            by_capability: BTreeMap::new(),
            loads: BTreeMap::new(),
            capable_nodes: BTreeMap::new(),
        }
    }

    fn indexes(&mut self) -> (&mut LwwMap<Pid, ProcessAdvertisement>, Indexes<'_>) {
        (
            &mut self.map,
            Indexes {
                by_type: &mut self.by_type,
                by_capability: &mut self.by_capability,
                loads: &mut self.loads,
                capable_nodes: &mut self.capable_nodes,
            },
        )
    }

    /// The underlying map.
    pub fn map(&self) -> &LwwMap<Pid, ProcessAdvertisement> {
        &self.map
    }

    /// Advertises (or re-advertises) a process of this node at wall time `now_ms`.
    pub fn advertise(
        &mut self,
        ad: ProcessAdvertisement,
        now_ms: u64,
    ) -> Result<HlcTimestamp, AdvertiseError> {
        if ad.pid.node != self.map.node() {
            return Err(AdvertiseError::NotLocal { pid: ad.pid });
        }
        ad.validate()?;
        let pid = ad.pid;
        let (map, mut ix) = self.indexes();
        ix.change(&pid, map.get(&pid), Some(&ad));
        Ok(map.insert(pid, ad, now_ms))
    }

    /// Withdraws a process of this node (it exited). Returns the tombstone's timestamp,
    /// or `None` if it was not advertised.
    pub fn withdraw(&mut self, pid: &Pid, now_ms: u64) -> Option<HlcTimestamp> {
        let (map, mut ix) = self.indexes();
        let old = map.get(pid)?.clone();
        ix.change(pid, Some(&old), None);
        map.remove(pid, now_ms)
    }

    /// The advertisement of `pid`.
    pub fn get(&self, pid: &Pid) -> Option<&ProcessAdvertisement> {
        self.map.get(pid)
    }

    /// Number of live processes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True if no process is advertised.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Every process of type `agent_type`, in pid order.
    pub fn find_by_type<'a>(
        &'a self,
        agent_type: &str,
    ) -> impl Iterator<Item = &'a ProcessAdvertisement> + 'a {
        self.lookup(self.by_type.get(agent_type))
    }

    /// Every process advertising `capability`, in pid order.
    pub fn find_by_capability<'a>(
        &'a self,
        capability: &str,
    ) -> impl Iterator<Item = &'a ProcessAdvertisement> + 'a {
        self.by_capability
            .get(capability)
            .into_iter()
            .flat_map(|ads| ads.values())
    }

    fn lookup<'a>(
        &'a self,
        pids: Option<&'a BTreeSet<Pid>>,
    ) -> impl Iterator<Item = &'a ProcessAdvertisement> + 'a {
        pids.into_iter().flatten().filter_map(|p| self.map.get(p))
    }

    /// The node with the least summed load among those running at least one process
    /// (with `capability`, if given); ties go to fewer processes, then the lower node id.
    pub fn least_loaded_node(&self, capability: Option<&str>) -> Option<NodeId> {
        let key = |n: &NodeId| {
            let l = self.loads.get(n).copied().unwrap_or_default();
            (l.load, l.processes, *n)
        };
        match capability {
            None => self.loads.keys().min_by_key(|n| key(n)).copied(),
            Some(c) => self
                .capable_nodes
                .get(c)?
                .keys()
                .min_by_key(|n| key(n))
                .copied(),
        }
    }

    /// The processes and load of `node`.
    pub fn node_load(&self, node: NodeId) -> NodeLoad {
        self.loads.get(&node).copied().unwrap_or_default()
    }

    /// Checks that every entry of `delta` was written by the node its process runs on
    /// and is within limits.
    pub fn check_delta(delta: &Delta<Pid, ProcessAdvertisement>) -> Result<(), MergeError> {
        for part in &delta.origins {
            for (pid, _, ad) in &part.entries {
                if pid.node != part.origin {
                    return Err(MergeError::ForeignWriter {
                        origin: part.origin,
                        owner: pid.node,
                    });
                }
                if let Some(ad) = ad {
                    if ad.pid != *pid {
                        return Err(MergeError::Invalid(format!("{} filed under {pid}", ad.pid)));
                    }
                    ad.validate()?;
                }
            }
        }
        LwwMap::check_delta(delta)
    }

    /// Merges a delta from a peer at wall time `now_ms`; a refused delta changes nothing.
    pub fn merge_delta(
        &mut self,
        delta: Delta<Pid, ProcessAdvertisement>,
        now_ms: u64,
    ) -> Result<MergeReport, MergeError> {
        Self::check_delta(&delta)?;
        let (map, mut ix) = self.indexes();
        map.merge_delta_observed(delta, now_ms, &mut |p, o, n| ix.change(p, o, n))
    }

    /// Merges another replica's whole state.
    pub fn merge(&mut self, other: &ProcessTable, now_ms: u64) -> MergeReport {
        let (map, mut ix) = self.indexes();
        map.merge_observed(&other.map, now_ms, &mut |p, o, n| ix.change(p, o, n))
    }

    /// See [`LwwMap::digest`].
    pub fn digest(&mut self, now_ms: u64) -> Digest {
        self.map.digest(now_ms)
    }

    /// See [`LwwMap::collect_tombstones`].
    pub fn collect_tombstones(&mut self, live: &BTreeMap<NodeId, Digest>) -> usize {
        self.map.collect_tombstones(live)
    }

    /// A node declared lost is back: its processes are taken again (see
    /// [`LwwMap::readmit_origin`]).
    pub fn readmit_node(&mut self, node: NodeId) {
        self.map.readmit_origin(node);
    }

    /// A node was lost for good: its processes are gone (see [`LwwMap::forget_origin`]).
    pub fn forget_node(&mut self, node: NodeId) -> Vec<Pid> {
        let (map, mut ix) = self.indexes();
        map.forget_origin(node)
            .into_iter()
            .map(|(pid, ad)| {
                ix.change(&pid, Some(&ad), None);
                pid
            })
            .collect()
    }
}
