//! The keep-majority split-brain policy with real `atoll node` processes, each in its own
//! network namespace: five nodes (the first three Raft voters) and two client nodes beside
//! them, every member running `[cluster.split_brain] policy = "keep-majority"`. A 2|3
//! partition that outlasts the window makes the two nodes (and the client in one of their
//! namespaces) fence themselves and report it in their status, while the three down them;
//! after the heal the two rejoin as new generations. Skips where namespaces cannot be made
//! (not root, no `nft`), unless `ATOLL_REQUIRE_NETNS` is set.
//!
//! With five members no split is even, so the policy's voter rule (which only breaks a tie)
//! never decides; the second test puts two of the three voters on the two-node side anyway,
//! the trade-off the policy documents: the membership majority survives without a Raft
//! quorum, the side with the quorum fences itself.

mod netns;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use netns::client::now_us;
use netns::{Client, Cluster, PROBE_MS, REQUEST_TIMEOUT_MS, SUSPECT_MS};
use serde_json::Value;

const NODES: usize = 5;
const VOTERS: usize = 3;
/// The policy's stability window, as configured.
const WINDOW_MS: u64 = 2000;
/// Every member: the nodes and two clients.
const MEMBERS: u64 = NODES as u64 + 2;
/// The window the policy waits: at least two probe rounds over the other members, so that
/// every member is probed after the cut before anyone decides.
const EFFECTIVE_WINDOW_MS: u64 = if WINDOW_MS > 2 * (MEMBERS - 1) * PROBE_MS {
    WINDOW_MS
} else {
    2 * (MEMBERS - 1) * PROBE_MS
};
/// From the cut to a minority node's fencing: suspicion (within the suspect timeout), the
/// window, and room for a loaded machine.
const FENCED_WITHIN: Duration = Duration::from_millis(SUSPECT_MS + EFFECTIVE_WINDOW_MS + 4000);

/// One registration a `register` client attempted.
#[derive(Debug, Clone)]
struct Registration {
    name: String,
    /// The owner, when acknowledged.
    pid: Option<String>,
    invoked: u64,
    returned: u64,
    error: Option<String>,
}

/// Parses `ok NAME PID T0 T1` and `fail NAME T0 T1 KIND ...` records.
fn registrations(c: &Client) -> Vec<Registration> {
    c.records()
        .into_iter()
        .filter_map(|r| match r[0].as_str() {
            "ok" => Some(Registration {
                name: r[1].clone(),
                pid: Some(r[2].clone()),
                invoked: r[3].parse().ok()?,
                returned: r[4].parse().ok()?,
                error: None,
            }),
            "fail" => Some(Registration {
                name: r[1].clone(),
                pid: None,
                invoked: r[2].parse().ok()?,
                returned: r[3].parse().ok()?,
                error: Some(r[4..].join(" ")),
            }),
            _ => None,
        })
        .collect()
}

/// The Consistent names a status reports, name → pid.
fn consistent_names(s: &Value) -> HashMap<String, String> {
    s["names"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["scope"] == "consistent")
        .map(|n| {
            (
                n["name"].as_str().unwrap().to_string(),
                n["pid"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn locks(s: &Value) -> Vec<String> {
    s["locks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap().to_string())
        .collect()
}

/// The states a status gives member `name` (one per generation it knows).
fn member(s: &Value, name: &str) -> Vec<(u64, String)> {
    s["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["name"] == name)
        .map(|m| {
            (
                m["generation"].as_u64().unwrap(),
                m["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The generation this node's status gives itself.
fn own_generation(s: &Value) -> u64 {
    s["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["this_node"] == true)
        .and_then(|m| m["generation"].as_u64())
        .unwrap()
}

/// Whether `name` is active under generation `generation` in this status.
fn active_as(s: &Value, name: &str, generation: u64) -> bool {
    member(s, name).contains(&(generation, "active".to_string()))
}

/// Every name in `acked` is in node `i`'s registry with its owner, waiting for it.
fn assert_present(c: &Cluster, i: usize, acked: &[Registration]) {
    c.wait_status(i, "every acknowledged registration present", |s| {
        let names = consistent_names(s);
        acked.iter().all(|r| names.get(&r.name) == r.pid.as_ref())
    });
}

/// The error kinds a registration may fail with on a side without a Raft quorum.
const UNAVAILABLE: [&str; 3] = [
    "Consensus::NoLeader",
    "Consensus::Unreachable",
    "Consensus::Timeout",
];

/// The longest a failed request may take: the request timeout, once per retry round, with
/// room for a loaded machine.
const FAIL_BOUND_US: u64 = 2 * REQUEST_TIMEOUT_MS * 1000 + 1_000_000;

/// The client's `held` record: the names it registered and the lock's token.
fn held(c: &Client) -> Option<(Vec<String>, String, u64)> {
    c.records().into_iter().find(|r| r[0] == "held").map(|r| {
        let names = r[1].split(',').map(str::to_string).collect();
        (names, r[2].clone(), r[3].parse().unwrap())
    })
}

/// The client's `fenced OLD NEW NAMES LOCKS` record.
fn fenced(c: &Client) -> Option<Vec<String>> {
    c.records().into_iter().find(|r| r[0] == "fenced")
}

/// A cut and the minority's fencing after it.
struct Cut {
    /// When the cut began.
    at: Instant,
    /// The same, in µs since the epoch (as clients record).
    at_us: u64,
    /// How long the minority took to fence itself.
    fenced_in: Duration,
    /// Every node's generation after it (the minority's new ones).
    after: Vec<u64>,
}

/// Cuts `minority` off from `majority` and waits until each node of the minority has fenced
/// itself (within [`FENCED_WITHIN`] of the cut).
fn cut_and_fence(c: &Cluster, minority: &[usize], majority: &[usize], before: &[u64]) -> Cut {
    c.partition(minority, majority);
    let cut = Instant::now();
    let cut_at = now_us();
    let mut after = before.to_vec();
    for &i in minority {
        let (_, new) = assert_self_fenced(c, i, before[i - 1]);
        after[i - 1] = new;
    }
    let fenced_in = cut.elapsed();
    assert!(
        fenced_in <= FENCED_WITHIN,
        "the minority fenced itself only after {fenced_in:?} (bound {FENCED_WITHIN:?})\n{}",
        c.dump()
    );
    Cut {
        at: cut,
        at_us: cut_at,
        fenced_in,
        after,
    }
}

/// Waits until node `i` reports that it downed itself, and checks what it reports: one
/// fencing, by itself, into the generation it now has. Returns (old, new) generation.
fn assert_self_fenced(c: &Cluster, i: usize, before: u64) -> (u64, u64) {
    let s = c.wait_status(i, "fenced by its own split-brain policy", |s| {
        s["fencing"]["self_downed"] == true && s["fencing"]["times"].as_u64() >= Some(1)
    });
    let f = &s["fencing"];
    assert_eq!(f["times"], 1, "n{i}: {f}");
    assert_eq!(f["last"]["by_itself"], true, "n{i}: {f}");
    let old = f["last"]["old_generation"].as_u64().unwrap();
    let new = f["last"]["new_generation"].as_u64().unwrap();
    assert_eq!(old, before, "n{i}: {f}");
    assert!(new > old, "n{i}: {f}");
    assert_eq!(own_generation(&s), new, "n{i}: {s:#}");
    (old, new)
}

/// Nodes `side` were not fenced and keep generations `generations`.
fn assert_not_fenced(c: &Cluster, side: &[usize], generations: &[u64]) {
    for &i in side {
        let s = c.status(i);
        assert_eq!(s["fencing"]["times"], 0, "n{i} fenced: {}", s["fencing"]);
        assert_eq!(s["fencing"]["self_downed"], false, "n{i}: {}", s["fencing"]);
        assert_eq!(own_generation(&s), generations[i - 1], "n{i}");
    }
}

/// Starts the nodes with the policy and waits until every node sees every member (the
/// nodes and `clients`) active. Returns the nodes' generations.
fn form(c: &mut Cluster, clients: &[(usize, &str)]) -> (Vec<u64>, Vec<usize>) {
    c.keep_majority(WINDOW_MS);
    let generations = c.start_all();
    let ks: Vec<usize> = clients
        .iter()
        .map(|&(i, work)| c.start_client(i, work))
        .collect();
    let names: Vec<String> = clients.iter().map(|&(i, _)| format!("c{i}")).collect();
    for i in 1..=NODES {
        c.wait_status(i, "every node and client active", |s| {
            names
                .iter()
                .all(|n| member(s, n).iter().any(|m| m.1 == "active"))
                && (1..=NODES).all(|j| active_as(s, &format!("n{j}"), generations[j - 1]))
        });
    }
    (generations, ks)
}

/// After the heal: every node sees all five nodes active under `generations` again, and
/// nobody is downed by its own policy any more.
fn assert_whole(c: &Cluster, generations: &[u64]) {
    for i in 1..=NODES {
        c.wait_status(
            i,
            "all five nodes active again, as their generations",
            |s| {
                (1..=NODES).all(|j| active_as(s, &format!("n{j}"), generations[j - 1]))
                    && s["fencing"]["self_downed"] == false
            },
        );
    }
}

#[test]
fn a_two_node_minority_fences_itself_and_the_majority_keeps_its_names() {
    if !netns::have("nft") {
        netns::skip("needs nft (nftables) to partition the nodes");
        return;
    }
    let Some(mut c) = Cluster::with_voters("sbmin", 31, NODES, VOTERS) else {
        return;
    };
    let started = Instant::now();
    let (before, ks) = form(&mut c, &[(1, "register c1"), (4, "hold c4 3 L4")]);
    let (writer, holder) = (ks[0], ks[1]);
    c.wait_for(
        "c4 holding its names and lock, 5 registrations by c1",
        |c| held(c.client(holder)).is_some() && c.client(writer).count("ok") >= 5,
    );
    let (names, lock, _) = held(c.client(holder)).unwrap();
    c.wait_status(1, "c4's names and lock in the registry", |s| {
        let known = consistent_names(s);
        names.iter().all(|n| known.contains_key(n)) && locks(s).contains(&lock)
    });

    let (minority, majority) = ([4, 5], [1, 2, 3]);
    // The two down themselves, each within suspicion plus the window, and say so.
    let Cut {
        at: cut,
        at_us: cut_at,
        fenced_in,
        after,
    } = cut_and_fence(&c, &minority, &majority, &before);
    // The client cut off with them fenced itself too and its holder was told what it lost.
    c.wait_for("c4 told it was fenced", |c| {
        fenced(c.client(holder)).is_some()
    });
    let told = fenced(c.client(holder)).unwrap();
    assert_eq!(told[3], names.join(","), "{told:?}");
    assert!(told[4].starts_with(&format!("{lock}:")), "{told:?}");
    assert!(
        told[2].parse::<u64>().unwrap() > told[1].parse::<u64>().unwrap(),
        "{told:?}"
    );

    // The three down the two and the client, and release the client's names and lock.
    for &i in &majority {
        c.wait_status(i, "the minority unreachable, its claims released", |s| {
            let known = consistent_names(s);
            ["n4", "n5", "c4"]
                .iter()
                .all(|n| member(s, n).iter().all(|m| m.1 == "unreachable"))
                && names.iter().all(|n| !known.contains_key(n))
                && !locks(s).contains(&lock)
        });
    }
    let released_in = cut.elapsed();
    assert_not_fenced(&c, &majority, &before);
    // The majority goes on registering.
    let ok_at_release = c.client(writer).count("ok");
    c.wait_for("10 more registrations by c1 during the partition", |c| {
        c.client(writer).count("ok") >= ok_at_release + 10
    });
    let during = registrations(c.client(writer));

    c.heal();
    let healed = Instant::now();
    assert_whole(&c, &after);
    let whole_in = healed.elapsed();
    c.stop_client(writer);

    // Writable throughout: no registration of the majority's client failed, and every
    // one it was acknowledged is on every node, the rejoined ones too.
    let records = registrations(c.client(writer));
    let failed: Vec<&Registration> = records.iter().filter(|r| r.error.is_some()).collect();
    assert!(
        failed.is_empty(),
        "the majority's registrations failed: {failed:?}\n{}",
        c.dump()
    );
    let acked: Vec<Registration> = records.into_iter().filter(|r| r.pid.is_some()).collect();
    let in_partition = during
        .iter()
        .filter(|r| r.invoked > cut_at && r.pid.is_some())
        .count();
    for i in 1..=NODES {
        assert_present(&c, i, &acked);
        c.wait_status(i, "the fenced claims gone for good", |s| {
            let known = consistent_names(s);
            names.iter().all(|n| !known.contains_key(n)) && !locks(s).contains(&lock)
        });
    }
    assert_not_fenced(&c, &majority, &before);
    eprintln!(
        "fenced in {fenced_in:?}, claims released in {released_in:?}, whole {whole_in:?} \
         after the heal; c1: {} acknowledged ({in_partition} during the partition), 0 failed; \
         total {:?}",
        acked.len(),
        started.elapsed()
    );
}

#[test]
fn the_quorum_on_the_two_node_side_fences_itself_with_it() {
    if !netns::have("nft") {
        netns::skip("needs nft (nftables) to partition the nodes");
        return;
    }
    let Some(mut c) = Cluster::with_voters("sbvot", 32, NODES, VOTERS) else {
        return;
    };
    let started = Instant::now();
    let (before, ks) = form(&mut c, &[(1, "hold c1 3 L1"), (3, "register c3")]);
    let (holder, writer) = (ks[0], ks[1]);
    c.wait_for(
        "c1 holding its names and lock, 5 registrations by c3",
        |c| held(c.client(holder)).is_some() && c.client(writer).count("ok") >= 5,
    );
    let (names, lock, _) = held(c.client(holder)).unwrap();

    // Two of the three voters with two nodes (and c1); the membership majority has one.
    let (minority, majority) = ([1, 2], [3, 4, 5]);
    let Cut {
        at: _,
        at_us: cut_at,
        fenced_in,
        after,
    } = cut_and_fence(&c, &minority, &majority, &before);
    c.wait_for("c1 told it was fenced", |c| {
        fenced(c.client(holder)).is_some()
    });
    // The fenced side holds the quorum: its releases commit there while it is cut off.
    for &i in &minority {
        c.wait_status(i, "c1's claims released by its own fencing", |s| {
            let known = consistent_names(s);
            names.iter().all(|n| !known.contains_key(n)) && !locks(s).contains(&lock)
        });
    }
    // The surviving side downs the two but, with one voter, cannot commit: its client's
    // registrations fail, typed as unavailability, until the heal.
    for &i in &majority {
        c.wait_status(i, "the two-node side unreachable", |s| {
            ["n1", "n2", "c1"]
                .iter()
                .all(|n| member(s, n).iter().all(|m| m.1 == "unreachable"))
        });
    }
    assert_not_fenced(&c, &majority, &before);
    c.wait_for("3 failed registrations by c3 during the partition", |c| {
        registrations(c.client(writer))
            .iter()
            .filter(|r| r.invoked > cut_at && r.error.is_some())
            .count()
            >= 3
    });
    let during = registrations(c.client(writer));
    // A registration that started shortly before the cut may still have been committed.
    let grace = REQUEST_TIMEOUT_MS * 1000;
    for r in during.iter().filter(|r| r.invoked > cut_at + grace) {
        assert!(r.pid.is_none(), "registered without a quorum: {r:?}");
    }
    for r in during.iter().filter(|r| r.invoked > cut_at) {
        if let Some(e) = &r.error {
            let kind = e.split(' ').next().unwrap_or_default();
            assert!(UNAVAILABLE.contains(&kind), "{r:?}");
            assert!(
                r.returned - r.invoked <= FAIL_BOUND_US,
                "failed slowly: {r:?}"
            );
        }
    }

    c.heal();
    let healed = Instant::now();
    let healed_at = now_us();
    assert_whole(&c, &after);
    let whole_in = healed.elapsed();
    c.wait_for("3 registrations by c3 after the heal", |c| {
        registrations(c.client(writer))
            .iter()
            .filter(|r| r.invoked > healed_at && r.pid.is_some())
            .count()
            >= 3
    });
    c.stop_client(writer);
    let acked: Vec<Registration> = registrations(c.client(writer))
        .into_iter()
        .filter(|r| r.pid.is_some())
        .collect();
    for i in 1..=NODES {
        assert_present(&c, i, &acked);
        c.wait_status(i, "the fenced claims gone everywhere", |s| {
            let known = consistent_names(s);
            names.iter().all(|n| !known.contains_key(n)) && !locks(s).contains(&lock)
        });
    }
    assert_not_fenced(&c, &majority, &before);
    eprintln!(
        "fenced in {fenced_in:?}, whole {whole_in:?} after the heal; c3: {} acknowledged, \
         {} failed during the partition; total {:?}",
        acked.len(),
        during
            .iter()
            .filter(|r| r.invoked > cut_at && r.error.is_some())
            .count(),
        started.elapsed()
    );
}

/// A client node (started by the tests above through `Cluster::start_client`, in a
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

    use atoll_actor::{Actor, ActorResult, Ctx};
    use atoll_cluster::{FenceNotice, Node};
    use atoll_core::Scope;
    use tokio::sync::mpsc;

    use super::netns::client::now_us;
    use super::netns::client::{self, kind, record};

    /// A process that owns names or a lock and passes on what it is told when fenced.
    struct Holder {
        told: Option<mpsc::UnboundedSender<FenceNotice>>,
    }

    impl Actor for Holder {
        type Msg = FenceNotice;

        async fn handle(&mut self, notice: FenceNotice, _: &mut Ctx<Self>) -> ActorResult {
            if let Some(told) = &self.told {
                let _ = told.send(notice);
            }
            Ok(())
        }
    }

    pub fn run(work: &str, config: &Path) {
        client::run(config, |node, stop| async move {
            let words: Vec<&str> = work.split(' ').collect();
            match words[..] {
                ["register", prefix] => register(&node, prefix, &stop).await,
                ["hold", prefix, n, lock] => {
                    hold(&node, prefix, n.parse().unwrap(), lock, &stop).await
                }
                _ => panic!("unknown work {work:?}"),
            }
        });
    }

    /// `ok NAME PID T0 T1` or `fail NAME T0 T1 KIND MESSAGE`, one Consistent name after
    /// another, each owned by a fresh process.
    async fn register(node: &Node, prefix: &str, stop: &AtomicBool) {
        let mut i = 0u64;
        while !stop.load(Ordering::SeqCst) {
            let name = format!("{prefix}-{i}");
            let pid = node.runtime().spawn(Holder { told: None }).pid();
            let t0 = now_us();
            let result = node.register(&name, pid, Scope::Consistent).await;
            let t1 = now_us();
            match result {
                Ok(()) => record(format!("ok {name} {pid} {t0} {t1}")),
                Err(e) => {
                    record(format!("fail {name} {t0} {t1} {} {e}", kind(&e)));
                    node.runtime().kill(pid);
                }
            }
            i += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// One process takes the Consistent names `PREFIX-0..n` and the lock `lock` (retrying
    /// until the cluster grants them) and asks to be told when its node is fenced:
    /// `held NAMES LOCK TOKEN`, then `fenced OLD NEW NAMES LOCK:TOKEN,...` when told.
    async fn hold(node: &Node, prefix: &str, n: usize, lock: &str, stop: &AtomicBool) {
        let (tx, mut told) = mpsc::unbounded_channel();
        let pid = node.runtime().spawn(Holder { told: Some(tx) }).pid();
        node.notify_fenced::<Holder>(pid).unwrap();
        let names: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
        for name in &names {
            while let Err(e) = node.register(name, pid, Scope::Consistent).await {
                record(format!("retry {name} {}", kind(&e)));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let guard = loop {
            match node.lock(lock, pid, Duration::from_secs(5)).await {
                Ok(guard) => break guard,
                Err(e) => record(format!("retry {lock} {}", kind(&e))),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        record(format!("held {} {lock} {}", names.join(","), guard.token()));
        while !stop.load(Ordering::SeqCst) {
            if let Ok(Some(notice)) =
                tokio::time::timeout(Duration::from_millis(100), told.recv()).await
            {
                let locks: Vec<String> = notice
                    .locks
                    .iter()
                    .map(|(l, token)| format!("{l}:{token}"))
                    .collect();
                record(format!(
                    "fenced {} {} {} {} lost={}",
                    notice.old_generation,
                    notice.new_generation,
                    notice.names.join(","),
                    locks.join(","),
                    guard.is_lost()
                ));
            }
        }
    }
}
