//! Valid inputs for each target, made with the same encoders the runtime sends with: the
//! starting points the smoke run mutates, so mutations reach past the first decode step.

use std::time::{Duration, Instant};

use atoll_core::{ExitReason, NodeId, Pid};
use atoll_data::{
    ChainView, KeyRange, MemoryChainStore, MerkleMessage, NodeRef, ProcessAdvertisement,
    ProcessStatus,
};
use atoll_swim::{Identity, MemberMeta, Membership, SwimConfig};
use atoll_wire::{
    Control, Data, ExitKind, GroupMessage, Hello, RegistryDelta, RegistryGossip, RegistryView,
    Request, Response, Signal,
};

use crate::targets;

fn pid(node: u8, serial: u64) -> Pid {
    Pid::new(NodeId::from_bytes([node; 16]), 1, serial)
}

/// An envelope as one whole frame, as a peer sends it.
fn frame<T: serde::Serialize>(envelope: &T) -> Vec<u8> {
    atoll_wire::encode_frame(envelope).expect("a seed envelope encodes")
}

/// A frame's body: the encoded envelope without its length and version.
fn body<T: serde::Serialize>(envelope: &T) -> Vec<u8> {
    frame(envelope)[atoll_wire::HEADER_LEN..].to_vec()
}

fn data() -> Vec<Data> {
    vec![
        Data::Send {
            to: pid(1, 7),
            payload: b"hello".to_vec(),
        },
        Data::SendNamed {
            name: "greeter".into(),
            payload: vec![0, 1, 2, 255],
        },
        Data::Reply {
            call: 42,
            payload: vec![9; 20],
        },
        Data::Signal(Signal::Exit {
            from: pid(2, 1),
            to: pid(1, 2),
            reason: ExitReason::error("boom"),
            kind: ExitKind::Link,
        }),
        Data::Signal(Signal::Down {
            to: pid(1, 3),
            monitor: 5,
            pid: pid(2, 4),
            reason: ExitReason::NoConnection,
        }),
    ]
}

fn control() -> Vec<Control> {
    vec![
        Control::Hello(Hello {
            node_name: "london".into(),
            node_id: NodeId::from_bytes([2; 16]),
            creation: 3,
            listen: Some("127.0.0.1:7000".into()),
            public_key: vec![7; 32],
            proof: vec![9; 64],
        }),
        Control::Kept,
        Control::Gossip(RegistryGossip::Snapshot(vec![("a".into(), pid(2, 1))])),
        Control::Gossip(RegistryGossip::Registered {
            name: "b".into(),
            pid: pid(2, 2),
        }),
        Control::Request {
            id: 1,
            body: Request::Spawn {
                factory: "worker".into(),
                args: vec![1, 2],
            },
        },
        Control::Request {
            id: 2,
            body: Request::AwaitLock {
                name: "l".into(),
                holder: pid(2, 3),
                after: 4,
                wait_ms: 100,
            },
        },
        Control::Response {
            id: 2,
            body: Response::NameApplied(Some(9)),
        },
        Control::Registry(RegistryView {
            applied: 12,
            leader: Some(1),
            snapshot: vec![1, 2, 3],
        }),
        Control::RegistryDelta(RegistryDelta {
            base: 12,
            upto: 14,
            leader: Some(1),
            entries: registry_delta().remove(0)[2..].to_vec(),
        }),
        Control::RegistryAt { applied: 12 },
        Control::Groups(GroupMessage::Sync {
            groups: vec![("room".into(), vec![pid(2, 5), pid(2, 6)])],
        }),
        Control::Groups(GroupMessage::Leave {
            group: "room".into(),
            pids: vec![pid(2, 5)],
        }),
    ]
}

/// Seeds of [`targets::frame_decoder`]: two whole frames, cut in various places.
pub fn frame_decoder() -> Vec<Vec<u8>> {
    let frames: Vec<Vec<u8>> = data().iter().map(frame).collect();
    let stream: Vec<u8> = frames.concat();
    [0u8, 3, 9, 40, 255]
        .iter()
        .map(|cut| [&[*cut][..], &stream].concat())
        .chain(frames.iter().map(|f| [&[2u8][..], f].concat()))
        .collect()
}

/// Seeds of [`targets::data_envelope`].
pub fn data_envelope() -> Vec<Vec<u8>> {
    data().iter().map(body).collect()
}

/// Seeds of [`targets::control_envelope`].
pub fn control_envelope() -> Vec<Vec<u8>> {
    control().iter().map(body).collect()
}

/// Seeds of [`targets::swim_datagram`]: what a peer (`[2; 16]`) really sends the fuzzed
/// member while it joins and probes, each behind the peer's id.
pub fn swim_datagram() -> Vec<Vec<u8>> {
    let start = Instant::now();
    let mut me = targets::swim_member(start);
    let peer_id = NodeId::from_bytes([2; 16]);
    let peer_identity = Identity::new(
        peer_id,
        3,
        "127.0.0.2:7000".parse().expect("an address"),
        MemberMeta::named("peer"),
    )
    .expect("a short name");
    let mut peer = Membership::new(peer_identity, SwimConfig::default(), 2);
    let my_addr = me.identity().addr;
    peer.join(start, &[my_addr]);
    while let Some(addr) = peer.poll_dial() {
        peer.dial_result(start, addr, Some(me.identity().node));
    }
    let mut seeds = Vec::new();
    for round in 0..8u64 {
        let now = start + Duration::from_millis(700 * round);
        peer.handle_timeout(now);
        me.handle_timeout(now);
        while let Some(t) = peer.poll_transmit() {
            seeds.push([&peer_id.as_bytes()[..], &t.payload].concat());
            let _ = me.handle_datagram(now, peer_id, &t.payload);
        }
        while let Some(t) = me.poll_transmit() {
            let _ = peer.handle_datagram(now, me.identity().node, &t.payload);
        }
        while me.poll_event().is_some() {}
        while peer.poll_event().is_some() {}
    }
    seeds
}

/// Seeds of [`targets::gossip_delta`]: a peer's whole state and an empty delta.
pub fn gossip_delta() -> Vec<Vec<u8>> {
    let peer = NodeId::from_bytes([2; 16]);
    let mut state = atoll_data::CrdtGossipState::new(peer);
    for serial in 1..4 {
        let _ = state.processes.advertise(
            ProcessAdvertisement {
                pid: Pid::new(peer, 1, serial),
                agent_type: "worker".into(),
                capabilities: ["a".to_string(), "b".to_string()].into(),
                status: ProcessStatus::Running,
                resource_summary: Default::default(),
            },
            1_500,
        );
    }
    vec![
        state.delta_for(&Default::default(), 4_096).encode(),
        atoll_data::GossipDelta::default().encode(),
    ]
}

/// Seeds of [`targets::gossip_digest`]: a live state's digest, and an empty one.
pub fn gossip_digest() -> Vec<Vec<u8>> {
    vec![
        targets::gossip_state().digest(2_000).encode(),
        atoll_data::GossipDigest::default().encode(),
    ]
}

/// A source log that extends [`targets::chain_replica`] by two entries.
fn chain_source() -> atoll_data::Chain<MemoryChainStore> {
    let mut source = targets::chain_replica();
    for payload in [&b"second"[..], b"third"] {
        source
            .append(payload.to_vec())
            .expect("an in-memory append");
    }
    source
}

/// Seeds of [`targets::chain_entry`].
pub fn chain_entry() -> Vec<Vec<u8>> {
    let source = chain_source();
    (1..=source.head().sequence)
        .filter_map(|s| source.get(s).ok().flatten())
        .map(|e| e.encode())
        .collect()
}

/// Seeds of [`targets::chain_sync`]: the answer to the replica's request, and to a request
/// from an empty log.
pub fn chain_sync() -> Vec<Vec<u8>> {
    let source = chain_source();
    let replica = targets::chain_replica();
    let empty = atoll_data::Chain::new(MemoryChainStore::default());
    [replica.sync_request(4_096), empty.sync_request(4_096)]
        .iter()
        .map(|r| source.serve(r).expect("serves").encode())
        .collect()
}

/// Seeds of [`targets::merkle_message`]: one of each message, about the target's own map
/// (so comparisons go deep).
pub fn merkle_message() -> Vec<Vec<u8>> {
    let mut map = targets::merkle_map();
    map.insert(7, 99, 2_000);
    let tree = map.merkle_tree(targets::MERKLE_DEPTH);
    let asked = [NodeRef::ROOT, NodeRef { level: 1, index: 1 }];
    [
        MerkleMessage::Root(tree.root()),
        MerkleMessage::Children(asked.to_vec()),
        MerkleMessage::Hashes(tree.children(&asked).unwrap_or_default()),
        MerkleMessage::Ranges(vec![KeyRange::ALL]),
        MerkleMessage::Summaries(map.summarize(&[KeyRange::ALL])),
        MerkleMessage::Pull(vec![1, 2, 3]),
    ]
    .iter()
    .map(MerkleMessage::encode)
    .collect()
}

/// Every kind of data-plane message, from a real exchange between two planes that differ.
pub fn data_message() -> Vec<Vec<u8>> {
    use atoll_cluster::protocol::data::{DataPlane, DataSettings};
    let (a, b) = (NodeId::from_bytes([1; 16]), NodeId::from_bytes([2; 16]));
    let settings = DataSettings {
        repair_every: 1,
        ..DataSettings::default()
    };
    let mut planes = [
        DataPlane::new(a, settings, 1),
        DataPlane::new(b, settings, 2),
    ];
    let ad = |node: NodeId, serial: u64| ProcessAdvertisement {
        pid: Pid::new(node, 1, serial),
        agent_type: "worker".into(),
        capabilities: ["a".to_string()].into(),
        status: ProcessStatus::Running,
        resource_summary: Default::default(),
    };
    let mut out = Vec::new();
    let mut queue: Vec<(usize, atoll_cluster::protocol::data::DataMessage)> = Vec::new();
    for (i, node) in [a, b].into_iter().enumerate() {
        let local: Vec<_> = (1..=20).map(|s| ad(node, s)).collect();
        for (to, msg) in planes[i].tick(1_000, &[a, b], &local) {
            queue.push((usize::from(to == b), msg));
        }
    }
    while let Some((to, msg)) = queue.pop() {
        out.push(msg.encode());
        let from = if to == 0 { b } else { a };
        for (next, answer) in planes[to].receive(from, msg, 1_001) {
            queue.push((usize::from(next == b), answer));
        }
    }
    out
}

/// Registry delta entries as a voter sends them, after the base and reach bytes.
pub fn registry_delta() -> Vec<Vec<u8>> {
    use atoll_raft::{Command, Delta};
    let holder = pid(2, 5);
    let delta = Delta {
        base: 12,
        upto: 14,
        entries: vec![
            (
                13,
                vec![
                    Command::Register {
                        name: "db".into(),
                        pid: holder,
                        scope: atoll_core::Scope::Consistent,
                    },
                    Command::LockOrWait {
                        name: "l".into(),
                        holder,
                    },
                ],
            ),
            (
                14,
                vec![
                    Command::Unlock {
                        name: "l".into(),
                        token: 13,
                    },
                    Command::ReleaseNode {
                        node: NodeId::from_bytes([2; 16]),
                        before_creation: Some(2),
                        up_to_index: None,
                    },
                ],
            ),
        ],
    };
    let mut seed = vec![12, 2];
    seed.extend(delta.encode_entries());
    vec![seed]
}

/// Seeds of [`targets::grain_state`]: stored copies and replica answers.
pub fn grain_state() -> Vec<Vec<u8>> {
    use atoll_grain::core::Versioned;
    use atoll_grain::{ReplicaAnswer, StaleEpoch};
    let copy = Versioned {
        epoch: 42,
        seq: 7,
        state: b"balance: 100".to_vec(),
    };
    let answers = [
        ReplicaAnswer::Ok(Some(postcard::to_allocvec(&copy).unwrap())),
        ReplicaAnswer::Ok(None),
        ReplicaAnswer::Stale(StaleEpoch { epoch: 3, seen: 9 }),
        ReplicaAnswer::Failed("no grain store on this node".into()),
    ];
    let mut seeds = vec![postcard::to_allocvec(&copy).unwrap()];
    seeds.extend(answers.iter().map(|a| postcard::to_allocvec(a).unwrap()));
    seeds
}

/// Seeds of [`targets::chat_room_state`]: an empty room and one with members and lines.
pub fn chat_room_state() -> Vec<Vec<u8>> {
    use atoll_grain::chat::RoomState;
    let mut room = RoomState::default();
    let empty = postcard::to_allocvec(&room).unwrap();
    for (n, nick) in ["ann", "bob"].into_iter().enumerate() {
        let pid = atoll_core::Pid::new(atoll_core::NodeId::from_bytes([n as u8; 16]), 1, 9);
        room.join("lobby", nick.into(), pid).unwrap();
        room.post(nick.into(), format!("hi, {nick} here"));
    }
    vec![empty, postcard::to_allocvec(&room).unwrap()]
}

/// Incarnation records as a node writes them, and one with the whitespace an editor adds.
pub fn incarnation_record() -> Vec<Vec<u8>> {
    use atoll_cluster::protocol::incarnation::encode_record;
    vec![
        encode_record(1),
        encode_record(216_000_000),
        b"4294967295\n".to_vec(),
    ]
}

#[cfg(test)]
mod tests {
    //! Every seed is valid: it gets past the decoder its target starts with.

    use super::*;
    use atoll_data::{ChainEntry, ChainSyncResponse, GossipDigest, decode_delta};

    #[test]
    fn wire_seeds_decode() {
        for s in data_envelope() {
            atoll_wire::decode::<Data>(&s).unwrap();
        }
        for s in control_envelope() {
            atoll_wire::decode::<Control>(&s).unwrap();
        }
        for s in frame_decoder() {
            let mut decoder = atoll_wire::FrameDecoder::new(targets::MAX_FRAME);
            decoder.push(&s[1..]);
            let body = decoder.next_frame().unwrap().expect("a whole frame");
            atoll_wire::decode::<Data>(&body).unwrap();
        }
    }

    #[test]
    fn swim_seeds_are_taken_by_the_fuzzed_member() {
        let seeds = swim_datagram();
        assert!(seeds.len() >= 3, "{} datagrams", seeds.len());
        let now = Instant::now();
        let mut me = targets::swim_member(now);
        for s in &seeds {
            let from = NodeId::from_bytes(s[..16].try_into().unwrap());
            me.handle_datagram(now, from, &s[16..]).unwrap();
        }
    }

    #[test]
    fn data_seeds_decode() {
        for s in gossip_delta() {
            decode_delta(&s).unwrap();
        }
        for s in gossip_digest() {
            GossipDigest::decode(&s).unwrap();
        }
        for s in chain_entry() {
            ChainEntry::decode(&s).unwrap();
        }
        let sync = chain_sync();
        let first = ChainSyncResponse::decode(&sync[0]).unwrap();
        let mut replica = targets::chain_replica();
        let head = replica.head().sequence;
        assert_eq!(replica.apply(head, &first).unwrap().appended, 2);
        for s in merkle_message() {
            MerkleMessage::decode(&s).unwrap();
        }
    }

    #[test]
    fn chat_room_seeds_decode() {
        for s in chat_room_state() {
            postcard::from_bytes::<atoll_grain::chat::RoomState>(&s).unwrap();
        }
    }
}
