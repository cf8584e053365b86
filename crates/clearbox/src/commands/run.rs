//! `clearbox run`: create + start, then (without `--detach`) wait for the container's init while
//! forwarding signals, delete the container and exit with the init's exit code (128+N when it
//! died of signal N), as runc does.

use anyhow::Result;
use clearbox_core::foreground::{become_subreaper, SignalGuard};
use clearbox_core::Runtime;

use super::exit_byte;
use crate::console::ConsoleListener;

pub fn run(rt: &Runtime<'_>, a: liboci_cli::Run) -> Result<u8> {
    // A foreground terminal without a console socket: clearbox makes the pty, as runc does.
    let console = if !a.detach && a.console_socket.is_none() && wants_terminal(&a.bundle) {
        Some(ConsoleListener::new()?)
    } else {
        None
    };
    let create = super::create::args(&liboci_cli::Create {
        bundle: a.bundle.clone(),
        console_socket: a
            .console_socket
            .clone()
            .or_else(|| console.as_ref().map(|c| c.path().to_path_buf())),
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
    let relay = match console.map(|c| c.relay()).transpose() {
        Ok(r) => r,
        Err(e) => {
            let _ = rt.delete(&a.container_id, true);
            return Err(e);
        }
    };
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
    if let Some(r) = relay {
        r.finish();
    }
    if !a.keep {
        if let Err(e) = rt.delete(&a.container_id, true) {
            tracing::warn!(error = %e, "deleting the container after run");
        }
    }
    Ok(exit_byte(code?))
}

/// Whether the bundle's process asks for a terminal (errors are left to `create` to report).
fn wants_terminal(bundle: &std::path::Path) -> bool {
    clearbox_core::runtime::load_bundle(bundle)
        .ok()
        .and_then(|(_, spec)| spec.process().as_ref().and_then(|p| p.terminal()))
        .unwrap_or(false)
}
