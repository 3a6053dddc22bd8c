//! Lock safety, from the grants the holders saw and the writes the fenced resource saw:
//!
//! - a token is granted once per lock;
//! - a grant invoked after another was granted gets a larger token (tokens follow real
//!   time);
//! - the resource accepts no token older than the newest it accepted (0 stale writes);
//! - no two holders overlap: while a holder that no node declared unreachable holds the lock (from its
//!   grant until it starts to unlock) no one else is granted it, and between a holder's
//!   two accepted writes the resource accepts no one else's;
//! - a lock granted to a client process that was killed before it unlocked is granted again
//!   later (the cluster released it when the client's node was declared down), and of the
//!   attempts on a lock after the heal at least one is granted (no dead client's grant or
//!   place in the queue blocks it for good).

use std::collections::{BTreeMap, HashMap};

use super::{Anomaly, Limits};
use crate::history::{History, Op, Request};

/// Checks every lock.
pub fn check(history: &History, limits: &Limits) -> Vec<Anomaly> {
    let mut anomalies = Vec::new();
    let mut grants: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in &history.ops {
        if let (Request::Lock { name, .. }, Some(_)) = (&op.request, &op.hold) {
            grants.entry(name.as_str()).or_default().push(op);
        }
    }
    for (lock, ops) in &grants {
        let token = |op: &Op| op.hold.as_ref().map_or(0, |h| h.token);
        let mut by_token: HashMap<u64, u64> = HashMap::new();
        for op in ops {
            if let Some(&other) = by_token.get(&token(op)) {
                anomalies.push(Anomaly::DuplicateToken {
                    lock: lock.to_string(),
                    token: token(op),
                    a: other,
                    b: op.id,
                });
            }
            by_token.insert(token(op), op.id);
        }
        for a in ops {
            let a_hold = a.hold.as_ref().expect("grants have holds");
            for b in ops {
                if a.id == b.id {
                    continue;
                }
                let b_hold = b.hold.as_ref().expect("grants have holds");
                if a_hold.granted_ms < b.invoke_ms && a_hold.token >= b_hold.token {
                    anomalies.push(Anomaly::TokenOrder {
                        lock: lock.to_string(),
                        earlier: a.id,
                        earlier_token: a_hold.token,
                        later: b.id,
                        later_token: b_hold.token,
                    });
                }
                // `a` held it healthily until it started to unlock: a later grant its client
                // learned of before then (both stamped by the clients, on the machine's
                // clock) was committed while `a` held it.
                let Some(a_end) = a_hold.unlock_ms else {
                    continue;
                };
                let healthy = !history.touched(
                    a.client,
                    a.incarnation,
                    a_hold.granted_ms,
                    a_end,
                    limits.grace_ms,
                );
                if healthy
                    && b_hold.token > a_hold.token
                    && b_hold.granted_ms > a_hold.granted_ms
                    && b_hold.granted_ms < a_end
                {
                    anomalies.push(Anomaly::OverlappingHolds {
                        lock: lock.to_string(),
                        a: a.id,
                        b: b.id,
                    });
                }
            }
        }
    }
    anomalies.extend(not_released(history, &grants));
    let mut newest: HashMap<&str, u64> = HashMap::new();
    // Per lock: the writer whose first write was the last one accepted.
    let mut open: HashMap<&str, u64> = HashMap::new();
    for w in &history.writes {
        if !w.accepted {
            continue;
        }
        let lock = w.lock.as_str();
        if let Some(&n) = newest.get(lock)
            && w.token < n
        {
            anomalies.push(Anomaly::StaleWriteAccepted {
                lock: w.lock.clone(),
                op: w.op,
                token: w.token,
                newest: n,
            });
        }
        let n = newest.entry(lock).or_insert(w.token);
        *n = (*n).max(w.token);
        match open.insert(lock, w.op) {
            // Someone else's write landed between two of `prev`'s: if `prev` writes
            // again and is accepted, the two holds overlapped at the resource.
            Some(prev) if prev != w.op => {
                let prev_later = history
                    .writes
                    .iter()
                    .any(|x| x.accepted && x.op == prev && x.lock == w.lock && x.at_ms > w.at_ms);
                if prev_later {
                    anomalies.push(Anomaly::OverlappingHolds {
                        lock: w.lock.clone(),
                        a: prev,
                        b: w.op,
                    });
                }
            }
            _ => {}
        }
    }
    anomalies
}

/// Locks a killed client held and no one was granted after, and locks no attempt after
/// the heal could take.
fn not_released(history: &History, grants: &BTreeMap<&str, Vec<&Op>>) -> Vec<Anomaly> {
    let mut anomalies = Vec::new();
    for (lock, ops) in grants {
        for a in ops {
            let Some(hold) = &a.hold else { continue };
            let killed_holding =
                a.complete_ms.is_none() && history.killed(a.client, a.incarnation).is_some();
            let granted_again = ops
                .iter()
                .any(|b| b.hold.as_ref().is_some_and(|h| h.token > hold.token));
            if killed_holding && !granted_again {
                anomalies.push(Anomaly::NotReleased {
                    lock: lock.to_string(),
                    op: a.id,
                });
            }
        }
    }
    let mut after_heal: BTreeMap<&str, (u64, bool)> = BTreeMap::new();
    for op in &history.ops {
        if let Request::Lock { name, .. } = &op.request
            && history.healed_ms > 0
            && op.invoke_ms >= history.healed_ms
        {
            let e = after_heal.entry(name.as_str()).or_insert((op.id, false));
            e.0 = op.id;
            e.1 |= op.hold.is_some();
        }
    }
    for (lock, (last, granted)) in after_heal {
        if !granted {
            anomalies.push(Anomaly::NotReleased {
                lock: lock.to_string(),
                op: last,
            });
        }
    }
    anomalies
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::testkit::H;
    use crate::history::Outcome;
    use crate::resource::FencedResource;

    fn limits() -> Limits {
        Limits {
            grace_ms: 100,
            ..Limits::default()
        }
    }

    #[test]
    fn holders_one_after_another_pass() {
        let mut h = H::default();
        let a = h.lock(1, 1, (0, 40), 10, 30);
        let b = h.lock(2, 2, (5, 60), 45, 55);
        let mut r = FencedResource::default();
        r.write(11, a, "l", 1);
        r.write(29, a, "l", 1);
        r.write(46, b, "l", 2);
        r.write(54, b, "l", 2);
        h.0.writes = r.log().to_vec();
        assert_eq!(check(&h.0, &limits()), vec![]);
    }

    #[test]
    fn a_token_granted_twice_is_caught() {
        let mut h = H::default();
        h.lock(1, 3, (0, 40), 10, 30);
        h.lock(2, 3, (5, 60), 45, 55);
        let found = check(&h.0, &limits());
        assert!(
            found
                .iter()
                .any(|a| matches!(a, Anomaly::DuplicateToken { token: 3, .. }))
        );
    }

    #[test]
    fn a_smaller_token_for_a_later_grant_is_caught() {
        let mut h = H::default();
        h.lock(1, 5, (0, 40), 10, 30);
        h.lock(2, 4, (50, 90), 60, 80);
        let found = check(&h.0, &limits());
        assert!(
            matches!(
                &found[..],
                [Anomaly::TokenOrder {
                    earlier_token: 5,
                    later_token: 4,
                    ..
                }]
            ),
            "{found:?}"
        );
    }

    #[test]
    fn a_grant_while_a_healthy_holder_holds_is_caught_unless_it_was_declared_unreachable() {
        let mut h = H::default();
        let a = h.lock(1, 1, (0, 100), 10, 90);
        let b = h.lock(2, 2, (5, 120), 50, 110);
        assert_eq!(
            check(&h.0, &limits()),
            vec![Anomaly::OverlappingHolds {
                lock: "l".into(),
                a,
                b
            }]
        );
        // Holder 1 partitioned away: the cluster may release its lock.
        h.fault(&[1], (20, 30));
        assert_eq!(check(&h.0, &limits()), vec![]);
    }

    #[test]
    fn a_stale_write_accepted_is_caught() {
        let mut h = H::default();
        let a = h.lock(1, 1, (0, 40), 10, 30);
        let b = h.lock(2, 2, (5, 60), 45, 55);
        // A resource that does not fence: the paused holder's late write lands.
        h.0.writes = vec![
            crate::history::Write {
                at_ms: 46,
                op: b,
                lock: "l".into(),
                token: 2,
                accepted: true,
            },
            crate::history::Write {
                at_ms: 47,
                op: a,
                lock: "l".into(),
                token: 1,
                accepted: true,
            },
        ];
        let found = check(&h.0, &limits());
        assert!(
            found.contains(&Anomaly::StaleWriteAccepted {
                lock: "l".into(),
                op: a,
                token: 1,
                newest: 2
            }),
            "{found:?}"
        );
    }

    #[test]
    fn interleaved_writes_of_two_holders_are_caught() {
        let mut h = H::default();
        h.0.writes = [(1, 1), (2, 1), (1, 1)]
            .iter()
            .enumerate()
            .map(|(i, &(op, token))| crate::history::Write {
                at_ms: i as u64,
                op,
                lock: "l".into(),
                token,
                accepted: true,
            })
            .collect();
        let found = check(&h.0, &limits());
        assert!(
            found.contains(&Anomaly::OverlappingHolds {
                lock: "l".into(),
                a: 1,
                b: 2
            }),
            "{found:?}"
        );
    }

    #[test]
    fn a_lock_a_killed_holder_kept_is_caught() {
        let mut h = H::default();
        let a = h.lock(1, 1, (0, 40), 10, 30);
        // Killed while holding: no unlock, no answer.
        let op = h.0.ops.last_mut().unwrap();
        op.complete_ms = None;
        op.outcome = None;
        op.hold.as_mut().unwrap().unlock_ms = None;
        h.0.kills.push(crate::history::Kill {
            client: 1,
            incarnation: 0,
            at_ms: 20,
        });
        assert_eq!(
            check(&h.0, &limits()),
            vec![Anomaly::NotReleased {
                lock: "l".into(),
                op: a
            }]
        );
        // The cluster released it: the next holder got a larger token.
        h.lock(2, 2, (50, 90), 60, 80);
        assert_eq!(check(&h.0, &limits()), vec![]);
    }

    #[test]
    fn a_lock_no_one_can_take_after_the_heal_is_caught() {
        let mut h = H::default();
        h.lock(1, 1, (0, 40), 10, 30);
        h.0.healed_ms = 100;
        let failed = Outcome::Failed {
            kind: "Timeout".into(),
        };
        let r = Request::Lock {
            name: "l".into(),
            hold_ms: 0,
        };
        h.op(2, r.clone(), Some("p2"), (200, 3200), failed.clone());
        let last = h.op(2, r, Some("p3"), (3300, 6300), failed);
        assert_eq!(
            check(&h.0, &limits()),
            vec![Anomaly::NotReleased {
                lock: "l".into(),
                op: last
            }]
        );
        h.lock(2, 2, (6400, 6500), 6410, 6450);
        assert_eq!(check(&h.0, &limits()), vec![]);
    }
}
