//! Containers, the simple way (until the agent uses `clearbox-container`): the spec's
//! process runs chrooted into the rootfs, in new PID, mount, UTS and IPC namespaces, with
//! proc/dev/sys mounted inside, optionally in a cgroup v2 directory (stats, pause, kill-all).

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use clearbox_protocol::pb::agent as pb;
use clearbox_protocol::server::{Code, Error, Result};
use nix::sched::CloneFlags;

use crate::process::Process;
use crate::service::{chain, register, status};
use crate::spawn::{self, ChildHook};
use crate::spec::{self, Spec};
use crate::state::State;

/// Parent directory of per-container cgroups; unset = no cgroups.
static CGROUP_ROOT: OnceLock<PathBuf> = OnceLock::new();
/// Where virtio-fs tags get mounted.
const VIRTIOFS_DIR: &str = "/run/clearbox/virtiofs";

pub fn set_cgroup_root(p: PathBuf) {
    let _ = CGROUP_ROOT.set(p);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Created,
    Running,
}

pub struct Container {
    spec: Spec,
    rootfs: PathBuf,
    terminal: bool,
    stdin: bool,
    phase: Phase,
    init: Option<Arc<Process>>,
    cgroup: Option<PathBuf>,
}

fn internal(what: &str, e: impl std::fmt::Display) -> Error {
    status(Code::INTERNAL, format!("{what}: {e}"))
}

fn not_found(id: &str) -> Error {
    status(Code::NOT_FOUND, format!("no container {id:?}"))
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        && id != "."
        && id != ".."
}

fn cstr(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| status(Code::INVALID_ARGUMENT, "path has NUL"))
}

fn mount_virtiofs(tag: &str) -> Result<PathBuf> {
    if !valid_id(tag) {
        return Err(status(
            Code::INVALID_ARGUMENT,
            format!("bad virtio-fs tag {tag:?}"),
        ));
    }
    let target = Path::new(VIRTIOFS_DIR).join(tag);
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let already = mounts.lines().any(|l| {
        let mut f = l.split_whitespace();
        f.next() == Some(tag) && f.next() == target.to_str()
    });
    if !already {
        std::fs::create_dir_all(&target).map_err(|e| internal("mkdir virtio-fs mount", e))?;
        nix::mount::mount(
            Some(tag),
            &target,
            Some("virtiofs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|e| internal(&format!("mount virtio-fs {tag}"), e))?;
    }
    Ok(target)
}

pub fn create(state: &State, req: &pb::CreateContainerRequest) -> Result<()> {
    let id = req.container_id.as_str();
    if !valid_id(id) {
        return Err(status(
            Code::INVALID_ARGUMENT,
            format!("bad container id {id:?}"),
        ));
    }
    let spec = Spec::from_json(&req.oci_spec_json)
        .map_err(|e| status(Code::INVALID_ARGUMENT, format!("spec: {}", chain(&e))))?;
    let rootfs_req = req.rootfs.clone().unwrap_or_default();
    let rootfs = if rootfs_req.virtiofs_tag.is_empty() {
        PathBuf::from(&rootfs_req.path)
    } else {
        mount_virtiofs(&rootfs_req.virtiofs_tag)?.join(rootfs_req.path.trim_start_matches('/'))
    };
    if !rootfs.is_absolute() || !rootfs.is_dir() {
        return Err(status(
            Code::INVALID_ARGUMENT,
            format!("rootfs {} is not a directory", rootfs.display()),
        ));
    }
    let mut spec = spec;
    if rootfs_req.readonly {
        spec.root.get_or_insert_with(Default::default).readonly = true;
    }
    let stdio = req.stdio.clone().unwrap_or_default();
    let terminal = stdio.terminal || spec.process.as_ref().is_some_and(|p| p.terminal);

    let mut t = state.table();
    if t.containers.contains_key(id) {
        return Err(status(
            Code::ALREADY_EXISTS,
            format!("container {id:?} exists"),
        ));
    }
    let cgroup = match CGROUP_ROOT.get() {
        Some(root) => {
            let dir = root.join(id);
            match std::fs::create_dir_all(&dir) {
                Ok(()) => Some(dir),
                Err(e) => {
                    crate::error!("no cgroup for {id}: {e}");
                    None
                }
            }
        }
        None => None,
    };
    t.containers.insert(
        id.to_string(),
        Container {
            spec,
            rootfs,
            terminal,
            stdin: stdio.stdin,
            phase: Phase::Created,
            init: None,
            cgroup,
        },
    );
    Ok(())
}

/// Everything the forked child needs, prepared before fork (no allocation after it).
struct ChildPlan {
    cgroup_procs: Option<CString>,
    rootfs: CString,
    proc_dir: Option<CString>,
    dev_dir: Option<CString>,
    sys_dir: Option<CString>,
    hostname: Option<CString>,
    readonly: bool,
}

fn plan(c: &Container) -> Result<ChildPlan> {
    let sub = |name: &str| -> Result<Option<CString>> {
        let p = c.rootfs.join(name);
        if p.is_dir() {
            cstr(&p).map(Some)
        } else {
            Ok(None)
        }
    };
    Ok(ChildPlan {
        cgroup_procs: c
            .cgroup
            .as_ref()
            .map(|d| cstr(&d.join("cgroup.procs")))
            .transpose()?,
        rootfs: cstr(&c.rootfs)?,
        proc_dir: sub("proc")?,
        dev_dir: sub("dev")?,
        sys_dir: sub("sys")?,
        hostname: c
            .spec
            .hostname
            .as_ref()
            .map(|h| CString::new(h.as_bytes()))
            .transpose()
            .map_err(|_| status(Code::INVALID_ARGUMENT, "hostname has NUL"))?,
        readonly: c.spec.root.as_ref().is_some_and(|r| r.readonly),
    })
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn join_cgroup(procs: &Option<CString>) -> io::Result<()> {
    if let Some(path) = procs {
        // SAFETY: open/write/close on a valid C string and a static buffer; async-signal-safe.
        unsafe {
            let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            check(fd)?;
            let rc = libc::write(fd, b"0".as_ptr().cast(), 1);
            libc::close(fd);
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

fn mount_raw(
    src: *const libc::c_char,
    dst: &CString,
    fstype: *const libc::c_char,
    flags: libc::c_ulong,
) -> io::Result<()> {
    // SAFETY: all pointers are NUL-terminated strings alive for the call, or null (allowed
    // by mount(2) for the source/type of bind and remount operations); no data argument.
    check(unsafe { libc::mount(src, dst.as_ptr(), fstype, flags, std::ptr::null()) })
}

/// Child side of StartContainer: runs in the new PID namespace, before exec.
fn init_hook(p: ChildPlan) -> ChildHook {
    Box::new(move || {
        join_cgroup(&p.cgroup_procs)?;
        // SAFETY: unshare/sethostname/chroot/chdir with valid C strings; the child is
        // single-threaded after fork.
        unsafe {
            check(libc::unshare(
                libc::CLONE_NEWNS | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC,
            ))?;
        }
        let root = c"/";
        // SAFETY: valid static C string, null source/type allowed for propagation changes.
        check(unsafe {
            libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            )
        })?;
        mount_raw(
            p.rootfs.as_ptr(),
            &p.rootfs,
            std::ptr::null(),
            libc::MS_BIND | libc::MS_REC,
        )?;
        if let Some(d) = &p.proc_dir {
            mount_raw(
                c"proc".as_ptr(),
                d,
                c"proc".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            )?;
        }
        if let Some(d) = &p.dev_dir {
            mount_raw(
                c"/dev".as_ptr(),
                d,
                std::ptr::null(),
                libc::MS_BIND | libc::MS_REC,
            )?;
        }
        if let Some(d) = &p.sys_dir {
            mount_raw(
                c"/sys".as_ptr(),
                d,
                std::ptr::null(),
                libc::MS_BIND | libc::MS_REC,
            )?;
        }
        if p.readonly {
            mount_raw(
                std::ptr::null(),
                &p.rootfs,
                std::ptr::null(),
                libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY,
            )?;
        }
        // SAFETY: see above.
        unsafe {
            if let Some(h) = &p.hostname {
                check(libc::sethostname(h.as_ptr(), h.as_bytes().len()))?;
            }
            check(libc::chroot(p.rootfs.as_ptr()))?;
            check(libc::chdir(c"/".as_ptr()))?;
        }
        Ok(())
    })
}

/// Runs `f` on a fresh thread whose PID namespace for children was changed by `enter`, so
/// the forked child lands in that namespace without affecting the agent's other threads.
fn spawn_in_pidns(
    enter: impl FnOnce() -> nix::Result<()> + Send,
    f: impl FnOnce() -> std::result::Result<spawn::Spawned, spawn::SpawnError> + Send,
) -> Result<spawn::Spawned> {
    std::thread::scope(|s| {
        let h = s.spawn(move || {
            enter().map_err(|e| internal("entering pid namespace", e))?;
            f().map_err(|e| status(Code::INVALID_ARGUMENT, chain(&e)))
        });
        h.join()
            .unwrap_or_else(|_| Err(status(Code::INTERNAL, "spawn thread failed")))
    })
}

pub fn start(state: &State, id: &str) -> Result<()> {
    let mut t = state.table();
    let c = t.containers.get(id).ok_or_else(|| not_found(id))?;
    if c.phase != Phase::Created {
        return Err(status(
            Code::FAILED_PRECONDITION,
            format!("container {id:?} already started"),
        ));
    }
    let mut process: spec::Process = c.spec.process.clone().unwrap_or_default();
    process.terminal = c.terminal;
    let (terminal, stdin) = (c.terminal, c.stdin);
    let hook = init_hook(plan(c)?);
    // Table lock held across spawn: see `state` module docs.
    let spawned = spawn_in_pidns(
        || nix::sched::unshare(CloneFlags::CLONE_NEWPID),
        || spawn::spawn(&process, terminal, stdin, Some(hook), true),
    )?;
    let p = register(&mut t, (id.to_string(), String::new()), spawned, terminal);
    crate::debug!("container {id}: init pid {}", p.pid);
    if let Some(c) = t.containers.get_mut(id) {
        c.phase = Phase::Running;
        c.init = Some(p);
    }
    Ok(())
}

fn running_init(c: &Container, id: &str) -> Result<Arc<Process>> {
    match &c.init {
        Some(p) if !p.has_exited() => Ok(Arc::clone(p)),
        _ => Err(status(
            Code::FAILED_PRECONDITION,
            format!("container {id:?} is not running"),
        )),
    }
}

pub fn exec(state: &State, id: &str, exec_id: &str, p: &spec::Process, stdin: bool) -> Result<()> {
    let mut t = state.table();
    let c = t.containers.get(id).ok_or_else(|| not_found(id))?;
    let init = running_init(c, id)?;
    let key = (id.to_string(), exec_id.to_string());
    if t.procs.contains_key(&key) {
        return Err(status(
            Code::ALREADY_EXISTS,
            format!("exec {exec_id:?} exists in {id:?}"),
        ));
    }
    let ns = |name: &str| {
        File::open(format!("/proc/{}/ns/{name}", init.pid))
            .map_err(|e| internal(&format!("open {name} ns"), e))
    };
    let (mnt, uts, ipc, pidns) = (ns("mnt")?, ns("uts")?, ns("ipc")?, ns("pid")?);
    let cgroup_procs = c
        .cgroup
        .as_ref()
        .map(|d| cstr(&d.join("cgroup.procs")))
        .transpose()?;
    let rootfs = cstr(&c.rootfs)?;
    let hook: ChildHook = Box::new(move || {
        join_cgroup(&cgroup_procs)?;
        // SAFETY: setns on fds owned by this closure, chroot on a valid C string; the child
        // is single-threaded after fork, as setns(CLONE_NEWNS) requires.
        unsafe {
            check(libc::setns(mnt.as_raw_fd(), libc::CLONE_NEWNS))?;
            check(libc::setns(uts.as_raw_fd(), libc::CLONE_NEWUTS))?;
            check(libc::setns(ipc.as_raw_fd(), libc::CLONE_NEWIPC))?;
            check(libc::chroot(rootfs.as_ptr()))?;
        }
        Ok(())
    });
    let terminal = p.terminal;
    let spawned = spawn_in_pidns(
        || nix::sched::setns(&pidns, CloneFlags::CLONE_NEWPID),
        || spawn::spawn(p, terminal, stdin, Some(hook), true),
    )?;
    let proc_ = register(&mut t, key, spawned, terminal);
    crate::debug!("container {id}: exec {exec_id:?} pid {}", proc_.pid);
    Ok(())
}

fn pid_ns_of(pid: i32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok()
}

fn container_pids(c: &Container) -> Vec<i32> {
    if let Some(dir) = &c.cgroup {
        if let Ok(s) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            return s.lines().filter_map(|l| l.trim().parse().ok()).collect();
        }
    }
    let Some(init) = c.init.as_ref().filter(|p| !p.has_exited()) else {
        return Vec::new();
    };
    let Some(ns) = pid_ns_of(init.pid) else {
        return Vec::new();
    };
    crate::stats::all_pids()
        .into_iter()
        .filter(|p| pid_ns_of(*p).as_ref() == Some(&ns))
        .collect()
}

pub fn pids(state: &State, id: &str) -> Result<Vec<i32>> {
    let t = state.table();
    let c = t.containers.get(id).ok_or_else(|| not_found(id))?;
    Ok(container_pids(c))
}

fn signal_all(c: &Container, sig: i32) {
    if sig == libc::SIGKILL {
        if let Some(dir) = &c.cgroup {
            if std::fs::write(dir.join("cgroup.kill"), "1").is_ok() {
                return;
            }
        }
    }
    for pid in container_pids(c) {
        // SAFETY: kill(2) with plain integers.
        unsafe { libc::kill(pid, sig) };
    }
}

pub fn kill_all(state: &State, id: &str, sig: i32) -> Result<()> {
    let t = state.table();
    let c = t.containers.get(id).ok_or_else(|| not_found(id))?;
    running_init(c, id)?;
    signal_all(c, sig);
    Ok(())
}

pub fn remove(state: &State, id: &str, force: bool) -> Result<()> {
    let init = {
        let t = state.table();
        let c = t.containers.get(id).ok_or_else(|| not_found(id))?;
        match &c.init {
            Some(p) if !p.has_exited() => {
                if !force {
                    return Err(status(
                        Code::FAILED_PRECONDITION,
                        format!("container {id:?} is running (use force)"),
                    ));
                }
                signal_all(c, libc::SIGKILL);
                Some(Arc::clone(p))
            }
            _ => None,
        }
    };
    // Wait (without the table lock: the reaper needs it) for the init to be reaped.
    if let Some(p) = init {
        let until = Instant::now() + Duration::from_secs(10);
        while !p.has_exited() {
            if Instant::now() > until {
                return Err(status(
                    Code::DEADLINE_EXCEEDED,
                    format!("container {id:?} did not die"),
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let mut t = state.table();
    let c = t.containers.remove(id).ok_or_else(|| not_found(id))?;
    t.procs.retain(|k, _| k.0 != id);
    drop(t);
    if let Some(dir) = c.cgroup {
        // The cgroup empties asynchronously after the last task was reaped.
        let until = Instant::now() + Duration::from_secs(2);
        while std::fs::remove_dir(&dir).is_err() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    Ok(())
}

pub fn freeze(state: &State, id: &str, frozen: bool) -> Result<()> {
    let t = state.table();
    let c = t.containers.get(id).ok_or_else(|| not_found(id))?;
    running_init(c, id)?;
    let Some(dir) = &c.cgroup else {
        return Err(status(
            Code::FAILED_PRECONDITION,
            "pause needs a cgroup (cgroup2 not available)",
        ));
    };
    std::fs::write(dir.join("cgroup.freeze"), if frozen { "1" } else { "0" })
        .map_err(|e| internal("cgroup.freeze", e))?;
    let want = if frozen { "frozen 1" } else { "frozen 0" };
    let until = Instant::now() + Duration::from_secs(2);
    loop {
        let events = std::fs::read_to_string(dir.join("cgroup.events")).unwrap_or_default();
        if events.lines().any(|l| l == want) {
            return Ok(());
        }
        if Instant::now() > until {
            return Err(status(
                Code::DEADLINE_EXCEEDED,
                "cgroup did not reach the freezer state",
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

pub fn stats(state: &State, id: &str) -> Result<pb::StatsResponse> {
    let t = state.table();
    let c = t.containers.get(id).ok_or_else(|| not_found(id))?;
    match &c.cgroup {
        Some(dir) => Ok(crate::stats::cgroup(dir)),
        None => crate::stats::guest().map_err(|e| internal("stats", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_are_checked() {
        assert!(valid_id("abc-1.2_x"));
        assert!(!valid_id(""));
        assert!(!valid_id(".."));
        assert!(!valid_id("a/b"));
        assert!(!valid_id("a b"));
    }
}
