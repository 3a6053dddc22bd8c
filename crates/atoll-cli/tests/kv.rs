//! The replicated key-value store on grains (`atoll_cli::kv`), end to end: three `atoll
//! node` processes host the shard replicas, a member in this process reads and writes, and
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
fn write_until_acknowledged(client: &GrainClient, mut write: impl FnMut() -> Result<(), KvError>) {
    let until = Instant::now() + DEADLINE;
    loop {
        match write() {
            Ok(()) => return,
            Err(e) => {
                assert!(Instant::now() < until, "not acknowledged: {e}");
                let _ = client;
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

    // The replicas of every shard are on three distinct nodes.
    let (code, body) = atoll_cli::status::get(&http[0], "/api/grains").unwrap();
    assert_eq!(code, 200, "{body}");
    let view: atoll_cli::grains::GrainsView = serde_json::from_str(&body).unwrap();
    let kv_grains: Vec<_> = view
        .grains
        .iter()
        .filter(|g| g.grain_type == "kv")
        .collect();
    assert_eq!(
        kv_grains.len(),
        atoll_cli::kv::SHARDS * atoll_cli::kv::REPLICAS
    );
    for shard in 0..atoll_cli::kv::SHARDS {
        let mut hosts: Vec<&str> = kv_grains
            .iter()
            .filter(|g| g.key.starts_with(&format!("{shard}/")))
            .map(|g| g.node.as_str())
            .collect();
        hosts.sort();
        hosts.dedup();
        assert_eq!(hosts.len(), 3, "shard {shard}: {kv_grains:?}");
        assert!(kv_grains.iter().all(|g| g.durability == "LocalExclusive"));
    }

    // v2 dies without a word, in the middle of the writing.
    nodes[1].child.kill().unwrap();
    nodes[1].wait();
    for i in 40..50 {
        let (k, v) = (format!("key-{i:02}"), format!("after-{i}"));
        write_until_acknowledged(&client, || client.rt.block_on(kv.set(&k, &v)));
        expected.insert(k, v);
    }
    write_until_acknowledged(&client, || client.rt.block_on(kv.delete("key-02")));
    expected.remove("key-02");
    expect_all(&client, &kv, &expected);

    // Every replica lives on a survivor now.
    let (_, body) = atoll_cli::status::get(&http[0], "/api/grains").unwrap();
    let view: atoll_cli::grains::GrainsView = serde_json::from_str(&body).unwrap();
    let on_survivors = view
        .grains
        .iter()
        .filter(|g| g.grain_type == "kv")
        .all(|g| g.node == "v1" || g.node == "v3");
    assert!(on_survivors, "{view:?}");

    drop(client);
    for i in [0, 2] {
        nodes[i].signal("-TERM");
        assert_eq!(nodes[i].wait().code(), Some(0));
    }
}
