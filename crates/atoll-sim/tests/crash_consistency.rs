//! Crash-consistency with whole nodes: a Raft voter whose disk crashes at a sync (before
//! it, after it, or torn in the middle) during a stream of Consistent registrations, then
//! restarts on the same disk. Every registration that was acknowledged is found on every
//! node, the restarted voter included, and it catches up with the leader.

use std::time::Duration;

use atoll_actor::{Actor, ActorResult, Ctx};
use atoll_core::Scope;
use atoll_raft::Failpoint;
use atoll_sim::cluster::{ClusterSpec, SimCluster, check_seeds};

struct Idle;

impl Actor for Idle {
    type Msg = ();
    async fn handle(&mut self, _: (), _: &mut Ctx<Self>) -> ActorResult {
        Ok(())
    }
}

/// The node registrations go through: not a voter.
const CLIENT: usize = 3;

fn crash_a_voter(failpoint: Failpoint, leader: bool) {
    check_seeds(0..2, |seed| async move {
        let mut sim = SimCluster::start(seed, ClusterSpec::new(4)).unwrap();
        assert!(
            sim.wait_until(Duration::from_secs(30), |s| s.converged())
                .await
        );
        let mut lead = None;
        for _ in 0..300 {
            lead = sim.leader().await;
            if lead.is_some() {
                break;
            }
            sim.run_for(Duration::from_millis(100)).await;
        }
        let lead = sim.index_of(lead.expect("a leader")).unwrap();
        let victim = if leader { lead } else { (lead + 1) % 3 };
        let pid = sim.node(CLIENT).unwrap().runtime().spawn(Idle).pid();
        sim.disk(victim).arm(failpoint, 4);
        let mut acked = Vec::new();
        let mut restarted = false;
        for i in 0..40 {
            let name = format!("r{i}");
            let client = sim.node(CLIENT).unwrap();
            if client.register(&name, pid, Scope::Consistent).await.is_ok() {
                acked.push(name);
            }
            if !restarted && sim.disk(victim).tripped() > 0 {
                sim.crash(victim).await;
                sim.run_for(Duration::from_millis(500)).await;
                sim.restart(victim).unwrap();
                restarted = true;
            }
        }
        assert!(restarted, "the failpoint never fired");
        assert!(
            acked.len() >= 20,
            "too few registrations went through: {}",
            acked.len()
        );
        assert!(
            sim.wait_until(Duration::from_secs(60), |s| {
                (0..4).all(|i| {
                    let n = s.node(i).unwrap();
                    acked.iter().all(|name| n.whereis(name) == Some(pid))
                })
            })
            .await,
            "an acknowledged registration is missing somewhere ({} acknowledged)",
            acked.len()
        );
        // The restarted voter has caught up with the others.
        let mut caught_up = false;
        for _ in 0..300 {
            let mut applied = Vec::new();
            for i in 0..3 {
                applied.push(
                    sim.node(i)
                        .unwrap()
                        .raft_status()
                        .await
                        .and_then(|s| s.last_applied),
                );
            }
            if applied.iter().all(|a| a.is_some() && *a == applied[0]) {
                caught_up = true;
                break;
            }
            sim.run_for(Duration::from_millis(100)).await;
        }
        assert!(caught_up, "the restarted voter did not catch up");
        sim.shutdown().await;
    });
}

#[test]
fn a_leader_crashed_before_a_sync_loses_no_acknowledged_registration() {
    crash_a_voter(Failpoint::CrashBeforeSync, true);
}

#[test]
fn a_follower_crashed_before_a_sync_loses_no_acknowledged_registration() {
    crash_a_voter(Failpoint::CrashBeforeSync, false);
}

#[test]
fn a_leader_crashed_after_a_sync_loses_no_acknowledged_registration() {
    crash_a_voter(Failpoint::CrashAfterSync, true);
}

#[test]
fn a_follower_crashed_after_a_sync_loses_no_acknowledged_registration() {
    crash_a_voter(Failpoint::CrashAfterSync, false);
}

#[test]
fn a_leader_with_a_torn_batch_loses_no_acknowledged_registration() {
    crash_a_voter(Failpoint::TornSync { seed: 7 }, true);
}

#[test]
fn a_follower_with_a_torn_batch_loses_no_acknowledged_registration() {
    crash_a_voter(Failpoint::TornSync { seed: 11 }, false);
}
