//! runc-style containers on the host kernel, through youki's `libcontainer`.
//!
//! libcontainer keeps its own bookkeeping under `<state_root>/<id>` (the caller gives each
//! container a private `state_root`); everything here is addressed by that root and the id.

use std::os::fd::OwnedFd;
use std::path::Path;

use libcgroups::common::{CgroupConfig, CgroupManager, ControllerOpt};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::{Container, ContainerStatus};
use libcontainer::signal::Signal;
use libcontainer::syscall::syscall::SyscallType;
use oci_spec::runtime::LinuxResources;

pub use crate::cgroup_stats::{oom_kills, runc_stats, Usage};
use crate::cgroup_stats::{usage_from, usage_v2};
use crate::executor::{describe, RuncExecutor};
use crate::{Error, Status};

/// A failed build: runc's words when the program could not start, else libcontainer's error.
fn build_error(e: libcontainer::error::LibcontainerError) -> Error {
    match describe(&e) {
        Some(msg) => Error::Setup(msg),
        None => Error::Libcontainer(e),
    }
}

/// Parameters of [`create`].
#[derive(Debug)]
pub struct CreateParams<'a> {
    pub id: &'a str,
    pub bundle: &'a Path,
    /// A directory private to this container; libcontainer's files go below it.
    pub state_root: &'a Path,
    pub console_socket: Option<&'a Path>,
    pub preserve_fds: i32,
    pub no_pivot: bool,
    pub systemd: bool,
    /// Keep the init a child of the caller (foreground `run`).
    pub foreground: bool,
}

/// Descriptors that become the process's stdin/stdout/stderr (each `None`: inherited from the
/// caller). Ignored for a process that gets a terminal through a console socket.
#[derive(Debug, Default)]
pub struct Stdio {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

fn with_stdio(mut b: ContainerBuilder, stdio: Stdio) -> ContainerBuilder {
    if let Some(fd) = stdio.stdin {
        b = b.with_stdin(fd);
    }
    if let Some(fd) = stdio.stdout {
        b = b.with_stdout(fd);
    }
    if let Some(fd) = stdio.stderr {
        b = b.with_stderr(fd);
    }
    b
}

/// Creates the container; its init waits on libcontainer's notify socket for [`start`].
/// Returns the init's pid.
pub fn create(p: &CreateParams<'_>) -> Result<i32, Error> {
    create_with_stdio(p, Stdio::default())
}

/// [`create`] with the init's stdio connected to `stdio`.
///
/// The init is cloned by libcontainer's intermediate process as a sibling of it, so it is a
/// child of the caller; with `foreground == false` the caller may exit and leave the init to
/// its (sub)reaper. libcontainer changes caller-wide state (dumpable flag, oom_score_adj, the
/// current directory while connecting a console socket) and clones without fork handlers, so a
/// multi-threaded caller should run this in a helper process.
pub fn create_with_stdio(p: &CreateParams<'_>, stdio: Stdio) -> Result<i32, Error> {
    std::fs::create_dir_all(p.state_root)
        .map_err(|e| Error::io(format!("create {}", p.state_root.display()), e))?;
    let (bundle, cgroups_path) = normalized_bundle(p.bundle, p.state_root)?;
    if let Some(path) = cgroups_path {
        if crate::shared_cgroup::check(&cgroup_dirs(Path::new(&path)))? {
            let marker = p.state_root.join(SHARED_CGROUP);
            std::fs::write(&marker, path)
                .map_err(|e| Error::io(format!("write {}", marker.display()), e))?;
        }
    }
    let builder = ContainerBuilder::new(p.id.to_string(), SyscallType::default());
    let container = with_stdio(builder, stdio)
        .with_executor(RuncExecutor)
        .with_root_path(p.state_root)?
        .with_console_socket(p.console_socket)
        .with_preserved_fds(p.preserve_fds)
        .validate_id()?
        .as_init(&bundle)
        .with_systemd(p.systemd)
        // libcontainer reads `detach` only to pair a terminal with a console socket; a
        // foreground run whose caller relays the pty gives one too.
        .with_detach(!p.foreground || p.console_socket.is_some())
        .with_no_pivot(p.no_pivot)
        .build()
        .map_err(build_error)?;
    container
        .pid()
        .map(|pid| pid.as_raw())
        .ok_or_else(|| Error::Setup("libcontainer reported no init pid".into()))
}

/// The spec as libcontainer accepts it, for what runc takes and libcontainer refuses:
/// `rootfsPropagation` `rprivate`/`rslave`/`rshared`/`runbindable` (the root is always changed
/// recursively) and mounts without a `source` (valid in the spec: a `proc` or `tmpfs` mount
/// needs none). When nothing needs changing, the bundle itself; otherwise a copy of its
/// config.json with those values rewritten and an absolute root path, in `state_root`.
/// Also returns the spec's `linux.cgroupsPath`.
fn normalized_bundle(
    bundle: &Path,
    state_root: &Path,
) -> Result<(std::path::PathBuf, Option<String>), Error> {
    let config = bundle.join("config.json");
    let text =
        std::fs::read(&config).map_err(|e| Error::io(format!("read {}", config.display()), e))?;
    let Ok(mut spec) = serde_json::from_slice::<serde_json::Value>(&text) else {
        // libcontainer reports the parse error in its own words.
        return Ok((bundle.to_path_buf(), None));
    };
    let cgroups_path = spec
        .pointer("/linux/cgroupsPath")
        .and_then(|p| p.as_str())
        .filter(|p| !p.is_empty())
        .map(str::to_string);
    check_unified(&spec, unified_cgroups)?;
    // libcontainer writes the process's oomScoreAdj to the caller's /proc/self/oom_score_adj
    // before it clones; a refusal comes back as a bare "io error". Writing the same value to
    // the same process first changes nothing else and lets the error name the setting.
    if let Some(adj) = spec
        .pointer("/process/oomScoreAdj")
        .and_then(|v| v.as_i64())
    {
        let adj = i32::try_from(adj)
            .map_err(|_| Error::Setup(format!("process.oomScoreAdj {adj} is out of range")))?;
        crate::process::set_oom_score_adj(adj)?;
    }
    let late = take_late_hooks(&mut spec);
    let dir = state_root.join("bundle");
    if let Some(hooks) = &late {
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        let path = dir.join(LATE_HOOKS);
        let json =
            serde_json::to_vec(hooks).map_err(|e| Error::Setup(format!("encode hooks: {e}")))?;
        std::fs::write(&path, json)
            .map_err(|e| Error::io(format!("write {}", path.display()), e))?;
    }
    if !normalize_spec(&mut spec, bundle) && late.is_none() {
        return Ok((bundle.to_path_buf(), cgroups_path));
    }
    absolute_root(&mut spec, bundle);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    let path = dir.join("config.json");
    let json = serde_json::to_vec(&spec).map_err(|e| Error::Setup(format!("encode spec: {e}")))?;
    std::fs::write(&path, json).map_err(|e| Error::io(format!("write {}", path.display()), e))?;
    Ok((dir, cgroups_path))
}

/// Rewrites what [`normalized_bundle`] describes; true when anything changed.
fn normalize_spec(spec: &mut serde_json::Value, bundle: &Path) -> bool {
    let mut changed = false;
    if let Some(prop) = spec.pointer_mut("/linux/rootfsPropagation") {
        let plain = match prop.as_str() {
            Some("rprivate") => Some("private"),
            Some("rslave") => Some("slave"),
            Some("rshared") => Some("shared"),
            Some("runbindable") => Some("unbindable"),
            _ => None,
        };
        if let Some(p) = plain {
            *prop = p.into();
            changed = true;
        }
    }
    for m in spec
        .get_mut("mounts")
        .and_then(|m| m.as_array_mut())
        .into_iter()
        .flatten()
    {
        let Some(obj) = m.as_object_mut() else {
            continue;
        };
        if obj.get("source").is_none_or(|s| s.is_null()) {
            let source = obj
                .get("type")
                .and_then(|t| t.as_str())
                .unwrap_or("none")
                .to_string();
            obj.insert("source".into(), source.into());
            changed = true;
        }
    }
    // runc applies all five capability sets at once, a missing one being empty; libcontainer
    // leaves a missing set as the caller's (the whole effective set of root), and then cannot
    // shrink the permitted set below it ("failed syscall" for a process whose capabilities
    // are only permitted and ambient, which runc and crun run).
    if let Some(caps) = spec
        .pointer_mut("/process/capabilities")
        .and_then(|c| c.as_object_mut())
    {
        for set in CAP_SETS {
            if caps.get(set).is_none_or(|v| v.is_null()) {
                caps.insert(set.into(), serde_json::Value::Array(Vec::new()));
                changed = true;
            }
        }
    }
    // runc answers ENOSYS for syscalls newer than a restrictive profile (glibc's clone3
    // fallback needs it); libcontainer loads the filter as the spec says.
    if crate::seccomp::add_enosys_rule(spec) {
        changed = true;
    }
    if changed {
        absolute_root(spec, bundle);
    }
    changed
}

/// Whether the host's cgroups are v2 only (a hybrid host counts as v1, as for runc).
pub(crate) fn unified_cgroups() -> bool {
    matches!(
        libcgroups::common::get_cgroup_setup(),
        Ok(libcgroups::common::CgroupSetup::Unified)
    )
}

/// runc refuses `linux.resources.unified` unless the host's cgroups are v2 only;
/// libcontainer would ignore it on v1. The host is probed only when the spec asks (create is
/// the hot path).
fn check_unified(spec: &serde_json::Value, unified: impl FnOnce() -> bool) -> Result<(), Error> {
    let asked = spec
        .pointer("/linux/resources/unified")
        .and_then(|u| u.as_object())
        .is_some_and(|u| !u.is_empty());
    if asked && !unified() {
        return Err(Error::Setup(
            "invalid configuration: cannot use unified on cgroup v1".into(),
        ));
    }
    Ok(())
}

const CAP_SETS: [&str; 5] = [
    "bounding",
    "effective",
    "permitted",
    "inheritable",
    "ambient",
];

fn absolute_root(spec: &mut serde_json::Value, bundle: &Path) {
    if let Some(root) = spec.pointer_mut("/root/path") {
        if let Some(rel) = root.as_str().filter(|r| !r.starts_with('/')) {
            *root = bundle.join(rel).to_string_lossy().into_owned().into();
        }
    }
}

/// The poststart and poststop hooks, kept beside the normalized spec.
const LATE_HOOKS: &str = "late-hooks.json";

/// Takes the poststart and poststop hooks out of the spec: libcontainer stops at the first
/// failing one and fails `start`/`delete`, where the OCI spec wants a warning and the remaining
/// hooks and the lifecycle to go on. [`start`] and [`delete`] run them instead.
fn take_late_hooks(spec: &mut serde_json::Value) -> Option<serde_json::Value> {
    let hooks = spec.get_mut("hooks")?.as_object_mut()?;
    let mut late = serde_json::Map::new();
    for phase in ["poststart", "poststop"] {
        if let Some(list) = hooks.remove(phase) {
            late.insert(phase.into(), list);
        }
    }
    (!late.is_empty()).then_some(serde_json::Value::Object(late))
}

/// Runs the `phase` hooks kept by [`take_late_hooks`], each on its own; a failure is a warning.
fn run_late_hooks(state_root: &Path, phase: &str, state: &libcontainer::container::State) {
    let path = state_root.join("bundle").join(LATE_HOOKS);
    let Ok(text) = std::fs::read(&path) else {
        return;
    };
    let hooks: Vec<oci_spec::runtime::Hook> = serde_json::from_slice::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| serde_json::from_value(v.get(phase)?.clone()).ok())
        .unwrap_or_default();
    for hook in hooks {
        let one = vec![hook];
        if let Err(e) = libcontainer::hooks::run_hooks(Some(&one), Some(state), None, None, None) {
            tracing::warn!(error = %clearbox_util::error::chain(&e), "{phase} hook failed");
        }
    }
}

fn load(state_root: &Path, id: &str) -> Result<Container, Error> {
    let mut c = Container::load(state_root.join(id))?;
    c.refresh_status()?;
    Ok(c)
}

/// Releases the init and returns once it runs the container's program (bounded), so that a
/// signal sent right after `start` reaches the program: until it execs, the init is still this
/// library's setup code, which as the pid namespace's init ignores signals without a handler.
pub fn start(state_root: &Path, id: &str) -> Result<(), Error> {
    let mut c = load(state_root, id)?;
    let pid = c.pid().map(|p| p.as_raw());
    c.start()?;
    if let Some(pid) = pid {
        wait_for_exec(pid, std::time::Duration::from_secs(2));
        wait_until_idle(pid, std::time::Duration::from_millis(500));
    }
    run_late_hooks(state_root, "poststart", &c.state);
    Ok(())
}

/// Waits (at most `limit`) until the freshly exec'd `pid` first sleeps: past its start-up (the
/// program's pages come in through a slow file system in a VM), when it has installed its signal
/// handlers. A signal sent before then to a pid namespace's init without a handler is dropped
/// by the kernel; a program that never sleeps costs `start` at most `limit`.
fn wait_until_idle(pid: i32, limit: std::time::Duration) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    // Readable once the process exited: a program that ends during a step ends the wait
    // there, not at the step's end (`run` of a short program). Opened while the process
    // cannot be reaped yet by anyone but its waiter, so the pid is still the init's.
    let exited = clearbox_util::proc::pidfd_open(pid).ok();
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        let Some(stat) = clearbox_util::proc::stat(pid) else {
            return;
        };
        if !matches!(stat.state, 'R' | 'D') {
            return;
        }
        match &exited {
            Some(fd) => {
                let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
                if matches!(poll(&mut fds, PollTimeout::from(1u8)), Ok(n) if n > 0) {
                    return;
                }
            }
            None => std::thread::sleep(std::time::Duration::from_millis(1)),
        }
    }
}

/// Waits (at most `limit`) until `pid` no longer runs libcontainer's setup code (which names
/// itself `youki:[2:INIT]`), i.e. it exec'd the program, or exited.
fn wait_for_exec(pid: i32, limit: std::time::Duration) {
    let started = std::time::Instant::now();
    let deadline = started + limit;
    while std::time::Instant::now() < deadline {
        match std::fs::read_to_string(format!("/proc/{pid}/comm")) {
            Ok(comm) if comm.starts_with("youki:") => {
                // The exec follows within a fraction of a millisecond on a host: fine steps
                // first (the name changes exactly at the exec, so an early answer is exact).
                let step = if started.elapsed() < std::time::Duration::from_millis(5) {
                    std::time::Duration::from_micros(100)
                } else {
                    std::time::Duration::from_millis(1)
                };
                std::thread::sleep(step)
            }
            // Exec'd, or gone.
            _ => return,
        }
    }
}

pub fn status(state_root: &Path, id: &str) -> Result<Status, Error> {
    Ok(match load(state_root, id)?.status() {
        ContainerStatus::Creating => Status::Creating,
        ContainerStatus::Created => Status::Created,
        ContainerStatus::Running => Status::Running,
        ContainerStatus::Paused => Status::Paused,
        ContainerStatus::Stopped => Status::Stopped,
    })
}

pub fn kill(state_root: &Path, id: &str, signal: i32, all: bool) -> Result<(), Error> {
    let sig =
        Signal::try_from(signal).map_err(|_| Error::Setup(format!("unknown signal {signal}")))?;
    Ok(load(state_root, id)?.kill(sig, all)?)
}

pub fn pause(state_root: &Path, id: &str) -> Result<(), Error> {
    Ok(load(state_root, id)?.pause()?)
}

pub fn resume(state_root: &Path, id: &str) -> Result<(), Error> {
    Ok(load(state_root, id)?.resume()?)
}

/// Deletes the container: kills it when `force`, removes its cgroups and runs poststop hooks.
/// A container whose libcontainer state never got written (failed create) is a no-op.
pub fn delete(state_root: &Path, id: &str, force: bool) -> Result<(), Error> {
    let dir = state_root.join(id);
    if !dir.join("state.json").exists() {
        return Ok(());
    }
    let mut c = load(state_root, id)?;
    if state_root.join(SHARED_CGROUP).exists() {
        return delete_in_shared_cgroup(state_root, c, force);
    }
    // libcontainer removes only the container's own cgroup: the sub-cgroups of `exec
    // --cgroup` go first (their processes killed when forced), as runc removes them.
    if let Ok(spec) = c.spec() {
        if !c.systemd() {
            remove_sub_cgroups(&spec.cgroup_path, force);
        }
    }
    // libcgroups gives a SIGKILLed container about 100 ms to leave its cgroups before rmdir
    // fails (EBUSY): on a loaded host its processes can take longer to exit. The failed delete
    // has already marked the container stopped and killed it, so another one only retries the
    // removal; the bound keeps a cgroup that never empties an error.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match c.delete(force) {
            Ok(()) => break,
            Err(libcontainer::error::LibcontainerError::CgroupManager(e))
                if std::time::Instant::now() < deadline =>
            {
                tracing::debug!(error = %e, "cgroup still busy, retrying the delete");
                std::thread::sleep(std::time::Duration::from_millis(100));
                c = load(state_root, id)?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    let mut state = c.state.clone();
    state.status = ContainerStatus::Stopped;
    run_late_hooks(state_root, "poststop", &state);
    Ok(())
}

/// Marks a container created in a cgroup that already held other processes (its content: the
/// cgroup path).
const SHARED_CGROUP: &str = "shared-cgroup";

/// [`delete`] of a container whose cgroup held other processes before it (see
/// `shared_cgroup`): libcontainer's delete would SIGKILL everything in the cgroup. As runc
/// 1.1 does, only the container's own processes are killed (its init, and with it its pid
/// namespace; without one of its own, every process of the cgroup, as runc signals them), and
/// the cgroup stays while others are in it.
fn delete_in_shared_cgroup(state_root: &Path, mut c: Container, force: bool) -> Result<(), Error> {
    use libcontainer::error::LibcontainerError;
    let status = c.status();
    match status {
        ContainerStatus::Stopped => {}
        ContainerStatus::Created => {}
        _ if force => {}
        _ => return Err(LibcontainerError::IncorrectStatus(status).into()),
    }
    let spec = c.spec()?;
    if status != ContainerStatus::Stopped {
        if status == ContainerStatus::Paused {
            c.resume()?;
        }
        let own_pid_ns = std::fs::read(c.bundle().join("config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v.pointer("/linux/namespaces").cloned())
            .and_then(|n| n.as_array().cloned())
            .is_some_and(|n| {
                n.iter()
                    .any(|ns| ns["type"] == "pid" && ns.get("path").is_none_or(|p| p.is_null()))
            });
        if own_pid_ns {
            if let Some(pid) = c.pid() {
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                wait_gone(pid.as_raw(), std::time::Duration::from_secs(10));
            }
        } else {
            let sig = Signal::try_from(libc::SIGKILL)
                .map_err(|_| Error::Setup("unknown signal SIGKILL".into()))?;
            c.kill(sig, true)?;
        }
    }
    let dirs = cgroup_dirs(&spec.cgroup_path);
    if !crate::shared_cgroup::remove_empty(&dirs) {
        tracing::warn!(
            "cgroup {} still holds processes that are not the container's: left in place",
            spec.cgroup_path.display()
        );
    }
    std::fs::remove_dir_all(&c.root)
        .map_err(|e| Error::io(format!("remove {}", c.root.display()), e))?;
    let mut state = c.state.clone();
    state.status = ContainerStatus::Stopped;
    run_late_hooks(state_root, "poststop", &state);
    Ok(())
}

/// Waits (at most `limit`) until `pid` is gone or a zombie.
fn wait_gone(pid: i32, limit: std::time::Duration) {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) if !stat.rsplit(") ").next().is_some_and(|r| r.starts_with('Z')) => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            _ => return,
        }
    }
}

/// Every directory that holds the cgroup `cgroup_path`: one per v1 hierarchy, or the unified
/// one.
pub fn cgroup_dirs(cgroup_path: &Path) -> Vec<std::path::PathBuf> {
    let rel = cgroup_path.strip_prefix("/").unwrap_or(cgroup_path);
    let root = Path::new(libcgroups::common::DEFAULT_CGROUP_ROOT);
    if unified_cgroups() {
        return vec![root.join(rel)];
    }
    std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join(rel))
        .filter(|d| d.is_dir())
        .collect()
}

/// Removes the cgroups below the container's, deepest first; with `kill`, their processes are
/// killed first.
fn remove_sub_cgroups(cgroup_path: &Path, kill: bool) {
    fn below(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                below(&e.path(), out);
                out.push(e.path());
            }
        }
    }
    for base in cgroup_dirs(cgroup_path) {
        let mut subs = Vec::new();
        below(&base, &mut subs);
        for sub in subs {
            let procs = || std::fs::read_to_string(sub.join("cgroup.procs")).unwrap_or_default();
            if kill {
                let until = std::time::Instant::now() + std::time::Duration::from_secs(2);
                loop {
                    let pids: Vec<i32> = procs().lines().filter_map(|l| l.parse().ok()).collect();
                    if pids.is_empty() || std::time::Instant::now() > until {
                        break;
                    }
                    for pid in pids {
                        // SAFETY: kill(2) with integers.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            }
            let _ = std::fs::remove_dir(&sub);
        }
    }
}

/// `exec --cgroup`: runc takes a path below the container's cgroup that must exist (in every
/// hierarchy on v1). Its per-controller form (`memory:sub`) is refused clearly: libcontainer
/// would take it for a directory name.
fn check_sub_cgroup(state_root: &Path, id: &str, sub: &str) -> Result<(), Error> {
    if sub.contains(':') {
        return Err(Error::Setup(format!(
            "exec --cgroup {sub}: the CONTROLLER:PATH form is not supported, give a path"
        )));
    }
    let rel = Path::new(sub);
    if rel.is_absolute()
        || rel
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(Error::Setup(format!(
            "exec --cgroup {sub}: not a relative path below the container's cgroup"
        )));
    }
    let c = load(state_root, id)?;
    let spec = c.spec()?;
    for dir in cgroup_dirs(&spec.cgroup_path) {
        if !dir.join(rel).is_dir() {
            return Err(Error::Setup(format!(
                "exec --cgroup {sub}: no cgroup {}",
                dir.join(rel).display()
            )));
        }
    }
    Ok(())
}

/// Parameters of [`exec`].
#[derive(Debug)]
pub struct ExecParams<'a> {
    pub id: &'a str,
    pub state_root: &'a Path,
    /// A JSON file holding the complete OCI process to run.
    pub process_file: &'a Path,
    pub console_socket: Option<&'a Path>,
    pub detach: bool,
    pub preserve_fds: i32,
    pub ignore_paused: bool,
    pub sub_cgroup: Option<&'a str>,
}

/// Runs a process in the container's namespaces and cgroup; returns its pid (a child of the
/// caller unless `detach`).
pub fn exec(p: &ExecParams<'_>) -> Result<i32, Error> {
    exec_with_stdio(p, Stdio::default())
}

/// [`exec`] with the process's stdio connected to `stdio` (same caveats as
/// [`create_with_stdio`]).
pub fn exec_with_stdio(p: &ExecParams<'_>, stdio: Stdio) -> Result<i32, Error> {
    if let Some(sub) = p.sub_cgroup {
        check_sub_cgroup(p.state_root, p.id, sub)?;
    }
    let _created = CreatedAsRunning::mark(p.state_root, p.id)?;
    let builder = ContainerBuilder::new(p.id.to_string(), SyscallType::default());
    let pid = with_stdio(builder, stdio)
        .with_executor(RuncExecutor)
        .with_root_path(p.state_root)?
        .with_console_socket(p.console_socket)
        .with_preserved_fds(p.preserve_fds)
        .validate_id()?
        .as_tenant()
        .with_detach(p.detach || p.console_socket.is_some())
        .with_process(Some(p.process_file))
        .with_ignore_paused(p.ignore_paused)
        .with_sub_cgroup(p.sub_cgroup.map(str::to_string))
        .build()
        .map_err(build_error)?;
    Ok(pid.as_raw())
}

/// runc runs an exec'd process in a created (not yet started) container: it joins the
/// namespaces of the waiting init. libcontainer's tenant builder only accepts a running
/// container, so a created one is recorded as running for the duration of the exec and put back
/// afterwards. The caller holds the container's lock, so no other command sees the change.
struct CreatedAsRunning(Option<Container>);

impl CreatedAsRunning {
    fn mark(state_root: &Path, id: &str) -> Result<Self, Error> {
        let mut c = load(state_root, id)?;
        if c.status() != ContainerStatus::Created {
            return Ok(Self(None));
        }
        c.set_status(ContainerStatus::Running);
        c.save()?;
        Ok(Self(Some(c)))
    }
}

impl Drop for CreatedAsRunning {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            c.set_status(ContainerStatus::Created);
            if let Err(e) = c.save() {
                tracing::warn!(error = %e, "cannot restore the created state after exec");
            }
        }
    }
}

fn cgroup_manager(
    state_root: &Path,
    id: &str,
) -> Result<Box<dyn CgroupManager<Error = libcgroups::common::AnyManagerError>>, Error> {
    let c = load(state_root, id)?;
    let config = c.spec()?;
    let manager = libcgroups::common::create_cgroup_manager(CgroupConfig {
        cgroup_path: config.cgroup_path,
        systemd_cgroup: c.systemd(),
        container_name: id.to_string(),
    })
    .map_err(|e| Error::Cgroups(Box::new(e)))?;
    Ok(Box::new(manager))
}

/// Every pid in the container's cgroup.
pub fn pids(state_root: &Path, id: &str) -> Result<Vec<i32>, Error> {
    let m = cgroup_manager(state_root, id)?;
    let pids = m.get_all_pids().map_err(|e| Error::Cgroups(Box::new(e)))?;
    Ok(pids.into_iter().map(|p| p.as_raw()).collect())
}

/// Resource usage read from the container's cgroup, in the shape of runc's `events` data
/// (`cpu.usage.total`, `memory.usage.limit`, `pids.current`, ...), plus `memory.oom_kill`:
/// the OOM kills counted in the cgroup so far (the `events` command turns its growth into
/// `oom` events and drops the field).
pub fn stats(state_root: &Path, id: &str) -> Result<serde_json::Value, Error> {
    let m = cgroup_manager(state_root, id)?;
    let stats = m.stats().map_err(|e| Error::Cgroups(Box::new(e)))?;
    let c = load(state_root, id)?;
    let ooms = oom_kills(&c.spec()?.cgroup_path);
    Ok(runc_stats(&stats, ooms))
}

/// [`stats`] reduced to the common numbers, in fixed units.
pub fn usage(state_root: &Path, id: &str) -> Result<Usage, Error> {
    let unified = matches!(
        libcgroups::common::get_cgroup_setup(),
        Ok(libcgroups::common::CgroupSetup::Unified)
    );
    if unified {
        let c = load(state_root, id)?;
        if !c.systemd() {
            let rel = c.spec()?.cgroup_path;
            let dir = Path::new(libcgroups::common::DEFAULT_CGROUP_ROOT)
                .join(rel.strip_prefix("/").unwrap_or(&rel));
            return usage_v2(&dir);
        }
    }
    let m = cgroup_manager(state_root, id)?;
    let stats = m.stats().map_err(|e| Error::Cgroups(Box::new(e)))?;
    let mut u = usage_from(&stats, unified);
    u.oom_kill = oom_kills(&load(state_root, id)?.spec()?.cgroup_path).unwrap_or(0);
    Ok(u)
}

/// Applies new resource limits to the container's cgroup.
pub fn update(state_root: &Path, id: &str, resources: &LinuxResources) -> Result<(), Error> {
    let m = cgroup_manager(state_root, id)?;
    m.apply(&ControllerOpt {
        resources,
        disable_oom_killer: resources
            .memory()
            .as_ref()
            .and_then(|m| m.disable_oom_killer())
            .unwrap_or(false),
        oom_score_adj: None,
        freezer_state: None,
    })
    .map_err(|e| Error::Cgroups(Box::new(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_are_normalized_for_libcontainer() {
        let mut v = serde_json::json!({
            "root": {"path": "rootfs"},
            "linux": {"rootfsPropagation": "rprivate"},
            "mounts": [{"destination": "/proc", "type": "proc"},
                       {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}],
        });
        assert!(normalize_spec(&mut v, Path::new("/b")));
        assert_eq!(v["linux"]["rootfsPropagation"], "private");
        assert_eq!(v["mounts"][0]["source"], "proc");
        assert_eq!(v["root"]["path"], "/b/rootfs");
        let mut plain = serde_json::json!({"root": {"path": "rootfs"}, "mounts": []});
        assert!(!normalize_spec(&mut plain, Path::new("/b")));
        assert_eq!(plain["root"]["path"], "rootfs");
    }

    #[test]
    fn missing_capability_sets_are_empty() {
        let mut v = serde_json::json!({"process": {"capabilities": {
            "bounding": ["CAP_NET_RAW"], "permitted": ["CAP_NET_RAW"],
            "inheritable": ["CAP_NET_RAW"], "ambient": ["CAP_NET_RAW"]}}});
        assert!(normalize_spec(&mut v, Path::new("/b")));
        assert_eq!(
            v["process"]["capabilities"]["effective"],
            serde_json::json!([])
        );
        assert_eq!(
            v["process"]["capabilities"]["bounding"],
            serde_json::json!(["CAP_NET_RAW"])
        );
    }

    #[test]
    fn unified_resources_need_cgroup_v2() {
        let v = serde_json::json!({"linux": {"resources": {"unified": {"memory.high": "1"}}}});
        let e = check_unified(&v, || false).unwrap_err().to_string();
        assert!(e.contains("cannot use unified on cgroup v1"), "{e}");
        assert!(check_unified(&v, || true).is_ok());
        let none = serde_json::json!({"linux": {"resources": {"unified": {}}}});
        assert!(check_unified(&none, || false).is_ok());
    }
}
