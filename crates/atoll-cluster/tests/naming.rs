//! Consensus names and locks in real nodes: three Raft voters and two non-voters over QUIC
//! and TLS on loopback, every node on a tokio runtime of its own.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atoll_cluster::{
    ConsensusConfig, ConsensusError, LockError, MemberState, MembershipConfig, NameError,
};
use atoll_core::{NodeId, Pid, Scope};
use atoll_net::NodeIdentity;
use common::host::*;
use common::*;

/// How long a consensus request may take before it fails with a typed error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// Three voters `v0..v2` and two non-voters `m0, m1`, all joined and with a Raft leader.
struct Setup {
    hosts: Vec<Host>,
    _dir: tempfile::TempDir,
}

fn start_cluster(cluster: &Cluster) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let keys: Vec<NodeIdentity> = (0..5).map(|_| NodeIdentity::generate().unwrap()).collect();
    let addrs: Vec<SocketAddr> = (0..5).map(|_| free_addr()).collect();
    let voters: Vec<(NodeId, SocketAddr)> = (0..3).map(|i| (keys[i].node_id(), addrs[i])).collect();
    let names = ["v0", "v1", "v2", "m0", "m1"];
    let mut hosts = Vec::new();
    for (i, key) in keys.into_iter().enumerate() {
        let name = names[i];
        let mut config = cluster.config_with_key(name, key);
        config.listen = addrs[i];
        let seeds = if i == 0 { vec![] } else { vec![addrs[0]] };
        let mut consensus = ConsensusConfig::new(voters.clone(), dir.path().join(name));
        consensus.election_timeout_min = Duration::from_millis(600);
        consensus.election_timeout_max = Duration::from_millis(1200);
        consensus.request_timeout = REQUEST_TIMEOUT;
        let config = config
            .with_membership(MembershipConfig::new(seeds).with_swim(fast_swim()))
            .with_consensus(consensus);
        hosts.push(Host::start(config));
    }
    let setup = Setup { hosts, _dir: dir };
    wait_until("every member active and seeing the others", || {
        setup.hosts.iter().all(|h| {
            let swim = h.node().membership().unwrap();
            swim.state() == MemberState::Active
                && swim
                    .members()
                    .iter()
                    .filter(|m| m.state == MemberState::Active)
                    .count()
                    == 4
        })
    });
    wait_until("a raft leader every voter agrees on", || {
        let leaders: Vec<_> = setup.hosts[..3]
            .iter()
            .map(|h| h.run(|n| async move { n.raft_status().await.and_then(|s| s.leader) }))
            .collect();
        leaders[0].is_some() && leaders.iter().all(|l| *l == leaders[0])
    });
    setup
}

/// One hold of a lock: acquired, released, fencing token, holder.
type Hold = (Instant, Instant, u64, Pid);

#[test]
fn consistent_names_resolve_everywhere_have_one_winner_and_go_with_their_owner() {
    let _serial = serial();
    init_logs();
    let cluster = Cluster::new();
    let setup = start_cluster(&cluster);
    let hosts = &setup.hosts;

    // Registered from a non-voter, resolved by every node from its own view.
    let svc = hosts[3].probe();
    hosts[3]
        .run(move |n| async move { n.register("svc", svc, Scope::Consistent).await })
        .unwrap();
    everywhere(hosts, "svc", Some(svc));
    assert!(hosts.iter().all(|h| h.node().registry_index() > 0));

    // A name given up while its process lives leaves nothing behind that waits for the
    // process's exit: the tasks a burst of registrations started end with them.
    let owner = hosts[3].probe();
    let tasks_before = hosts[3].rt().metrics().num_alive_tasks();
    hosts[3].run(move |n| async move {
        for i in 0..100 {
            n.register(&format!("burst-{i}"), owner, Scope::Consistent)
                .await
                .unwrap();
        }
        for i in 0..100 {
            assert_eq!(
                n.unregister(&format!("burst-{i}")).await.unwrap(),
                Some(owner)
            );
        }
    });
    wait_until("the exit watches of given-up names gone", || {
        hosts[3].rt().metrics().num_alive_tasks() < tasks_before + 50
    });

    // A Consistent name shadows a Local one of the same name.
    let local = hosts[1].probe();
    hosts[1]
        .run(move |n| async move { n.register("svc", local, Scope::Local).await })
        .unwrap();
    assert_eq!(hosts[1].node().whereis("svc"), Some(svc));

    // Five nodes race for one name: exactly one wins, the others learn who.
    let racers: Vec<Pid> = hosts.iter().map(|h| h.probe()).collect();
    let tasks: Vec<_> = hosts
        .iter()
        .zip(&racers)
        .map(|(h, &pid)| {
            h.spawn(move |n| async move { n.register("leader", pid, Scope::Consistent).await })
        })
        .collect();
    let results: Vec<_> = hosts.iter().zip(tasks).map(|(h, t)| h.join(t)).collect();
    let winners: Vec<Pid> = racers
        .iter()
        .zip(&results)
        .filter(|(_, r)| r.is_ok())
        .map(|(p, _)| *p)
        .collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    let winner = winners[0];
    for r in &results {
        match r {
            Ok(()) => {}
            Err(NameError::Taken { owner, .. }) => assert_eq!(*owner, winner),
            Err(e) => panic!("a racer failed otherwise: {e}"),
        }
    }
    everywhere(hosts, "leader", Some(winner));

    // Sends by name reach the owner wherever it runs.
    let (probe, mut seen) = {
        let _in = hosts[4].rt().enter();
        common::probe(hosts[4].node())
    };
    let echo = probe.pid();
    hosts[4]
        .run(move |n| async move { n.register("echo", echo, Scope::Consistent).await })
        .unwrap();
    everywhere(hosts, "echo", Some(echo));
    hosts[0].run(|n| async move {
        n.send_named::<Probe>("echo", ProbeMsg::Text("hi".into()))
            .unwrap();
    });
    let got = hosts[4].run(move |_| async move { next(&mut seen, "a message by name").await });
    assert_eq!(got, Seen::Text("hi".into()));

    // The owner exits: the name goes on every node, and another process can take it.
    let owner_host = hosts.iter().find(|h| h.node().id() == winner.node).unwrap();
    owner_host.end(winner);
    everywhere(hosts, "leader", None);
    let next_owner = hosts[2].probe();
    hosts[2]
        .run(move |n| async move { n.register("leader", next_owner, Scope::Consistent).await })
        .unwrap();
    everywhere(hosts, "leader", Some(next_owner));

    // Unregistering by the owner's node.
    let gone = hosts[3]
        .run(|n| async move { n.unregister("svc").await })
        .unwrap();
    assert_eq!(gone, Some(svc));
    wait_until("svc gone on every node but v1", || {
        [0, 2, 3, 4]
            .iter()
            .all(|&i| hosts[i].node().whereis("svc").is_none())
    });
    wait_until("svc gone, the local name showing through on v1", || {
        hosts[1].node().whereis("svc") == Some(local)
    });

    // A registration whose caller stopped waiting (as when its answer is lost) may still
    // commit; the name goes when its process exits all the same.
    let (orphan, name) = (0..20)
        .find_map(|i| {
            let pid = hosts[3].probe();
            let name = format!("orphan-{i}");
            let asked = name.clone();
            hosts[3].run(move |n| async move {
                // Polled once, then dropped: the proposal is on its way, nobody waits.
                let _ = tokio::time::timeout(
                    Duration::ZERO,
                    n.register(&asked, pid, Scope::Consistent),
                )
                .await;
            });
            let until = Instant::now() + Duration::from_secs(2);
            while Instant::now() < until {
                if hosts[0].node().whereis(&name) == Some(pid) {
                    return Some((pid, name));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            None
        })
        .expect("an abandoned registration committed");
    hosts[3].end(orphan);
    everywhere(hosts, &name, None);

    for h in setup.hosts {
        h.stop();
    }
}

#[test]
fn strong_names_resolve_everywhere_once_registered_and_time_out_naming_a_silent_member() {
    let _serial = serial();
    init_logs();
    let cluster = Cluster::new();
    let mut setup = start_cluster(&cluster);
    let hosts = &setup.hosts;

    // From a voter and from a non-voter: when `register` returns, every node resolves it.
    for (i, name) in [(0, "strong-v0"), (3, "strong-m0")] {
        let pid = hosts[i].probe();
        let started = Instant::now();
        hosts[i]
            .run(move |n| async move { n.register(name, pid, Scope::Strong).await })
            .unwrap();
        eprintln!("{name}: registered in {:?}", started.elapsed());
        for h in hosts {
            assert_eq!(
                h.node().whereis(name),
                Some(pid),
                "{} on {}",
                name,
                h.name()
            );
        }
    }

    // m1 dies without a word and stays Active in the membership for a while: a Strong
    // registration cannot be acknowledged by it, times out naming it, and is withdrawn.
    let killed = setup.hosts.pop().unwrap();
    let killed_id = killed.node().id();
    killed.kill();
    let hosts = &setup.hosts;
    let pid = hosts[3].probe();
    let started = Instant::now();
    let result = hosts[3].run(move |n| async move {
        tokio::time::timeout(
            REQUEST_TIMEOUT * 4,
            n.register("strong-late", pid, Scope::Strong),
        )
        .await
    });
    eprintln!("strong-late: {result:?} after {:?}", started.elapsed());
    match result {
        Ok(Err(NameError::StrongTimeout { name, missing })) => {
            assert_eq!(name, "strong-late");
            assert_eq!(missing, vec![killed_id]);
        }
        other => panic!("expected StrongTimeout, got {other:?}"),
    }
    everywhere(hosts, "strong-late", None);

    for h in setup.hosts {
        h.stop();
    }
}

/// One registration of the stream: its name, process, outcome and how long it took.
type Attempt = (String, Pid, Result<(), NameError>, Duration);

#[test]
fn registrations_that_returned_ok_survive_the_leader_being_killed_mid_stream() {
    let _serial = serial();
    init_logs();
    let cluster = Cluster::new();
    let mut setup = start_cluster(&cluster);
    let hosts = &setup.hosts;

    // m0 registers names one after another until told to stop.
    let attempts: Arc<Mutex<Vec<Attempt>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stream = {
        let (attempts, stop) = (attempts.clone(), stop.clone());
        hosts[3].spawn(move |n| async move {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let (probe, _) = common::probe(&n);
                let (name, pid) = (format!("stream-{i}"), probe.pid());
                let started = Instant::now();
                // A hang shows up as a panic here, not as a test that never ends.
                let result = tokio::time::timeout(
                    REQUEST_TIMEOUT * 3,
                    n.register(&name, pid, Scope::Consistent),
                )
                .await
                .unwrap_or_else(|_| panic!("{name}: register hung"));
                attempts
                    .lock()
                    .unwrap()
                    .push((name, pid, result, started.elapsed()));
                i += 1;
            }
        })
    };
    let oks = |attempts: &Arc<Mutex<Vec<Attempt>>>| {
        attempts
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a.2.is_ok())
            .count()
    };
    wait_until("20 registrations done", || oks(&attempts) >= 20);

    // The leader's node dies without a word in the middle of the stream.
    let leader = hosts[0]
        .run(|n| async move { n.raft_status().await.and_then(|s| s.leader) })
        .expect("a leader");
    let index = setup.hosts[..3]
        .iter()
        .position(|h| atoll_raft::raft_id_of(&h.node().id()) == leader)
        .expect("the leader is a voter");
    let before = oks(&attempts);
    let killed = setup.hosts.remove(index);
    let killed_at = Instant::now();
    eprintln!(
        "killing the leader {} after {before} registrations",
        killed.name()
    );
    killed.kill();
    let hosts = &setup.hosts;

    // The stream goes on through a new leader.
    wait_until("a new leader and 20 more registrations", || {
        oks(&attempts) >= before + 20
    });
    eprintln!(
        "20 more registrations {:?} after the kill",
        killed_at.elapsed()
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let registrar = hosts.iter().position(|h| h.name() == "m0").unwrap();
    hosts[registrar].join(stream);
    let new_leader = hosts[0].run(|n| async move { n.raft_status().await.and_then(|s| s.leader) });
    assert!(
        new_leader.is_some_and(|l| l != leader),
        "{new_leader:?} after {leader}"
    );

    let attempts = attempts.lock().unwrap();
    let mut slowest = Duration::ZERO;
    for (name, pid, result, took) in attempts.iter() {
        slowest = slowest.max(*took);
        match result {
            Ok(()) => everywhere(hosts, name, Some(*pid)),
            Err(NameError::Consensus(
                ConsensusError::Timeout
                | ConsensusError::NoLeader
                | ConsensusError::Unreachable { .. },
            )) => {
                eprintln!("{name}: {result:?} after {took:?}");
                // Bounded by the request timeout (plus a connection attempt).
                assert!(
                    *took < REQUEST_TIMEOUT * 2,
                    "{name}: {result:?} after {took:?}"
                );
            }
            Err(e) => panic!("{name}: an untyped failure: {e}"),
        }
    }
    let failed = attempts.iter().filter(|a| a.2.is_err()).count();
    eprintln!(
        "{} registrations, {failed} failed during the failover, slowest {slowest:?}",
        attempts.len()
    );
    drop(attempts);

    for h in setup.hosts {
        h.stop();
    }
}

#[test]
fn locks_are_exclusive_fenced_and_released_when_the_holder_exits() {
    let _serial = serial();
    init_logs();
    let cluster = Cluster::new();
    let setup = start_cluster(&cluster);
    let hosts = &setup.hosts;

    // Holders on every node take the lock in turn; every hold is recorded.
    let holds: Arc<Mutex<Vec<Hold>>> = Arc::default();
    const ROUNDS: usize = 3;
    let tasks: Vec<_> = hosts
        .iter()
        .map(|h| {
            let holder = h.probe();
            let holds = holds.clone();
            h.spawn(move |n| async move {
                for _ in 0..ROUNDS {
                    let guard = n.lock("shared", holder, DEADLINE).await?;
                    let acquired = Instant::now();
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    let released = Instant::now();
                    holds
                        .lock()
                        .unwrap()
                        .push((acquired, released, guard.token(), holder));
                    guard.unlock().await?;
                }
                Ok::<(), LockError>(())
            })
        })
        .collect();
    for (h, t) in hosts.iter().zip(tasks) {
        h.join(t).unwrap_or_else(|e| panic!("{}: {e}", h.name()));
    }
    let mut holds = holds.lock().unwrap().clone();
    assert_eq!(holds.len(), ROUNDS * hosts.len());
    holds.sort_by_key(|h| h.0);
    for pair in holds.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        assert!(a.1 <= b.0, "holds overlap: {a:?} and {b:?}");
        assert!(a.2 < b.2, "tokens do not increase: {a:?} then {b:?}");
    }

    // try_lock names the holder; the holder's exit frees the lock for others.
    let first = hosts[3].probe();
    let guard = hosts[3]
        .run(move |n| async move { n.try_lock("job", first).await })
        .unwrap();
    let token = guard.token();
    let other = hosts[1].probe();
    let busy = hosts[1].run(move |n| async move { n.try_lock("job", other).await });
    match busy {
        Err(LockError::Busy { holder, token: t }) => {
            assert_eq!(holder, first);
            assert_eq!(t, token);
        }
        other => panic!("expected Busy, got {other:?}"),
    }
    // Waiting for a lock that is never released times out.
    let started = Instant::now();
    let timed_out = hosts[1]
        .run(move |n| async move { n.lock("job", other, Duration::from_millis(300)).await });
    assert!(
        matches!(timed_out, Err(LockError::Timeout)),
        "{timed_out:?}"
    );
    assert!(started.elapsed() < REQUEST_TIMEOUT * 3);

    hosts[3].end(first);
    let taken = hosts[1]
        .run(move |n| async move { n.lock("job", other, DEADLINE).await })
        .unwrap();
    assert!(taken.token() > token);
    // The guard of the exited holder is stale: dropping it does not release the new grant.
    drop(guard);
    wait_until("the new grant is seen on every node", || {
        hosts
            .iter()
            .all(|h| h.node().lock_holder("job") == Some((other, taken.token())))
    });
    drop(taken);
    wait_until("the dropped guard released the lock", || {
        hosts.iter().all(|h| h.node().lock_holder("job").is_none())
    });

    for h in setup.hosts {
        h.stop();
    }
}

#[test]
fn node_loss_releases_names_and_a_minority_fails_fast_but_still_resolves() {
    let _serial = serial();
    init_logs();
    let cluster = Cluster::new();
    let mut setup = start_cluster(&cluster);

    // A name and a lock owned on m1; m1 dies without a word.
    let hosts = &setup.hosts;
    let owner = hosts[4].probe();
    hosts[4]
        .run(move |n| async move { n.register("on-m1", owner, Scope::Consistent).await })
        .unwrap();
    let guard = hosts[4]
        .run(move |n| async move { n.try_lock("held-by-m1", owner).await })
        .unwrap();
    std::mem::forget(guard);
    let stays = hosts[3].probe();
    hosts[3]
        .run(move |n| async move { n.register("stays", stays, Scope::Consistent).await })
        .unwrap();
    everywhere(hosts, "on-m1", Some(owner));
    everywhere(hosts, "stays", Some(stays));
    let killed = setup.hosts.pop().unwrap();
    let lost_at = Instant::now();
    killed.kill();
    let hosts = &setup.hosts;
    everywhere(hosts, "on-m1", None);
    wait_until("the lock of the lost node released everywhere", || {
        hosts
            .iter()
            .all(|h| h.node().lock_holder("held-by-m1").is_none())
    });
    eprintln!("released {:?} after the node was killed", lost_at.elapsed());

    // Two voters go: the one left cannot commit, and says so in bounded time.
    let v1 = setup.hosts.remove(1);
    let v2 = setup.hosts.remove(1);
    v1.stop();
    v2.stop();
    let hosts = &setup.hosts;
    for h in hosts {
        let pid = h.probe();
        let started = Instant::now();
        let result = h.run(move |n| async move {
            tokio::time::timeout(
                REQUEST_TIMEOUT * 3,
                n.register("no-quorum", pid, Scope::Consistent),
            )
            .await
        });
        let result = result.unwrap_or_else(|_| panic!("{}: register hung", h.name()));
        assert!(
            matches!(
                result,
                Err(NameError::Consensus(
                    ConsensusError::NoLeader
                        | ConsensusError::Unreachable { .. }
                        | ConsensusError::Timeout
                ))
            ),
            "{}: {result:?}",
            h.name()
        );
        eprintln!("{}: {result:?} after {:?}", h.name(), started.elapsed());
        let locked = h.run(move |n| async move {
            tokio::time::timeout(REQUEST_TIMEOUT * 3, n.try_lock("no-quorum", pid)).await
        });
        assert!(
            matches!(locked, Ok(Err(LockError::Consensus(_)))),
            "{}: {locked:?}",
            h.name()
        );
    }
    // Reads stay local: both the voter left and the non-voter still resolve.
    for h in hosts {
        assert_eq!(h.node().whereis("stays"), Some(stays), "{}", h.name());
    }

    for h in setup.hosts {
        h.stop();
    }
}
