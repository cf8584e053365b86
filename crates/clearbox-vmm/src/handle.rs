//! The on-disk record of a running VM (`run_dir/vm.json`), so a different
//! process (a later `clearbox exec` or `clearbox delete`) can reach the agent
//! or tear the VM down.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::accel::Accel;
use crate::error::{Error, Result};
use crate::jail::JailIds;
use crate::proc;
use crate::vsock::AgentTransport;

pub(crate) const STATE_FILE: &str = "vm.json";
const STATE_VERSION: u32 = 1;

/// One helper process, identified by pid and start time (pids get reused).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcRecord {
    pub role: String,
    pub pid: i32,
    pub start_time: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct VmState {
    pub version: u32,
    pub hypervisor: String,
    pub accel: Accel,
    pub transport: Option<AgentTransport>,
    /// QEMU first, then the daemons.
    pub processes: Vec<ProcRecord>,
    /// Files the driver created in or for this VM, removed at teardown.
    pub files: Vec<PathBuf>,
    /// The driver created run_dir: remove it at teardown when empty.
    pub created_run_dir: bool,
    /// The leased uid of a jailed VM; its lease file is removed at teardown.
    #[serde(default)]
    pub jail: Option<JailIds>,
    /// Directories the driver created (jail roots, socket directories), removed with what
    /// they hold at teardown. Nothing is ever mounted in them on the host.
    #[serde(default)]
    pub dirs: Vec<PathBuf>,
}

impl VmState {
    pub(crate) fn new(accel: Accel, created_run_dir: bool) -> Self {
        VmState {
            version: STATE_VERSION,
            hypervisor: "qemu".into(),
            accel,
            transport: None,
            processes: Vec::new(),
            files: Vec::new(),
            created_run_dir,
            jail: None,
            dirs: Vec::new(),
        }
    }

    /// Writes the record atomically (temp file + rename).
    pub(crate) fn save(&self, run_dir: &Path) -> Result<()> {
        let path = run_dir.join(STATE_FILE);
        let tmp = run_dir.join(".vm.json.tmp");
        // Serialising plain structs of strings and numbers cannot fail.
        let text = serde_json::to_vec_pretty(self).map_err(|e| Error::State {
            path: path.clone(),
            source: e,
        })?;
        std::fs::write(&tmp, text).map_err(|e| Error::Path {
            op: "write",
            path: tmp.clone(),
            source: e,
        })?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::Path {
            op: "rename to",
            path,
            source: e,
        })
    }

    /// Removes recorded files, the record, and run_dir when created and empty.
    pub(crate) fn remove_files(&self, run_dir: &Path) {
        for f in &self.files {
            remove_quietly(f);
        }
        for d in &self.dirs {
            match std::fs::remove_dir_all(d) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(path = %d.display(), error = %e, "cannot remove"),
            }
        }
        if let Some(j) = &self.jail {
            crate::jail::release(j, run_dir);
        }
        remove_quietly(&run_dir.join(".vm.json.tmp"));
        remove_quietly(&run_dir.join(STATE_FILE));
        if self.created_run_dir {
            // Fails (and is left) when the caller put other files there.
            let _ = std::fs::remove_dir(run_dir);
        }
    }
}

fn remove_quietly(p: &Path) {
    match std::fs::remove_file(p) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path = %p.display(), error = %e, "cannot remove"),
    }
}

/// A VM seen through its record, from any process.
#[derive(Debug)]
pub struct VmHandle {
    run_dir: PathBuf,
    state: VmState,
}

impl VmHandle {
    pub(crate) fn from_state(run_dir: PathBuf, state: VmState) -> Self {
        VmHandle { run_dir, state }
    }

    /// Reads `run_dir/vm.json`.
    pub fn load(run_dir: impl AsRef<Path>) -> Result<Self> {
        let run_dir = run_dir.as_ref().to_path_buf();
        let path = run_dir.join(STATE_FILE);
        let text = std::fs::read(&path).map_err(|e| Error::Path {
            op: "read VM record",
            path: path.clone(),
            source: e,
        })?;
        let state: VmState =
            serde_json::from_slice(&text).map_err(|e| Error::State { path, source: e })?;
        Ok(VmHandle { run_dir, state })
    }

    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    pub fn accel(&self) -> Accel {
        self.state.accel
    }

    pub fn transport(&self) -> Option<&AgentTransport> {
        self.state.transport.as_ref()
    }

    pub fn processes(&self) -> &[ProcRecord] {
        &self.state.processes
    }

    /// The uid/gid QEMU and the vsock backend run as, when jailed.
    pub fn jail_ids(&self) -> Option<&JailIds> {
        self.state.jail.as_ref()
    }

    fn qemu(&self) -> Option<&ProcRecord> {
        self.state.processes.iter().find(|p| p.role == "qemu")
    }

    /// QEMU is alive (same pid and start time, not a zombie).
    pub fn is_running(&self) -> bool {
        self.qemu()
            .is_some_and(|q| clearbox_util::proc::is_alive(q.pid, Some(q.start_time)))
    }

    /// A pidfd of QEMU, readable once it exits; `None` when it is gone.
    pub fn exit_fd(&self) -> Option<OwnedFd> {
        let q = self.qemu()?;
        open_verified(q)
    }

    /// Connects to a guest port, retrying until `timeout`; fails at once if
    /// QEMU is (or becomes) dead.
    pub fn connect_agent(&self, port: u32, timeout: Duration) -> Result<OwnedFd> {
        let transport = self
            .transport()
            .ok_or_else(|| Error::InvalidConfig("VM has no agent channel".into()))?;
        let Some(pidfd) = self.exit_fd() else {
            return Err(Error::VmExited {
                status: "not running".into(),
                console_tail: String::new(),
            });
        };
        let started = std::time::Instant::now();
        if let AgentTransport::HybridVsock { .. } = transport {
            let vsock = self
                .state
                .processes
                .iter()
                .find(|p| p.role == crate::vm::VSOCK_ROLE);
            if let Some(p) = vsock {
                crate::vsock::wait_hybrid_backend_ready(p.pid, timeout, Some(pidfd.as_fd()))?;
            }
        }
        let left = timeout.saturating_sub(started.elapsed());
        transport.connect_until(port, left, Some(pidfd.as_fd()))
    }

    /// SIGKILLs every recorded process that is still the same process, waits
    /// for each to exit (bounded), then removes the VM's files. Idempotent.
    pub fn kill_and_cleanup(self) -> Result<()> {
        // Recorded processes (QEMU first), then their forked workers (a
        // sandboxed virtiofsd), collected before the parents die and the
        // workers get reparented out of sight.
        let mut all = self.state.processes.clone();
        for p in &self.state.processes {
            if clearbox_util::proc::is_alive(p.pid, Some(p.start_time)) {
                all.extend(
                    proc::descendants(p.pid)
                        .into_iter()
                        .map(|(pid, start_time)| ProcRecord {
                            role: format!("{} child", p.role),
                            pid,
                            start_time,
                        }),
                );
            }
        }
        for p in &all {
            kill_verified(p);
        }
        self.state.remove_files(&self.run_dir);
        Ok(())
    }
}

/// pidfd of `p` if it is still the recorded process.
fn open_verified(p: &ProcRecord) -> Option<OwnedFd> {
    clearbox_util::proc::pidfd_verified(p.pid, Some(p.start_time))
}

pub(crate) fn kill_verified(p: &ProcRecord) {
    let Some(fd) = open_verified(p) else {
        return;
    };
    if let Err(e) = clearbox_util::proc::pidfd_send_signal(fd.as_fd(), libc::SIGKILL) {
        tracing::warn!(role = %p.role, pid = p.pid, error = %e, "cannot kill");
        return;
    }
    // The process is gone from the scheduler within milliseconds; bound it.
    if !matches!(
        proc::wait_readable(fd.as_fd(), Some(Duration::from_secs(5))),
        Ok(true)
    ) {
        tracing::warn!(role = %p.role, pid = p.pid, "still alive 5 s after SIGKILL");
        return;
    }
    // Our own child (we started it, or adopted it as a subreaper): reap the
    // zombie. Anyone else's is reaped by its parent.
    if proc::parent_of(p.pid) == Some(std::process::id() as i32) {
        let _ = nix::sys::wait::waitpid(
            nix::unistd::Pid::from_raw(p.pid),
            Some(nix::sys::wait::WaitPidFlag::WNOHANG),
        );
    }
}
