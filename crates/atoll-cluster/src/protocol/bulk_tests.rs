use super::*;

fn merge() -> BulkMerge {
    BulkMerge::new(1 << 20)
}

#[test]
fn frames_go_on_the_bulk_stream_from_the_threshold_up() {
    assert_eq!(lane(64), Lane::Message);
    assert_eq!(lane(BULK_FRAME - 1), Lane::Message);
    assert_eq!(lane(BULK_FRAME), Lane::Bulk);
    assert_eq!(lane(8 << 20), Lane::Bulk);
}

#[test]
fn frames_of_other_keys_pass_a_large_frame_in_flight() {
    let mut m = merge();
    assert_eq!(m.mark(0, 0, 7).unwrap(), Vec::<Vec<u8>>::new());
    assert_eq!(m.frame(8, b"other"), Admit::Now);
    assert_eq!(m.frame(7, b"after"), Admit::Held);
    assert_eq!(m.held_bytes(), 5);
    let r = m.bulk(0, b"large").unwrap();
    assert!(r.arrived_now);
    assert_eq!(r.then, vec![b"after".to_vec()]);
    assert!(m.is_idle());
    assert_eq!(m.held_bytes(), 0);
    assert_eq!(m.frame(7, b"later"), Admit::Now);
}

#[test]
fn a_bulk_frame_that_arrives_before_its_mark_waits_for_it() {
    let mut m = merge();
    assert_eq!(m.bulk(0, b"large").unwrap(), Release::default());
    assert!(!m.is_idle());
    // Frames of its key read before the mark go first: they were sent before it.
    assert_eq!(m.frame(7, b"before"), Admit::Now);
    assert_eq!(m.mark(0, 0, 7).unwrap(), vec![b"large".to_vec()]);
    assert!(m.is_idle());
}

#[test]
fn two_large_frames_of_one_key_keep_their_order_whatever_arrives_first() {
    let mut m = merge();
    m.mark(0, 0, 7).unwrap();
    assert_eq!(m.frame(7, b"a"), Admit::Held);
    m.mark(0, 1, 7).unwrap();
    assert_eq!(m.frame(7, b"b"), Admit::Held);
    let first = m.bulk(0, b"L0").unwrap();
    assert!(first.arrived_now);
    assert_eq!(first.then, vec![b"a".to_vec()]);
    let second = m.bulk(0, b"L1").unwrap();
    assert!(second.arrived_now);
    assert_eq!(second.then, vec![b"b".to_vec()]);
    assert!(m.is_idle());
}

#[test]
fn large_frames_of_different_keys_do_not_wait_for_each_other() {
    let mut m = merge();
    m.mark(0, 0, 1).unwrap();
    m.mark(0, 1, 2).unwrap();
    assert_eq!(m.frame(2, b"k2"), Admit::Held);
    // Frame 0 arrives first (the bulk stream is in order), releasing key 1 only.
    let r = m.bulk(0, b"L0").unwrap();
    assert!(r.arrived_now && r.then.is_empty());
    assert_eq!(m.frame(1, b"k1"), Admit::Now);
    assert_eq!(m.frame(2, b"k2 again"), Admit::Held);
    let r = m.bulk(0, b"L1").unwrap();
    assert!(r.arrived_now);
    assert_eq!(r.then, vec![b"k2".to_vec(), b"k2 again".to_vec()]);
}

#[test]
fn a_later_large_frame_arriving_behind_an_earlier_one_of_its_key_is_kept() {
    let mut m = merge();
    // Marks for 0 (key 3) and 1 (key 3) arrive after frame 1 was read: impossible on one
    // ordered bulk stream for frame 0, but frame 1 before mark 1 is usual.
    m.mark(0, 0, 3).unwrap();
    assert!(m.bulk(0, b"L0").unwrap().arrived_now);
    assert_eq!(m.bulk(0, b"L1").unwrap(), Release::default());
    assert_eq!(m.mark(0, 1, 3).unwrap(), vec![b"L1".to_vec()]);
    assert!(m.is_idle());
}

#[test]
fn broken_marks_are_refused() {
    let mut m = merge();
    m.mark(0, 0, 1).unwrap();
    assert_eq!(m.mark(0, 0, 1), Err(MergeError::DuplicateMark((0, 0))));
    assert!(m.bulk(0, b"L0").unwrap().arrived_now);
    assert_eq!(m.mark(0, 0, 1), Err(MergeError::LateMark((0, 0))));
}

#[test]
fn unmarked_bulk_frames_are_bounded() {
    let mut m = BulkMerge::new(10);
    assert!(m.bulk(0, &[0; 6]).is_ok());
    assert_eq!(
        m.bulk(0, &[0; 6]),
        Err(MergeError::TooManyUnmarked { bytes: 12, max: 10 })
    );
}

#[test]
fn keys_match_what_senders_use() {
    use atoll_core::{NodeId, Pid};
    let to = Pid {
        node: NodeId::from_bytes([1; 16]),
        serial: 42,
        creation: 1,
    };
    assert_eq!(
        data_key(&DataRef::Send { to, payload: b"" }),
        Some(crate::peer::Peer::stream_key(to))
    );
    assert_eq!(
        data_key(&DataRef::Reply {
            call: 9,
            payload: b""
        }),
        Some(9)
    );
    assert_eq!(
        data_key(&DataRef::SendNamed {
            name: "n",
            payload: b""
        }),
        Some(name_key("n"))
    );
    assert_eq!(data_key(&DataRef::BulkLane { lane: 0 }), None);
}

#[test]
fn bulk_streams_count_positions_apart() {
    let mut m = merge();
    m.mark(1, 0, 5).unwrap();
    m.mark(0, 0, 6).unwrap();
    assert_eq!(m.frame(5, b"k5"), Admit::Held);
    let r = m.bulk(0, b"lane 0").unwrap();
    assert!(r.arrived_now && r.then.is_empty());
    let r = m.bulk(1, b"lane 1").unwrap();
    assert!(r.arrived_now);
    assert_eq!(r.then, vec![b"k5".to_vec()]);
    assert!(m.is_idle());
    assert_eq!(
        m.bulk(MAX_LANES, b"x"),
        Err(MergeError::NoSuchLane(MAX_LANES))
    );
}
