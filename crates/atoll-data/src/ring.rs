//! A consistent hash ring with virtual nodes, weights and capability filters, for
//! placement.
//!
//! Each node owns `weight × vnodes` points on a 64-bit ring; a key belongs to the first
//! point at or after its hash, skipping nodes that lack a required capability. Adding a
//! node moves to it only the keys that now land on its points (about `K·w/W` of `K` keys
//! for weight `w` of total `W`); removing one moves only its own keys; nothing else moves.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use atoll_core::NodeId;

/// Most points one node may own (weight × virtual nodes), to bound memory.
pub const MAX_POINTS_PER_NODE: u64 = 1 << 16;

/// A member of the ring.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct RingNode {
    /// Relative share of keys; 0 takes the node out of placement.
    pub weight: u32,
    /// What it offers, for [`HashRing::locate_with`].
    pub capabilities: BTreeSet<String>,
}

/// A consistent hash ring.
///
/// ```
/// use atoll_core::NodeId;
/// use atoll_data::HashRing;
///
/// let n = |b| NodeId::from_bytes([b; 16]);
/// let mut ring = HashRing::new(64);
/// ring.add(n(1), 1, ["ssd"]);
/// ring.add(n(2), 1, ["gpu"]);
/// assert!(ring.locate(b"user/42").is_some());
/// assert_eq!(ring.locate_with(b"user/42", "gpu"), Some(n(2)));
/// assert_eq!(ring.locate_with(b"user/42", "tpu"), None);
/// ```
#[derive(Clone, Debug)]
pub struct HashRing {
    vnodes: u32,
    nodes: BTreeMap<NodeId, RingNode>,
    points: BTreeSet<(u64, NodeId)>,
}

fn point(node: NodeId, i: u64) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(b"atoll ring point");
    h.update(node.as_bytes());
    h.update(&i.to_le_bytes());
    u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().expect("8 bytes"))
}

/// Where `key` lies on the ring.
pub fn ring_hash(key: &[u8]) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(b"atoll ring key");
    h.update(key);
    u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().expect("8 bytes"))
}

impl HashRing {
    /// An empty ring with `vnodes` points per unit of weight (100–200 keeps shares within
    /// about ±10%).
    pub fn new(vnodes: u32) -> Self {
        HashRing {
            vnodes: vnodes.max(1),
            nodes: BTreeMap::new(),
            points: BTreeSet::new(),
        }
    }

    fn count(&self, weight: u32) -> u64 {
        (u64::from(weight) * u64::from(self.vnodes)).min(MAX_POINTS_PER_NODE)
    }

    /// Adds `node` (or replaces its weight and capabilities).
    pub fn add<S: Into<String>>(
        &mut self,
        node: NodeId,
        weight: u32,
        capabilities: impl IntoIterator<Item = S>,
    ) {
        self.remove(node);
        for i in 0..self.count(weight) {
            self.points.insert((point(node, i), node));
        }
        self.nodes.insert(
            node,
            RingNode {
                weight,
                capabilities: capabilities.into_iter().map(Into::into).collect(),
            },
        );
    }

    /// Removes `node`; returns whether it was there.
    pub fn remove(&mut self, node: NodeId) -> bool {
        let Some(old) = self.nodes.remove(&node) else {
            return false;
        };
        for i in 0..self.count(old.weight) {
            self.points.remove(&(point(node, i), node));
        }
        true
    }

    /// The members, in node order.
    pub fn nodes(&self) -> &BTreeMap<NodeId, RingNode> {
        &self.nodes
    }

    /// Number of points on the ring.
    pub fn points(&self) -> usize {
        self.points.len()
    }

    /// Points clockwise from `key`'s position, once around.
    fn walk(&self, key: &[u8]) -> impl Iterator<Item = NodeId> + '_ {
        let h = ring_hash(key);
        let start = (
            Bound::Included((h, NodeId::from_bytes([0; 16]))),
            Bound::Unbounded,
        );
        self.points
            .range(start)
            .chain(self.points.range(..(h, NodeId::from_bytes([0; 16]))))
            .map(|(_, n)| *n)
    }

    /// The node that owns `key`.
    pub fn locate(&self, key: &[u8]) -> Option<NodeId> {
        self.walk(key).next()
    }

    /// The node that owns `key` among those with `capability`.
    pub fn locate_with(&self, key: &[u8], capability: &str) -> Option<NodeId> {
        self.replicas(key, 1, Some(capability)).into_iter().next()
    }

    /// Up to `n` distinct nodes for `key` (with `capability`, if given), in ring order:
    /// the owner, then the nodes that would own it if those before failed.
    pub fn replicas(&self, key: &[u8], n: usize, capability: Option<&str>) -> Vec<NodeId> {
        let eligible: BTreeSet<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, r)| r.weight > 0 && capability.is_none_or(|c| r.capabilities.contains(c)))
            .map(|(id, _)| *id)
            .collect();
        let want = n.min(eligible.len());
        let mut out = Vec::with_capacity(want);
        if want == 0 {
            return out;
        }
        for node in self.walk(key) {
            if eligible.contains(&node) && !out.contains(&node) {
                out.push(node);
                if out.len() == want {
                    break;
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use atoll_core::SplitMix64;

    fn node(rng: &mut SplitMix64) -> NodeId {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
        b[8..].copy_from_slice(&rng.next_u64().to_le_bytes());
        NodeId::from_bytes(b)
    }

    fn keys(k: usize) -> Vec<Vec<u8>> {
        (0..k).map(|i| format!("key-{i}").into_bytes()).collect()
    }

    fn owners(ring: &HashRing, keys: &[Vec<u8>]) -> Vec<NodeId> {
        keys.iter().map(|k| ring.locate(k).unwrap()).collect()
    }

    #[test]
    fn a_join_or_leave_moves_only_its_keys_and_about_k_over_n() {
        const K: usize = 4_000;
        let keys = keys(K);
        let mut rng = SplitMix64::new(11);
        let mut ratios = Vec::new();
        for trial in 0..40 {
            let n = 3 + (rng.next_u64() % 30) as usize;
            let mut ring = HashRing::new(160);
            for _ in 0..n {
                ring.add(node(&mut rng), 1, Vec::<String>::new());
            }
            let before = owners(&ring, &keys);
            let newcomer = node(&mut rng);
            ring.add(newcomer, 1, Vec::<String>::new());
            let after = owners(&ring, &keys);
            let moved: Vec<usize> = (0..K).filter(|&i| before[i] != after[i]).collect();
            // Only keys the newcomer now owns moved, and nothing moved between old nodes.
            assert!(moved.iter().all(|&i| after[i] == newcomer), "trial {trial}");
            let ideal = K as f64 / (n + 1) as f64;
            ratios.push(moved.len() as f64 / ideal);
            assert!(
                moved.len() as f64 <= 1.6 * ideal,
                "trial {trial}: {} > {ideal}",
                moved.len()
            );
            // Leaving again restores every key to its old owner.
            ring.remove(newcomer);
            assert_eq!(owners(&ring, &keys), before, "trial {trial}");
        }
        let mean = ratios.iter().sum::<f64>() / ratios.len() as f64;
        assert!((0.8..=1.2).contains(&mean), "mean moved/ideal {mean}");
    }

    #[test]
    fn weights_set_the_share() {
        let mut rng = SplitMix64::new(3);
        let (light, heavy) = (node(&mut rng), node(&mut rng));
        let mut ring = HashRing::new(200);
        ring.add(light, 1, Vec::<String>::new());
        ring.add(heavy, 3, Vec::<String>::new());
        let keys = keys(20_000);
        let on_heavy = owners(&ring, &keys).iter().filter(|n| **n == heavy).count();
        let share = on_heavy as f64 / keys.len() as f64;
        assert!((0.68..=0.82).contains(&share), "heavy share {share}");
        ring.add(heavy, 0, Vec::<String>::new());
        assert!(
            owners(&ring, &keys).iter().all(|n| *n == light),
            "weight 0 takes none"
        );
    }

    #[test]
    fn the_capability_filter_is_respected_and_consistent() {
        let mut rng = SplitMix64::new(5);
        let mut ring = HashRing::new(100);
        let gpus: Vec<NodeId> = (0..3).map(|_| node(&mut rng)).collect();
        for g in &gpus {
            ring.add(*g, 1, ["gpu", "ssd"]);
        }
        for _ in 0..7 {
            ring.add(node(&mut rng), 1, ["ssd"]);
        }
        let keys = keys(2_000);
        let before: Vec<NodeId> = keys
            .iter()
            .map(|k| ring.locate_with(k, "gpu").unwrap())
            .collect();
        assert!(before.iter().all(|n| gpus.contains(n)));
        // A node without the capability joining moves no gpu placement.
        ring.add(node(&mut rng), 1, ["ssd"]);
        let after: Vec<NodeId> = keys
            .iter()
            .map(|k| ring.locate_with(k, "gpu").unwrap())
            .collect();
        assert_eq!(before, after);
        let r = ring.replicas(b"x", 5, Some("gpu"));
        assert_eq!(r.len(), 3);
        assert_eq!(r.iter().collect::<BTreeSet<_>>().len(), 3);
        assert_eq!(ring.replicas(b"x", 20, None).len(), 11);
        assert_eq!(ring.locate_with(b"x", "tpu"), None);
        assert_eq!(HashRing::new(10).locate(b"x"), None);
    }
}
