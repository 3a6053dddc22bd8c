//! Whether an unlock released the caller's grant: it does only while its token is the
//! lock's current grant, and never touches a grant that replaced it.

use super::*;

fn node(n: u8) -> NodeId {
    NodeId::from_bytes([n; 16])
}

fn pid(n: u8) -> Pid {
    Pid::new(node(n), 1, 1)
}

fn wait(holder: Pid) -> Command {
    Command::LockOrWait {
        name: "L".into(),
        holder,
    }
}

fn unlock(token: u64) -> Command {
    Command::Unlock {
        name: "L".into(),
        token,
    }
}

fn holder_of(r: &Registry) -> Option<(Pid, u64)> {
    r.locks().get("L").map(|g| (g.holder, g.token))
}

#[test]
fn the_current_grant_is_released_and_the_decision_does_not_change_anything() {
    let mut r = Registry::new();
    assert_eq!(r.apply(1, &wait(pid(1))), Outcome::LockGranted { token: 1 });
    let before = r.clone();
    assert_eq!(r.unlock_decision("L", 1), Outcome::Unlocked);
    assert_eq!(r, before, "deciding is not applying");
    assert_eq!(r.apply(2, &unlock(1)), Outcome::Unlocked);
    assert_eq!(holder_of(&r), None);
}

#[test]
fn an_unlock_after_a_lost_node_release_is_refused_and_the_new_holder_keeps_the_lock() {
    let (a, b) = (pid(1), pid(2));
    let mut r = Registry::new();
    r.apply(1, &wait(a));
    r.apply(2, &wait(b));
    // a's node is declared lost: its grant goes, and b is handed the lock.
    r.apply(
        3,
        &Command::ReleaseNode {
            node: node(1),
            before_creation: None,
            up_to_index: Some(2),
        },
    );
    assert_eq!(holder_of(&r), Some((b, 3)));
    let refused = Outcome::StaleToken {
        current: Some((b, 3)),
    };
    assert_eq!(r.unlock_decision("L", 1), refused);
    // a's late unlock: refused, naming b's grant, which stays.
    assert_eq!(r.apply(4, &unlock(1)), refused);
    assert_eq!(holder_of(&r), Some((b, 3)));
    assert_eq!(r.apply(5, &unlock(3)), Outcome::Unlocked);
}

#[test]
fn an_unlock_after_a_fencing_release_and_a_regrant_is_refused() {
    let (a, b, c) = (pid(1), pid(2), pid(3));
    let mut r = Registry::new();
    r.apply(1, &wait(a));
    r.apply(2, &wait(b));
    // The fenced node releases a's grant itself (same token): b is handed the lock; then
    // b releases it and c takes it.
    assert_eq!(r.apply(3, &unlock(1)), Outcome::Unlocked);
    assert_eq!(r.apply(4, &unlock(3)), Outcome::Unlocked);
    assert_eq!(r.apply(5, &wait(c)), Outcome::LockGranted { token: 5 });
    // a's guard unlocks late, as does b's second guard of its grant.
    for stale in [1, 3] {
        assert_eq!(
            r.apply(6, &unlock(stale)),
            Outcome::StaleToken {
                current: Some((c, 5))
            }
        );
    }
    assert_eq!(holder_of(&r), Some((c, 5)));
}

#[test]
fn an_unlock_of_a_free_lock_or_a_future_token_is_refused() {
    let mut r = Registry::new();
    assert_eq!(
        r.apply(1, &unlock(1)),
        Outcome::StaleToken { current: None }
    );
    r.apply(2, &wait(pid(1)));
    // Only the exact token releases: neither an older nor a newer one.
    for token in [1, 3] {
        assert_eq!(
            r.apply(3, &unlock(token)),
            Outcome::StaleToken {
                current: Some((pid(1), 2))
            }
        );
    }
    assert_eq!(holder_of(&r), Some((pid(1), 2)));
}

#[test]
fn in_one_entry_an_unlock_refused_after_a_hand_over_leaves_the_new_grant() {
    let (a, b) = (pid(1), pid(2));
    let mut r = Registry::new();
    r.apply(1, &wait(a));
    r.apply(2, &wait(b));
    // A batch: a's unlock hands the lock to b, then a repeated unlock of a's token.
    let out = r.apply(3, &Command::Batch(vec![unlock(1), unlock(1)]));
    assert_eq!(
        out,
        Outcome::Batch(vec![
            Outcome::Unlocked,
            Outcome::StaleToken {
                current: Some((b, 3))
            }
        ])
    );
    assert_eq!(holder_of(&r), Some((b, 3)));
}
