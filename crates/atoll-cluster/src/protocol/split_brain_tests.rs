use super::*;

const W: Duration = Duration::from_secs(10);

fn node(b: u8) -> NodeId {
    NodeId::from_bytes([b; 16])
}

fn set(ids: &[u8]) -> BTreeSet<NodeId> {
    ids.iter().map(|b| node(*b)).collect()
}

fn sees(ids: &[u8], voters: &[u8]) -> Observation {
    Observation {
        reachable: set(ids),
        unreachable: BTreeSet::new(),
        left: BTreeSet::new(),
        voters: set(voters),
        detection: Duration::ZERO,
    }
}

/// A node `me` of the cluster `all` (voters `voters`) that has seen everyone for a
/// window; returns it and the time.
fn settled(me: u8, all: &[u8], voters: &[u8]) -> (SplitBrain, Instant) {
    let t0 = Instant::now();
    let mut p = SplitBrain::new(node(me), W);
    assert_eq!(p.step(t0, &sees(all, voters)), Decision::Wait);
    assert_eq!(p.step(t0 + W, &sees(all, voters)), Decision::Wait);
    assert_eq!(p.stable_membership(), &set(all));
    (p, t0 + W)
}

/// Feeds `view` from `at` until one window later; returns the decisions that were not
/// `Wait`.
fn hold(p: &mut SplitBrain, at: Instant, view: &Observation) -> Vec<Decision> {
    let mut out = Vec::new();
    for s in 0..=10 {
        let d = p.step(at + W * s / 10, view);
        if d != Decision::Wait {
            out.push(d);
        }
    }
    out
}

#[test]
fn two_three_the_three_down_the_two_and_the_two_down_themselves() {
    let all = [1, 2, 3, 4, 5];
    for me in [3, 4, 5] {
        let (mut p, t) = settled(me, &all, &[1, 2, 3]);
        assert_eq!(
            hold(&mut p, t, &sees(&[3, 4, 5], &[1, 2, 3])),
            [Decision::Down(set(&[1, 2]))],
            "node {me}"
        );
        assert_eq!(p.stable_membership(), &set(&[3, 4, 5]));
    }
    for me in [1, 2] {
        let (mut p, t) = settled(me, &all, &[1, 2, 3]);
        // Two of the three voters on this side change nothing: members decide.
        assert_eq!(
            hold(&mut p, t, &sees(&[1, 2], &[1, 2, 3])),
            [Decision::DownMyself],
            "node {me}"
        );
        assert!(p.is_fenced());
    }
}

#[test]
fn one_four_the_lone_node_downs_itself() {
    let all = [1, 2, 3, 4, 5];
    let (mut p, t) = settled(1, &all, &[1, 2, 3]);
    assert_eq!(hold(&mut p, t, &sees(&[1], &[])), [Decision::DownMyself]);
    let (mut p, t) = settled(2, &all, &[1, 2, 3]);
    assert_eq!(
        hold(&mut p, t, &sees(&[2, 3, 4, 5], &[1, 2, 3])),
        [Decision::Down(set(&[1]))]
    );
}

#[test]
fn a_symmetric_split_keeps_the_side_with_most_voters() {
    let all = [1, 2, 3, 4];
    let voters = [2, 3, 4];
    // {1, 2} | {3, 4}: the voters 3 and 4 are on the second side.
    for me in [1, 2] {
        let (mut p, t) = settled(me, &all, &voters);
        assert_eq!(
            hold(&mut p, t, &sees(&[1, 2], &voters)),
            [Decision::DownMyself]
        );
    }
    for me in [3, 4] {
        let (mut p, t) = settled(me, &all, &voters);
        assert_eq!(
            hold(&mut p, t, &sees(&[3, 4], &voters)),
            [Decision::Down(set(&[1, 2]))]
        );
    }
}

#[test]
fn a_symmetric_split_with_split_voters_keeps_the_side_with_the_lowest_id() {
    let all = [1, 2, 3, 4];
    for voters in [&[][..], &[1, 3][..]] {
        let (mut low, t) = settled(2, &all, voters);
        assert_eq!(
            hold(&mut low, t, &sees(&[1, 2], voters)),
            [Decision::Down(set(&[3, 4]))]
        );
        let (mut high, t) = settled(3, &all, voters);
        assert_eq!(
            hold(&mut high, t, &sees(&[3, 4], voters)),
            [Decision::DownMyself]
        );
    }
}

#[test]
fn nothing_is_decided_before_the_view_has_been_stable_for_the_window() {
    let (mut p, t) = settled(1, &[1, 2, 3, 4, 5], &[]);
    let split = sees(&[1, 2, 3], &[]);
    assert_eq!(p.step(t, &split), Decision::Wait);
    assert_eq!(
        p.step(t + W - Duration::from_millis(1), &split),
        Decision::Wait
    );
    assert_eq!(p.step(t + W, &split), Decision::Down(set(&[4, 5])));
}

#[test]
fn views_flapping_within_the_window_down_nobody() {
    let all = [1, 2, 3, 4, 5];
    for me in [1, 4] {
        let (mut p, mut t) = settled(me, &all, &[]);
        let side: &[u8] = if me == 1 { &[1, 2, 3] } else { &[4, 5] };
        // Split and healed again and again, each state lasting less than the window, for
        // ten windows.
        for i in 0..40 {
            let view = if i % 2 == 0 {
                sees(side, &[])
            } else {
                sees(&all, &[])
            };
            assert_eq!(p.step(t, &view), Decision::Wait, "node {me}, step {i}");
            t += W / 4;
            assert_eq!(p.step(t, &view), Decision::Wait, "node {me}, step {i}");
        }
        assert_eq!(p.stable_membership(), &set(&all));
        assert!(!p.is_fenced());
    }
}

#[test]
fn a_view_that_changes_within_the_window_restarts_it() {
    let (mut p, t) = settled(1, &[1, 2, 3, 4, 5], &[]);
    assert_eq!(p.step(t, &sees(&[1, 2, 3, 4], &[])), Decision::Wait);
    // Another member goes missing just before the window ends: the clock starts over.
    let later = t + W - Duration::from_secs(1);
    assert_eq!(p.step(later, &sees(&[1, 2, 3], &[])), Decision::Wait);
    assert_eq!(p.step(t + W, &sees(&[1, 2, 3], &[])), Decision::Wait);
    assert_eq!(
        p.step(later + W, &sees(&[1, 2, 3], &[])),
        Decision::Down(set(&[4, 5]))
    );
}

#[test]
fn non_transitive_views_never_fence_a_node_that_sees_a_majority() {
    // 3 bridges {1, 2} and {4, 5}, which do not see each other.
    let all = [1, 2, 3, 4, 5];
    let views: [(u8, &[u8]); 5] = [
        (1, &[1, 2, 3]),
        (2, &[1, 2, 3]),
        (3, &[1, 2, 3, 4, 5]),
        (4, &[3, 4, 5]),
        (5, &[3, 4, 5]),
    ];
    for (me, view) in views {
        let (mut p, t) = settled(me, &all, &[]);
        let decided = hold(&mut p, t, &sees(view, &[]));
        let expected: Vec<Decision> = match me {
            1 | 2 => vec![Decision::Down(set(&[4, 5]))],
            3 => vec![],
            _ => vec![Decision::Down(set(&[1, 2]))],
        };
        assert_eq!(decided, expected, "node {me}");
        assert!(!p.is_fenced());
    }
    // A chain 1 - 2 - 3 - 4 - 5 (each sees its neighbours): the ends see two of five and
    // fence themselves; the middle survives.
    let chain: [(u8, &[u8], bool); 5] = [
        (1, &[1, 2], true),
        (2, &[1, 2, 3], false),
        (3, &[2, 3, 4], false),
        (4, &[3, 4, 5], false),
        (5, &[4, 5], true),
    ];
    for (me, view, fences) in chain {
        let (mut p, t) = settled(me, &all, &[]);
        let decided = hold(&mut p, t, &sees(view, &[]));
        assert_eq!(decided.contains(&Decision::DownMyself), fences, "node {me}");
    }
}

#[test]
fn a_fenced_node_is_armed_again_once_it_sees_a_majority() {
    let all = [1, 2, 3, 4, 5];
    let (mut p, t) = settled(1, &all, &[]);
    assert_eq!(hold(&mut p, t, &sees(&[1, 2], &[])), [Decision::DownMyself]);
    // Still cut off, as a new generation with its side: nothing more.
    let t = t + W * 3;
    assert!(hold(&mut p, t, &sees(&[1, 2], &[])).is_empty());
    assert!(p.is_fenced());
    // Healed: back with everyone, armed again with the whole membership.
    let t = t + W * 3;
    assert!(hold(&mut p, t, &sees(&all, &[])).is_empty());
    assert!(!p.is_fenced());
    assert_eq!(p.stable_membership(), &set(&all));
    let t = t + W * 3;
    assert_eq!(
        hold(&mut p, t, &sees(&[1, 2, 3], &[])),
        [Decision::Down(set(&[4, 5]))]
    );
}

#[test]
fn a_graceful_leave_is_not_a_partition() {
    let (mut p, t) = settled(1, &[1, 2, 3, 4], &[]);
    // 3 and 4 left: the two that remain are the whole membership, not a losing half.
    let view = Observation {
        reachable: set(&[1, 2]),
        unreachable: BTreeSet::new(),
        left: set(&[3, 4]),
        voters: BTreeSet::new(),
        detection: Duration::ZERO,
    };
    assert!(hold(&mut p, t, &view).is_empty());
    assert_eq!(p.stable_membership(), &set(&[1, 2]));
}

#[test]
fn members_that_join_during_a_split_do_not_count_for_it() {
    let (mut p, t) = settled(1, &[1, 2, 3, 4, 5], &[]);
    // {1, 2} plus three newcomers: still two of the five that were stable.
    assert_eq!(
        hold(&mut p, t, &sees(&[1, 2, 6, 7, 8], &[])),
        [Decision::DownMyself]
    );
}

#[test]
fn a_young_cluster_splits_the_members_it_knows() {
    // The view never stayed the same for a window before the split: the members known but
    // not heard from still count.
    let t = Instant::now();
    let split = |reachable: &[u8], unreachable: &[u8]| Observation {
        reachable: set(reachable),
        unreachable: set(unreachable),
        ..Observation::default()
    };
    let mut minority = SplitBrain::new(node(4), W);
    assert_eq!(
        hold(&mut minority, t, &split(&[4, 5], &[1, 2, 3])),
        [Decision::DownMyself]
    );
    let mut majority = SplitBrain::new(node(1), W);
    assert_eq!(
        hold(&mut majority, t, &split(&[1, 2, 3], &[4, 5])),
        [Decision::Down(set(&[4, 5]))]
    );
    assert_eq!(majority.stable_membership(), &set(&[1, 2, 3]));
}

#[test]
fn the_window_lasts_at_least_until_every_member_was_probed() {
    // Seven members, 4 and 5 cut from the rest, but 4 has not probed 6 yet: for a
    // window its view {4, 5, 6, 7} looks stable and a majority. Detection needs longer,
    // so nothing is decided until 6 is suspected too; then 4 downs itself.
    let all = [1, 2, 3, 4, 5, 6, 7];
    let (mut p, t) = settled(4, &all, &[]);
    let partial = Observation {
        reachable: set(&[4, 5, 6, 7]),
        unreachable: set(&[1, 2, 3]),
        detection: W * 2,
        ..Observation::default()
    };
    assert!(hold(&mut p, t, &partial).is_empty());
    let whole = Observation {
        reachable: set(&[4, 5]),
        unreachable: set(&[1, 2, 3, 6, 7]),
        detection: W * 2,
        ..Observation::default()
    };
    let t = t + W * 3 / 2;
    assert!(hold(&mut p, t, &whole).is_empty(), "one window is too soon");
    assert_eq!(hold(&mut p, t + W, &whole), [Decision::DownMyself]);
    // Without the detection time, the partial view decided for the wrong side.
    let (mut p, t) = settled(4, &all, &[]);
    let hasty = Observation {
        detection: Duration::ZERO,
        ..partial
    };
    assert_eq!(hold(&mut p, t, &hasty), [Decision::Down(set(&[1, 2, 3]))]);
}

#[test]
fn a_young_cluster_that_fenced_itself_is_armed_again_after_the_heal() {
    // Split before any view was stable: the lost membership is what it knew, and hearing
    // from a majority of that arms it again (it once stayed fenced for good: a majority of
    // an empty stable membership is never reached).
    let t = Instant::now();
    let young = Observation {
        reachable: set(&[4, 5]),
        unreachable: set(&[1, 2, 3]),
        ..Observation::default()
    };
    let mut p = SplitBrain::new(node(4), W);
    assert_eq!(hold(&mut p, t, &young), [Decision::DownMyself]);
    assert!(p.is_fenced());
    let all = [1, 2, 3, 4, 5];
    let t = t + W * 3;
    assert!(hold(&mut p, t, &sees(&all, &[])).is_empty());
    assert!(!p.is_fenced());
    assert_eq!(p.stable_membership(), &set(&all));
    // Armed: the next split is decided again.
    let t = t + W * 3;
    assert_eq!(
        hold(&mut p, t, &sees(&[3, 4, 5], &[])),
        [Decision::Down(set(&[1, 2]))]
    );
}

#[test]
fn a_member_that_joined_then_went_quiet_counts() {
    let (mut p, t) = settled(1, &[1, 2, 3], &[]);
    // 4 and 5 joined but were never heard from for a window; now quiet with 3.
    let view = Observation {
        reachable: set(&[1, 2]),
        unreachable: set(&[3, 4, 5]),
        ..Observation::default()
    };
    assert_eq!(hold(&mut p, t, &view), [Decision::DownMyself]);
}
