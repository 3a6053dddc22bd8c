//! Linearizability of the key-value store on grains, key by key, with the search of
//! [`super::wgl`]: each key is a register. A write is acknowledged only once its shard
//! grain saved it on two nodes, and a shard has one activation at a time, so every
//! acknowledged write must be seen by every read that starts after it, whatever was
//! killed, stopped or cut off meanwhile.
//!
//! Each write carries a value unique in the run and answers the value it replaced, so a
//! write is also a read. A failed write may or may not have taken effect, at any time after
//! it was invoked (a message buffered during a move can land late), unless its error says
//! it never reached a shard. The final reads after the heal are ordinary reads.

use std::collections::BTreeMap;

use super::wgl::{Entry, Model, Verdict, excerpt, search};
use super::{Anomaly, Limits};
use crate::history::{History, Outcome, Request};

/// Error kinds that say the request never reached a shard grain.
const NOT_APPLIED: &[&str] = &["UnknownType", "NoEligibleNode", "KeyTooLong"];

/// What one operation does to a key.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// An acknowledged write of `value` that replaced `previous`.
    Set {
        previous: Option<String>,
        value: String,
    },
    /// A failed write of `value`: maybe applied.
    MaybeSet { value: String },
    /// A read that found `value`.
    Get { value: Option<String> },
}

/// One key: unset or holding a value.
struct Register;

impl Model for Register {
    type State = Option<String>;
    type Step = Step;

    fn apply(&self, state: &Option<String>, step: &Step) -> Option<Option<String>> {
        match step {
            Step::Set { previous, value } => (previous == state).then(|| Some(value.clone())),
            Step::MaybeSet { value } => Some(Some(value.clone())),
            Step::Get { value } => (value == state).then(|| state.clone()),
        }
    }
}

/// Each key's operations as model steps.
fn entries(history: &History) -> BTreeMap<String, Vec<Entry<Step>>> {
    let mut by_key: BTreeMap<String, Vec<Entry<Step>>> = BTreeMap::new();
    for op in &history.ops {
        let step = match (&op.request, &op.outcome) {
            (Request::KvSet { value, .. }, Some(Outcome::Stored { previous })) => Step::Set {
                previous: previous.clone(),
                value: value.clone(),
            },
            (Request::KvSet { .. }, Some(Outcome::Failed { kind }))
                if NOT_APPLIED.iter().any(|k| kind.ends_with(k)) =>
            {
                continue;
            }
            (Request::KvSet { value, .. }, _) => Step::MaybeSet {
                value: value.clone(),
            },
            (Request::KvGet { .. }, Some(Outcome::Value { value })) => Step::Get {
                value: value.clone(),
            },
            _ => continue,
        };
        let optional = matches!(step, Step::MaybeSet { .. });
        by_key
            .entry(op.request.key().to_string())
            .or_default()
            .push(Entry {
                op: op.id,
                inv: op.invoke_ms,
                resp: match op.complete_ms {
                    Some(at) if !optional => at,
                    _ => u64::MAX,
                },
                optional,
                step,
            });
    }
    by_key
}

/// Checks every key; returns the anomalies and the keys whose search ran out of budget.
pub fn check(history: &History, limits: &Limits) -> (Vec<Anomaly>, Vec<String>) {
    let mut anomalies = Vec::new();
    let mut inconclusive = Vec::new();
    for (key, mut list) in entries(history) {
        match search(&Register, &None, &mut list, limits.search_budget) {
            Verdict::Linearizable => {}
            Verdict::Inconclusive => inconclusive.push(format!("kv {key}")),
            Verdict::Violation => anomalies.push(Anomaly::NotLinearizable {
                ops: excerpt(&Register, &None, &mut list, limits.search_budget),
                name: format!("kv {key}"),
            }),
        }
    }
    (anomalies, inconclusive)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::testkit::H;

    fn set(h: &mut H, c: usize, value: &str, span: (u64, u64), outcome: Outcome) -> u64 {
        let r = Request::KvSet {
            key: "a".into(),
            value: value.into(),
        };
        h.op(c, r, None, span, outcome)
    }

    fn stored(previous: Option<&str>) -> Outcome {
        Outcome::Stored {
            previous: previous.map(str::to_string),
        }
    }

    fn get(h: &mut H, c: usize, span: (u64, u64), value: Option<&str>) -> u64 {
        let r = Request::KvGet { key: "a".into() };
        let value = value.map(str::to_string);
        h.op(c, r, None, span, Outcome::Value { value })
    }

    fn timeout() -> Outcome {
        Outcome::Failed {
            kind: "Kv::Timeout".into(),
        }
    }

    #[test]
    fn overlapping_writes_and_reads_in_some_order_pass() {
        let mut h = H::default();
        set(&mut h, 1, "x", (0, 100), stored(None));
        // Concurrent with the first: either order, as long as the answers chain.
        set(&mut h, 2, "y", (50, 150), stored(Some("x")));
        get(&mut h, 1, (120, 130), Some("x"));
        get(&mut h, 2, (200, 210), Some("y"));
        // A failed write that landed later, and one that never did.
        set(&mut h, 1, "z", (300, 400), timeout());
        set(&mut h, 2, "w", (300, 400), timeout());
        get(&mut h, 1, (5000, 5010), Some("z"));
        let (anomalies, inconclusive) = check(&h.0, &Limits::default());
        assert_eq!(anomalies, vec![]);
        assert!(inconclusive.is_empty());
    }

    #[test]
    fn an_acknowledged_write_lost_after_a_failover_is_caught() {
        let mut h = H::default();
        set(&mut h, 1, "x", (0, 100), stored(None));
        set(&mut h, 1, "y", (200, 300), stored(Some("x")));
        // The shard came back from an older copy.
        let stale = get(&mut h, 2, (4000, 4100), Some("x"));
        let (anomalies, _) = check(&h.0, &Limits::default());
        match anomalies.as_slice() {
            [Anomaly::NotLinearizable { name, ops }] => {
                assert_eq!(name, "kv a");
                assert!(ops.contains(&stale), "{ops:?}");
            }
            other => panic!("expected one violation, got {other:?}"),
        }
    }

    #[test]
    fn two_writes_that_replaced_the_same_value_are_caught() {
        // Two activations at once: each write saw the same value before it.
        let mut h = H::default();
        set(&mut h, 1, "x", (0, 100), stored(None));
        set(&mut h, 1, "y", (200, 300), stored(Some("x")));
        set(&mut h, 2, "z", (200, 300), stored(Some("x")));
        let (anomalies, _) = check(&h.0, &Limits::default());
        assert_eq!(anomalies.len(), 1, "{anomalies:?}");
    }

    #[test]
    fn a_read_of_a_value_never_written_is_caught_and_a_refused_write_is_left_out() {
        let mut h = H::default();
        let refused = Outcome::Failed {
            kind: "Kv::NoEligibleNode".into(),
        };
        set(&mut h, 1, "x", (0, 100), refused);
        get(&mut h, 2, (200, 300), Some("x"));
        let (anomalies, _) = check(&h.0, &Limits::default());
        assert_eq!(anomalies.len(), 1, "{anomalies:?}");
    }
}
