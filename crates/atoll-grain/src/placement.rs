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
/// candidate, its ring owner, whatever the load: its state is on that node's disk, and
/// the owner stays the same while membership does. `Volatile` and `Replicated` grains
/// (whose state any node can restore) go by load.
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

#[cfg(test)]
mod tests {
    use super::*;

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
