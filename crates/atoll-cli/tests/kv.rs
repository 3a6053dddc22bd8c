//! The replicated key-value store on grains (`atoll_cli::kv`), end to end: three `atoll
//! node` processes host the shards, a member in this process reads and writes, and
//! one node is killed (SIGKILL) in the middle: every acknowledged write is still read back,
//! by key and by range, and writing goes on.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use atoll_cli::kv::{KvError, KvStore};
use common::*;

fn expect_all(client: &GrainClient, kv: &KvStore, expected: &BTreeMap<String, String>) {
    let all = client.rt.block_on(kv.range("", None, usize::MAX)).unwrap();
    let all: BTreeMap<String, String> = all.into_iter().collect();
    assert_eq!(&all, expected);
    for (k, v) in expected {
        let got = client.rt.block_on(kv.get(k)).unwrap();
        assert_eq!(got.as_ref(), Some(v), "key {k}");
    }
}

/// Retries a write that was not acknowledged (a replica's node is being declared lost).
fn write_until_acknowledged(mut write: impl FnMut() -> Result<Option<String>, KvError>) {
    let until = Instant::now() + DEADLINE;
    loop {
        match write() {
            Ok(_) => return,
            Err(e) => {
                assert!(Instant::now() < until, "not acknowledged: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

#[test]
fn kv_keeps_every_acknowledged_write_across_a_node_kill() {
    let tmp = TempDir::new("kv");
    let dir = tmp.path();
    let (mut nodes, http) = start_voters_with_http(dir);
    let client = GrainClient::start(dir, &nodes);
    let kv = KvStore::new(client.grains.clone());
    let mut expected = BTreeMap::new();

    for i in 0..40 {
        let (k, v) = (format!("key-{i:02}"), format!("value-{i}"));
        client.rt.block_on(kv.set(&k, &v)).unwrap();
        expected.insert(k, v);
    }
    for i in (0..40).step_by(7) {
        let k = format!("key-{i:02}");
        client.rt.block_on(kv.delete(&k)).unwrap();
        expected.remove(&k);
    }
    client.rt.block_on(kv.set("key-01", "changed")).unwrap();
    expected.insert("key-01".into(), "changed".into());
    expect_all(&client, &kv, &expected);
    let page = client
        .rt
        .block_on(kv.range("key-10", Some("key-20"), 5))
        .unwrap();
    let keys: Vec<&str> = page.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["key-10", "key-11", "key-12", "key-13", "key-15"]);

    // Every shard is a Replicated grain on one of the nodes (never on this caller).
    let (code, body) = atoll_cli::status::get(&http[0], "/api/grains").unwrap();
    assert_eq!(code, 200, "{body}");
    let view: atoll_cli::grains::GrainsView = serde_json::from_str(&body).unwrap();
    let shards: Vec<_> = view
        .grains
        .iter()
        .filter(|g| g.grain_type == "kv")
        .collect();
    assert_eq!(shards.len(), atoll_cli::kv::SHARDS, "{view:?}");
    assert!(
        shards.iter().all(|g| g.durability == "Replicated"),
        "{view:?}"
    );
    assert!(
        shards
            .iter()
            .all(|g| ["v1", "v2", "v3"].contains(&g.node.as_str()))
    );

    // Of v2 and v3, the one hosting more shards dies without a word, in the middle of the
    // writing (v1 answers the HTTP questions).
    let hosted = |name: &str| shards.iter().filter(|g| g.node == name).count();
    let victim = if hosted("v2") >= hosted("v3") { 1 } else { 2 };
    let victim_name = ["v1", "v2", "v3"][victim];
    assert!(hosted(victim_name) > 0, "{view:?}");
    nodes[victim].child.kill().unwrap();
    nodes[victim].wait();
    for i in 40..50 {
        let (k, v) = (format!("key-{i:02}"), format!("after-{i}"));
        write_until_acknowledged(|| client.rt.block_on(kv.set(&k, &v)));
        expected.insert(k, v);
    }
    write_until_acknowledged(|| client.rt.block_on(kv.delete("key-02")));
    expected.remove("key-02");
    expect_all(&client, &kv, &expected);

    // Every shard lives on a survivor now.
    let (_, body) = atoll_cli::status::get(&http[0], "/api/grains").unwrap();
    let view: atoll_cli::grains::GrainsView = serde_json::from_str(&body).unwrap();
    let on_survivors = view
        .grains
        .iter()
        .filter(|g| g.grain_type == "kv")
        .all(|g| g.node != victim_name);
    assert!(on_survivors, "{view:?}");

    drop(client);
    for i in (0..3).filter(|i| *i != victim) {
        nodes[i].signal("-TERM");
        assert_eq!(nodes[i].wait().code(), Some(0));
    }
}
