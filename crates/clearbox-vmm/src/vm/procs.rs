//! The VM's helper processes (QEMU, virtiofsd, the agent channel's backend): started with
//! their isolation, recorded for any later process, waited on through pidfds, and reaped or
//! killed at teardown.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::Vm;
use crate::error::{Error, Result};
use crate::handle::ProcRecord;
use crate::proc::{self, SpawnOpts};

/// A child process of this process, with a pidfd for event-driven waits.
pub(super) struct Proc {
    pub(super) role: String,
    pub(super) child: Child,
    pub(super) pidfd: OwnedFd,
    /// Exits by itself once QEMU disconnects (virtiofsd): given a moment
    /// before SIGKILL so it can reap its own sandbox child.
    pub(super) exits_with_frontend: bool,
}

impl Proc {
    pub(super) fn reap_or_kill(&mut self, grace: Duration) {
        if self.exits_with_frontend
            && !matches!(
                proc::wait_readable(self.pidfd.as_fd(), Some(grace)),
                Ok(true)
            )
        {
            tracing::debug!(role = %self.role, "did not exit with its frontend");
        }
        if let Ok(None) = self.child.try_wait() {
            // Forked workers first seen now, before the parent dies.
            let workers = proc::descendants(self.child.id() as i32);
            if let Err(e) = self.child.kill() {
                if e.raw_os_error() == Some(libc::EPERM) {
                    // An owner that gave up its privileges (the shim) cannot signal virtiofsd
                    // (uid 0): its parent-death signal ends it when the owner exits.
                    tracing::debug!(role = %self.role, "left to its parent-death signal");
                    return;
                }
            }
            for (pid, start_time) in workers {
                crate::handle::kill_verified(&ProcRecord {
                    role: format!("{} child", self.role),
                    pid,
                    start_time,
                });
            }
        }
        let _ = self.child.wait();
    }
}

impl Vm {
    pub(super) fn spawn_proc(
        &mut self,
        role: &str,
        mut cmd: Command,
        log: File,
        opts: &SpawnOpts,
        exits_with_frontend: bool,
    ) -> Result<Proc> {
        let err = log.try_clone().map_err(|e| Error::Io("dup log fd", e))?;
        cmd.stdin(Stdio::null()).stdout(log).stderr(err);
        let child = proc::spawn(&mut cmd, opts).map_err(|e| Error::Spawn(role.to_string(), e))?;
        let pid = child.id() as i32;
        let mut p = Proc {
            role: role.to_string(),
            pidfd: match clearbox_util::proc::pidfd_open(pid) {
                Ok(fd) => fd,
                Err(e) => {
                    let mut child = child;
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(Error::Io("pidfd_open", e));
                }
            },
            child,
            exits_with_frontend,
        };
        // `None` once it has exited (a zombie child too).
        match clearbox_util::proc::start_time(pid) {
            Some(start_time) => self.state.processes.push(ProcRecord {
                role: role.to_string(),
                pid,
                start_time,
            }),
            None => {
                // It died already; its log says why.
                p.reap_or_kill(Duration::ZERO);
                return Err(Error::HelperDied {
                    role: role.to_string(),
                    status: p
                        .child
                        .try_wait()
                        .ok()
                        .flatten()
                        .map(|s| s.to_string())
                        .unwrap_or_default(),
                    log_tail: proc::tail(&self.run_dir.join(format!("{role}.log")), 2000),
                });
            }
        }
        tracing::debug!(role, pid, "spawned");
        Ok(p)
    }

    pub(super) fn spawn_helper(
        &mut self,
        role: &str,
        cmd: Command,
        opts: &SpawnOpts,
        exits_with_frontend: bool,
    ) -> Result<usize> {
        let log = self.open_log(&format!("{role}.log"))?;
        let p = self.spawn_proc(role, cmd, log, opts, exits_with_frontend)?;
        self.helpers.push(p);
        Ok(self.helpers.len() - 1)
    }

    /// Why QEMU or the agent failed when a helper (virtiofsd, the agent channel's backend)
    /// failed first: a helper that exited with a non-zero status or was killed by a signal is
    /// the cause, and its log says why; `e` otherwise (a virtiofsd that exited 0 only saw
    /// QEMU go).
    pub(super) fn blame_failed_helper(&self, e: Error) -> Error {
        // clearbox-vmux exits with an error when QEMU goes first (its HELLO meets a closed
        // port): never the cause.
        for h in self.helpers.iter().filter(|h| h.role != super::VMUX_ROLE) {
            let status = match clearbox_util::proc::pidfd_exit_status(h.pidfd.as_fd()) {
                Some(Ok(0)) | None => continue,
                // As `std::process::ExitStatus` says it (the other `HelperDied`).
                Some(Ok(code)) => format!("exit status: {code}"),
                Some(Err(sig)) => format!("signal: {sig}"),
            };
            return Error::HelperDied {
                role: h.role.clone(),
                status,
                log_tail: proc::tail(&self.run_dir.join(format!("{}.log", h.role)), 2000),
            };
        }
        e
    }

    /// Waits for helper `idx` to create `socket`; fails at once if it dies.
    pub(super) fn wait_for_socket(
        &mut self,
        idx: usize,
        socket: &Path,
        timeout: Duration,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_micros(200);
        loop {
            if socket.exists() {
                return Ok(());
            }
            let h = &mut self.helpers[idx];
            // Sleeping on the pidfd: wakes at once if the helper dies.
            let died = proc::wait_readable(h.pidfd.as_fd(), Some(pause))
                .map_err(|e| Error::Io("poll helper", e))?;
            if died {
                let status = h.child.wait().map(|s| s.to_string()).unwrap_or_default();
                return Err(Error::HelperDied {
                    role: h.role.clone(),
                    status,
                    log_tail: proc::tail(&self.run_dir.join(format!("{}.log", h.role)), 2000),
                });
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout(
                    timeout,
                    format!("{} socket {}", h.role, socket.display()),
                ));
            }
            pause = (pause * 2).min(Duration::from_millis(5));
        }
    }
}
