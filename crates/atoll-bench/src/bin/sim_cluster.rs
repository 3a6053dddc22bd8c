//! Whole nodes in the simulator under faults: `sim_cluster --nodes N --seeds S [--seconds T]`
//! (defaults 5 nodes, 100 seeds, 20 simulated seconds of workload per seed).
//!
//! Every seed runs the mixed workload of `atoll_sim::workload` (lock cycles written to a
//! fenced resource, Consistent registrations, Eventual claims, group joins and exits,
//! calls) on a fresh cluster of production nodes over the in-memory network, with
//! partitions, one-way blocks, crashes with restarts and datagram loss, then checks the
//! history. Prints each failing seed, the simulated-to-wall time ratio and the seeds per
//! minute, and ends with one `BENCH` line. Exits non-zero on any violation.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use atoll_sim::cluster::simulate;
use atoll_sim::workload::{WorkloadSpec, run};

struct Args {
    nodes: usize,
    seeds: u64,
    first_seed: u64,
    seconds: u64,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        nodes: 5,
        seeds: 100,
        first_seed: 0,
        seconds: 20,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| -> Result<u64, String> {
            it.next()
                .ok_or(format!("{name} needs a value"))?
                .parse()
                .map_err(|e| format!("{name}: {e}"))
        };
        match flag.as_str() {
            "--nodes" => args.nodes = value("--nodes")? as usize,
            "--seeds" => args.seeds = value("--seeds")?,
            "--first-seed" => args.first_seed = value("--first-seed")?,
            "--seconds" => args.seconds = value("--seconds")?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.nodes < 3 {
        return Err("--nodes must be at least 3 (three voters)".into());
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("sim_cluster: {e}");
            return ExitCode::from(2);
        }
    };
    let wall = Instant::now();
    let mut simulated = Duration::ZERO;
    let (mut ops, mut faults, mut violations) = (0u64, 0u64, 0usize);
    for seed in args.first_seed..args.first_seed + args.seeds {
        let spec = WorkloadSpec {
            nodes: args.nodes,
            duration: Duration::from_secs(args.seconds),
            ..WorkloadSpec::new(args.nodes)
        };
        let report = match simulate(|| run(seed, spec)) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("seed {seed}: the cluster did not start: {e}");
                return ExitCode::FAILURE;
            }
        };
        simulated += report.sim_time;
        ops += report.ops;
        faults += report.faults;
        if !report.violations.is_empty() {
            violations += report.violations.len();
            println!("seed {seed}: {} violations", report.violations.len());
            for v in &report.violations {
                println!("  {v}");
            }
        }
    }
    let wall_s = wall.elapsed().as_secs_f64();
    let ratio = simulated.as_secs_f64() / wall_s;
    let per_minute = args.seeds as f64 / wall_s * 60.0;
    println!(
        "{} seeds x {} nodes: {:.0} simulated s in {:.1} wall s ({ratio:.0} sim s per wall s, {per_minute:.1} seeds/min), {ops} operations, {faults} faults, {violations} violations",
        args.seeds,
        args.nodes,
        simulated.as_secs_f64(),
        wall_s
    );
    println!(
        "BENCH {{\"bench\":\"sim_cluster\",\"nodes\":{},\"seeds\":{},\"sim_seconds_per_wall_second\":{ratio:.1},\"seeds_per_minute\":{per_minute:.1},\"operations\":{ops},\"faults\":{faults},\"violations\":{violations}}}",
        args.nodes, args.seeds
    );
    if violations > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
