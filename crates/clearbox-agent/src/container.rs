//! Containers in the guest, set up by the same library as the host's `isolation=namespaces`:
//! `clearbox_container::namespaces` (youki's libcontainer: namespaces, mounts, pivot_root,
//! user, capabilities, rlimits, seccomp, cgroups). Create and exec run in a helper process
//! (see `helper`); start, kill, pause/resume, ps, stats and delete call the library directly.
//!
//! Layout under the run directory (`/run/clearbox` in the VM):
//!   bundles/<id>/config.json   the spec as prepared by `bundle::prepare`
//!   bundles/<id>/exec-<n>.json process files of execs (removed once started)
//!   containers/<id>/           libcontainer's state root for <id>
//!   console/<n>.sock           console sockets receiving pty masters (short-lived)
//!   virtiofs/<tag>/            mount point of each virtio-fs tag
//!   shared -> virtiofs/clearbox  the host's per-sandbox share (tag `clearbox`)

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use clearbox_container::namespaces as ns;
use clearbox_container::Status;
use clearbox_protocol::guest::{self, ContainerId};
use clearbox_protocol::pb::agent as pb;
use clearbox_protocol::request::{CreateContainer, ExecProcess};
use clearbox_protocol::RootfsLocation;
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::bundle;
use crate::error::{Error, Result};
use crate::helper::Request;
use crate::process::Process;
use crate::state::{Key, State};
use crate::wiring::{new_process, Wiring, WiringError};

/// Parent cgroup of containers without `linux.cgroupsPath`.
pub const DEFAULT_CGROUP_PARENT: &str = guest::CGROUP_PARENT;

/// Where the agent keeps container files, and how containers are set up.
#[derive(Debug, Clone)]
pub struct Config {
    pub run_dir: PathBuf,
    /// Parent of default cgroups: a spec without `linux.cgroupsPath` gets `/<parent>/<id>`.
    pub cgroup_parent: String,
    /// Enter container roots without pivot_root (needed while "/" is the initramfs).
    pub no_pivot: bool,
    /// Security modules of this kernel (labels for absent ones are dropped from specs).
    pub lsm: bundle::Lsm,
}

static CONFIG: OnceLock<Config> = OnceLock::new();
/// Names exec process files and console sockets uniquely.
pub(crate) static SEQ: AtomicU64 = AtomicU64::new(0);

pub fn configure(c: Config) {
    let _ = CONFIG.set(c);
}

pub(crate) fn config() -> &'static Config {
    CONFIG.get_or_init(|| Config {
        run_dir: PathBuf::from(guest::RUN_DIR),
        cgroup_parent: DEFAULT_CGROUP_PARENT.into(),
        no_pivot: false,
        lsm: bundle::Lsm::detect(),
    })
}

pub struct Container {
    bundle: PathBuf,
    state_root: PathBuf,
    /// The prepared spec (execs inherit its privileges).
    config: Spec,
    started: bool,
    init: Arc<Process>,
}

/// Keys being created (CreateContainer: `(id, "")`, ExecProcess: `(id, exec)`) while their
/// helper runs without the table lock.
#[derive(Default)]
pub struct Pending(HashSet<Key>);

fn not_found(id: &str) -> Error {
    Error::NoContainer(id.to_string())
}

/// The container library failed doing `what` to `id`.
fn lib_err(what: &'static str, id: &str) -> impl FnOnce(clearbox_container::Error) -> Error {
    let id = id.to_string();
    move |source| Error::Library {
        what,
        id,
        source: Box::new(source),
    }
}

fn helper_err(what: &'static str, id: &str, source: crate::helper::HelperError) -> Error {
    Error::Helper {
        what,
        id: id.to_string(),
        source,
    }
}

/// True when "/" is the initramfs (rootfs), where pivot_root(2) fails with EINVAL.
pub fn root_is_initramfs() -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines().any(|l| {
        let mut halves = l.splitn(2, " - ");
        let (pre, post) = (halves.next().unwrap_or(""), halves.next().unwrap_or(""));
        pre.split_whitespace().nth(4) == Some("/")
            && matches!(post.split_whitespace().next(), Some("rootfs"))
    })
}

/// Mounts virtio-fs `tag` once and returns its mount point.
pub(crate) fn mount_virtiofs(tag: &str) -> Result<PathBuf> {
    // Tags follow the container-id rule: they name a directory.
    if ContainerId::parse(tag).is_err() {
        return Err(Error::BadTag(tag.to_string()));
    }
    let run = &config().run_dir;
    let target = guest::virtiofs_mount(run, tag);
    // The shares this agent mounted: every create asks, and the answer rarely changes (the
    // share is mounted as the agent starts). Only the agent mounts shares in the guest, so
    // an unknown tag is looked up in the mount table once (a template's restored guest
    // keeps the template agent's mounts and this set alike), its mount and link made then.
    // Held across the mount: two creates at once cannot both mount the same tag.
    static MOUNTED: OnceLock<std::sync::Mutex<HashSet<String>>> = OnceLock::new();
    let mut mounted = MOUNTED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !mounted.contains(tag) {
        let table = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let in_table = table.lines().any(|l| {
            let mut f = l.split_whitespace();
            f.next() == Some(tag) && f.next() == target.to_str()
        });
        if !in_table {
            std::fs::create_dir_all(&target).map_err(|e| Error::os("mkdir virtio-fs mount", e))?;
            nix::mount::mount(
                Some(tag),
                &target,
                Some("virtiofs"),
                nix::mount::MsFlags::empty(),
                None::<&str>,
            )
            .map_err(|e| Error::os(format!("mount virtio-fs {tag}"), e))?;
        }
        if tag == guest::SHARE_TAG {
            let link = run.join(guest::SHARED_LINK);
            if std::fs::read_link(&link).ok().as_deref()
                != Some(Path::new(guest::SHARED_LINK_TARGET))
            {
                let _ = std::fs::remove_file(&link);
                std::os::unix::fs::symlink(guest::SHARED_LINK_TARGET, &link)
                    .map_err(|e| Error::os(format!("symlink {}", link.display()), e))?;
            }
        }
        mounted.insert(tag.to_string());
    }
    Ok(target)
}

fn resolve_rootfs(r: &RootfsLocation) -> Result<PathBuf> {
    let path = match r {
        RootfsLocation::GuestPath(p) => PathBuf::from(p),
        RootfsLocation::VirtioFs { tag, path } => {
            mount_virtiofs(tag)?.join(path.trim_start_matches('/'))
        }
    };
    if !path.is_absolute() || !path.is_dir() {
        return Err(Error::BadRootfs(path));
    }
    Ok(path)
}

/// Reserves `key` in the pending set; fails if it exists or is being created.
fn reserve(state: &State, key: &Key, exists: impl FnOnce(&crate::state::Table) -> bool) -> bool {
    let mut t = state.table();
    if exists(&t) || t.pending.0.contains(key) {
        return false;
    }
    t.pending.0.insert(key.clone());
    true
}

fn unreserve(state: &State, key: &Key) {
    state.table().pending.0.remove(key);
}

pub fn create(state: &State, req: CreateContainer) -> Result<()> {
    let id = req.id.as_str().to_string();
    let id = id.as_str();
    let key: Key = (id.to_string(), String::new());
    if !reserve(state, &key, |t| t.containers.contains_key(id)) {
        return Err(Error::ContainerExists(id.to_string()));
    }
    let result = create_reserved(state, req);
    unreserve(state, &key);
    result
}

fn create_reserved(state: &State, req: CreateContainer) -> Result<()> {
    let CreateContainer {
        id: cid,
        spec,
        rootfs,
        rootfs_readonly,
        stdio,
    } = req;
    let id = cid.as_str();
    let cfg = config();
    let mut span = crate::log::Span::new(format!("create {id}"));
    let rootfs = resolve_rootfs(&rootfs)?;
    span.step("rootfs resolved (virtio-fs mounted)");
    let spec_terminal = spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    let terminal = stdio.terminal || spec_terminal;
    let mut prepared = bundle::prepare(
        spec,
        &cid,
        &rootfs,
        rootfs_readonly,
        terminal,
        &cfg.cgroup_parent,
        cfg.lsm,
    )
    .map_err(Error::Spec)?;
    vm_network_sysctls(&mut prepared)?;
    span.step("spec prepared");
    let bundle_dir = cfg.run_dir.join("bundles").join(id);
    let state_root = cfg.run_dir.join("containers").join(id);
    let cleanup = || {
        let _ = std::fs::remove_dir_all(&bundle_dir);
        let _ = std::fs::remove_dir_all(&state_root);
    };
    // Leftovers of an earlier container with this id (e.g. a failed remove) would confuse
    // libcontainer.
    cleanup();
    let written = std::fs::create_dir_all(&bundle_dir).and_then(|()| {
        // libcontainer's input: the one encoding of the spec in the guest.
        let json = serde_json::to_vec(&prepared).map_err(std::io::Error::from)?;
        std::fs::write(bundle_dir.join("config.json"), json)
    });
    if let Err(e) = written {
        cleanup();
        return Err(Error::os("write bundle", e));
    }
    span.step("bundle written");
    let size = prepared.process().as_ref().and_then(console_size);
    let wiring = match Wiring::new(terminal, stdio.stdin, size) {
        Ok(w) => w,
        Err(e) => {
            cleanup();
            return Err(e);
        }
    };
    let req_h = Request::Create {
        id: id.to_string(),
        bundle: bundle_dir.clone(),
        state_root: state_root.clone(),
        console_socket: wiring.console_path(),
        no_pivot: cfg.no_pivot,
    };
    let since = Instant::now();
    let (pid, ends) = match wiring.run(&req_h) {
        Ok(v) => v,
        Err(e) => {
            let err = match e {
                WiringError::Helper(e) => helper_err("create container", id, e),
                WiringError::Console(_, e) => {
                    // The init exists and waits for start: take it down with its cgroup.
                    let _ = ns::delete(&state_root, id, true);
                    e
                }
            };
            cleanup();
            return Err(err);
        }
    };
    span.step("helper done (libcontainer create)");
    let init = new_process(pid, terminal, ends);
    let mut t = state.table();
    t.register_since((id.to_string(), String::new()), Arc::clone(&init), since);
    t.containers.insert(
        id.to_string(),
        Container {
            bundle: bundle_dir,
            state_root,
            config: prepared,
            started: false,
            init,
        },
    );
    crate::debug!("container {id}: created, init pid {pid}");
    Ok(())
}

/// The terminal size a process asks for, if both sides are set and fit.
fn console_size(p: &oci_spec::runtime::Process) -> Option<(u16, u16)> {
    let b = p.console_size()?;
    let size = (
        u16::try_from(b.height()).ok()?,
        u16::try_from(b.width()).ok()?,
    );
    (size.0 > 0 && size.1 > 0).then_some(size)
}

/// What library calls need about a container, copied out of the table.
struct Handle {
    state_root: PathBuf,
    started: bool,
    init: Arc<Process>,
}

fn handle(state: &State, id: &str) -> Result<Handle> {
    let t = state.table();
    let c = t.containers.get(id).ok_or_else(|| not_found(id))?;
    Ok(Handle {
        state_root: c.state_root.clone(),
        started: c.started,
        init: Arc::clone(&c.init),
    })
}

fn running(h: &Handle, id: &str) -> Result<()> {
    if h.init.has_exited() {
        return Err(Error::NotRunning(id.to_string()));
    }
    Ok(())
}

pub fn start(state: &State, id: &str) -> Result<()> {
    let h = handle(state, id)?;
    if h.started {
        return Err(Error::AlreadyStarted(id.to_string()));
    }
    running(&h, id)?;
    ns::start(&h.state_root, id).map_err(lib_err("start container", id))?;
    if let Some(c) = state.table().containers.get_mut(id) {
        c.started = true;
    }
    crate::debug!("container {id}: started");
    Ok(())
}

pub fn exec(state: &State, req: ExecProcess) -> Result<()> {
    let ExecProcess {
        container_id,
        exec_id,
        process,
        stdio,
    } = req;
    let (id, exec_id) = (container_id.as_str(), exec_id.as_str());
    let terminal = stdio.terminal || process.terminal().unwrap_or(false);
    let open_stdin = stdio.stdin;
    let key: Key = (id.to_string(), exec_id.to_string());
    let (h, bundle_dir, init_config) = {
        let t = state.table();
        let c = t.containers.get(id).ok_or_else(|| not_found(id))?;
        (
            Handle {
                state_root: c.state_root.clone(),
                started: c.started,
                init: Arc::clone(&c.init),
            },
            c.bundle.clone(),
            c.config.clone(),
        )
    };
    // As runc: a created container takes exec'd processes too (they join the namespaces of the
    // waiting init).
    running(&h, id)?;
    if matches!(ns::status(&h.state_root, id), Ok(Status::Paused)) {
        return Err(Error::Paused(id.to_string()));
    }
    let process = bundle::exec_process(process, terminal, &init_config, config().lsm)
        .map_err(Error::Process)?;
    let size = console_size(&process);
    if !reserve(state, &key, |t| t.procs.contains_key(&key)) {
        return Err(Error::ExecExists {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
        });
    }
    let file = bundle_dir.join(format!("exec-{}.json", SEQ.fetch_add(1, Ordering::Relaxed)));
    let result = (|| {
        let json = serde_json::to_vec(&process).map_err(|e| Error::os("encode process", e))?;
        std::fs::write(&file, json).map_err(|e| Error::os("write process file", e))?;
        let wiring = Wiring::new(terminal, open_stdin, size)?;
        let req_h = Request::Exec {
            id: id.to_string(),
            state_root: h.state_root.clone(),
            process_file: file.clone(),
            console_socket: wiring.console_path(),
        };
        let since = Instant::now();
        let (pid, ends) = wiring.run(&req_h).map_err(|e| match e {
            WiringError::Helper(e) => helper_err("exec in container", id, e),
            WiringError::Console(pid, e) => {
                // SAFETY: kill(2) with integers; the process was just started for us.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                e
            }
        })?;
        let p = new_process(pid, terminal, ends);
        state.table().register_since(key.clone(), p, since);
        crate::debug!("container {id}: exec {exec_id:?} pid {pid}");
        Ok(())
    })();
    let _ = std::fs::remove_file(&file);
    unreserve(state, &key);
    result
}

pub fn pids(state: &State, id: &str) -> Result<Vec<i32>> {
    let h = handle(state, id)?;
    if h.init.has_exited() {
        return Ok(Vec::new());
    }
    ns::pids(&h.state_root, id).map_err(lib_err("list processes of", id))
}

pub fn kill_all(state: &State, id: &str, sig: i32) -> Result<()> {
    let h = handle(state, id)?;
    running(&h, id)?;
    ns::kill(&h.state_root, id, sig, true).map_err(lib_err("signal container", id))
}

pub fn freeze(state: &State, id: &str, frozen: bool) -> Result<()> {
    let h = handle(state, id)?;
    running(&h, id)?;
    let r = if frozen {
        ns::pause(&h.state_root, id)
    } else {
        ns::resume(&h.state_root, id)
    };
    r.map_err(|source| Error::Freeze {
        what: if frozen { "pause" } else { "resume" },
        id: id.to_string(),
        source: Box::new(source),
    })
}

/// Applies new limits (an OCI LinuxResources object, JSON) to the container's cgroup.
pub fn update(state: &State, id: &str, resources_json: &[u8]) -> Result<()> {
    let resources: oci_spec::runtime::LinuxResources = serde_json::from_slice(resources_json)
        .map_err(|source| Error::BadResources {
            id: id.to_string(),
            source,
        })?;
    let h = handle(state, id)?;
    running(&h, id)?;
    ns::update(&h.state_root, id, &resources).map_err(lib_err("update container", id))
}

pub fn stats(state: &State, id: &str) -> Result<pb::StatsResponse> {
    let h = handle(state, id)?;
    let u = ns::usage(&h.state_root, id).map_err(lib_err("stats of", id))?;
    let mut r = pb::StatsResponse::new();
    r.cpu_usage_usec = u.cpu_usage_usec;
    r.cpu_user_usec = u.cpu_user_usec;
    r.cpu_system_usec = u.cpu_system_usec;
    r.memory_usage_bytes = u.memory_usage_bytes;
    r.memory_limit_bytes = u.memory_limit_bytes;
    r.pids_current = u.pids_current;
    r.oom_kill = u.oom_kill;
    r.source = "cgroup".into();
    Ok(r)
}

pub fn remove(state: &State, id: &str, force: bool) -> Result<()> {
    let h = handle(state, id)?;
    let alive = !h.init.has_exited();
    // A created, never started container may go without force (as with runc).
    if alive && h.started && !force {
        return Err(Error::Running(id.to_string()));
    }
    // Kills what is left (SIGKILL to the whole cgroup) and removes the cgroup.
    ns::delete(&h.state_root, id, true).map_err(lib_err("delete container", id))?;
    // Wait (without the table lock: the reaper needs it) for the init to be reaped.
    let until = Instant::now() + Duration::from_secs(10);
    while !h.init.has_exited() {
        if Instant::now() > until {
            return Err(Error::DidNotDie(id.to_string()));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut t = state.table();
    let c = t.containers.remove(id).ok_or_else(|| not_found(id))?;
    t.procs.retain(|k, _| k.0 != id);
    drop(t);
    let _ = std::fs::remove_dir_all(&c.bundle);
    let _ = std::fs::remove_dir_all(&c.state_root);
    crate::debug!("container {id}: removed");
    Ok(())
}

/// Force-removes every container (host mode shutdown: leave no cgroups or files behind).
pub fn remove_all(state: &State) {
    let ids: Vec<String> = state.table().containers.keys().cloned().collect();
    for id in ids {
        if let Err(e) = remove(state, &id, true) {
            crate::error!("removing container {id}: {e:?}");
        }
    }
}

/// A container that joins the VM's root network namespace (every VM container: the VM is its
/// network boundary) may still ask for `net.*` sysctls, as Docker does. libcontainer refuses
/// those for the namespace it runs in, so the agent, which owns that namespace, sets them
/// itself and takes them out of the spec: the container sees them as with runc.
fn vm_network_sysctls(spec: &mut Spec) -> Result<()> {
    if std::process::id() != 1 {
        return Ok(());
    }
    let Some(mut linux) = spec.linux().clone() else {
        return Ok(());
    };
    let joins_root = linux.namespaces().iter().flatten().any(|n| {
        n.typ() == LinuxNamespaceType::Network
            && n.path().as_deref() == Some(Path::new(guest::ROOT_NETNS))
    });
    let Some(mut sysctl) = linux.sysctl().clone() else {
        return Ok(());
    };
    if !joins_root {
        return Ok(());
    }
    let mut net: Vec<String> = sysctl
        .keys()
        .filter(|k| k.starts_with("net."))
        .cloned()
        .collect();
    net.sort();
    for key in net {
        let value = sysctl.remove(&key).unwrap_or_default();
        if key.contains("..") || key.contains('/') {
            return Err(Error::BadSysctl(key));
        }
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        if let Err(source) = std::fs::write(&path, &value) {
            return Err(Error::Sysctl { key, value, source });
        }
    }
    linux.set_sysctl(Some(sysctl));
    spec.set_linux(Some(linux));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_sizes_need_both_sides() {
        let p = |v: serde_json::Value| -> oci_spec::runtime::Process {
            serde_json::from_value(v).expect("process")
        };
        let user = serde_json::json!({"uid": 0, "gid": 0});
        let sized = p(
            serde_json::json!({"cwd": "/", "user": user, "consoleSize": {"height": 30, "width": 90}}),
        );
        assert_eq!(console_size(&sized), Some((30, 90)));
        let half = p(
            serde_json::json!({"cwd": "/", "user": user, "consoleSize": {"height": 30, "width": 0}}),
        );
        assert_eq!(console_size(&half), None);
        assert_eq!(
            console_size(&p(serde_json::json!({"cwd": "/", "user": user}))),
            None
        );
    }
}
