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
    if args.detach {
        rt.exec(&args)?;
        return Ok(0);
    }
    // As runc's: a termination signal (HUP, INT, TERM) that comes while the process is set up
    // (a VM container's exec goes through its agent: tens of milliseconds) neither ends
    // clearbox, leaving the process to run unattended, nor is lost: it is caught and passed
    // on to the process once it exists.
    let armed = clearbox_util::interrupt::Armed::arm()?;
    let pid = rt.exec(&args)?;
    let relay = console.map(|c| c.relay()).transpose()?;
    // Blocked before the handlers go: a signal from now on waits for `wait`, which forwards it.
    let guard = SignalGuard::block()?;
    let caught = armed.caught();
    drop(armed);
    if let Some(sig) = caught {
        // SAFETY: kill(2) with integers; `pid` is our child, not reaped yet.
        unsafe { libc::kill(pid, sig) };
    }
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
