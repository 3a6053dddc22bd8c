//! Convergence after the heal: the clients' views (Consistent names resolved locally,
//! Eventual group members) agree within a bound, and nothing acknowledged by a client that
//! no node declared unreachable afterwards is missing from the agreed view.
//!
//! A client process the nemesis killed is declared down by membership, and the documented
//! release rule then applies: the Raft leader releases its Consistent names, and every node
//! drops its group members. So once [`Limits::grace_ms`] has passed since the kill, no view
//! taken after the heal may still show one of its processes.

use std::collections::{BTreeSet, HashMap};

use super::{Anomaly, Limits};
use crate::history::{History, Outcome, Request, Snapshot};

/// The first round of snapshots in which every client saw the same names and groups.
pub fn converged(history: &History) -> Option<&Vec<Snapshot>> {
    history.snapshots.iter().find(|round| agree(round))
}

fn agree(round: &[Snapshot]) -> bool {
    round
        .windows(2)
        .all(|w| w[0].names == w[1].names && w[0].groups == w[1].groups)
        && !round.is_empty()
}

/// What a view shows of killed client processes: `(what, pid, killed_ms)` for every name
/// owned by, and every group member that is, a process of a client that was killed.
pub fn dead_owners(history: &History, view: &Snapshot) -> Vec<(String, String, u64)> {
    let killed: HashMap<&str, u64> = history
        .ops
        .iter()
        .filter_map(|op| {
            let at = history.killed(op.client, op.incarnation)?;
            Some((op.pid.as_deref()?, at))
        })
        .collect();
    let names = view
        .names
        .iter()
        .filter_map(|(n, p)| Some((format!("name {n}"), p.as_deref()?)));
    let members = view
        .groups
        .iter()
        .flat_map(|(g, m)| m.iter().map(move |p| (format!("group {g}"), p.as_str())));
    names
        .chain(members)
        .filter_map(|(what, pid)| Some((what, pid.to_string(), *killed.get(pid)?)))
        .collect()
}

/// Checks convergence and that no acknowledged write was lost.
pub fn check(history: &History, limits: &Limits) -> Vec<Anomaly> {
    let mut anomalies = Vec::new();
    let mut seen = BTreeSet::new();
    for view in history.snapshots.iter().flatten() {
        for (what, pid, killed_ms) in dead_owners(history, view) {
            if view.at_ms > killed_ms + limits.grace_ms && seen.insert((what.clone(), pid.clone()))
            {
                anomalies.push(Anomaly::DeadOwner {
                    what,
                    pid,
                    killed_ms,
                    at_ms: view.at_ms,
                });
            }
        }
    }
    let Some(round) = converged(history) else {
        let detail = match history.snapshots.last() {
            None => "no snapshots".to_string(),
            Some(last) => differences(last),
        };
        anomalies.push(Anomaly::NotConverged {
            bound_ms: limits.converge_bound_ms,
            detail,
        });
        return anomalies;
    };
    let at = round.iter().map(|s| s.at_ms).max().unwrap_or(0);
    if at.saturating_sub(history.healed_ms) > limits.converge_bound_ms {
        anomalies.push(Anomaly::NotConverged {
            bound_ms: limits.converge_bound_ms,
            detail: format!("agreed only {} ms after the heal", at - history.healed_ms),
        });
    }
    let view = &round[0];
    for op in &history.ops {
        let (Some(pid), Some(_)) = (&op.pid, op.complete_ms) else {
            continue;
        };
        // Anything released because the client was declared unreachable is not required,
        // nor what a killed client held (the dead-owner rule above says it must be gone).
        if history.killed(op.client, op.incarnation).is_some()
            || history.touched(
                op.client,
                op.incarnation,
                op.invoke_ms,
                history.healed_ms,
                limits.grace_ms,
            )
        {
            continue;
        }
        match (&op.request, &op.outcome) {
            (Request::Join { group }, Some(Outcome::Joined))
                if !view.groups.get(group).is_some_and(|m| m.contains(pid)) =>
            {
                anomalies.push(Anomaly::LostWrite {
                    what: format!("group {group}"),
                    op: op.id,
                });
            }
            (Request::Register { name }, Some(Outcome::Registered)) => {
                // Released on purpose (or possibly, by a failed unregistration) later?
                let released = history.ops.iter().any(|u| {
                    matches!(&u.request, Request::Unregister { name: n } if n == name)
                        && u.invoke_ms >= op.invoke_ms
                        && match &u.outcome {
                            Some(Outcome::Unregistered { pid: Some(p) }) => p == pid,
                            Some(Outcome::Unregistered { pid: None }) => false,
                            _ => u.client == op.client && u.incarnation == op.incarnation,
                        }
                });
                if !released && view.names.get(name) != Some(&Some(pid.clone())) {
                    anomalies.push(Anomaly::LostWrite {
                        what: format!("name {name}"),
                        op: op.id,
                    });
                }
            }
            _ => {}
        }
    }
    anomalies
}

/// What two clients of `round` disagree about, briefly.
fn differences(round: &[Snapshot]) -> String {
    let Some(first) = round.first() else {
        return "no clients answered".into();
    };
    let mut keys = BTreeSet::new();
    for s in &round[1..] {
        for (k, v) in &s.names {
            if first.names.get(k) != Some(v) {
                keys.insert(format!("name {k}"));
            }
        }
        for (k, v) in &s.groups {
            if first.groups.get(k) != Some(v) {
                keys.insert(format!("group {k}"));
            }
        }
    }
    let keys: Vec<String> = keys.into_iter().take(5).collect();
    format!("last round differs on {}", keys.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::testkit::H;
    use crate::history::Outcome::*;

    fn limits() -> Limits {
        Limits {
            grace_ms: 100,
            converge_bound_ms: 1000,
            ..Limits::default()
        }
    }

    fn join(h: &mut H, c: usize, pid: &str) -> u64 {
        h.op(
            c,
            Request::Join { group: "g".into() },
            Some(pid),
            (0, 10),
            Joined,
        )
    }

    fn with_group(h: &mut H, at: u64, members: &[&[&str]]) {
        let round = members
            .iter()
            .enumerate()
            .map(|(i, m)| Snapshot {
                client: i + 1,
                at_ms: at,
                names: Default::default(),
                groups: [("g".to_string(), m.iter().map(|s| s.to_string()).collect())].into(),
            })
            .collect();
        h.0.snapshots.push(round);
    }

    #[test]
    fn views_that_agree_in_time_with_every_join_pass() {
        let mut h = H::default();
        join(&mut h, 1, "p1");
        h.0.healed_ms = 100;
        with_group(&mut h, 200, &[&["p1"], &[]]);
        with_group(&mut h, 300, &[&["p1"], &["p1"]]);
        assert_eq!(check(&h.0, &limits()), vec![]);
    }

    #[test]
    fn views_that_never_agree_are_caught() {
        let mut h = H::default();
        h.0.healed_ms = 100;
        with_group(&mut h, 200, &[&["p1"], &[]]);
        let found = check(&h.0, &limits());
        assert!(
            matches!(&found[..], [Anomaly::NotConverged { detail, .. }] if detail.contains("group g")),
            "{found:?}"
        );
    }

    #[test]
    fn agreeing_too_late_is_caught() {
        let mut h = H::default();
        h.0.healed_ms = 100;
        with_group(&mut h, 5000, &[&[], &[]]);
        assert_eq!(check(&h.0, &limits()).len(), 1);
    }

    #[test]
    fn a_lost_join_is_caught_unless_its_client_was_declared_unreachable() {
        let mut h = H::default();
        let op = join(&mut h, 1, "p1");
        h.0.healed_ms = 100;
        with_group(&mut h, 200, &[&[], &[]]);
        assert_eq!(
            check(&h.0, &limits()),
            vec![Anomaly::LostWrite {
                what: "group g".into(),
                op
            }]
        );
        h.fault(&[1], (20, 30));
        assert_eq!(check(&h.0, &limits()), vec![]);
    }

    #[test]
    fn a_lost_registration_is_caught() {
        let mut h = H::default();
        let op = h.reg(1, "a", "p1", (0, 10), Registered);
        h.0.healed_ms = 100;
        h.converged(200, &[1, 2], &[("a", None)]);
        assert_eq!(
            check(&h.0, &limits()),
            vec![Anomaly::LostWrite {
                what: "name a".into(),
                op
            }]
        );
        // Unregistered later: not lost.
        h.unreg(
            1,
            "a",
            (20, 30),
            Unregistered {
                pid: Some("p1".into()),
            },
        );
        assert_eq!(check(&h.0, &limits()), vec![]);
    }

    #[test]
    fn a_killed_clients_name_or_member_left_past_the_grace_is_caught() {
        let mut h = H::default();
        h.reg(1, "a", "p1", (0, 10), Registered);
        join(&mut h, 1, "p2");
        h.0.kills.push(crate::history::Kill {
            client: 1,
            incarnation: 0,
            at_ms: 20,
        });
        h.0.healed_ms = 100;
        // Within the grace (100 ms): not yet released, allowed.
        h.converged(110, &[2, 3], &[("a", Some("p1"))]);
        assert_eq!(check(&h.0, &limits()), vec![]);
        // Later still there: the cluster never released them.
        h.0.snapshots.clear();
        with_group(&mut h, 500, &[&["p2"], &["p2"]]);
        h.0.snapshots[0][0].names = [("a".to_string(), Some("p1".to_string()))].into();
        h.0.snapshots[0][1].names = h.0.snapshots[0][0].names.clone();
        let found = check(&h.0, &limits());
        assert_eq!(
            found,
            vec![
                Anomaly::DeadOwner {
                    what: "name a".into(),
                    pid: "p1".into(),
                    killed_ms: 20,
                    at_ms: 500
                },
                Anomaly::DeadOwner {
                    what: "group g".into(),
                    pid: "p2".into(),
                    killed_ms: 20,
                    at_ms: 500
                },
            ]
        );
        // Released as the rule says: nothing to report.
        h.0.snapshots.clear();
        with_group(&mut h, 500, &[&[], &[]]);
        assert_eq!(check(&h.0, &limits()), vec![]);
    }
}
