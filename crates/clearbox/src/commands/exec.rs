//! `clearbox exec`: run a process in a container; without `--detach`, wait for it and exit with
//! its code.

use anyhow::Result;
use clearbox_core::foreground::SignalGuard;
use clearbox_core::runtime::ExecArgs;
use clearbox_core::Runtime;

use super::exit_byte;
use crate::console::ConsoleListener;

pub fn run(rt: &Runtime<'_>, a: liboci_cli::Exec) -> Result<u8> {
    // A foreground terminal without a console socket: clearbox makes the pty, as runc does.
    let console = if !a.detach && a.console_socket.is_none() && wants_terminal(&a) {
        Some(ConsoleListener::new()?)
    } else {
        None
    };
    let console_socket = a
        .console_socket
        .clone()
        .or_else(|| console.as_ref().map(|c| c.path().to_path_buf()));
    let args = ExecArgs {
        id: a.container_id,
        process_file: a.process,
        args: a.command,
        env: a.env,
        cwd: a.cwd,
        user: a.user,
        additional_gids: a.additional_gids,
        tty: a.tty,
        caps: a.cap,
        no_new_privs: a.no_new_privs,
        apparmor: a.apparmor,
        console_socket,
        pid_file: a.pid_file,
        detach: a.detach,
        preserve_fds: a.preserve_fds,
        ignore_paused: a.ignore_paused,
        cgroup: a.cgroup,
    };
    let pid = rt.exec(&args)?;
    if args.detach {
        return Ok(0);
    }
    let relay = console.map(|c| c.relay()).transpose()?;
    let guard = SignalGuard::block()?;
    let code = guard.wait(pid);
    drop(guard);
    if let Some(r) = relay {
        r.finish();
    }
    Ok(exit_byte(code?))
}

/// `--tty`, or `terminal: true` in the `--process` file.
fn wants_terminal(a: &liboci_cli::Exec) -> bool {
    a.tty
        || a.process.as_ref().is_some_and(|f| {
            std::fs::read(f)
                .ok()
                .and_then(|t| serde_json::from_slice::<serde_json::Value>(&t).ok())
                .and_then(|v| v.pointer("/terminal").and_then(|t| t.as_bool()))
                .unwrap_or(false)
        })
}
