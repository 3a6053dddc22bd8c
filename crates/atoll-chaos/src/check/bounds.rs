//! Every operation completes, unless its client process was killed while it was in flight
//! (its outcome then stays open: the other checkers treat it as maybe applied); every one completes within its bound unless its client was
//! stopped meanwhile (a stopped process answers nothing); every failure is a typed error.

use super::{Anomaly, Limits};
use crate::history::{History, Outcome, Request};

/// Error kinds that say nothing about what happened.
const UNTYPED: &[&str] = &["", "Unexpected", "Unknown"];

/// Checks completion, time bounds and error types.
pub fn check(history: &History, limits: &Limits) -> Vec<Anomaly> {
    let mut anomalies = Vec::new();
    for op in &history.ops {
        let Some(done) = op.complete_ms else {
            // In flight when its client process was killed: open-ended, not late.
            if history.killed(op.client, op.incarnation).is_none() {
                anomalies.push(Anomaly::NeverCompleted { op: op.id });
            }
            continue;
        };
        let bound_ms = match &op.request {
            Request::Lock { hold_ms, .. } => limits.lock_bound_ms + hold_ms,
            _ => limits.op_bound_ms,
        };
        let took_ms = done.saturating_sub(op.invoke_ms);
        if took_ms > bound_ms && !history.paused(op.client, op.invoke_ms, done) {
            anomalies.push(Anomaly::Unbounded {
                op: op.id,
                took_ms,
                bound_ms,
            });
        }
        if let Some(Outcome::Failed { kind }) = &op.outcome
            && kind.split("::").any(|part| UNTYPED.contains(&part))
        {
            anomalies.push(Anomaly::Untyped {
                op: op.id,
                kind: kind.clone(),
            });
        }
    }
    anomalies
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::testkit::H;
    use crate::history::Outcome::*;
    use crate::protocol::kind;

    #[test]
    fn typed_answers_in_time_pass() {
        let mut h = H::default();
        h.reg(1, "a", "p1", (0, 10), Registered);
        h.reg(
            1,
            "a",
            "p2",
            (0, 3000),
            Failed {
                kind: "Consensus::Timeout".into(),
            },
        );
        // An unlock that found its grant released by the cluster is a typed answer.
        let r = Request::Lock {
            name: "l".into(),
            hold_ms: 100,
        };
        let unlock = kind(&atoll_cluster::LockError::NotHeld {
            name: "l".into(),
            token: 3,
            current: None,
        });
        assert_eq!(unlock, "NotHeld");
        let failed = Failed {
            kind: format!("Unlock::{unlock}"),
        };
        h.op(2, r, Some("p3"), (0, 500), failed);
        assert_eq!(check(&h.0, &Limits::default()), vec![]);
    }

    #[test]
    fn pending_slow_and_untyped_operations_are_caught() {
        let mut h = H::default();
        let slow = h.reg(1, "a", "p1", (0, 60_000), Registered);
        let untyped = h.reg(
            1,
            "a",
            "p2",
            (0, 10),
            Failed {
                kind: "Unexpected".into(),
            },
        );
        let pending = h.reg(2, "a", "p3", (0, 10), Registered);
        h.0.ops.last_mut().unwrap().complete_ms = None;
        let found = check(&h.0, &Limits::default());
        assert_eq!(
            found,
            vec![
                Anomaly::Unbounded {
                    op: slow,
                    took_ms: 60_000,
                    bound_ms: 12_000
                },
                Anomaly::Untyped {
                    op: untyped,
                    kind: "Unexpected".into()
                },
                Anomaly::NeverCompleted { op: pending },
            ]
        );
    }

    #[test]
    fn a_stopped_client_may_take_as_long_as_it_was_stopped() {
        let mut h = H::default();
        h.reg(1, "a", "p1", (0, 60_000), Registered);
        h.0.faults.push(crate::history::Fault {
            kind: "pause-holder".into(),
            detail: String::new(),
            clients: [1].into(),
            paused_clients: [1].into(),
            paused_nodes: Default::default(),
            start_ms: 100,
            end_ms: 50_000,
        });
        assert_eq!(check(&h.0, &Limits::default()), vec![]);
    }
}
