use std::fmt;

use atoll_actor::SendError;
use atoll_core::{NodeId, Pid, Scope};
use atoll_raft::ConsensusError;
use atoll_wire::RemoteError;

/// A node that could not start; nothing is listening.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The TLS configuration was refused.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The membership identity (name, roles, capabilities) is too large for membership
    /// packets.
    #[error("membership identity: {0}")]
    Membership(#[from] atoll_swim::IdentityError),
    /// The configuration is unusable (see [`NodeConfig::validate`](crate::NodeConfig::validate)).
    #[error("configuration: {0}")]
    Config(#[from] crate::ConfigError),
    /// The new incarnation could not be recorded (and so is not used).
    #[error("cannot record the incarnation: {0}")]
    Incarnation(std::io::Error),
}

/// A connection attempt that failed; nothing was registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// The QUIC/TLS connection failed (unreachable, or the handshake refused a certificate).
    #[error("connection failed: {0}")]
    Connection(String),
    /// The peer's introduction was missing, malformed or did not prove its identity.
    #[error("handshake refused: {0}")]
    Handshake(String),
    /// The peer did not answer within the deadline.
    #[error("timed out")]
    Timeout,
    /// The address is this node's own.
    #[error("the address is this node's own")]
    ToItself,
    /// A host name could not be looked up, or stands for no address.
    #[error("cannot resolve {host}: {reason}")]
    Resolve {
        /// The host name and port.
        host: String,
        /// Why.
        reason: String,
    },
}

/// A send by node and name that did not go out. The message is handed back.
#[derive(thiserror::Error)]
pub enum ClusterSendError<M> {
    /// No connected node, and no live member of the membership, has that name.
    #[error("no connected node or live member is named {node:?}")]
    UnknownNode {
        /// The node name.
        node: String,
        /// The message.
        msg: M,
    },
    /// No process holds that global name.
    #[error("no process is registered globally as {name:?}")]
    NotRegistered {
        /// The name.
        name: String,
        /// The message.
        msg: M,
    },
    /// The send itself failed.
    #[error(transparent)]
    Send(#[from] SendError<M>),
}

impl<M> ClusterSendError<M> {
    /// The message that was not sent.
    pub fn into_inner(self) -> M {
        match self {
            ClusterSendError::UnknownNode { msg, .. }
            | ClusterSendError::NotRegistered { msg, .. } => msg,
            ClusterSendError::Send(e) => e.into_inner(),
        }
    }
}

impl<M> fmt::Debug for ClusterSendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A request to another node that produced no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    /// No connected node has that id or name, and none is known to connect to.
    #[error("unknown node {0}")]
    UnknownNode(String),
    /// The node is not connected and connecting to it failed.
    #[error("cannot connect: {0}")]
    Connect(ConnectError),
    /// The connection went away before the answer came.
    #[error("connection lost")]
    ConnectionLost,
    /// No answer within the deadline.
    #[error("timed out")]
    Timeout,
    /// The arguments could not be encoded.
    #[error("cannot encode the arguments: {0}")]
    Unencodable(String),
    /// The remote node refused the request.
    #[error(transparent)]
    Remote(#[from] RemoteError),
}

/// A datagram that was not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DatagramError {
    /// No connected node has that id.
    #[error("unknown node {0}")]
    UnknownNode(String),
    /// Larger than the connection's current datagram size.
    #[error("datagram larger than the connection carries")]
    TooLarge,
    /// The connection does not carry datagrams now.
    #[error("datagrams unavailable: {0}")]
    Unavailable(String),
}

/// A global registration that was refused; nothing was registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GlobalError {
    /// The name is held by another process.
    #[error("name {name:?} is already registered by {owner}")]
    NameTaken {
        /// The name.
        name: String,
        /// Its holder.
        owner: Pid,
    },
    /// Only processes of this node can be registered from it.
    #[error("{0} is not a live process of this node")]
    NotLocal(Pid),
}

/// A registration or unregistration that was refused or did not complete.
#[derive(Debug, thiserror::Error)]
pub enum NameError {
    /// The name is held by another process; nothing changed.
    #[error("name {name:?} is already registered by {owner}")]
    Taken {
        /// The name.
        name: String,
        /// Its holder.
        owner: Pid,
    },
    /// Only live processes of this node can be registered from it.
    #[error("{0} is not a live process of this node")]
    NotLocal(Pid),
    /// The name is longer than a consensus name may be.
    #[error("name of {len} bytes is longer than {max}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The largest length accepted.
        max: usize,
    },
    /// A Strong registration committed, but these nodes (active members, or this node) did
    /// not apply it within the consensus request timeout; the registration was withdrawn.
    #[error("Strong name {name:?} was not applied in time by {missing:?}; withdrawn")]
    StrongTimeout {
        /// The name.
        name: String,
        /// The nodes that did not acknowledge it, sorted.
        missing: Vec<NodeId>,
    },
    /// The scope is not implemented yet.
    #[error("the {0:?} scope is not supported yet")]
    Unsupported(Scope),
    /// The node was started without consensus, so it has no Consistent names.
    #[error("consensus is not configured on this node")]
    NoConsensus,
    /// The local runtime refused the registration.
    #[error(transparent)]
    Local(atoll_actor::RegisterError),
    /// The process is gone, or is not of the actor type asked for.
    #[error(transparent)]
    Lookup(atoll_actor::LookupError),
    /// Consensus did not complete the request; the error says whether it may have been
    /// applied ([`ConsensusError::Timeout`]) or not.
    #[error(transparent)]
    Consensus(#[from] ConsensusError),
    /// Consensus answered with an outcome that does not fit the request.
    #[error("unexpected consensus outcome: {0}")]
    Unexpected(String),
    /// This node was fenced and the release of what it held then is not applied yet (no
    /// quorum reachable within the consensus request timeout); nothing was proposed.
    #[error("the releases of this node's fencing are not applied yet")]
    Fencing,
}

/// A lock that was not taken or released.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The lock is held by another process.
    #[error("the lock is held by {holder} (token {token})")]
    Busy {
        /// The current holder.
        holder: Pid,
        /// Its grant's fencing token.
        token: u64,
    },
    /// The lock was not released within the timeout.
    #[error("the lock was not free within the timeout")]
    Timeout,
    /// An unlock found that the grant it was to release was no longer the lock's current
    /// grant: it had been released already (the holder's node was declared lost or fenced,
    /// the holder exited, or another guard of the same grant unlocked it), and the lock may
    /// have been granted to another process since. Nothing was released: whoever holds the
    /// lock now keeps it.
    #[error("the grant of lock {name} with token {token} was no longer held{}", held_now(.current))]
    NotHeld {
        /// The lock.
        name: String,
        /// The fencing token of the grant that was to be released.
        token: u64,
        /// The lock's grant (holder, token) when the unlock was applied, if it was held.
        current: Option<(Pid, u64)>,
    },
    /// Only live processes of this node can take locks from it.
    #[error("{0} is not a live process of this node")]
    NotLocal(Pid),
    /// The lock name is longer than a consensus name may be.
    #[error("lock name of {len} bytes is longer than {max}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The largest length accepted.
        max: usize,
    },
    /// The node was started without consensus (or is gone).
    #[error("consensus is not configured on this node")]
    NoConsensus,
    /// Consensus did not complete the request; the error says whether it may have been
    /// applied ([`ConsensusError::Timeout`]) or not.
    #[error(transparent)]
    Consensus(#[from] ConsensusError),
    /// Consensus answered with an outcome that does not fit the request.
    #[error("unexpected consensus outcome: {0}")]
    Unexpected(String),
}

/// The end of [`LockError::NotHeld`]'s message: who held the lock instead.
fn held_now(current: &Option<(Pid, u64)>) -> String {
    match current {
        Some((holder, token)) => format!(" (held by {holder} under token {token})"),
        None => " (the lock was free)".to_string(),
    }
}

/// Why a process could not join a group.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GroupJoinError {
    /// Only live processes of this node join through it.
    #[error("{0} is not a live process of this node")]
    NotLocal(Pid),
    /// The group name is empty or longer than the limit.
    #[error("group name of {0} bytes is not accepted")]
    BadName(usize),
}
