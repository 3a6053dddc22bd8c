//! Arbitrary bytes as an anti-entropy message from a peer, handled by a live tree.
#![no_main]
use atoll_core::NodeId;
use atoll_data::{LwwMap, MerkleMessage, MerkleTree, NodeRef, compare_tree_roots};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(message) = MerkleMessage::decode(data) else {
        return;
    };
    let mut map: LwwMap<u8, u8> = LwwMap::new(NodeId::from_bytes([1; 16]));
    for i in 0..50 {
        map.insert(i, i, 1_000);
    }
    let tree: MerkleTree = map.merkle_tree(4);
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
            let _ = map.reconcile(&[atoll_data::KeyRange::ALL], &summaries);
        }
        MerkleMessage::Pull(keys) => {
            let _ = map.select_keys(&keys);
        }
    }
});
