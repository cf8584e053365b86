//! `clearbox run`: create + start, then (without `--detach`) wait for the container's init while
//! forwarding signals, delete the container and exit with the init's exit code (128+N when it
//! died of signal N), as runc does.

use anyhow::Result;
use clearbox_core::foreground::{become_subreaper, SignalGuard};
use clearbox_core::runtime::CreateArgs;
use clearbox_core::Runtime;

use super::exit_byte;
use crate::console::ConsoleListener;

pub fn run(rt: &Runtime<'_>, a: liboci_cli::Run) -> Result<u8> {
    let console = foreground_console(a.detach, a.console_socket.is_some(), &a.bundle)?;
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
    create_start_wait(rt, &create, console, a.detach, !a.no_subreaper, a.keep)
}

/// A foreground terminal without a console socket: clearbox makes the pty, as runc does.
pub(crate) fn foreground_console(
    detach: bool,
    has_console_socket: bool,
    bundle: &std::path::Path,
) -> Result<Option<ConsoleListener>> {
    if !detach && !has_console_socket && wants_terminal(bundle) {
        Ok(Some(ConsoleListener::new()?))
    } else {
        Ok(None)
    }
}

/// The one path from a bundle to a running container, shared by `run` and `image run`: create,
/// start, and unless `detach`, wait in the foreground forwarding signals (relaying the
/// terminal of `console`, when clearbox made it), then delete (unless `keep`) and return the
/// init's exit code.
pub(crate) fn create_start_wait(
    rt: &Runtime<'_>,
    create: &CreateArgs,
    console: Option<ConsoleListener>,
    detach: bool,
    subreaper: bool,
    keep: bool,
) -> Result<u8> {
    if !detach && subreaper {
        become_subreaper()?;
    }
    let state = rt.create(create, !detach)?;
    let relay = match console.map(|c| c.relay()).transpose() {
        Ok(r) => r,
        Err(e) => {
            let _ = rt.delete(&create.id, true);
            return Err(e);
        }
    };
    // Block the forwarded signals once the init exists (it must not inherit the mask) but
    // before it starts: a SIGTERM that comes as soon as the container runs (systemd stopping a
    // unit) is then forwarded, never the end of clearbox with the container left running.
    let guard = if detach {
        None
    } else {
        match SignalGuard::block() {
            Ok(g) => Some(g),
            Err(e) => {
                let _ = rt.delete(&create.id, true);
                return Err(e.into());
            }
        }
    };
    if let Err(e) = rt.start(&create.id) {
        drop(guard);
        let _ = rt.delete(&create.id, true);
        return Err(e.into());
    }
    let Some(guard) = guard else {
        return Ok(0);
    };
    let pid = state.pid.unwrap_or_default();
    let code = guard.wait(pid);
    drop(guard);
    if let Some(r) = relay {
        r.finish();
    }
    if !keep {
        if let Err(e) = rt.delete(&create.id, true) {
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
