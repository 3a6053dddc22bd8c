//! SWIM dissemination in the simulator: `swim_sim --nodes N[,M...]` (default `100,500`).
//!
//! For each cluster size: form the cluster, then measure in protocol periods how long until
//! every node knows of a join and of a crash, the datagrams each node sends per period in
//! steady state, and the time until the crash is first declared. Simulated time (tokio's
//! paused clock, seeded), so figures are exact and repeatable; real time is printed too.
//! Dissemination should grow like log N: the `ln N` column is there to compare against.

use std::time::{Duration, Instant};

use atoll_sim::Sim;
use atoll_swim::{MemberEvent, MemberState, SwimConfig};

struct Figures {
    nodes: usize,
    form_s: f64,
    periods_join_all: f64,
    periods_failure_all: f64,
    msgs_per_node_per_period: f64,
    detect_ms: u128,
}

async fn measure(nodes: usize, seed: u64) -> Figures {
    let config = SwimConfig::for_cluster_size(nodes);
    let period = config.probe_interval;
    let mut sim = Sim::new(seed, config.clone());
    let first = sim.add_node(&[]);
    for _ in 1..nodes {
        sim.add_node(&[first]);
    }
    let formed = sim
        .wait_until(Duration::from_secs(600), |s| s.converged())
        .await;
    assert!(formed, "{nodes} nodes did not converge (seed {seed})");
    let form_s = sim.elapsed().as_secs_f64();

    // Steady state: datagrams per node per period over 20 periods.
    let before = sim.network().stats().sent;
    let _ = sim.wait_until(period * 20, |_| false).await;
    let sent = sim.network().stats().sent - before;
    let msgs_per_node_per_period = sent as f64 / nodes as f64 / 20.0;

    // A join: periods until every node holds the newcomer live.
    let joined_at = sim.elapsed();
    let newcomer = sim.add_node(&[first]);
    let id = sim.nodes()[newcomer].id;
    let everyone_knows = |s: &Sim| {
        (0..s.nodes().len())
            .filter(|i| *i != newcomer && s.is_up(*i))
            .all(|i| {
                s.swim(i)
                    .and_then(|w| w.member(id))
                    .is_some_and(|m| m.state.is_live())
            })
    };
    assert!(
        sim.wait_until(Duration::from_secs(120), everyone_knows)
            .await
    );
    let periods_join_all = (sim.elapsed() - joined_at).as_secs_f64() / period.as_secs_f64();

    // A crash: periods until every node holds it unreachable; first declaration time.
    let victim = 1 + (sim.random() as usize % (nodes - 1));
    let victim_id = sim.nodes()[victim].id;
    let crashed_at = sim.elapsed();
    sim.crash(victim);
    let everyone_down = |s: &Sim| {
        (0..s.nodes().len()).filter(|i| s.is_up(*i)).all(|i| {
            s.swim(i)
                .and_then(|w| w.member(victim_id))
                .is_some_and(|m| m.state == MemberState::Unreachable)
        })
    };
    assert!(
        sim.wait_until(Duration::from_secs(120), everyone_down)
            .await
    );
    let periods_failure_all = (sim.elapsed() - crashed_at).as_secs_f64() / period.as_secs_f64();
    let first_verdict = (0..sim.nodes().len())
        .filter_map(|i| {
            sim.events(i).into_iter().find_map(|(t, e)| match e {
                MemberEvent::Unreachable(m) if m.node == victim_id => Some(t),
                _ => None,
            })
        })
        .min()
        .expect("someone declared the crash");
    Figures {
        nodes,
        form_s,
        periods_join_all,
        periods_failure_all,
        msgs_per_node_per_period,
        detect_ms: (first_verdict - crashed_at).as_millis(),
    }
}

fn main() {
    let mut sizes = vec![100, 500];
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--nodes" => {
                let list = args.next().expect("--nodes N[,M...]");
                sizes = list
                    .split(',')
                    .map(|n| n.trim().parse().expect("--nodes takes numbers"))
                    .collect();
            }
            other => panic!("unknown argument {other}; usage: swim_sim [--nodes N[,M...]]"),
        }
    }
    let defaults = SwimConfig::default();
    println!(
        "swim_sim: simulated cluster, probe {:?}, ping timeout {:?}, suspect {:?}, {} witnesses",
        defaults.probe_interval,
        defaults.ping_timeout,
        defaults.suspect_timeout,
        defaults.indirect_probes
    );
    println!(
        "{:>6} {:>6} {:>10} {:>12} {:>14} {:>14} {:>10} {:>8}",
        "nodes",
        "ln N",
        "form s",
        "join periods",
        "crash periods",
        "msgs/node/per",
        "detect ms",
        "real s"
    );
    let mut lines = Vec::new();
    for nodes in sizes {
        assert!(nodes >= 3, "--nodes needs at least 3");
        let started = Instant::now();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime");
        let f = rt.block_on(measure(nodes, 42));
        println!(
            "{:>6} {:>6.2} {:>10.1} {:>12.2} {:>14.2} {:>14.2} {:>10} {:>8.1}",
            f.nodes,
            (f.nodes as f64).ln(),
            f.form_s,
            f.periods_join_all,
            f.periods_failure_all,
            f.msgs_per_node_per_period,
            f.detect_ms,
            started.elapsed().as_secs_f64()
        );
        lines.push(format!(
            "BENCH {{\"bench\":\"swim_sim\",\"nodes\":{},\"periods_join_all\":{:.2},\"periods_failure_all\":{:.2},\"msgs_per_node_per_period\":{:.2},\"detect_ms\":{}}}",
            f.nodes, f.periods_join_all, f.periods_failure_all, f.msgs_per_node_per_period, f.detect_ms
        ));
    }
    for l in lines {
        println!("{l}");
    }
}
