//! Self-fencing: what a node stops claiming once it learns that the cluster declared it
//! down (membership's `Fenced` event, before it rejoins as a new generation).
//!
//! While it was cut off, the others released what it held: the Raft leader its Consistent
//! and Strong names and its locks, every member its process-group members. The node may
//! still believe it holds them (its registry view is stale, its processes carry on), so it
//! drops them itself: it releases each name and lock it sees held by its own processes
//! (idempotent, harmless if already released), marks its lock guards lost, takes its
//! processes out of their groups (so the rejoin does not bring them back unasked), and tells
//! each process that asked to be told what it lost. [`Fence`] decides; the node's shell
//! carries out the [`FenceAction`]s.

use std::collections::BTreeMap;

use atoll_core::{NodeId, Pid};

/// What this node's registry view and group table say it holds when it is fenced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holdings {
    /// Consistent and Strong names, with their owners.
    pub names: Vec<(String, Pid)>,
    /// Consensus locks: name, holder, fencing token.
    pub locks: Vec<(String, Pid, u64)>,
    /// Process-group memberships: group, member.
    pub groups: Vec<(String, Pid)>,
}

/// What one process lost when its node was fenced: the message a process that asked
/// (`Node::notify_fenced`) receives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FenceNotice {
    /// The generation the cluster declared down.
    pub old_generation: u64,
    /// The generation the node rejoins as.
    pub new_generation: u64,
    /// The Consistent and Strong names it held.
    pub names: Vec<String>,
    /// The locks it held, with their fencing tokens.
    pub locks: Vec<(String, u64)>,
    /// The groups it was in.
    pub groups: Vec<String>,
}

/// One thing the node does when fenced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FenceAction {
    /// Release the consensus name `name` of `pid`.
    Unregister {
        /// The name.
        name: String,
        /// Its owner.
        pid: Pid,
    },
    /// Release the lock `name` granted under `token`, and mark its guards lost.
    Unlock {
        /// The lock.
        name: String,
        /// Its holder.
        holder: Pid,
        /// The grant's fencing token.
        token: u64,
    },
    /// Take `pid` out of `group`.
    LeaveGroup {
        /// The group.
        group: String,
        /// The member.
        pid: Pid,
    },
    /// Tell `pid` what it lost.
    Tell {
        /// The process.
        pid: Pid,
        /// What it lost.
        notice: FenceNotice,
    },
}

/// The fencing decisions of one node (one incarnation: `me`, `creation`).
#[derive(Debug, Clone)]
pub struct Fence {
    me: NodeId,
    creation: u32,
    /// The newest generation already fenced.
    fenced: u64,
}

impl Fence {
    /// A node that has not been fenced yet.
    pub fn new(me: NodeId, creation: u32) -> Fence {
        Fence {
            me,
            creation,
            fenced: 0,
        }
    }

    /// The newest generation fenced so far (0: none).
    pub fn fenced(&self) -> u64 {
        self.fenced
    }

    /// The node learned that its generation `old` was declared down and rejoins as `new`,
    /// holding `holdings` (as far as it knows). Returns what to do: releases first, then
    /// one notice per process that lost anything. Nothing for a generation already fenced
    /// (the event repeated, or arrived late), and nothing about processes of other
    /// incarnations or nodes.
    pub fn on_fenced(&mut self, old: u64, new: u64, holdings: &Holdings) -> Vec<FenceAction> {
        if old <= self.fenced || new <= old {
            return Vec::new();
        }
        self.fenced = old;
        let ours = |pid: &Pid| pid.node == self.me && pid.creation == self.creation;
        let mut actions = Vec::new();
        let mut notices: BTreeMap<Pid, FenceNotice> = BTreeMap::new();
        let blank = FenceNotice {
            old_generation: old,
            new_generation: new,
            ..FenceNotice::default()
        };
        for (name, pid) in holdings.names.iter().filter(|(_, p)| ours(p)) {
            actions.push(FenceAction::Unregister {
                name: name.clone(),
                pid: *pid,
            });
            notices
                .entry(*pid)
                .or_insert_with(|| blank.clone())
                .names
                .push(name.clone());
        }
        for (name, holder, token) in holdings.locks.iter().filter(|(_, p, _)| ours(p)) {
            actions.push(FenceAction::Unlock {
                name: name.clone(),
                holder: *holder,
                token: *token,
            });
            notices
                .entry(*holder)
                .or_insert_with(|| blank.clone())
                .locks
                .push((name.clone(), *token));
        }
        for (group, pid) in holdings.groups.iter().filter(|(_, p)| ours(p)) {
            actions.push(FenceAction::LeaveGroup {
                group: group.clone(),
                pid: *pid,
            });
            notices
                .entry(*pid)
                .or_insert_with(|| blank.clone())
                .groups
                .push(group.clone());
        }
        actions.extend(
            notices
                .into_iter()
                .map(|(pid, notice)| FenceAction::Tell { pid, notice }),
        );
        actions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(b: u8) -> NodeId {
        NodeId::from_bytes([b; 16])
    }

    fn pid(n: u8, creation: u32, serial: u64) -> Pid {
        Pid::new(node(n), creation, serial)
    }

    fn holdings() -> Holdings {
        Holdings {
            names: vec![
                ("mine".into(), pid(1, 7, 1)),
                ("theirs".into(), pid(2, 3, 1)),
                ("older-run".into(), pid(1, 6, 1)),
            ],
            locks: vec![
                ("l".into(), pid(1, 7, 1), 12),
                ("m".into(), pid(2, 3, 4), 9),
            ],
            groups: vec![("room".into(), pid(1, 7, 2)), ("room".into(), pid(2, 3, 2))],
        }
    }

    #[test]
    fn a_fenced_node_releases_what_its_own_processes_hold_and_tells_each_once() {
        let mut f = Fence::new(node(1), 7);
        let actions = f.on_fenced(5, 6, &holdings());
        assert_eq!(
            actions,
            vec![
                FenceAction::Unregister {
                    name: "mine".into(),
                    pid: pid(1, 7, 1)
                },
                FenceAction::Unlock {
                    name: "l".into(),
                    holder: pid(1, 7, 1),
                    token: 12
                },
                FenceAction::LeaveGroup {
                    group: "room".into(),
                    pid: pid(1, 7, 2)
                },
                FenceAction::Tell {
                    pid: pid(1, 7, 1),
                    notice: FenceNotice {
                        old_generation: 5,
                        new_generation: 6,
                        names: vec!["mine".into()],
                        locks: vec![("l".into(), 12)],
                        groups: vec![],
                    }
                },
                FenceAction::Tell {
                    pid: pid(1, 7, 2),
                    notice: FenceNotice {
                        old_generation: 5,
                        new_generation: 6,
                        names: vec![],
                        locks: vec![],
                        groups: vec!["room".into()],
                    }
                },
            ]
        );
        assert_eq!(f.fenced(), 5);
    }

    #[test]
    fn a_repeated_or_late_fencing_does_nothing() {
        let mut f = Fence::new(node(1), 7);
        assert!(!f.on_fenced(5, 6, &holdings()).is_empty());
        assert!(f.on_fenced(5, 6, &holdings()).is_empty());
        assert!(f.on_fenced(4, 5, &holdings()).is_empty());
        // Fenced again as the generation it rejoined as: a new round.
        assert!(!f.on_fenced(6, 7, &holdings()).is_empty());
        assert_eq!(f.fenced(), 6);
    }

    #[test]
    fn an_event_that_does_not_move_on_is_ignored() {
        let mut f = Fence::new(node(1), 7);
        assert!(f.on_fenced(5, 5, &holdings()).is_empty());
        assert_eq!(f.fenced(), 0);
    }

    #[test]
    fn a_node_holding_nothing_does_nothing_but_remembers_the_generation() {
        let mut f = Fence::new(node(1), 7);
        assert!(f.on_fenced(5, 6, &Holdings::default()).is_empty());
        assert_eq!(f.fenced(), 5);
    }
}
