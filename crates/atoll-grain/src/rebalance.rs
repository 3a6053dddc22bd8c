//! The periodic step that moves activations off an overloaded node.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use atoll_core::NodeId;
use tracing::debug;

use crate::Grains;
use crate::core::{self, GrainId};

/// When a node sheds activations ([`crate::GrainsConfig::rebalance`]).
///
/// Every `interval`, each node counts the grain activations of every node running a grain
/// service (from the process table) and, if it is the most loaded and holds more than
/// `threshold` more than the least loaded, migrates half the difference there
/// ([`core::rebalance`]). Grains the target cannot host stay; `LocalExclusive` grains move
/// with their state, which lives on the target's disk from then on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rebalance {
    /// How often to look.
    pub interval: Duration,
    /// The largest difference in activations between two nodes left alone.
    pub threshold: usize,
}

impl Default for Rebalance {
    fn default() -> Self {
        Rebalance {
            interval: Duration::from_secs(10),
            threshold: 10,
        }
    }
}

/// Activations per node running a grain service, as the process table shows them.
fn counts(node: &atoll_cluster::Node) -> BTreeMap<NodeId, usize> {
    let mut counts: BTreeMap<NodeId, usize> = node
        .find_by_type("GrainRouter")
        .iter()
        .map(|ad| (ad.pid.node, 0))
        .collect();
    for ad in node.find_by_type("GrainHost") {
        if let Some(n) = counts.get_mut(&ad.pid.node) {
            *n += 1;
        }
    }
    counts
}

/// Starts the periodic step for `grains`; it ends with the service.
pub(crate) fn start(grains: &Grains, rebalance: Rebalance) {
    let shared = Arc::downgrade(&grains.shared);
    let router = grains.router.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(rebalance.interval).await;
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let grains = Grains {
                shared,
                router: router.clone(),
            };
            step(&grains, rebalance.threshold).await;
        }
    });
}

/// The nodes a look weighs: every node that holds activations, and of those that hold
/// none only the ones `can_host` one of this node's grains. A member that runs a grain
/// service only to call grains (no types, no capabilities) holds none and can take none:
/// counted, it would always be the least loaded, every move to it would be refused, and
/// no node would ever shed anything.
fn weighed(
    counts: BTreeMap<NodeId, usize>,
    can_host: impl Fn(NodeId) -> bool,
) -> BTreeMap<NodeId, usize> {
    counts
        .into_iter()
        .filter(|&(n, count)| count > 0 || can_host(n))
        .collect()
}

/// One look: migrates what [`core::rebalance`] says this node should shed.
async fn step(grains: &Grains, threshold: usize) {
    let Some(node) = grains.shared.node.upgrade() else {
        return;
    };
    // This node's own count is exact; the others come from the process table.
    let mut counts = counts(&node);
    counts.insert(grains.shared.me, grains.active().len());
    let requires: Vec<&'static [&'static str]> = {
        let active = grains
            .shared
            .active
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        active.values().map(|h| h.kind().1).collect()
    };
    let me = grains.shared.me;
    let counts = weighed(counts, |n| {
        n == me
            || requires
                .iter()
                .any(|r| crate::migrate::eligible(&node, n, r))
    });
    let Some((target, k)) = core::rebalance(grains.shared.me, &counts, threshold) else {
        return;
    };
    let movable: Vec<GrainId> = {
        let active = grains
            .shared
            .active
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut ids: Vec<(GrainId, &'static [&'static str])> = active
            .iter()
            .map(|(id, h)| (id.clone(), h.kind().1))
            .collect();
        ids.sort();
        ids.into_iter()
            .filter(|(_, requires)| crate::migrate::eligible(&node, target, requires))
            .map(|(id, _)| id)
            .take(k)
            .collect()
    };
    debug!(to = %target, moving = movable.len(), "rebalancing grains");
    for id in movable {
        if let Err(e) = grains.migrate(&id, target).await {
            debug!(grain = %id, "not moved: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(n: u8) -> NodeId {
        NodeId::from_bytes([n; 16])
    }

    #[test]
    fn members_that_only_call_grains_are_no_target() {
        // n1 holds 6, n2 holds 2, n9 only calls grains: n1 sheds to n2, not to n9.
        let counts: BTreeMap<NodeId, usize> = [(node(1), 6), (node(2), 2), (node(9), 0)].into();
        let hosts = |n: NodeId| n != node(9);
        let kept = weighed(counts.clone(), hosts);
        assert_eq!(kept.len(), 2);
        assert_eq!(core::rebalance(node(1), &kept, 2), Some((node(2), 2)));
        // Weighed whole, the caller is the target every time.
        assert_eq!(
            core::rebalance(node(1), &counts, 2).map(|t| t.0),
            Some(node(9))
        );
        // A host that holds nothing yet is a target.
        let counts: BTreeMap<NodeId, usize> = [(node(1), 6), (node(3), 0), (node(9), 0)].into();
        assert_eq!(
            core::rebalance(node(1), &weighed(counts, hosts), 2).map(|t| t.0),
            Some(node(3))
        );
    }
}
