//! Process groups: named sets of processes spread over the cluster, in the manner of
//! Erlang's `pg`.
//!
//! Every node is the only authority on its own members: it tells each peer its full set
//! when they connect ([`GroupMessage::Sync`]) and every change after that
//! ([`GroupMessage::Join`], [`GroupMessage::Leave`]) on the same ordered control stream. A
//! peer accepts from a node only pids of that node, and forgets everything a node told it
//! when the node is lost. So a member that left or died while its node was cut off never
//! comes back after the partition heals: nobody but its own node could announce it, and its
//! node no longer does.
//!
//! This module is the state machine; the node carries the messages on its control streams.

use std::collections::{BTreeMap, BTreeSet};

use atoll_core::{NodeId, Pid};
pub use atoll_wire::GroupMessage;

/// Longest group name, in bytes.
pub const MAX_GROUP_NAME: usize = 255;
/// Most pids one message may carry.
pub const MAX_PIDS_PER_MESSAGE: usize = 65_536;

/// Why a group message from a peer was refused (and dropped whole).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GroupError {
    /// A node may only speak for its own processes.
    #[error("node {from} spoke for a process of node {owner}")]
    ForeignPid {
        /// The sender.
        from: NodeId,
        /// The node the pid belongs to.
        owner: NodeId,
    },
    /// A group name is empty or longer than [`MAX_GROUP_NAME`].
    #[error("group name of {0} bytes is not accepted")]
    BadName(usize),
    /// More pids than [`MAX_PIDS_PER_MESSAGE`].
    #[error("{0} pids in one message is more than accepted")]
    TooMany(usize),
}

type Membership = BTreeMap<String, BTreeSet<Pid>>;

/// This node's view of every group.
#[derive(Debug, Clone)]
pub struct Groups {
    me: NodeId,
    local: Membership,
    remote: BTreeMap<NodeId, Membership>,
}

impl Groups {
    /// Groups for the node `me`, empty.
    pub fn new(me: NodeId) -> Self {
        Groups {
            me,
            local: Membership::new(),
            remote: BTreeMap::new(),
        }
    }

    /// A local process joins `group`. Returns the message to send to every peer, or `None`
    /// when it was already a member.
    ///
    /// # Panics
    /// Never on input from the network; `pid` must be a pid of this node, which the node
    /// checks before calling.
    pub fn join(&mut self, group: &str, pid: Pid) -> Option<GroupMessage> {
        debug_assert_eq!(pid.node, self.me);
        self.local
            .entry(group.to_string())
            .or_default()
            .insert(pid)
            .then(|| GroupMessage::Join {
                group: group.to_string(),
                pids: vec![pid],
            })
    }

    /// A local process leaves `group`. Returns the message for the peers, or `None` when it
    /// was not a member.
    pub fn leave(&mut self, group: &str, pid: Pid) -> Option<GroupMessage> {
        let members = self.local.get_mut(group)?;
        if !members.remove(&pid) {
            return None;
        }
        if members.is_empty() {
            self.local.remove(group);
        }
        Some(GroupMessage::Leave {
            group: group.to_string(),
            pids: vec![pid],
        })
    }

    /// A local process exited: it leaves every group it was in. Returns the messages for the
    /// peers.
    pub fn exited(&mut self, pid: Pid) -> Vec<GroupMessage> {
        let groups: Vec<String> = self
            .local
            .iter()
            .filter(|(_, m)| m.contains(&pid))
            .map(|(g, _)| g.clone())
            .collect();
        groups.iter().filter_map(|g| self.leave(g, pid)).collect()
    }

    /// The message that tells a newly connected peer everything this node holds.
    pub fn sync(&self) -> GroupMessage {
        GroupMessage::Sync {
            groups: self
                .local
                .iter()
                .map(|(g, m)| (g.clone(), m.iter().copied().collect()))
                .collect(),
        }
    }

    /// Applies a message from the peer `from`. A refused message changes nothing.
    pub fn apply(&mut self, from: NodeId, message: GroupMessage) -> Result<(), GroupError> {
        let check = |group: &str, pids: &[Pid]| -> Result<(), GroupError> {
            if group.is_empty() || group.len() > MAX_GROUP_NAME {
                return Err(GroupError::BadName(group.len()));
            }
            if pids.len() > MAX_PIDS_PER_MESSAGE {
                return Err(GroupError::TooMany(pids.len()));
            }
            match pids.iter().find(|p| p.node != from) {
                Some(p) => Err(GroupError::ForeignPid {
                    from,
                    owner: p.node,
                }),
                None => Ok(()),
            }
        };
        match message {
            GroupMessage::Sync { groups } => {
                for (g, pids) in &groups {
                    check(g, pids)?;
                }
                let mut view = Membership::new();
                for (g, pids) in groups {
                    if !pids.is_empty() {
                        view.entry(g).or_default().extend(pids);
                    }
                }
                self.remote.insert(from, view);
            }
            GroupMessage::Join { group, pids } => {
                check(&group, &pids)?;
                self.remote
                    .entry(from)
                    .or_default()
                    .entry(group)
                    .or_default()
                    .extend(pids);
            }
            GroupMessage::Leave { group, pids } => {
                check(&group, &pids)?;
                if let Some(view) = self.remote.get_mut(&from)
                    && let Some(members) = view.get_mut(&group)
                {
                    for p in &pids {
                        members.remove(p);
                    }
                    if members.is_empty() {
                        view.remove(&group);
                    }
                }
            }
        }
        Ok(())
    }

    /// A peer was lost (or declared unreachable or left): its members are gone.
    pub fn node_down(&mut self, node: NodeId) {
        self.remote.remove(&node);
    }

    /// Every member of `group`, on every node, in pid order.
    pub fn members(&self, group: &str) -> Vec<Pid> {
        let mut all: BTreeSet<Pid> = self.local.get(group).cloned().unwrap_or_default();
        for view in self.remote.values() {
            if let Some(m) = view.get(group) {
                all.extend(m.iter().copied());
            }
        }
        all.into_iter().collect()
    }

    /// The members of `group` on this node, in pid order.
    pub fn local_members(&self, group: &str) -> Vec<Pid> {
        self.local
            .get(group)
            .map(|m| m.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Every group with at least one member anywhere, in name order.
    pub fn groups(&self) -> Vec<String> {
        let mut names: BTreeSet<&String> = self.local.keys().collect();
        for view in self.remote.values() {
            names.extend(view.keys());
        }
        names.into_iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(n: u8) -> NodeId {
        NodeId::from_bytes([n; 16])
    }

    fn pid(n: u8, serial: u64) -> Pid {
        Pid {
            node: node(n),
            creation: 1,
            serial,
        }
    }

    /// Two nodes that pass every message to each other.
    fn pair() -> (Groups, Groups) {
        (Groups::new(node(1)), Groups::new(node(2)))
    }

    #[test]
    fn joins_and_leaves_reach_the_peer() {
        let (mut a, mut b) = pair();
        let m = a.join("chat", pid(1, 10)).unwrap();
        b.apply(node(1), m).unwrap();
        b.join("chat", pid(2, 20));
        assert_eq!(b.members("chat"), [pid(1, 10), pid(2, 20)]);
        assert_eq!(b.local_members("chat"), [pid(2, 20)]);
        assert!(a.join("chat", pid(1, 10)).is_none(), "already a member");
        let m = a.leave("chat", pid(1, 10)).unwrap();
        b.apply(node(1), m).unwrap();
        assert_eq!(b.members("chat"), [pid(2, 20)]);
        assert!(a.leave("chat", pid(1, 10)).is_none());
    }

    #[test]
    fn an_exit_leaves_every_group() {
        let (mut a, mut b) = pair();
        for g in ["x", "y"] {
            let m = a.join(g, pid(1, 5)).unwrap();
            b.apply(node(1), m).unwrap();
        }
        for m in a.exited(pid(1, 5)) {
            b.apply(node(1), m).unwrap();
        }
        assert!(b.groups().is_empty());
        assert!(a.groups().is_empty());
    }

    #[test]
    fn a_node_speaks_only_for_its_own_processes() {
        let (_, mut b) = pair();
        let forged = GroupMessage::Join {
            group: "chat".into(),
            pids: vec![pid(3, 1)],
        };
        assert_eq!(
            b.apply(node(1), forged),
            Err(GroupError::ForeignPid {
                from: node(1),
                owner: node(3)
            })
        );
        let bad = GroupMessage::Join {
            group: String::new(),
            pids: vec![pid(1, 1)],
        };
        assert_eq!(b.apply(node(1), bad), Err(GroupError::BadName(0)));
        assert!(b.groups().is_empty());
    }

    #[test]
    fn a_lost_node_takes_its_members_and_a_heal_brings_back_only_the_living() {
        let (mut a, mut b) = pair();
        for s in [1, 2] {
            let m = a.join("chat", pid(1, s)).unwrap();
            b.apply(node(1), m).unwrap();
        }
        b.node_down(node(1));
        assert!(b.members("chat").is_empty());
        // While cut off, one member of node 1 dies; its leave message never reaches b.
        let _lost = a.exited(pid(1, 1));
        // Reconnected: node 1 syncs what it holds now.
        b.apply(node(1), a.sync()).unwrap();
        assert_eq!(b.members("chat"), [pid(1, 2)]);
    }

    #[test]
    fn a_sync_replaces_everything_known_from_that_node() {
        let (mut a, mut b) = pair();
        let m = a.join("old", pid(1, 1)).unwrap();
        b.apply(node(1), m).unwrap();
        let fresh = Groups::new(node(1));
        b.apply(node(1), fresh.sync()).unwrap();
        assert!(b.groups().is_empty());
    }

    #[test]
    fn the_view_is_the_union_of_what_each_node_said_last() {
        // Random joins, leaves and exits on three nodes, messages delivered in order per
        // sender: every node ends with the same view, equal to the union of local sets.
        let mut rng = atoll_core::SplitMix64::new(5);
        let mut nodes: Vec<Groups> = (1..=3).map(|n| Groups::new(node(n))).collect();
        for _ in 0..2000 {
            let i = (rng.next_u64() % 3) as usize;
            let p = pid(i as u8 + 1, rng.next_u64() % 6);
            let g = ["a", "b", "c"][(rng.next_u64() % 3) as usize];
            let msgs = match rng.next_u64() % 3 {
                0 => nodes[i].join(g, p).into_iter().collect(),
                1 => nodes[i].leave(g, p).into_iter().collect(),
                _ => nodes[i].exited(p),
            };
            for m in msgs {
                for j in (0..3).filter(|j| *j != i) {
                    nodes[j].apply(node(i as u8 + 1), m.clone()).unwrap();
                }
            }
        }
        for g in ["a", "b", "c"] {
            let truth: Vec<Pid> = {
                let mut all: Vec<Pid> = nodes.iter().flat_map(|n| n.local_members(g)).collect();
                all.sort();
                all
            };
            for n in &nodes {
                assert_eq!(n.members(g), truth, "group {g}");
            }
        }
    }
}
