use std::net::SocketAddr;
use std::sync::Arc;

use atoll_core::NodeId;
use serde::{Deserialize, Serialize};

use crate::error::IdentityError;

/// Longest node name, role or capability, in bytes.
pub const MAX_LABEL_LEN: usize = 64;
/// Most roles plus capabilities one member may carry.
pub const MAX_LABELS: usize = 16;

/// Who a member is, as membership sees it: the node id (proven by the node's key on every
/// connection), a generation that grows on every start and every rejoin, the address to reach
/// it on, and its static metadata.
///
/// Two identities with the same node id are the same machine; the higher generation wins and
/// a lower one is never accepted again.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct Identity {
    /// The node id (derived from the node's public key).
    pub node: NodeId,
    /// Grows with every start and every rejoin after being declared down.
    pub generation: u64,
    /// Where the node accepts connections.
    pub addr: SocketAddr,
    /// Name, roles and capabilities; fixed for a generation.
    pub meta: Arc<MemberMeta>,
}

/// Static metadata a member announces with its identity.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Default, Serialize, Deserialize)]
pub struct MemberMeta {
    /// The node's human name, e.g. `london`.
    pub name: String,
    /// Roles such as `voter`.
    pub roles: Vec<String>,
    /// Capabilities such as `storage_nvme`.
    pub capabilities: Vec<String>,
}

impl MemberMeta {
    /// Metadata with a name and no roles or capabilities.
    pub fn named(name: impl Into<String>) -> Self {
        MemberMeta {
            name: name.into(),
            ..MemberMeta::default()
        }
    }

    /// Checks the sizes that keep every identity small enough for a datagram.
    pub fn validate(&self) -> Result<(), IdentityError> {
        if self.name.is_empty() {
            return Err(IdentityError::EmptyName);
        }
        let labels = self.roles.iter().chain(&self.capabilities);
        if self.roles.len() + self.capabilities.len() > MAX_LABELS {
            return Err(IdentityError::TooManyLabels(MAX_LABELS));
        }
        for label in std::iter::once(&self.name).chain(labels) {
            if label.len() > MAX_LABEL_LEN {
                return Err(IdentityError::LabelTooLong(label.clone(), MAX_LABEL_LEN));
            }
        }
        Ok(())
    }

    /// True when the member carries `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

impl Identity {
    /// A new identity; fails when the metadata is too large for membership packets.
    pub fn new(
        node: NodeId,
        generation: u64,
        addr: SocketAddr,
        meta: MemberMeta,
    ) -> Result<Identity, IdentityError> {
        meta.validate()?;
        Ok(Identity {
            node,
            generation,
            addr,
            meta: Arc::new(meta),
        })
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.meta.name
    }

    /// A placeholder for a node known only by id and address (a seed before it answers).
    /// Generation 0 never wins against a real one.
    pub(crate) fn probe_target(node: NodeId, addr: SocketAddr) -> Identity {
        Identity {
            node,
            generation: 0,
            addr,
            meta: Arc::default(),
        }
    }
}

impl foca::Identity for Identity {
    type Addr = NodeId;

    /// `None`: foca must not rejoin on its own with its old member table (which holds its
    /// own down verdicts and would fence members the rest of the cluster still trusts);
    /// [`Membership`](crate::Membership) rejoins with a fresh one instead.
    fn renew(&self) -> Option<Self> {
        None
    }

    fn addr(&self) -> NodeId {
        self.node
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.generation > adversary.generation
    }
}
