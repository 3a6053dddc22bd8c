//! Merkle anti-entropy between two members, one table at a time, as stateless steps: each
//! answer carries what the next step needs, so neither side keeps a session.
//!
//! The initiator sends its root; the other side (the driver) compares, asks for the
//! children of differing nodes level by level, then for summaries of the differing key
//! ranges, and finally pushes the entries the initiator lacks and pulls those it lacks
//! itself. Only what differs crosses the wire.

use atoll_data::merkle::MAX_DEPTH;
use atoll_data::{
    CrdtGossipState, GossipDelta, KeyRange, LeafSummary, MerkleTree, NodeDigest, NodeRef,
    SyncAction, TreeRoot, compare_tree_roots,
};
use serde::{Deserialize, Serialize};

/// Most tree nodes asked about in one step; what is left over is found by a later session.
pub const MAX_NODES_PER_STEP: usize = 4096;
/// Most key ranges summarized in one step.
pub const MAX_RANGES_PER_STEP: usize = 4096;
/// Most keys pulled in one step.
pub const MAX_PULL_PER_STEP: usize = 16_384;

/// Which table a step is about.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Table {
    /// The process table.
    Processes,
    /// The service registry.
    Services,
}

/// One step of anti-entropy.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum RepairStep {
    /// "Compare with my root."
    Root(TreeRoot),
    /// "Send me the children's digests of these nodes" (in a tree of `depth`).
    Children {
        /// The trees' depth.
        depth: u8,
        /// Inner nodes that differ.
        nodes: Vec<NodeRef>,
    },
    /// The answer to [`RepairStep::Children`], with the question.
    Hashes {
        /// The trees' depth.
        depth: u8,
        /// The nodes asked about.
        nodes: Vec<NodeRef>,
        /// Two digests per node asked, in order.
        digests: Vec<NodeDigest>,
    },
    /// "Summarize your entries in these ranges."
    Ranges(Vec<KeyRange>),
    /// The answer to [`RepairStep::Ranges`], with the question.
    Summaries {
        /// The ranges asked about.
        ranges: Vec<KeyRange>,
        /// One summary per entry there.
        summaries: Vec<LeafSummary>,
    },
    /// "Send me the entries with these key hashes."
    Pull(Vec<u64>),
    /// Entries that repair the receiver's table.
    Entries(GossipDelta),
}

/// The tree of one table at one depth.
pub fn tree(state: &CrdtGossipState, table: Table, depth: u8) -> MerkleTree {
    match table {
        Table::Processes => state.processes.map().merkle_tree(depth),
        Table::Services => state.services.map().merkle_tree(depth),
    }
}

/// The depth both sides use for a table of `len` entries.
pub fn depth_for(len: usize) -> u8 {
    // Buckets of about eight entries: summaries of a differing bucket stay small.
    MerkleTree::depth_for(len / 8)
}

/// The deepest tree this member builds for a peer's step: the depth its own table calls
/// for, or up to 16 times that table's size. A tree of depth d costs 2^d hashes, so a peer
/// cannot make this member build a million-leaf tree for a small table.
pub fn depth_limit(state: &CrdtGossipState, table: Table) -> u8 {
    let len = match table {
        Table::Processes => state.processes.map().entries().len(),
        Table::Services => state.services.map().entries().len(),
    };
    depth_for(len).saturating_add(4).min(MAX_DEPTH)
}

/// Steps to send after a comparison.
fn after_compare(action: SyncAction, depth: u8) -> Vec<RepairStep> {
    let SyncAction::Repair(mut plan) = action else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if !plan.descend.is_empty() {
        plan.descend.truncate(MAX_NODES_PER_STEP);
        out.push(RepairStep::Children {
            depth,
            nodes: plan.descend,
        });
    }
    if !plan.exchange.is_empty() {
        plan.exchange.truncate(MAX_RANGES_PER_STEP);
        out.push(RepairStep::Ranges(plan.exchange));
    }
    out
}

/// What a member answers to a step from a peer. `tree_at` builds (or reuses) this
/// member's tree of the step's table at a depth. A malformed step gets no answer.
pub fn answer(
    state: &CrdtGossipState,
    table: Table,
    step: RepairStep,
    tree_at: &mut dyn FnMut(u8) -> MerkleTree,
) -> Vec<RepairStep> {
    let limit = depth_limit(state, table);
    match step {
        RepairStep::Root(root) if root.depth <= limit => {
            let mine = tree_at(root.depth);
            after_compare(compare_tree_roots(&mine.root(), &root), root.depth)
        }
        RepairStep::Children { depth, nodes }
            if depth <= limit && nodes.len() <= MAX_NODES_PER_STEP =>
        {
            match tree_at(depth).children(&nodes) {
                Ok(digests) => vec![RepairStep::Hashes {
                    depth,
                    nodes,
                    digests,
                }],
                Err(_) => Vec::new(),
            }
        }
        RepairStep::Hashes {
            depth,
            nodes,
            digests,
        } if depth <= limit && nodes.len() <= MAX_NODES_PER_STEP => {
            match tree_at(depth).compare_children(&nodes, &digests) {
                Ok(action) => after_compare(action, depth),
                Err(_) => Vec::new(),
            }
        }
        RepairStep::Ranges(ranges) if ranges.len() <= MAX_RANGES_PER_STEP => {
            let summaries = match table {
                Table::Processes => state.processes.map().summarize(&ranges),
                Table::Services => state.services.map().summarize(&ranges),
            };
            vec![RepairStep::Summaries { ranges, summaries }]
        }
        RepairStep::Summaries { ranges, summaries } if ranges.len() <= MAX_RANGES_PER_STEP => {
            let mut push = GossipDelta::default();
            let mut pull = match table {
                Table::Processes => {
                    let r = state.processes.map().reconcile(&ranges, &summaries);
                    push.processes = r.push;
                    r.pull
                }
                Table::Services => {
                    let r = state.services.map().reconcile(&ranges, &summaries);
                    push.services = r.push;
                    r.pull
                }
            };
            pull.truncate(MAX_PULL_PER_STEP);
            let mut out = Vec::new();
            if !push.is_empty() {
                out.push(RepairStep::Entries(push));
            }
            if !pull.is_empty() {
                out.push(RepairStep::Pull(pull));
            }
            out
        }
        RepairStep::Pull(keys) if keys.len() <= MAX_PULL_PER_STEP => {
            let mut delta = GossipDelta::default();
            match table {
                Table::Processes => delta.processes = state.processes.map().select_keys(&keys),
                Table::Services => delta.services = state.services.map().select_keys(&keys),
            }
            if delta.is_empty() {
                Vec::new()
            } else {
                vec![RepairStep::Entries(delta)]
            }
        }
        // Entries are merged by the caller; anything else is malformed.
        _ => Vec::new(),
    }
}
