//! A seed replays: two runs of one seed, each on a fresh runtime, have the same trace (every
//! connection, stream write and datagram of five whole nodes, with its time and a hash of
//! its bytes) and the same history (what the workload saw the nodes do: lock holds and
//! fencing tokens, registrations, claims, group views, calls, watches, membership
//! sightings, with the pids' incarnations).

use std::time::Duration;

use atoll_sim::cluster::simulate;
use atoll_sim::workload::{Report, WorkloadSpec, run};

fn once(seed: u64, duration: Duration) -> Report {
    let spec = WorkloadSpec {
        duration,
        keep_trace_log: true,
        ..WorkloadSpec::new(5)
    };
    simulate(|| run(seed, spec)).unwrap()
}

fn first_difference(a: &Report, b: &Report) -> String {
    let at = a
        .trace_log
        .iter()
        .zip(&b.trace_log)
        .position(|(x, y)| x != y)
        .unwrap_or(a.trace_log.len().min(b.trace_log.len()));
    let show = |r: &Report| {
        r.trace_log[at.saturating_sub(3)..(at + 3).min(r.trace_log.len())]
            .iter()
            .map(|e| format!("{:>12} {:?}", e.at, e.words))
            .collect::<Vec<_>>()
            .join("\n")
    };
    format!(
        "the runs part at event {at} of {}/{}:\n{}\n--- vs ---\n{}",
        a.trace_log.len(),
        b.trace_log.len(),
        show(a),
        show(b)
    )
}

#[test]
fn a_seed_replays_to_the_same_trace() {
    let seed = std::env::var("ATOLL_SIM_SEED")
        .map(|s| s.parse().expect("a number"))
        .unwrap_or(7);
    let a = once(seed, Duration::from_secs(10));
    let b = once(seed, Duration::from_secs(10));
    assert!(
        a.trace_hash == b.trace_hash,
        "seed {seed}: {}",
        first_difference(&a, &b)
    );
    assert_eq!((a.ops, a.faults), (b.ops, b.faults), "seed {seed}");
    assert_eq!(
        format!("{:?}", a.history),
        format!("{:?}", b.history),
        "seed {seed}: the same trace, another history"
    );
    assert!(a.ops > 0 && a.faults > 0, "the run did something");
    let c = once(seed + 1, Duration::from_secs(10));
    assert_ne!(a.trace_hash, c.trace_hash, "another seed, another trace");
}
