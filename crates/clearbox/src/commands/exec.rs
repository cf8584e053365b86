//! `clearbox exec`: run a process in a container; without `--detach`, wait for it and exit with
//! its code.

use anyhow::Result;
use clearbox_core::foreground::SignalGuard;
use clearbox_core::runtime::ExecArgs;
use clearbox_core::Runtime;

use super::exit_byte;

pub fn run(rt: &Runtime<'_>, a: liboci_cli::Exec) -> Result<u8> {
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
        console_socket: a.console_socket,
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
    let guard = SignalGuard::block()?;
    Ok(exit_byte(guard.wait(pid)?))
}
