use super::*;

fn node(n: u8) -> NodeId {
    NodeId::from_bytes([n; 16])
}

fn pid(n: u8, creation: u32, serial: u64) -> Pid {
    Pid::new(node(n), creation, serial)
}

fn register(name: &str, pid: Pid) -> Command {
    Command::Register {
        name: name.into(),
        pid,
        scope: Scope::Consistent,
    }
}

#[test]
fn first_registration_wins() {
    let mut r = Registry::new();
    assert_eq!(
        r.apply(1, &register("a", pid(1, 1, 1))),
        Outcome::Registered
    );
    assert_eq!(
        r.apply(2, &register("a", pid(2, 1, 1))),
        Outcome::NameTaken {
            owner: pid(1, 1, 1)
        }
    );
    // Re-registering by the owner is idempotent and keeps the original index.
    assert_eq!(
        r.apply(3, &register("a", pid(1, 1, 1))),
        Outcome::Registered
    );
    assert_eq!(r.whereis("a").map(|b| b.index), Some(1));
}

#[test]
fn local_and_eventual_names_are_not_replicated() {
    let mut r = Registry::new();
    for scope in [Scope::Local, Scope::Eventual] {
        let cmd = Command::Register {
            name: "a".into(),
            pid: pid(1, 1, 1),
            scope,
        };
        assert_eq!(r.apply(1, &cmd), Outcome::ScopeNotReplicated { scope });
    }
    assert!(r.names().is_empty());
}

#[test]
fn only_the_owner_unregisters() {
    let mut r = Registry::new();
    r.apply(1, &register("a", pid(1, 1, 1)));
    let by_other = Command::Unregister {
        name: "a".into(),
        pid: pid(2, 1, 1),
    };
    assert_eq!(
        r.apply(2, &by_other),
        Outcome::NotOwner {
            owner: Some(pid(1, 1, 1))
        }
    );
    let by_owner = Command::Unregister {
        name: "a".into(),
        pid: pid(1, 1, 1),
    };
    assert_eq!(r.apply(3, &by_owner), Outcome::Unregistered);
    assert_eq!(r.apply(4, &by_owner), Outcome::NotOwner { owner: None });
}

fn wait(holder: Pid) -> Command {
    Command::LockOrWait {
        name: "L".into(),
        holder,
    }
}

fn holder_of(r: &Registry) -> Option<(Pid, u64)> {
    r.locks().get("L").map(|g| (g.holder, g.token))
}

#[test]
fn a_release_hands_the_lock_to_the_first_waiter_in_the_same_entry() {
    let (a, b, c) = (pid(1, 1, 1), pid(2, 1, 1), pid(3, 1, 1));
    let mut r = Registry::new();
    assert_eq!(r.apply(1, &wait(a)), Outcome::LockGranted { token: 1 });
    let queued = Outcome::LockQueued {
        holder: a,
        token: 1,
    };
    assert_eq!(r.apply(2, &wait(b)), queued);
    assert_eq!(r.apply(3, &wait(c)), queued);
    // Asking again keeps one place in the queue.
    assert_eq!(r.apply(4, &wait(c)), queued);
    assert_eq!(r.lock_waiters().count(), 2);
    let unlock = |token| Command::Unlock {
        name: "L".into(),
        token,
    };
    assert_eq!(r.apply(5, &unlock(1)), Outcome::Unlocked);
    assert_eq!(holder_of(&r), Some((b, 5)));
    // A try by someone else does not jump the queue.
    assert!(matches!(
        r.apply(
            6,
            &Command::Lock {
                name: "L".into(),
                holder: a
            }
        ),
        Outcome::LockBusy { holder, token: 5 } if holder == b
    ));
    let abandon = |holder| Command::Abandon {
        name: "L".into(),
        holder,
    };
    assert_eq!(r.apply(7, &abandon(c)), Outcome::Abandoned);
    assert_eq!(r.apply(8, &unlock(5)), Outcome::Unlocked);
    assert_eq!(holder_of(&r), None);
    assert_eq!(r.lock_waiters().count(), 0);

    // A waiter handed the lock that abandons it passes it on.
    r.apply(9, &wait(a));
    r.apply(10, &wait(b));
    r.apply(11, &wait(c));
    r.apply(12, &unlock(9));
    assert_eq!(holder_of(&r), Some((b, 12)));
    r.apply(13, &abandon(b));
    assert_eq!(holder_of(&r), Some((c, 13)));
}

#[test]
fn a_lock_is_granted_once_per_entry_even_through_the_queue() {
    let (a, b, c) = (pid(1, 1, 1), pid(2, 1, 1), pid(3, 1, 1));
    let mut r = Registry::new();
    r.apply(1, &wait(a));
    r.apply(2, &wait(b));
    r.apply(3, &wait(c));
    // b is handed the lock and abandons it in the same entry: c must wait for the next
    // entry, or two grants would share token 4.
    let out = r.apply(
        4,
        &Command::Batch(vec![
            Command::Unlock {
                name: "L".into(),
                token: 1,
            },
            Command::Abandon {
                name: "L".into(),
                holder: b,
            },
        ]),
    );
    assert_eq!(
        out,
        Outcome::Batch(vec![Outcome::Unlocked, Outcome::Abandoned])
    );
    assert_eq!(holder_of(&r), None);
    assert_eq!(r.apply(5, &wait(c)), Outcome::LockGranted { token: 5 });
}

#[test]
fn a_lost_node_hands_its_lock_on_and_leaves_the_queues() {
    let (a, b, c) = (pid(1, 1, 1), pid(2, 1, 1), pid(3, 1, 1));
    let mut r = Registry::new();
    r.apply(1, &wait(a));
    r.apply(2, &wait(b));
    r.apply(3, &wait(c));
    let release = |n| Command::ReleaseNode {
        node: node(n),
        before_creation: None,
        up_to_index: None,
    };
    r.apply(4, &release(2));
    assert_eq!(holder_of(&r), Some((a, 1)));
    r.apply(5, &release(1));
    assert_eq!(holder_of(&r), Some((c, 5)));
    assert_eq!(r.lock_waiters().count(), 0);
}

#[test]
fn a_lost_nodes_waiter_handed_the_lock_after_the_loss_point_still_loses_it() {
    let (a, b) = (pid(1, 1, 1), pid(2, 1, 1));
    let mut r = Registry::new();
    r.apply(1, &wait(a));
    r.apply(2, &wait(b));
    // Node 2 is declared lost at index 2; the lock reaches its waiter at 3.
    r.apply(
        3,
        &Command::Unlock {
            name: "L".into(),
            token: 1,
        },
    );
    assert_eq!(holder_of(&r), Some((b, 3)));
    let out = r.apply(
        4,
        &Command::ReleaseNode {
            node: node(2),
            before_creation: None,
            up_to_index: Some(2),
        },
    );
    assert_eq!(
        out,
        Outcome::Released {
            names: vec![],
            locks: vec!["L".into()]
        }
    );
    assert_eq!(holder_of(&r), None);
}

#[test]
fn version_1_snapshots_still_load() {
    let mut names = BTreeMap::new();
    names.insert(
        "n".to_string(),
        Binding {
            pid: pid(1, 1, 1),
            scope: Scope::Consistent,
            index: 3,
        },
    );
    // A v1 grant was (holder, token).
    let mut locks = BTreeMap::new();
    locks.insert("l".to_string(), (pid(1, 1, 2), 7u64));
    let v1 = (names, locks, BTreeMap::<String, String>::new());
    let mut bytes = vec![1u8];
    bytes.extend(postcard::to_stdvec(&v1).unwrap());
    let r = Registry::from_bytes(&bytes).unwrap();
    assert_eq!(r.whereis("n").map(|b| b.index), Some(3));
    assert_eq!(
        r.locks().get("l"),
        Some(&LockGrant {
            holder: pid(1, 1, 2),
            token: 7,
            asked: 7
        })
    );
    assert_eq!(r.lock_waiters().count(), 0);
}

#[test]
fn release_up_to_an_index_keeps_what_the_node_claimed_since() {
    let mut r = Registry::new();
    r.apply(1, &register("before", pid(1, 1, 1)));
    r.apply(
        2,
        &Command::Lock {
            name: "l-before".into(),
            holder: pid(1, 1, 2),
        },
    );
    r.apply(3, &register("since", pid(1, 1, 3)));
    r.apply(
        4,
        &Command::Lock {
            name: "l-since".into(),
            holder: pid(1, 1, 4),
        },
    );
    let out = r.apply(
        5,
        &Command::ReleaseNode {
            node: node(1),
            before_creation: None,
            up_to_index: Some(2),
        },
    );
    assert_eq!(
        out,
        Outcome::Released {
            names: vec!["before".into()],
            locks: vec!["l-before".into()],
        }
    );
    assert!(r.whereis("since").is_some());
    assert!(r.locks().contains_key("l-since"));
}

#[test]
fn release_node_drops_its_names_and_locks() {
    let mut r = Registry::new();
    r.apply(1, &register("old", pid(1, 1, 1)));
    r.apply(2, &register("new", pid(1, 2, 1)));
    r.apply(3, &register("other", pid(2, 1, 1)));
    r.apply(
        4,
        &Command::Lock {
            name: "l-old".into(),
            holder: pid(1, 1, 2),
        },
    );
    r.apply(
        5,
        &Command::Lock {
            name: "l-other".into(),
            holder: pid(2, 1, 2),
        },
    );
    let out = r.apply(
        6,
        &Command::ReleaseNode {
            node: node(1),
            before_creation: Some(2),
            up_to_index: None,
        },
    );
    assert_eq!(
        out,
        Outcome::Released {
            names: vec!["old".into()],
            locks: vec!["l-old".into()],
        }
    );
    assert!(r.whereis("new").is_some());
    let out = r.apply(
        7,
        &Command::ReleaseNode {
            node: node(1),
            before_creation: None,
            up_to_index: None,
        },
    );
    assert_eq!(
        out,
        Outcome::Released {
            names: vec!["new".into()],
            locks: vec![],
        }
    );
    assert_eq!(r.names().keys().collect::<Vec<_>>(), ["other"]);
    assert_eq!(r.locks().keys().collect::<Vec<_>>(), ["l-other"]);
}

#[test]
fn lock_tokens_strictly_increase_and_fence() {
    let mut r = Registry::new();
    let (a, b) = (pid(1, 1, 1), pid(2, 1, 1));
    let lock = |holder| Command::Lock {
        name: "l".into(),
        holder,
    };
    let mut last = 0;
    let mut index = 0;
    for round in 0..5 {
        let holder = if round % 2 == 0 { a } else { b };
        let other = if round % 2 == 0 { b } else { a };
        index += 1;
        let Outcome::LockGranted { token } = r.apply(index, &lock(holder)) else {
            panic!("lock not granted in round {round}");
        };
        assert!(token > last, "token {token} after {last}");
        last = token;
        index += 1;
        assert_eq!(
            r.apply(index, &lock(holder)),
            Outcome::LockGranted { token }
        );
        index += 1;
        assert_eq!(
            r.apply(index, &lock(other)),
            Outcome::LockBusy { holder, token }
        );
        index += 1;
        let stale = Command::Unlock {
            name: "l".into(),
            token: token - 1,
        };
        assert_eq!(
            r.apply(index, &stale),
            Outcome::StaleToken {
                current: Some((holder, token))
            }
        );
        index += 1;
        let unlock = Command::Unlock {
            name: "l".into(),
            token,
        };
        assert_eq!(r.apply(index, &unlock), Outcome::Unlocked);
        index += 1;
        assert_eq!(
            r.apply(index, &unlock),
            Outcome::StaleToken { current: None }
        );
    }
}

#[test]
fn snapshot_round_trips() {
    let mut r = Registry::new();
    r.apply(1, &register("a", pid(1, 1, 1)));
    r.apply(
        2,
        &Command::Lock {
            name: "l".into(),
            holder: pid(2, 3, 4),
        },
    );
    r.apply(
        3,
        &Command::SetConfig {
            key: "k".into(),
            value: "v".into(),
        },
    );
    let bytes = r.to_bytes();
    assert_eq!(bytes[0], SNAPSHOT_VERSION);
    assert_eq!(Registry::from_bytes(&bytes).ok(), Some(r.clone()));
    assert_eq!(
        Registry::from_bytes(&Registry::new().to_bytes()).ok(),
        Some(Registry::new())
    );
}

#[test]
fn bad_snapshots_are_typed_errors() {
    assert!(matches!(
        Registry::from_bytes(&[]),
        Err(SnapshotDecodeError::Empty)
    ));
    assert!(matches!(
        Registry::from_bytes(&[9, 0]),
        Err(SnapshotDecodeError::Version(9))
    ));
    assert!(matches!(
        Registry::from_bytes(&[SNAPSHOT_VERSION, 0xff]),
        Err(SnapshotDecodeError::Decode(_))
    ));
}

#[test]
fn a_batch_applies_in_order_under_one_index() {
    let mut r = Registry::new();
    let batch = Command::Batch(vec![
        register("a", pid(1, 1, 1)),
        register("a", pid(2, 1, 1)),
        register("b", pid(2, 1, 1)),
    ]);
    assert_eq!(
        r.apply(7, &batch),
        Outcome::Batch(vec![
            Outcome::Registered,
            Outcome::NameTaken {
                owner: pid(1, 1, 1)
            },
            Outcome::Registered,
        ])
    );
    assert_eq!(
        r.whereis("a").map(|b| (b.pid, b.index)),
        Some((pid(1, 1, 1), 7))
    );
    assert_eq!(r.whereis("b").map(|b| b.index), Some(7));
}

#[test]
fn one_entry_grants_a_lock_at_most_once() {
    let mut r = Registry::new();
    let lock = |holder| Command::Lock {
        name: "l".into(),
        holder,
    };
    // An older grant is released and the lock contended, all in entry 9: the first
    // contender gets it, under token 9, and a release guessed in the same entry does
    // not let a second grant reuse that token.
    assert_eq!(
        r.apply(3, &lock(pid(1, 1, 1))),
        Outcome::LockGranted { token: 3 }
    );
    let batch = Command::Batch(vec![
        Command::Unlock {
            name: "l".into(),
            token: 3,
        },
        lock(pid(2, 1, 1)),
        lock(pid(3, 1, 1)),
        Command::Unlock {
            name: "l".into(),
            token: 9,
        },
        lock(pid(3, 1, 1)),
        lock(pid(2, 1, 1)),
    ]);
    let busy = Outcome::LockBusy {
        holder: pid(2, 1, 1),
        token: 9,
    };
    assert_eq!(
        r.apply(9, &batch),
        Outcome::Batch(vec![
            Outcome::Unlocked,
            Outcome::LockGranted { token: 9 },
            busy.clone(),
            Outcome::Unlocked,
            busy.clone(),
            busy,
        ])
    );
    assert!(r.locks().is_empty());
    assert_eq!(
        r.apply(10, &lock(pid(3, 1, 1))),
        Outcome::LockGranted { token: 10 }
    );
}

/// The owner index as it follows from the names: (pid, oldest index).
fn owners_from_names(r: &Registry) -> Vec<(Pid, u64)> {
    let mut by: BTreeMap<Pid, u64> = BTreeMap::new();
    for b in r.names().values() {
        let oldest = by.entry(b.pid).or_insert(u64::MAX);
        *oldest = (*oldest).min(b.index);
    }
    by.into_iter().collect()
}

#[test]
fn the_owner_index_follows_every_change_and_a_snapshot() {
    let (a, b, old_b) = (pid(1, 1, 1), pid(2, 2, 7), pid(2, 1, 3));
    let unregister = |name: &str, pid| Command::Unregister {
        name: name.into(),
        pid,
    };
    let steps = vec![
        register("a1", a),
        Command::Batch(vec![
            register("a2", a),
            register("a5", a),
            register("b1", b),
            register("o1", old_b),
        ]),
        register("a3", a),
        // Taken and not-owner: nothing changes.
        register("a1", b),
        unregister("a1", b),
        unregister("a1", a),
        Command::Batch(vec![unregister("a2", a), register("a4", a)]),
        register("o2", old_b),
        Command::ReleaseNode {
            node: node(2),
            before_creation: Some(2),
            up_to_index: None,
        },
        unregister("a3", a),
        unregister("a4", a),
    ];
    let mut r = Registry::new();
    for (i, step) in steps.iter().enumerate() {
        r.apply(i as u64 + 1, step);
        let expected = owners_from_names(&r);
        assert_eq!(
            r.name_owners().collect::<Vec<_>>(),
            expected,
            "after step {i}"
        );
        let copy = Registry::from_bytes(&r.to_bytes()).expect("decodes");
        assert_eq!(copy.name_owners().collect::<Vec<_>>(), expected);
    }
    // Left: a5 (a's other binding of the batch at index 2, after a2 of the same entry
    // went) and b1.
    assert_eq!(r.name_owners().collect::<Vec<_>>(), vec![(a, 2), (b, 2)]);
}
