use atoll_core::{NodeId, Pid, Signal};
use serde::{Deserialize, Serialize};

/// What travels on a peer's control stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Control {
    /// The first frame each side sends.
    Hello(Hello),
    /// Sent by the node of a pair that decides which connection between them survives (the
    /// smaller id), after it dialed and read the other side's introduction: it keeps this
    /// connection. The other side uses a connection only once it is kept.
    Kept,
    /// Global registry dissemination.
    Gossip(RegistryGossip),
    /// A request; answered by a [`Control::Response`] with the same id.
    Request {
        /// Correlates the response.
        id: u64,
        /// What is asked.
        body: Request,
    },
    /// The answer to a request.
    Response {
        /// The request's id.
        id: u64,
        /// The answer.
        body: Response,
    },
    /// A Raft voter's committed registry (consensus names and locks), pushed to members so
    /// they resolve names locally. A receiver keeps the one with the highest `applied`.
    Registry(RegistryView),
    /// The sender's own process-group members: all of them, or a change.
    Groups(GroupMessage),
    /// Cluster data gossip (the process table and service registry), encoded by the
    /// node's data plane; its own decoder checks it.
    Data(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The registry entries a Raft voter applied since the index the receiver holds: how
    /// members follow the registry without a whole [`Control::Registry`] per change.
    RegistryDelta(RegistryDelta),
    /// Sent to a voter: the registry index the sender holds (when it connects, or when a
    /// delta did not follow on from what it holds). The voter answers with the entries
    /// since then, or a whole registry if it no longer has them.
    RegistryAt {
        /// The index of the registry the sender resolves from (0: none).
        applied: u64,
    },
}

/// What a node tells its peers about its own process-group members. A receiver accepts
/// only pids of the sender.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupMessage {
    /// The sender's complete membership: replaces whatever was known from it.
    Sync {
        /// Group name and the sender's members in it.
        groups: Vec<(String, Vec<Pid>)>,
    },
    /// Processes of the sender joined a group.
    Join {
        /// The group.
        group: String,
        /// Who joined.
        pids: Vec<Pid>,
    },
    /// Processes of the sender left a group (or exited).
    Leave {
        /// The group.
        group: String,
        /// Who left.
        pids: Vec<Pid>,
    },
}

/// A snapshot of the replicated registry as applied by a Raft voter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryView {
    /// The Raft log index the snapshot reflects.
    pub applied: u64,
    /// The Raft leader the sender knows of (a Raft id), a hint for where to propose.
    pub leader: Option<u64>,
    /// The registry, encoded by the consensus crate (versioned, opaque here).
    #[serde(with = "serde_bytes")]
    pub snapshot: Vec<u8>,
}

/// Registry entries a Raft voter applied after `base` up to `upto`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryDelta {
    /// The index the receiver must hold at least to apply it.
    pub base: u64,
    /// The voter's applied index: what the receiver holds after applying it.
    pub upto: u64,
    /// The Raft leader the sender knows of (a Raft id), a hint for where to propose.
    pub leader: Option<u64>,
    /// The entries, encoded by the consensus crate (opaque here).
    #[serde(with = "serde_bytes")]
    pub entries: Vec<u8>,
}

/// A node introducing itself on a new connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Its human name, e.g. `london`.
    pub node_name: String,
    /// Its id; must match the id its certificate proves.
    pub node_id: NodeId,
    /// Its incarnation.
    pub creation: u32,
    /// The address it accepts connections on, if it accepts any.
    pub listen: Option<String>,
    /// Its Ed25519 public key; `node_id` must be derived from it.
    #[serde(with = "serde_bytes")]
    pub public_key: Vec<u8>,
    /// Its signature over this connection's TLS exporter secret: proves it holds the key,
    /// on this very connection.
    #[serde(with = "serde_bytes")]
    pub proof: Vec<u8>,
}

/// Global names, gossiped between peers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegistryGossip {
    /// Every name the sender's processes own, sent once when a connection comes up.
    Snapshot(Vec<(String, Pid)>),
    /// A name the sender's process just took.
    Registered {
        /// The name.
        name: String,
        /// Its owner.
        pid: Pid,
    },
    /// A name the sender released.
    Unregistered {
        /// The name.
        name: String,
        /// Its former owner.
        pid: Pid,
    },
}

/// Control-plane requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Spawn a process from a registered factory.
    Spawn {
        /// The factory's name.
        factory: String,
        /// Encoded arguments for the factory.
        #[serde(with = "serde_bytes")]
        args: Vec<u8>,
    },
    /// List the live processes.
    Processes,
    /// A Raft message (an encoded consensus request), for the node's Raft voter.
    Raft(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Answer once this node's consensus registry binds `name` to `pid`, or after `wait_ms`
    /// milliseconds (answered with [`Response::NameApplied`]): how a Strong registration
    /// learns that a member applied it.
    AwaitName {
        /// The name.
        name: String,
        /// The process it should be bound to.
        pid: Pid,
        /// The longest the answer may wait, in milliseconds (the node may wait less).
        wait_ms: u64,
    },
    /// Answer once the consensus lock `name` is handed to `holder` by a grant after the one
    /// with token `after`, or is free, or after `wait_ms` milliseconds (answered with
    /// [`Response::LockWait`]): how a waiter on a node without a Raft replica learns of its
    /// turn without waiting for the next registry push.
    AwaitLock {
        /// The lock.
        name: String,
        /// The queued process.
        holder: Pid,
        /// The token of the grant it queued behind.
        after: u64,
        /// The longest the answer may wait, in milliseconds (the node may wait less).
        wait_ms: u64,
    },
}

/// Where a lock waiter stands, as a voter's registry shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockWait {
    /// Handed to the waiter, under this token.
    Granted(u64),
    /// Free (to be asked for again).
    Free,
    /// Still held by someone else.
    Waiting,
}

/// Control-plane responses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The spawned process.
    Spawned(Pid),
    /// The live processes.
    Processes(Vec<ProcessInfoWire>),
    /// The request failed.
    Error(RemoteError),
    /// The answer to [`Request::Raft`] (an encoded consensus response).
    Raft(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The answer to [`Request::AwaitName`]: the index of the registry this node resolves
    /// from once it binds the name to the pid, `None` if it did not within the wait.
    NameApplied(Option<u64>),
    /// The answer to [`Request::AwaitLock`].
    LockWait(LockWait),
}

/// Why a request failed on the remote node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RemoteError {
    /// No factory is registered under that name.
    #[error("no spawnable factory named {0:?}")]
    UnknownFactory(String),
    /// The factory refused its arguments.
    #[error("bad arguments: {0}")]
    BadArgs(String),
}

/// A process's introspection data as sent to a peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfoWire {
    /// Its pid.
    pub pid: Pid,
    /// Its registered name.
    pub name: Option<String>,
    /// Its actor type.
    pub actor_type: String,
    /// Messages waiting.
    pub mailbox_len: u64,
    /// What it is doing.
    pub status: StatusWire,
    /// Milliseconds since it was spawned.
    pub uptime_ms: u64,
    /// Messages handled.
    pub messages_handled: u64,
    /// Whether it traps exits.
    pub trap_exit: bool,
    /// Linked processes.
    pub links: Vec<Pid>,
    /// Processes it monitors.
    pub monitors: Vec<Pid>,
    /// Processes monitoring it.
    pub monitored_by: Vec<Pid>,
}

/// A process status on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StatusWire {
    /// In its `started` callback.
    Starting,
    /// Handling a message.
    Running,
    /// Waiting for mail.
    Waiting,
    /// Exiting.
    Exiting,
}

/// What travels on message streams: user messages, replies and signals, all addressed to
/// one process (so everything for one process can share one ordered stream).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Data {
    /// A user message for a process.
    Send {
        /// The receiving process.
        to: Pid,
        /// The message, encoded by the sender with the receiver's message type.
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    },
    /// A user message for a process registered under a global name on the receiving node.
    SendNamed {
        /// The name.
        name: String,
        /// The encoded message.
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    },
    /// The answer to a call whose reply handle travelled to the sending node.
    Reply {
        /// The pending call on the receiving node.
        call: u64,
        /// The encoded answer.
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    },
    /// An exit or monitor signal.
    Signal(Signal),
    /// Stands in a message stream for a large frame that travels on the connection's bulk
    /// stream: what follows it for the same stream key waits until that frame has arrived,
    /// so the key's order holds while small frames of other keys are not stuck behind it.
    BulkMark {
        /// Which of the connection's bulk streams carries it.
        lane: u32,
        /// The large frame's position on that bulk stream (0 for its first frame).
        seq: u64,
        /// The stream key of the frames that must wait for it.
        key: u64,
    },
    /// The first frame on a connection's bulk stream, telling the receiver which it is.
    BulkLane {
        /// The bulk stream's number, as marks name it.
        lane: u32,
    },
}

/// A [`Data`] envelope decoded in place: payloads and names borrow from the frame, so the
/// receive path copies a message's bytes only once, into the receiving process's type.
/// Encodes exactly like [`Data`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub enum DataRef<'a> {
    /// See [`Data::Send`].
    Send {
        /// The receiving process.
        to: Pid,
        /// The encoded message.
        #[serde(borrow)]
        payload: &'a [u8],
    },
    /// See [`Data::SendNamed`].
    SendNamed {
        /// The name.
        #[serde(borrow)]
        name: &'a str,
        /// The encoded message.
        #[serde(borrow)]
        payload: &'a [u8],
    },
    /// See [`Data::Reply`].
    Reply {
        /// The pending call.
        call: u64,
        /// The encoded answer.
        #[serde(borrow)]
        payload: &'a [u8],
    },
    /// See [`Data::Signal`].
    Signal(Signal),
    /// See [`Data::BulkMark`].
    BulkMark {
        /// Which bulk stream carries it.
        lane: u32,
        /// The large frame's position on that bulk stream.
        seq: u64,
        /// The stream key of the frames that wait for it.
        key: u64,
    },
    /// See [`Data::BulkLane`].
    BulkLane {
        /// The bulk stream's number.
        lane: u32,
    },
}
