//! `containerd-shim-clearbox-v2`: containerd's runtime v2 shim for clearbox
//! (`runtime_type = "io.containerd.clearbox.v2"`).
//!
//! One shim process serves the task API for one container, or for every container of one pod
//! (containers carrying the same `io.kubernetes.cri.sandbox-id` share the shim's socket, as
//! with Kata's and runc's shims). Containers are driven through clearbox's runtime core and the
//! same backends as the `clearbox` CLI ([`clearbox_backends`]); the backend picks the isolation
//! and, for pods, the VM a container goes into, from the spec's annotations.
//!
//! The same binary also serves two internal roles, chosen by its first arguments:
//! * `__op ROOT REQUEST`: one lifecycle operation in a fresh single-threaded process (see
//!   [`helper`]); container setup forks and changes process-wide state, which a
//!   multi-threaded ttrpc server must not do itself;
//! * `[--log FILE] [--debug] __vm-shim REQUEST READY_FD`: the VM backend's per-process host
//!   shim, which the backend starts by re-executing `/proc/self/exe`.

mod bootstrap;
mod events;
mod exits;
mod helper;
mod metrics;
mod service;
mod stdio;

use std::ffi::OsString;
use std::process::ExitCode;

/// The runtime name containerd knows this shim by.
pub const RUNTIME_ID: &str = "io.containerd.clearbox.v2";

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == helper::SUBCOMMAND) {
        return ExitCode::from(helper::main(&args[2..]));
    }
    if let Some(code) = vm_shim(&args[1..]) {
        return ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(255));
    }
    let config = containerd_shim::Config {
        // containerd stops a shim with SIGKILL after Shutdown; SIGTERM/SIGINT only log.
        ..Default::default()
    };
    containerd_shim::run::<bootstrap::ClearboxShim>(RUNTIME_ID, Some(config));
    ExitCode::SUCCESS
}

/// `[--log FILE] [--debug] __vm-shim REQUEST READY_FD`, as the VM backend starts it.
fn vm_shim(args: &[OsString]) -> Option<i32> {
    let at = args
        .iter()
        .position(|a| a == clearbox_backends::VM_SHIM_SUBCOMMAND)?;
    let (opts, rest) = args.split_at(at);
    let mut log = None;
    let mut debug = false;
    let mut it = opts.iter();
    while let Some(a) = it.next() {
        if a == "--log" {
            log = it.next().cloned();
        } else if a == "--debug" {
            debug = true;
        } else {
            return None;
        }
    }
    let (Some(request), Some(fd)) = (rest.get(1), rest.get(2)) else {
        eprintln!("containerd-shim-clearbox-v2: __vm-shim is internal to clearbox");
        return Some(2);
    };
    let Some(fd) = fd.to_str().and_then(|f| f.parse::<i32>().ok()) else {
        eprintln!("containerd-shim-clearbox-v2: __vm-shim is internal to clearbox");
        return Some(2);
    };
    if let Some(path) = log {
        init_file_log(std::path::Path::new(&path), debug);
    }
    Some(clearbox_backends::vm_shim_main(
        std::path::Path::new(request),
        fd,
    ))
}

/// Plain text log lines to `path` (the VM shim's log file in the container's state
/// directory), warnings and errors unless `debug`.
pub(crate) fn init_file_log(path: &std::path::Path, debug: bool) {
    let Ok(file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    else {
        return;
    };
    let level = if debug { "debug" } else { "warn" };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(format!(
            "{level},libcgroups=error,libcontainer=error"
        )))
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .try_init();
}
