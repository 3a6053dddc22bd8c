//! The node's naming and lock API.

use super::*;

pub(in crate::node) fn check_name(name: &str) -> Result<(), usize> {
    if name.len() > MAX_NAME_LEN {
        Err(name.len())
    } else {
        Ok(())
    }
}

/// The right to a consensus lock, held until dropped.
///
/// Dropping the guard releases the lock in the background; [`LockGuard::unlock`] releases it,
/// waits until the release is applied and says whether this grant was still held then
/// ([`LockError::NotHeld`] if the cluster had released it already). The lock is also
/// released when its holder process exits or the holder's node is lost, so a holder must
/// pass [`LockGuard::token`] to whatever the lock protects and that resource must refuse
/// tokens smaller than the largest it has seen (a fencing token).
///
/// When this node learns that the cluster declared it down (it is fenced), the lock was
/// released by the others: the guard then reports it [lost](LockGuard::is_lost).
#[must_use = "the lock is released when the guard is dropped"]
pub struct LockGuard {
    inner: Weak<Inner>,
    name: String,
    holder: Pid,
    token: u64,
    release: Option<oneshot::Sender<bool>>,
    lost: watch::Receiver<bool>,
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard")
            .field("name", &self.name)
            .field("holder", &self.holder)
            .field("token", &self.token)
            .finish()
    }
}

impl LockGuard {
    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process holding the lock.
    pub fn holder(&self) -> Pid {
        self.holder
    }

    /// The fencing token of this grant: larger than the token of every earlier grant of the
    /// same lock.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// True once this node was fenced while holding the lock: the cluster released it and
    /// may have granted it to another process, so the holder must stop acting on it.
    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Waits until the lock is [lost](LockGuard::is_lost) (forever, while it is held).
    pub async fn lost(&self) {
        let mut lost = self.lost.clone();
        if lost.wait_for(|l| *l).await.is_err() {
            // The node is gone: nothing will say so again.
            std::future::pending::<()>().await;
        }
    }

    /// Releases the lock and waits until the release is applied.
    ///
    /// `Ok` means this grant was still the lock's current grant and is now released.
    /// [`LockError::NotHeld`] means it was not: the cluster had released it already (this
    /// node was declared lost or fenced, the holder exited, or another guard of the same
    /// grant unlocked it) and may have granted the lock to another process, which keeps it;
    /// anything written under [`LockGuard::token`] since may have been refused by a fenced
    /// resource. Any other error says consensus did not answer (the release is then still
    /// made in the background, as on drop).
    pub async fn unlock(mut self) -> Result<(), LockError> {
        let inner = self.inner.upgrade().ok_or(LockError::NoConsensus)?;
        let command = Command::Unlock {
            name: self.name.clone(),
            token: self.token,
        };
        let result = unlock_result(&self.name, self.token, propose(&inner, command).await?);
        if matches!(result, Ok(()) | Err(LockError::NotHeld { .. }))
            && let Some(release) = self.release.take()
        {
            // The grant is gone either way: nothing is left to release in the background.
            let _ = release.send(true);
        }
        result
    }
}

/// What the applied [`Command::Unlock`] of the grant `name`/`token` says to its guard: `Ok`
/// if it released that grant, [`LockError::NotHeld`] if the grant was no longer current.
pub(in crate::node) fn unlock_result(
    name: &str,
    token: u64,
    outcome: Outcome,
) -> Result<(), LockError> {
    match outcome {
        Outcome::Unlocked => Ok(()),
        Outcome::StaleToken { current } => Err(LockError::NotHeld {
            name: name.to_string(),
            token,
            current,
        }),
        other => Err(LockError::Unexpected(format!("{other:?}"))),
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            let _ = release.send(false);
        }
    }
}

impl crate::node::Node {
    pub(in crate::node) fn naming(&self) -> Option<&Naming> {
        self.inner.naming.as_ref()
    }

    /// Registers the local process `pid` under `name` in `scope`.
    ///
    /// - `Local`: this node's runtime registry.
    /// - `Eventual`: the gossiped global names ([`crate::node::Node::register_global`]). Two
    ///   processes that claimed the name while their nodes were apart: the smaller pid keeps
    ///   it on every node once they meet; the other loses the binding without being stopped,
    ///   and gets a [`crate::node::NameLost`] message if it asked with
    ///   [`crate::node::Node::notify_name_lost`].
    /// - `Consistent`: the Raft registry, a linearizable singleton: the first registration
    ///   committed wins and every later one fails with [`NameError::Taken`] naming the
    ///   owner. The name is released when the process exits, and by the Raft leader when
    ///   membership declares the node unreachable or gone, or a newer incarnation of the
    ///   node joins. Fails within the consensus request timeout when no quorum answers.
    /// - `Strong`: a Consistent registration that returns only once every member that was
    ///   `Active` (in this node's membership view) when it committed, and this node, resolve
    ///   the name to `pid`: after `Ok`, [`crate::node::Node::whereis`] on any of them finds it.
    ///   Members that have not applied it within the consensus request timeout are named
    ///   in [`NameError::StrongTimeout`]; the binding is then withdrawn again (unregistered)
    ///   before the error returns, or in the background if that fails too. Every Active
    ///   member must run consensus (a node without it never acknowledges).
    pub async fn register(&self, name: &str, pid: Pid, scope: Scope) -> Result<(), NameError> {
        let inner = &self.inner;
        if pid.node != inner.id || !inner.rt.is_alive(pid) {
            return Err(NameError::NotLocal(pid));
        }
        check_name(name).map_err(|len| NameError::TooLong {
            len,
            max: MAX_NAME_LEN,
        })?;
        match scope {
            Scope::Local => inner.rt.register(name, pid).map_err(|e| match e {
                atoll_actor::RegisterError::NameTaken { owner, .. } => NameError::Taken {
                    name: name.to_string(),
                    owner,
                },
                other => NameError::Local(other),
            }),
            Scope::Eventual => self.register_global(name, pid).map_err(|e| match e {
                crate::GlobalError::NameTaken { owner, .. } => NameError::Taken {
                    name: name.to_string(),
                    owner,
                },
                crate::GlobalError::NotLocal(pid) => NameError::NotLocal(pid),
            }),
            Scope::Consistent | Scope::Strong => {
                let Some(naming) = self.naming() else {
                    return Err(NameError::NoConsensus);
                };
                if !crate::node::fence::releases_applied(inner, naming.config.request_timeout).await
                {
                    return Err(NameError::Fencing);
                }
                let command = Command::Register {
                    name: name.to_string(),
                    pid,
                    scope,
                };
                match propose(inner, command).await? {
                    Outcome::Registered => {
                        watch_owner(inner, name, pid);
                        if scope != Scope::Strong {
                            return Ok(());
                        }
                        let missing = await_strong(inner, naming, name, pid).await;
                        if missing.is_empty() {
                            return Ok(());
                        }
                        warn!(node = %inner.name, %name, %pid, ?missing, "a Strong registration was not acknowledged by every active member; withdrawing it");
                        let command = Command::Unregister {
                            name: name.to_string(),
                            pid,
                        };
                        if propose(inner, command.clone()).await.is_err() {
                            tokio::spawn(propose_until_applied(Arc::downgrade(inner), command));
                        }
                        Err(NameError::StrongTimeout {
                            name: name.to_string(),
                            missing,
                        })
                    }
                    Outcome::NameTaken { owner } => Err(NameError::Taken {
                        name: name.to_string(),
                        owner,
                    }),
                    other => Err(NameError::Unexpected(format!("{other:?}"))),
                }
            }
        }
    }

    /// Releases `name` if a local process holds it, in the scope [`Self::whereis`] resolves
    /// it from (Consistent, then Eventual, then Local). Returns the process that held it, or
    /// `None` if no local process holds it in that scope.
    pub async fn unregister(&self, name: &str) -> Result<Option<Pid>, NameError> {
        let inner = &self.inner;
        if let Some(pid) = self.naming().and_then(|n| n.whereis(name)) {
            if pid.node != inner.id {
                return Ok(None);
            }
            let command = Command::Unregister {
                name: name.to_string(),
                pid,
            };
            return match propose(inner, command).await? {
                Outcome::Unregistered => {
                    if let Some(naming) = self.naming() {
                        // Given up: no longer among what this node holds (see `held_by`),
                        // and nothing to release when the process exits.
                        let watch = naming
                            .watched
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&(name.to_string(), pid));
                        if let Some(watch) = watch {
                            watch.abort();
                        }
                    }
                    Ok(Some(pid))
                }
                _ => Ok(None),
            };
        }
        if self.whereis_global(name).is_some() {
            return Ok(self.unregister_global(name));
        }
        Ok(inner.rt.unregister(name))
    }

    /// How the registry pushes between this node and the voters went: what it sent as a
    /// voter (deltas, whole registries, bytes) and what it received as a follower. Zero
    /// without consensus.
    pub fn registry_feed_stats(&self) -> RegistryFeedStats {
        self.naming().map(Naming::feed_stats).unwrap_or_default()
    }

    /// The process holding `name`, resolved on this node without any network round trip:
    /// a Consistent name (from this node's Raft replica, or the registry the voters last
    /// pushed here) shadows an Eventual one, which shadows a Local one. Keeps answering in a
    /// partition, possibly with a stale binding.
    pub fn whereis(&self, name: &str) -> Option<Pid> {
        self.naming()
            .and_then(|n| n.whereis(name))
            .or_else(|| self.whereis_global(name))
            .or_else(|| self.inner.rt.whereis(name))
    }

    /// The process holding the Consistent or Strong name `name`, read linearizably: the
    /// answer reflects every registration and release that completed before the call (the
    /// leader confirms its leadership with a quorum and names the log index to wait for;
    /// this node waits until its registry has reached it). Fails like a registration when
    /// consensus is unavailable (`NameError::Consensus`); `NameError::NoConsensus` without
    /// consensus. For a fast, possibly stale answer, see [`whereis`](Self::whereis).
    ///
    /// ```no_run
    /// # async fn run(node: atoll_cluster::Node) -> Result<(), atoll_cluster::NameError> {
    /// if let Some(pid) = node.whereis_consistent("leader").await? {
    ///     println!("the leader is {pid}");
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn whereis_consistent(&self, name: &str) -> Result<Option<Pid>, NameError> {
        let naming = self.caught_up().await?;
        Ok(naming.whereis(name))
    }

    /// This node's registry once it has caught up with a linearizable read index: the
    /// leader confirmed with a quorum that it still leads, and the registry applied
    /// everything committed up to then.
    async fn caught_up(&self) -> Result<&Naming, NameError> {
        let Some(naming) = self.naming() else {
            return Err(NameError::NoConsensus);
        };
        let started = Instant::now();
        let index = read_index(&self.inner).await?;
        let deadline = started + naming.config.request_timeout;
        if !naming.wait_for(deadline, |at, _| at >= index).await {
            return Err(NameError::Consensus(ConsensusError::Timeout));
        }
        Ok(naming)
    }

    /// The Raft log index of the registry this node resolves Consistent names from (0 when
    /// it has none, or consensus is not configured).
    pub fn registry_index(&self) -> u64 {
        self.naming().map_or(0, Naming::applied)
    }

    /// [`Node::registry_index`] as a handle read without a lock or the node: for hot paths
    /// that look up the registry only when it changed. Without consensus it stays 0.
    pub fn registry_index_handle(&self) -> RegistryIndex {
        self.naming()
            .map_or_else(RegistryIndex::default, Naming::index_handle)
    }

    /// The nodes that run the Raft voters: the consensus configuration, the same on every
    /// node of the cluster (empty when consensus is not configured).
    pub fn consensus_voters(&self) -> std::collections::BTreeSet<NodeId> {
        self.naming()
            .map_or_else(Default::default, Naming::voter_nodes)
    }

    /// The holder and fencing token of the consensus lock `name`, as this node's registry
    /// shows it (no network round trip).
    pub fn lock_holder(&self, name: &str) -> Option<(Pid, u64)> {
        let grant = self.naming()?.lock_grant(name)?;
        Some((grant.holder, grant.token))
    }

    /// The holder and fencing token of the consensus lock `name`, read linearizably (like
    /// [`Node::whereis_consistent`]): the leader confirms with a quorum that it still
    /// leads, and this node's registry catches up to that point first. So the answer is no
    /// older than the call; a node cut off from the majority gets an error instead of its
    /// registry's stale grant.
    pub async fn lock_holder_consistent(
        &self,
        name: &str,
    ) -> Result<Option<(Pid, u64)>, NameError> {
        let naming = self.caught_up().await?;
        Ok(naming
            .lock_grant(name)
            .map(|grant| (grant.holder, grant.token)))
    }

    /// Every consensus lock whose name starts with `prefix`, with its holder and fencing
    /// token, as this node's registry shows them (no network round trip), in name order.
    pub fn locks_with_prefix(&self, prefix: &str) -> Vec<(String, Pid, u64)> {
        let Some(naming) = self.naming() else {
            return Vec::new();
        };
        naming.read(|registry| {
            registry
                .locks()
                .range(prefix.to_string()..)
                .take_while(|(name, _)| name.starts_with(prefix))
                .map(|(name, grant)| (name.clone(), grant.holder, grant.token))
                .collect()
        })
    }

    /// How many consensus locks whose name starts with `prefix` the processes of each node
    /// hold, as this node's registry shows them (no network round trip). Placement uses it
    /// to count a node's grain activations the moment their claims commit, before the
    /// process table gossips the new processes.
    pub fn lock_counts_by_node(&self, prefix: &str) -> BTreeMap<NodeId, u64> {
        let Some(naming) = self.naming() else {
            return BTreeMap::new();
        };
        naming.read(|registry| {
            let mut counts = BTreeMap::new();
            for (_, grant) in registry
                .locks()
                .range::<str, _>((
                    std::ops::Bound::Included(prefix),
                    std::ops::Bound::Unbounded,
                ))
                .take_while(|(name, _)| name.starts_with(prefix))
            {
                *counts.entry(grant.holder.node).or_insert(0) += 1;
            }
            counts
        })
    }

    /// The processes queued for the consensus lock `name` (by [`Self::lock`]), in the order
    /// they are handed it, as this node's registry shows them (no network round trip).
    pub fn lock_waiters(&self, name: &str) -> Vec<Pid> {
        self.naming()
            .map(|n| n.lock_waiters(name))
            .unwrap_or_default()
    }

    /// This node's Raft state (`system.raft`), if it runs a voter.
    pub async fn raft_status(&self) -> Option<RaftStatus> {
        self.naming()?.status().await
    }

    /// Sends `msg` to the process [`Self::whereis`] resolves `name` to, wherever it runs.
    pub fn send_named<A: Actor>(
        &self,
        name: &str,
        msg: A::Msg,
    ) -> Result<(), ClusterSendError<A::Msg>>
    where
        A::Msg: Serialize,
    {
        self.send_resolved::<A>(name, self.whereis(name), msg)
    }

    /// Takes the consensus lock `name` for the local process `holder` if it is free now;
    /// [`LockError::Busy`] names the current holder otherwise. Taking a lock the process
    /// already holds returns another guard for the same grant (same token): releasing either
    /// releases the grant (an unlock of the other then answers [`LockError::NotHeld`]).
    pub async fn try_lock(&self, name: &str, holder: Pid) -> Result<LockGuard, LockError> {
        self.check_lock(name, holder)?;
        match self.propose_lock(name, holder).await? {
            Ok(guard) => Ok(guard),
            Err((holder, token)) => Err(LockError::Busy { holder, token }),
        }
    }

    /// Takes the consensus lock `name` for the local process `holder`, waiting up to
    /// `timeout` for it ([`LockError::Timeout`] then). A waiter is queued at the lock and
    /// handed it, in turn, by the entry that releases it. On timeout it leaves the queue (and
    /// releases the lock if it was handed it meanwhile). The attempt under way when the
    /// timeout passes is allowed to finish, so the call may overrun `timeout` by up to the
    /// consensus request timeout.
    pub async fn lock(
        &self,
        name: &str,
        holder: Pid,
        timeout: Duration,
    ) -> Result<LockGuard, LockError> {
        self.check_lock(name, holder)?;
        let inner = &self.inner;
        let deadline = Instant::now() + timeout;
        let abandon = || {
            let command = Command::Abandon {
                name: name.to_string(),
                holder,
            };
            tokio::spawn(propose_until_applied(Arc::downgrade(inner), command));
        };
        let mut waited = false;
        loop {
            let command = Command::LockOrWait {
                name: name.to_string(),
                holder,
            };
            let token = match propose(inner, command).await {
                Ok(Outcome::LockGranted { token }) => return Ok(self.guard(name, holder, token)),
                Ok(Outcome::LockQueued { token, .. }) => token,
                Ok(other) => return Err(LockError::Unexpected(format!("{other:?}"))),
                Err(e) => {
                    if waited {
                        // It may have been handed the lock meanwhile: give it up.
                        abandon();
                    }
                    return Err(e.into());
                }
            };
            waited = true;
            let Some(naming) = self.naming() else {
                return Err(LockError::NoConsensus);
            };
            // Handed the lock by a grant after the one it queued behind (this node's view
            // may still show an earlier grant to the same process), or (rarely: the entry
            // that freed it could not grant it again) the lock free.
            match await_lock(inner, naming, name, holder, token, deadline).await {
                // Proposed again: the log's answer, not the view a wait reads (which may
                // lag, e.g. a partitioned voter's), says whether this process holds the
                // lock now, and with which token.
                LockWait::Free | LockWait::Granted(_) => continue,
                LockWait::Waiting => {
                    // Out of the queue, and the lock released if it was handed over after
                    // all: whatever happened to the last request, this call has failed.
                    let command = Command::Abandon {
                        name: name.to_string(),
                        holder,
                    };
                    if propose(inner, command.clone()).await.is_err() {
                        tokio::spawn(propose_until_applied(Arc::downgrade(inner), command));
                    }
                    return Err(LockError::Timeout);
                }
            }
        }
    }

    fn guard(&self, name: &str, holder: Pid, token: u64) -> LockGuard {
        let inner = &self.inner;
        let lost = match self.naming() {
            Some(naming) => naming.guard_watch(name, holder, token),
            None => watch::channel(false).1,
        };
        LockGuard {
            inner: Arc::downgrade(inner),
            name: name.to_string(),
            holder,
            token,
            release: Some(watch_lock(inner, name, holder, token)),
            lost,
        }
    }

    fn check_lock(&self, name: &str, holder: Pid) -> Result<(), LockError> {
        if self.naming().is_none() {
            return Err(LockError::NoConsensus);
        }
        if holder.node != self.inner.id || !self.inner.rt.is_alive(holder) {
            return Err(LockError::NotLocal(holder));
        }
        check_name(name).map_err(|len| LockError::TooLong {
            len,
            max: MAX_NAME_LEN,
        })
    }

    /// One attempt: a guard, or the current (holder, token).
    async fn propose_lock(
        &self,
        name: &str,
        holder: Pid,
    ) -> Result<Result<LockGuard, (Pid, u64)>, LockError> {
        let inner = &self.inner;
        let command = Command::Lock {
            name: name.to_string(),
            holder,
        };
        match propose(inner, command).await? {
            Outcome::LockGranted { token } => Ok(Ok(self.guard(name, holder, token))),
            Outcome::LockBusy { holder, token } => Ok(Err((holder, token))),
            other => Err(LockError::Unexpected(format!("{other:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unlock_is_ok_only_when_it_released_the_guards_own_grant() {
        assert!(unlock_result("L", 7, Outcome::Unlocked).is_ok());
        let other = Pid::new(NodeId::from_bytes([2; 16]), 1, 3);
        match unlock_result(
            "L",
            7,
            Outcome::StaleToken {
                current: Some((other, 9)),
            },
        ) {
            Err(LockError::NotHeld {
                name,
                token: 7,
                current: Some((holder, 9)),
            }) if name == "L" && holder == other => {}
            wrong => panic!("{wrong:?}"),
        }
        let e = unlock_result("L", 7, Outcome::StaleToken { current: None }).unwrap_err();
        assert!(matches!(e, LockError::NotHeld { current: None, .. }));
        assert!(e.to_string().contains("token 7"), "{e}");
        assert!(matches!(
            unlock_result("L", 7, Outcome::Abandoned),
            Err(LockError::Unexpected(_))
        ));
    }
}
