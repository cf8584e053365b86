//! The agent's process table and the central reaper.
//!
//! Every child of the agent is reaped here (`waitpid(-1)`, as PID 1 also orphans), under the
//! table lock; statuses of tracked pids are dispatched to their [`Process`]. Spawning holds
//! the same lock until the new pid is registered, so no status is ever lost or stolen.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::container::Container;
use crate::process::{lock, Exit, Process};

pub type Key = (String, String);

#[derive(Default)]
pub struct Table {
    pub procs: HashMap<Key, Arc<Process>>,
    pub by_pid: HashMap<i32, Arc<Process>>,
    pub containers: HashMap<String, Container>,
}

impl Table {
    pub fn register(&mut self, key: Key, p: Arc<Process>) {
        self.by_pid.insert(p.pid, Arc::clone(&p));
        self.procs.insert(key, p);
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
                None => crate::debug!("reaped orphan {pid}"),
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
