//! The container lifecycle: what every command does, independent of the isolation.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use chrono::Utc;
use oci_spec::runtime::{LinuxResources, Process, Spec};

use crate::backend::{BackendRegistry, ContainerCtx, CreateOpts, ExecOpts};
use crate::config::Config;
use crate::error::Error;
use crate::id;
use crate::isolation::{self, Isolation};
use crate::process;
use crate::state::{Locked, State, StateStore, Status};

/// Where a copy of the container's config.json is kept, inside its state directory.
pub const SPEC_COPY: &str = "config.json";

/// The default isolation: every container in its own VM (the VM backend passes the lifecycle,
/// podman, Docker and containerd suites end to end).
pub const DEFAULT_ISOLATION: Isolation = Isolation::Vm;

/// Arguments of `create` (and `run`).
#[derive(Debug, Default)]
pub struct CreateArgs {
    pub id: String,
    pub bundle: PathBuf,
    pub console_socket: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    pub preserve_fds: i32,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
}

/// Arguments of `exec`, before they are merged into one OCI process.
#[derive(Debug, Default)]
pub struct ExecArgs {
    pub id: String,
    pub process_file: Option<PathBuf>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
    pub user: Option<(u32, Option<u32>)>,
    pub additional_gids: Vec<u32>,
    pub tty: bool,
    pub caps: Vec<String>,
    pub no_new_privs: bool,
    pub apparmor: Option<String>,
    pub console_socket: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    pub detach: bool,
    pub preserve_fds: i32,
    pub ignore_paused: bool,
    pub cgroup: Option<String>,
}

/// The lifecycle engine: state store + configuration + the backends the binary linked in.
pub struct Runtime<'r> {
    store: StateStore,
    config: Config,
    registry: &'r dyn BackendRegistry,
    flag_isolation: Option<Isolation>,
    systemd_cgroup: bool,
}

impl<'r> Runtime<'r> {
    pub fn new(
        root: impl Into<PathBuf>,
        config: Config,
        registry: &'r dyn BackendRegistry,
        flag_isolation: Option<Isolation>,
        systemd_cgroup: bool,
    ) -> Result<Self, Error> {
        Ok(Self {
            store: StateStore::new(root)?,
            config,
            registry,
            flag_isolation,
            systemd_cgroup,
        })
    }

    pub fn store(&self) -> &StateStore {
        &self.store
    }

    /// Creates a container; its init waits for `start`. `foreground` keeps the init a child of
    /// this process (for `run`).
    pub fn create(&self, args: &CreateArgs, foreground: bool) -> Result<State, Error> {
        id::validate(&args.id)?;
        let _sigpipe = process::SigpipeIgnored::new();
        let (bundle, spec) = load_bundle(&args.bundle)?;
        let rootfs = rootfs_of(&bundle, &spec)?;
        let iso = isolation::select(
            spec.annotations().as_ref(),
            self.flag_isolation,
            self.config.isolation,
            DEFAULT_ISOLATION,
        )?;
        let backend = self.registry.get(iso)?;
        if let Some(sock) = &args.console_socket {
            if !sock.exists() {
                return Err(Error::Usage(format!(
                    "console socket {} does not exist",
                    sock.display()
                )));
            }
        }
        let terminal = spec
            .process()
            .as_ref()
            .and_then(|p| p.terminal())
            .unwrap_or(false);
        if terminal && args.console_socket.is_none() && !foreground {
            return Err(Error::Usage(
                "process.terminal is true but no --console-socket was given".into(),
            ));
        }
        if !terminal && args.console_socket.is_some() {
            return Err(Error::Usage(
                "--console-socket given but process.terminal is false".into(),
            ));
        }

        // From here on a signal that ends clearbox would leave the container half-made (a VM
        // booting for seconds): where the backend allows it, the signal is caught, the create
        // undone, and the caller ends with the signal (`Error::Interrupted`).
        let interrupt = backend
            .create_interruptible()
            .then(clearbox_util::interrupt::Armed::arm)
            .transpose()
            .map_err(|e| Error::io("cannot catch termination signals", "sigaction", e))?;
        let caught = || interrupt.as_ref().and_then(|i| i.caught());
        let locked = self.store.create(&args.id)?;
        let mut state = State {
            oci_version: crate::OCI_VERSION.to_string(),
            id: args.id.clone(),
            status: Status::Creating,
            pid: None,
            bundle: bundle.clone(),
            rootfs: rootfs.clone(),
            created: Utc::now(),
            owner: owner_name(),
            annotations: spec.annotations().clone().unwrap_or_default(),
            isolation: iso,
            pid_start_time: None,
            systemd_cgroup: self.systemd_cgroup,
        };
        let pid_written = std::cell::Cell::new(false);
        let result = (|| -> Result<(), Error> {
            locked.save(&state)?;
            // The bytes as validated, not a re-encoding: create is the hot path.
            let copy = locked.dir().join(SPEC_COPY);
            fs::copy(bundle.join("config.json"), &copy)
                .map_err(|e| Error::io("cannot keep a copy of", copy, e))?;
            let created = backend.create(&CreateOpts {
                id: &args.id,
                bundle: &bundle,
                rootfs: &rootfs,
                spec: &spec,
                dir: locked.dir(),
                console_socket: args.console_socket.as_deref(),
                preserve_fds: args.preserve_fds,
                no_pivot: args.no_pivot,
                no_new_keyring: args.no_new_keyring,
                systemd_cgroup: self.systemd_cgroup,
                foreground,
                interrupt: interrupt.as_ref().map(|i| i.wake_fd()),
            })?;
            state.pid = Some(created.pid);
            state.pid_start_time = process::start_time(created.pid);
            state.status = Status::Created;
            if let Some(sig) = caught() {
                return Err(Error::Interrupted(sig));
            }
            locked.save(&state)?;
            if let Some(p) = &args.pid_file {
                write_pid_file(p, created.pid)?;
                pid_written.set(true);
            }
            Ok(())
        })();
        // Leave nothing behind: the backend undoes what it did, the pid file (if written) and
        // then the directory go.
        let undo = |state: &State| {
            let ctx = ContainerCtx {
                id: &args.id,
                dir: locked.dir(),
                state,
            };
            if state.pid.is_some() {
                if let Err(cleanup) = backend.delete(&ctx, true) {
                    tracing::warn!(error = %cleanup, "cleanup after failed create");
                }
            }
            if let (Some(p), true) = (&args.pid_file, pid_written.get()) {
                let _ = fs::remove_file(p);
            }
            let _ = locked.remove();
        };
        // A signal that came while the backend failed for another reason is the one to report.
        let result = match (result, caught()) {
            (Err(_), Some(sig)) => Err(Error::Interrupted(sig)),
            (r, _) => r,
        };
        if let Err(e) = result {
            // Still caught meanwhile: the cleanup runs to its end.
            undo(&state);
            return Err(e);
        }
        // From here a signal has its default action again; one that came just before is seen
        // now.
        let armed = interrupt.is_some();
        drop(interrupt);
        if let Some(sig) = armed.then(clearbox_util::interrupt::caught).flatten() {
            undo(&state);
            return Err(Error::Interrupted(sig));
        }
        Ok(state)
    }

    /// Locks a container and refreshes its status from the backend.
    fn open(&self, id: &str) -> Result<(Locked, State), Error> {
        id::validate(id)?;
        let locked = self.store.open(id)?;
        let mut state = locked.load()?;
        let backend = self.registry.get(state.isolation)?;
        let status = backend.status(&ContainerCtx {
            id,
            dir: locked.dir(),
            state: &state,
        })?;
        if status != state.status {
            state.status = status;
            locked.save(&state)?;
        }
        Ok((locked, state))
    }

    pub fn state(&self, id: &str) -> Result<State, Error> {
        self.open(id).map(|(_, s)| s)
    }

    pub fn start(&self, id: &str) -> Result<State, Error> {
        let _sigpipe = process::SigpipeIgnored::new();
        let (locked, mut state) = self.open(id)?;
        match state.status {
            Status::Created => {}
            Status::Stopped => {
                return Err(Error::WrongState {
                    action: "cannot start a container that has stopped",
                    id: id.into(),
                    status: state.status,
                })
            }
            other => {
                return Err(Error::WrongState {
                    action: "cannot start an already running container",
                    id: id.into(),
                    status: other,
                })
            }
        }
        let backend = self.registry.get(state.isolation)?;
        backend.start(&ContainerCtx {
            id,
            dir: locked.dir(),
            state: &state,
        })?;
        state.status = Status::Running;
        locked.save(&state)?;
        Ok(state)
    }

    /// Sends `signal` to the init (every process with `all`). Signal 0 only checks that the
    /// container is alive, as `kill(2)` and runc do.
    pub fn kill(&self, id: &str, signal: i32, all: bool) -> Result<(), Error> {
        let (locked, state) = self.open(id)?;
        if state.status == Status::Stopped && (!all || signal == 0) {
            return Err(Error::NotRunning);
        }
        if signal == 0 {
            return Ok(());
        }
        let backend = self.registry.get(state.isolation)?;
        backend.kill(
            &ContainerCtx {
                id,
                dir: locked.dir(),
                state: &state,
            },
            signal,
            all,
        )?;
        Ok(())
    }

    /// Sends `signal` to a process exec'd into the container (`pid`: what [`Self::exec`]
    /// returned). [`Error::NotRunning`] when that process is gone.
    pub fn kill_exec(&self, id: &str, pid: i32, signal: i32) -> Result<(), Error> {
        let (locked, state) = self.open(id)?;
        if pid <= 0 || !process::is_alive(pid, None) {
            return Err(Error::NotRunning);
        }
        let backend = self.registry.get(state.isolation)?;
        backend.kill_exec(
            &ContainerCtx {
                id,
                dir: locked.dir(),
                state: &state,
            },
            pid,
            signal,
        )?;
        Ok(())
    }

    pub fn delete(&self, id: &str, force: bool) -> Result<(), Error> {
        id::validate(id)?;
        let _sigpipe = process::SigpipeIgnored::new();
        let locked = self.store.open(id)?;
        let state = match locked.load() {
            Ok(s) => s,
            // A state file we cannot read can only be removed, and only on request.
            Err(e @ Error::StateCorrupt { .. }) if !force => return Err(e),
            Err(Error::StateCorrupt { .. }) => return locked.remove(),
            Err(e) => return Err(e),
        };
        let backend = self.registry.get(state.isolation)?;
        let ctx = ContainerCtx {
            id,
            dir: locked.dir(),
            state: &state,
        };
        let status = backend.status(&ctx)?;
        match status {
            Status::Stopped | Status::Created | Status::Creating => {}
            Status::Running | Status::Paused if force => {}
            other => {
                return Err(Error::NotStopped {
                    id: id.into(),
                    status: other,
                })
            }
        }
        backend.delete(&ctx, force || status != Status::Stopped)?;
        locked.remove()
    }

    pub fn pause(&self, id: &str) -> Result<(), Error> {
        self.transition(id, Status::Running, Status::Paused, "cannot pause")
    }

    pub fn resume(&self, id: &str) -> Result<(), Error> {
        self.transition(id, Status::Paused, Status::Running, "cannot resume")
    }

    fn transition(
        &self,
        id: &str,
        from: Status,
        to: Status,
        action: &'static str,
    ) -> Result<(), Error> {
        let (locked, mut state) = self.open(id)?;
        if state.status != from {
            return Err(Error::WrongState {
                action,
                id: id.into(),
                status: state.status,
            });
        }
        let backend = self.registry.get(state.isolation)?;
        let ctx = ContainerCtx {
            id,
            dir: locked.dir(),
            state: &state,
        };
        if to == Status::Paused {
            backend.pause(&ctx)?;
        } else {
            backend.resume(&ctx)?;
        }
        state.status = to;
        locked.save(&state)
    }

    /// Starts a process in a container. Returns its pid; without `detach` it is our child.
    pub fn exec(&self, args: &ExecArgs) -> Result<i32, Error> {
        let (locked, state) = self.open(&args.id)?;
        match state.status {
            Status::Stopped => {
                return Err(Error::WrongState {
                    action: "cannot exec in a stopped container",
                    id: args.id.clone(),
                    status: state.status,
                })
            }
            Status::Paused if !args.ignore_paused => {
                return Err(Error::WrongState {
                    action: "cannot exec in a paused container (use --ignore-paused to override)",
                    id: args.id.clone(),
                    status: state.status,
                })
            }
            _ => {}
        }
        let spec = Spec::load(locked.dir().join(SPEC_COPY)).map_err(|source| Error::Spec {
            path: locked.dir().to_path_buf(),
            source,
        })?;
        let process = merge_exec_process(&spec, args)?;
        let terminal = process.terminal().unwrap_or(false);
        if terminal && args.console_socket.is_none() && args.detach {
            return Err(Error::Usage(
                "a terminal was requested but no --console-socket was given".into(),
            ));
        }
        let backend = self.registry.get(state.isolation)?;
        let dir = locked.dir().to_path_buf();
        if state.status == Status::Paused {
            // The new process joins a frozen container and cannot finish starting before
            // `resume`, which needs the lock: as runc, exec does not keep it meanwhile.
            drop(locked);
        }
        let pid = backend.exec(
            &ContainerCtx {
                id: &args.id,
                dir: &dir,
                state: &state,
            },
            &ExecOpts {
                process: &process,
                console_socket: args.console_socket.as_deref(),
                detach: args.detach,
                preserve_fds: args.preserve_fds,
                ignore_paused: args.ignore_paused,
                sub_cgroup: args.cgroup.as_deref(),
            },
        )?;
        if let Some(p) = &args.pid_file {
            write_pid_file(p, pid)?;
        }
        Ok(pid)
    }

    /// The container's processes as its backend lists them (see
    /// [`crate::Backend::process_table`]); `None` when the host's `ps` sees them.
    pub fn process_table(&self, id: &str) -> Result<Option<Vec<crate::ProcessRow>>, Error> {
        let (locked, state) = self.open(id)?;
        if state.status == Status::Stopped {
            return Ok(None);
        }
        let backend = self.registry.get(state.isolation)?;
        Ok(backend.process_table(&ContainerCtx {
            id,
            dir: locked.dir(),
            state: &state,
        })?)
    }

    pub fn pids(&self, id: &str) -> Result<Vec<i32>, Error> {
        let (locked, state) = self.open(id)?;
        if state.status == Status::Stopped {
            return Ok(Vec::new());
        }
        let backend = self.registry.get(state.isolation)?;
        Ok(backend.pids(&ContainerCtx {
            id,
            dir: locked.dir(),
            state: &state,
        })?)
    }

    pub fn stats(&self, id: &str) -> Result<serde_json::Value, Error> {
        let (locked, state) = self.open(id)?;
        if state.status == Status::Stopped {
            return Err(Error::NotRunning);
        }
        let backend = self.registry.get(state.isolation)?;
        Ok(backend.stats(&ContainerCtx {
            id,
            dir: locked.dir(),
            state: &state,
        })?)
    }

    /// Statistics of a container that has stopped, while the backend still has them (its
    /// cgroup lives until `delete`): how `events` learns of an OOM kill that ended the init.
    pub fn last_stats(&self, id: &str) -> Option<serde_json::Value> {
        let (locked, state) = self.open(id).ok()?;
        let backend = self.registry.get(state.isolation).ok()?;
        backend
            .stats(&ContainerCtx {
                id,
                dir: locked.dir(),
                state: &state,
            })
            .ok()
    }

    pub fn update(&self, id: &str, resources: &LinuxResources) -> Result<(), Error> {
        let (locked, state) = self.open(id)?;
        if state.status == Status::Stopped {
            return Err(Error::NotRunning);
        }
        let backend = self.registry.get(state.isolation)?;
        backend.update(
            &ContainerCtx {
                id,
                dir: locked.dir(),
                state: &state,
            },
            resources,
        )?;
        Ok(())
    }

    /// Every container's refreshed state; containers that vanish meanwhile are skipped.
    pub fn list(&self) -> Result<Vec<State>, Error> {
        let mut out = Vec::new();
        for id in self.store.ids()? {
            match self.state(&id) {
                Ok(s) => out.push(s),
                Err(Error::NotFound(_)) => {}
                Err(e) => tracing::warn!(id, error = %e, "skipping container"),
            }
        }
        Ok(out)
    }
}

/// Canonicalises the bundle and loads its config.json with errors that name the problem.
pub fn load_bundle(bundle: &Path) -> Result<(PathBuf, Spec), Error> {
    let bundle_err = |reason: String| Error::Bundle {
        path: bundle.to_path_buf(),
        reason,
    };
    let canonical = bundle
        .canonicalize()
        .map_err(|e| bundle_err(format!("cannot open bundle directory: {e}")))?;
    if !canonical.is_dir() {
        return Err(bundle_err("not a directory".into()));
    }
    let config = canonical.join("config.json");
    if !config.exists() {
        return Err(bundle_err("config.json not found".into()));
    }
    let spec = Spec::load(&config).map_err(|source| Error::Spec {
        path: canonical.clone(),
        source,
    })?;
    check_spec(&spec).map_err(bundle_err)?;
    Ok((canonical, spec))
}

/// What `create` requires of a parsed config.json beyond its schema: a process with arguments
/// and an absolute cwd. The error is the reason, naming the field. Public for the fuzz targets.
pub fn check_spec(spec: &Spec) -> Result<(), String> {
    let Some(process) = spec.process() else {
        return Err("config.json has no process".into());
    };
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err("config.json: process.args is empty".into());
    }
    if !process.cwd().is_absolute() {
        return Err(format!(
            "config.json: process.cwd {:?} is not absolute",
            process.cwd()
        ));
    }
    Ok(())
}

/// The canonical rootfs directory named by `root.path` (relative to the bundle).
pub fn rootfs_of(bundle: &Path, spec: &Spec) -> Result<PathBuf, Error> {
    let root = spec.root().as_ref().ok_or_else(|| Error::Bundle {
        path: bundle.to_path_buf(),
        reason: "config.json has no root".into(),
    })?;
    let path = bundle.join(root.path());
    match path.canonicalize() {
        Ok(p) if p.is_dir() => Ok(p),
        Ok(p) => Err(Error::Bundle {
            path: bundle.to_path_buf(),
            reason: format!("rootfs {} is not a directory", p.display()),
        }),
        Err(e) => Err(Error::Bundle {
            path: bundle.to_path_buf(),
            reason: format!("rootfs {}: {e}", path.display()),
        }),
    }
}

/// Builds the process of an `exec`: from `--process` as given, or from the container's own
/// process with the arguments and flags applied on top (as runc does).
pub fn merge_exec_process(spec: &Spec, args: &ExecArgs) -> Result<Process, Error> {
    if let Some(file) = &args.process_file {
        let text = fs::read(file).map_err(|e| Error::io("cannot read process file", file, e))?;
        let invalid = |e: serde_json::Error| {
            Error::Usage(format!("invalid process file {}: {e}", file.display()))
        };
        let mut value: serde_json::Value = serde_json::from_slice(&text).map_err(invalid)?;
        // As runc (Go zero values): a process without `user` runs as uid 0, gid 0.
        if let Some(obj) = value.as_object_mut() {
            obj.entry("user")
                .or_insert_with(|| serde_json::json!({"uid": 0, "gid": 0}));
        }
        let mut p: Process = serde_json::from_value(value).map_err(invalid)?;
        if args.tty {
            p.set_terminal(Some(true));
        }
        return Ok(p);
    }
    if args.args.is_empty() {
        return Err(Error::Usage(
            "exec needs a command, or a process with --process".into(),
        ));
    }
    let mut p = spec.process().clone().unwrap_or_default();
    p.set_args(Some(args.args.clone()));
    p.set_terminal(Some(args.tty));
    if !args.env.is_empty() {
        let mut env: Vec<String> = p.env().clone().unwrap_or_default();
        for (k, v) in &args.env {
            env.retain(|e| e.split_once('=').map(|(ek, _)| ek) != Some(k.as_str()));
            env.push(format!("{k}={v}"));
        }
        p.set_env(Some(env));
    }
    if let Some(cwd) = &args.cwd {
        p.set_cwd(cwd.clone());
    }
    let mut user = p.user().clone();
    if let Some((uid, gid)) = args.user {
        user.set_uid(uid);
        if let Some(g) = gid {
            user.set_gid(g);
        }
    }
    if !args.additional_gids.is_empty() {
        user.set_additional_gids(Some(args.additional_gids.clone()));
    }
    p.set_user(user);
    if args.no_new_privs {
        p.set_no_new_privileges(Some(true));
    }
    if let Some(profile) = &args.apparmor {
        p.set_apparmor_profile(Some(profile.clone()));
    }
    if !args.caps.is_empty() {
        let mut caps = p.capabilities().clone().unwrap_or_default();
        let add = |set: &Option<oci_spec::runtime::Capabilities>, cap| {
            let mut s = set.clone().unwrap_or_default();
            s.insert(cap);
            Some(s)
        };
        for name in &args.caps {
            let upper = name.to_ascii_uppercase();
            let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
            let cap: oci_spec::runtime::Capability = bare
                .parse()
                .map_err(|_| Error::Usage(format!("unknown capability {name:?}")))?;
            caps.set_bounding(add(caps.bounding(), cap));
            caps.set_effective(add(caps.effective(), cap));
            caps.set_permitted(add(caps.permitted(), cap));
        }
        p.set_capabilities(Some(caps));
    }
    Ok(p)
}

/// Writes a pid file atomically, as runc does (conmon and containerd read it right away).
pub fn write_pid_file(path: &Path, pid: i32) -> Result<(), Error> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| Error::Usage(format!("invalid pid file {}", path.display())))?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    let write = || -> std::io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)?;
        f.write_all(pid.to_string().as_bytes())?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io("cannot write pid file", path, e)
    })
}

fn owner_name() -> String {
    let uid = nix::unistd::getuid();
    nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string())
}

#[cfg(test)]
mod tests;
