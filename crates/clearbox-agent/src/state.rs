//! The agent's process table and the central reaper.
//!
//! Every child of the agent is reaped here (`waitpid(-1)`, as PID 1 also orphans), under the
//! table lock; statuses of tracked pids are dispatched to their [`Process`]. Spawning holds
//! the same lock until the new pid is registered, so no status is ever lost or stolen.
//!
//! Container processes are started by a helper process (see `helper`) and reach the agent by
//! re-parenting, possibly already dead, before the agent knows their pid. Statuses of unknown
//! pids are therefore kept for a while ([`UNCLAIMED_TTL`]) and handed over when the pid is
//! registered with [`Table::register_since`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::container::{Container, Pending};
use crate::process::{lock, Exit, Process};

pub type Key = (String, String);

/// How long the status of an unknown pid is kept for a later [`Table::register_since`].
pub const UNCLAIMED_TTL: Duration = Duration::from_secs(60);
/// At most this many unknown statuses are kept (the oldest go first).
const UNCLAIMED_MAX: usize = 4096;

#[derive(Default)]
pub struct Table {
    pub procs: HashMap<Key, Arc<Process>>,
    pub by_pid: HashMap<i32, Arc<Process>>,
    pub containers: HashMap<String, Container>,
    /// Containers and execs whose helper is running.
    pub pending: Pending,
    /// Statuses of reaped pids nobody registered (yet), with the time they were reaped.
    unclaimed: HashMap<i32, (Exit, Instant)>,
}

impl Table {
    pub fn register(&mut self, key: Key, p: Arc<Process>) {
        self.by_pid.insert(p.pid, Arc::clone(&p));
        self.procs.insert(key, p);
    }

    /// Registers a process that was created at or after `since` by someone else (it reaches
    /// the agent by re-parenting) and may already have been reaped.
    pub fn register_since(&mut self, key: Key, p: Arc<Process>, since: Instant) {
        match self.unclaimed.remove(&p.pid) {
            // A status reaped before `since` belongs to an earlier process with that pid.
            Some((exit, at)) if at >= since => {
                crate::debug!("pid {} had exited before it was registered", p.pid);
                p.set_exit(exit);
                self.procs.insert(key, p);
            }
            _ => self.register(key, p),
        }
    }

    fn keep_unclaimed(&mut self, pid: i32, exit: Exit) {
        let now = Instant::now();
        self.unclaimed
            .retain(|_, (_, at)| now.duration_since(*at) < UNCLAIMED_TTL);
        if self.unclaimed.len() >= UNCLAIMED_MAX {
            if let Some(oldest) = self
                .unclaimed
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(pid, _)| *pid)
            {
                self.unclaimed.remove(&oldest);
            }
        }
        self.unclaimed.insert(pid, (exit, now));
    }
}

#[derive(Default)]
pub struct State {
    table: Mutex<Table>,
}

impl State {
    pub fn table(&self) -> MutexGuard<'_, Table> {
        lock(&self.table)
    }

    /// Reaps every exited child and dispatches statuses.
    pub fn reap(&self) {
        let mut t = self.table();
        loop {
            let (pid, exit) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, Exit::exited(code)),
                Ok(WaitStatus::Signaled(pid, sig, core)) => (pid, Exit::signaled(sig as i32, core)),
                Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => return,
                Ok(_) => continue,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    crate::error!("waitpid: {e}");
                    return;
                }
            };
            match t.by_pid.remove(&pid.as_raw()) {
                Some(p) => {
                    crate::debug!("pid {pid} exited: {exit:?}");
                    p.set_exit(exit);
                }
                None => {
                    crate::debug!("reaped unknown pid {pid}: {exit:?}");
                    t.keep_unclaimed(pid.as_raw(), exit);
                }
            }
        }
    }
}

/// Blocks SIGCHLD (and, with `stop_signals`, SIGTERM/SIGINT) in the calling thread; call
/// in `main` before any thread starts so every thread inherits the mask and these signals
/// are only seen through the reaper's signalfd.
pub fn block_signals(stop_signals: bool) -> nix::Result<SigSet> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    if stop_signals {
        set.add(Signal::SIGTERM);
        set.add(Signal::SIGINT);
    }
    set.thread_block()?;
    Ok(set)
}

/// Starts the reaper thread; `on_stop` runs on SIGTERM/SIGINT (if blocked in `set`).
pub fn start_reaper(
    state: Arc<State>,
    set: SigSet,
    on_stop: Box<dyn Fn() + Send>,
) -> std::io::Result<()> {
    let sfd = SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC).map_err(std::io::Error::from)?;
    std::thread::Builder::new()
        .name("reaper".into())
        .spawn(move || loop {
            match sfd.read_signal() {
                Ok(Some(info)) if info.ssi_signo == Signal::SIGCHLD as u32 => state.reap(),
                Ok(Some(_)) => on_stop(),
                Ok(None) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    crate::error!("signalfd read: {e}");
                    return;
                }
            }
        })?;
    // Children that exited before the signalfd existed left a pending SIGCHLD: the first
    // read returns at once.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_registration_gets_the_kept_status() {
        let mut t = Table::default();
        let before = Instant::now();
        t.keep_unclaimed(42, Exit::exited(7));
        let p = Process::new(42, false, None, None);
        t.register_since(("c".into(), "x".into()), Arc::clone(&p), before);
        assert_eq!(p.exit_status(), Some(Exit::exited(7)));
        assert!(t.by_pid.is_empty(), "no longer waited for");

        // A status older than the process belongs to an earlier owner of the pid.
        t.keep_unclaimed(43, Exit::exited(1));
        std::thread::sleep(Duration::from_millis(2));
        let q = Process::new(43, false, None, None);
        t.register_since(("c".into(), "y".into()), Arc::clone(&q), Instant::now());
        assert_eq!(q.exit_status(), None);
        assert!(t.by_pid.contains_key(&43));
    }
}
