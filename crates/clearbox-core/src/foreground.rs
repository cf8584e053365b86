//! Waiting for a foreground process (`run`, `exec` without `--detach`) while forwarding signals.

use nix::errno::Errno;
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::error::Error;

/// Signals passed on to the container process rather than acted on by clearbox.
pub const FORWARDED: &[Signal] = &[
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
    Signal::SIGCONT,
    Signal::SIGALRM,
    Signal::SIGPWR,
];

/// Blocks the forwarded signals and SIGCHLD; call it once the child exists (children inherit the
/// mask, so blocking before they are created would leave them deaf), then [`wait`].
pub struct SignalGuard {
    set: SigSet,
    old: SigSet,
}

impl SignalGuard {
    pub fn block() -> Result<Self, Error> {
        let mut set = SigSet::empty();
        set.add(Signal::SIGCHLD);
        for s in FORWARDED {
            set.add(*s);
        }
        let mut old = SigSet::empty();
        nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old))
            .map_err(|e| Error::io("cannot block signals", "sigprocmask", e.into()))?;
        Ok(Self { set, old })
    }

    /// Waits until `pid` ends, forwarding signals to it, reaping any other child (orphans
    /// re-parented to us as subreaper). Returns the shell-style exit code: the exit status, or
    /// 128+N when the process died of signal N.
    pub fn wait(&self, pid: i32) -> Result<i32, Error> {
        let target = Pid::from_raw(pid);
        loop {
            // Reap first: the child may have exited before the signals were blocked, in which
            // case its SIGCHLD was discarded and only the zombie tells.
            loop {
                match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::Exited(p, code)) if p == target => return Ok(code),
                    Ok(WaitStatus::Signaled(p, sig, _)) if p == target => {
                        return Ok(128 + sig as i32)
                    }
                    Ok(WaitStatus::StillAlive) => break,
                    Ok(_) => continue,
                    Err(Errno::EINTR) => continue,
                    Err(Errno::ECHILD) => {
                        return Err(Error::Usage(format!(
                            "process {pid} is not a child of clearbox; cannot wait for it"
                        )))
                    }
                    Err(e) => return Err(Error::io("waitpid", pid.to_string(), e.into())),
                }
            }
            let Some(sig) = self.next_signal()? else {
                continue;
            };
            if sig != Signal::SIGCHLD {
                match kill(target, sig) {
                    Ok(()) | Err(Errno::ESRCH) => {}
                    Err(e) => tracing::warn!(?sig, error = %e, "forwarding signal"),
                }
            }
        }
    }
}

impl SignalGuard {
    /// The next blocked signal, or `None` after a short timeout. The timeout makes the reaping
    /// loop robust where SIGCHLD can be taken by another thread that does not block it.
    fn next_signal(&self) -> Result<Option<Signal>, Error> {
        let timeout = libc::timespec {
            tv_sec: 0,
            tv_nsec: 200_000_000,
        };
        // SAFETY: `self.set` is a valid sigset_t; a null siginfo pointer is allowed; `timeout`
        // lives across the call.
        let rc = unsafe { libc::sigtimedwait(self.set.as_ref(), std::ptr::null_mut(), &timeout) };
        if rc < 0 {
            let err = std::io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(None),
                _ => Err(Error::io("sigtimedwait", "signals", err)),
            };
        }
        Ok(Signal::try_from(rc).ok())
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&self.old), None);
    }
}

/// Makes this process the reaper of its orphaned descendants, as `runc run` does by default.
pub fn become_subreaper() -> Result<(), Error> {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes one integer argument and touches no memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc != 0 {
        return Err(Error::io(
            "cannot become subreaper",
            "prctl",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    #[allow(clippy::zombie_processes)] // reaped by SignalGuard::wait
    fn exit_code_and_signal_death() {
        let c = Command::new("sh").args(["-c", "exit 42"]).spawn().unwrap();
        let g = SignalGuard::block().unwrap();
        assert_eq!(g.wait(c.id() as i32).unwrap(), 42);
        let c = Command::new("sh")
            .args(["-c", "kill -9 $$"])
            .spawn()
            .unwrap();
        assert_eq!(g.wait(c.id() as i32).unwrap(), 128 + 9);
    }
}
