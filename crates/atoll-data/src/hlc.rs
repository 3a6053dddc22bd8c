//! Hybrid logical clocks: wall time where clocks agree, causality where they do not.
//!
//! A timestamp is `(wall_ms, logical, node)`, ordered in that order, so the node id breaks
//! ties between two writes stamped in the same millisecond. Every write ticks the writer's
//! clock and every received timestamp is observed, so a write made after seeing another is
//! always stamped later than it, whatever the wall clocks say. A node whose clock runs
//! ahead therefore wins only until someone who has seen its write writes again: its skew
//! never decides a winner forever.

use std::cmp::Ordering;
use std::fmt;

use atoll_core::NodeId;
use serde::{Deserialize, Serialize};

/// The per-origin part of a timestamp: wall milliseconds and a logical counter.
///
/// Within one origin (one node's clock) stamps strictly increase.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize, Deserialize,
)]
pub struct Stamp {
    /// Wall-clock milliseconds as the clock saw them (never behind a timestamp observed).
    pub wall_ms: u64,
    /// Counter that orders events within one `wall_ms`.
    pub logical: u32,
}

impl Stamp {
    /// Before every stamp a clock issues: "nothing seen yet".
    pub const ZERO: Stamp = Stamp {
        wall_ms: 0,
        logical: 0,
    };

    /// The timestamp of this stamp issued by `node`.
    pub const fn at(self, node: NodeId) -> HlcTimestamp {
        HlcTimestamp {
            wall_ms: self.wall_ms,
            logical: self.logical,
            node,
        }
    }

    /// The next stamp after this one in the same wall millisecond (or the next
    /// millisecond when the counter is exhausted).
    fn bump(self) -> Stamp {
        match self.logical.checked_add(1) {
            Some(logical) => Stamp {
                wall_ms: self.wall_ms,
                logical,
            },
            None => Stamp {
                wall_ms: self.wall_ms.saturating_add(1),
                logical: 0,
            },
        }
    }
}

impl fmt::Display for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.wall_ms, self.logical)
    }
}

/// A hybrid logical clock timestamp: totally ordered across the cluster.
///
/// ```
/// use atoll_core::NodeId;
/// use atoll_data::{Hlc, HlcTimestamp};
///
/// let (a, b) = (NodeId::from_bytes([1; 16]), NodeId::from_bytes([2; 16]));
/// let mut fast = Hlc::new(a);
/// let mut slow = Hlc::new(b);
/// // `a`'s clock runs ten minutes ahead of `b`'s.
/// let first = fast.tick(1_000 + 600_000);
/// slow.observe(first, 1_001);
/// let second = slow.tick(1_002);
/// assert!(second > first, "a write made after seeing another is later");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct HlcTimestamp {
    /// Wall-clock milliseconds.
    pub wall_ms: u64,
    /// Logical counter within `wall_ms`.
    pub logical: u32,
    /// The node whose clock issued the timestamp; breaks ties.
    pub node: NodeId,
}

impl HlcTimestamp {
    /// The per-origin part.
    pub const fn stamp(&self) -> Stamp {
        Stamp {
            wall_ms: self.wall_ms,
            logical: self.logical,
        }
    }
}

impl Ord for HlcTimestamp {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.wall_ms, self.logical, self.node).cmp(&(other.wall_ms, other.logical, other.node))
    }
}

impl PartialOrd for HlcTimestamp {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for HlcTimestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.stamp(), self.node.short())
    }
}

/// One node's hybrid logical clock. Wall time is always passed in, never read.
///
/// ```
/// use atoll_core::NodeId;
/// use atoll_data::Hlc;
///
/// let mut clock = Hlc::new(NodeId::from_bytes([1; 16]));
/// let a = clock.tick(500);
/// let b = clock.tick(400); // the wall clock stepped back: the HLC does not
/// assert!(b > a);
/// assert_eq!(b.wall_ms, 500);
/// ```
#[derive(Clone, Debug)]
pub struct Hlc {
    node: NodeId,
    last: Stamp,
}

impl Hlc {
    /// A clock for `node` that has issued nothing.
    pub const fn new(node: NodeId) -> Self {
        Hlc {
            node,
            last: Stamp::ZERO,
        }
    }

    /// A clock for `node` that continues after `last` (for example a stamp persisted
    /// before a restart, or the highest stamp of this node that peers still hold).
    pub const fn resume(node: NodeId, last: Stamp) -> Self {
        Hlc { node, last }
    }

    /// The node this clock belongs to.
    pub const fn node(&self) -> NodeId {
        self.node
    }

    /// The last stamp issued or observed (`Stamp::ZERO` before any).
    pub const fn last(&self) -> Stamp {
        self.last
    }

    /// A new timestamp for a local event at wall time `now_ms`: later than every
    /// timestamp this clock issued or observed.
    pub fn tick(&mut self, now_ms: u64) -> HlcTimestamp {
        self.last = if now_ms > self.last.wall_ms {
            Stamp {
                wall_ms: now_ms,
                logical: 0,
            }
        } else {
            self.last.bump()
        };
        self.last.at(self.node)
    }

    /// Takes in a timestamp received from elsewhere at wall time `now_ms`, so that every
    /// later [`tick`](Self::tick) is after it. Returns by how many milliseconds `remote`
    /// was ahead of `now_ms` (0 when it was not), for skew monitoring.
    pub fn observe(&mut self, remote: HlcTimestamp, now_ms: u64) -> u64 {
        let remote = remote.stamp();
        if remote > self.last {
            self.last = remote;
        }
        if now_ms > self.last.wall_ms {
            self.last = Stamp {
                wall_ms: now_ms,
                logical: 0,
            };
        }
        remote.wall_ms.saturating_sub(now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn node(n: u8) -> NodeId {
        NodeId::from_bytes([n; 16])
    }

    const TEN_MINUTES: u64 = 600_000;

    #[test]
    fn ties_are_broken_by_node() {
        let s = Stamp {
            wall_ms: 5,
            logical: 0,
        };
        assert!(s.at(node(1)) < s.at(node(2)));
    }

    #[test]
    fn the_counter_overflows_into_the_next_millisecond() {
        let mut c = Hlc::resume(
            node(1),
            Stamp {
                wall_ms: 9,
                logical: u32::MAX,
            },
        );
        let t = c.tick(0);
        assert_eq!((t.wall_ms, t.logical), (10, 0));
    }

    #[test]
    fn a_skewed_clock_wins_only_until_someone_who_saw_it_writes() {
        let mut ahead = Hlc::new(node(9));
        let mut honest = Hlc::new(node(1));
        let skewed = ahead.tick(1_000 + TEN_MINUTES);
        assert_eq!(honest.observe(skewed, 1_000), TEN_MINUTES);
        let later = honest.tick(1_001);
        assert!(later > skewed);
        // Once the honest wall clock passes the skewed stamp, it is wall time again.
        let t = honest.tick(2_000 + TEN_MINUTES);
        assert_eq!((t.wall_ms, t.logical), (2_000 + TEN_MINUTES, 0));
    }

    /// Events on three nodes, one of them ten minutes ahead; messages carry the sender's
    /// stamp and are delivered later in any order.
    #[derive(Debug, Clone)]
    enum Event {
        Local(usize),
        Send(usize, usize),
        Deliver(usize),
        Advance(u64),
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            (0..3usize).prop_map(Event::Local),
            (0..3usize, 0..3usize).prop_map(|(a, b)| Event::Send(a, b)),
            any::<usize>().prop_map(Event::Deliver),
            (0..5_000u64).prop_map(Event::Advance),
        ]
    }

    proptest! {
        #[test]
        fn causality_survives_a_clock_ten_minutes_ahead(events in proptest::collection::vec(event(), 1..200)) {
            let offsets = [0u64, 3, TEN_MINUTES];
            let mut clocks: Vec<Hlc> = (1..=3).map(|n| Hlc::new(node(n))).collect();
            // The latest stamp each node issued or received: everything it has "seen".
            let mut seen: Vec<Option<HlcTimestamp>> = vec![None; 3];
            let mut last_issued: Vec<Option<HlcTimestamp>> = vec![None; 3];
            let mut in_flight: Vec<(usize, HlcTimestamp)> = Vec::new();
            let mut now = 1_000u64;
            for e in events {
                match e {
                    Event::Local(i) | Event::Send(i, _) => {
                        let t = clocks[i].tick(now + offsets[i]);
                        prop_assert!(seen[i].is_none_or(|s| t > s), "after all it has seen");
                        prop_assert!(last_issued[i].is_none_or(|s| t > s), "monotonic");
                        // Never ahead of the fastest wall clock in the system (bounded drift).
                        prop_assert!(t.wall_ms <= now + TEN_MINUTES);
                        seen[i] = Some(t);
                        last_issued[i] = Some(t);
                        if let Event::Send(_, to) = e {
                            in_flight.push((to, t));
                        }
                    }
                    Event::Deliver(k) if !in_flight.is_empty() => {
                        let (to, t) = in_flight.swap_remove(k % in_flight.len());
                        clocks[to].observe(t, now + offsets[to]);
                        seen[to] = seen[to].max(Some(t));
                    }
                    Event::Deliver(_) => {}
                    Event::Advance(ms) => now += ms,
                }
            }
        }
    }
}
