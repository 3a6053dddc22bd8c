//! Where a new activation goes.

use std::collections::HashMap;

use atoll_cluster::HashRing;
use atoll_core::NodeId;

use crate::Durability;
use crate::core::{GrainId, eligible, place_two_choices};

/// What a placement decision sees: the grain, its type's requirements, the ring over the
/// live members (with the capabilities each announces) and the load per node from the
/// process table.
#[derive(Debug)]
pub struct PlacementView<'a> {
    /// The grain to place.
    pub id: &'a GrainId,
    /// The capabilities its host must announce ([`crate::Grain::REQUIRES`]).
    pub requires: &'a [&'a str],
    /// The placement ring.
    pub ring: &'a HashRing,
    /// The summed load of each node's processes, as last advertised.
    pub load: &'a HashMap<NodeId, u64>,
    /// Where the grain type keeps its state.
    pub durability: Durability,
}

impl PlacementView<'_> {
    /// The nodes that meet the requirements, in ring order for this grain.
    pub fn candidates(&self) -> Vec<NodeId> {
        let nodes = self.ring.nodes();
        let order = self.ring.replicas(&self.id.ring_key(), nodes.len(), None);
        eligible(
            order
                .iter()
                .filter_map(|n| nodes.get(n).map(|r| (*n, &r.capabilities))),
            self.requires,
        )
    }
}

/// Chooses the node that activates a grain nobody holds. Every node may decide differently
/// (views differ for a moment); the activation claim keeps it to one activation anyway.
pub trait Placement: Send + Sync + 'static {
    /// The node to activate on, or `None` if no node fits.
    fn place(&self, view: &PlacementView<'_>) -> Option<NodeId>;
}

/// The default placement: of the ring's eligible candidates for the grain, the less loaded
/// of the first two (the first on a tie). A `LocalExclusive` grain goes to the first
/// candidate, its ring owner, whatever the load: its state is usually on that node's disk
/// (the owner stays the same while membership does), though any node restores it from
/// wherever a migration left it. `Volatile` and `Replicated` grains go by load.
#[derive(Debug, Clone, Copy, Default)]
pub struct TwoChoices;

impl Placement for TwoChoices {
    fn place(&self, view: &PlacementView<'_>) -> Option<NodeId> {
        let candidates = view.candidates();
        match view.durability {
            Durability::LocalExclusive => candidates.first().copied(),
            Durability::Volatile | Durability::Replicated => {
                place_two_choices(&candidates, |n| view.load.get(&n).copied().unwrap_or(0))
            }
        }
    }
}

/// The load a node reports for each of its processes (`ResourceSummary::load`: ten for the
/// process, plus its waiting messages).
pub(crate) const PROCESS_LOAD: u64 = 10;

/// Adds to each node's load from the process table [`PROCESS_LOAD`] for every grain claim
/// the registry shows it holding beyond the activations (`hosts`) the table already lists.
/// The table learns of new activations by gossip, a while after their claims commit; until
/// then every placement would see the same loads and pile new grains onto the same node,
/// while the registry shows each claim at once.
pub(crate) fn with_claims(
    load: &mut HashMap<NodeId, u64>,
    hosts: &HashMap<NodeId, u64>,
    claims: impl IntoIterator<Item = (NodeId, u64)>,
) {
    for (node, claims) in claims {
        let unseen = claims.saturating_sub(hosts.get(&node).copied().unwrap_or(0));
        let l = load.entry(node).or_default();
        *l = l.saturating_add(unseen.saturating_mul(PROCESS_LOAD));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_not_yet_in_the_process_table_count_as_load() {
        let (a, b, c) = (
            NodeId::from_bytes([1; 16]),
            NodeId::from_bytes([2; 16]),
            NodeId::from_bytes([3; 16]),
        );
        // a: the table lists 1 of its 3 activations; b: all of its 2 (and other processes);
        // c: its activation is only in the registry.
        let mut load: HashMap<NodeId, u64> = [(a, 60), (b, 75)].into();
        let hosts: HashMap<NodeId, u64> = [(a, 1), (b, 2)].into();
        with_claims(&mut load, &hosts, [(a, 3), (b, 2), (c, 1)]);
        assert_eq!(load[&a], 80);
        assert_eq!(load[&b], 75);
        assert_eq!(load[&c], 10);
        // Placement then prefers the node with less, counting what gossip has not shown.
        assert_eq!(place_two_choices(&[a, b], |n| load[&n]), Some(b));
    }

    #[test]
    fn two_choices_respects_requirements_and_load() {
        let nodes: Vec<NodeId> = (1..=4).map(|n| NodeId::from_bytes([n; 16])).collect();
        let mut ring = HashRing::new(32);
        for (i, n) in nodes.iter().enumerate() {
            let caps: Vec<&str> = if i % 2 == 0 { vec!["gpu"] } else { vec![] };
            ring.add(*n, 1, caps);
        }
        let id = GrainId::new("t", "k");
        let none = HashMap::new();
        let view = PlacementView {
            id: &id,
            requires: &["gpu"],
            ring: &ring,
            load: &none,
            durability: Durability::Volatile,
        };
        let candidates = view.candidates();
        assert_eq!(candidates.len(), 2);
        assert!(candidates.iter().all(|n| *n == nodes[0] || *n == nodes[2]));
        assert_eq!(TwoChoices.place(&view), Some(candidates[0]));
        // Loaded first candidate: the second wins.
        let load: HashMap<NodeId, u64> = [(candidates[0], 100)].into();
        let view = PlacementView {
            load: &load,
            ..view
        };
        assert_eq!(TwoChoices.place(&view), Some(candidates[1]));
        // State on the owner's disk: the owner, loaded or not.
        let sticky = PlacementView {
            durability: Durability::LocalExclusive,
            ..view
        };
        assert_eq!(TwoChoices.place(&sticky), Some(candidates[0]));
        // Nobody fits.
        let view = PlacementView {
            requires: &["tpu"],
            ..view
        };
        assert_eq!(TwoChoices.place(&view), None);
    }
}
