use std::fmt;

use atoll_core::{ExitReason, Pid};

/// A send that did not reach the mailbox. The message is handed back.
#[derive(thiserror::Error)]
pub enum SendError<M> {
    /// The process has exited (or never existed); nothing was queued.
    #[error("no such process")]
    NoProc(M),
    /// The process's bounded mailbox is full; nothing was queued.
    #[error("mailbox full")]
    Full(M),
    /// The process's node is not connected; nothing was sent.
    #[error("no connection to the process's node")]
    NoConnection(M),
    /// The message could not be encoded for another node; nothing was sent.
    #[error("cannot encode the message: {1}")]
    Unencodable(M, String),
}

impl<M> SendError<M> {
    /// The message that was not delivered.
    pub fn into_inner(self) -> M {
        match self {
            SendError::NoProc(m)
            | SendError::Full(m)
            | SendError::NoConnection(m)
            | SendError::Unencodable(m, _) => m,
        }
    }
}

impl<M> fmt::Debug for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::NoProc(_) => f.write_str("SendError::NoProc(..)"),
            SendError::Full(_) => f.write_str("SendError::Full(..)"),
            SendError::NoConnection(_) => f.write_str("SendError::NoConnection(..)"),
            SendError::Unencodable(_, e) => write!(f, "SendError::Unencodable(.., {e:?})"),
        }
    }
}

/// A message from another node that could not be queued; the sender is not told (as with
/// any send to a remote process), the node logs it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliverError {
    /// No such process here (it exited, or belongs to an earlier incarnation of this node).
    #[error("no such process {0}")]
    NoProc(Pid),
    /// The process was not spawned to accept messages from other nodes.
    #[error("{0} does not accept messages from other nodes")]
    NotRemotable(Pid),
    /// The bytes do not decode as the process's message type.
    #[error("undecodable message: {0}")]
    Decode(String),
    /// The process's bounded mailbox is full.
    #[error("mailbox of {0} is full")]
    Full(Pid),
}

/// A request/reply call that did not produce a reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The process did not exist when the request was sent.
    #[error("no such process")]
    NoProc,
    /// The process's node is not connected.
    #[error("no connection to the process's node")]
    NoConnection,
    /// The request could not be encoded for another node.
    #[error("cannot encode the request: {0}")]
    Unencodable(String),
    /// No reply arrived within the timeout. The request may still be handled later.
    #[error("call timed out")]
    Timeout,
    /// The process dropped the reply handle without answering (it exited or chose not to reply).
    #[error("the process dropped the reply without answering")]
    NoReply,
}

/// Registering a name failed; nothing was registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// Another process already holds the name.
    #[error("name {name:?} is already registered by {owner}")]
    NameTaken {
        /// The name asked for.
        name: String,
        /// The process that holds it.
        owner: Pid,
    },
    /// The process already has a (different) registered name.
    #[error("{pid} is already registered as {name:?}")]
    AlreadyNamed {
        /// The process.
        pid: Pid,
        /// Its current name.
        name: String,
    },
    /// The process is not alive on this runtime.
    #[error("no such process {0}")]
    NoProc(Pid),
}

/// Looking up a typed reference failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// No live process has that name.
    #[error("no process is registered as {0:?}")]
    NotRegistered(String),
    /// No live process has that pid on this runtime.
    #[error("no such process {0}")]
    NoProc(Pid),
    /// The process exists but runs a different actor type.
    #[error("{pid} runs {actual}, not {expected}")]
    WrongType {
        /// The process.
        pid: Pid,
        /// The actor type asked for.
        expected: &'static str,
        /// The actor type it runs.
        actual: &'static str,
    },
}

/// The error an actor callback returns to stop its process with `ExitReason::Error`.
///
/// Anything implementing `std::error::Error` converts with `?`; [`ActorError::msg`] makes one
/// from text.
pub struct ActorError(Box<dyn std::error::Error + Send + Sync + 'static>);

impl ActorError {
    /// An error carrying the given text.
    pub fn msg(text: impl Into<String>) -> Self {
        ActorError(text.into().into())
    }

    /// The exit reason a process stopping with this error exits with.
    pub fn to_reason(&self) -> ExitReason {
        ExitReason::error(self.0.to_string())
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for ActorError {
    fn from(e: E) -> Self {
        ActorError(Box::new(e))
    }
}

impl fmt::Debug for ActorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ActorError({})", self.0)
    }
}

impl fmt::Display for ActorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}
