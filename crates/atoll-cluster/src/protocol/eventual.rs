//! Eventual (global) names as a state machine: what this node knows of every node's claims,
//! and the gossip each change calls for.
//!
//! Every node is the authority on its own processes' names: it announces a claim to every
//! peer ([`RegistryGossip::Registered`]), a release ([`RegistryGossip::Unregistered`]), and
//! its whole set to a peer that connects ([`RegistryGossip::Snapshot`]). Two nodes that were
//! apart can both bind one name; when their claims meet, the smaller pid wins on every node
//! (each node applies the same rule to the same pair), and the node of the loser releases
//! it and tells the process if it asked. A lost peer's claims are forgotten with it.

use std::collections::{BTreeMap, BTreeSet};

use atoll_core::{NodeId, Pid};
use atoll_wire::RegistryGossip;

/// What applying a peer's gossip calls for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Learned {
    /// Nothing to do (known already, lost to a smaller pid, or dropped).
    Nothing,
    /// The claim was taken.
    Taken,
    /// The claim beat a local process, which lost the name: tell every peer (the gossip)
    /// and the process.
    LocalLost {
        /// The name.
        name: String,
        /// The local process that lost it.
        loser: Pid,
        /// The process that holds it now.
        winner: Pid,
        /// For every peer.
        gossip: RegistryGossip,
    },
    /// A node claimed a name for another node's process: refused.
    Foreign,
    /// The claim lost to a local process: tell the claiming node (the gossip), which may
    /// never have heard of the local claim (it missed the broadcast, or forgot it with a
    /// connection that dropped), so it does not keep the name too.
    Rebut {
        /// For the peer the losing claim came from.
        gossip: RegistryGossip,
    },
}

/// This node's view of the Eventual names of the cluster.
///
/// Every claim heard is kept, not only the winning one: a claim that loses to another
/// node's process here (its node has not met the winner yet) takes the name over if the
/// winner's node goes before the two meet, so every node ends with the same holder.
#[derive(Debug, Clone)]
pub struct EventualNames {
    me: NodeId,
    /// Every claim to each name; the smallest pid holds it. Never empty.
    names: BTreeMap<String, BTreeSet<Pid>>,
}

impl EventualNames {
    /// No names, on the node `me`.
    pub fn new(me: NodeId) -> Self {
        EventualNames {
            me,
            names: BTreeMap::new(),
        }
    }

    /// A local process claims `name`: the gossip for every peer, or the owner already
    /// known (on whichever node).
    pub fn register(&mut self, name: &str, pid: Pid) -> Result<RegistryGossip, Pid> {
        debug_assert_eq!(pid.node, self.me);
        if let Some(owner) = self.whereis(name) {
            return Err(owner);
        }
        self.names.entry(name.to_string()).or_default().insert(pid);
        Ok(RegistryGossip::Registered {
            name: name.to_string(),
            pid,
        })
    }

    /// `pid` (local) gives up `name`: the gossip for every peer, if it held it.
    pub fn release(&mut self, name: &str, pid: Pid) -> Option<RegistryGossip> {
        if self.whereis(name) != Some(pid) {
            return None;
        }
        self.drop_claim(name, pid);
        Some(RegistryGossip::Unregistered {
            name: name.to_string(),
            pid,
        })
    }

    /// Applies gossip from the peer `from`, returning what each claim in it calls for.
    pub fn apply(&mut self, from: NodeId, gossip: RegistryGossip) -> Vec<Learned> {
        match gossip {
            RegistryGossip::Snapshot(names) => names
                .into_iter()
                .map(|(name, pid)| self.learn(from, name, pid))
                .collect(),
            RegistryGossip::Registered { name, pid } => vec![self.learn(from, name, pid)],
            RegistryGossip::Unregistered { name, pid } => {
                if pid.node == from {
                    self.drop_claim(&name, pid);
                }
                vec![Learned::Nothing]
            }
        }
    }

    fn learn(&mut self, from: NodeId, name: String, pid: Pid) -> Learned {
        if pid.node != from {
            return Learned::Foreign;
        }
        let claims = self.names.entry(name.clone()).or_default();
        // A node holds a name for one process at a time: its newer claim replaces any
        // older one still heard.
        claims.retain(|p| p.node != from);
        let owner = claims.first().copied();
        claims.insert(pid);
        match owner {
            None => Learned::Taken,
            Some(owner) if owner < pid && owner.node == self.me => Learned::Rebut {
                gossip: RegistryGossip::Registered { name, pid: owner },
            },
            Some(owner) if owner < pid => Learned::Nothing,
            Some(loser) if loser.node != self.me => Learned::Taken,
            Some(loser) => {
                claims.remove(&loser);
                Learned::LocalLost {
                    gossip: RegistryGossip::Unregistered {
                        name: name.clone(),
                        pid: loser,
                    },
                    name,
                    loser,
                    winner: pid,
                }
            }
        }
    }

    fn drop_claim(&mut self, name: &str, pid: Pid) {
        if let Some(claims) = self.names.get_mut(name) {
            claims.remove(&pid);
            if claims.is_empty() {
                self.names.remove(name);
            }
        }
    }

    /// The connection to `node` is gone: its claims go with it (a claim it beat here
    /// holds the name now).
    pub fn node_down(&mut self, node: NodeId) {
        self.names.retain(|_, claims| {
            claims.retain(|p| p.node != node);
            !claims.is_empty()
        });
    }

    /// The holder of `name`, on whichever node.
    pub fn whereis(&self, name: &str) -> Option<Pid> {
        self.names.get(name).and_then(|c| c.first().copied())
    }

    /// Every name with its holder, in name order.
    pub fn all(&self) -> Vec<(String, Pid)> {
        self.names
            .iter()
            .filter_map(|(n, c)| c.first().map(|p| (n.clone(), *p)))
            .collect()
    }

    /// What a peer that just connected is told: every local claim (a local claim always
    /// holds its name: one that loses is dropped).
    pub fn snapshot(&self) -> RegistryGossip {
        RegistryGossip::Snapshot(
            self.all()
                .into_iter()
                .filter(|(_, p)| p.node == self.me)
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(b: u8) -> NodeId {
        NodeId::from_bytes([b; 16])
    }

    fn pid(n: u8, serial: u64) -> Pid {
        Pid {
            node: node(n),
            creation: 1,
            serial,
        }
    }

    #[test]
    fn a_name_is_taken_once_and_released_by_its_holder_only() {
        let mut names = EventualNames::new(node(1));
        assert!(names.register("a", pid(1, 5)).is_ok());
        assert_eq!(names.register("a", pid(1, 6)), Err(pid(1, 5)));
        assert_eq!(names.release("a", pid(1, 6)), None);
        assert!(names.release("a", pid(1, 5)).is_some());
        assert_eq!(names.whereis("a"), None);
    }

    #[test]
    fn conflicting_claims_resolve_to_the_smaller_pid_on_both_sides() {
        let mut one = EventualNames::new(node(1));
        let mut two = EventualNames::new(node(2));
        let g1 = one.register("x", pid(1, 9)).unwrap();
        let g2 = two.register("x", pid(2, 3)).unwrap();
        // node(1) < node(2), so pid(1, 9) is the smaller pid: node(1) answers the losing
        // claim with its own.
        assert!(matches!(
            one.apply(node(2), g2)[..],
            [Learned::Rebut { .. }]
        ));
        let lost = two.apply(node(1), g1);
        assert!(matches!(
            &lost[..],
            [Learned::LocalLost { loser, winner, .. }] if *loser == pid(2, 3) && *winner == pid(1, 9)
        ));
        assert_eq!(one.whereis("x"), two.whereis("x"));
        // The loser's release reaches the winner's node and changes nothing there.
        let Learned::LocalLost { gossip, .. } = &lost[0] else {
            unreachable!()
        };
        one.apply(node(2), gossip.clone());
        assert_eq!(one.whereis("x"), Some(pid(1, 9)));
    }

    #[test]
    fn a_node_cannot_claim_or_release_for_another() {
        let mut names = EventualNames::new(node(1));
        let forged = RegistryGossip::Registered {
            name: "n".into(),
            pid: pid(3, 1),
        };
        assert_eq!(names.apply(node(2), forged), vec![Learned::Foreign]);
        names.apply(
            node(3),
            RegistryGossip::Registered {
                name: "n".into(),
                pid: pid(3, 1),
            },
        );
        names.apply(
            node(2),
            RegistryGossip::Unregistered {
                name: "n".into(),
                pid: pid(3, 1),
            },
        );
        assert_eq!(names.whereis("n"), Some(pid(3, 1)));
        names.node_down(node(3));
        assert_eq!(names.whereis("n"), None);
    }

    #[test]
    fn the_snapshot_holds_local_claims_only() {
        let mut names = EventualNames::new(node(1));
        names.register("mine", pid(1, 1)).unwrap();
        names.apply(
            node(2),
            RegistryGossip::Registered {
                name: "theirs".into(),
                pid: pid(2, 1),
            },
        );
        assert_eq!(
            names.snapshot(),
            RegistryGossip::Snapshot(vec![("mine".into(), pid(1, 1))])
        );
        assert_eq!(names.all().len(), 2);
    }

    #[test]
    fn a_losing_claim_is_answered_by_the_winners_node_so_the_loser_learns_it_lost() {
        // Node 2 never heard of node 1's claim (it forgot it with a dropped connection).
        let mut on_1 = EventualNames::new(node(1));
        let mut on_2 = EventualNames::new(node(2));
        on_1.register("a", pid(1, 5)).unwrap();
        let claim = on_2.register("a", pid(2, 3)).unwrap();
        let out = on_1.apply(node(2), claim);
        let [Learned::Rebut { gossip }] = out.as_slice() else {
            panic!("{out:?}")
        };
        let told = on_2.apply(node(1), gossip.clone());
        assert!(
            matches!(told.as_slice(), [Learned::LocalLost { winner, .. }] if *winner == pid(1, 5))
        );
        assert_eq!(on_2.whereis("a"), on_1.whereis("a"));
        // A third node's losing claim to a name another node holds is not this node's to
        // answer.
        let mut on_3 = EventualNames::new(node(3));
        on_3.apply(
            node(1),
            RegistryGossip::Registered {
                name: "a".into(),
                pid: pid(1, 5),
            },
        );
        assert_eq!(
            on_3.apply(
                node(2),
                RegistryGossip::Registered {
                    name: "a".into(),
                    pid: pid(2, 3)
                }
            ),
            [Learned::Nothing]
        );
    }

    #[test]
    fn a_claim_beaten_by_a_node_that_goes_holds_the_name_after_it() {
        // Node 2 still hears node 0's claim when node 4's larger one arrives (node 4
        // restarted and never met node 0's); then node 0 goes before meeting node 4.
        let mut on_2 = EventualNames::new(node(2));
        on_2.apply(
            node(0),
            RegistryGossip::Registered {
                name: "g".into(),
                pid: pid(0, 8),
            },
        );
        let late = RegistryGossip::Registered {
            name: "g".into(),
            pid: pid(4, 15),
        };
        assert_eq!(on_2.apply(node(4), late), [Learned::Nothing]);
        assert_eq!(on_2.whereis("g"), Some(pid(0, 8)));
        on_2.node_down(node(0));
        assert_eq!(on_2.whereis("g"), Some(pid(4, 15)));
        // Node 4 releasing it leaves nothing behind.
        on_2.apply(
            node(4),
            RegistryGossip::Unregistered {
                name: "g".into(),
                pid: pid(4, 15),
            },
        );
        assert_eq!(on_2.whereis("g"), None);
        assert!(on_2.all().is_empty());
    }

    #[test]
    fn a_nodes_newer_claim_replaces_its_older_one() {
        let mut names = EventualNames::new(node(1));
        for serial in [7, 9] {
            names.apply(
                node(3),
                RegistryGossip::Registered {
                    name: "g".into(),
                    pid: pid(3, serial),
                },
            );
        }
        assert_eq!(names.whereis("g"), Some(pid(3, 9)));
        names.apply(
            node(3),
            RegistryGossip::Unregistered {
                name: "g".into(),
                pid: pid(3, 9),
            },
        );
        assert_eq!(names.whereis("g"), None);
    }
}
