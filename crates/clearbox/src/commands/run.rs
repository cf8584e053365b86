//! `clearbox run`: create + start, then (without `--detach`) wait for the container's init while
//! forwarding signals, delete the container and exit with the init's exit code (128+N when it
//! died of signal N), as runc does.

use anyhow::Result;
use clearbox_core::foreground::{become_subreaper, SignalGuard};
use clearbox_core::Runtime;

use super::exit_byte;

pub fn run(rt: &Runtime<'_>, a: liboci_cli::Run) -> Result<u8> {
    let create = super::create::args(&liboci_cli::Create {
        bundle: a.bundle.clone(),
        console_socket: a.console_socket.clone(),
        pid_file: a.pid_file.clone(),
        no_pivot: a.no_pivot,
        no_new_keyring: a.no_new_keyring,
        preserve_fds: a.preserve_fds,
        container_id: a.container_id.clone(),
    });
    if !a.detach && !a.no_subreaper {
        become_subreaper()?;
    }
    let state = rt.create(&create, !a.detach)?;
    if let Err(e) = rt.start(&a.container_id) {
        let _ = rt.delete(&a.container_id, true);
        return Err(e.into());
    }
    if a.detach {
        return Ok(0);
    }
    let pid = state.pid.unwrap_or_default();
    let guard = SignalGuard::block()?;
    let code = guard.wait(pid);
    drop(guard);
    if !a.keep {
        if let Err(e) = rt.delete(&a.container_id, true) {
            tracing::warn!(error = %e, "deleting the container after run");
        }
    }
    Ok(exit_byte(code?))
}
