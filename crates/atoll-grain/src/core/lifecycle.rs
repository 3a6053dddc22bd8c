//! The decisions behind an activation's life after it starts: whether and how it moves to
//! another node, when a node sheds load, and how replicated state is written and read
//! back. State in, decision out, as the rest of [`crate::core`].

use std::collections::{BTreeMap, BTreeSet};

use atoll_core::{NodeId, Pid};
use serde::{Deserialize, Serialize};

use super::{Activation, Answer};

/// Why a migration does not happen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    /// The grain is already active on the target node.
    #[error("the grain is already active on the target node")]
    AlreadyThere,
    /// The target does not announce every capability the grain type requires, or runs no
    /// grain service.
    #[error("the target node cannot host the grain")]
    Ineligible,
}

/// Whether an activation on `host` may move to `target`. Every durability class moves:
/// the state travels with the move and the new host saves it at its own epoch
/// (`LocalExclusive`: on the target's disk, which holds the grain's state from then on).
pub fn migration(host: NodeId, target: NodeId, target_eligible: bool) -> Result<(), Refusal> {
    if host == target {
        return Err(Refusal::AlreadyThere);
    }
    if !target_eligible {
        return Err(Refusal::Ineligible);
    }
    Ok(())
}

/// Where a moving activation stands with the claim's queue, from the waiters this node's
/// registry shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queue {
    /// The target's new activation is first in line: releasing the claim hands it over.
    Go,
    /// Nobody is queued yet (or this replica has not applied it): wait.
    Wait,
    /// Another process is ahead of the target: releasing now would hand the grain to it.
    Blocked,
}

/// Whether the moving activation may release its claim to `target`.
pub fn queue(waiters: &[Pid], target: Pid) -> Queue {
    match waiters.first() {
        Some(first) if *first == target => Queue::Go,
        // Whoever is first gets the claim on release, and the target would queue behind.
        Some(_) => Queue::Blocked,
        None => Queue::Wait,
    }
}

/// What the deliveries that waited at the old activation during a move are answered once
/// it has released its claim: the activation this node's registry now shows, or (the
/// replica has not caught up) "try again". Either way the message was not handled, so the
/// caller's retry is safe and it does not notice the move.
pub fn after_handover(me: Activation, holder: Option<Activation>) -> Answer {
    match holder {
        Some(a) if a != me => Answer::Redirect(a),
        _ => Answer::Retry,
    }
}

/// A load-balancing step for this node: the node to move grains to and how many, when this
/// node is the most loaded of all (ties: the smallest id) and exceeds the least loaded by
/// more than `threshold` activations (and by two at least: moving one across a gap of one
/// would only swap places). Moving half the difference, from the most loaded node only,
/// never overshoots, so repeated steps end with every node within `max(threshold, 1)` of
/// every other.
///
/// ```
/// use atoll_grain::core::rebalance;
/// use atoll_core::NodeId;
///
/// let (a, b) = (NodeId::from_bytes([1; 16]), NodeId::from_bytes([2; 16]));
/// let counts = [(a, 10), (b, 2)].into();
/// assert_eq!(rebalance(a, &counts, 3), Some((b, 4)));
/// assert_eq!(rebalance(b, &counts, 3), None);
/// assert_eq!(rebalance(a, &counts, 8), None);
/// ```
pub fn rebalance(
    me: NodeId,
    counts: &BTreeMap<NodeId, usize>,
    threshold: usize,
) -> Option<(NodeId, usize)> {
    // BTreeMap order: the smallest id wins ties at both ends.
    let (&top, &most) = counts
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))?;
    let (&bottom, &least) = counts
        .iter()
        .min_by(|a, b| a.1.cmp(b.1).then(a.0.cmp(b.0)))?;
    // A gap of one would only swap places.
    if top != me || most <= least.saturating_add(threshold.max(1)) {
        return None;
    }
    Some((bottom, ((most - least) / 2).max(1)))
}

/// One copy of a `Replicated` grain's state, as each replica's store keeps it: the epoch
/// and per-activation sequence number of the write order every copy by the same total
/// order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versioned {
    /// The epoch of the activation that wrote it.
    pub epoch: u64,
    /// The write's number within that activation, from 1.
    pub seq: u64,
    /// The encoded state (a byte string: the same bytes as a sequence of numbers).
    #[serde(with = "serde_bytes")]
    pub state: Vec<u8>,
}

/// The order in which the consensus voters take copies of a `Replicated` grain's state
/// (rendezvous hashing of the grain's ring key with each voter; the host left out): the
/// same on every node, whatever the membership or the ring looks like, because the voter
/// set is the consensus configuration every node is given. A write goes to the first
/// [`write_quorum`] of them and, for each that fails to answer, to the next.
pub fn copy_order(ring_key: &[u8], voters: &BTreeSet<NodeId>, host: NodeId) -> Vec<NodeId> {
    let rank = |n: &NodeId| {
        // FNV-1a over the key and the node: cheap, stable across builds and platforms.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in ring_key.iter().chain(n.as_bytes()) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h
    };
    let mut order: Vec<NodeId> = voters.iter().copied().filter(|n| *n != host).collect();
    order.sort_by_key(|n| (rank(n), *n));
    order
}

/// How many voters other than the host must store a replicated write before it is
/// acknowledged: every acknowledged write is on `r + 1` voters, the host's own store
/// counting when the host is a voter.
pub fn write_quorum(host_is_voter: bool, r: usize) -> usize {
    (r + 1).saturating_sub(usize::from(host_is_voter))
}

/// How many of the `voters` a new activation must hear from (its own store counting when
/// it is a voter) before it trusts the freshest copy among the answers: every acknowledged
/// write is on `r + 1` voters, so any `voters - r` of them include one (at least one
/// answer always). Counted over the voter set, not the membership: a copy stays on a
/// voter while it is down, and a node that joins holds none.
pub fn read_quorum(voters: usize, r: usize) -> usize {
    voters.saturating_sub(r).max(1)
}

/// The freshest of the copies read back: the largest (epoch, seq).
pub fn freshest(copies: impl IntoIterator<Item = Versioned>) -> Option<Versioned> {
    copies.into_iter().max_by_key(|v| (v.epoch, v.seq))
}

/// What a replicated write's answers amount to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteResult {
    /// `r` replicas hold it: acknowledged.
    Acknowledged,
    /// A replica has seen a newer activation: this one is fenced off.
    Fenced(super::StaleEpoch),
    /// Too few replicas answered.
    Short {
        /// Replicas that stored it.
        stored: usize,
        /// Replicas needed.
        needed: usize,
    },
}

/// Tallies a replicated write: `stored` copies made of the `needed` ([`write_quorum`]),
/// `stale` the first refusal by a newer epoch if any.
pub fn write_result(stored: usize, stale: Option<super::StaleEpoch>, needed: usize) -> WriteResult {
    match stale {
        Some(s) => WriteResult::Fenced(s),
        None if stored >= needed => WriteResult::Acknowledged,
        None => WriteResult::Short { stored, needed },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::StaleEpoch;

    fn node(n: u8) -> NodeId {
        NodeId::from_bytes([n; 16])
    }

    fn pid(n: u8, serial: u64) -> Pid {
        Pid::new(node(n), 1, serial)
    }

    #[test]
    fn migrations_are_refused_in_place_and_to_unfit_nodes() {
        assert_eq!(migration(node(1), node(2), true), Ok(()));
        assert_eq!(
            migration(node(1), node(1), true),
            Err(Refusal::AlreadyThere)
        );
        assert_eq!(migration(node(1), node(2), false), Err(Refusal::Ineligible));
    }

    #[test]
    fn the_claim_is_released_only_with_the_target_first_in_line() {
        let t = pid(2, 7);
        assert_eq!(queue(&[], t), Queue::Wait);
        assert_eq!(queue(&[pid(3, 1)], t), Queue::Blocked);
        assert_eq!(queue(&[t, pid(3, 1)], t), Queue::Go);
        assert_eq!(queue(&[pid(3, 1), t], t), Queue::Blocked);
    }

    #[test]
    fn waiting_deliveries_follow_the_new_activation_or_retry() {
        let me = Activation {
            pid: pid(1, 1),
            epoch: 4,
        };
        let new = Activation {
            pid: pid(2, 7),
            epoch: 9,
        };
        assert_eq!(after_handover(me, Some(new)), Answer::Redirect(new));
        assert_eq!(after_handover(me, Some(me)), Answer::Retry);
        assert_eq!(after_handover(me, None), Answer::Retry);
    }

    #[test]
    fn rebalancing_moves_half_the_gap_from_the_top_to_the_bottom() {
        let c = |v: &[(u8, usize)]| -> BTreeMap<NodeId, usize> {
            v.iter().map(|(n, k)| (node(*n), *k)).collect()
        };
        assert_eq!(rebalance(node(1), &BTreeMap::new(), 0), None);
        let counts = c(&[(1, 9), (2, 1), (3, 5)]);
        assert_eq!(rebalance(node(1), &counts, 2), Some((node(2), 4)));
        assert_eq!(rebalance(node(3), &counts, 2), None, "not the top");
        assert_eq!(rebalance(node(1), &counts, 8), None, "within the threshold");
        // Ties: the smallest id moves, to the smallest id.
        let tied = c(&[(1, 6), (2, 6), (3, 0), (4, 0)]);
        assert_eq!(rebalance(node(1), &tied, 1), Some((node(3), 3)));
        assert_eq!(rebalance(node(2), &tied, 1), None);
        // A gap of one is left alone even at a zero threshold; two moves one.
        assert_eq!(rebalance(node(1), &c(&[(1, 2), (2, 1)]), 0), None);
        assert_eq!(
            rebalance(node(1), &c(&[(1, 3), (2, 1)]), 0),
            Some((node(2), 1))
        );
    }

    #[test]
    fn repeated_rebalancing_ends_within_the_threshold() {
        for threshold in 0..4 {
            let mut counts: BTreeMap<NodeId, usize> =
                [(node(1), 40), (node(2), 0), (node(3), 7), (node(4), 1)].into();
            let total: usize = counts.values().sum();
            for _ in 0..200 {
                let step = counts
                    .keys()
                    .find_map(|&me| rebalance(me, &counts, threshold).map(|(to, k)| (me, to, k)));
                let Some((from, to, k)) = step else { break };
                *counts.get_mut(&from).unwrap() -= k;
                *counts.get_mut(&to).unwrap() += k;
            }
            let max = counts.values().max().unwrap();
            let min = counts.values().min().unwrap();
            assert!(max - min <= threshold.max(1), "{counts:?} at {threshold}");
            assert_eq!(counts.values().sum::<usize>(), total);
        }
    }

    #[test]
    fn replicated_writes_and_reads_agree_on_quorums_and_order() {
        let voters: BTreeSet<NodeId> = [node(1), node(2), node(3)].into();
        let order = copy_order(b"kv/1", &voters, node(1));
        assert_eq!(order.len(), 2);
        assert!(!order.contains(&node(1)));
        // The same on every node, and for a host outside the voters all of them.
        assert_eq!(copy_order(b"kv/1", &voters, node(1)), order);
        assert_eq!(copy_order(b"kv/1", &voters, node(9)).len(), 3);
        // Keys spread their first copies over the voters.
        let firsts: BTreeSet<NodeId> = (0..50)
            .map(|k| copy_order(format!("kv/{k}").as_bytes(), &voters, node(9))[0])
            .collect();
        assert_eq!(firsts, voters);
        assert_eq!(write_quorum(true, 1), 1);
        assert_eq!(write_quorum(false, 1), 2);
        assert_eq!(write_quorum(true, 0), 0);
        assert_eq!(read_quorum(3, 2), 1);
        assert_eq!(read_quorum(5, 2), 3);
        assert_eq!(read_quorum(1, 2), 1);
        let v = |epoch, seq| Versioned {
            epoch,
            seq,
            state: vec![epoch as u8, seq as u8],
        };
        assert_eq!(freshest([v(3, 9), v(5, 1), v(5, 0)]), Some(v(5, 1)));
        assert_eq!(freshest([]), None);
        assert_eq!(write_result(2, None, 2), WriteResult::Acknowledged);
        assert_eq!(
            write_result(1, None, 2),
            WriteResult::Short {
                stored: 1,
                needed: 2
            }
        );
        let s = StaleEpoch { epoch: 3, seen: 5 };
        assert_eq!(write_result(2, Some(s), 2), WriteResult::Fenced(s));
    }

    #[test]
    fn every_read_quorum_meets_every_acknowledged_write() {
        for voters in 1..=7usize {
            for r in 0..voters {
                let copies = r + 1;
                assert!(
                    copies + read_quorum(voters, r) > voters,
                    "{voters} voters, r = {r}"
                );
                assert_eq!(write_quorum(true, r) + 1, copies);
                assert_eq!(write_quorum(false, r), copies);
            }
        }
    }
}
