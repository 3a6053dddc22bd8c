//! The network seam: Raft RPCs as postcard bodies over any request/response
//! [`RaftTransport`].
//!
//! A node sends a [`RaftRequest`] body to a Raft id and gets a [`RaftResponse`] body back. The
//! receiving node hands the body to [`crate::Consensus::handle`]. Besides the three Raft RPCs,
//! the same channel carries proposals forwarded by followers to the leader and read-index
//! requests for linearizable reads.

use std::future::Future;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};

use crate::registry::{Command, Outcome};
use crate::types::{Node, RaftId, TypeConfig};

/// Sending a request to another Raft node failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// No route to the node (unknown, disconnected, or shut down): the request was not
    /// delivered, so sending it again cannot apply it twice.
    #[error("raft node {0} is unreachable")]
    Unreachable(RaftId),
    /// The exchange started but failed: the request may or may not have taken effect.
    #[error("request to raft node {target} failed: {reason}")]
    Failed {
        /// The node addressed.
        target: RaftId,
        /// What went wrong.
        reason: String,
    },
}

/// Carries request bodies between Raft nodes. The real implementation runs over atoll's QUIC
/// connections; [`crate::memory::MemRouter`] connects nodes inside one process for tests.
///
/// An implementation delivers `body` to node `target`, which answers with the body returned
/// by its [`crate::Consensus::handle`]. It need not retry: Raft retries on its own.
pub trait RaftTransport: Clone + Send + Sync + 'static {
    /// Sends `body` to `target` and waits for its response body.
    fn call(
        &self,
        target: RaftId,
        body: Vec<u8>,
    ) -> impl Future<Output = Result<Vec<u8>, TransportError>> + Send;
}

/// A request between Raft nodes.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftRequest {
    /// Raft AppendEntries (replication and heartbeats).
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    /// Raft RequestVote.
    Vote(VoteRequest<RaftId>),
    /// One chunk of a Raft InstallSnapshot.
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// A command proposed at a follower, forwarded to the node it believes leads.
    Propose(Command),
    /// Asks the leader for the log position a linearizable read must wait for.
    ReadIndex,
}

/// Why the leader side refused a forwarded proposal or read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    /// The addressed node does not lead; `leader` is its hint.
    #[error("not the leader (hint: {leader:?})")]
    NotLeader {
        /// The leader it knows of, if any.
        leader: Option<RaftId>,
    },
    /// The leader could not confirm its leadership with a quorum.
    #[error("no quorum")]
    NoQuorum,
    /// The leader accepted the command but gave up waiting for it to commit: the outcome is
    /// unknown.
    #[error("undecided")]
    Undecided,
    /// The node's Raft has stopped.
    #[error("raft stopped: {0}")]
    Stopped(String),
    /// The voter holds the node the command claims for as declared down: that node must
    /// rejoin (as a new generation) before it claims anything, or its claims would outlive
    /// the release of what it held.
    #[error("the claiming node is declared down; it must rejoin first")]
    ClaimantDown,
}

/// A response between Raft nodes, matching the [`RaftRequest`] variant.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftResponse {
    /// Answer to [`RaftRequest::AppendEntries`].
    AppendEntries(Result<AppendEntriesResponse<RaftId>, RaftError<RaftId>>),
    /// Answer to [`RaftRequest::Vote`].
    Vote(Result<VoteResponse<RaftId>, RaftError<RaftId>>),
    /// Answer to [`RaftRequest::InstallSnapshot`].
    InstallSnapshot(
        Result<InstallSnapshotResponse<RaftId>, RaftError<RaftId, InstallSnapshotError>>,
    ),
    /// Answer to [`RaftRequest::Propose`]: the outcome once applied on the leader.
    Propose(Result<Outcome, Refusal>),
    /// Answer to [`RaftRequest::ReadIndex`]: the log index to wait for locally.
    ReadIndex(Result<Option<u64>, Refusal>),
    /// The request body did not decode.
    Malformed(String),
}

/// Encodes a message for the wire.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    // Raft messages hold only plain data; postcard cannot fail to encode them into a Vec.
    postcard::to_stdvec(msg).unwrap_or_default()
}

/// Decodes a message from the wire.
pub fn decode<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, postcard::Error> {
    postcard::from_bytes(body)
}

/// Builds openraft network clients over a [`RaftTransport`].
#[derive(Clone, Debug)]
pub struct NetworkFactory<T> {
    id: RaftId,
    transport: T,
}

impl<T: RaftTransport> NetworkFactory<T> {
    /// Clients for node `id`, sending over `transport`.
    pub fn new(id: RaftId, transport: T) -> Self {
        NetworkFactory { id, transport }
    }
}

impl<T: RaftTransport + std::fmt::Debug> RaftNetworkFactory<TypeConfig> for NetworkFactory<T> {
    type Network = Network<T>;

    async fn new_client(&mut self, target: RaftId, _node: &Node) -> Self::Network {
        Network {
            id: self.id,
            target,
            transport: self.transport.clone(),
        }
    }
}

/// An openraft client for one target node.
#[derive(Debug)]
pub struct Network<T> {
    id: RaftId,
    target: RaftId,
    transport: T,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct WireError(String);

impl<T: RaftTransport> Network<T> {
    async fn exchange<E: std::error::Error>(
        &self,
        action: RPCTypes,
        request: &RaftRequest,
        ttl: Duration,
    ) -> Result<RaftResponse, RPCError<RaftId, Node, E>> {
        let call = self.transport.call(self.target, encode(request));
        let body = match tokio::time::timeout(ttl, call).await {
            Err(_) => {
                return Err(RPCError::Timeout(Timeout {
                    action,
                    id: self.id,
                    target: self.target,
                    timeout: ttl,
                }));
            }
            Ok(Err(e @ TransportError::Unreachable(_))) => {
                return Err(RPCError::Unreachable(Unreachable::new(&e)));
            }
            Ok(Err(e)) => return Err(RPCError::Network(NetworkError::new(&e))),
            Ok(Ok(body)) => body,
        };
        decode(&body).map_err(|e| RPCError::Network(NetworkError::new(&e)))
    }

    fn unexpected<E: std::error::Error>(response: &RaftResponse) -> RPCError<RaftId, Node, E> {
        let e = WireError(format!("unexpected response: {response:?}"));
        RPCError::Network(NetworkError::new(&e))
    }

    fn remote<E: std::error::Error>(&self, e: E) -> RPCError<RaftId, Node, E> {
        RPCError::RemoteError(RemoteError::new(self.target, e))
    }
}

impl<T: RaftTransport> RaftNetwork<TypeConfig> for Network<T> {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<RaftId>, RPCError<RaftId, Node, RaftError<RaftId>>> {
        let request = RaftRequest::AppendEntries(rpc);
        match self
            .exchange(RPCTypes::AppendEntries, &request, option.hard_ttl())
            .await?
        {
            RaftResponse::AppendEntries(r) => r.map_err(|e| self.remote(e)),
            other => Err(Self::unexpected(&other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<RaftId>,
        RPCError<RaftId, Node, RaftError<RaftId, InstallSnapshotError>>,
    > {
        let request = RaftRequest::InstallSnapshot(rpc);
        match self
            .exchange(RPCTypes::InstallSnapshot, &request, option.hard_ttl())
            .await?
        {
            RaftResponse::InstallSnapshot(r) => r.map_err(|e| self.remote(e)),
            other => Err(Self::unexpected(&other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<RaftId>,
        option: RPCOption,
    ) -> Result<VoteResponse<RaftId>, RPCError<RaftId, Node, RaftError<RaftId>>> {
        let request = RaftRequest::Vote(rpc);
        match self
            .exchange(RPCTypes::Vote, &request, option.hard_ttl())
            .await?
        {
            RaftResponse::Vote(r) => r.map_err(|e| self.remote(e)),
            other => Err(Self::unexpected(&other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Vote};

    use super::*;

    #[test]
    fn raft_messages_round_trip_through_postcard() {
        let vote = Vote::new_committed(3, 1);
        let entry = Entry::<TypeConfig> {
            log_id: LogId::new(CommittedLeaderId::new(3, 1), 7),
            payload: EntryPayload::Normal(Command::SetConfig {
                key: "k".into(),
                value: "v".into(),
            }),
        };
        let request = RaftRequest::AppendEntries(AppendEntriesRequest {
            vote,
            prev_log_id: Some(LogId::new(CommittedLeaderId::new(2, 1), 6)),
            entries: vec![entry.clone()],
            leader_commit: None,
        });
        let RaftRequest::AppendEntries(back) = decode(&encode(&request)).expect("decodes") else {
            panic!("wrong variant");
        };
        assert_eq!(back.entries, vec![entry]);
        assert_eq!(back.vote, vote);

        let response = RaftResponse::Vote(Ok(VoteResponse::new(vote, None, true)));
        let back: RaftResponse = decode(&encode(&response)).expect("decodes");
        assert!(matches!(back, RaftResponse::Vote(Ok(r)) if r.vote_granted));

        let refused = RaftResponse::Propose(Err(Refusal::NotLeader { leader: Some(2) }));
        let back: RaftResponse = decode(&encode(&refused)).expect("decodes");
        assert!(matches!(
            back,
            RaftResponse::Propose(Err(Refusal::NotLeader { leader: Some(2) }))
        ));
        assert!(decode::<RaftRequest>(&[0xff, 0xff]).is_err());
    }
}
