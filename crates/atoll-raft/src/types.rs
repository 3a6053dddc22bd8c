//! The Raft type configuration and the identity of a voter.

use std::fmt;
use std::io::Cursor;

use atoll_core::NodeId;
use serde::{Deserialize, Serialize};

use crate::registry::{Command, Outcome};

/// A node's id inside Raft. openraft wants a small ordered integer; see [`raft_id_of`].
pub type RaftId = u64;

/// The Raft id of an atoll node: the first 8 bytes of its 16-byte [`NodeId`], big-endian.
///
/// Node ids are hashes of public keys, so two voters colliding on 64 bits is as unlikely as a
/// hash collision; the voter set is configured, and [`crate::Consensus::start`] refuses a set
/// with duplicate Raft ids.
pub fn raft_id_of(node: &NodeId) -> RaftId {
    let b = node.as_bytes();
    u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

/// What Raft knows about a member: its atoll identity and where to reach it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// The member's atoll node id.
    pub node_id: NodeId,
    /// The member's socket address, as text (`host:port`).
    pub addr: String,
}

impl Node {
    /// A member at `addr`.
    pub fn new(node_id: NodeId, addr: impl Into<String>) -> Self {
        Node {
            node_id,
            addr: addr.into(),
        }
    }
}

// openraft needs `Default` for its placeholder values; the all-zero id is never a real node.
impl Default for Node {
    fn default() -> Self {
        Node::new(NodeId::from_bytes([0; 16]), String::new())
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.node_id.short(), self.addr)
    }
}

openraft::declare_raft_types!(
    /// The Raft type configuration of atoll: [`Command`] in, [`Outcome`] out, [`RaftId`] ids.
    pub TypeConfig:
        D = Command,
        R = Outcome,
        NodeId = RaftId,
        Node = Node,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = crate::runtime::RaftRuntime,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raft_id_is_the_big_endian_prefix() {
        let mut bytes = [0xffu8; 16];
        bytes[..8].copy_from_slice(&[0, 0, 0, 0, 0, 0, 1, 2]);
        assert_eq!(raft_id_of(&NodeId::from_bytes(bytes)), 0x0102);
    }
}
