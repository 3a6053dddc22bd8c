//! `atoll-chaos --minutes N --seed S`: real `atoll node` processes in network namespaces,
//! a seeded nemesis, a recorded workload and the history checkers. Needs root.
//!
//! Also, for its own use: `atoll-chaos __client --config FILE` (a client node in a
//! namespace) and `atoll-chaos __atoll ARGS` (the `atoll` command itself: the nodes run
//! as `atoll-chaos __atoll node --config FILE`, the code of `atoll node`).

use std::process::ExitCode;

use clap::Parser;

/// Chaos across real processes: five `atoll node` processes (three Raft voters) in network
/// namespaces, clients beside them registering names, taking locks that guard a fenced
/// resource and joining groups, while a nemesis driven by the seed kills, stops, partitions
/// and slows them. Checks the recorded history and ends with one `BENCH {...}` line; exits
/// 1 on any anomaly, 2 when it cannot run (not root, no `ip` or `nft`).
#[derive(Debug, Parser)]
#[command(name = "atoll-chaos", version)]
struct Args {
    /// Minutes of chaos (fractions allowed).
    #[arg(long, default_value_t = 1.0)]
    minutes: f64,
    /// The seed of the nemesis and the workload.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where to keep the run's files (default: a new directory under the temp dir, removed
    /// when the run finds nothing).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    match argv.get(1).map(String::as_str) {
        Some("__client") => {
            let Some(config) = argv.get(3).filter(|_| argv[2] == "--config") else {
                eprintln!("usage: atoll-chaos __client --config FILE");
                return ExitCode::from(2);
            };
            return match atoll_chaos::client::run(std::path::Path::new(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Some("__atoll") => {
            let cli = <atoll_cli::args::Cli as Parser>::parse_from(
                std::iter::once("atoll".to_string()).chain(argv[2..].iter().cloned()),
            );
            return match atoll_cli::run(cli) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(e.exit_code())
                }
            };
        }
        Some("__check") => {
            // Re-checks a saved history.json (the limits of a run) and sums it up again.
            let Some(path) = argv.get(2) else {
                eprintln!("usage: atoll-chaos __check HISTORY.json");
                return ExitCode::from(2);
            };
            let history: atoll_chaos::history::History = match std::fs::read(path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            {
                Ok(h) => h,
                Err(e) => {
                    eprintln!("error: {path}: {e}");
                    return ExitCode::from(2);
                }
            };
            let report =
                atoll_chaos::check::check_all(&history, &atoll_chaos::check::Limits::default());
            print_report(&history, &report);
            // The figures as the current rules count them, up to the workload's end.
            let rows = atoll_chaos::summary::per_kind(&history, history.workload_end_ms());
            print!("{}", atoll_chaos::summary::render(&rows));
            print_declarations(&history);
            println!("{} anomalies", report.anomalies.len());
            return if report.anomalies.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
        }
        _ => {}
    }
    let args = Args::parse();
    if !(args.minutes > 0.0 && args.minutes.is_finite()) {
        eprintln!("error: --minutes must be a positive number");
        return ExitCode::from(2);
    }
    let keep = args.dir.is_some();
    let opts = atoll_chaos::run::Options {
        minutes: args.minutes,
        seed: args.seed,
        dir: args.dir,
    };
    let result = match atoll_chaos::run::run(&opts) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            let code = match e {
                atoll_chaos::cluster::SetupError::NotRoot
                | atoll_chaos::cluster::SetupError::Missing(..) => 2,
                _ => 1,
            };
            return ExitCode::from(code);
        }
    };
    println!();
    print!("{}", result.summary);
    let writes = &result.history.writes;
    let refused = writes.iter().filter(|w| !w.accepted).count();
    println!(
        "fenced resource: {} writes offered, {refused} refused (tokens older than the newest accepted)",
        writes.len()
    );
    let asked: usize = result
        .history
        .faults
        .iter()
        .filter(|f| f.kind == "grain-move")
        .filter_map(|f| {
            f.detail
                .split("moved=")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .sum();
    println!(
        "grain migrations: {} counted by the nodes since they last started; {asked} moves asked by the nemesis completed (the others: rebalancing)",
        result.grain_migrations
    );
    print_declarations(&result.history);
    print_report(&result.history, &result.report);
    let clean = result.report.anomalies.is_empty();
    if clean && !keep {
        let _ = std::fs::remove_dir_all(&result.dir);
    } else {
        println!("history and logs: {}", result.dir.display());
    }
    println!("{}", result.bench);
    if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Prints inconclusive names and each anomaly with its history excerpt.
fn print_report(history: &atoll_chaos::history::History, report: &atoll_chaos::check::Report) {
    for name in &report.inconclusive {
        println!("inconclusive: the linearizability search for name {name:?} ran out of budget");
    }
    for anomaly in &report.anomalies {
        println!("ANOMALY {anomaly}");
        for line in atoll_chaos::run::excerpt(history, anomaly).iter().take(20) {
            println!("  {line}");
        }
    }
}

fn print_declarations(history: &atoll_chaos::history::History) {
    let (declared, unexplained) = atoll_chaos::summary::declarations(history);
    println!(
        "clients declared unreachable: {declared} times, {unexplained} of them while no fault touched that client or the node that declared it"
    );
}
