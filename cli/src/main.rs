//! The `ringkv` binary: parse, log, run, exit with a code that tells the outcome.

use std::process::ExitCode;

use clap::Parser;
use ringkv::args::Cli;

fn main() -> ExitCode {
    // Clap exits 2 on a usage error and 0 for --help and --version.
    let cli = Cli::parse();
    ringkv::logging::init(cli.verbose);
    ringkv::cmd::run(&cli.command).into()
}
