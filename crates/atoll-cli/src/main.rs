//! `atoll`: see `atoll --help`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = atoll_cli::args::Cli::parse();
    match atoll_cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("atoll: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
