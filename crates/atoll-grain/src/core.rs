//! The decisions behind grain calls, as plain functions: where a call goes, what an answer
//! means for the next attempt, where a new activation is placed, and whether a state write
//! is fenced off. State in, decision out: no clock, no locks, no I/O.

mod attempt;
mod lifecycle;

pub use attempt::{
    Answer, Failure, Outcome, Step, after, answered, backoff, direct, host_lost, restore_failed,
};
pub use lifecycle::{
    Queue, Refusal, Versioned, WriteResult, after_handover, copy_order, freshest, migration, queue,
    read_quorum, rebalance, write_quorum, write_result,
};

use std::collections::BTreeSet;
use std::time::Duration;

use atoll_core::{NodeId, Pid};
use serde::{Deserialize, Serialize};

/// The prefix of every grain activation lock's name ([`GrainId::lock_name`]).
pub const LOCK_PREFIX: &str = "grain:";

/// The longest grain key, in bytes (the activation lock's name must fit the node's limit).
pub const MAX_KEY_LEN: usize = 200;

/// A grain's identity: its type name and its key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GrainId {
    /// The grain type's name ([`crate::Grain::TYPE`]).
    pub grain_type: String,
    /// The key within that type.
    pub key: String,
}

impl GrainId {
    /// The identity of the grain `key` of type `grain_type`.
    ///
    /// ```
    /// use atoll_grain::GrainId;
    ///
    /// let id = GrainId::new("account", "alice");
    /// assert_eq!(id.lock_name(), "grain:account/alice");
    /// ```
    pub fn new(grain_type: impl Into<String>, key: impl Into<String>) -> Self {
        GrainId {
            grain_type: grain_type.into(),
            key: key.into(),
        }
    }

    /// The name of the consensus lock whose grant is this grain's activation.
    pub fn lock_name(&self) -> String {
        format!("{LOCK_PREFIX}{}/{}", self.grain_type, self.key)
    }

    /// The grain whose activation lock is named `name` ([`Self::lock_name`]), or `None` for
    /// any other lock.
    ///
    /// ```
    /// use atoll_grain::GrainId;
    ///
    /// let id = GrainId::new("kv", "a/b");
    /// let name = id.lock_name();
    /// assert_eq!(GrainId::from_lock_name(&name), Some(id.clone()));
    /// assert_eq!(GrainId::from_lock_name("demo-lock"), None);
    /// ```
    pub fn from_lock_name(name: &str) -> Option<GrainId> {
        let (grain_type, key) = name.strip_prefix(LOCK_PREFIX)?.split_once('/')?;
        (!grain_type.is_empty()).then(|| GrainId::new(grain_type, key))
    }

    /// The bytes the placement ring hashes.
    pub fn ring_key(&self) -> Vec<u8> {
        format!("{}/{}", self.grain_type, self.key).into_bytes()
    }
}

impl std::fmt::Display for GrainId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.grain_type, self.key)
    }
}

/// One activation: the process that hosts it and its epoch (the fencing token of its claim).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activation {
    /// The hosting process.
    pub pid: Pid,
    /// The activation epoch: larger than every earlier activation's of the same grain.
    pub epoch: u64,
}

/// Where the next attempt of a call goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// To the node hosting a known activation.
    Known(Activation),
    /// To the node placement chose, which activates the grain if nobody holds it.
    Place(NodeId),
    /// No node can host the grain (none meets its requirements).
    Nowhere,
}

impl Route {
    /// The node the attempt goes to.
    pub fn node(&self) -> Option<NodeId> {
        match self {
            Route::Known(a) => Some(a.pid.node),
            Route::Place(n) => Some(*n),
            Route::Nowhere => None,
        }
    }
}

/// Chooses where a call goes: the newer of the locally cached activation and the one this
/// node's registry replica shows (the larger epoch wins: a replica may lag behind what an
/// answer already taught the cache, and a cache may hold an activation since ended);
/// placement only when neither knows one.
pub fn route(
    cached: Option<Activation>,
    registry: Option<Activation>,
    place: impl FnOnce() -> Option<NodeId>,
) -> Route {
    let known = match (cached, registry) {
        (Some(c), Some(r)) => Some(if r.epoch >= c.epoch { r } else { c }),
        (c, r) => c.or(r),
    };
    match known {
        Some(a) => Route::Known(a),
        None => place().map_or(Route::Nowhere, Route::Place),
    }
}

/// The registry index to remember with a cached activation `by` after a call it answered:
/// `index` when the registry, read at `index` (or not read, `None`, because it had not
/// moved since an earlier read found nothing newer), shows nothing newer than `by`, so
/// later calls can skip the lookup until the index moves; 0 (look again) otherwise.
///
/// ```
/// use atoll_core::{NodeId, Pid};
/// use atoll_grain::{Activation, core::registry_checked};
///
/// let pid = Pid::new(NodeId::from_bytes([1; 16]), 1, 7);
/// let by = Activation { pid, epoch: 5 };
/// assert_eq!(registry_checked(40, Some(by), by), 40);
/// assert_eq!(registry_checked(40, None, by), 40);
/// assert_eq!(registry_checked(40, Some(Activation { pid, epoch: 6 }), by), 0);
/// ```
pub fn registry_checked(index: u64, registry: Option<Activation>, by: Activation) -> u64 {
    match registry {
        Some(r) if r.epoch > by.epoch => 0,
        _ => index,
    }
}

/// Whether a cached router `pid` still names the running router of its node: unless the
/// node is connected with another incarnation (`creation`), whose runtime drops messages
/// to the earlier run's processes unanswered. Unconnected, a send fails at once anyway.
///
/// ```
/// use atoll_core::{NodeId, Pid};
/// use atoll_grain::core::router_current;
///
/// let router = Pid::new(NodeId::from_bytes([1; 16]), 4, 2);
/// assert!(router_current(router, Some(4)));
/// assert!(router_current(router, None));
/// assert!(!router_current(router, Some(5)));
/// ```
pub fn router_current(pid: Pid, creation: Option<u32>) -> bool {
    creation.is_none_or(|c| c == pid.creation)
}

/// The router of node `target` among the `advertised` routers of the process table: the
/// one of its connected incarnation (`creation`) or, unconnected, of its latest. None while
/// the table shows no router of the running incarnation yet.
///
/// ```
/// use atoll_core::{NodeId, Pid};
/// use atoll_grain::core::router_of;
///
/// let (a, b) = (NodeId::from_bytes([1; 16]), NodeId::from_bytes([2; 16]));
/// let old = Pid::new(a, 4, 2);
/// let new = Pid::new(a, 5, 2);
/// let table = [old, Pid::new(b, 1, 2), new];
/// assert_eq!(router_of(a, Some(5), table), Some(new));
/// assert_eq!(router_of(a, None, table), Some(new));
/// assert_eq!(router_of(a, Some(4), table), Some(old));
/// assert_eq!(router_of(a, Some(6), table), None);
/// ```
pub fn router_of(
    target: NodeId,
    creation: Option<u32>,
    advertised: impl IntoIterator<Item = Pid>,
) -> Option<Pid> {
    advertised
        .into_iter()
        .filter(|pid| pid.node == target && router_current(*pid, creation))
        .max_by_key(|pid| (pid.creation, pid.serial))
}

/// Chooses the node for a new activation: of the ring's candidates in ring order (already
/// filtered by the grain's requirements), the less loaded of the first two; the first on a
/// tie, so that every node with the same view chooses the same.
///
/// ```
/// use atoll_grain::core::place_two_choices;
/// use atoll_core::NodeId;
///
/// let (a, b) = (NodeId::from_bytes([1; 16]), NodeId::from_bytes([2; 16]));
/// assert_eq!(place_two_choices(&[a, b], |n| if n == a { 50 } else { 10 }), Some(b));
/// assert_eq!(place_two_choices(&[a, b], |_| 10), Some(a));
/// ```
pub fn place_two_choices(candidates: &[NodeId], load: impl Fn(NodeId) -> u64) -> Option<NodeId> {
    match candidates {
        [] => None,
        [only] => Some(*only),
        [first, second, ..] => Some(if load(*second) < load(*first) {
            *second
        } else {
            *first
        }),
    }
}

/// Keeps the nodes, in order, whose capabilities include every requirement.
pub fn eligible<'a>(
    nodes: impl IntoIterator<Item = (NodeId, &'a BTreeSet<String>)>,
    requirements: &[&str],
) -> Vec<NodeId> {
    nodes
        .into_iter()
        .filter(|(_, caps)| requirements.iter().all(|r| caps.contains(*r)))
        .map(|(n, _)| n)
        .collect()
}

/// What a node's router does with a delivery for a grain it has no live activation of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Start an activation here (it claims the grain first).
    Activate,
    /// The registry shows an activation on another node: send the caller there.
    Redirect(Activation),
    /// The registry shows one of this node's processes holding the claim without a live
    /// activation here (it is ending): the caller tries again.
    Retry,
}

/// Decides what a router does with a delivery it has no live activation for, from the
/// claim its registry replica shows.
pub fn arrival(me: NodeId, registry: Option<Activation>) -> Arrival {
    match registry {
        None => Arrival::Activate,
        Some(a) if a.pid.node == me => Arrival::Retry,
        Some(a) => Arrival::Redirect(a),
    }
}

/// What a claim attempt's refusal means for the messages waiting on it: the holder's
/// activation, or (a holder on this node that is ending) try again.
pub fn on_busy(me: NodeId, holder: Activation) -> Answer {
    if holder.pid.node == me {
        Answer::Retry
    } else {
        Answer::Redirect(holder)
    }
}

/// A write fenced off: the store has seen a newer activation of the grain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("stale epoch {epoch}: the store has seen epoch {seen}")]
pub struct StaleEpoch {
    /// The epoch the write carried.
    pub epoch: u64,
    /// The highest epoch the store has seen for the grain.
    pub seen: u64,
}

/// Whether a read or write at `epoch` may proceed when the store has seen `seen` (none: the
/// grain was never written): an equal epoch is the same activation, a smaller one a stale
/// activation that must not overwrite its successor.
pub fn fence(seen: Option<u64>, epoch: u64) -> Result<(), StaleEpoch> {
    match seen {
        Some(seen) if epoch < seen => Err(StaleEpoch { epoch, seen }),
        _ => Ok(()),
    }
}

/// Whether the activation `me` has lost its claim, from this node's registry replica: the
/// replica has applied the claim's log entry (`applied >= me.epoch`, the epoch being the
/// grant's log index) and no longer shows it as the holder (the leader released it when
/// the node was declared lost, or a newer activation holds it). A replica that has not yet
/// applied the grant says nothing.
pub fn claim_lost(me: Activation, applied: u64, holder: Option<Activation>) -> bool {
    applied >= me.epoch && holder != Some(me)
}

/// Whether an activation idle since `idle_for` deactivates, given the configured limit
/// (`None`: never).
pub fn idle_expired(idle_for: Duration, limit: Option<Duration>) -> bool {
    limit.is_some_and(|limit| idle_for >= limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn node(n: u8) -> NodeId {
        NodeId::from_bytes([n; 16])
    }

    pub(super) fn act(n: u8, epoch: u64) -> Activation {
        Activation {
            pid: Pid::new(node(n), 1, u64::from(n)),
            epoch,
        }
    }

    #[test]
    fn route_prefers_the_newer_known_activation_and_places_only_without_one() {
        assert_eq!(route(None, None, || Some(node(3))), Route::Place(node(3)));
        assert_eq!(route(None, None, || None), Route::Nowhere);
        assert_eq!(
            route(Some(act(1, 5)), None, || None),
            Route::Known(act(1, 5))
        );
        assert_eq!(
            route(None, Some(act(2, 5)), || None),
            Route::Known(act(2, 5))
        );
        // The registry lags behind what an answer taught the cache.
        assert_eq!(
            route(Some(act(1, 9)), Some(act(2, 5)), || None),
            Route::Known(act(1, 9))
        );
        // The cache holds an activation since replaced.
        assert_eq!(
            route(Some(act(1, 5)), Some(act(2, 9)), || None),
            Route::Known(act(2, 9))
        );
        assert_eq!(Route::Known(act(2, 9)).node(), Some(node(2)));
    }

    #[test]
    fn placement_takes_the_less_loaded_of_the_first_two() {
        let load = |n: NodeId| match n.as_bytes()[0] {
            1 => 30,
            2 => 20,
            _ => 0,
        };
        assert_eq!(place_two_choices(&[], load), None);
        assert_eq!(place_two_choices(&[node(1)], load), Some(node(1)));
        assert_eq!(
            place_two_choices(&[node(1), node(2), node(3)], load),
            Some(node(2))
        );
        assert_eq!(
            place_two_choices(&[node(2), node(1), node(3)], load),
            Some(node(2))
        );
        assert_eq!(place_two_choices(&[node(1), node(4)], |_| 7), Some(node(1)));
    }

    #[test]
    fn eligibility_needs_every_requirement() {
        let gpu: BTreeSet<String> = ["gpu".to_string()].into();
        let both: BTreeSet<String> = ["gpu".to_string(), "ssd".to_string()].into();
        let none = BTreeSet::new();
        let nodes = [(node(1), &gpu), (node(2), &both), (node(3), &none)];
        assert_eq!(eligible(nodes, &[]), vec![node(1), node(2), node(3)]);
        assert_eq!(eligible(nodes, &["gpu"]), vec![node(1), node(2)]);
        assert_eq!(eligible(nodes, &["gpu", "ssd"]), vec![node(2)]);
        assert!(eligible(nodes, &["tpu"]).is_empty());
    }

    #[test]
    fn arrivals_activate_redirect_or_retry_from_the_registry_view() {
        assert_eq!(arrival(node(1), None), Arrival::Activate);
        assert_eq!(
            arrival(node(1), Some(act(2, 7))),
            Arrival::Redirect(act(2, 7))
        );
        assert_eq!(arrival(node(1), Some(act(1, 7))), Arrival::Retry);
        assert_eq!(on_busy(node(1), act(1, 7)), Answer::Retry);
        assert_eq!(on_busy(node(1), act(2, 7)), Answer::Redirect(act(2, 7)));
    }

    #[test]
    fn the_fence_refuses_only_older_epochs() {
        assert_eq!(fence(None, 1), Ok(()));
        assert_eq!(fence(Some(4), 4), Ok(()));
        assert_eq!(fence(Some(4), 9), Ok(()));
        assert_eq!(fence(Some(9), 4), Err(StaleEpoch { epoch: 4, seen: 9 }));
    }

    #[test]
    fn a_claim_is_lost_only_once_the_replica_has_applied_it_and_shows_another() {
        let me = act(1, 10);
        assert!(!claim_lost(me, 9, None), "the replica lags: no verdict");
        assert!(!claim_lost(me, 9, Some(act(2, 4))));
        assert!(!claim_lost(me, 10, Some(me)));
        assert!(!claim_lost(me, 50, Some(me)));
        assert!(claim_lost(me, 10, None), "released");
        assert!(claim_lost(me, 12, Some(act(2, 12))), "superseded");
    }

    #[test]
    fn idleness_expires_only_with_a_limit() {
        let s = Duration::from_secs;
        assert!(!idle_expired(s(100), None));
        assert!(!idle_expired(s(1), Some(s(2))));
        assert!(idle_expired(s(2), Some(s(2))));
    }

    #[test]
    fn ids_name_their_lock_and_ring_key() {
        let id = GrainId::new("kv", "a/b");
        assert_eq!(id.lock_name(), "grain:kv/a/b");
        assert_eq!(id.ring_key(), b"kv/a/b".to_vec());
        assert_eq!(id.to_string(), "kv/a/b");
    }
}
