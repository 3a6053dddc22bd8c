use std::fmt;
use std::str::FromStr;

/// A node's identity: 16 bytes, derived from its public key once nodes have keys
/// (`hex(SHAKE-256(public_key)[0..16])`). Shown as 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct NodeId([u8; 16]);

impl NodeId {
    /// Wraps raw id bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        NodeId(bytes)
    }

    /// The raw id bytes.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// The first 8 hex digits, enough to tell nodes apart in logs and listings.
    pub fn short(&self) -> String {
        self.to_string()[..8].to_string()
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

/// Why a string is not a node id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a node id is 32 hex digits, got {input:?}")]
pub struct ParseNodeIdError {
    /// The rejected text.
    pub input: String,
}

impl FromStr for NodeId {
    type Err = ParseNodeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseNodeIdError {
            input: s.to_string(),
        };
        if s.len() != 32 || !s.is_ascii() {
            return Err(err());
        }
        let mut bytes = [0u8; 16];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| err())?;
        }
        Ok(NodeId(bytes))
    }
}

/// A process id, unique across the cluster and across restarts of a node.
///
/// `creation` changes every time a node starts, so a pid of an earlier incarnation never
/// reaches a process of a later one. Serial 0 on each node stands for the node itself
/// (signals sent from outside any process carry it).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Pid {
    /// The node the process runs on.
    pub node: NodeId,
    /// The incarnation of that node.
    pub creation: u32,
    /// The process's number on that node incarnation.
    pub serial: u64,
}

impl Pid {
    /// Builds a pid from its parts.
    pub const fn new(node: NodeId, creation: u32, serial: u64) -> Self {
        Pid {
            node,
            creation,
            serial,
        }
    }

    /// True for the pid that stands for the node itself rather than a process.
    pub const fn is_node(&self) -> bool {
        self.serial == 0
    }
}

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.node.as_bytes();
        write!(
            f,
            "<{:02x}{:02x}{:02x}{:02x}.{}.{}>",
            b[0], b[1], b[2], b[3], self.creation, self.serial
        )
    }
}

/// The four naming scopes, strictly ordered by the strength of their guarantee.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Scope {
    /// This node only: instant, no coordination.
    Local,
    /// Cluster-wide by gossip; conflicts resolve deterministically.
    Eventual,
    /// Cluster-wide linearizable singleton through consensus.
    Consistent,
    /// Consistent, and active only once every live node has applied it.
    Strong,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn node_id_text_round_trips(bytes in any::<[u8; 16]>()) {
            let id = NodeId::from_bytes(bytes);
            prop_assert_eq!(id.to_string().parse::<NodeId>().unwrap(), id);
        }

        #[test]
        fn node_id_parse_never_panics(s in ".{0,40}") {
            let _ = s.parse::<NodeId>();
        }
    }

    #[test]
    fn bad_node_ids_are_rejected() {
        assert!("abc".parse::<NodeId>().is_err());
        assert!("zz".repeat(16).parse::<NodeId>().is_err());
        assert!("é".repeat(16).parse::<NodeId>().is_err());
    }

    #[test]
    fn pid_display_is_short_and_stable() {
        let pid = Pid::new(NodeId::from_bytes([0xab; 16]), 3, 17);
        assert_eq!(pid.to_string(), "<abababab.3.17>");
        assert!(Pid::new(pid.node, 3, 0).is_node());
    }

    #[test]
    fn scopes_are_ordered() {
        assert!(Scope::Local < Scope::Eventual);
        assert!(Scope::Eventual < Scope::Consistent);
        assert!(Scope::Consistent < Scope::Strong);
    }
}
