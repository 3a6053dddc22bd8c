//! Merkle proofs and anti-entropy.

use atoll_core::{NodeId, SplitMix64};
use atoll_data::{
    DecodeError, LwwMap, MerkleError, MerkleMessage, MerkleTree, NodeRef, ProofError, SyncAction,
    TreeRoot, compare_tree_roots,
};
use proptest::prelude::*;

fn entries(n: u32, salt: u32) -> Vec<(Vec<u8>, Vec<u8>)> {
    (0..n)
        .map(|i| (i.to_le_bytes().to_vec(), (i ^ salt).to_le_bytes().to_vec()))
        .collect()
}

proptest! {
    #[test]
    fn every_proof_verifies_and_any_tampering_fails(n in 1..200u32, depth in 0..8u8, pick in any::<u32>(), bit in 0..256usize) {
        let tree = MerkleTree::build(depth, entries(n, 0));
        let root = tree.root().hash;
        let key = (pick % n).to_le_bytes();
        let proof = tree.prove(&key).unwrap();
        prop_assert!(proof.verify(&root).is_ok());
        prop_assert!(proof.proves(&key, &(pick % n).to_le_bytes()));
        prop_assert!(!proof.proves(&key, b"other"));
        let flip = |h: &mut [u8; 32]| h[bit / 8] ^= 1 << (bit % 8);

        let mut bad_root = root;
        flip(&mut bad_root);
        prop_assert_eq!(proof.verify(&bad_root), Err(ProofError::RootMismatch));

        let mut bad_leaf = proof.clone();
        flip(&mut bad_leaf.bucket[proof.position].1);
        prop_assert!(bad_leaf.verify(&root).is_err());

        for i in 0..proof.bucket.len() {
            let mut bad = proof.clone();
            flip(&mut bad.bucket[i].1);
            prop_assert!(bad.verify(&root).is_err(), "bucket leaf {}", i);
        }
        for i in 0..proof.siblings.len() {
            let mut bad = proof.clone();
            flip(&mut bad.siblings[i]);
            prop_assert!(bad.verify(&root).is_err(), "sibling {}", i);
        }
        if !proof.siblings.is_empty() {
            let mut short = proof.clone();
            short.siblings.pop();
            prop_assert!(matches!(short.verify(&root), Err(ProofError::Malformed(_))));
        }
        // A proof for one tree does not hold for a tree with one value changed.
        let other = MerkleTree::build(depth, entries(n, 1));
        prop_assert!(proof.verify(&other.root().hash).is_err());
    }
}

#[test]
fn absent_keys_have_no_proof_and_roots_compare() {
    let a = MerkleTree::build(6, entries(100, 0));
    assert!(a.prove(&1_000u32.to_le_bytes()).is_none());
    let b = MerkleTree::build(5, entries(100, 0));
    assert_eq!(compare_tree_roots(&a.root(), &a.root()), SyncAction::InSync);
    assert_eq!(
        compare_tree_roots(&a.root(), &b.root()),
        SyncAction::Rebuild { depth: 6 }
    );
    let beyond = NodeRef { level: 3, index: 8 };
    assert!(a.children(&[beyond]).is_err());
    let bucket = NodeRef { level: 6, index: 0 };
    assert_eq!(
        a.children(&[bucket]),
        Err(MerkleError::NoChildren { level: 6, index: 0 })
    );
    assert_eq!(
        a.compare_children(&[NodeRef::ROOT], &[[0; 16]]),
        Err(MerkleError::AnswerLength { asked: 1, got: 1 })
    );
}

type Map = LwwMap<u64, u64>;

/// What one anti-entropy session transferred.
#[derive(Debug, Default)]
struct Transfer {
    hashes: usize,
    entries: usize,
    bytes: usize,
}

/// Sends `m` over the wire and back.
fn wire(t: &mut Transfer, m: MerkleMessage) -> MerkleMessage {
    let bytes = m.encode();
    t.bytes += bytes.len();
    MerkleMessage::decode(&bytes).unwrap()
}

/// `a` starts a Merkle session with `b`; both end with the union of their states. With
/// `summaries`, differing ranges are reconciled entry by entry; without, both sides send
/// everything in them.
fn anti_entropy(a: &mut Map, b: &mut Map, depth: u8, summaries: bool) -> Transfer {
    let mut t = Transfer::default();
    let (ta, tb) = (a.merkle_tree(depth), b.merkle_tree(depth));
    let MerkleMessage::Root(remote) = wire(&mut t, MerkleMessage::Root(tb.root())) else {
        unreachable!()
    };
    let mut action = compare_tree_roots(&ta.root(), &remote);
    let mut exchange = Vec::new();
    while let SyncAction::Repair(plan) = action {
        exchange.extend(plan.exchange);
        if plan.descend.is_empty() {
            break;
        }
        let MerkleMessage::Children(asked) = wire(&mut t, MerkleMessage::Children(plan.descend))
        else {
            unreachable!()
        };
        let answer = MerkleMessage::Hashes(tb.children(&asked).unwrap());
        let MerkleMessage::Hashes(digests) = wire(&mut t, answer) else {
            unreachable!()
        };
        t.hashes += digests.len();
        action = ta.compare_children(&asked, &digests).unwrap();
    }
    let (push, pull) = if summaries {
        let MerkleMessage::Ranges(ranges) = wire(&mut t, MerkleMessage::Ranges(exchange)) else {
            unreachable!()
        };
        let answer = MerkleMessage::Summaries(b.summarize(&ranges));
        let MerkleMessage::Summaries(theirs) = wire(&mut t, answer) else {
            unreachable!()
        };
        let plan = a.reconcile(&ranges, &theirs);
        let MerkleMessage::Pull(wanted) = wire(&mut t, MerkleMessage::Pull(plan.pull)) else {
            unreachable!()
        };
        (plan.push, b.select_keys(&wanted))
    } else {
        (a.select(&exchange), b.select(&exchange))
    };
    t.entries += push.len() + pull.len();
    t.bytes += push.encode().len() + pull.encode().len();
    b.merge_delta(push, 1_000_000).unwrap();
    a.merge_delta(pull, 1_000_000).unwrap();
    t
}

fn replica(n: u64, me: u8) -> Map {
    let mut m = Map::new(NodeId::from_bytes([me; 16]));
    for k in 0..n {
        m.insert(k, k, 1_000);
    }
    m
}

#[test]
fn a_diff_of_d_keys_in_n_costs_about_d_log_n_hashes() {
    const N: u64 = 20_000;
    let depth = MerkleTree::depth_for(N as usize);
    let base = replica(N, 1);
    let mut rng = SplitMix64::new(9);
    for (d, summaries) in [
        (1usize, false),
        (10, true),
        (100, false),
        (100, true),
        (400, true),
    ] {
        let mut a = base.clone();
        let mut b = base.clone();
        // Differences of every kind: missing on either side, and changed.
        for i in 0..d {
            let k = rng.next_u64() % N;
            match i % 3 {
                0 => {
                    a.remove(&k, 2_000);
                }
                1 => {
                    b.insert(N + k, 1, 2_000);
                }
                _ => {
                    a.insert(k, 7, 2_000);
                }
            }
        }
        let t = anti_entropy(&mut a, &mut b, depth, summaries);
        assert_eq!(a.state(), b.state(), "d = {d}: repaired");
        assert_eq!(a.merkle_tree(depth).root(), b.merkle_tree(depth).root());
        let bound = 2 * d * (usize::from(depth) + 1);
        assert!(t.hashes <= bound, "d = {d}: {} hashes > {bound}", t.hashes);
        // Each differing bucket holds one or two entries at this depth; reconciled by
        // summaries, only the differing entries travel, once.
        let most = if summaries { d } else { 8 * d };
        assert!(t.entries <= most, "d = {d}: {} entries", t.entries);
        // Entries here are ~10 bytes, smaller than a node digest; up to 0.5% of the table
        // the session still costs a fraction of sending it.
        let full = a.delta_for(&Default::default(), usize::MAX).encode().len();
        if d * 200 <= N as usize {
            assert!(
                t.bytes * 5 < full,
                "d = {d}: {} bytes vs {full} for the table",
                t.bytes
            );
        }
        // And a second session finds nothing.
        let again = anti_entropy(&mut a, &mut b, depth, summaries);
        assert_eq!((again.hashes, again.entries), (0, 0));
    }
}

#[test]
fn a_replica_that_lost_everything_is_rebuilt() {
    let mut a = replica(500, 1);
    let mut empty = Map::new(NodeId::from_bytes([2; 16]));
    anti_entropy(&mut empty, &mut a, 3, true);
    assert_eq!(empty.state(), a.state());
    let mut b = replica(0, 3);
    anti_entropy(&mut a, &mut b, 0, false);
    assert_eq!(a.state(), b.state());
}

#[test]
fn merkle_messages_refuse_bad_input() {
    let deep = MerkleMessage::Root(TreeRoot {
        depth: 60,
        hash: [0; 32],
    });
    assert!(matches!(
        MerkleMessage::decode(&deep.encode()),
        Err(DecodeError::Invalid(_))
    ));
    assert!(matches!(
        MerkleMessage::decode(&vec![1; 5 << 20]),
        Err(DecodeError::TooLarge { .. })
    ));
    assert!(MerkleMessage::decode(&[1, 2, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
    let ok = MerkleMessage::Children(vec![NodeRef::ROOT]);
    assert_eq!(MerkleMessage::decode(&ok.encode()).unwrap(), ok);
}
