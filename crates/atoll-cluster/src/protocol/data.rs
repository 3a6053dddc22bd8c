//! Cluster data on one node: its own processes advertised in the process table, its
//! service offers, and the gossip that spreads both (see [`atoll_data`]).
//!
//! Each period the node tells a few members what it has seen (a digest); each answers
//! with what the other lacks and its own digest, and gets the same back (push-pull, three
//! messages). Deltas spend a byte budget per period. Every few periods one member is
//! picked for a Merkle comparison ([`repair`]), which finds what digests cannot: entries a
//! peer lost after claiming them. A member that was cut off catches up by the same rounds,
//! without a full-state transfer.

pub mod advertise;
pub mod repair;

use std::collections::BTreeMap;

use atoll_core::{NodeId, Pid};
use atoll_data::{
    CrdtGossipState, GossipDelta, GossipDigest, MerkleTree, ProcessAdvertisement,
    ServiceAdvertisement,
};
use serde::{Deserialize, Serialize};

use advertise::Advertised;
use repair::{RepairStep, Table};

/// A message between two members' data planes.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum DataMessage {
    /// Opens a round: what the sender has seen.
    Digest(GossipDigest),
    /// Answers a digest: what its sender lacks, and what this member has seen.
    Answer {
        /// Entries the receiver lacks.
        delta: GossipDelta,
        /// The answering member's digest.
        digest: GossipDigest,
    },
    /// Closes a round: what the answering member lacks.
    Delta(GossipDelta),
    /// A step of Merkle anti-entropy.
    Repair {
        /// The table compared.
        table: Table,
        /// The step.
        step: RepairStep,
    },
}

impl DataMessage {
    /// The message in its wire form.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("data messages are postcard-encodable")
    }

    /// Decodes a message from the network (its size was bounded by the frame).
    pub fn decode(bytes: &[u8]) -> Result<Self, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}

/// How the data plane gossips.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataSettings {
    /// Members told each period.
    pub fanout: usize,
    /// Delta bytes this member may send per period.
    pub budget_bytes: usize,
    /// Periods between two Merkle comparisons.
    pub repair_every: u64,
    /// Periods between two tombstone collections.
    pub collect_every: u64,
    /// Least time between two advertisements of a process whose counters alone changed.
    pub refresh_ms: u64,
}

impl Default for DataSettings {
    fn default() -> Self {
        DataSettings {
            fanout: 3,
            budget_bytes: 256 << 10,
            repair_every: 5,
            collect_every: 10,
            refresh_ms: 5_000,
        }
    }
}

/// What the data plane has done, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataStats {
    /// Deltas sent (answers and closing deltas that carried entries).
    pub deltas_sent: u64,
    /// Bytes of those deltas.
    pub delta_bytes_sent: u64,
    /// Entries applied from deltas.
    pub entries_applied: u64,
    /// Anti-entropy repairs: repair messages that changed this member's tables.
    pub repairs: u64,
    /// Entries applied from repairs.
    pub entries_repaired: u64,
    /// Messages refused as malformed or over the limits.
    pub refused: u64,
    /// Tombstones collected.
    pub tombstones_collected: u64,
}

/// A message to send.
pub type Outgoing = (NodeId, DataMessage);

/// One node's cluster data and its gossip.
#[derive(Debug, Clone)]
pub struct DataPlane {
    me: NodeId,
    state: CrdtGossipState,
    settings: DataSettings,
    /// This node's processes as last advertised.
    advertised: BTreeMap<Pid, Advertised>,
    /// This node's service offers, to withdraw when their process exits.
    offers: BTreeMap<String, ServiceAdvertisement>,
    /// Members declared lost, whose entries are refused until they are back.
    lost: std::collections::BTreeSet<NodeId>,
    /// The latest digest from each member, for collecting tombstones.
    digests: BTreeMap<NodeId, GossipDigest>,
    period: u64,
    /// Delta bytes left this period.
    allowance: usize,
    rng: u64,
    /// Bumped on every change of the tables: cached trees are valid for one version.
    version: u64,
    trees: BTreeMap<(u8, u8), (u64, MerkleTree)>,
    stats: DataStats,
}

impl DataPlane {
    /// An empty plane for node `me`; `seed` picks gossip partners.
    pub fn new(me: NodeId, settings: DataSettings, seed: u64) -> Self {
        DataPlane {
            me,
            state: CrdtGossipState::new(me),
            settings,
            advertised: BTreeMap::new(),
            offers: BTreeMap::new(),
            lost: Default::default(),
            digests: BTreeMap::new(),
            period: 0,
            allowance: settings.budget_bytes,
            rng: seed | 1,
            version: 0,
            trees: BTreeMap::new(),
            stats: DataStats::default(),
        }
    }

    /// The tables.
    pub fn state(&self) -> &CrdtGossipState {
        &self.state
    }

    /// What the plane has done.
    pub fn stats(&self) -> DataStats {
        self.stats
    }

    fn random(&mut self) -> u64 {
        // xorshift64*: partners need spread, not strength.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn pick(&mut self, members: &[NodeId], n: usize) -> Vec<NodeId> {
        let mut others: Vec<NodeId> = members.iter().copied().filter(|m| *m != self.me).collect();
        let mut out = Vec::with_capacity(n.min(others.len()));
        while out.len() < n && !others.is_empty() {
            let i = (self.random() % others.len() as u64) as usize;
            out.push(others.swap_remove(i));
        }
        out
    }

    /// One period: advertises what changed among this node's processes (`local`, as they
    /// are now), opens gossip rounds with a few of `members` (the live members, this node
    /// may be among them), and now and then a Merkle comparison and a tombstone collection.
    pub fn tick(
        &mut self,
        now_ms: u64,
        members: &[NodeId],
        local: &[ProcessAdvertisement],
    ) -> Vec<Outgoing> {
        self.refresh(now_ms, local);
        self.period += 1;
        self.allowance = self.settings.budget_bytes;
        self.digests.retain(|n, _| members.contains(n));
        let mut out = Vec::new();
        let digest = self.state.digest(now_ms);
        for peer in self.pick(members, self.settings.fanout) {
            out.push((peer, DataMessage::Digest(digest.clone())));
        }
        if self
            .period
            .is_multiple_of(self.settings.repair_every.max(1))
            && let Some(peer) = self.pick(members, 1).pop()
        {
            for table in [Table::Processes, Table::Services] {
                let depth = repair::depth_for(self.len(table));
                let root = self.tree(table, depth).root();
                out.push((
                    peer,
                    DataMessage::Repair {
                        table,
                        step: RepairStep::Root(root),
                    },
                ));
            }
        }
        if self
            .period
            .is_multiple_of(self.settings.collect_every.max(1))
        {
            self.collect(members, digest);
        }
        out
    }

    fn len(&self, table: Table) -> usize {
        match table {
            Table::Processes => self.state.processes.map().entries().len(),
            Table::Services => self.state.services.map().entries().len(),
        }
    }

    fn tree(&mut self, table: Table, depth: u8) -> MerkleTree {
        let key = (table as u8, depth);
        if let Some((v, t)) = self.trees.get(&key)
            && *v == self.version
        {
            return t.clone();
        }
        let t = repair::tree(&self.state, table, depth);
        self.trees.insert(key, (self.version, t.clone()));
        t
    }

    /// Collects tombstones once every live member's digest is known.
    fn collect(&mut self, members: &[NodeId], mine: GossipDigest) {
        let mut live = BTreeMap::new();
        live.insert(self.me, mine);
        for m in members.iter().filter(|m| **m != self.me) {
            match self.digests.get(m) {
                Some(d) => live.insert(*m, d.clone()),
                None => return,
            };
        }
        let n = self.state.collect_tombstones(&live);
        if n > 0 {
            self.version += 1;
            self.stats.tombstones_collected += n as u64;
        }
    }

    fn refresh(&mut self, now_ms: u64, local: &[ProcessAdvertisement]) {
        let plan = advertise::plan(&self.advertised, local, now_ms, self.settings.refresh_ms);
        for ad in plan.advertise {
            if ad.pid.node != self.me || self.state.processes.advertise(ad.clone(), now_ms).is_err()
            {
                continue;
            }
            self.advertised
                .insert(ad.pid, Advertised { ad, at_ms: now_ms });
            self.version += 1;
        }
        for pid in plan.withdraw {
            self.state.processes.withdraw(&pid, now_ms);
            self.advertised.remove(&pid);
            self.version += 1;
        }
        // An offer goes with the process serving it.
        let alive: std::collections::BTreeSet<Pid> = local.iter().map(|a| a.pid).collect();
        let orphaned: Vec<Pid> = self
            .offers
            .values()
            .map(|ad| ad.pid)
            .filter(|pid| !alive.contains(pid))
            .collect();
        for pid in orphaned {
            self.process_exited(pid, now_ms);
        }
    }

    /// Offers a service from this node (or updates the offer).
    pub fn advertise_service(
        &mut self,
        ad: ServiceAdvertisement,
        now_ms: u64,
    ) -> Result<(), atoll_data::MergeError> {
        self.state.services.advertise(ad.clone(), now_ms)?;
        self.offers.insert(ad.service.clone(), ad);
        self.version += 1;
        Ok(())
    }

    /// Withdraws this node's offer of `service`; returns whether there was one.
    pub fn withdraw_service(&mut self, service: &str, now_ms: u64) -> bool {
        self.offers.remove(service);
        let had = self.state.services.withdraw(service, now_ms).is_some();
        if had {
            self.version += 1;
        }
        had
    }

    /// Withdraws this node's offers served by `pid` (it exited); returns the services.
    pub fn process_exited(&mut self, pid: Pid, now_ms: u64) -> Vec<String> {
        let gone: Vec<String> = self
            .offers
            .iter()
            .filter(|(_, ad)| ad.pid == pid)
            .map(|(s, _)| s.clone())
            .collect();
        for s in &gone {
            self.withdraw_service(s, now_ms);
        }
        gone
    }

    /// A member was declared lost: its processes and offers are gone, and what it wrote
    /// until now is refused (late copies from others do not bring them back).
    pub fn node_lost(&mut self, node: NodeId) {
        if node == self.me {
            return;
        }
        self.state.forget_node(node);
        self.digests.remove(&node);
        self.lost.insert(node);
        self.version += 1;
    }

    /// A member declared lost is back (a partition healed, or it restarted): its entries
    /// are taken again, all of them asked for in the next rounds.
    pub fn node_back(&mut self, node: NodeId) {
        if self.lost.remove(&node) {
            self.state.readmit_node(node);
            self.version += 1;
        }
    }

    fn delta_within(&mut self, digest: &GossipDigest) -> GossipDelta {
        let delta = self.state.delta_for(digest, self.allowance);
        if !delta.is_empty() {
            let bytes = delta.encode().len();
            self.allowance = self.allowance.saturating_sub(bytes);
            self.stats.deltas_sent += 1;
            self.stats.delta_bytes_sent += bytes as u64;
        }
        delta
    }

    fn merge(&mut self, delta: GossipDelta, now_ms: u64) -> Option<u64> {
        if delta.is_empty() {
            return Some(0);
        }
        match self.state.merge_delta(delta, now_ms) {
            Ok(report) => {
                let applied = report.applied as u64;
                if applied > 0 {
                    self.version += 1;
                }
                Some(applied)
            }
            Err(_) => {
                self.stats.refused += 1;
                None
            }
        }
    }

    /// Handles a message from member `from`; returns the answers.
    pub fn receive(&mut self, from: NodeId, msg: DataMessage, now_ms: u64) -> Vec<Outgoing> {
        if from == self.me {
            return Vec::new();
        }
        match msg {
            DataMessage::Digest(digest) => {
                let delta = self.delta_within(&digest);
                self.digests.insert(from, digest);
                let mine = self.state.digest(now_ms);
                vec![(
                    from,
                    DataMessage::Answer {
                        delta,
                        digest: mine,
                    },
                )]
            }
            DataMessage::Answer { delta, digest } => {
                if let Some(n) = self.merge(delta, now_ms) {
                    self.stats.entries_applied += n;
                }
                let back = self.delta_within(&digest);
                self.digests.insert(from, digest);
                if back.is_empty() {
                    Vec::new()
                } else {
                    vec![(from, DataMessage::Delta(back))]
                }
            }
            DataMessage::Delta(delta) => {
                if let Some(n) = self.merge(delta, now_ms) {
                    self.stats.entries_applied += n;
                }
                Vec::new()
            }
            DataMessage::Repair {
                step: RepairStep::Entries(delta),
                ..
            } => {
                if let Some(n) = self.merge(delta, now_ms)
                    && n > 0
                {
                    self.stats.repairs += 1;
                    self.stats.entries_repaired += n;
                }
                Vec::new()
            }
            DataMessage::Repair { table, step } => {
                let version = self.version;
                let mut built: Vec<(u8, MerkleTree)> = Vec::new();
                let state = &self.state;
                let cache = &self.trees;
                let mut tree_at = |depth: u8| {
                    if let Some((v, t)) = cache.get(&(table as u8, depth))
                        && *v == version
                    {
                        return t.clone();
                    }
                    let t = repair::tree(state, table, depth);
                    built.push((depth, t.clone()));
                    t
                };
                let steps = repair::answer(state, table, step, &mut tree_at);
                for (depth, t) in built {
                    self.trees.insert((table as u8, depth), (version, t));
                }
                steps
                    .into_iter()
                    .map(|step| (from, DataMessage::Repair { table, step }))
                    .collect()
            }
        }
    }
}

#[cfg(test)]
mod tests;
