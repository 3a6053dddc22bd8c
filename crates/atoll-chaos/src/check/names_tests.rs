use super::*;
use crate::check::testkit::H;
use crate::history::Outcome::*;

fn limits() -> Limits {
    Limits {
        grace_ms: 100,
        ..Limits::default()
    }
}

fn violations(h: &H) -> Vec<Anomaly> {
    let (anomalies, inconclusive) = check(&h.0, &limits());
    assert!(inconclusive.is_empty());
    anomalies
}

#[test]
fn a_registry_that_behaves_passes() {
    let mut h = H::default();
    h.reg(1, "a", "p1", (0, 10), Registered);
    // Concurrent with the first: either order fits (this one lost).
    h.reg(2, "a", "p2", (5, 12), Taken { owner: "p1".into() });
    h.unreg(
        1,
        "a",
        (20, 30),
        Unregistered {
            pid: Some("p1".into()),
        },
    );
    h.reg(2, "a", "p3", (40, 50), Registered);
    // A failed registration may have taken effect, or not.
    h.reg(
        3,
        "b",
        "p4",
        (0, 10),
        Failed {
            kind: "Consensus::Timeout".into(),
        },
    );
    h.reg(1, "b", "p5", (20, 30), Taken { owner: "p4".into() });
    h.converged(100, &[1, 2, 3], &[("a", Some("p3")), ("b", Some("p4"))]);
    assert_eq!(violations(&h), vec![]);
}

#[test]
fn two_owners_at_once_are_caught() {
    let mut h = H::default();
    h.reg(1, "a", "p1", (0, 10), Registered);
    h.reg(2, "a", "p2", (20, 30), Registered);
    let found = violations(&h);
    assert!(
        matches!(&found[..], [Anomaly::NotLinearizable { name, ops }] if name == "a" && ops == &[1, 2]),
        "{found:?}"
    );
}

#[test]
fn a_taken_answer_naming_a_stale_owner_is_caught() {
    let mut h = H::default();
    h.reg(1, "a", "p1", (0, 10), Registered);
    h.unreg(
        1,
        "a",
        (20, 30),
        Unregistered {
            pid: Some("p1".into()),
        },
    );
    h.reg(2, "a", "p2", (40, 50), Registered);
    h.reg(3, "a", "p3", (60, 70), Taken { owner: "p1".into() });
    assert_eq!(violations(&h).len(), 1);
}

#[test]
fn an_acknowledged_registration_lost_without_a_fault_is_caught() {
    let mut h = H::default();
    h.reg(1, "a", "p1", (0, 10), Registered);
    h.converged(100, &[1, 2], &[("a", None)]);
    assert_eq!(violations(&h).len(), 1);
}

#[test]
fn a_declaration_of_the_owners_client_may_release_its_name() {
    let mut h = H::default();
    h.reg(1, "a", "p1", (0, 10), Registered);
    h.fault(&[1], (20, 40));
    h.reg(2, "a", "p2", (60, 70), Registered);
    h.converged(200, &[1, 2], &[("a", Some("p2"))]);
    assert_eq!(violations(&h), vec![]);

    // A declaration of another client does not excuse it, nor one long over.
    let mut h = H::default();
    h.reg(1, "a", "p1", (0, 10), Registered);
    h.fault(&[2], (20, 40));
    h.reg(2, "a", "p2", (60, 70), Registered);
    assert_eq!(violations(&h).len(), 1);
    let mut h = H::default();
    h.fault(&[1], (0, 5));
    h.reg(1, "a", "p1", (500, 510), Registered);
    h.reg(2, "a", "p2", (600, 610), Registered);
    assert_eq!(violations(&h).len(), 1);
}

#[test]
fn a_read_of_a_name_never_registered_to_that_process_is_caught() {
    let mut h = H::default();
    h.reg(1, "a", "p1", (0, 10), Registered);
    let read = Request::Read { name: "a".into() };
    h.op(
        2,
        read.clone(),
        None,
        (20, 30),
        Found {
            pid: Some("p1".into()),
        },
    );
    h.op(
        2,
        read,
        None,
        (20, 30),
        Found {
            pid: Some("p9".into()),
        },
    );
    let found = violations(&h);
    assert!(
        matches!(&found[..], [Anomaly::PhantomRead { op: 3, pid, .. }] if pid == "p9"),
        "{found:?}"
    );
}

#[test]
fn a_linearizable_read_of_a_released_owner_is_caught_and_a_local_one_is_not() {
    let history = |read: Request| {
        let mut h = H::default();
        h.reg(1, "a", "p1", (0, 10), Registered);
        h.unreg(
            1,
            "a",
            (20, 30),
            Unregistered {
                pid: Some("p1".into()),
            },
        );
        // Invoked after the release completed, it still names the released owner.
        h.op(
            2,
            read,
            None,
            (40, 50),
            Found {
                pid: Some("p1".into()),
            },
        );
        h
    };
    let found = violations(&history(Request::ReadConsistent { name: "a".into() }));
    assert!(
        matches!(&found[..], [Anomaly::NotLinearizable { name, .. }] if name == "a"),
        "{found:?}"
    );
    // A local read may lag behind the registry.
    assert_eq!(
        violations(&history(Request::Read { name: "a".into() })),
        vec![]
    );
    // A linearizable read overlapping the release may see either side of it.
    let mut h = H::default();
    h.reg(1, "a", "p1", (0, 10), Registered);
    h.unreg(
        1,
        "a",
        (20, 30),
        Unregistered {
            pid: Some("p1".into()),
        },
    );
    let read = Request::ReadConsistent { name: "a".into() };
    h.op(
        2,
        read.clone(),
        None,
        (25, 35),
        Found {
            pid: Some("p1".into()),
        },
    );
    h.op(3, read, None, (26, 36), Found { pid: None });
    assert_eq!(violations(&h), vec![]);
}

#[test]
fn a_search_out_of_budget_is_inconclusive_not_passed() {
    let mut h = H::default();
    // Many concurrent registrations and unregistrations: many orders to try, and the
    // final view fits none of them.
    for i in 0..20 {
        let pid = format!("p{i}");
        h.reg(1, "a", &pid, (0, 10), Registered);
        h.unreg(1, "a", (0, 10), Unregistered { pid: Some(pid) });
    }
    h.converged(20, &[1], &[("a", Some("nobody"))]);
    let tight = Limits {
        search_budget: 50,
        ..limits()
    };
    let (anomalies, inconclusive) = check(&h.0, &tight);
    assert_eq!((anomalies, inconclusive), (vec![], vec!["a".to_string()]));
}

#[test]
fn a_command_said_not_applied_that_took_effect_is_caught() {
    let mut h = H::default();
    h.reg(
        1,
        "a",
        "p1",
        (0, 10),
        Failed {
            kind: "Consensus::NoLeader".into(),
        },
    );
    h.reg(2, "a", "p2", (20, 30), Taken { owner: "p1".into() });
    assert_eq!(violations(&h).len(), 1);
}

#[test]
fn an_unknown_outcome_taking_effect_long_after_is_caught() {
    let mut h = H::default();
    h.reg(
        1,
        "a",
        "p1",
        (0, 10),
        Failed {
            kind: "Consensus::Timeout".into(),
        },
    );
    // p1 could only fit after p2 let go, long after its failure.
    h.reg(2, "a", "p2", (40_000, 40_010), Registered);
    h.unreg(
        2,
        "a",
        (41_000, 41_010),
        Unregistered {
            pid: Some("p2".into()),
        },
    );
    h.reg(3, "a", "p3", (60_000, 60_010), Taken { owner: "p1".into() });
    assert_eq!(violations(&h).len(), 1);
}
