//! Random and mutated bytes never panic the decoders, and every envelope round-trips.

use atoll_core::{ExitReason, NodeId, Pid};
use atoll_wire::*;
use proptest::prelude::*;

fn pid() -> impl Strategy<Value = Pid> {
    (any::<[u8; 16]>(), any::<u32>(), any::<u64>())
        .prop_map(|(n, c, s)| Pid::new(NodeId::from_bytes(n), c, s))
}

fn reason() -> impl Strategy<Value = ExitReason> {
    prop_oneof![
        Just(ExitReason::Normal),
        Just(ExitReason::Shutdown),
        Just(ExitReason::Killed),
        Just(ExitReason::NoProc),
        Just(ExitReason::NoConnection),
        ".{0,20}".prop_map(ExitReason::error),
    ]
}

fn data() -> impl Strategy<Value = Data> {
    prop_oneof![
        (pid(), prop::collection::vec(any::<u8>(), 0..64))
            .prop_map(|(to, payload)| Data::Send { to, payload }),
        (".{0,12}", prop::collection::vec(any::<u8>(), 0..64))
            .prop_map(|(name, payload)| Data::SendNamed { name, payload }),
        (any::<u64>(), prop::collection::vec(any::<u8>(), 0..64))
            .prop_map(|(call, payload)| Data::Reply { call, payload }),
        (pid(), pid(), reason()).prop_map(|(from, to, reason)| Data::Signal(Signal::Exit {
            from,
            to,
            reason,
            kind: ExitKind::Link
        })),
        (pid(), pid(), any::<u64>(), reason()).prop_map(|(to, pid, monitor, reason)| {
            Data::Signal(Signal::Down {
                to,
                monitor,
                pid,
                reason,
            })
        }),
    ]
}

fn control() -> impl Strategy<Value = Control> {
    prop_oneof![
        (".{0,12}", any::<[u8; 16]>(), any::<u32>()).prop_map(|(n, id, c)| Control::Hello(Hello {
            node_name: n,
            node_id: NodeId::from_bytes(id),
            creation: c,
            listen: Some("127.0.0.1:4000".into()),
            public_key: vec![7; 32],
            proof: vec![9; 64],
        })),
        prop::collection::vec((".{0,8}", pid()), 0..4)
            .prop_map(|names| Control::Gossip(RegistryGossip::Snapshot(names))),
        (any::<u64>(), ".{0,8}").prop_map(|(id, f)| Control::Request {
            id,
            body: Request::Spawn {
                factory: f,
                args: vec![1]
            }
        }),
        (any::<u64>(), ".{0,8}").prop_map(|(id, f)| Control::Response {
            id,
            body: Response::Error(RemoteError::UnknownFactory(f))
        }),
        (any::<u64>(), prop::collection::vec(any::<u8>(), 0..64)).prop_map(|(id, body)| {
            Control::Request {
                id,
                body: Request::Raft(body),
            }
        }),
        (any::<u64>(), prop::collection::vec(any::<u8>(), 0..64)).prop_map(|(id, body)| {
            Control::Response {
                id,
                body: Response::Raft(body),
            }
        }),
        (any::<u64>(), ".{0,8}", pid(), any::<u64>()).prop_map(|(id, name, pid, wait_ms)| {
            Control::Request {
                id,
                body: Request::AwaitName { name, pid, wait_ms },
            }
        }),
        (any::<u64>(), any::<Option<u64>>()).prop_map(|(id, applied)| Control::Response {
            id,
            body: Response::NameApplied(applied),
        }),
        (any::<u64>(), ".{0,8}", pid(), any::<u64>(), any::<u64>()).prop_map(
            |(id, name, holder, after, wait_ms)| Control::Request {
                id,
                body: Request::AwaitLock {
                    name,
                    holder,
                    after,
                    wait_ms,
                },
            }
        ),
        (any::<u64>(), any::<u64>(), 0..3u8).prop_map(|(id, token, kind)| Control::Response {
            id,
            body: Response::LockWait(match kind {
                0 => atoll_wire::LockWait::Granted(token),
                1 => atoll_wire::LockWait::Free,
                _ => atoll_wire::LockWait::Waiting,
            }),
        }),
        (
            any::<u64>(),
            any::<Option<u64>>(),
            prop::collection::vec(any::<u8>(), 0..64)
        )
            .prop_map(
                |(applied, leader, snapshot)| Control::Registry(RegistryView {
                    applied,
                    leader,
                    snapshot,
                })
            ),
        Just(Control::Kept),
        prop::collection::vec(any::<u8>(), 0..64).prop_map(Control::Data),
        (
            any::<u64>(),
            any::<u64>(),
            any::<Option<u64>>(),
            prop::collection::vec(any::<u8>(), 0..64)
        )
            .prop_map(|(base, upto, leader, entries)| Control::RegistryDelta(
                RegistryDelta {
                    base,
                    upto,
                    leader,
                    entries,
                }
            )),
        any::<u64>().prop_map(|applied| Control::RegistryAt { applied }),
    ]
}

proptest! {
    #[test]
    fn data_round_trips_through_frames(d in data()) {
        let frame = encode_frame(&d).unwrap();
        let mut dec = FrameDecoder::new(1 << 16);
        dec.push(&frame);
        let body = dec.next_frame().unwrap().unwrap();
        prop_assert_eq!(decode::<Data>(&body).unwrap(), d);
    }

    #[test]
    fn data_decodes_in_place_as_the_same_envelope(d in data()) {
        let frame = encode_frame(&d).unwrap();
        let borrowed: DataRef<'_> = decode_ref(&frame[HEADER_LEN..]).unwrap();
        let same = match (&d, borrowed) {
            (Data::Send { to, payload }, DataRef::Send { to: t, payload: p }) => *to == t && payload == p,
            (Data::SendNamed { name, payload }, DataRef::SendNamed { name: n, payload: p }) => name == n && payload == p,
            (Data::Reply { call, payload }, DataRef::Reply { call: c, payload: p }) => *call == c && payload == p,
            (Data::Signal(s), DataRef::Signal(t)) => *s == t,
            _ => false,
        };
        prop_assert!(same);
    }

    #[test]
    fn control_round_trips_through_frames(c in control()) {
        let frame = encode_frame(&c).unwrap();
        let body = &frame[HEADER_LEN..];
        prop_assert_eq!(decode::<Control>(body).unwrap(), c);
    }

    #[test]
    fn random_bytes_never_panic_the_decoders(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode::<Data>(&bytes);
        let _ = decode_ref::<DataRef<'_>>(&bytes);
        let _ = decode::<Control>(&bytes);
        let mut dec = FrameDecoder::new(128);
        dec.push(&bytes);
        while let Ok(Some(body)) = dec.next_frame() {
            let _ = decode::<Data>(&body);
        }
    }

    #[test]
    fn mutated_frames_never_panic_and_never_allocate_past_the_limit(
        d in data(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let mut frame = encode_frame(&d).unwrap();
        for (at, b) in flips {
            let i = at.index(frame.len());
            frame[i] = b;
        }
        let mut dec = FrameDecoder::new(64);
        dec.push(&frame);
        if let Ok(Some(body)) = dec.next_frame() {
            prop_assert!(body.len() < 64);
            let _ = decode::<Data>(&body);
        }
    }
}
