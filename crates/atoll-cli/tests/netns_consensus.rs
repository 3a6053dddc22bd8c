//! Consensus names and locks with real `atoll node` processes, each in its own network
//! namespace: three Raft voters, and client nodes beside them that register names or take
//! a lock in a loop and print what happened. A history checker then judges the records
//! against what the surviving nodes report (`atoll status`). Each test skips where
//! namespaces cannot be made (not root); the tests run one at a time.

mod netns;

use std::collections::HashMap;

use netns::{Client, Cluster, REQUEST_TIMEOUT_MS};

const VOTERS: usize = 3;

/// Microseconds since the Unix epoch: the clock every process on this machine shares.
fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// The longest a failed request may take: the request timeout, once per retry round, with
/// room for a loaded machine.
const FAIL_BOUND_US: u64 = 2 * REQUEST_TIMEOUT_MS * 1000 + 1_000_000;

/// One registration a client attempted.
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

/// The Consistent names node `i` reports, name → pid.
fn consistent_names(s: &serde_json::Value) -> HashMap<String, String> {
    let mut names = HashMap::new();
    for n in s["names"].as_array().unwrap() {
        if n["scope"] == "consistent" {
            let old = names.insert(
                n["name"].as_str().unwrap().to_string(),
                n["pid"].as_str().unwrap().to_string(),
            );
            assert!(old.is_none(), "two owners of {n}");
        }
    }
    names
}

/// Every acknowledged registration in `acked` is what node `i` reports, waiting for its
/// registry to catch up; names the ones missing if it never does.
fn assert_present(c: &Cluster, i: usize, acked: &[Registration]) {
    let missing = |s: &serde_json::Value| -> Vec<String> {
        let names = consistent_names(s);
        acked
            .iter()
            .filter(|r| names.get(&r.name) != r.pid.as_ref())
            .map(|r| {
                format!(
                    "{} (acknowledged for {:?}, now {:?})",
                    r.name,
                    r.pid,
                    names.get(&r.name)
                )
            })
            .collect()
    };
    let until = std::time::Instant::now() + netns::DEADLINE;
    loop {
        let s = c.status(i);
        let gone = missing(&s);
        if gone.is_empty() {
            return;
        }
        if std::time::Instant::now() > until {
            panic!(
                "n{i} lacks {} of {} acknowledged registrations: {gone:?}\n{}",
                gone.len(),
                acked.len(),
                c.dump()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The error kinds a registration may fail with while voters die or are cut off: consensus
/// was unavailable (no leader, the leader unreachable), did not answer in time, or (a
/// request that reached the leader after the heal) refused a node it holds declared down.
/// Anything else (`Taken`, `NotLocal`, `Unexpected`, a stopped Raft ...) is a bug, not
/// unavailability.
const UNAVAILABLE: [&str; 4] = [
    "Consensus::NoLeader",
    "Consensus::Unreachable",
    "Consensus::Timeout",
    "Consensus::ClaimantDown",
];

/// Failures are typed as unavailability and come within the bound: a minority or an
/// election never hangs a caller, nor makes it fail for another reason.
fn assert_failures_bounded(records: &[Registration]) {
    for r in records.iter().filter(|r| r.error.is_some()) {
        assert!(
            r.returned >= r.invoked && r.returned - r.invoked <= FAIL_BOUND_US,
            "a registration failed only after {} ms: {r:?}",
            r.returned.saturating_sub(r.invoked) / 1000
        );
        let error = r.error.as_deref().unwrap();
        let kind = error.split(' ').next().unwrap_or_default();
        assert!(
            UNAVAILABLE.contains(&kind),
            "a registration failed with {kind:?}, not one of {UNAVAILABLE:?}: {r:?}"
        );
        assert!(
            error.len() > kind.len() + 1,
            "a failure without its message: {r:?}"
        );
    }
}

/// The checker above, fed records it must refuse.
mod checker {
    use super::{FAIL_BOUND_US, Registration, assert_failures_bounded};

    fn failure(error: &str, took_us: u64) -> Registration {
        Registration {
            name: "c1-7".into(),
            pid: None,
            invoked: 1_000_000,
            returned: 1_000_000 + took_us,
            error: Some(error.into()),
        }
    }

    fn refused(records: &[Registration]) -> bool {
        std::panic::catch_unwind(|| assert_failures_bounded(records)).is_err()
    }

    #[test]
    fn typed_unavailability_within_the_bound_passes() {
        assert_failures_bounded(&[
            failure("Consensus::NoLeader no raft leader", 10),
            failure(
                "Consensus::Timeout raft request timed out; its outcome is unknown",
                FAIL_BOUND_US,
            ),
            failure("Consensus::Unreachable raft leader 2 is unreachable", 5_000),
        ]);
    }

    #[test]
    fn a_slow_failure_is_caught() {
        assert!(refused(&[failure(
            "Consensus::NoLeader no raft leader",
            FAIL_BOUND_US + 1
        )]));
    }

    #[test]
    fn a_failure_of_another_kind_is_caught() {
        for error in [
            "Taken name \"c1-7\" is already registered by <1.2.3>",
            "Consensus broke",
            "Consensus::Stopped raft stopped: fatal",
            "Unexpected unexpected consensus outcome: Released",
        ] {
            assert!(refused(&[failure(error, 10)]), "{error}");
        }
    }

    #[test]
    fn a_kind_names_the_wrapped_variant() {
        use atoll_cluster::{ConsensusError, NameError};
        use atoll_core::Scope;

        let kind = crate::netns::client::kind;
        assert_eq!(
            kind(&NameError::Consensus(ConsensusError::NoLeader)),
            "Consensus::NoLeader"
        );
        assert_eq!(
            kind(&NameError::Consensus(ConsensusError::Stopped("x".into()))),
            "Consensus::Stopped"
        );
        assert_eq!(
            kind(&NameError::Unsupported(Scope::Strong)),
            "Unsupported::Strong"
        );
        assert_eq!(kind(&NameError::NoConsensus), "NoConsensus");
    }

    #[test]
    fn a_failure_without_its_message_is_caught() {
        assert!(refused(&[failure("Consensus::NoLeader", 10)]));
        assert!(refused(&[failure("", 10)]));
    }
}

#[test]
fn the_leader_killed_during_registrations_loses_no_acknowledged_one() {
    let Some(mut c) = Cluster::with_voters("lead", 11, VOTERS, VOTERS) else {
        return;
    };
    c.start_all();
    let leader = c.leader(1);
    let term_before = c.status(leader)["raft"]["term"].as_u64().unwrap();
    let clients: Vec<usize> = (1..=VOTERS)
        .filter(|&v| v != leader)
        .map(|v| c.start_client(v, &format!("register c{v}")))
        .collect();
    c.wait_for("20 registrations by each client", |c| {
        clients.iter().all(|&k| c.client(k).count("ok") >= 20)
    });
    let before: Vec<usize> = clients.iter().map(|&k| c.client(k).count("ok")).collect();
    c.kill(leader, "KILL");
    c.wait_for("20 more registrations by each client after the kill", |c| {
        clients
            .iter()
            .zip(&before)
            .all(|(&k, b)| c.client(k).count("ok") >= b + 20)
    });
    for &k in &clients {
        c.stop_client(k);
    }

    let records: Vec<Registration> = clients
        .iter()
        .flat_map(|&k| registrations(c.client(k)))
        .collect();
    let acked: Vec<Registration> = records
        .iter()
        .filter(|r| r.pid.is_some())
        .cloned()
        .collect();
    let failed = records.len() - acked.len();
    eprintln!(
        "{} registrations acknowledged, {failed} failed (typed) around the leader's death",
        acked.len()
    );
    assert_failures_bounded(&records);
    for v in (1..=VOTERS).filter(|&v| v != leader) {
        assert_present(&c, v, &acked);
    }
    let new_leader = c.leader(clients_node(&c, clients[0]));
    assert_ne!(new_leader, leader);
    let term_after = c.status(new_leader)["raft"]["term"].as_u64().unwrap();
    assert!(
        term_after > term_before,
        "term {term_before} -> {term_after}"
    );
}

fn clients_node(c: &Cluster, k: usize) -> usize {
    c.client(k).i
}

#[test]
fn a_minority_partition_gets_typed_errors_while_the_majority_registers() {
    let Some(mut c) = Cluster::with_voters("part", 12, VOTERS, VOTERS) else {
        return;
    };
    c.start_all();
    const CUT: usize = 3;
    let majority = c.start_client(1, "register c1");
    let minority = c.start_client(CUT, "register c3");
    c.wait_for("10 registrations by each client", |c| {
        c.client(majority).count("ok") >= 10 && c.client(minority).count("ok") >= 10
    });

    c.isolate(CUT);
    let cut_at = now_us();
    let before = c.client(majority).count("ok");
    c.wait_for("the majority registering on, the minority failing", |c| {
        let failing = registrations(c.client(minority))
            .iter()
            .filter(|r| r.invoked > cut_at && r.error.is_some())
            .count();
        c.client(majority).count("ok") >= before + 20 && failing >= 2
    });
    // The majority declares the cut-off client node unreachable, which releases its names.
    c.wait_status(1, "c3 unreachable", |s| {
        s["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "c3" && m["state"] == "unreachable")
    });
    let cut_records = registrations(c.client(minority));
    c.heal();
    let healed_at = now_us();

    // Nothing invoked on the minority side after the cut succeeded before the heal.
    for r in &cut_records {
        if r.invoked > cut_at {
            assert!(
                r.pid.is_none(),
                "a minority registration succeeded: {r:?}\n{}",
                c.dump()
            );
        }
    }
    assert_failures_bounded(&cut_records);

    // After the heal the minority's client registers again.
    c.wait_for("3 registrations by c3 after the heal", |c| {
        registrations(c.client(minority))
            .iter()
            .filter(|r| r.invoked > healed_at && r.pid.is_some())
            .count()
            >= 3
    });
    c.stop_client(majority);
    c.stop_client(minority);

    let majority_acked: Vec<Registration> = registrations(c.client(majority))
        .into_iter()
        .filter(|r| r.pid.is_some())
        .collect();
    let minority_records = registrations(c.client(minority));
    let (old, new): (Vec<_>, Vec<_>) = minority_records
        .into_iter()
        .filter(|r| r.pid.is_some())
        .partition(|r| r.invoked < cut_at);
    // Every voter, the healed one too, has every majority registration and the minority's
    // new ones; the names the minority client held before the cut were released.
    for v in 1..=VOTERS {
        assert_present(&c, v, &majority_acked);
        assert_present(&c, v, &new);
    }
    let names = consistent_names(&c.status(1));
    for r in &old {
        assert!(
            !names.contains_key(&r.name),
            "{} survived its node being unreachable",
            r.name
        );
    }
    eprintln!(
        "majority: {} acknowledged; minority: {} before the cut (released), {} after the heal",
        majority_acked.len(),
        old.len(),
        new.len()
    );
}

/// One hold of the lock: its token, when the grant returned, when the release began.
#[derive(Debug)]
#[allow(dead_code)] // `client` is for the failure message.
struct Hold {
    client: usize,
    token: u64,
    granted: u64,
    released: u64,
}

/// Pairs `granted TOKEN T0 T1` with the `release TOKEN T` that follows it.
fn holds(c: &Client) -> Vec<Hold> {
    let mut out = Vec::new();
    let mut open: Option<(u64, u64)> = None;
    for r in c.records() {
        match r[0].as_str() {
            "granted" => open = Some((r[1].parse().unwrap(), r[3].parse().unwrap())),
            "release" => {
                let (token, granted) = open.take().expect("release after a grant");
                assert_eq!(token, r[1].parse::<u64>().unwrap());
                out.push(Hold {
                    client: c.i,
                    token,
                    granted,
                    released: r[2].parse().unwrap(),
                });
            }
            _ => {}
        }
    }
    out
}

#[test]
fn a_lock_contended_from_three_nodes_through_a_leader_kill_is_never_held_twice() {
    let Some(mut c) = Cluster::with_voters("lock", 13, VOTERS, VOTERS) else {
        return;
    };
    c.start_all();
    let clients: Vec<usize> = (1..=VOTERS).map(|v| c.start_client(v, "lock L")).collect();
    let granted =
        |c: &Cluster| -> usize { clients.iter().map(|&k| c.client(k).count("granted")).sum() };
    c.wait_for("15 grants", |c| granted(c) >= 15);
    let leader = c.leader(1);
    let before = granted(&c);
    c.kill(leader, "KILL");
    c.wait_for("15 more grants after the leader's death", |c| {
        granted(c) >= before + 15
    });
    for &k in &clients {
        c.stop_client(k);
    }

    let mut all: Vec<Hold> = clients.iter().flat_map(|&k| holds(c.client(k))).collect();
    all.sort_by_key(|h| h.granted);
    for pair in all.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert!(
            a.token < b.token,
            "tokens went backwards: {a:?} then {b:?}\n{}",
            c.dump()
        );
        assert!(
            a.released < b.granted,
            "two holds overlap: {a:?} and {b:?}\n{}",
            c.dump()
        );
    }
    let per_client: Vec<usize> = clients
        .iter()
        .map(|&k| c.client(k).count("granted"))
        .collect();
    eprintln!(
        "{} holds checked (per client {per_client:?}), tokens {}..{}",
        all.len(),
        all.first().map_or(0, |h| h.token),
        all.last().map_or(0, |h| h.token)
    );
    assert!(
        per_client.iter().filter(|&&n| n > 0).count() >= 2,
        "{per_client:?}"
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
    use atoll_cluster::Node;
    use atoll_core::{Pid, Scope};

    use super::netns::client::{self, kind, record};
    use super::now_us;

    /// A process that only exists to own a name or hold the lock.
    struct Holder;

    impl Actor for Holder {
        type Msg = ();

        async fn handle(&mut self, _: (), _: &mut Ctx<Self>) -> ActorResult {
            Ok(())
        }
    }

    pub fn run(work: &str, config: &Path) {
        client::run(config, |node, stop| async move {
            let words: Vec<&str> = work.split(' ').collect();
            match words[..] {
                ["register", prefix] => register(&node, prefix, &stop).await,
                ["lock", name] => lock(&node, name, &stop).await,
                _ => panic!("unknown work {work:?}"),
            }
        });
    }

    fn holder(node: &Node) -> Pid {
        node.runtime().spawn(Holder).pid()
    }

    /// `ok NAME PID T0 T1` or `fail NAME T0 T1 KIND MESSAGE`, one Consistent name after
    /// another.
    async fn register(node: &Node, prefix: &str, stop: &AtomicBool) {
        let mut i = 0u64;
        while !stop.load(Ordering::SeqCst) {
            let name = format!("{prefix}-{i}");
            let pid = holder(node);
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
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// `granted TOKEN T0 T1`, `release TOKEN T`, then `unlocked TOKEN T` or `unlock_failed
    /// TOKEN T KIND`; or `lock_failed T0 T1 KIND`. Each attempt uses a fresh holder process
    /// that exits afterwards, so a grant whose answer was lost is released too.
    async fn lock(node: &Node, name: &str, stop: &AtomicBool) {
        let mut n = 0u64;
        while !stop.load(Ordering::SeqCst) {
            let pid = holder(node);
            let t0 = now_us();
            match node.lock(name, pid, Duration::from_secs(20)).await {
                Ok(guard) => {
                    let token = guard.token();
                    record(format!("granted {token} {t0} {}", now_us()));
                    tokio::time::sleep(Duration::from_millis(15)).await;
                    record(format!("release {token} {}", now_us()));
                    match guard.unlock().await {
                        Ok(()) => record(format!("unlocked {token} {}", now_us())),
                        Err(e) => {
                            record(format!("unlock_failed {token} {} {}", now_us(), kind(&e)))
                        }
                    }
                }
                Err(e) => record(format!("lock_failed {t0} {} {}", now_us(), kind(&e))),
            }
            node.runtime().kill(pid);
            n += 1;
            tokio::time::sleep(Duration::from_millis(n % 7 * 3)).await;
        }
    }
}
