#![forbid(unsafe_code)]

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = safety_gate::cli::Cli::parse();
    safety_gate::cli::run(cli)
}
