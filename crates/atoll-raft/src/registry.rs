//! The replicated state: cluster names, locks and configuration, as a pure state machine.
//!
//! [`Registry::apply`] is deterministic: every replica applying the same log reaches the same
//! state and returns the same [`Outcome`] for each entry. Nothing here does I/O or reads a
//! clock.

use std::collections::{BTreeMap, VecDeque};

use atoll_core::{NodeId, Pid, Scope};
use serde::{Deserialize, Serialize};

/// A change proposed to the replicated registry: the data of a Raft log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Bind `name` to `pid` cluster-wide. Only `Consistent` and `Strong` names live here.
    Register {
        /// The name to bind.
        name: String,
        /// The process that will own it.
        pid: Pid,
        /// Its scope: `Consistent` or `Strong`.
        scope: Scope,
    },
    /// Remove the binding of `name`, if `pid` owns it.
    Unregister {
        /// The name to unbind.
        name: String,
        /// The process that claims to own it.
        pid: Pid,
    },
    /// Drop every name and lock held by processes of `node` (it left or is gone for good).
    ReleaseNode {
        /// The node whose processes lose their names and locks.
        node: NodeId,
        /// If set, only processes of incarnations older than this creation are released (the
        /// node restarted, and its new incarnation's bindings stay).
        before_creation: Option<u32>,
        /// If set, only names bound and locks granted at or before this log index are
        /// released: what the node held when it was seen lost. Later ones are claims it made
        /// since, so it is evidently back, and they stay.
        up_to_index: Option<u64>,
    },
    /// Acquire the lock `name` for `holder`, if it is free.
    Lock {
        /// The lock.
        name: String,
        /// The process that wants it.
        holder: Pid,
    },
    /// Acquire the lock `name` for `holder` if it is free, or else queue `holder` to be
    /// granted it, in turn, by the entry that releases it ([`Outcome::LockQueued`]).
    LockOrWait {
        /// The lock.
        name: String,
        /// The process that wants it.
        holder: Pid,
    },
    /// `holder` no longer wants the lock `name`: it leaves the queue, and if the lock was
    /// handed to it meanwhile, the lock is released (and handed to the next in the queue).
    Abandon {
        /// The lock.
        name: String,
        /// The process that stopped waiting.
        holder: Pid,
    },
    /// Release the lock `name`, if `token` is the fencing token of its current grant; the
    /// first process queued for it is granted it by the same entry.
    Unlock {
        /// The lock.
        name: String,
        /// The fencing token the holder was granted.
        token: u64,
    },
    /// Set a replicated configuration value.
    SetConfig {
        /// The setting.
        key: String,
        /// Its new value.
        value: String,
    },
    /// Several commands in one log entry, applied in order; answered with
    /// [`Outcome::Batch`], one outcome per command. [`crate::Consensus::propose`] groups
    /// concurrent proposals into batches so that many share one durable append.
    ///
    /// All commands of a batch share the entry's log index: bindings it creates carry that
    /// index, and a lock is granted at most once per entry (its fencing token is the index),
    /// so a later `Lock` of a lock already granted earlier in the same entry is answered
    /// [`Outcome::LockBusy`] with that grant.
    Batch(Vec<Command>),
}

/// What applying a [`Command`] did: the response of a Raft log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The name is bound to the proposed pid (now, or it already was).
    Registered,
    /// The name is bound to another process; nothing changed.
    NameTaken {
        /// The current owner.
        owner: Pid,
    },
    /// Only `Consistent` and `Strong` names are replicated; nothing changed.
    ScopeNotReplicated {
        /// The scope that was proposed.
        scope: Scope,
    },
    /// The name was unbound.
    Unregistered,
    /// The name is not bound to the pid that asked; nothing changed.
    NotOwner {
        /// The current owner, if the name is bound at all.
        owner: Option<Pid>,
    },
    /// The lock is now held by the proposer (now, or it already was), under `token`.
    LockGranted {
        /// The fencing token: the Raft log index of the entry that granted the lock, so
        /// strictly increasing across grants of the same lock.
        token: u64,
    },
    /// The lock is held by another process; nothing changed.
    LockBusy {
        /// The current holder.
        holder: Pid,
        /// The current grant's fencing token.
        token: u64,
    },
    /// The lock is held by another process; the proposer is queued for it and will be
    /// granted it by the entry that releases it (a grant its node sees in its registry).
    LockQueued {
        /// The current holder.
        holder: Pid,
        /// The current grant's fencing token.
        token: u64,
    },
    /// The grant with the proposed token was the lock's current grant, and this entry
    /// released it.
    Unlocked,
    /// The process left the lock's queue (and released the lock if it had been handed it).
    Abandoned,
    /// The token is not the lock's current grant: that grant was released already (by an
    /// earlier unlock, its holder's exit, a lost node's release or a fencing) and the lock
    /// may have been granted again since. Nothing changed: an unlock never releases a grant
    /// other than its own.
    StaleToken {
        /// The lock's current grant (holder, token), if it is held.
        current: Option<(Pid, u64)>,
    },
    /// Names and locks released for a node.
    Released {
        /// The names that were unbound.
        names: Vec<String>,
        /// The locks that were released.
        locks: Vec<String>,
    },
    /// The configuration value was stored.
    ConfigSet,
    /// A Raft-internal entry (blank or membership change) was applied; the registry is
    /// unchanged.
    Noop,
    /// The outcomes of a [`Command::Batch`], in its order.
    Batch(Vec<Outcome>),
}

/// A replicated name binding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    /// The owning process.
    pub pid: Pid,
    /// `Consistent` or `Strong`.
    pub scope: Scope,
    /// The Raft log index of the entry that created the binding.
    pub index: u64,
}

/// A held lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockGrant {
    /// The holding process.
    pub holder: Pid,
    /// The fencing token (the Raft log index of the granting entry).
    pub token: u64,
    /// The index of the entry in which the holder asked for the lock: the token, or, for a
    /// waiter handed the lock, the entry that queued it (what [`Command::ReleaseNode`]'s
    /// `up_to_index` compares).
    pub asked: u64,
}

/// The snapshot format version written by [`Registry::to_bytes`].
pub const SNAPSHOT_VERSION: u8 = 2;

/// A registry snapshot could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotDecodeError {
    /// The bytes were empty.
    #[error("empty registry snapshot")]
    Empty,
    /// The snapshot was written by an unknown format version.
    #[error("unsupported registry snapshot version {0}")]
    Version(u8),
    /// The body did not decode.
    #[error("corrupt registry snapshot: {0}")]
    Decode(#[from] postcard::Error),
}

/// The replicated registry: names, locks and configuration.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Registry {
    names: BTreeMap<String, Binding>,
    locks: BTreeMap<String, LockGrant>,
    config: BTreeMap<String, String>,
    /// Per lock, the processes queued for it in order, each with the index of the entry
    /// that queued it.
    waiters: BTreeMap<String, VecDeque<(Pid, u64)>>,
    /// Derived from `names`, never encoded: per owning process, how many of its bindings
    /// each log index created. The periodic release sweeps visit owners instead of every
    /// name, so their cost does not grow with the registry.
    #[serde(skip)]
    owners: BTreeMap<Pid, BTreeMap<u64, u32>>,
}

impl PartialEq for Registry {
    fn eq(&self, other: &Self) -> bool {
        // `owners` follows from `names`.
        self.names == other.names
            && self.locks == other.locks
            && self.config == other.config
            && self.waiters == other.waiters
    }
}

impl Eq for Registry {}

/// The registry as snapshot version 1 wrote it (before lock queues).
#[derive(Deserialize)]
struct RegistryV1 {
    names: BTreeMap<String, Binding>,
    locks: BTreeMap<String, LockGrantV1>,
    config: BTreeMap<String, String>,
}

/// A lock grant as snapshot version 1 wrote it.
#[derive(Deserialize)]
struct LockGrantV1 {
    holder: Pid,
    token: u64,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// Binds `name`, keeping the owner index.
    fn bind(&mut self, name: String, binding: Binding) {
        *self
            .owners
            .entry(binding.pid)
            .or_default()
            .entry(binding.index)
            .or_default() += 1;
        if let Some(old) = self.names.insert(name, binding) {
            self.forget_owner(&old);
        }
    }

    /// Unbinds `name`, keeping the owner index.
    fn unbind(&mut self, name: &str) -> Option<Binding> {
        let old = self.names.remove(name)?;
        self.forget_owner(&old);
        Some(old)
    }

    fn forget_owner(&mut self, binding: &Binding) {
        let Some(at) = self.owners.get_mut(&binding.pid) else {
            return;
        };
        if let Some(count) = at.get_mut(&binding.index) {
            *count -= 1;
            if *count == 0 {
                at.remove(&binding.index);
            }
        }
        if at.is_empty() {
            self.owners.remove(&binding.pid);
        }
    }

    /// Rebuilds the owner index from the names (after decoding).
    fn index_owners(mut self) -> Self {
        let mut owners: BTreeMap<Pid, BTreeMap<u64, u32>> = BTreeMap::new();
        for b in self.names.values() {
            *owners.entry(b.pid).or_default().entry(b.index).or_default() += 1;
        }
        self.owners = owners;
        self
    }

    /// Applies the command of the log entry at `index`. Indexes must increase across calls.
    pub fn apply(&mut self, index: u64, command: &Command) -> Outcome {
        self.apply_in_entry(index, command, &mut Vec::new())
    }

    /// Applies `command` of the entry at `index`, where `granted` lists the locks already
    /// granted by this entry: a lock is granted at most once per entry, so that its fencing
    /// tokens (entry indexes) strictly increase.
    fn apply_in_entry(
        &mut self,
        index: u64,
        command: &Command,
        granted: &mut Vec<(String, LockGrant)>,
    ) -> Outcome {
        match command {
            Command::Batch(commands) => Outcome::Batch(
                commands
                    .iter()
                    .map(|c| self.apply_in_entry(index, c, granted))
                    .collect(),
            ),
            other => self.apply_one(index, other, granted),
        }
    }

    /// Grants the free lock `name` to `holder` by the entry at `index`, unless this entry
    /// granted it already (then `Err` with that grant).
    fn grant(
        &mut self,
        name: &str,
        holder: Pid,
        index: u64,
        granted: &mut Vec<(String, LockGrant)>,
    ) -> Result<LockGrant, LockGrant> {
        if let Some((_, earlier)) = granted.iter().find(|(n, _)| n == name) {
            return Err(*earlier);
        }
        let asked = self
            .waiters
            .get(name)
            .and_then(|q| q.iter().find(|(p, _)| *p == holder))
            .map_or(index, |(_, at)| *at);
        let grant = LockGrant {
            holder,
            token: index,
            asked,
        };
        self.locks.insert(name.to_string(), grant);
        self.dequeue(name, holder);
        granted.push((name.to_string(), grant));
        Ok(grant)
    }

    fn dequeue(&mut self, name: &str, holder: Pid) {
        if let Some(queue) = self.waiters.get_mut(name) {
            queue.retain(|(p, _)| *p != holder);
            if queue.is_empty() {
                self.waiters.remove(name);
            }
        }
    }

    /// The free lock `name` goes to the first process queued for it, if any (and if this
    /// entry may still grant it).
    fn hand_over(&mut self, name: &str, index: u64, granted: &mut Vec<(String, LockGrant)>) {
        if self.locks.contains_key(name) {
            return;
        }
        let next = self
            .waiters
            .get(name)
            .and_then(|q| q.front())
            .map(|(p, _)| *p);
        if let Some(next) = next {
            let _ = self.grant(name, next, index, granted);
        }
    }

    /// `Lock` and `LockOrWait`: the grant, or who holds the lock.
    fn acquire(
        &mut self,
        name: &str,
        holder: Pid,
        index: u64,
        granted: &mut Vec<(String, LockGrant)>,
    ) -> Result<LockGrant, LockGrant> {
        // A free lock goes to whoever queued first.
        self.hand_over(name, index, granted);
        match self.locks.get(name) {
            Some(g) if g.holder == holder => Ok(*g),
            Some(g) => Err(*g),
            None => self.grant(name, holder, index, granted),
        }
    }

    fn apply_one(
        &mut self,
        index: u64,
        command: &Command,
        granted: &mut Vec<(String, LockGrant)>,
    ) -> Outcome {
        match command {
            // Handled by `apply_in_entry`.
            Command::Batch(_) => Outcome::Noop,
            Command::Register { name, pid, scope } => {
                if !matches!(scope, Scope::Consistent | Scope::Strong) {
                    return Outcome::ScopeNotReplicated { scope: *scope };
                }
                match self.names.get(name) {
                    Some(b) if b.pid == *pid => Outcome::Registered,
                    Some(b) => Outcome::NameTaken { owner: b.pid },
                    None => {
                        self.bind(
                            name.clone(),
                            Binding {
                                pid: *pid,
                                scope: *scope,
                                index,
                            },
                        );
                        Outcome::Registered
                    }
                }
            }
            Command::Unregister { name, pid } => match self.names.get(name) {
                Some(b) if b.pid == *pid => {
                    self.unbind(name);
                    Outcome::Unregistered
                }
                other => Outcome::NotOwner {
                    owner: other.map(|b| b.pid),
                },
            },
            Command::ReleaseNode {
                node,
                before_creation,
                up_to_index,
            } => {
                let gone = |pid: &Pid, index: u64| {
                    pid.node == *node
                        && before_creation.is_none_or(|c| pid.creation < c)
                        && up_to_index.is_none_or(|i| index <= i)
                };
                let names: Vec<String> = self
                    .names
                    .iter()
                    .filter(|(_, b)| gone(&b.pid, b.index))
                    .map(|(n, _)| n.clone())
                    .collect();
                let locks: Vec<String> = self
                    .locks
                    .iter()
                    .filter(|(_, g)| gone(&g.holder, g.asked))
                    .map(|(n, _)| n.clone())
                    .collect();
                for n in &names {
                    self.unbind(n);
                }
                for queue in self.waiters.values_mut() {
                    queue.retain(|(p, at)| !gone(p, *at));
                }
                self.waiters.retain(|_, q| !q.is_empty());
                for n in &locks {
                    self.locks.remove(n);
                    self.hand_over(n, index, granted);
                }
                Outcome::Released { names, locks }
            }
            Command::Lock { name, holder } => match self.acquire(name, *holder, index, granted) {
                Ok(g) if g.holder == *holder => Outcome::LockGranted { token: g.token },
                Ok(g) | Err(g) => Outcome::LockBusy {
                    holder: g.holder,
                    token: g.token,
                },
            },
            Command::LockOrWait { name, holder } => {
                match self.acquire(name, *holder, index, granted) {
                    Ok(g) if g.holder == *holder => Outcome::LockGranted { token: g.token },
                    Ok(g) | Err(g) => {
                        let queue = self.waiters.entry(name.clone()).or_default();
                        if !queue.iter().any(|(p, _)| p == holder) {
                            queue.push_back((*holder, index));
                        }
                        Outcome::LockQueued {
                            holder: g.holder,
                            token: g.token,
                        }
                    }
                }
            }
            Command::Abandon { name, holder } => {
                self.dequeue(name, *holder);
                if self.locks.get(name).is_some_and(|g| g.holder == *holder) {
                    self.locks.remove(name);
                    self.hand_over(name, index, granted);
                }
                Outcome::Abandoned
            }
            Command::Unlock { name, token } => match self.unlock_decision(name, *token) {
                Outcome::Unlocked => {
                    self.locks.remove(name);
                    self.hand_over(name, index, granted);
                    Outcome::Unlocked
                }
                refused => refused,
            },
            Command::SetConfig { key, value } => {
                self.config.insert(key.clone(), value.clone());
                Outcome::ConfigSet
            }
        }
    }

    /// What [`Command::Unlock`] of `name` under `token` does to the registry as it is now,
    /// without doing it: [`Outcome::Unlocked`] if `token` is the lock's current grant (the
    /// caller's grant is released), [`Outcome::StaleToken`] with the current grant
    /// otherwise (the caller's grant is gone already; whoever holds the lock now keeps it).
    pub fn unlock_decision(&self, name: &str, token: u64) -> Outcome {
        match self.locks.get(name) {
            Some(g) if g.token == token => Outcome::Unlocked,
            current => Outcome::StaleToken {
                current: current.map(|g| (g.holder, g.token)),
            },
        }
    }

    /// The binding of `name`, if any.
    pub fn whereis(&self, name: &str) -> Option<&Binding> {
        self.names.get(name)
    }

    /// All bindings, ordered by name.
    pub fn names(&self) -> &BTreeMap<String, Binding> {
        &self.names
    }

    /// Every process that owns names, in pid order, with the log index of its oldest
    /// binding. Visits owners, not names.
    pub fn name_owners(&self) -> impl Iterator<Item = (Pid, u64)> + '_ {
        self.owners
            .iter()
            .filter_map(|(pid, at)| Some((*pid, *at.keys().next()?)))
    }

    /// All held locks, ordered by name.
    pub fn locks(&self) -> &BTreeMap<String, LockGrant> {
        &self.locks
    }

    /// The processes queued for each lock, in order (locks without a queue are absent).
    pub fn lock_waiters(&self) -> impl Iterator<Item = (&str, Pid)> {
        self.lock_waiters_since().map(|(name, pid, _)| (name, pid))
    }

    /// Like [`Registry::lock_waiters`], with the index of the entry that queued each.
    pub fn lock_waiters_since(&self) -> impl Iterator<Item = (&str, Pid, u64)> {
        self.waiters.iter().flat_map(|(name, queue)| {
            queue
                .iter()
                .map(move |(pid, at)| (name.as_str(), *pid, *at))
        })
    }

    /// All configuration values, ordered by key.
    pub fn config(&self) -> &BTreeMap<String, String> {
        &self.config
    }

    /// Encodes the registry: a [`SNAPSHOT_VERSION`] byte, then the postcard body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![SNAPSHOT_VERSION];
        // Encoding maps of strings and plain structs into a Vec cannot fail.
        out.extend(postcard::to_stdvec(self).unwrap_or_default());
        out
    }

    /// Decodes bytes written by [`Registry::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SnapshotDecodeError> {
        match bytes.split_first() {
            None => Err(SnapshotDecodeError::Empty),
            Some((&SNAPSHOT_VERSION, body)) => {
                Ok(postcard::from_bytes::<Registry>(body)?.index_owners())
            }
            Some((1, body)) => {
                let v1: RegistryV1 = postcard::from_bytes(body)?;
                let locks = v1
                    .locks
                    .into_iter()
                    .map(|(name, g)| {
                        let grant = LockGrant {
                            holder: g.holder,
                            token: g.token,
                            asked: g.token,
                        };
                        (name, grant)
                    })
                    .collect();
                Ok(Registry {
                    names: v1.names,
                    locks,
                    config: v1.config,
                    waiters: BTreeMap::new(),
                    owners: BTreeMap::new(),
                }
                .index_owners())
            }
            Some((&v, _)) => Err(SnapshotDecodeError::Version(v)),
        }
    }
}

#[cfg(test)]
#[path = "registry_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "registry_unlock_tests.rs"]
mod unlock_tests;
