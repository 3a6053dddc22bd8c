//! Releases: of lost nodes' and older incarnations' names and locks (decided by the leader, see `crate::protocol::release`), of exited owners', retried until applied.

use super::*;

/// On the leader: releases the names and locks of processes of nodes that membership
/// declared unreachable or gone, and of incarnations a newer one replaced.
pub(in crate::node) async fn release_lost(weak: Weak<Inner>, every: Duration) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = weak.upgrade() else { return };
        if inner.closing.load(Ordering::SeqCst) {
            return;
        }
        let Some(c) = inner.naming.as_ref().and_then(|n| n.ready()) else {
            continue;
        };
        if c.leader_hint() != Some(c.id()) {
            continue;
        }
        // Decided from this node's view of the cluster, so only carried out while it leads:
        // a leader cut off from the others sees them all as lost.
        let Some(naming) = &inner.naming else { return };
        let commands = c.read_registry(|index, registry| {
            let mut lost = naming.lost.lock().unwrap_or_else(|e| e.into_inner());
            releases(
                index.unwrap_or(0),
                registry,
                &mut lost,
                Instant::now().into_std(),
                |node| standing(&inner, node),
            )
        });
        for command in commands {
            match c.propose_as_leader(command.clone()).await {
                Ok(Outcome::Released { names, locks }) => {
                    info!(node = %inner.name, ?command, ?names, ?locks, "released names and locks")
                }
                Ok(other) => debug!(node = %inner.name, ?command, ?other, "release proposed"),
                Err(e) => debug!(node = %inner.name, ?command, "release not applied: {e}"),
            }
        }
    }
}

/// Membership declared `node` unreachable or gone: remembers how far this node's registry
/// was, so that whichever voter leads releases only what the node held by then (a leader
/// elected later, its view not caught up with the node's return, must not release what
/// the node claimed since).
pub(in crate::node) fn note_lost(inner: &Inner, node: NodeId) {
    let Some(naming) = &inner.naming else { return };
    let up_to_index = naming.applied();
    naming
        .lost
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(node)
        .or_insert(LostSince {
            up_to_index,
            at: Instant::now().into_std(),
        });
}

/// `node` joined again (a new generation, or back from a partition).
pub(in crate::node) fn note_back(inner: &Inner, node: NodeId) {
    if let Some(naming) = &inner.naming {
        naming
            .lost
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&node);
    }
}

/// What this node knows of `node`, for the release policy.
pub(in crate::node) fn standing(inner: &Inner, node: NodeId) -> Standing {
    if node == inner.id {
        return Standing::Me(inner.rt.creation());
    }
    let member = inner.swim.get().and_then(|s| s.member(node));
    if member.is_some_and(|m| !m.state.is_live()) {
        return Standing::Lost;
    }
    Standing::Live(inner.peer(node).map(|p| p.creation))
}

/// Releases names and locks the registry gives to processes of this node that no longer
/// run. Exits are watched for every registration and grant this node saw succeed; this
/// sweep catches the ones whose answer was lost (a request that timed out after it
/// committed, say when the leader died), which nothing else would ever release.
pub(in crate::node) async fn release_orphans(weak: Weak<Inner>, every: Duration) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = weak.upgrade() else { return };
        if inner.closing.load(Ordering::SeqCst) {
            return;
        }
        let Some(naming) = &inner.naming else { return };
        let creation = inner.rt.creation();
        // Many names may share an owner: ask the runtime once per process, not per name
        // (the sweep holds the registry's read lock).
        let alive = std::cell::RefCell::new(BTreeMap::<Pid, bool>::new());
        let orphans = naming.read(|r| {
            orphans(inner.id, creation, r, |pid| {
                *alive
                    .borrow_mut()
                    .entry(pid)
                    .or_insert_with(|| inner.rt.is_alive(pid))
            })
        });
        for command in orphans {
            match propose(&inner, command.clone()).await {
                Ok(outcome) => {
                    info!(node = %inner.name, ?command, ?outcome, "released what an exited process held")
                }
                Err(e) => {
                    debug!(node = %inner.name, ?command, "orphan release not applied yet: {e}")
                }
            }
        }
    }
}

/// Proposes `command` until it is applied (any outcome) or the node closes, backing off
/// between attempts: for releases that must not be lost.
pub(in crate::node) async fn propose_until_applied(weak: Weak<Inner>, command: Command) {
    let (mut delay, max) = RELEASE_RETRY;
    loop {
        let Some(inner) = weak.upgrade() else { return };
        if inner.closing.load(Ordering::SeqCst) {
            return;
        }
        match propose(&inner, command.clone()).await {
            Ok(outcome) => {
                debug!(node = %inner.name, ?command, ?outcome, "release applied");
                return;
            }
            Err(e) => debug!(node = %inner.name, ?command, "release not applied yet: {e}"),
        }
        drop(inner);
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(max);
    }
}

/// Unregisters the consensus name `name` of the local `pid` when the process exits.
pub(in crate::node) fn watch_owner(inner: &Arc<Inner>, name: &str, pid: Pid) {
    let Some(naming) = &inner.naming else { return };
    let key = (name.to_string(), pid);
    let mut watched = naming.watched.lock().unwrap_or_else(|e| e.into_inner());
    if watched.contains_key(&key) {
        return;
    }
    let exited = inner.rt.wait_exit(pid);
    let weak = Arc::downgrade(inner);
    let task = tokio::spawn({
        let key = key.clone();
        async move {
            exited.await;
            let command = Command::Unregister {
                name: key.0.clone(),
                pid,
            };
            propose_until_applied(weak.clone(), command).await;
            if let Some(inner) = weak.upgrade()
                && let Some(naming) = &inner.naming
            {
                naming
                    .watched
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&key);
            }
        }
    });
    watched.insert(key, task.abort_handle());
}

/// Releases the lock `name` granted under `token` to the local `holder` when the holder
/// exits or the guard says so (`true`: the guard released it already).
pub(in crate::node) fn watch_lock(
    inner: &Arc<Inner>,
    name: &str,
    holder: Pid,
    token: u64,
) -> oneshot::Sender<bool> {
    let (tx, rx) = oneshot::channel::<bool>();
    let exited = inner.rt.wait_exit(holder);
    let weak = Arc::downgrade(inner);
    let name = name.to_string();
    tokio::spawn(async move {
        let released = tokio::select! {
            biased;
            _ = exited => false,
            r = rx => r.unwrap_or(false),
        };
        if !released {
            propose_until_applied(
                weak.clone(),
                Command::Unlock {
                    name: name.clone(),
                    token,
                },
            )
            .await;
        }
        if let Some(inner) = weak.upgrade()
            && let Some(naming) = &inner.naming
        {
            naming.forget_guards(&name, token);
        }
    });
    tx
}
