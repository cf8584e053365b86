//! `clearbox`: an OCI runtime with the command line of runc.

mod cli;
mod commands;
mod logging;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let log_to_file = cli.global.log.is_some();
    if let Err(e) = logging::init(&cli.global) {
        eprintln!("clearbox: {e:#}");
        return ExitCode::from(1);
    }
    match commands::dispatch(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // One line on stderr; with --log, the same line as an error entry in the log,
            // where containerd's shim looks for it.
            let msg = format!("{e:#}");
            if log_to_file {
                tracing::error!("{msg}");
            }
            eprintln!("clearbox: {msg}");
            ExitCode::from(1)
        }
    }
}
