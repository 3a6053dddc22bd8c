//! Random sequences of links, monitors, traps and exits keep the runtime's invariants.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atoll_actor::{ActorRef, ExitReason, MonitorRef, Pid, Runtime};
use common::*;
use proptest::prelude::*;
use tokio::sync::mpsc;

const N: usize = 6;

#[derive(Debug, Clone)]
enum Op {
    Link(usize, usize),
    Unlink(usize, usize),
    Monitor(usize, usize),
    Trap(usize, bool),
    Fail(usize),
    StopNormal(usize),
    Kill(usize),
    Signal(usize, u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..N, 0..N).prop_map(|(a, b)| Op::Link(a, b)),
        1 => (0..N, 0..N).prop_map(|(a, b)| Op::Unlink(a, b)),
        3 => (0..N, 0..N).prop_map(|(a, b)| Op::Monitor(a, b)),
        2 => (0..N, any::<bool>()).prop_map(|(a, t)| Op::Trap(a, t)),
        2 => (0..N).prop_map(Op::Fail),
        1 => (0..N).prop_map(Op::StopNormal),
        1 => (0..N).prop_map(Op::Kill),
        1 => (0..N, 0..3u8).prop_map(|(a, r)| Op::Signal(a, r)),
    ]
}

fn signal_reason(r: u8) -> ExitReason {
    match r {
        0 => ExitReason::Normal,
        1 => ExitReason::Shutdown,
        _ => ExitReason::error("signalled"),
    }
}

/// Lets every task run until nothing is left to do (the paused clock only advances then).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

async fn run_case(ops: Vec<Op>, traps: Vec<bool>) {
    let rt = Runtime::new();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let exits: Arc<Mutex<HashMap<Pid, ExitReason>>> = Arc::default();
    let probes: Vec<ActorRef<Probe>> = (0..N)
        .map(|i| {
            let p = Probe::new(&format!("p{i}"), &tx);
            let p = if traps[i] { p.trapping() } else { p };
            let r = rt.spawn(p);
            let exit = rt.wait_exit(r.pid());
            let exits = exits.clone();
            let pid = r.pid();
            tokio::spawn(async move {
                let reason = exit.await;
                exits.lock().unwrap().insert(pid, reason);
            });
            r
        })
        .collect();
    let pids: Vec<Pid> = probes.iter().map(|p| p.pid()).collect();
    let label_of = |l: &str| pids[l[1..].parse::<usize>().unwrap()];
    let mut monitors: Vec<(Pid, Pid, MonitorRef)> = Vec::new();

    for op in ops {
        match op {
            Op::Link(a, b) => drop(probes[a].send(Cmd::Link(pids[b]))),
            Op::Unlink(a, b) => drop(probes[a].send(Cmd::Unlink(pids[b]))),
            Op::Monitor(a, b) => {
                if let Ok(m) = probes[a].call(|r| Cmd::Monitor(pids[b], r), DEADLINE).await {
                    monitors.push((pids[a], pids[b], m));
                }
            }
            Op::Trap(a, on) => drop(probes[a].send(Cmd::Trap(on))),
            Op::Fail(a) => drop(probes[a].send(Cmd::Fail(format!("fail{a}")))),
            Op::StopNormal(a) => drop(probes[a].send(Cmd::Stop(ExitReason::Normal))),
            Op::Kill(a) => rt.kill(pids[a]),
            Op::Signal(a, r) => rt.exit(pids[a], signal_reason(r)),
        }
        settle().await;
    }
    settle().await;

    let exits = exits.lock().unwrap().clone();
    let alive: HashSet<Pid> = pids
        .iter()
        .copied()
        .filter(|p| !exits.contains_key(p))
        .collect();

    // The process table holds exactly the live processes.
    let listed: HashSet<Pid> = rt.processes().iter().map(|i| i.pid).collect();
    assert_eq!(listed, alive);

    // Links among live processes point to live processes and are symmetric.
    for info in rt.processes() {
        for l in &info.links {
            assert!(alive.contains(l), "{} linked to dead {l}", info.pid);
            let other = rt.process_info(*l).unwrap();
            assert!(
                other.links.contains(&info.pid),
                "link {} - {l} is one-sided",
                info.pid
            );
        }
    }

    // Exit reasons are the ones their causes give.
    for (pid, reason) in &exits {
        let ok = matches!(
            reason,
            ExitReason::Normal
                | ExitReason::Shutdown
                | ExitReason::Killed
                | ExitReason::NoProc
                | ExitReason::Error(_)
        );
        assert!(ok, "{pid} exited with {reason}");
    }

    // Notifications agree with what happened.
    let mut downs: HashMap<MonitorRef, usize> = HashMap::new();
    while let Ok(e) = rx.try_recv() {
        match e {
            Event::Down { down, .. } => {
                *downs.entry(down.monitor).or_default() += 1;
                match exits.get(&down.pid) {
                    Some(r) => assert!(
                        *r == down.reason || down.reason == ExitReason::NoProc,
                        "Down says {} but {} exited with {r}",
                        down.reason,
                        down.pid
                    ),
                    None => panic!("Down for live {}", down.pid),
                }
            }
            Event::Exit { from, reason, .. } if from != rt.node_pid() => match exits.get(&from) {
                Some(r) => assert!(*r == reason || reason == ExitReason::NoProc),
                None => panic!("exit signal from live {from}"),
            },
            Event::Stopped(label, reason) => {
                assert_eq!(exits.get(&label_of(&label)), Some(&reason));
            }
            _ => {}
        }
    }
    for (watcher, target, m) in monitors {
        let fired = downs.get(&m).copied().unwrap_or(0);
        assert!(fired <= 1, "monitor fired {fired} times");
        if alive.contains(&watcher) && !alive.contains(&target) {
            assert_eq!(fired, 1, "live {watcher} missed the Down of {target}");
        }
        if alive.contains(&target) {
            assert_eq!(fired, 0);
        }
    }

    rt.shutdown(Duration::from_secs(1)).await;
    assert_eq!(rt.process_count(), 0);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn random_link_monitor_exit_sequences_keep_the_invariants(
        ops in prop::collection::vec(op(), 1..30),
        traps in prop::collection::vec(any::<bool>(), N),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(run_case(ops, traps));
    }
}
