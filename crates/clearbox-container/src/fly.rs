//! rkt-style "fly" containers: the process runs on the host, rooted in the rootfs, with the
//! user, capabilities, rlimits, environment and working directory of the OCI process — and no new
//! namespaces or cgroups. Meant for privileged host agents.
//!
//! `create` forks the init, which sets itself up and then blocks opening `exec.fifo` in the
//! container's state directory; `start` opens the other end, and the init finishes by dropping
//! to the process's user and exec'ing. This is runc's exec-fifo protocol; it needs no daemon.

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use libcontainer::container::{ContainerStatus, State as HookState};
use nix::fcntl::{open, openat, OFlag};
use nix::sys::signal::{kill, Signal};
use nix::sys::stat::Mode;
use nix::sys::wait::waitpid;
use nix::unistd::{chdir, fork, pipe2, ForkResult, Pid};
use oci_spec::runtime::{Hook, Mount, Process};

use crate::fly_mounts;
use crate::process::{self as proc_setup, ExecImage};
use crate::Error;

const FIFO: &str = "exec.fifo";
/// The container's mount namespace (the init's `/proc/<pid>/ns/mnt` link, `mnt:[<inode>]`),
/// written at create: once the init is gone, its processes are found by it (see `orphans`).
const MOUNT_NS: &str = "mount-ns";

/// Parameters of [`create`].
#[derive(Debug)]
pub struct CreateParams<'a> {
    pub id: &'a str,
    pub bundle: &'a Path,
    pub rootfs: &'a Path,
    /// The container's private state directory (holds the exec fifo).
    pub dir: &'a Path,
    pub process: &'a Process,
    pub mounts: &'a [Mount],
    pub console_socket: Option<&'a Path>,
    pub preserve_fds: i32,
    pub oom_score_adj: Option<i32>,
    pub create_hooks: Vec<Hook>,
    /// The spec's annotations, for the hooks' state.
    pub annotations: &'a HashMap<String, String>,
}

/// Forks the container init and waits until it is set up and blocked on the exec fifo.
pub fn create(p: &CreateParams<'_>) -> Result<i32, Error> {
    let fifo = p.dir.join(FIFO);
    nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o622))
        .map_err(|e| Error::sys(format!("mkfifo {}", fifo.display()), e))?;
    let pid = spawn(
        p.process,
        p.rootfs,
        Enter::NewMounts(p.mounts),
        p.console_socket,
        p.preserve_fds,
        |report| {
            if let Some(adj) = p.oom_score_adj {
                proc_setup::set_oom_score_adj(adj)?;
            }
            let dirfd = open(
                p.dir,
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| Error::sys("open state directory", e))?;
            Ok(Box::new(move |image: &ExecImage| {
                report.ready();
                // Blocks until `start` opens the fifo for reading.
                let fd = openat(
                    Some(dirfd),
                    FIFO,
                    OFlag::O_WRONLY | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| Error::sys("open exec fifo", e))?;
                // SAFETY: `openat` just returned this descriptor and nothing else owns it.
                let mut f = unsafe { fs::File::from_raw_fd(fd) };
                f.write_all(b"0")
                    .map_err(|e| Error::io("write exec fifo", e))?;
                drop(f);
                let _ = image;
                Ok(())
            }))
        },
    );
    let pid = match pid {
        Ok(pid) => pid,
        Err(e) => {
            let _ = fs::remove_file(&fifo);
            return Err(e);
        }
    };
    if let Err(e) = record_mount_ns(pid, p.dir) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        let _ = fs::remove_file(&fifo);
        return Err(e);
    }
    let state = hook_state(p.id, ContainerStatus::Created, pid, p.bundle, p.annotations);
    if let Err(e) = run_hooks(&p.create_hooks, &state) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        let _ = fs::remove_file(&fifo);
        return Err(e);
    }
    Ok(pid)
}

/// Releases the init blocked on the exec fifo, then runs the poststart hooks.
pub fn start(
    id: &str,
    bundle: &Path,
    dir: &Path,
    pid: i32,
    poststart: &[Hook],
    annotations: &HashMap<String, String>,
) -> Result<(), Error> {
    let fifo = dir.join(FIFO);
    // Non-blocking so a dead init cannot hang `start`; then poll for its byte.
    let fd = open(
        &fifo,
        OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::sys(format!("open {}", fifo.display()), e))?;
    // SAFETY: `open` just returned this descriptor and nothing else owns it.
    let mut f = unsafe { fs::File::from_raw_fd(fd) };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 1];
    loop {
        match f.read(&mut buf) {
            Ok(1) => break,
            Ok(_) | Err(_) => {
                if !alive(pid) {
                    let _ = fs::remove_file(&fifo);
                    return Err(Error::Setup("container init exited before start".into()));
                }
                if Instant::now() > deadline {
                    return Err(Error::Setup("container init did not answer start".into()));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    let _ = fs::remove_file(&fifo);
    // OCI: a failing poststart hook is a warning; the others and the container run on.
    run_each(
        "poststart",
        poststart,
        &hook_state(id, ContainerStatus::Running, pid, bundle, annotations),
    );
    Ok(())
}

/// Starts `process` in the mount namespace (and so the rootfs) of the container's init (no fifo:
/// it runs at once). Returns its pid, a child
/// of the caller.
pub fn exec(
    process: &Process,
    rootfs: &Path,
    init_pid: i32,
    console_socket: Option<&Path>,
    preserve_fds: i32,
) -> Result<i32, Error> {
    let enter = Enter::Join(init_pid);
    spawn(
        process,
        rootfs,
        enter,
        console_socket,
        preserve_fds,
        |report| {
            Ok(Box::new(move |_image: &ExecImage| {
                report.ready();
                Ok(())
            }))
        },
    )
}

/// How the child gets its mounts: a new mount namespace for the init, the init's for an exec.
enum Enter<'a> {
    NewMounts(&'a [Mount]),
    Join(i32),
}

/// A gate run in the child after setup and before the user switch and exec.
type Gate<'a> = Box<dyn FnOnce(&ExecImage) -> Result<(), Error> + 'a>;

/// The child's way to tell the parent that setup succeeded (an empty message, then EOF).
pub struct Report {
    fd: OwnedFd,
}

impl Report {
    fn ready(self) {
        let mut f = fs::File::from(self.fd);
        let _ = f.write_all(&[0]);
    }

    fn fail(self, err: &Error) {
        let mut f = fs::File::from(self.fd);
        let mut msg = err.to_string();
        let mut src = std::error::Error::source(err);
        while let Some(s) = src {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            src = s.source();
        }
        let _ = f.write_all(format!("\u{1}{msg}").as_bytes());
    }
}

fn spawn<'a>(
    process: &'a Process,
    rootfs: &'a Path,
    enter: Enter<'a>,
    console_socket: Option<&'a Path>,
    preserve_fds: i32,
    prepare: impl FnOnce(Report) -> Result<Gate<'a>, Error>,
) -> Result<i32, Error> {
    let (rx, tx) = pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::sys("pipe", e))?;
    // SAFETY: clearbox's setup code is single-threaded when it forks (the CLI has no other
    // threads), so the child may allocate; it only runs the setup below and then execs or exits.
    match unsafe { fork() }.map_err(|e| Error::sys("fork", e))? {
        ForkResult::Child => {
            drop(rx);
            let code = match child(
                process,
                rootfs,
                enter,
                console_socket,
                preserve_fds,
                tx,
                prepare,
            ) {
                Ok(()) => 0,
                Err(()) => 1,
            };
            // SAFETY: _exit ends the forked child without running the parent's atexit handlers.
            unsafe { libc::_exit(if code == 0 { 127 } else { 1 }) }
        }
        ForkResult::Parent { child } => {
            drop(tx);
            let mut f = fs::File::from(rx);
            // One byte: 0 = ready (the child may then block on the fifo, keeping the pipe open),
            // 1 = an error message follows until EOF.
            let mut first = [0u8; 1];
            match f.read(&mut first) {
                Ok(1) if first[0] == 0 => Ok(child.as_raw()),
                Ok(1) => {
                    let mut msg = Vec::new();
                    let _ = f.read_to_end(&mut msg);
                    let _ = waitpid(child, None);
                    Err(Error::Setup(String::from_utf8_lossy(&msg).into_owned()))
                }
                _ => {
                    let _ = waitpid(child, None);
                    Err(Error::Setup("container process exited during setup".into()))
                }
            }
        }
    }
}

fn child<'a>(
    process: &'a Process,
    rootfs: &'a Path,
    enter: Enter<'a>,
    console_socket: Option<&'a Path>,
    preserve_fds: i32,
    tx: OwnedFd,
    prepare: impl FnOnce(Report) -> Result<Gate<'a>, Error>,
) -> Result<(), ()> {
    let tx_raw = tx.as_raw_fd();
    let dup = nix::unistd::dup(tx_raw).map_err(|_| ())?;
    let spare = Report {
        // SAFETY: `dup` returned a fresh descriptor that nothing else owns.
        fd: unsafe { OwnedFd::from_raw_fd(dup) },
    };
    let report = Report { fd: tx };
    let setup = || -> Result<(Gate<'a>, ExecImage), Error> {
        nix::unistd::setsid().map_err(|e| Error::sys("setsid", e))?;
        if process.terminal().unwrap_or(false) {
            if let Some(sock) = console_socket {
                let slave = proc_setup::send_pty_master(sock)?;
                proc_setup::attach_tty(&slave)?;
            }
        }
        proc_setup::set_rlimits(process.rlimits().as_deref().unwrap_or_default())?;
        let gate = prepare(report)?;
        match enter {
            Enter::NewMounts(mounts) => fly_mounts::setup(rootfs, mounts)?,
            Enter::Join(pid) => fly_mounts::join(pid)?,
        }
        proc_setup::cloexec_from(preserve_fds, &[])?;
        // Both ways leave the rootfs as "/" of the container's mount namespace (pivot_root for the
        // init, setns for an exec).
        chdir(process.cwd())
            .map_err(|e| Error::sys(format!("cwd {}", process.cwd().display()), e))?;
        let program = proc_setup::resolve_program(process)?;
        let image = ExecImage::new(&program, process)?;
        Ok((gate, image))
    };
    let (gate, image) = match setup() {
        Ok(v) => v,
        Err(e) => {
            spare.fail(&e);
            return Err(());
        }
    };
    if let Err(e) = gate(&image) {
        spare.fail(&e);
        return Err(());
    }
    drop(spare);
    // Past this point the parent has been told "ready"; failures go to the process's stderr.
    if let Err(e) = proc_setup::set_user_and_caps(process) {
        eprintln!("clearbox: {e}");
        return Err(());
    }
    proc_setup::default_sigpipe();
    let e = image.exec();
    eprintln!(
        "clearbox: {e}: {}",
        std::error::Error::source(&e)
            .map(|s| s.to_string())
            .unwrap_or_default()
    );
    Ok(())
}

/// True when `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    clearbox_util::proc::is_alive(pid, None)
}

/// `pid` and all its descendants, found through `/proc/*/stat` parent links.
pub fn process_tree(pid: i32) -> Vec<i32> {
    let mut parents: Vec<(i32, i32)> = Vec::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if let Some(s) = clearbox_util::proc::stat(p) {
                parents.push((p, s.ppid));
            }
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let cur = out[i];
        out.extend(parents.iter().filter(|(_, pp)| *pp == cur).map(|(p, _)| *p));
        i += 1;
    }
    out.retain(|p| alive(*p));
    out
}

/// Every process of the container: the init's descendants plus every process in the init's
/// mount namespace (execs are not the init's descendants). `rootfs` is kept for callers that
/// have no living init to ask.
pub fn processes(pid: i32, rootfs: &Path) -> Vec<i32> {
    let _ = rootfs;
    let mut all = process_tree(pid);
    for p in fly_mounts::processes_sharing_mounts_with(pid) {
        if !all.contains(&p) && alive(p) {
            all.push(p);
        }
    }
    all
}

/// Signals the init, or with `all` every process of the container.
pub fn signal(pid: i32, rootfs: &Path, sig: i32, all: bool) -> Result<(), Error> {
    if pid <= 0 {
        return Err(Error::Setup(format!("invalid init pid {pid}")));
    }
    let sig = Signal::try_from(sig).map_err(|e| Error::sys("signal", e))?;
    let targets = if all {
        processes(pid, rootfs)
    } else {
        vec![pid]
    };
    for p in targets {
        match kill(Pid::from_raw(p), sig) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(e) => return Err(Error::sys(format!("kill {p}"), e)),
        }
    }
    Ok(())
}

/// Kills every process of the container and waits (bounded) until they are gone.
pub fn destroy(pid: i32, rootfs: &Path) -> Result<(), Error> {
    if pid <= 0 {
        return Err(Error::Setup(format!("invalid init pid {pid}")));
    }
    kill_until_gone(
        || processes(pid, rootfs),
        || format!("processes of container init {pid} survive SIGKILL"),
    )
}

/// SIGKILLs what `find` lists until it lists nothing (bounded: 10 s, then `survivors` names
/// the failure).
fn kill_until_gone(
    find: impl Fn() -> Vec<i32>,
    survivors: impl FnOnce() -> String,
) -> Result<(), Error> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = find();
        if left.is_empty() {
            return Ok(());
        }
        for p in left {
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
            // Our own child (foreground run) must be reaped to disappear.
            let _ = waitpid(Pid::from_raw(p), Some(nix::sys::wait::WaitPidFlag::WNOHANG));
        }
        if Instant::now() > deadline {
            return Err(Error::Setup(survivors()));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `(dev, inode)` of what `path` names, following links.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

fn record_mount_ns(pid: i32, dir: &Path) -> Result<(), Error> {
    let Some(ns) = fly_mounts::mount_ns(&pid.to_string()) else {
        return Err(Error::Setup(format!(
            "cannot read the mount namespace of init {pid}"
        )));
    };
    let tmp = dir.join(format!(".{MOUNT_NS}.tmp"));
    fs::write(&tmp, ns.as_os_str().as_encoded_bytes())
        .and_then(|()| fs::rename(&tmp, dir.join(MOUNT_NS)))
        .map_err(|e| Error::io(format!("write {}", dir.join(MOUNT_NS).display()), e))
}

/// The processes left of a container whose init is gone: those in its recorded mount
/// namespace whose root is its rootfs (both: a namespace's inode number is reused once the
/// namespace is gone, a rootfs may be shared).
fn orphans(dir: &Path, rootfs: &Path) -> Vec<i32> {
    let (Ok(ns), Some(root)) = (fs::read_to_string(dir.join(MOUNT_NS)), file_id(rootfs)) else {
        return Vec::new();
    };
    fly_mounts::processes_in_mount_ns(Path::new(ns.trim()))
        .into_iter()
        .filter(|p| file_id(Path::new(&format!("/proc/{p}/root"))) == Some(root))
        .collect()
}

/// Kills what [`orphans`] finds and waits (bounded) until it is gone.
fn kill_orphans(dir: &Path, rootfs: &Path) -> Result<(), Error> {
    kill_until_gone(
        || orphans(dir, rootfs),
        || "processes left by the container's init survive SIGKILL".into(),
    )
}

/// Runs the poststop hooks and removes the fifo if `start` never ran.
/// `pid` is `None` when the recorded init is already gone (its pid may have been recycled).
pub fn delete(
    who: &Identity<'_>,
    rootfs: &Path,
    dir: &Path,
    pid: Option<i32>,
    recorded_pid: i32,
    poststop: &[Hook],
) -> Result<(), Error> {
    let Identity {
        id,
        bundle,
        annotations,
    } = *who;
    if let Some(pid) = pid {
        destroy(pid, rootfs)?;
    }
    // Without a PID namespace, the init's end does not end its children (a shell whose
    // `sleep &` outlived it): they still hold the container's mount namespace.
    kill_orphans(dir, rootfs)?;
    let _ = fs::remove_file(dir.join(FIFO));
    let _ = fs::remove_file(dir.join(MOUNT_NS));
    // OCI: a failing poststop hook is a warning; the others and the deletion go on.
    run_each(
        "poststop",
        poststop,
        &hook_state(
            id,
            ContainerStatus::Stopped,
            recorded_pid,
            bundle,
            annotations,
        ),
    );
    Ok(())
}

/// The state hooks read on stdin: runc's, with the spec's annotations.
fn hook_state(
    id: &str,
    status: ContainerStatus,
    pid: i32,
    bundle: &Path,
    annotations: &HashMap<String, String>,
) -> HookState {
    let mut s = HookState::new(id, status, Some(pid), PathBuf::from(bundle));
    if !annotations.is_empty() {
        s.annotations = Some(annotations.clone());
    }
    s
}

/// What hooks are told about the container besides its status and pid.
#[derive(Debug, Clone, Copy)]
pub struct Identity<'a> {
    pub id: &'a str,
    pub bundle: &'a Path,
    pub annotations: &'a HashMap<String, String>,
}

/// Runs every hook, each on its own; a failure is a warning.
fn run_each(phase: &str, hooks: &[Hook], state: &HookState) {
    for hook in hooks {
        if let Err(e) = run_hooks(std::slice::from_ref(hook), state) {
            tracing::warn!(error = %clearbox_util::error::chain(&e), "{phase} hook failed");
        }
    }
}

fn run_hooks(hooks: &[Hook], state: &HookState) -> Result<(), Error> {
    if hooks.is_empty() {
        return Ok(());
    }
    let list = hooks.to_vec();
    libcontainer::hooks::run_hooks(Some(&list), Some(state), None, None, None).map_err(Error::Hook)
}
