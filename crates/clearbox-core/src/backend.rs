//! The interface every isolation backend implements. The core drives the lifecycle (ids, state,
//! locking, status guards) and calls a backend only for what depends on the isolation.

use std::path::Path;

use oci_spec::runtime::{LinuxResources, Process, Spec};

use crate::error::Error;
use crate::isolation::Isolation;
use crate::process;
use crate::state::{State, Status};

/// An error from a backend: a short message naming what failed, with the cause chained.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct BackendError {
    pub message: String,
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl BackendError {
    pub fn msg(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            source: None,
        }
    }

    /// One line from an error and its causes, skipping a cause whose text the message already
    /// holds (libcontainer's messages often repeat their source's).
    pub fn flatten(e: &(dyn std::error::Error + 'static)) -> Self {
        Self::msg(clearbox_util::error::chain(e))
    }

    pub fn with(
        message: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            message: message.into(),
            source: Some(source.into()),
        }
    }
}

/// Everything `create` knows, already validated by the core.
#[derive(Debug)]
pub struct CreateOpts<'a> {
    pub id: &'a str,
    /// Canonical bundle directory.
    pub bundle: &'a Path,
    /// Canonical root file system directory.
    pub rootfs: &'a Path,
    pub spec: &'a Spec,
    /// The container's state directory; the backend may keep private files in it.
    pub dir: &'a Path,
    pub console_socket: Option<&'a Path>,
    pub preserve_fds: i32,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
    pub systemd_cgroup: bool,
    /// `run` without `--detach`: the container's init must stay a child of this process.
    pub foreground: bool,
    /// With [`Backend::create_interruptible`]: readable once a termination signal came. The
    /// backend polls it while it waits (a VM booting) and gives up, undoing what it did; the
    /// core removes the container after a create that finished meanwhile.
    pub interrupt: Option<std::os::fd::BorrowedFd<'a>>,
}

/// What a successful `create` reports.
#[derive(Debug, Clone, Copy)]
pub struct Created {
    /// The pid to write to `--pid-file`: the container's init (or the host process standing for it).
    pub pid: i32,
}

/// A container as a backend sees it for every later operation.
#[derive(Debug, Clone, Copy)]
pub struct ContainerCtx<'a> {
    pub id: &'a str,
    pub dir: &'a Path,
    pub state: &'a State,
}

/// A process to start in a running container; `process` is final (the core merged `--process`,
/// the arguments and every flag into it).
#[derive(Debug)]
pub struct ExecOpts<'a> {
    pub process: &'a Process,
    pub console_socket: Option<&'a Path>,
    pub detach: bool,
    pub preserve_fds: i32,
    pub ignore_paused: bool,
    pub sub_cgroup: Option<&'a str>,
}

/// An isolation backend.
pub trait Backend {
    fn isolation(&self) -> Isolation;

    /// Creates the container and leaves its process waiting for `start`.
    fn create(&self, opts: &CreateOpts<'_>) -> Result<Created, BackendError>;

    /// Whether `create` runs with clearbox's termination-signal handler installed
    /// (`CreateOpts::interrupt`, `clearbox_util::interrupt`): only where every process the
    /// backend starts execs, which ends the handler. A container init forked from this process
    /// that waits for `start` (libcontainer's) would keep it, and the init of a PID namespace
    /// cannot fall back on the default action of a signal it catches.
    fn create_interruptible(&self) -> bool {
        false
    }

    /// Releases the waiting process into the user's program.
    fn start(&self, ctx: &ContainerCtx<'_>) -> Result<(), BackendError>;

    /// Current status; the default derives it from the recorded status and whether the recorded
    /// init process still lives.
    fn status(&self, ctx: &ContainerCtx<'_>) -> Result<Status, BackendError> {
        Ok(default_status(ctx.state))
    }

    fn kill(&self, ctx: &ContainerCtx<'_>, signal: i32, all: bool) -> Result<(), BackendError>;

    /// Sends `signal` to a process that `exec` started, known by the pid `exec` returned. The
    /// default signals that host process (the exec'd process itself where the container's
    /// processes are the host's); a backend whose pid stands for a process elsewhere (a VM's
    /// guest) reaches that process.
    fn kill_exec(
        &self,
        _ctx: &ContainerCtx<'_>,
        pid: i32,
        signal: i32,
    ) -> Result<(), BackendError> {
        let sig = nix::sys::signal::Signal::try_from(signal)
            .map_err(|_| BackendError::msg(format!("invalid signal {signal}")))?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig)
            .map_err(|e| BackendError::msg(format!("signal process {pid}: {e}")))
    }

    fn pause(&self, ctx: &ContainerCtx<'_>) -> Result<(), BackendError>;

    fn resume(&self, ctx: &ContainerCtx<'_>) -> Result<(), BackendError>;

    /// Removes everything the container has on the host (processes when `force`, cgroups,
    /// mounts, devices, files) and runs the poststop hooks. The core removes the state directory.
    fn delete(&self, ctx: &ContainerCtx<'_>, force: bool) -> Result<(), BackendError>;

    /// Starts a process in the container and returns its pid; without `detach` the process is a
    /// child of the caller, which waits for it.
    fn exec(&self, ctx: &ContainerCtx<'_>, opts: &ExecOpts<'_>) -> Result<i32, BackendError>;

    /// Pids of every process in the container, as the host sees them.
    fn pids(&self, ctx: &ContainerCtx<'_>) -> Result<Vec<i32>, BackendError>;

    /// The container's processes as `ps -ef` shows them, for a backend whose processes the
    /// host's `ps` cannot see (a VM's); `None` (the default): `ps` reads the host's /proc for
    /// [`Backend::pids`].
    fn process_table(
        &self,
        _ctx: &ContainerCtx<'_>,
    ) -> Result<Option<Vec<ProcessRow>>, BackendError> {
        Ok(None)
    }

    /// Resource usage in runc's `events --stats` shape (`cpu`, `memory`, `pids`, …).
    fn stats(&self, ctx: &ContainerCtx<'_>) -> Result<serde_json::Value, BackendError>;

    /// Changes the container's resource limits.
    fn update(
        &self,
        ctx: &ContainerCtx<'_>,
        resources: &LinuxResources,
    ) -> Result<(), BackendError>;
}

/// Status from the recorded state and the liveness of the recorded init.
pub fn default_status(state: &State) -> Status {
    match (state.status, state.pid) {
        (Status::Stopped, _) => Status::Stopped,
        (Status::Creating, None) => Status::Creating,
        (_, None) => Status::Stopped,
        (recorded, Some(pid)) => {
            if process::is_alive(pid, state.pid_start_time) {
                recorded
            } else {
                Status::Stopped
            }
        }
    }
}

/// Hands the core the backend for an isolation; implemented by the binary that links them.
pub trait BackendRegistry {
    fn get(&self, isolation: Isolation) -> Result<&dyn Backend, Error>;
}

/// One row of [`Backend::process_table`]: what `ps -ef` prints of a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessRow {
    /// The pid where the process runs (a guest pid for a VM).
    pub pid: i32,
    pub ppid: i32,
    /// Effective uid, and its name where the process's own /etc/passwd has one.
    pub uid: u32,
    pub user: Option<String>,
    /// Start, seconds since the Unix epoch.
    pub start_time: u64,
    /// User + system CPU time, milliseconds.
    pub cpu_time_ms: u64,
    /// Seconds since the start (for %CPU).
    pub elapsed_secs: u64,
    /// Controlling terminal ("pts/0"); empty when none.
    pub tty: String,
    pub cmd: String,
}
