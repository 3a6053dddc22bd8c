//! The mixed workload over a range of seeds, every checker on every run:
//! `seeds [--nodes N] [--seeds S] [--first-seed F] [--seconds T]` (defaults 5 nodes,
//! 100 seeds from 0, 10 simulated seconds of workload each). Prints each failing seed with
//! its violations (replay one with `--first-seed <seed> --seeds 1`, or
//! `ATOLL_SIM_SEED=<seed>` in the test suite) and exits non-zero if any failed.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use atoll_sim::cluster::simulate;
use atoll_sim::workload::{WorkloadSpec, run};

fn main() -> ExitCode {
    let (mut nodes, mut seeds, mut first, mut seconds) = (5usize, 100u64, 0u64, 10u64);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().and_then(|v| v.parse::<u64>().ok());
        let Some(value) = value else {
            eprintln!("usage: seeds [--nodes N] [--seeds S] [--first-seed F] [--seconds T]");
            return ExitCode::from(2);
        };
        match flag.as_str() {
            "--nodes" => nodes = value as usize,
            "--seeds" => seeds = value,
            "--first-seed" => first = value,
            "--seconds" => seconds = value,
            other => {
                eprintln!("seeds: unknown flag {other}");
                return ExitCode::from(2);
            }
        }
    }
    let wall = Instant::now();
    let mut failed = Vec::new();
    let mut simulated = Duration::ZERO;
    for seed in first..first + seeds {
        let spec = WorkloadSpec {
            duration: Duration::from_secs(seconds),
            ..WorkloadSpec::new(nodes)
        };
        match simulate(|| run(seed, spec)) {
            Ok(report) => {
                simulated += report.sim_time;
                if !report.violations.is_empty() {
                    println!("seed {seed}: {} violations", report.violations.len());
                    for v in &report.violations {
                        println!("  {v}");
                    }
                    failed.push(seed);
                }
            }
            Err(e) => {
                println!("seed {seed}: the cluster did not start: {e}");
                failed.push(seed);
            }
        }
    }
    println!(
        "seeds {first}..{}: {} failed {failed:?}, {:.0} simulated s in {:.1} wall s",
        first + seeds,
        failed.len(),
        simulated.as_secs_f64(),
        wall.elapsed().as_secs_f64()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
