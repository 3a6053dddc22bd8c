//! Reaching the voters: proposals from any node, and the transport Raft speaks over the node's requests.

use atoll_raft::chase::{Answer, Hints, LeaderChase, Next};
use atoll_raft::network::Refusal;

use super::*;

/// Proposes `command`: to this node's voter, or, on a non-voter, to the voters (the known
/// leader first, then as [`LeaderChase`] decides). Ends within the request timeout.
pub(in crate::node) async fn propose(
    inner: &Arc<Inner>,
    command: Command,
) -> Result<Outcome, ConsensusError> {
    let Some(naming) = &inner.naming else {
        return Err(ConsensusError::Config("consensus is not configured".into()));
    };
    if naming.is_voter() {
        return naming.voter().await?.propose(command).await;
    }
    let chase = LeaderChase::new(
        naming.directory.voters.keys().copied(),
        Hints::Heard,
        naming.config.request_timeout,
    );
    ask_leader(
        inner,
        naming,
        chase,
        &RaftRequest::Propose(command),
        |r| match r {
            RaftResponse::Propose(answer) => Some(answer),
            _ => None,
        },
    )
    .await
}

/// The registry index this node must reach for its reads to be linearizable: every write
/// committed before the call is at or below it. On a voter its own registry has reached it
/// when this returns; elsewhere the caller waits for the pushed registry to catch up.
pub(in crate::node) async fn read_index(inner: &Arc<Inner>) -> Result<u64, ConsensusError> {
    let Some(naming) = &inner.naming else {
        return Err(ConsensusError::Config("consensus is not configured".into()));
    };
    if naming.is_voter() {
        naming.voter().await?.linearizable_read().await?;
        return Ok(naming.applied());
    }
    // A read may be asked again, whatever became of the last request.
    let chase = LeaderChase::new(
        naming.directory.voters.keys().copied(),
        Hints::Heard,
        naming.config.request_timeout,
    )
    .retrying_unknown();
    let index = ask_leader(inner, naming, chase, &RaftRequest::ReadIndex, |r| match r {
        RaftResponse::ReadIndex(answer) => Some(answer),
        _ => None,
    })
    .await?;
    Ok(index.unwrap_or(0))
}

/// Sends `request` to the voters as `chase` decides until the leader answers it (`answer_of`
/// picks the answer out of a response of the right kind).
async fn ask_leader<T>(
    inner: &Arc<Inner>,
    naming: &Naming,
    mut chase: LeaderChase,
    request: &RaftRequest,
    answer_of: impl Fn(RaftResponse) -> Option<Result<T, Refusal>>,
) -> Result<T, ConsensusError> {
    let transport = NodeTransport {
        inner: Arc::downgrade(inner),
        directory: naming.directory.clone(),
    };
    let started = Instant::now();
    let deadline = started + chase.timeout();
    let body = encode(request);
    let mut next = chase.start(naming.leader_hint());
    loop {
        let target = match next {
            Next::GiveUp(e) => return Err(e.into()),
            Next::Wait(pause) => {
                tokio::time::sleep(pause).await;
                next = chase.resume(started.elapsed(), naming.leader_hint());
                continue;
            }
            Next::Try(target) => target,
        };
        let answer =
            match tokio::time::timeout_at(deadline, transport.call(target, body.clone())).await {
                Err(_) => Answer::Unknown,
                Ok(Err(e)) => Answer::from_transport(&e),
                Ok(Ok(body)) => match decode::<RaftResponse>(&body).ok().and_then(&answer_of) {
                    Some(Ok(value)) => {
                        naming.leader.store(target, Ordering::Relaxed);
                        return Ok(value);
                    }
                    Some(Err(refusal)) => Answer::from_refusal(refusal),
                    // A voter that does not run Raft, or that did not understand: ask another.
                    None => Answer::Unreachable,
                },
            };
        next = chase.answer(started.elapsed(), answer, naming.leader_hint());
        if let Some(leader) = chase.named_leader() {
            naming.leader.store(leader, Ordering::Relaxed);
        }
    }
}

/// Raft over the node's connections: a Raft id names a configured voter; its connection is
/// opened on demand.
#[derive(Clone)]
pub(in crate::node) struct NodeTransport {
    pub(in crate::node) inner: Weak<Inner>,
    pub(in crate::node) directory: Arc<Directory>,
}

impl std::fmt::Debug for NodeTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeTransport")
            .field("voters", &self.directory.voters)
            .finish_non_exhaustive()
    }
}

impl NodeTransport {
    /// The connection to voter `target`, opening one if there is none. While an attempt is
    /// under way, or shortly after one failed, the voter counts as unreachable.
    pub(in crate::node) async fn peer(&self, target: RaftId) -> Result<Arc<Peer>, TransportError> {
        let unreachable = TransportError::Unreachable(target);
        let inner = self.inner.upgrade().ok_or(unreachable.clone())?;
        let &(node, addr) = self
            .directory
            .voters
            .get(&target)
            .ok_or(unreachable.clone())?;
        if node == inner.id || inner.closing.load(Ordering::SeqCst) {
            return Err(unreachable);
        }
        if let Some(peer) = inner.peer(node) {
            return Ok(peer);
        }
        {
            let mut dials = self
                .directory
                .dials
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let state = dials.entry(target).or_default();
            let backing_off = state.failed_at.is_some_and(|t| t.elapsed() < DIAL_BACKOFF);
            if state.in_flight || backing_off {
                return Err(unreachable);
            }
            state.in_flight = true;
        }
        // The attempt runs as its own task: a caller that gives up does not cancel it.
        let directory = self.directory.clone();
        let weak = self.inner.clone();
        let attempt = tokio::spawn(async move {
            let inner = weak.upgrade()?;
            let timeout = inner.connect_timeout.min(DIAL_TIMEOUT);
            let peer = match crate::node::connect::dial_within(&inner, addr, timeout).await {
                Ok(peer) if peer.id == node => Some(peer),
                Ok(_) | Err(_) => None,
            };
            let mut dials = directory.dials.lock().unwrap_or_else(|e| e.into_inner());
            let state = dials.entry(target).or_default();
            state.in_flight = false;
            state.failed_at = if peer.is_some() {
                None
            } else {
                Some(Instant::now())
            };
            peer
        });
        drop(inner);
        match attempt.await {
            Ok(Some(peer)) => Ok(peer),
            _ => Err(unreachable),
        }
    }
}

impl RaftTransport for NodeTransport {
    async fn call(&self, target: RaftId, body: Vec<u8>) -> Result<Vec<u8>, TransportError> {
        let peer = self.peer(target).await?;
        let inner = self
            .inner
            .upgrade()
            .ok_or(TransportError::Unreachable(target))?;
        let failed = |reason: &str| TransportError::Failed {
            target,
            reason: reason.to_string(),
        };
        let timeout = inner
            .naming
            .as_ref()
            .map_or(inner.request_timeout, |n| n.config.request_timeout);
        match inner.ask(&peer, Request::Raft(body), timeout).await {
            Ok(Response::Raft(answer)) => Ok(answer),
            Ok(_) => Err(failed("unexpected response")),
            Err(crate::node::rpc::AskError::NotSent) => Err(TransportError::Unreachable(target)),
            Err(crate::node::rpc::AskError::Lost) => Err(failed("connection lost")),
            Err(crate::node::rpc::AskError::TimedOut) => Err(failed("timed out")),
        }
    }
}
