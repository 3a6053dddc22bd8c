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
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registry {
    names: BTreeMap<String, Binding>,
    locks: BTreeMap<String, LockGrant>,
    config: BTreeMap<String, String>,
    /// Per lock, the processes queued for it in order, each with the index of the entry
    /// that queued it.
    waiters: BTreeMap<String, VecDeque<(Pid, u64)>>,
}

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
                        self.names.insert(
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
                    self.names.remove(name);
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
                    self.names.remove(n);
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
            Some((&SNAPSHOT_VERSION, body)) => Ok(postcard::from_bytes(body)?),
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
                })
            }
            Some((&v, _)) => Err(SnapshotDecodeError::Version(v)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(n: u8) -> NodeId {
        NodeId::from_bytes([n; 16])
    }

    fn pid(n: u8, creation: u32, serial: u64) -> Pid {
        Pid::new(node(n), creation, serial)
    }

    fn register(name: &str, pid: Pid) -> Command {
        Command::Register {
            name: name.into(),
            pid,
            scope: Scope::Consistent,
        }
    }

    #[test]
    fn first_registration_wins() {
        let mut r = Registry::new();
        assert_eq!(
            r.apply(1, &register("a", pid(1, 1, 1))),
            Outcome::Registered
        );
        assert_eq!(
            r.apply(2, &register("a", pid(2, 1, 1))),
            Outcome::NameTaken {
                owner: pid(1, 1, 1)
            }
        );
        // Re-registering by the owner is idempotent and keeps the original index.
        assert_eq!(
            r.apply(3, &register("a", pid(1, 1, 1))),
            Outcome::Registered
        );
        assert_eq!(r.whereis("a").map(|b| b.index), Some(1));
    }

    #[test]
    fn local_and_eventual_names_are_not_replicated() {
        let mut r = Registry::new();
        for scope in [Scope::Local, Scope::Eventual] {
            let cmd = Command::Register {
                name: "a".into(),
                pid: pid(1, 1, 1),
                scope,
            };
            assert_eq!(r.apply(1, &cmd), Outcome::ScopeNotReplicated { scope });
        }
        assert!(r.names().is_empty());
    }

    #[test]
    fn only_the_owner_unregisters() {
        let mut r = Registry::new();
        r.apply(1, &register("a", pid(1, 1, 1)));
        let by_other = Command::Unregister {
            name: "a".into(),
            pid: pid(2, 1, 1),
        };
        assert_eq!(
            r.apply(2, &by_other),
            Outcome::NotOwner {
                owner: Some(pid(1, 1, 1))
            }
        );
        let by_owner = Command::Unregister {
            name: "a".into(),
            pid: pid(1, 1, 1),
        };
        assert_eq!(r.apply(3, &by_owner), Outcome::Unregistered);
        assert_eq!(r.apply(4, &by_owner), Outcome::NotOwner { owner: None });
    }

    fn wait(holder: Pid) -> Command {
        Command::LockOrWait {
            name: "L".into(),
            holder,
        }
    }

    fn holder_of(r: &Registry) -> Option<(Pid, u64)> {
        r.locks().get("L").map(|g| (g.holder, g.token))
    }

    #[test]
    fn a_release_hands_the_lock_to_the_first_waiter_in_the_same_entry() {
        let (a, b, c) = (pid(1, 1, 1), pid(2, 1, 1), pid(3, 1, 1));
        let mut r = Registry::new();
        assert_eq!(r.apply(1, &wait(a)), Outcome::LockGranted { token: 1 });
        let queued = Outcome::LockQueued {
            holder: a,
            token: 1,
        };
        assert_eq!(r.apply(2, &wait(b)), queued);
        assert_eq!(r.apply(3, &wait(c)), queued);
        // Asking again keeps one place in the queue.
        assert_eq!(r.apply(4, &wait(c)), queued);
        assert_eq!(r.lock_waiters().count(), 2);
        let unlock = |token| Command::Unlock {
            name: "L".into(),
            token,
        };
        assert_eq!(r.apply(5, &unlock(1)), Outcome::Unlocked);
        assert_eq!(holder_of(&r), Some((b, 5)));
        // A try by someone else does not jump the queue.
        assert!(matches!(
            r.apply(
                6,
                &Command::Lock {
                    name: "L".into(),
                    holder: a
                }
            ),
            Outcome::LockBusy { holder, token: 5 } if holder == b
        ));
        let abandon = |holder| Command::Abandon {
            name: "L".into(),
            holder,
        };
        assert_eq!(r.apply(7, &abandon(c)), Outcome::Abandoned);
        assert_eq!(r.apply(8, &unlock(5)), Outcome::Unlocked);
        assert_eq!(holder_of(&r), None);
        assert_eq!(r.lock_waiters().count(), 0);

        // A waiter handed the lock that abandons it passes it on.
        r.apply(9, &wait(a));
        r.apply(10, &wait(b));
        r.apply(11, &wait(c));
        r.apply(12, &unlock(9));
        assert_eq!(holder_of(&r), Some((b, 12)));
        r.apply(13, &abandon(b));
        assert_eq!(holder_of(&r), Some((c, 13)));
    }

    #[test]
    fn a_lock_is_granted_once_per_entry_even_through_the_queue() {
        let (a, b, c) = (pid(1, 1, 1), pid(2, 1, 1), pid(3, 1, 1));
        let mut r = Registry::new();
        r.apply(1, &wait(a));
        r.apply(2, &wait(b));
        r.apply(3, &wait(c));
        // b is handed the lock and abandons it in the same entry: c must wait for the next
        // entry, or two grants would share token 4.
        let out = r.apply(
            4,
            &Command::Batch(vec![
                Command::Unlock {
                    name: "L".into(),
                    token: 1,
                },
                Command::Abandon {
                    name: "L".into(),
                    holder: b,
                },
            ]),
        );
        assert_eq!(
            out,
            Outcome::Batch(vec![Outcome::Unlocked, Outcome::Abandoned])
        );
        assert_eq!(holder_of(&r), None);
        assert_eq!(r.apply(5, &wait(c)), Outcome::LockGranted { token: 5 });
    }

    #[test]
    fn a_lost_node_hands_its_lock_on_and_leaves_the_queues() {
        let (a, b, c) = (pid(1, 1, 1), pid(2, 1, 1), pid(3, 1, 1));
        let mut r = Registry::new();
        r.apply(1, &wait(a));
        r.apply(2, &wait(b));
        r.apply(3, &wait(c));
        let release = |n| Command::ReleaseNode {
            node: node(n),
            before_creation: None,
            up_to_index: None,
        };
        r.apply(4, &release(2));
        assert_eq!(holder_of(&r), Some((a, 1)));
        r.apply(5, &release(1));
        assert_eq!(holder_of(&r), Some((c, 5)));
        assert_eq!(r.lock_waiters().count(), 0);
    }

    #[test]
    fn a_lost_nodes_waiter_handed_the_lock_after_the_loss_point_still_loses_it() {
        let (a, b) = (pid(1, 1, 1), pid(2, 1, 1));
        let mut r = Registry::new();
        r.apply(1, &wait(a));
        r.apply(2, &wait(b));
        // Node 2 is declared lost at index 2; the lock reaches its waiter at 3.
        r.apply(
            3,
            &Command::Unlock {
                name: "L".into(),
                token: 1,
            },
        );
        assert_eq!(holder_of(&r), Some((b, 3)));
        let out = r.apply(
            4,
            &Command::ReleaseNode {
                node: node(2),
                before_creation: None,
                up_to_index: Some(2),
            },
        );
        assert_eq!(
            out,
            Outcome::Released {
                names: vec![],
                locks: vec!["L".into()]
            }
        );
        assert_eq!(holder_of(&r), None);
    }

    #[test]
    fn version_1_snapshots_still_load() {
        let mut names = BTreeMap::new();
        names.insert(
            "n".to_string(),
            Binding {
                pid: pid(1, 1, 1),
                scope: Scope::Consistent,
                index: 3,
            },
        );
        // A v1 grant was (holder, token).
        let mut locks = BTreeMap::new();
        locks.insert("l".to_string(), (pid(1, 1, 2), 7u64));
        let v1 = (names, locks, BTreeMap::<String, String>::new());
        let mut bytes = vec![1u8];
        bytes.extend(postcard::to_stdvec(&v1).unwrap());
        let r = Registry::from_bytes(&bytes).unwrap();
        assert_eq!(r.whereis("n").map(|b| b.index), Some(3));
        assert_eq!(
            r.locks().get("l"),
            Some(&LockGrant {
                holder: pid(1, 1, 2),
                token: 7,
                asked: 7
            })
        );
        assert_eq!(r.lock_waiters().count(), 0);
    }

    #[test]
    fn release_up_to_an_index_keeps_what_the_node_claimed_since() {
        let mut r = Registry::new();
        r.apply(1, &register("before", pid(1, 1, 1)));
        r.apply(
            2,
            &Command::Lock {
                name: "l-before".into(),
                holder: pid(1, 1, 2),
            },
        );
        r.apply(3, &register("since", pid(1, 1, 3)));
        r.apply(
            4,
            &Command::Lock {
                name: "l-since".into(),
                holder: pid(1, 1, 4),
            },
        );
        let out = r.apply(
            5,
            &Command::ReleaseNode {
                node: node(1),
                before_creation: None,
                up_to_index: Some(2),
            },
        );
        assert_eq!(
            out,
            Outcome::Released {
                names: vec!["before".into()],
                locks: vec!["l-before".into()],
            }
        );
        assert!(r.whereis("since").is_some());
        assert!(r.locks().contains_key("l-since"));
    }

    #[test]
    fn release_node_drops_its_names_and_locks() {
        let mut r = Registry::new();
        r.apply(1, &register("old", pid(1, 1, 1)));
        r.apply(2, &register("new", pid(1, 2, 1)));
        r.apply(3, &register("other", pid(2, 1, 1)));
        r.apply(
            4,
            &Command::Lock {
                name: "l-old".into(),
                holder: pid(1, 1, 2),
            },
        );
        r.apply(
            5,
            &Command::Lock {
                name: "l-other".into(),
                holder: pid(2, 1, 2),
            },
        );
        let out = r.apply(
            6,
            &Command::ReleaseNode {
                node: node(1),
                before_creation: Some(2),
                up_to_index: None,
            },
        );
        assert_eq!(
            out,
            Outcome::Released {
                names: vec!["old".into()],
                locks: vec!["l-old".into()],
            }
        );
        assert!(r.whereis("new").is_some());
        let out = r.apply(
            7,
            &Command::ReleaseNode {
                node: node(1),
                before_creation: None,
                up_to_index: None,
            },
        );
        assert_eq!(
            out,
            Outcome::Released {
                names: vec!["new".into()],
                locks: vec![],
            }
        );
        assert_eq!(r.names().keys().collect::<Vec<_>>(), ["other"]);
        assert_eq!(r.locks().keys().collect::<Vec<_>>(), ["l-other"]);
    }

    #[test]
    fn lock_tokens_strictly_increase_and_fence() {
        let mut r = Registry::new();
        let (a, b) = (pid(1, 1, 1), pid(2, 1, 1));
        let lock = |holder| Command::Lock {
            name: "l".into(),
            holder,
        };
        let mut last = 0;
        let mut index = 0;
        for round in 0..5 {
            let holder = if round % 2 == 0 { a } else { b };
            let other = if round % 2 == 0 { b } else { a };
            index += 1;
            let Outcome::LockGranted { token } = r.apply(index, &lock(holder)) else {
                panic!("lock not granted in round {round}");
            };
            assert!(token > last, "token {token} after {last}");
            last = token;
            index += 1;
            assert_eq!(
                r.apply(index, &lock(holder)),
                Outcome::LockGranted { token }
            );
            index += 1;
            assert_eq!(
                r.apply(index, &lock(other)),
                Outcome::LockBusy { holder, token }
            );
            index += 1;
            let stale = Command::Unlock {
                name: "l".into(),
                token: token - 1,
            };
            assert_eq!(
                r.apply(index, &stale),
                Outcome::StaleToken {
                    current: Some((holder, token))
                }
            );
            index += 1;
            let unlock = Command::Unlock {
                name: "l".into(),
                token,
            };
            assert_eq!(r.apply(index, &unlock), Outcome::Unlocked);
            index += 1;
            assert_eq!(
                r.apply(index, &unlock),
                Outcome::StaleToken { current: None }
            );
        }
    }

    #[test]
    fn snapshot_round_trips() {
        let mut r = Registry::new();
        r.apply(1, &register("a", pid(1, 1, 1)));
        r.apply(
            2,
            &Command::Lock {
                name: "l".into(),
                holder: pid(2, 3, 4),
            },
        );
        r.apply(
            3,
            &Command::SetConfig {
                key: "k".into(),
                value: "v".into(),
            },
        );
        let bytes = r.to_bytes();
        assert_eq!(bytes[0], SNAPSHOT_VERSION);
        assert_eq!(Registry::from_bytes(&bytes).ok(), Some(r.clone()));
        assert_eq!(
            Registry::from_bytes(&Registry::new().to_bytes()).ok(),
            Some(Registry::new())
        );
    }

    #[test]
    fn bad_snapshots_are_typed_errors() {
        assert!(matches!(
            Registry::from_bytes(&[]),
            Err(SnapshotDecodeError::Empty)
        ));
        assert!(matches!(
            Registry::from_bytes(&[9, 0]),
            Err(SnapshotDecodeError::Version(9))
        ));
        assert!(matches!(
            Registry::from_bytes(&[SNAPSHOT_VERSION, 0xff]),
            Err(SnapshotDecodeError::Decode(_))
        ));
    }

    #[test]
    fn a_batch_applies_in_order_under_one_index() {
        let mut r = Registry::new();
        let batch = Command::Batch(vec![
            register("a", pid(1, 1, 1)),
            register("a", pid(2, 1, 1)),
            register("b", pid(2, 1, 1)),
        ]);
        assert_eq!(
            r.apply(7, &batch),
            Outcome::Batch(vec![
                Outcome::Registered,
                Outcome::NameTaken {
                    owner: pid(1, 1, 1)
                },
                Outcome::Registered,
            ])
        );
        assert_eq!(
            r.whereis("a").map(|b| (b.pid, b.index)),
            Some((pid(1, 1, 1), 7))
        );
        assert_eq!(r.whereis("b").map(|b| b.index), Some(7));
    }

    #[test]
    fn one_entry_grants_a_lock_at_most_once() {
        let mut r = Registry::new();
        let lock = |holder| Command::Lock {
            name: "l".into(),
            holder,
        };
        // An older grant is released and the lock contended, all in entry 9: the first
        // contender gets it, under token 9, and a release guessed in the same entry does
        // not let a second grant reuse that token.
        assert_eq!(
            r.apply(3, &lock(pid(1, 1, 1))),
            Outcome::LockGranted { token: 3 }
        );
        let batch = Command::Batch(vec![
            Command::Unlock {
                name: "l".into(),
                token: 3,
            },
            lock(pid(2, 1, 1)),
            lock(pid(3, 1, 1)),
            Command::Unlock {
                name: "l".into(),
                token: 9,
            },
            lock(pid(3, 1, 1)),
            lock(pid(2, 1, 1)),
        ]);
        let busy = Outcome::LockBusy {
            holder: pid(2, 1, 1),
            token: 9,
        };
        assert_eq!(
            r.apply(9, &batch),
            Outcome::Batch(vec![
                Outcome::Unlocked,
                Outcome::LockGranted { token: 9 },
                busy.clone(),
                Outcome::Unlocked,
                busy.clone(),
                busy,
            ])
        );
        assert!(r.locks().is_empty());
        assert_eq!(
            r.apply(10, &lock(pid(3, 1, 1))),
            Outcome::LockGranted { token: 10 }
        );
    }
}

#[cfg(test)]
#[path = "registry_unlock_tests.rs"]
mod unlock_tests;
