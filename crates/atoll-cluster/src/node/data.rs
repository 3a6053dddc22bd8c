//! Cluster data on the node: the shell around [`DataPlane`]. Once per period it snapshots
//! the node's processes, lets the plane decide what to advertise and whom to gossip with,
//! and sends what the plane says; messages from peers go to the plane and its answers
//! back. The queries (`find_by_type`, `resolve_preferred`, `ring`, ...) read the plane's
//! tables.

use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use atoll_actor::ProcessInfo;
use atoll_core::{NodeId, Pid};
use atoll_data::{
    HashRing, MergeError, ProcessAdvertisement, ProcessStatus, ResourceSummary,
    ServiceAdvertisement,
};
use atoll_swim::MemberEvent;
use atoll_wire::Control;
use tracing::{debug, warn};

use super::{Inner, Node};
use crate::config::DataConfig;
use crate::protocol::data::{DataMessage, DataPlane, DataStats, Outgoing};

/// Points per node on the placement ring (about ±10% spread of keys).
const RING_VNODES: u32 = 128;

/// The node's data plane and what the shell tracks around it.
pub(super) struct DataShell {
    plane: Mutex<DataPlane>,
    period: Duration,
}

impl DataShell {
    pub(super) fn new(me: NodeId, config: &DataConfig, seed: u64) -> Self {
        DataShell {
            plane: Mutex::new(DataPlane::new(me, config.gossip, seed)),
            period: config.period.max(Duration::from_millis(10)),
        }
    }

    fn plane(&self) -> MutexGuard<'_, DataPlane> {
        self.plane.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The agent type a process advertises: its actor type's name without the module path or
/// type parameters (`my_app::Worker<T>` → `Worker`).
pub(crate) fn agent_type(type_name: &str) -> &str {
    let base = type_name.split('<').next().unwrap_or(type_name);
    base.rsplit("::").next().unwrap_or(base)
}

/// What a local process advertises: status from what it is doing and how full its mailbox
/// is, load as ten units for the process plus one per waiting message.
pub(crate) fn advertisement(info: &ProcessInfo) -> ProcessAdvertisement {
    let full = info.mailbox_capacity.is_some_and(|c| info.mailbox_len >= c);
    let status = match info.status {
        atoll_actor::ProcessStatus::Starting => ProcessStatus::Starting,
        atoll_actor::ProcessStatus::Exiting => ProcessStatus::Stopping,
        _ if full => ProcessStatus::Busy,
        _ => ProcessStatus::Running,
    };
    let mailbox_len = u32::try_from(info.mailbox_len).unwrap_or(u32::MAX);
    ProcessAdvertisement {
        pid: info.pid,
        agent_type: agent_type(info.actor_type).to_string(),
        capabilities: info.capabilities.iter().cloned().collect(),
        status,
        resource_summary: ResourceSummary {
            load: mailbox_len.saturating_add(10),
            memory_bytes: 0,
            mailbox_len,
            messages_handled: info.messages_handled,
        },
    }
}

/// Starts the period task.
pub(super) fn start(inner: &Arc<Inner>) {
    tokio::spawn(gossip(Arc::downgrade(inner), inner.data.period));
}

async fn gossip(weak: Weak<Inner>, period: Duration) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = weak.upgrade() else { return };
        if inner.closing.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let local: Vec<ProcessAdvertisement> =
            inner.rt.processes().iter().map(advertisement).collect();
        let members = members(&inner);
        let out = inner
            .data
            .plane()
            .tick(inner.clock.now_ms(), &members, &local);
        send(&inner, out);
    }
}

/// The members to gossip with: the live SWIM members, or without membership the
/// connected peers; this node among them.
fn members(inner: &Inner) -> Vec<NodeId> {
    let mut out = vec![inner.id];
    match inner.swim.get() {
        Some(swim) => out.extend(
            swim.members()
                .into_iter()
                .filter(|m| m.state.is_live())
                .map(|m| m.identity.node),
        ),
        None => out.extend(
            inner
                .peers
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .keys()
                .copied(),
        ),
    }
    out.sort();
    out.dedup();
    out
}

fn send(inner: &Arc<Inner>, out: Vec<Outgoing>) {
    for (to, msg) in out {
        let control = Control::Data(msg.encode());
        if let Some(peer) = inner.peer(to) {
            let _ = peer.send_control(&control);
            continue;
        }
        // A member without a connection yet: open one, then send (gossip tolerates loss).
        let Some(addr) = inner.known_address(to) else {
            continue;
        };
        let weak = Arc::downgrade(inner);
        tokio::spawn(async move {
            let Some(inner) = weak.upgrade() else { return };
            match super::connect::dial(&inner, addr).await {
                Ok(peer) if peer.id == to => {
                    let _ = peer.send_control(&control);
                }
                Ok(_) => {}
                Err(e) => debug!(node = %inner.name, %addr, "no connection for data gossip: {e}"),
            }
        });
    }
}

/// A data message from a peer.
pub(super) fn receive(inner: &Arc<Inner>, from: NodeId, bytes: &[u8]) {
    let msg = match DataMessage::decode(bytes) {
        Ok(m) => m,
        Err(e) => {
            warn!(node = %inner.name, peer = %from, "refused a malformed data message: {e}");
            return;
        }
    };
    let out = inner.data.plane().receive(from, msg, inner.clock.now_ms());
    send(inner, out);
}

/// A member was declared lost (or, without membership, its connection was).
pub(super) fn node_lost(inner: &Inner, node: NodeId) {
    inner.data.plane().node_lost(node);
}

/// A connection to `peer` was set up; without membership that is how a node forgotten
/// when its connection dropped comes back.
pub(super) fn connected(inner: &Inner, peer: NodeId) {
    if inner.swim.get().is_none() {
        inner.data.plane().node_back(peer);
    }
}

/// Membership events that concern the tables.
pub(super) fn member_event(inner: &Inner, event: &MemberEvent) {
    match event {
        MemberEvent::Joined(m) | MemberEvent::Recovered(m) => inner.data.plane().node_back(m.node),
        MemberEvent::Unreachable(m) | MemberEvent::Left(m) => node_lost(inner, m.node),
        _ => {}
    }
}

/// Why a service could not be advertised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// Only a process of this node can serve a service this node offers.
    #[error("{0} is not a process of this node")]
    NotLocal(Pid),
    /// The process is not alive.
    #[error("{0} is not alive")]
    NoProcess(Pid),
    /// The name or metadata breaks a limit.
    #[error(transparent)]
    Invalid(#[from] MergeError),
}

/// Cluster data: the process table, service discovery and the placement ring (SPEC §5).
impl Node {
    /// Every process in the cluster of this agent type (the actor type's name without its
    /// module path), as last advertised.
    pub fn find_by_type(&self, agent_type: &str) -> Vec<ProcessAdvertisement> {
        let plane = self.inner.data.plane();
        plane
            .state()
            .processes
            .find_by_type(agent_type)
            .cloned()
            .collect()
    }

    /// Every process in the cluster that advertises `capability` (spawned with it in
    /// [`atoll_actor::SpawnOptions::capabilities`]).
    pub fn find_by_capability(&self, capability: &str) -> Vec<ProcessAdvertisement> {
        let plane = self.inner.data.plane();
        plane
            .state()
            .processes
            .find_by_capability(capability)
            .cloned()
            .collect()
    }

    /// The node whose processes carry the least load, among those with a process that
    /// advertises `capability` if one is given.
    pub fn least_loaded_node(&self, capability: Option<&str>) -> Option<NodeId> {
        self.inner
            .data
            .plane()
            .state()
            .processes
            .least_loaded_node(capability)
    }

    /// Folds `f` over every process in the cluster as [`Node::cluster_processes`] lists
    /// them, in place: for summaries such as the load per node, which would otherwise copy
    /// the whole table first. `f` runs under the table's lock, so keep it short.
    ///
    /// ```
    /// # fn demo(node: &atoll_cluster::Node) {
    /// let load: u64 = node.fold_cluster_processes(0, |sum, ad| {
    ///     sum + u64::from(ad.resource_summary.load)
    /// });
    /// # }
    /// ```
    pub fn fold_cluster_processes<R>(
        &self,
        init: R,
        f: impl FnMut(R, &ProcessAdvertisement) -> R,
    ) -> R {
        let plane = self.inner.data.plane();
        plane
            .state()
            .processes
            .map()
            .iter()
            .map(|(_, ad)| ad)
            .fold(init, f)
    }

    /// Every process in the cluster, as last advertised (this node's own as of the last
    /// gossip period).
    pub fn cluster_processes(&self) -> Vec<ProcessAdvertisement> {
        self.fold_cluster_processes(Vec::new(), |mut all, ad| {
            all.push(ad.clone());
            all
        })
    }

    /// Offers `service` from this node, served by the local process `pid`, with free-form
    /// `metadata`. The offer goes when the process exits or on
    /// [`withdraw_service`](Self::withdraw_service).
    pub fn advertise_service(
        &self,
        service: &str,
        pid: Pid,
        metadata: std::collections::BTreeMap<String, String>,
    ) -> Result<(), ServiceError> {
        if pid.node != self.inner.id {
            return Err(ServiceError::NotLocal(pid));
        }
        let Some(info) = self.inner.rt.process_info(pid) else {
            return Err(ServiceError::NoProcess(pid));
        };
        let ad = ServiceAdvertisement {
            service: service.to_string(),
            pid,
            load: advertisement(&info).resource_summary.load,
            metadata,
        };
        Ok(self
            .inner
            .data
            .plane()
            .advertise_service(ad, self.inner.clock.now_ms())?)
    }

    /// Withdraws this node's offer of `service`; returns whether there was one.
    pub fn withdraw_service(&self, service: &str) -> bool {
        self.inner
            .data
            .plane()
            .withdraw_service(service, self.inner.clock.now_ms())
    }

    /// The offers of `service`: the one on `node` first if there is one, then the others,
    /// least loaded first.
    pub fn resolve_preferred(&self, service: &str, node: NodeId) -> Vec<ServiceAdvertisement> {
        let plane = self.inner.data.plane();
        plane
            .state()
            .services
            .resolve_preferred(service, node)
            .into_iter()
            .cloned()
            .collect()
    }

    /// Every service offered in the cluster, with its offers (least loaded first).
    pub fn services(&self) -> Vec<(String, Vec<ServiceAdvertisement>)> {
        let plane = self.inner.data.plane();
        let services = &plane.state().services;
        services
            .services()
            .into_iter()
            .map(|s| {
                let offers = services.resolve(s).into_iter().cloned().collect();
                (s.to_string(), offers)
            })
            .collect()
    }

    /// The placement ring over the live members (this node included), each with the
    /// capabilities it announces in membership; without membership, over this node and its
    /// connected peers.
    pub fn ring(&self) -> HashRing {
        let mut ring = HashRing::new(RING_VNODES);
        match self.inner.swim.get() {
            Some(swim) => {
                let me = swim.identity();
                ring.add(me.node, 1, me.meta.capabilities.iter().cloned());
                for m in swim.members().into_iter().filter(|m| m.state.is_live()) {
                    let caps = m.identity.meta.capabilities.iter().cloned();
                    ring.add(m.identity.node, 1, caps);
                }
            }
            None => {
                for node in members(&self.inner) {
                    ring.add(node, 1, std::iter::empty::<String>());
                }
            }
        }
        ring
    }

    /// How many processes of each node the table holds.
    pub fn table_per_node(&self) -> Vec<(NodeId, usize)> {
        let plane = self.inner.data.plane();
        let mut counts: std::collections::BTreeMap<NodeId, usize> = Default::default();
        for (pid, _) in plane.state().processes.map().iter() {
            *counts.entry(pid.node).or_default() += 1;
        }
        counts.into_iter().collect()
    }

    /// The process table's size and what its gossip has done.
    pub fn data_stats(&self) -> (usize, DataStats) {
        let plane = self.inner.data.plane();
        (plane.state().processes.len(), plane.stats())
    }
}

#[cfg(test)]
mod tests {
    use super::agent_type;

    #[test]
    fn agent_types_drop_the_path_and_parameters() {
        assert_eq!(agent_type("my_app::workers::Worker"), "Worker");
        assert_eq!(agent_type("my_app::Cache<alloc::string::String>"), "Cache");
        assert_eq!(agent_type("Plain"), "Plain");
    }
}
