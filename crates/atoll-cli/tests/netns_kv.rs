//! The key-value store on grains across a partition, with real `atoll node` processes in
//! network namespaces: four nodes (the first three Raft voters) host the shards, a writer
//! beside n1 writes one key, a reader beside n4 reads it. The key's shard is moved to n4,
//! then n4 (with the reader) is cut off: the majority declares n4 down, reactivates the
//! shard and acknowledges newer writes. No read the reader starts after such a write was
//! acknowledged may return an older value: the activation left on n4 must not answer from
//! its memory (it cannot confirm its claim without the majority). Skips where namespaces
//! cannot be made (not root), unless `ATOLL_REQUIRE_NETNS` is set.

mod netns;

use netns::client::now_us;
use netns::{Client, Cluster};

/// The key both clients use.
const KEY: &str = "x";

/// One operation a client recorded: `ok T0 T1 SEQ` (a value `v{SEQ}`, or `-` for none) or
/// `fail T0 T1 KIND`.
#[derive(Debug, Clone)]
struct Step {
    invoked: u64,
    returned: u64,
    seq: Option<Option<u64>>,
    error: Option<String>,
}

fn steps(c: &Client, ok: &str, fail: &str) -> Vec<Step> {
    c.records()
        .iter()
        .filter(|r| r[0] == ok || r[0] == fail)
        .map(|r| Step {
            invoked: r[1].parse().unwrap(),
            returned: r[2].parse().unwrap(),
            seq: (r[0] == ok).then(|| r[3].strip_prefix('v').map(|s| s.parse().unwrap())),
            error: (r[0] == fail).then(|| r[3..].join(" ")),
        })
        .collect()
}

#[test]
fn a_shard_host_cut_off_from_the_majority_answers_no_stale_read() {
    let Some(mut c) = Cluster::with_voters("kvcut", 41, 4, 3) else {
        return;
    };
    c.host_grains();
    c.start_all();
    for i in 1..=4 {
        c.leader(i);
    }
    const CUT: usize = 4;
    let writer = c.start_client(1, "write n4");
    c.wait_for("the key's shard moved to n4 and written", |c| {
        c.client(writer).count("moved") > 0 && c.client(writer).count("set") >= 3
    });
    let reader = c.start_client(CUT, "read");
    c.wait_for("reads on n4", |c| c.client(reader).count("get") >= 5);

    c.isolate(CUT);
    let cut_at = now_us();
    // The majority takes the shard over: a write invoked after the cut is acknowledged.
    c.wait_for("a write acknowledged by the majority", |c| {
        steps(c.client(writer), "set", "setfail")
            .iter()
            .any(|s| s.seq.is_some() && s.invoked > cut_at)
    });
    let taken = steps(c.client(writer), "set", "setfail");
    let acked = taken
        .iter()
        .find(|s| s.seq.is_some() && s.invoked > cut_at)
        .unwrap()
        .clone();
    let newest = acked.seq.flatten().unwrap();
    // Reads the reader starts meanwhile and for a while after.
    let until = acked.returned + 4_000_000;
    c.wait_for("the reader to go on past the acknowledged write", |c| {
        steps(c.client(reader), "get", "getfail")
            .iter()
            .any(|s| s.invoked > until)
    });
    let reads = steps(c.client(reader), "get", "getfail");
    let stale: Vec<&Step> = reads
        .iter()
        .filter(|s| s.invoked > acked.returned)
        .filter(|s| matches!(s.seq, Some(v) if v.is_none_or(|v| v < newest)))
        .collect();
    assert!(
        stale.is_empty(),
        "reads started after v{newest} was acknowledged returned older values: {stale:?}"
    );
    let refused = reads
        .iter()
        .filter(|s| s.invoked > acked.returned && s.error.is_some())
        .count();
    eprintln!("reads refused on the cut-off side after the takeover: {refused}");

    // Healed, the reader sees the newest writes again.
    c.heal();
    let healed_at = now_us();
    c.wait_for("a read after the heal", |c| {
        steps(c.client(reader), "get", "getfail")
            .iter()
            .any(|s| s.invoked > healed_at && matches!(s.seq, Some(Some(v)) if v >= newest))
    });
}

/// A client node (started by the test above through `Cluster::start_client`, in a
/// namespace): joins the cluster from the configuration in `ATOLL_WORKLOAD_CONFIG`, does
/// `ATOLL_WORKLOAD` until a `stop` line on stdin, and prints each step as a `W ...` line.
#[test]
#[ignore = "a client node the namespace tests start; does nothing without ATOLL_WORKLOAD"]
fn workload() {
    if let Some((work, config)) = netns::client::from_env() {
        client::run(&work, &config);
    }
}

mod client {
    use std::path::Path;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use atoll_cli::grains::KvShard;
    use atoll_cli::kv::{KvStore, shard_of};
    use atoll_cluster::Node;
    use atoll_grain::{Grain, GrainId, Grains};

    use super::KEY;
    use super::netns::client::{self, kind, now_us, record};

    pub fn run(work: &str, config: &Path) {
        client::run(config, |node, stop| async move {
            let grains = atoll_cli::grains::caller(&node);
            let kv = KvStore::new(grains.clone());
            match work.split(' ').collect::<Vec<_>>()[..] {
                ["write", target] => {
                    move_shard(&node, &grains, &kv, target).await;
                    write(&kv, &stop).await;
                }
                ["read"] => read(&kv, &stop).await,
                _ => panic!("unknown work {work:?}"),
            }
        });
    }

    /// Writes the key once (so its shard is active), then moves the shard to `target`.
    async fn move_shard(node: &Node, grains: &Grains, kv: &KvStore, target: &str) {
        while kv.set(KEY, "v0").await.is_err() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let id = GrainId::new(KvShard::TYPE, shard_of(KEY).to_string());
        loop {
            let to = node.membership().and_then(|swim| {
                swim.members()
                    .into_iter()
                    .find(|m| m.identity.meta.name == target)
                    .map(|m| m.identity.node)
            });
            if let Some(to) = to {
                match grains.migrate(&id, to).await {
                    Ok(at) if at.pid.node == to => break,
                    Ok(_) => {}
                    Err(e) => record(format!("movefail {}", kind(&e))),
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        record("moved".into());
    }

    /// Sets the key to `v1`, `v2`... one after another until `stop`.
    async fn write(kv: &KvStore, stop: &AtomicBool) {
        let mut seq = 1u64;
        while !stop.load(Ordering::SeqCst) {
            let t0 = now_us();
            match kv.set(KEY, &format!("v{seq}")).await {
                Ok(_) => record(format!("set {t0} {} v{seq}", now_us())),
                Err(e) => record(format!("setfail {t0} {} {}", now_us(), kind(&e))),
            }
            seq += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Reads the key until `stop`.
    async fn read(kv: &KvStore, stop: &AtomicBool) {
        while !stop.load(Ordering::SeqCst) {
            let t0 = now_us();
            match kv.get(KEY).await {
                Ok(v) => record(format!(
                    "get {t0} {} {}",
                    now_us(),
                    v.unwrap_or_else(|| "-".into())
                )),
                Err(e) => record(format!("getfail {t0} {} {}", now_us(), kind(&e))),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
