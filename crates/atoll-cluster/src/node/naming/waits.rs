//! Serving and awaiting registry changes: names applied, lock hand-overs, Strong acknowledgements.

use super::*;

/// Serves a Raft request from a peer (off the control loop).
pub(in crate::node) async fn serve(inner: &Inner, body: Vec<u8>) -> Response {
    let naming = inner.naming.as_ref();
    let answer = match naming.and_then(|n| n.ready()) {
        Some(c) => {
            let admit = |command: &Command| {
                let admitted =
                    crate::protocol::release::admits(command, |node| standing(inner, node));
                if !admitted {
                    info!(node = %inner.name, ?command, "refused a claim for a node declared down");
                }
                admitted
            };
            c.handle_admitting(&body, admit).await
        }
        None => {
            let why = match naming {
                Some(n) if n.is_voter() => "the raft voter is not running",
                _ => "not a raft voter",
            };
            encode(&RaftResponse::Malformed(why.into()))
        }
    };
    Response::Raft(answer)
}

/// Answers a Strong registration's question: the index this node resolves from once its
/// registry binds `name` to `pid`, `None` if it does not within `wait_ms` (capped at this
/// node's consensus request timeout).
pub(in crate::node) async fn serve_await_name(
    inner: &Inner,
    name: &str,
    pid: Pid,
    wait_ms: u64,
) -> Response {
    let Some(naming) = &inner.naming else {
        return Response::NameApplied(None);
    };
    let wait = Duration::from_millis(wait_ms).min(naming.config.request_timeout);
    Response::NameApplied(await_applied(naming, name, pid, Instant::now() + wait).await)
}

/// Where `holder`, queued behind the grant with token `after`, stands in `registry` (at log
/// `index`): handed the lock by a later grant, the lock free (once the registry has caught
/// up with the grant it queued behind), or still waiting.
pub(in crate::node) fn lock_wait(
    index: u64,
    registry: &Registry,
    name: &str,
    holder: Pid,
    after: u64,
) -> LockWait {
    match registry.locks().get(name) {
        Some(g) if g.holder == holder && g.token > after => LockWait::Granted(g.token),
        None if index >= after => LockWait::Free,
        _ => LockWait::Waiting,
    }
}

/// Answers [`Request::AwaitLock`] from this node's registry, within the request timeout.
pub(in crate::node) async fn serve_await_lock(
    inner: &Inner,
    name: &str,
    holder: Pid,
    after: u64,
    wait_ms: u64,
) -> Response {
    let Some(naming) = &inner.naming else {
        return Response::LockWait(LockWait::Waiting);
    };
    let wait = Duration::from_millis(wait_ms).min(naming.config.request_timeout);
    let deadline = Instant::now() + wait;
    Response::LockWait(lock_wait_here(naming, name, holder, after, deadline).await)
}

/// [`lock_wait`] on this node's registry, once it is no longer `Waiting` or at `deadline`.
pub(in crate::node) async fn lock_wait_here(
    naming: &Naming,
    name: &str,
    holder: Pid,
    after: u64,
    deadline: Instant,
) -> LockWait {
    let stands = |index: u64, r: &Registry| lock_wait(index, r, name, holder, after);
    naming
        .wait_for(deadline, |i, r| stands(i, r) != LockWait::Waiting)
        .await;
    naming.read_indexed(stands)
}

/// Waits until `holder`, queued behind the grant `after`, is handed the lock or finds it
/// free, or `deadline` passes. A voter watches its own replica; any other node asks a voter
/// (the leader first), which answers as soon as its replica shows the hand-over, rather than
/// waiting for the next registry push.
pub(in crate::node) async fn await_lock(
    inner: &Arc<Inner>,
    naming: &Naming,
    name: &str,
    holder: Pid,
    after: u64,
    deadline: Instant,
) -> LockWait {
    if naming.is_voter() {
        return lock_wait_here(naming, name, holder, after, deadline).await;
    }
    let stands = |index: u64, r: &Registry| lock_wait(index, r, name, holder, after);
    let transport = NodeTransport {
        inner: Arc::downgrade(inner),
        directory: naming.directory.clone(),
    };
    loop {
        let now = Instant::now();
        let seen = naming.read_indexed(stands);
        if seen != LockWait::Waiting || now >= deadline {
            return seen;
        }
        let wait = (deadline - now).min(naming.config.request_timeout);
        let voters = naming.leader_hint().into_iter().chain(
            naming
                .directory
                .voters
                .keys()
                .copied()
                .filter(|v| Some(*v) != naming.leader_hint()),
        );
        let mut answered = None;
        for voter in voters {
            let Ok(peer) = transport.peer(voter).await else {
                continue;
            };
            let body = Request::AwaitLock {
                name: name.to_string(),
                holder,
                after,
                wait_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            };
            // A little longer than the voter waits, so its "still waiting" arrives.
            if let Ok(Response::LockWait(w)) = inner.ask(&peer, body, wait + RETRY_PAUSE).await {
                answered = Some(w);
                break;
            }
        }
        match answered {
            Some(LockWait::Waiting) => {}
            Some(w) => return w,
            // No voter answered: watch the pushed view for a while, then ask again.
            None => {
                naming
                    .wait_for(deadline.min(Instant::now() + RETRY_PAUSE), |i, r| {
                        stands(i, r) != LockWait::Waiting
                    })
                    .await;
            }
        }
    }
}

/// Waits until this node's registry binds `name` to `pid` (then returns the registry index
/// it resolves from), or `deadline` passes.
pub(in crate::node) async fn await_applied(
    naming: &Naming,
    name: &str,
    pid: Pid,
    deadline: Instant,
) -> Option<u64> {
    let bound = naming
        .wait_for(deadline, |_, r| {
            r.whereis(name).is_some_and(|b| b.pid == pid)
        })
        .await;
    bound.then(|| naming.applied())
}

/// The members a Strong binding must reach: every `Active` member but this node (with
/// membership), or every connected peer (without).
pub(in crate::node) fn strong_audience(inner: &Inner) -> Vec<NodeId> {
    match inner.swim.get() {
        Some(swim) => swim
            .members()
            .into_iter()
            .filter(|m| m.state == MemberState::Active && m.identity.node != inner.id)
            .map(|m| m.identity.node)
            .collect(),
        None => inner
            .peers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect(),
    }
}

/// Asks `node` whether it applied the binding of `name` to `pid`, again and again until it
/// says it did (`true`) or `deadline` passes (`false`).
pub(in crate::node) async fn strong_ack(
    weak: Weak<Inner>,
    node: NodeId,
    name: String,
    pid: Pid,
    deadline: Instant,
) -> bool {
    loop {
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        let Some(inner) = weak.upgrade() else {
            return false;
        };
        let wait = deadline - now;
        let body = Request::AwaitName {
            name: name.clone(),
            pid,
            wait_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
        };
        let asked = tokio::time::timeout_at(deadline, async {
            let peer = match inner.peer(node) {
                Some(peer) => peer,
                None => {
                    let addr = inner.known_address(node)?;
                    let peer =
                        crate::node::connect::dial_within(&inner, addr, wait.min(DIAL_TIMEOUT))
                            .await
                            .ok()?;
                    (peer.id == node).then_some(peer)?
                }
            };
            // A little longer than the member waits, so its "not yet" arrives.
            inner.ask(&peer, body, wait + RETRY_PAUSE).await.ok()
        })
        .await;
        drop(inner);
        match asked {
            Ok(Some(Response::NameApplied(Some(_)))) => return true,
            Err(_) => return false,
            // Not yet, a lost connection or an answer that does not fit: ask again shortly.
            Ok(_) => tokio::time::sleep_until(deadline.min(Instant::now() + RETRY_PAUSE)).await,
        }
    }
}

/// Waits until this node and every member of [`strong_audience`] (as it is now) resolve
/// `name` to `pid`, within the consensus request timeout. Returns the members that did not.
pub(in crate::node) async fn await_strong(
    inner: &Arc<Inner>,
    naming: &Naming,
    name: &str,
    pid: Pid,
) -> Vec<NodeId> {
    let deadline = Instant::now() + naming.config.request_timeout;
    let audience = strong_audience(inner);
    let mut asks = tokio::task::JoinSet::new();
    for node in audience {
        let ask = strong_ack(Arc::downgrade(inner), node, name.to_string(), pid, deadline);
        asks.spawn(async move { (node, ask.await) });
    }
    let mut missing = Vec::new();
    if await_applied(naming, name, pid, deadline).await.is_none() {
        missing.push(inner.id);
    }
    while let Some(done) = asks.join_next().await {
        match done {
            Ok((_, true)) => {}
            Ok((node, false)) => missing.push(node),
            Err(e) => warn!(node = %inner.name, "a Strong acknowledgement task failed: {e}"),
        }
    }
    missing.sort();
    missing
}
