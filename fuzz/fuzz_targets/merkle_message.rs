//! Arbitrary bytes as an anti-entropy message from a peer, handled by a live tree.
#![no_main]
use atoll_data::{MerkleMessage, MerkleTree, compare_tree_roots};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(message) = MerkleMessage::decode(data) else {
        return;
    };
    let tree = MerkleTree::build(4, (0..50u8).map(|i| (vec![i], vec![i])));
    match message {
        MerkleMessage::Root(root) => {
            let _ = compare_tree_roots(&tree.root(), &root);
        }
        MerkleMessage::Children(nodes) => {
            let _ = tree.children(&nodes);
        }
        MerkleMessage::Hashes(hashes) => {
            let _ = tree.compare_children(&hashes);
        }
    }
});
