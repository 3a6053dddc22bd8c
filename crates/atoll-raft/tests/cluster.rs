//! Three voters over the in-memory transport with real redb stores on temp dirs.

use std::collections::BTreeSet;
use std::future::Future;
use std::path::Path;
use std::time::Duration;

use atoll_core::{NodeId, Pid, Scope};
use atoll_raft::{
    Command, Consensus, ConsensusError, MemRouter, MemTransport, Node, Outcome, RaftId,
    RaftSettings, Role, raft_id_of,
};
use tokio::time::Instant;

type Error = Box<dyn std::error::Error + Send + Sync>;
type Handle = Consensus<MemTransport>;

fn node_id(n: u8) -> NodeId {
    NodeId::from_bytes([n; 16])
}

fn voters() -> Vec<(RaftId, Node)> {
    (1..=3u8)
        .map(|n| {
            (
                raft_id_of(&node_id(n)),
                Node::new(node_id(n), format!("10.0.0.{n}:4000")),
            )
        })
        .collect()
}

fn pid(n: u8, serial: u64) -> Pid {
    Pid::new(node_id(n), 1, serial)
}

fn register(name: &str, pid: Pid) -> Command {
    Command::Register {
        name: name.into(),
        pid,
        scope: Scope::Consistent,
    }
}

async fn start(router: &MemRouter, id: RaftId, root: &Path) -> Result<Handle, Error> {
    let mut settings = RaftSettings::new(id, voters(), root.join(id.to_string()));
    settings.heartbeat_interval = Duration::from_millis(50);
    settings.election_timeout_min = Duration::from_millis(250);
    settings.election_timeout_max = Duration::from_millis(500);
    settings.request_timeout = Duration::from_secs(3);
    let node = Consensus::start(settings, router.transport(id)).await?;
    let served = node.clone();
    router.serve(id, move |body: Vec<u8>| {
        let node = served.clone();
        async move { node.handle(&body).await }
    });
    Ok(node)
}

async fn start_all(router: &MemRouter, root: &Path) -> Result<Vec<Handle>, Error> {
    let mut nodes = Vec::new();
    for (id, _) in voters() {
        nodes.push(start(router, id, root).await?);
    }
    Ok(nodes)
}

/// Polls `check` until it yields a value or `within` passes.
async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(format!("timed out waiting for {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the given nodes agree on one leader among them, and returns its index.
async fn agreed_leader(nodes: &[&Handle]) -> Result<usize, Error> {
    eventually(Duration::from_secs(10), "an agreed leader", || async {
        let mut leaders = BTreeSet::new();
        let mut leading = Vec::new();
        for (i, n) in nodes.iter().enumerate() {
            let s = n.status().await;
            leaders.insert(s.leader?);
            if s.role == Role::Leader {
                leading.push(i);
            }
        }
        match (leaders.len(), leading.as_slice()) {
            (1, [i]) if leaders.contains(&nodes[*i].id()) => Some(*i),
            _ => None,
        }
    })
    .await
}

fn all(nodes: &[Handle]) -> Vec<&Handle> {
    nodes.iter().collect()
}

async fn shutdown_all(router: &MemRouter, nodes: &[Handle]) -> Result<(), Error> {
    for n in nodes {
        router.remove(n.id());
        n.shutdown().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_proposal_is_forwarded_and_applied_everywhere() -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let router = MemRouter::new();
    let nodes = start_all(&router, dir.path()).await?;
    let leader = agreed_leader(&all(&nodes)).await?;
    let follower = &nodes[(leader + 1) % 3];
    assert_ne!(follower.status().await.role, Role::Leader);

    let outcome = follower.propose(register("svc", pid(2, 7))).await?;
    assert_eq!(outcome, Outcome::Registered);
    for n in &nodes {
        let owner = eventually(Duration::from_secs(5), "replication", || async {
            n.whereis("svc").map(|b| b.pid)
        })
        .await?;
        assert_eq!(owner, pid(2, 7));
    }
    follower.linearizable_read().await?;
    assert!(follower.whereis("svc").is_some());
    let status = follower.status().await;
    assert_eq!(status.leader, Some(nodes[leader].id()));
    assert!(status.commit_index >= status.last_applied);
    shutdown_all(&router, &nodes).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_registrations_of_one_name_have_one_winner() -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let router = MemRouter::new();
    let nodes = start_all(&router, dir.path()).await?;
    agreed_leader(&all(&nodes)).await?;

    let mut tasks = Vec::new();
    for i in 0..5u8 {
        let node = nodes[usize::from(i) % 3].clone();
        tasks.push(tokio::spawn(async move {
            node.propose(register("single", pid(i + 1, 1))).await
        }));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await??);
    }
    let winners = outcomes
        .iter()
        .filter(|o| **o == Outcome::Registered)
        .count();
    assert_eq!(winners, 1, "{outcomes:?}");
    let owner = nodes[0].whereis("single").map(|b| b.pid);
    for o in &outcomes {
        match o {
            Outcome::Registered => {}
            Outcome::NameTaken { owner: o } => assert_eq!(Some(*o), owner),
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    shutdown_all(&router, &nodes).await
}

async fn lock_and_unlock(node: &Handle, holder: Pid) -> Result<u64, Error> {
    let lock = Command::Lock {
        name: "l".into(),
        holder,
    };
    let Outcome::LockGranted { token } = node.propose(lock).await? else {
        return Err("lock not granted".into());
    };
    let unlock = Command::Unlock {
        name: "l".into(),
        token,
    };
    assert_eq!(node.propose(unlock).await?, Outcome::Unlocked);
    Ok(token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_tokens_strictly_increase_across_nodes() -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let router = MemRouter::new();
    let nodes = start_all(&router, dir.path()).await?;
    agreed_leader(&all(&nodes)).await?;

    let mut last = 0;
    for round in 0..6u8 {
        let token = lock_and_unlock(&nodes[usize::from(round) % 3], pid(round + 1, 1)).await?;
        assert!(token > last, "token {token} after {last}");
        last = token;
    }
    let holder = pid(1, 9);
    let lock = Command::Lock {
        name: "l".into(),
        holder,
    };
    let Outcome::LockGranted { token } = nodes[0].propose(lock).await? else {
        return Err("lock not granted".into());
    };
    let contender = Command::Lock {
        name: "l".into(),
        holder: pid(2, 9),
    };
    assert_eq!(
        nodes[1].propose(contender).await?,
        Outcome::LockBusy { holder, token }
    );
    shutdown_all(&router, &nodes).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_proposals_share_entries_and_each_gets_its_outcome() -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let router = MemRouter::new();
    let nodes = start_all(&router, dir.path()).await?;
    let leader = agreed_leader(&all(&nodes)).await?;
    let follower = &nodes[(leader + 1) % 3];
    let mut applied = follower.watch_applied();
    let seen = *applied.borrow_and_update();
    let before = nodes[leader].store_stats();

    // 200 proposals at once, spread over the voters; every tenth name is contended.
    let mut tasks = Vec::new();
    for i in 0..200u64 {
        let node = nodes[(i % 3) as usize].clone();
        let name = if i % 10 == 0 {
            "shared".to_string()
        } else {
            format!("n{i}")
        };
        tasks.push(tokio::spawn(async move {
            node.propose(register(&name, pid(1, i))).await
        }));
    }
    let mut winners = 0;
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await?? {
            Outcome::Registered if i % 10 == 0 => winners += 1,
            Outcome::Registered => {}
            Outcome::NameTaken { .. } if i % 10 == 0 => {}
            other => return Err(format!("proposal {i}: unexpected {other:?}").into()),
        }
    }
    assert_eq!(winners, 1);
    let after = nodes[leader].store_stats();
    let entries = after.entries_appended - before.entries_appended;
    assert!(entries < 200, "{entries} entries for 200 proposals");
    assert!(after.durable_commits > before.durable_commits);

    // The follower's applied index moves, and its registry shows every name once it has.
    let target = nodes[leader].status().await.last_applied.unwrap_or(0);
    assert!(target > seen);
    tokio::time::timeout(Duration::from_secs(5), applied.wait_for(|i| *i >= target)).await??;
    assert_eq!(follower.names().len(), 181);
    shutdown_all(&router, &nodes).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_registrations_survive_losing_the_leader() -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let router = MemRouter::new();
    let nodes = start_all(&router, dir.path()).await?;
    let leader = agreed_leader(&all(&nodes)).await?;
    let old_leader = nodes[leader].id();
    let proposer = nodes[(leader + 1) % 3].clone();
    let other = nodes[(leader + 2) % 3].clone();

    let (acked_tx, mut acked_rx) = tokio::sync::mpsc::unbounded_channel();
    let stream = {
        let proposer = proposer.clone();
        tokio::spawn(async move {
            let mut failures = Vec::new();
            for i in 0..40u64 {
                let name = format!("s{i}");
                match proposer.propose(register(&name, pid(2, i))).await {
                    Ok(Outcome::Registered) => {
                        let _ = acked_tx.send(name);
                    }
                    Ok(other) => failures.push(format!("{name}: {other:?}")),
                    Err(e) => failures.push(format!("{name}: {e}")),
                }
            }
            failures
        })
    };
    let mut acked = Vec::new();
    while acked.len() < 10 {
        match acked_rx.recv().await {
            Some(name) => acked.push(name),
            None => return Err("the stream ended early".into()),
        }
    }
    router.isolate(old_leader);
    let acked_before_cut = acked.len();
    let failures = stream.await?;
    while let Some(name) = acked_rx.recv().await {
        acked.push(name);
    }
    assert!(
        acked.len() > acked_before_cut + 5,
        "few registrations after the cut: {} of 40; failures: {failures:?}",
        acked.len()
    );
    // Only errors whose outcome the contract allows: unknown, or no leader while electing.
    for f in &failures {
        assert!(
            f.contains("timed out") || f.contains("no raft leader") || f.contains("unreachable"),
            "{f}"
        );
    }
    let survivors = [&proposer, &other];
    let new_leader = survivors[agreed_leader(&survivors).await?].id();
    assert_ne!(new_leader, old_leader);
    for n in survivors {
        n.linearizable_read().await?;
        for name in &acked {
            assert!(n.whereis(name).is_some(), "{name} lost on {}", n.id());
        }
    }
    router.rejoin(old_leader);
    shutdown_all(&router, &nodes).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leaders_own_decision_is_not_carried_out_by_its_successor() -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let router = MemRouter::new();
    let nodes = start_all(&router, dir.path()).await?;
    let old = agreed_leader(&all(&nodes)).await?;
    // Cut off, the leader still leads in its own eyes and appends what it decides.
    router.isolate(nodes[old].id());
    // More decisions than can wait for a quorum at once: the later ones queue unappended.
    const DECIDED: u64 = 64;
    let decided: Vec<_> = (0..DECIDED)
        .map(|i| {
            let decider = nodes[old].clone();
            tokio::spawn(async move {
                decider
                    .propose_as_leader(register(&format!("stale-{i}"), pid(9, i)))
                    .await
            })
        })
        .collect();
    let others: Vec<&Handle> = (0..3).filter(|&i| i != old).map(|i| &nodes[i]).collect();
    let new = others[agreed_leader(&others).await?];
    assert_ne!(new.id(), nodes[old].id());
    // Back before its proposal timed out: it steps down, and the proposal fails rather
    // than being forwarded to the new leader.
    router.rejoin(nodes[old].id());
    for d in decided {
        let result = d.await?;
        assert!(result.is_err(), "{result:?}");
    }
    assert_eq!(
        new.propose(register("marker", pid(1, 2))).await?,
        Outcome::Registered
    );
    for n in &nodes {
        eventually(Duration::from_secs(5), "the marker everywhere", || async {
            n.whereis("marker").map(|_| ())
        })
        .await?;
        let applied: Vec<String> = (0..DECIDED)
            .map(|i| format!("stale-{i}"))
            .filter(|name| n.whereis(name).is_some())
            .collect();
        assert!(
            applied.is_empty(),
            "a deposed leader's decisions were applied on {}: {applied:?}",
            n.id()
        );
    }
    // A follower never proposes as leader.
    let follower = others.iter().find(|n| n.id() != new.id()).unwrap();
    assert!(matches!(
        follower.propose_as_leader(register("f", pid(2, 2))).await,
        Err(ConsensusError::NoLeader)
    ));
    shutdown_all(&router, &nodes).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_the_majority_fails_fast_with_a_typed_error() -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let router = MemRouter::new();
    let nodes = start_all(&router, dir.path()).await?;
    let leader = agreed_leader(&all(&nodes)).await?;
    let minority = &nodes[(leader + 1) % 3];
    router.isolate(minority.id());

    let started = Instant::now();
    let bound = Duration::from_secs(10);
    let result = tokio::time::timeout(bound, minority.propose(register("m", pid(3, 1)))).await?;
    assert!(
        matches!(
            result,
            Err(ConsensusError::NoLeader
                | ConsensusError::Timeout
                | ConsensusError::Unreachable { .. })
        ),
        "{result:?}"
    );
    let read = tokio::time::timeout(bound, minority.linearizable_read()).await?;
    assert!(read.is_err(), "{read:?}");
    assert!(started.elapsed() < bound);

    // The majority carries on.
    let majority = &nodes[(leader + 2) % 3];
    assert_eq!(
        majority.propose(register("m", pid(1, 1))).await?,
        Outcome::Registered
    );
    router.rejoin(minority.id());
    shutdown_all(&router, &nodes).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_restart_keeps_log_vote_and_registry() -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let (term, last_token) = {
        let router = MemRouter::new();
        let nodes = start_all(&router, dir.path()).await?;
        let leader = agreed_leader(&all(&nodes)).await?;
        for i in 0..5u64 {
            let node = &nodes[usize::try_from(i)? % 3];
            let outcome = node.propose(register(&format!("r{i}"), pid(1, i))).await?;
            assert_eq!(outcome, Outcome::Registered);
        }
        let token = lock_and_unlock(&nodes[0], pid(1, 100)).await?;
        let term = nodes[leader].status().await.term;
        shutdown_all(&router, &nodes).await?;
        (term, token)
    };

    let router = MemRouter::new();
    let nodes = start_all(&router, dir.path()).await?;
    agreed_leader(&all(&nodes)).await?;
    for n in &nodes {
        let status = n.status().await;
        assert!(
            status.term >= term,
            "term went back: {} < {term}",
            status.term
        );
        n.linearizable_read().await?;
        let names = n.names();
        for i in 0..5 {
            assert!(
                names.contains_key(&format!("r{i}")),
                "r{i} lost on {}",
                n.id()
            );
        }
    }
    let token = lock_and_unlock(&nodes[1], pid(2, 100)).await?;
    assert!(
        token > last_token,
        "token {token} after restart, was {last_token}"
    );
    shutdown_all(&router, &nodes).await
}
