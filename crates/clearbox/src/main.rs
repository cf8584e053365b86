//! `clearbox`: an OCI runtime with the command line of runc.

mod cli;
mod commands;
mod console;
mod logging;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Rust ignores SIGPIPE at start-up; ignored dispositions survive exec, so every container
    // process would inherit it. Restore the default, as runc's processes have it (and a closed
    // stdout then ends clearbox quietly instead of panicking).
    // SAFETY: called first thing in main, before any thread exists; SIG_DFL is a valid handler.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let mut cli = match cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            // Usage errors in one line, like every other error, with runc's exit statuses.
            let (msg, code) = usage_error(&e);
            eprintln!("clearbox: {msg}");
            return ExitCode::from(code);
        }
    };
    // A relative --root is taken from the working directory once, here, as runc does: the
    // helper processes that keep a container (the VM shim) do not run from it.
    match std::path::absolute(&cli.global.root) {
        Ok(root) => cli.global.root = root,
        Err(e) => {
            eprintln!("clearbox: --root {}: {e}", cli.global.root.display());
            return ExitCode::from(1);
        }
    }
    // Commands that make a process enter a container run from a read-only view of this binary,
    // so that the container cannot overwrite it through /proc/PID/exe (CVE-2019-5736; see
    // clearbox_core::exe_seal). Refused, as runc refuses, when that view cannot be made.
    if matches!(
        cli.command,
        cli::Command::Create(_)
            | cli::Command::Run(_)
            | cli::Command::Exec(_)
            | cli::Command::Image(_)
    ) {
        if let Err(e) = clearbox_core::exe_seal::ensure_sealed() {
            eprintln!("clearbox: {:#}", anyhow::Error::from(e));
            return ExitCode::from(1);
        }
    }
    let log_to_file = cli.global.log.is_some();
    // runc exits 255 when exec fails (the exec'd process's own code otherwise).
    let failure = if matches!(cli.command, cli::Command::Exec(_)) {
        255
    } else {
        1
    };
    if let Err(e) = logging::init(&cli.global) {
        eprintln!("clearbox: {e:#}");
        return ExitCode::from(1);
    }
    tracing::debug!(
        "clearbox {} {}",
        env!("CARGO_PKG_VERSION"),
        std::env::args().skip(1).collect::<Vec<_>>().join(" ")
    );
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
            // A create undone because of a termination signal ends with that signal, as the
            // signal's default action would have ended it (minus what it would have left).
            // (Also a create that failed otherwise while such a signal was caught.)
            let interrupted = e.chain().find_map(|c| match c.downcast_ref() {
                Some(clearbox_core::Error::Interrupted(sig)) => Some(*sig),
                _ => None,
            });
            if let Some(sig) = interrupted.or_else(clearbox_util::interrupt::caught) {
                clearbox_util::interrupt::reraise(sig);
            }
            ExitCode::from(failure)
        }
    }
}

/// A command-line error as runc reports it: an unknown command is "No help topic for 'X'" with
/// status 3 (urfave/cli's), every other usage error status 1.
fn usage_error(e: &clap::Error) -> (String, u8) {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if e.kind() == ErrorKind::InvalidSubcommand {
        if let Some(ContextValue::String(name)) = e.get(ContextKind::InvalidSubcommand) {
            return (format!("No help topic for '{name}'"), 3);
        }
    }
    let text = e.render().to_string();
    let first = text.lines().next().unwrap_or("invalid arguments");
    (first.trim_start_matches("error: ").to_string(), 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn usage(args: &[&str]) -> (String, u8) {
        let e = cli::Cli::try_parse_from(args).expect_err("a usage error");
        usage_error(&e)
    }

    #[test]
    fn usage_errors_have_runc_statuses() {
        assert_eq!(
            usage(&["clearbox", "nosuch"]),
            ("No help topic for 'nosuch'".to_string(), 3)
        );
        assert_eq!(usage(&["clearbox", "nosuch", "x"]).1, 3);
        let (msg, code) = usage(&["clearbox", "start"]);
        assert_eq!(code, 1, "{msg}");
        assert_eq!(usage(&["clearbox", "kill", "--bogus", "x"]).1, 1);
        assert_eq!(usage(&["clearbox", "--bogus"]).1, 1);
    }
}
