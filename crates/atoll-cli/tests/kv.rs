//! The replicated key-value store on grains (`atoll_cli::kv`), end to end: three `atoll
//! node` processes host the shards, a member in this process reads and writes, and
//! one node is killed (SIGKILL) while writers keep writing: no writer sees an error, every
//! acknowledged write is still read back, by key and by range, and writing goes on.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use atoll_cli::kv::KvStore;
use common::*;

/// What one writer had acknowledged, and every error it saw.
type Written = (Vec<(String, String)>, Vec<String>);

/// Writes `w{n}-{seq}` keys one after another until `stop`, counting acknowledged writes in
/// `acked`.
async fn writer(kv: KvStore, n: usize, stop: Arc<AtomicBool>, acked: Arc<AtomicUsize>) -> Written {
    let (mut done, mut errors) = (Vec::new(), Vec::new());
    let mut seq = 0;
    while !stop.load(Ordering::Relaxed) {
        let (k, v) = (format!("w{n}-{seq:04}"), format!("v{seq}"));
        match kv.set(&k, &v).await {
            Ok(_) => {
                done.push((k, v));
                acked.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => errors.push(format!("{k}: {e}")),
        }
        seq += 1;
    }
    (done, errors)
}

fn wait_acked(acked: &AtomicUsize, at_least: usize, what: &str) {
    let until = Instant::now() + DEADLINE;
    while acked.load(Ordering::Relaxed) < at_least {
        assert!(Instant::now() < until, "not within {DEADLINE:?}: {what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn expect_all(client: &GrainClient, kv: &KvStore, expected: &BTreeMap<String, String>) {
    let all = client.rt.block_on(kv.range("", None, usize::MAX)).unwrap();
    let all: BTreeMap<String, String> = all.into_iter().collect();
    assert_eq!(&all, expected);
    for (k, v) in expected {
        let got = client.rt.block_on(kv.get(k)).unwrap();
        assert_eq!(got.as_ref(), Some(v), "key {k}");
    }
}

#[test]
fn kv_keeps_every_acknowledged_write_and_shows_no_error_across_a_node_kill() {
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

    // Of v2 and v3, the one hosting more shards dies without a word (SIGKILL) while four
    // writers keep writing (v1 answers the HTTP questions).
    let hosted = |name: &str| shards.iter().filter(|g| g.node == name).count();
    let victim = if hosted("v2") >= hosted("v3") { 1 } else { 2 };
    let victim_name = ["v1", "v2", "v3"][victim];
    assert!(hosted(victim_name) > 0, "{view:?}");
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..4)
        .map(|n| {
            let w = writer(kv.clone(), n, stop.clone(), acked.clone());
            client.rt.spawn(w)
        })
        .collect();
    wait_acked(&acked, 40, "writes before the kill");
    nodes[victim].child.kill().unwrap();
    nodes[victim].wait();
    let at_kill = acked.load(Ordering::Relaxed);
    // Until every shard of the dead node has answered from a survivor, and more.
    wait_acked(&acked, at_kill + 80, "writes after the kill");
    client.rt.block_on(kv.delete("key-02")).unwrap();
    expected.remove("key-02");
    stop.store(true, Ordering::Relaxed);
    let mut errors = Vec::new();
    for w in writers {
        let (done, seen) = client.rt.block_on(w).unwrap();
        expected.extend(done);
        errors.extend(seen);
    }
    assert!(errors.is_empty(), "the failover showed: {errors:?}");
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
