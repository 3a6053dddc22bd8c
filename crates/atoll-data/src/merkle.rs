//! Merkle anti-entropy: find and repair the differences between two replicas by
//! exchanging O(d·log n) hashes for d differing keys among n, not the whole table.
//!
//! Keys are placed by a 64-bit hash of their encoding; the top `depth` bits pick one of
//! `2^depth` buckets, the leaves of a complete binary tree. Two replicas built at the same
//! depth compare roots ([`compare_tree_roots`]); where they differ, one asks the other for
//! the children of the differing nodes ([`MerkleTree::children`]) and compares them
//! ([`MerkleTree::compare_children`]), level by level, down to the buckets, whose key
//! ranges are then exchanged (each side sends its entries there; merging is
//! last-writer-wins, so that repairs both). Comparison digests are the first 16 bytes of
//! each node's blake3 hash; proofs ([`MerkleProof`]) use whole hashes.

use serde::{Deserialize, Serialize};

use crate::codec::{self, DecodeError};
use crate::lww::LeafSummary;

/// A blake3 hash.
pub type Hash = [u8; 32];

/// The part of a node hash compared during anti-entropy.
pub type NodeDigest = [u8; 16];

/// Deepest tree accepted (2^20 buckets, 64 MiB of node hashes).
pub const MAX_DEPTH: u8 = 20;

/// Largest encoded [`MerkleMessage`] accepted from the network.
pub const MAX_MERKLE_MESSAGE_BYTES: usize = 4 << 20;

const LEAF: u8 = 0;
const BUCKET: u8 = 1;
const NODE: u8 = 2;
const KEY: u8 = 3;

fn hash_parts(tag: u8, parts: &[&[u8]]) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(&[tag]);
    for p in parts {
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p);
    }
    *h.finalize().as_bytes()
}

/// The position of a key: the first 8 bytes of the blake3 hash of its encoding.
pub fn key_hash(key: &[u8]) -> u64 {
    let h = hash_parts(KEY, &[key]);
    u64::from_be_bytes(h[..8].try_into().expect("8 bytes"))
}

/// The hash of one entry (its encoded key and encoded value).
pub fn leaf_hash(key: &[u8], value: &[u8]) -> Hash {
    hash_parts(LEAF, &[key, value])
}

fn bucket_hash(leaves: &[(u64, Hash)]) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(&[BUCKET]);
    h.update(&(leaves.len() as u64).to_le_bytes());
    for (k, l) in leaves {
        h.update(&k.to_be_bytes());
        h.update(l);
    }
    *h.finalize().as_bytes()
}

fn node_hash(left: &Hash, right: &Hash) -> Hash {
    hash_parts(NODE, &[left, right])
}

fn bucket_of(key_hash: u64, depth: u8) -> u64 {
    if depth == 0 {
        0
    } else {
        key_hash >> (64 - u32::from(depth))
    }
}

fn digest(h: &Hash) -> NodeDigest {
    h[..16].try_into().expect("16 bytes")
}

/// An inclusive range of key hashes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub struct KeyRange {
    /// First key hash in the range.
    pub start: u64,
    /// Last key hash in the range.
    pub end: u64,
}

impl KeyRange {
    /// Every key.
    pub const ALL: KeyRange = KeyRange {
        start: 0,
        end: u64::MAX,
    };

    /// True if `key_hash` lies in the range.
    pub fn contains(&self, key_hash: u64) -> bool {
        (self.start..=self.end).contains(&key_hash)
    }

    fn of(node: NodeRef) -> KeyRange {
        if node.level == 0 {
            return KeyRange::ALL;
        }
        let shift = 64 - u32::from(node.level);
        let start = node.index << shift;
        KeyRange {
            start,
            end: start | (u64::MAX >> u32::from(node.level)),
        }
    }
}

/// A node of the tree: `level` 0 is the root, `index < 2^level`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub struct NodeRef {
    /// Distance from the root.
    pub level: u8,
    /// Position within the level, left to right.
    pub index: u64,
}

impl NodeRef {
    /// The root.
    pub const ROOT: NodeRef = NodeRef { level: 0, index: 0 };
}

/// What a replica advertises to start anti-entropy.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct TreeRoot {
    /// The tree's depth (both sides must compare at the same depth).
    pub depth: u8,
    /// The root hash.
    pub hash: Hash,
}

/// The next step of anti-entropy.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum SyncAction {
    /// Nothing differs.
    InSync,
    /// The trees have different depths: both sides rebuild at `depth` and start again.
    Rebuild {
        /// The depth to use.
        depth: u8,
    },
    /// Something differs.
    Repair(SyncPlan),
}

/// Where two trees differ.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct SyncPlan {
    /// Ask the peer for the children of these nodes and compare again.
    pub descend: Vec<NodeRef>,
    /// Key ranges whose entries differ: push ours and pull the peer's.
    pub exchange: Vec<KeyRange>,
}

/// The anti-entropy messages, in their wire form.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum MerkleMessage {
    /// "Here is my root."
    Root(TreeRoot),
    /// "Send me the children of these inner nodes."
    Children(Vec<NodeRef>),
    /// The answer to [`MerkleMessage::Children`]: two digests per node asked, in order.
    Hashes(Vec<NodeDigest>),
    /// "Summarize your entries in these ranges."
    Ranges(Vec<KeyRange>),
    /// The answer to [`MerkleMessage::Ranges`].
    Summaries(Vec<LeafSummary>),
    /// "Send me the entries with these key hashes."
    Pull(Vec<u64>),
}

impl MerkleMessage {
    /// The message in its versioned wire form.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes a message from the network, checking its size first.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let m: MerkleMessage = codec::decode(bytes, MAX_MERKLE_MESSAGE_BYTES)?;
        if let MerkleMessage::Root(r) = &m
            && r.depth > MAX_DEPTH
        {
            return Err(DecodeError::Invalid(format!("depth {}", r.depth)));
        }
        Ok(m)
    }
}

/// Why a peer's tree data was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MerkleError {
    /// A node at the bucket level has no children to ask for.
    #[error("node {level}/{index} is a bucket: it has no children")]
    NoChildren {
        /// Its level.
        level: u8,
        /// Its index.
        index: u64,
    },
    /// The answer does not hold two digests per node asked.
    #[error("{got} digests for {asked} nodes")]
    AnswerLength {
        /// Nodes asked.
        asked: usize,
        /// Digests received.
        got: usize,
    },
    /// A node that does not exist in a tree of this depth.
    #[error("node {level}/{index} is outside a tree of depth {depth}")]
    NoSuchNode {
        /// Its level.
        level: u8,
        /// Its index.
        index: u64,
        /// This tree's depth.
        depth: u8,
    },
}

/// Compares two roots and says what to do next.
///
/// ```
/// use atoll_data::{compare_tree_roots, MerkleTree, SyncAction};
///
/// let a = MerkleTree::build(4, [(b"k".to_vec(), b"1".to_vec())]);
/// let b = MerkleTree::build(4, [(b"k".to_vec(), b"2".to_vec())]);
/// assert_eq!(compare_tree_roots(&a.root(), &a.root()), SyncAction::InSync);
/// assert!(matches!(compare_tree_roots(&a.root(), &b.root()), SyncAction::Repair(_)));
/// ```
pub fn compare_tree_roots(local: &TreeRoot, remote: &TreeRoot) -> SyncAction {
    if local.depth != remote.depth {
        return SyncAction::Rebuild {
            depth: local.depth.max(remote.depth).min(MAX_DEPTH),
        };
    }
    if local.hash == remote.hash {
        return SyncAction::InSync;
    }
    let mut plan = SyncPlan::default();
    if local.depth == 0 {
        plan.exchange.push(KeyRange::ALL);
    } else {
        plan.descend.push(NodeRef::ROOT);
    }
    SyncAction::Repair(plan)
}

/// A Merkle tree over a set of entries.
///
/// ```
/// use atoll_data::MerkleTree;
///
/// let tree = MerkleTree::build(3, (0..20u8).map(|i| (vec![i], vec![i, i])));
/// let proof = tree.prove(&[7]).unwrap();
/// assert!(proof.verify(&tree.root().hash).is_ok());
/// assert!(proof.proves(&[7], &[7, 7]));
/// ```
#[derive(Clone, Debug)]
pub struct MerkleTree {
    depth: u8,
    /// `(key hash, leaf hash)`, sorted.
    leaves: Vec<(u64, Hash)>,
    /// `levels[l]` holds the `2^l` node hashes of level `l`; the last level is the buckets.
    levels: Vec<Vec<Hash>>,
}

impl MerkleTree {
    /// A good depth for about `n` entries: one or two entries per bucket.
    pub fn depth_for(n: usize) -> u8 {
        let bits = usize::BITS - n.max(1).leading_zeros();
        (bits.saturating_sub(1) as u8).min(MAX_DEPTH)
    }

    /// Builds the tree of `(encoded key, encoded value)` pairs at `depth` (at most
    /// [`MAX_DEPTH`]).
    pub fn build(depth: u8, entries: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>) -> Self {
        let depth = depth.min(MAX_DEPTH);
        let mut leaves: Vec<(u64, Hash)> = entries
            .into_iter()
            .map(|(k, v)| (key_hash(&k), leaf_hash(&k, &v)))
            .collect();
        leaves.sort_unstable();
        let buckets = 1usize << depth;
        let mut bottom = Vec::with_capacity(buckets);
        let mut rest = &leaves[..];
        for b in 0..buckets as u64 {
            let n = rest
                .iter()
                .take_while(|l| bucket_of(l.0, depth) == b)
                .count();
            bottom.push(bucket_hash(&rest[..n]));
            rest = &rest[n..];
        }
        let mut levels = vec![bottom];
        while levels[0].len() > 1 {
            let up = levels[0]
                .chunks(2)
                .map(|pair| node_hash(&pair[0], &pair[1]))
                .collect();
            levels.insert(0, up);
        }
        MerkleTree {
            depth,
            leaves,
            levels,
        }
    }

    /// The depth.
    pub fn depth(&self) -> u8 {
        self.depth
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.leaves.len()
    }

    /// True if the tree holds no entry.
    pub fn is_empty(&self) -> bool {
        self.leaves.is_empty()
    }

    /// The root to advertise.
    pub fn root(&self) -> TreeRoot {
        TreeRoot {
            depth: self.depth,
            hash: self.levels[0][0],
        }
    }

    fn hash(&self, node: NodeRef) -> Result<&Hash, MerkleError> {
        self.levels
            .get(usize::from(node.level))
            .and_then(|l| l.get(usize::try_from(node.index).ok()?))
            .ok_or(MerkleError::NoSuchNode {
                level: node.level,
                index: node.index,
                depth: self.depth,
            })
    }

    /// The digests of the two children of each of `nodes`, in order, for a peer that asked
    /// with [`MerkleMessage::Children`].
    pub fn children(&self, nodes: &[NodeRef]) -> Result<Vec<NodeDigest>, MerkleError> {
        let mut out = Vec::with_capacity(nodes.len() * 2);
        for &n in nodes {
            self.hash(n)?;
            if n.level >= self.depth {
                return Err(MerkleError::NoChildren {
                    level: n.level,
                    index: n.index,
                });
            }
            for index in [2 * n.index, 2 * n.index + 1] {
                out.push(digest(self.hash(NodeRef {
                    level: n.level + 1,
                    index,
                })?));
            }
        }
        Ok(out)
    }

    /// Compares the peer's digests of the children of `asked` with ours: differing inner
    /// nodes are to be descended into, differing buckets exchanged (adjacent buckets in
    /// one range).
    pub fn compare_children(
        &self,
        asked: &[NodeRef],
        digests: &[NodeDigest],
    ) -> Result<SyncAction, MerkleError> {
        if digests.len() != asked.len() * 2 {
            return Err(MerkleError::AnswerLength {
                asked: asked.len(),
                got: digests.len(),
            });
        }
        // The nodes asked about come from the peer: each must be an inner node of this
        // tree before its children's indices are computed.
        for &n in asked {
            self.hash(n)?;
            if n.level >= self.depth {
                return Err(MerkleError::NoChildren {
                    level: n.level,
                    index: n.index,
                });
            }
        }
        let mut plan = SyncPlan::default();
        let children = asked.iter().flat_map(|n| {
            [2 * n.index, 2 * n.index + 1].map(|index| NodeRef {
                level: n.level + 1,
                index,
            })
        });
        for (node, remote) in children.zip(digests) {
            if digest(self.hash(node)?) == *remote {
                continue;
            }
            if node.level < self.depth {
                plan.descend.push(node);
                continue;
            }
            let range = KeyRange::of(node);
            match plan.exchange.last_mut() {
                Some(last) if last.end.checked_add(1) == Some(range.start) => last.end = range.end,
                _ => plan.exchange.push(range),
            }
        }
        Ok(if plan.descend.is_empty() && plan.exchange.is_empty() {
            SyncAction::InSync
        } else {
            SyncAction::Repair(plan)
        })
    }

    /// A proof that the entry with encoded key `key` is in this tree, or `None` if it is
    /// not.
    pub fn prove(&self, key: &[u8]) -> Option<MerkleProof> {
        let kh = key_hash(key);
        let index = bucket_of(kh, self.depth);
        let first = self
            .leaves
            .partition_point(|l| bucket_of(l.0, self.depth) < index);
        let n = self.leaves[first..]
            .iter()
            .take_while(|l| bucket_of(l.0, self.depth) == index)
            .count();
        let bucket = self.leaves[first..first + n].to_vec();
        let position = bucket.iter().position(|l| l.0 == kh)?;
        let mut siblings = Vec::with_capacity(usize::from(self.depth));
        let mut i = index;
        for level in (1..=self.depth).rev() {
            siblings.push(self.levels[usize::from(level)][(i ^ 1) as usize]);
            i >>= 1;
        }
        Some(MerkleProof {
            depth: self.depth,
            position,
            bucket,
            siblings,
        })
    }
}

/// Why a proof did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The proof's shape does not fit its depth.
    #[error("malformed proof: {0}")]
    Malformed(&'static str),
    /// The recomputed root is not the expected one.
    #[error("the proof leads to another root")]
    RootMismatch,
}

/// Proof that one entry is in the tree with a given root: its bucket's leaves and the
/// sibling hashes from that bucket up to the root.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct MerkleProof {
    /// The depth of the tree.
    pub depth: u8,
    /// Which leaf of `bucket` is proved.
    pub position: usize,
    /// Every `(key hash, leaf hash)` of the bucket, sorted.
    pub bucket: Vec<(u64, Hash)>,
    /// Sibling hashes from the bucket level up to just below the root.
    pub siblings: Vec<Hash>,
}

impl MerkleProof {
    /// The proved `(key hash, leaf hash)`.
    pub fn leaf(&self) -> Option<(u64, Hash)> {
        self.bucket.get(self.position).copied()
    }

    /// True if this proves the entry `(key, value)` (encoded), without checking a root.
    pub fn proves(&self, key: &[u8], value: &[u8]) -> bool {
        self.leaf() == Some((key_hash(key), leaf_hash(key, value)))
    }

    /// Checks that the proof leads to `root`.
    pub fn verify(&self, root: &Hash) -> Result<(), ProofError> {
        if self.depth > MAX_DEPTH || self.siblings.len() != usize::from(self.depth) {
            return Err(ProofError::Malformed("sibling count"));
        }
        let (kh, _) = self.leaf().ok_or(ProofError::Malformed("position"))?;
        let index = bucket_of(kh, self.depth);
        if self
            .bucket
            .iter()
            .any(|l| bucket_of(l.0, self.depth) != index)
            || self.bucket.windows(2).any(|w| w[0] > w[1])
        {
            return Err(ProofError::Malformed("bucket"));
        }
        let mut h = bucket_hash(&self.bucket);
        let mut i = index;
        for s in &self.siblings {
            h = if i & 1 == 0 {
                node_hash(&h, s)
            } else {
                node_hash(s, &h)
            };
            i >>= 1;
        }
        if &h == root {
            Ok(())
        } else {
            Err(ProofError::RootMismatch)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_compared_for_nodes_outside_the_tree_are_an_error() {
        let tree = MerkleTree::build(3, (0..20u8).map(|i| (vec![i], vec![i])));
        let far = NodeRef {
            level: 2,
            index: u64::MAX,
        };
        assert!(tree.compare_children(&[far], &[[0; 16]; 2]).is_err());
        let bucket = NodeRef { level: 3, index: 0 };
        assert!(tree.compare_children(&[bucket], &[[0; 16]; 2]).is_err());
    }
}
