//! The release policy for consensus names and locks: which releases the registry calls for,
//! given what this node knows of the cluster.
//!
//! - A process of this node that exited loses what it holds ([`orphans`]).
//! - A node whose member is lost (unreachable or left) loses what it held when this node
//!   saw it declared lost, and, every [`LOST_RECHECK`] while it stays lost, what it holds
//!   then; what it claims in between stands (it registered, so it is back, whatever this
//!   node's membership says yet). Only a leader carries these out, as its own decision.
//! - A node with a newer incarnation loses what its older incarnations held.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use atoll_core::{NodeId, Pid};
use atoll_raft::{Command, Registry};

/// How long after a member was first seen lost the leader releases again what its node
/// holds: a registration in flight when it died may have committed after the first release.
pub const LOST_RECHECK: Duration = Duration::from_secs(10);

/// A member seen lost, and the registry index up to which its node's names and locks are
/// released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LostSince {
    /// Bindings and grants asked for at or before this index are released.
    pub up_to_index: u64,
    /// When the member was seen lost (or the index last renewed).
    pub at: Instant,
}

/// What this node knows of another node, for the release policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// This very node, at this incarnation.
    Me(u32),
    /// Its member is declared unreachable or gone.
    Lost,
    /// Not lost; connected at this incarnation, if connected.
    Live(Option<u32>),
}

/// The releases the registry (at log `index`) calls for at time `now`, as `standing` tells
/// this node's view of each node. `lost` keeps, per lost node, the index up to which it
/// loses what it holds; entries are added, renewed and dropped here.
pub fn releases(
    index: u64,
    registry: &Registry,
    lost: &mut BTreeMap<NodeId, LostSince>,
    now: Instant,
    standing: impl Fn(NodeId) -> Standing,
) -> Vec<Command> {
    // Per node: the incarnations holding (or queued for) something, and the oldest index
    // at which it asked. Names are visited by owner: a sweep's cost follows the processes
    // holding names, not the names.
    let mut holders: BTreeMap<NodeId, (BTreeSet<u32>, u64)> = BTreeMap::new();
    let held = registry
        .name_owners()
        .chain(registry.locks().values().map(|g| (g.holder, g.asked)))
        .chain(registry.lock_waiters_since().map(|(_, pid, at)| (pid, at)));
    for (pid, at) in held {
        let entry = holders
            .entry(pid.node)
            .or_insert((BTreeSet::new(), u64::MAX));
        entry.0.insert(pid.creation);
        entry.1 = entry.1.min(at);
    }
    let mut out = Vec::new();
    for (node, (creations, oldest)) in holders {
        let current = match standing(node) {
            Standing::Me(creation) => Some(creation),
            Standing::Lost => {
                // Not renewed when the member shows up under a new generation that is not
                // live yet: that is the node coming back, and what it claims now stands.
                let fresh = LostSince {
                    up_to_index: index,
                    at: now,
                };
                let seen = lost.entry(node).or_insert(fresh);
                if now.duration_since(seen.at) >= LOST_RECHECK {
                    *seen = fresh;
                }
                if oldest <= seen.up_to_index {
                    out.push(Command::ReleaseNode {
                        node,
                        before_creation: None,
                        up_to_index: Some(seen.up_to_index),
                    });
                }
                continue;
            }
            Standing::Live(creation) => {
                lost.remove(&node);
                creation
            }
        };
        if let Some(current) = current
            && creations.first().is_some_and(|&oldest| oldest < current)
        {
            out.push(Command::ReleaseNode {
                node,
                before_creation: Some(current),
                up_to_index: None,
            });
        }
    }
    out
}

/// Whether a voter takes `command`, proposed to it, given what it knows of each node: a claim
/// (a name, a lock, a place in a lock's queue) for a process of a node it holds lost is
/// refused. That node's generation was declared down and what it held is being released;
/// a claim it makes before it rejoins (a partition healed before it heard) would be
/// released again by the next sweep after it was acknowledged.
pub fn admits(command: &Command, standing: impl Fn(NodeId) -> Standing) -> bool {
    let claimant = match command {
        Command::Register { pid, .. } => pid,
        Command::Lock { holder, .. } | Command::LockOrWait { holder, .. } => holder,
        _ => return true,
    };
    standing(claimant.node) != Standing::Lost
}

/// The releases for names, locks and lock queue places that `registry` gives to processes
/// of this node (`me` at incarnation `creation`) that no longer run (`alive` says which do).
pub fn orphans(
    me: NodeId,
    creation: u32,
    registry: &Registry,
    alive: impl Fn(Pid) -> bool,
) -> Vec<Command> {
    let orphaned = |pid: &Pid| pid.node == me && pid.creation == creation && !alive(*pid);
    // The owners first: the names are only looked through when one of them exited.
    let dead: BTreeSet<Pid> = registry
        .name_owners()
        .map(|(pid, _)| pid)
        .filter(|pid| orphaned(pid))
        .collect();
    let names = registry
        .names()
        .iter()
        .take(if dead.is_empty() { 0 } else { usize::MAX })
        .filter(|(_, b)| dead.contains(&b.pid))
        .map(|(name, b)| Command::Unregister {
            name: name.clone(),
            pid: b.pid,
        });
    let locks = registry
        .locks()
        .iter()
        .filter(|(_, g)| orphaned(&g.holder))
        .map(|(name, g)| Command::Unlock {
            name: name.clone(),
            token: g.token,
        });
    let waiters = registry
        .lock_waiters()
        .filter(|(_, pid)| orphaned(pid))
        .map(|(name, holder)| Command::Abandon {
            name: name.to_string(),
            holder,
        });
    names.chain(locks).chain(waiters).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(b: u8) -> NodeId {
        NodeId::from_bytes([b; 16])
    }

    fn pid(n: u8, creation: u32, serial: u64) -> Pid {
        Pid {
            node: node(n),
            creation,
            serial,
        }
    }

    /// Applies `command` at the next index and returns that index.
    fn apply(registry: &mut Registry, index: &mut u64, command: Command) {
        *index += 1;
        registry.apply(*index, &command);
    }

    fn register(registry: &mut Registry, index: &mut u64, name: &str, pid: Pid) {
        apply(
            registry,
            index,
            Command::Register {
                name: name.into(),
                pid,
                scope: atoll_core::Scope::Consistent,
            },
        );
    }

    #[test]
    fn claims_for_a_node_held_lost_are_refused_and_everything_else_taken() {
        let standing = |n: NodeId| {
            if n == node(2) {
                Standing::Lost
            } else {
                Standing::Live(Some(1))
            }
        };
        let register = |p| Command::Register {
            name: "x".into(),
            pid: p,
            scope: atoll_core::Scope::Consistent,
        };
        let lock = |p| Command::Lock {
            name: "l".into(),
            holder: p,
        };
        let queue = |p| Command::LockOrWait {
            name: "l".into(),
            holder: p,
        };
        for claim in [
            register(pid(2, 1, 1)),
            lock(pid(2, 1, 1)),
            queue(pid(2, 1, 1)),
        ] {
            assert!(!admits(&claim, standing), "{claim:?}");
        }
        for claim in [
            register(pid(3, 1, 1)),
            lock(pid(3, 1, 1)),
            queue(pid(3, 1, 1)),
        ] {
            assert!(admits(&claim, standing), "{claim:?}");
        }
        // Giving things up is always taken: it only shortens what the sweep releases.
        let unregister = Command::Unregister {
            name: "x".into(),
            pid: pid(2, 1, 1),
        };
        let unlock = Command::Unlock {
            name: "l".into(),
            token: 4,
        };
        assert!(admits(&unregister, standing));
        assert!(admits(&unlock, standing));
    }

    #[test]
    fn a_lost_node_loses_what_it_held_when_seen_lost_but_not_what_it_claims_after() {
        let mut registry = Registry::new();
        let mut index = 0;
        register(&mut registry, &mut index, "old", pid(2, 1, 1));
        let t0 = Instant::now();
        let mut lost = BTreeMap::new();
        let standing = |n: NodeId| {
            if n == node(2) {
                Standing::Lost
            } else {
                Standing::Live(None)
            }
        };
        let first = releases(index, &registry, &mut lost, t0, standing);
        assert_eq!(
            first,
            vec![Command::ReleaseNode {
                node: node(2),
                before_creation: None,
                up_to_index: Some(index),
            }]
        );
        let seen_at = index;
        // The release commits; the node comes back and registers before this node's
        // membership knows it: that claim stands.
        apply(&mut registry, &mut index, first.into_iter().next().unwrap());
        register(&mut registry, &mut index, "new", pid(2, 1, 2));
        let later = releases(index, &registry, &mut lost, t0, standing);
        assert!(later.is_empty(), "{later:?}");
        assert_eq!(lost[&node(2)].up_to_index, seen_at);
        // Still lost after the recheck period: what it holds then goes too.
        let much_later = releases(index, &registry, &mut lost, t0 + LOST_RECHECK, standing);
        assert_eq!(
            much_later,
            vec![Command::ReleaseNode {
                node: node(2),
                before_creation: None,
                up_to_index: Some(index),
            }]
        );
    }

    #[test]
    fn a_node_seen_live_again_is_forgotten_as_lost() {
        let mut registry = Registry::new();
        let mut index = 0;
        register(&mut registry, &mut index, "a", pid(2, 1, 1));
        let mut lost = BTreeMap::new();
        lost.insert(
            node(2),
            LostSince {
                up_to_index: 0,
                at: Instant::now(),
            },
        );
        let out = releases(index, &registry, &mut lost, Instant::now(), |_| {
            Standing::Live(Some(1))
        });
        assert!(out.is_empty());
        assert!(lost.is_empty());
    }

    #[test]
    fn older_incarnations_lose_their_names() {
        let mut registry = Registry::new();
        let mut index = 0;
        register(&mut registry, &mut index, "a", pid(2, 1, 1));
        register(&mut registry, &mut index, "b", pid(1, 3, 1));
        let mut lost = BTreeMap::new();
        let out = releases(index, &registry, &mut lost, Instant::now(), |n| {
            if n == node(1) {
                Standing::Me(4)
            } else {
                Standing::Live(Some(2))
            }
        });
        assert_eq!(
            out,
            vec![
                Command::ReleaseNode {
                    node: node(1),
                    before_creation: Some(4),
                    up_to_index: None,
                },
                Command::ReleaseNode {
                    node: node(2),
                    before_creation: Some(2),
                    up_to_index: None,
                },
            ]
        );
    }

    #[test]
    fn exited_local_processes_are_orphans_and_others_are_not() {
        let mut registry = Registry::new();
        let mut index = 0;
        register(&mut registry, &mut index, "dead", pid(1, 5, 1));
        register(&mut registry, &mut index, "alive", pid(1, 5, 2));
        register(&mut registry, &mut index, "older", pid(1, 4, 3));
        register(&mut registry, &mut index, "remote", pid(2, 5, 1));
        let out = orphans(node(1), 5, &registry, |p| p.serial == 2);
        assert_eq!(
            out,
            vec![Command::Unregister {
                name: "dead".into(),
                pid: pid(1, 5, 1),
            }]
        );
    }
}
