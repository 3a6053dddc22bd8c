//! One function per fuzz target: arbitrary bytes in, a panic only on a real bug. The
//! cargo-fuzz binaries in `fuzz/fuzz_targets/` call these and nothing else.

use std::time::{Duration, Instant};

use atoll_core::{NodeId, Pid};
use atoll_data::{
    Chain, ChainEntry, ChainSyncResponse, ChainView, CrdtGossipState, GossipDigest, KeyRange,
    LwwMap, MemoryChainStore, MerkleMessage, MerkleTree, NodeRef, ProcessAdvertisement,
    ProcessStatus, compare_tree_roots, decode_delta,
};
use atoll_swim::{Identity, MemberMeta, Membership, SwimConfig};

/// The largest frame [`frame_decoder`] accepts.
pub const MAX_FRAME: usize = 4096;

/// Arbitrary bytes through the frame decoder, in two chunks: the first byte says where the
/// rest is cut (and, for one value in sixteen, the rest is also a large frame's body).
pub fn frame_decoder(data: &[u8]) {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let mut decoder = atoll_wire::FrameDecoder::new(MAX_FRAME);
    let cut = (split as usize).min(rest.len());
    for chunk in [&rest[..cut], &rest[cut..]] {
        decoder.push(chunk);
        while let Ok(Some(body)) = decoder.next_frame() {
            assert!(body.len() < MAX_FRAME);
            let _ = atoll_wire::decode::<atoll_wire::Data>(&body);
        }
    }
    // One input in sixteen also goes through a large frame (64 KiB each: costly to build).
    if split % 16 == 0 {
        shared_frame(cut, rest);
    }
}

/// `body` (zero-padded) as the body of a frame large enough to be shared, cut after `cut`
/// bytes: payloads decoded from it are views of it and stay whole after the decoder goes.
fn shared_frame(cut: usize, body: &[u8]) {
    use atoll_wire::{HEADER_LEN, Payload, SHARED_FRAME_MIN, WIRE_VERSION};
    // At least one byte of padding, so the cut always leaves the frame incomplete.
    let len = SHARED_FRAME_MIN.max(body.len() + 2);
    let mut frame = Vec::with_capacity(len + 4);
    frame.extend_from_slice(&u32::try_from(len).expect("small").to_be_bytes());
    frame.push(WIRE_VERSION);
    frame.extend_from_slice(body);
    frame.resize(len + 4, 0);
    let mut decoder = atoll_wire::FrameDecoder::new(len);
    let (first, second) = frame.split_at(cut + HEADER_LEN);
    decoder.push(first);
    assert!(matches!(decoder.next_frame_with(|_| ()), Ok(None)));
    decoder.push(second);
    let decoded = decoder
        .next_frame_with(|b| atoll_wire::decode_ref::<(Payload, Payload)>(b).ok())
        .expect("a well-formed header");
    drop(decoder);
    // The shared views hold the same bytes as a plain decode of the frame's copy.
    let copied = atoll_wire::decode_ref::<(Payload, Payload)>(&frame[HEADER_LEN..]).ok();
    assert_eq!(decoded, Some(copied));
}

/// Arbitrary bytes as a message-stream envelope body: whatever decodes encodes again.
pub fn data_envelope(data: &[u8]) {
    if let Ok(envelope) = atoll_wire::decode::<atoll_wire::Data>(data) {
        atoll_wire::encode_frame(&envelope).expect("a decoded envelope re-encodes");
    }
}

/// Arbitrary bytes as what a peer sends on its message and bulk streams, four bytes per
/// event: `[kind, a, b, c]`: a mark (bulk stream `a`, position `b`, key `c`), a frame of
/// key `a` and `b` bytes, or a frame of `b` bytes on bulk stream `a`. Whatever arrives, the
/// merge neither panics nor loses count of what it holds.
pub fn bulk_merge(data: &[u8]) {
    use atoll_cluster::protocol::bulk::{Admit, BulkMerge};
    let mut merge = BulkMerge::new(MAX_FRAME);
    // Bytes of message-stream frames fed: the most the merge can be holding.
    let mut fed = 0usize;
    for event in data.chunks_exact(4) {
        let [kind, a, b, c] = [event[0], event[1], event[2], event[3]];
        let body = vec![c; usize::from(b)];
        let step = match kind % 3 {
            0 => merge
                .mark(u32::from(a % 80), u64::from(b % 16), u64::from(c % 4))
                .map(drop),
            1 => {
                fed += body.len();
                let _ = merge.frame(u64::from(a % 4), &body) == Admit::Held;
                Ok(())
            }
            _ => merge.bulk(u32::from(a % 80), &body).map(drop),
        };
        if step.is_err() {
            return;
        }
        assert!(merge.held_bytes() <= fed);
        if merge.is_idle() {
            assert_eq!(merge.held_bytes(), 0);
        }
    }
}

/// Arbitrary bytes as a control-stream envelope body: whatever decodes encodes again.
pub fn control_envelope(data: &[u8]) {
    if let Ok(envelope) = atoll_wire::decode::<atoll_wire::Control>(data) {
        atoll_wire::encode_frame(&envelope).expect("a decoded envelope re-encodes");
    }
}

/// The membership [`swim_datagram`] feeds: node `[1; 16]`, generation 5, a founder.
pub fn swim_member(now: Instant) -> Membership {
    let me = Identity::new(
        NodeId::from_bytes([1; 16]),
        5,
        "127.0.0.1:7000".parse().expect("an address"),
        MemberMeta::named("fuzz"),
    )
    .expect("a short name");
    let mut m = Membership::new(me, SwimConfig::default(), 1);
    m.join(now, &[]);
    m
}

/// Arbitrary bytes as a membership datagram from an authenticated peer, handled by a live
/// membership: it may refuse them, never panic. The sender id comes from the first 16
/// bytes when present, so forged and matching senders are both explored.
pub fn swim_datagram(data: &[u8]) {
    let now = Instant::now();
    let mut m = swim_member(now);
    let from = data.get(..16).map_or(NodeId::from_bytes([2; 16]), |b| {
        NodeId::from_bytes(b.try_into().expect("16 bytes"))
    });
    let _ = m.handle_datagram(now, from, data.get(16..).unwrap_or_default());
    m.handle_timeout(now + Duration::from_secs(2));
    while m.poll_transmit().is_some() {}
    while m.poll_event().is_some() {}
}

/// The live gossip state [`gossip_delta`] merges into: one advertised process.
pub fn gossip_state() -> CrdtGossipState {
    let me = NodeId::from_bytes([1; 16]);
    let mut state = CrdtGossipState::new(me);
    let _ = state.processes.advertise(
        ProcessAdvertisement {
            pid: Pid::new(me, 1, 1),
            agent_type: "fuzz".into(),
            capabilities: ["a".to_string()].into(),
            status: ProcessStatus::Running,
            resource_summary: Default::default(),
        },
        1_000,
    );
    state
}

/// Arbitrary bytes as a gossip delta from a peer: decoded (and re-encoded to the same
/// delta), then merged into a live state that answers with a delta of its own. It may be
/// refused, never panic.
pub fn gossip_delta(data: &[u8]) {
    let Ok(delta) = decode_delta(data) else {
        return;
    };
    assert_eq!(decode_delta(&delta.encode()).as_ref(), Ok(&delta));
    let mut state = gossip_state();
    let _ = state.merge_delta(delta, 2_000);
    let _ = state.processes.least_loaded_node(Some("a"));
    let digest = state.digest(3_000);
    let _ = state.delta_for(&digest, 4_096);
    let _ = state.delta_for(&Default::default(), 4_096);
}

/// Arbitrary bytes as a peer's gossip digest: decoded, then answered with a delta.
pub fn gossip_digest(data: &[u8]) {
    if let Ok(digest) = GossipDigest::decode(data) {
        let state = CrdtGossipState::new(NodeId::from_bytes([1; 16]));
        let _ = state.delta_for(&digest, 4_096);
    }
}

/// Arbitrary bytes as a chain entry read from disk: refused, or decoded to an entry whose
/// hash matches and which round-trips (postcard accepts overlong varints, so the bytes
/// themselves may differ).
pub fn chain_entry(data: &[u8]) {
    if let Ok(entry) = ChainEntry::decode(data) {
        assert!(entry.is_valid());
        assert_eq!(ChainEntry::decode(&entry.encode()).as_ref(), Ok(&entry));
    }
}

/// The replica [`chain_sync`] applies responses to: one entry, `first`.
pub fn chain_replica() -> Chain<MemoryChainStore> {
    let mut replica = Chain::new(MemoryChainStore::default());
    replica
        .append(b"first".to_vec())
        .expect("an in-memory append");
    replica
}

/// Arbitrary bytes as a chain sync response from a source: decoded, then applied to a
/// replica, which appends only entries that link onto its log and changes nothing when it
/// refuses.
pub fn chain_sync(data: &[u8]) {
    let Ok(response) = ChainSyncResponse::decode(data) else {
        return;
    };
    let mut replica = chain_replica();
    let before = replica.head();
    match replica.apply(before.sequence, &response) {
        Ok(outcome) => assert_eq!(
            replica.head().sequence,
            before.sequence + outcome.appended as u64
        ),
        Err(_) => assert_eq!(replica.head(), before),
    }
}

/// The map whose tree [`merkle_message`] compares against: keys 0..50.
pub fn merkle_map() -> LwwMap<u8, u8> {
    let mut map: LwwMap<u8, u8> = LwwMap::new(NodeId::from_bytes([1; 16]));
    for i in 0..50 {
        map.insert(i, i, 1_000);
    }
    map
}

/// The depth of [`merkle_message`]'s tree.
pub const MERKLE_DEPTH: u8 = 4;

/// Arbitrary bytes as an anti-entropy message from a peer, handled by a live tree.
pub fn merkle_message(data: &[u8]) {
    let Ok(message) = MerkleMessage::decode(data) else {
        return;
    };
    let map = merkle_map();
    let tree: MerkleTree = map.merkle_tree(MERKLE_DEPTH);
    match message {
        MerkleMessage::Root(root) => {
            let _ = compare_tree_roots(&tree.root(), &root);
        }
        MerkleMessage::Children(nodes) => {
            let _ = tree.children(&nodes);
        }
        MerkleMessage::Hashes(digests) => {
            let asked = [NodeRef::ROOT, NodeRef { level: 1, index: 1 }];
            let _ = tree.compare_children(&asked, &digests);
        }
        MerkleMessage::Ranges(ranges) => {
            let _ = map.summarize(&ranges);
            let _ = map.select(&ranges);
        }
        MerkleMessage::Summaries(summaries) => {
            let _ = map.reconcile(&[KeyRange::ALL], &summaries);
        }
        MerkleMessage::Pull(keys) => {
            let _ = map.select_keys(&keys);
        }
    }
}

/// A member's data plane with a few processes of its own and of one peer.
pub fn data_plane() -> atoll_cluster::protocol::data::DataPlane {
    use atoll_cluster::protocol::data::{DataPlane, DataSettings};
    let me = NodeId::from_bytes([1; 16]);
    let mut plane = DataPlane::new(me, DataSettings::default(), 7);
    let local: Vec<ProcessAdvertisement> = (1..4)
        .map(|serial| ProcessAdvertisement {
            pid: Pid::new(me, 1, serial),
            agent_type: "worker".into(),
            capabilities: ["a".to_string()].into(),
            status: atoll_data::ProcessStatus::Running,
            resource_summary: Default::default(),
        })
        .collect();
    let _ = plane.tick(1_000, &[me, NodeId::from_bytes([2; 16])], &local);
    plane
}

/// Arbitrary bytes as a peer's data-plane message (process table and service gossip,
/// Merkle repair steps): decoded, then handled by a live plane.
pub fn data_message(data: &[u8]) {
    use atoll_cluster::protocol::data::DataMessage;
    let Ok(message) = DataMessage::decode(data) else {
        return;
    };
    assert_eq!(
        DataMessage::decode(&message.encode()).as_ref().ok(),
        Some(&message)
    );
    static BASE: std::sync::OnceLock<atoll_cluster::protocol::data::DataPlane> =
        std::sync::OnceLock::new();
    let mut plane = BASE.get_or_init(data_plane).clone();
    let _ = plane.receive(NodeId::from_bytes([2; 16]), message, 2_000);
    let _ = plane.tick(
        3_000,
        &[NodeId::from_bytes([1; 16]), NodeId::from_bytes([2; 16])],
        &[],
    );
}

/// Arbitrary bytes as the entries of a registry delta from a voter: the first byte is the
/// index the receiver holds (the delta's base), the second how far past it the delta
/// reaches, the rest the encoded entries. Whatever decodes applies to a copy at the base,
/// moves it to the delta's end, and encodes to entries that decode the same.
pub fn registry_delta(data: &[u8]) {
    let [base, ahead, entries @ ..] = data else {
        return;
    };
    let (base, upto) = (u64::from(*base), u64::from(*base) + u64::from(*ahead));
    let Ok(delta) = atoll_raft::Delta::decode(base, upto, entries) else {
        return;
    };
    let mut copy = atoll_raft::FollowedRegistry {
        index: base,
        registry: atoll_raft::Registry::new(),
    };
    let receipt = copy.apply(&delta);
    if upto > base {
        assert_eq!(receipt, atoll_raft::Receipt::Advanced(upto));
    }
    let again = atoll_raft::Delta::decode(base, upto, &delta.encode_entries())
        .expect("re-encoded entries decode");
    assert_eq!(again, delta);
}

/// Arbitrary bytes as a copy of `Replicated` grain state, read from a store or carried in
/// a peer's answer to a replica read: refused, or decoded within the size limit to a copy
/// that round-trips; and the same bytes as a peer's replica answer.
pub fn grain_state(data: &[u8]) {
    if let Ok(copy) = atoll_grain::decode_versioned(data) {
        assert!(copy.state.len() <= atoll_grain::MAX_STATE_BYTES + 32);
        let bytes = postcard::to_allocvec(&copy).expect("a decoded copy encodes");
        assert_eq!(atoll_grain::decode_versioned(&bytes).as_ref(), Ok(&copy));
    }
    if let Ok(answer) = postcard::from_bytes::<atoll_grain::ReplicaAnswer>(data) {
        let bytes = postcard::to_allocvec(&answer).expect("a decoded answer encodes");
        assert_eq!(postcard::from_bytes(&bytes).ok(), Some(answer));
    }
}

/// Arbitrary bytes as a chat room's state, read back from a grain store: refused, or a
/// room that round-trips, keeps at most `HISTORY` lines and takes a join and a post.
pub fn chat_room_state(data: &[u8]) {
    use atoll_grain::chat::RoomState;
    let Ok(mut room) = postcard::from_bytes::<RoomState>(data) else {
        return;
    };
    let bytes = postcard::to_allocvec(&room).expect("a decoded room encodes");
    assert_eq!(
        postcard::from_bytes::<RoomState>(&bytes).as_ref(),
        Ok(&room)
    );
    let newcomer = atoll_core::Pid::new(atoll_core::NodeId::from_bytes([7; 16]), 1, 1);
    let _ = room.join("fuzz", "newcomer".into(), newcomer);
    room.post("newcomer".into(), "hello".into());
    let history = room.history(usize::MAX);
    assert!(history.len() <= atoll_cluster::chat::HISTORY);
    assert_eq!(history.last().map(|l| l.text.as_str()), Some("hello"));
}

/// A node runtime to decode with: reply handles and actor references decode only inside
/// one. Its tokio runtime never runs; the runtime only needs one to exist.
pub(crate) fn node_runtime() -> &'static atoll_actor::Runtime {
    static RT: std::sync::OnceLock<(tokio::runtime::Runtime, atoll_actor::Runtime)> =
        std::sync::OnceLock::new();
    let (_, rt) = RT.get_or_init(|| {
        let tokio = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a tokio runtime");
        let rt = {
            let _entered = tokio.enter();
            atoll_actor::Runtime::new()
        };
        (tokio, rt)
    });
    rt
}

/// Arbitrary bytes as a direct grain call from another node, decoded the way a node does
/// for a host process or for the address of one that is gone: refused, or decoded (then
/// answered `Gone`, as a call that found no process); never a panic.
pub fn direct_call(data: &[u8]) {
    let peer = atoll_core::NodeId::from_bytes([3; 16]);
    let decoded = atoll_grain::fuzz_direct_call(node_runtime(), peer, data);
    assert!(!decoded || data.starts_with(b"atoll.gd"));
}

/// Arbitrary bytes as a node's incarnation record (read from its data directory at start):
/// never a panic, and a number it reads is written back the same.
pub fn incarnation_record(data: &[u8]) {
    use atoll_cluster::protocol::incarnation::{decode_record, encode_record, start};
    if let Some(n) = decode_record(data) {
        assert_eq!(decode_record(&encode_record(n)), Some(n));
    }
    let (next, record) = start(0, Some(data), None);
    assert!(next > decode_record(data).unwrap_or(0) || next == u32::MAX);
    assert_eq!(decode_record(&record), Some(next));
}
