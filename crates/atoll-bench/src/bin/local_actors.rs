//! In-process actor benchmark: atoll next to ractor and kameo.
//!
//! Usage: `cargo run --release -p atoll-bench --bin local_actors [-- --quick]`.
//!
//! Without `--system`, this process re-executes itself once per system (atoll,
//! ractor, kameo, in that order) with `--system NAME`, so that every system's
//! memory is measured in a fresh process. It forwards each child's output,
//! then prints a comparison table and, as the last lines, the three `BENCH`
//! lines. With `--system NAME` it runs that one system's workloads on a
//! multi-threaded tokio runtime and prints its `BENCH` line last.
//!
//! `--quick` shrinks every workload (the whole run takes well under a minute).

use std::io::{BufRead, BufReader};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use atoll_bench::local::{atoll_sys, kameo_sys, ractor_sys};
use atoll_bench::{Config, bench_line, comparison_report, parse_bench_line};

/// An actor system under comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum System {
    /// The system under test, compared against the others.
    Atoll,
    /// ractor 0.16.
    Ractor,
    /// kameo 0.22.
    Kameo,
}

impl System {
    /// Every system, in the order they run.
    const ALL: [Self; 3] = [Self::Atoll, Self::Ractor, Self::Kameo];

    /// The name used on the command line and in `BENCH` lines.
    fn name(self) -> &'static str {
        match self {
            Self::Atoll => "atoll",
            Self::Ractor => "ractor",
            Self::Kameo => "kameo",
        }
    }

    /// The system called `name`, if any.
    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|system| system.name() == name)
    }
}

/// What the command line asks for.
#[derive(Debug)]
struct Args {
    /// Reduced workload sizes.
    quick: bool,
    /// Run this one system in this process (child mode).
    system: Option<System>,
}

/// Reads the command line; an error message for anything not understood.
fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        quick: false,
        system: None,
    };
    let mut argv = std::env::args().skip(1);
    while let Some(arg) = argv.next() {
        match arg.as_str() {
            "--quick" => args.quick = true,
            "--system" => {
                let name = argv.next().ok_or("--system needs a name")?;
                let system =
                    System::from_name(&name).ok_or_else(|| format!("unknown system {name:?}"))?;
                args.system = Some(system);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("local_actors: {message}");
            eprintln!("usage: local_actors [--quick] [--system atoll|ractor|kameo]");
            return ExitCode::from(2);
        }
    };
    let cfg = Config::new(args.quick);
    match args.system {
        Some(system) => run_child(system, cfg),
        None => run_parent(cfg),
    }
}

/// Child mode: runs `system`'s workloads and prints its figures, `BENCH` line last.
fn run_child(system: System, cfg: Config) -> ExitCode {
    let name = system.name();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_time()
        .build()
        .expect("build the tokio runtime");
    println!(
        "tokio runtime: {} worker threads",
        runtime.metrics().num_workers()
    );
    let mode = if cfg.quick { "quick" } else { "full" };
    println!("running {name} ({mode})");

    let started = Instant::now();
    // Run on a worker thread like any actor code, not on the thread blocking on the runtime.
    let figures = runtime.block_on(async move {
        match system {
            System::Atoll => tokio::spawn(async move { atoll_sys::run(&cfg).await }).await,
            System::Ractor => tokio::spawn(async move { ractor_sys::run(&cfg).await }).await,
            System::Kameo => tokio::spawn(async move { kameo_sys::run(&cfg).await }).await,
        }
    });
    let figures = match figures {
        Ok(figures) => figures,
        Err(error) => {
            eprintln!("local_actors: {name} workloads failed: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!("{name} figures:\n{}", figures.describe());
    println!("{name} took {:.1} s", started.elapsed().as_secs_f64());
    println!("{}", bench_line(name, &figures));
    ExitCode::SUCCESS
}

/// Parent mode: runs every system in a child process and compares them.
fn run_parent(cfg: Config) -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(error) => {
            eprintln!("local_actors: cannot locate own executable: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut results = Vec::new();
    let mut bench_lines = Vec::new();
    let mut failures = Vec::new();
    for system in System::ALL.map(System::name) {
        println!("=== {system} ===");
        let mut command = Command::new(&exe);
        command.args(["--system", system]);
        if cfg.quick {
            command.arg("--quick");
        }
        match run_one(&mut command) {
            Ok(line) => match parse_bench_line(&line) {
                Some((name, figures)) if name == system => {
                    results.push((name, figures));
                    bench_lines.push(line);
                }
                _ => failures.push(format!("{system}: unreadable BENCH line {line:?}")),
            },
            Err(error) => failures.push(format!("{system}: {error}")),
        }
    }
    if !failures.is_empty() {
        for failure in &failures {
            eprintln!("local_actors: {failure}");
        }
        return ExitCode::FAILURE;
    }

    println!("\n=== comparison ===");
    print!("{}", comparison_report(&results, System::Atoll.name()));
    println!();
    for line in bench_lines {
        println!("{line}");
    }
    ExitCode::SUCCESS
}

/// Runs a child, forwarding its standard output line by line, and returns its
/// last `BENCH` line; an error if it cannot run, fails, or prints no such line.
fn run_one(command: &mut Command) -> Result<String, String> {
    let started = Instant::now();
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|error| format!("cannot start child: {error}"))?;
    let stdout = child.stdout.take().expect("child stdout is piped");
    let mut bench = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|error| format!("reading child output: {error}"))?;
        println!("{line}");
        if line.starts_with("BENCH ") {
            bench = Some(line);
        }
    }
    let status = child
        .wait()
        .map_err(|error| format!("waiting for child: {error}"))?;
    println!(
        "(child finished in {:.1} s, {status})",
        started.elapsed().as_secs_f64()
    );
    if !status.success() {
        return Err(format!("child failed ({status})"));
    }
    bench.ok_or_else(|| "child printed no BENCH line".to_owned())
}
