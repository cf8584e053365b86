//! `isolation = "namespaces"`: namespaces, cgroups, seccomp and the rest of the OCI Linux spec,
//! on the host kernel.

use std::path::{Path, PathBuf};

use clearbox_container::{namespaces as ns, Status as CStatus};
use clearbox_core::backend::Created;
use clearbox_core::{Backend, BackendError, ContainerCtx, CreateOpts, ExecOpts, Isolation, Status};
use oci_spec::runtime::LinuxResources;

use crate::err;

/// runc-style isolation through youki's libcontainer.
#[derive(Debug, Default)]
pub struct NamespacesBackend;

/// libcontainer's private directory inside the container's state directory.
fn state_root(dir: &Path) -> PathBuf {
    dir.join("ns")
}

/// The signal that gives a created container's init what `signal` gives runc's.
///
/// Until `start` the init is clearbox's (libcontainer's) code, not the user's program, and it is
/// the init of the container's PID namespace: the kernel delivers to it only the signals it has
/// a handler for, and SIGKILL and SIGSTOP. runc's init is Go with no `signal.Notify`: Go's
/// runtime ends the process on SIGHUP, SIGINT and SIGTERM, and crashes on SIGQUIT, SIGILL,
/// SIGTRAP, SIGABRT, SIGBUS, SIGFPE, SIGSEGV, SIGSTKFLT and SIGSYS sent to it; it ignores every
/// other signal. So with runc, `kill` of a created container with one of those stops it, and
/// with any other leaves it created. Those are sent as SIGKILL here (sent as they are they
/// would be dropped, the container left waiting for `start`); the others are passed as they
/// are (see the caller).
fn signal_for_created(signal: i32) -> i32 {
    match signal {
        libc::SIGHUP | libc::SIGINT | libc::SIGTERM => libc::SIGKILL,
        libc::SIGQUIT | libc::SIGILL | libc::SIGTRAP | libc::SIGABRT | libc::SIGBUS => {
            libc::SIGKILL
        }
        libc::SIGFPE | libc::SIGSEGV | libc::SIGSTKFLT | libc::SIGSYS => libc::SIGKILL,
        _ => signal,
    }
}

impl Backend for NamespacesBackend {
    fn isolation(&self) -> Isolation {
        Isolation::Namespaces
    }

    fn create(&self, o: &CreateOpts<'_>) -> Result<Created, BackendError> {
        let pid = ns::create(&ns::CreateParams {
            id: o.id,
            bundle: o.bundle,
            state_root: &state_root(o.dir),
            console_socket: o.console_socket,
            preserve_fds: o.preserve_fds,
            no_pivot: o.no_pivot,
            systemd: o.systemd_cgroup,
            foreground: o.foreground,
        })
        .map_err(err)?;
        Ok(Created { pid })
    }

    fn start(&self, c: &ContainerCtx<'_>) -> Result<(), BackendError> {
        ns::start(&state_root(c.dir), c.id).map_err(err)
    }

    fn status(&self, c: &ContainerCtx<'_>) -> Result<Status, BackendError> {
        if c.state.status == Status::Creating {
            return Ok(clearbox_core::backend::default_status(c.state));
        }
        Ok(match ns::status(&state_root(c.dir), c.id).map_err(err)? {
            CStatus::Creating => Status::Creating,
            CStatus::Created => Status::Created,
            CStatus::Running => Status::Running,
            CStatus::Paused => Status::Paused,
            CStatus::Stopped => Status::Stopped,
        })
    }

    fn kill(&self, c: &ContainerCtx<'_>, signal: i32, all: bool) -> Result<(), BackendError> {
        let signal = match c.state.status {
            Status::Created => signal_for_created(signal),
            _ => signal,
        };
        if c.state.status == Status::Created && signal != libc::SIGKILL {
            // The container stays created: signal its init only (its one process), not through
            // libcontainer, which records any killed container as stopped.
            let fd = c
                .state
                .pid
                .and_then(|pid| clearbox_util::proc::pidfd_verified(pid, c.state.pid_start_time))
                .ok_or_else(|| BackendError::msg("container not running"))?;
            return clearbox_util::proc::pidfd_send_signal(std::os::fd::AsFd::as_fd(&fd), signal)
                .map_err(|e| BackendError::with(format!("signal {signal} to the init"), e));
        }
        ns::kill(&state_root(c.dir), c.id, signal, all).map_err(err)
    }

    fn pause(&self, c: &ContainerCtx<'_>) -> Result<(), BackendError> {
        ns::pause(&state_root(c.dir), c.id).map_err(err)
    }

    fn resume(&self, c: &ContainerCtx<'_>) -> Result<(), BackendError> {
        ns::resume(&state_root(c.dir), c.id).map_err(err)
    }

    fn delete(&self, c: &ContainerCtx<'_>, force: bool) -> Result<(), BackendError> {
        ns::delete(&state_root(c.dir), c.id, force).map_err(err)
    }

    fn exec(&self, c: &ContainerCtx<'_>, o: &ExecOpts<'_>) -> Result<i32, BackendError> {
        // libcontainer takes the process as a file; it lives only for the duration of the call.
        let file = c.dir.join(format!("exec-{}.json", std::process::id()));
        let json = serde_json::to_vec(o.process)
            .map_err(|e| BackendError::with("cannot encode exec process", e))?;
        std::fs::write(&file, json)
            .map_err(|e| BackendError::with("cannot write exec process", e))?;
        let result = ns::exec(&ns::ExecParams {
            id: c.id,
            state_root: &state_root(c.dir),
            process_file: &file,
            console_socket: o.console_socket,
            detach: o.detach,
            preserve_fds: o.preserve_fds,
            ignore_paused: o.ignore_paused,
            sub_cgroup: o.sub_cgroup,
        });
        let _ = std::fs::remove_file(&file);
        // libcontainer words every failure of a tenant as "failed to create container".
        result.map_err(|e| {
            let mut be = err(e);
            be.message = match be.message.strip_prefix("failed to create container: ") {
                Some(rest) => format!("exec failed: {rest}"),
                None => format!("exec failed: {}", be.message),
            };
            be
        })
    }

    fn pids(&self, c: &ContainerCtx<'_>) -> Result<Vec<i32>, BackendError> {
        ns::pids(&state_root(c.dir), c.id).map_err(err)
    }

    fn stats(&self, c: &ContainerCtx<'_>) -> Result<serde_json::Value, BackendError> {
        ns::stats(&state_root(c.dir), c.id).map_err(err)
    }

    fn update(&self, c: &ContainerCtx<'_>, r: &LinuxResources) -> Result<(), BackendError> {
        ns::update(&state_root(c.dir), c.id, r).map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_init_gets_sigkill_where_runcs_would_end() {
        for sig in [
            libc::SIGTERM,
            libc::SIGINT,
            libc::SIGHUP,
            libc::SIGQUIT,
            libc::SIGSEGV,
        ] {
            assert_eq!(signal_for_created(sig), libc::SIGKILL, "signal {sig}");
        }
        // Ignored by runc's init (Go without signal.Notify): the container stays created.
        let kept = [
            libc::SIGKILL,
            libc::SIGSTOP,
            libc::SIGCONT,
            libc::SIGWINCH,
            libc::SIGCHLD,
            libc::SIGUSR1,
            libc::SIGUSR2,
            libc::SIGPIPE,
            libc::SIGALRM,
            libc::SIGRTMIN() + 3,
        ];
        for sig in kept {
            assert_eq!(signal_for_created(sig), sig, "signal {sig}");
        }
    }
}
