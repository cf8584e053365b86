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
use clearbox_protocol::pb::agent as pb;
use clearbox_protocol::server::{Code, Error, Result};
use serde_json::Value;

use crate::bundle;
use crate::helper::{HelperError, Request};
use crate::process::Process;
use crate::service::{chain, status};
use crate::state::{Key, State};
use crate::wiring::{new_process, Wiring, WiringError};

/// The virtio-fs tag the host shares per sandbox; also reachable as `<run dir>/shared`.
pub const SHARED_TAG: &str = "clearbox";
/// `<run dir>/shared` points here (relative, so it holds for any run dir).
const SHARED_LINK_TARGET: &str = "virtiofs/clearbox";
/// Parent cgroup of containers without `linux.cgroupsPath`.
pub const DEFAULT_CGROUP_PARENT: &str = "clearbox";

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
        run_dir: PathBuf::from("/run/clearbox"),
        cgroup_parent: DEFAULT_CGROUP_PARENT.into(),
        no_pivot: false,
        lsm: bundle::Lsm::detect(),
    })
}

pub struct Container {
    bundle: PathBuf,
    state_root: PathBuf,
    /// The prepared spec (execs inherit its privileges).
    config: Value,
    started: bool,
    init: Arc<Process>,
}

/// Keys being created (CreateContainer: `(id, "")`, ExecProcess: `(id, exec)`) while their
/// helper runs without the table lock.
#[derive(Default)]
pub struct Pending(HashSet<Key>);

fn internal(what: &str, e: impl std::fmt::Display) -> Error {
    status(Code::INTERNAL, format!("{what}: {e}"))
}

fn not_found(id: &str) -> Error {
    status(Code::NOT_FOUND, format!("no container {id:?}"))
}

fn lib_err(what: &str, id: &str, e: &clearbox_container::Error) -> Error {
    status(Code::INTERNAL, format!("{what} {id:?}: {}", chain(e)))
}

fn helper_err(what: &str, id: &str, e: &HelperError) -> Error {
    let code = match e {
        // The library refused: almost always the spec or process (missing binary, bad mount).
        HelperError::Setup(_) => Code::INVALID_ARGUMENT,
        _ => Code::INTERNAL,
    };
    status(code, format!("{what} {id:?}: {}", chain(e)))
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
fn mount_virtiofs(tag: &str) -> Result<PathBuf> {
    if !valid_id(tag) {
        return Err(status(
            Code::INVALID_ARGUMENT,
            format!("bad virtio-fs tag {tag:?}"),
        ));
    }
    let run = &config().run_dir;
    let target = run.join("virtiofs").join(tag);
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
    if tag == SHARED_TAG {
        let link = run.join("shared");
        if std::fs::read_link(&link).ok().as_deref() != Some(Path::new(SHARED_LINK_TARGET)) {
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(SHARED_LINK_TARGET, &link)
                .map_err(|e| internal(&format!("symlink {}", link.display()), e))?;
        }
    }
    Ok(target)
}

fn resolve_rootfs(r: &pb::Rootfs) -> Result<PathBuf> {
    let path = if r.virtiofs_tag.is_empty() {
        PathBuf::from(&r.path)
    } else {
        mount_virtiofs(&r.virtiofs_tag)?.join(r.path.trim_start_matches('/'))
    };
    if !path.is_absolute() || !path.is_dir() {
        return Err(status(
            Code::INVALID_ARGUMENT,
            format!("rootfs {} is not a directory", path.display()),
        ));
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

pub fn create(state: &State, req: &pb::CreateContainerRequest) -> Result<()> {
    let id = req.container_id.as_str();
    if !valid_id(id) {
        return Err(status(
            Code::INVALID_ARGUMENT,
            format!("bad container id {id:?}"),
        ));
    }
    let key: Key = (id.to_string(), String::new());
    if !reserve(state, &key, |t| t.containers.contains_key(id)) {
        return Err(status(
            Code::ALREADY_EXISTS,
            format!("container {id:?} exists"),
        ));
    }
    let result = create_reserved(state, req, id);
    unreserve(state, &key);
    result
}

fn create_reserved(state: &State, req: &pb::CreateContainerRequest, id: &str) -> Result<()> {
    let cfg = config();
    let mut span = crate::log::Span::new(format!("create {id}"));
    let rootfs_req = req.rootfs.clone().unwrap_or_default();
    let rootfs = resolve_rootfs(&rootfs_req)?;
    span.step("rootfs resolved (virtio-fs mounted)");
    let stdio = req.stdio.clone().unwrap_or_default();
    let spec_terminal = spec_terminal(&req.oci_spec_json);
    let terminal = stdio.terminal || spec_terminal;
    let mut prepared = bundle::prepare(
        &req.oci_spec_json,
        id,
        &rootfs,
        rootfs_req.readonly,
        terminal,
        &cfg.cgroup_parent,
        cfg.lsm,
    )
    .map_err(|e| status(Code::INVALID_ARGUMENT, format!("spec: {}", chain(&e))))?;
    vm_network_sysctls(&mut prepared.config)?;
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
        let json = serde_json::to_vec_pretty(&prepared.config).map_err(std::io::Error::from)?;
        std::fs::write(bundle_dir.join("config.json"), json)
    });
    if let Err(e) = written {
        cleanup();
        return Err(internal("write bundle", e));
    }
    span.step("bundle written");
    let size = prepared
        .process
        .console_size
        .map(|c| (c.height, c.width))
        .filter(|s| s.0 > 0 && s.1 > 0);
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
                WiringError::Helper(e) => helper_err("create container", id, &e),
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
            config: prepared.config,
            started: false,
            init,
        },
    );
    crate::debug!("container {id}: created, init pid {pid}");
    Ok(())
}

fn spec_terminal(json: &[u8]) -> bool {
    serde_json::from_slice::<Value>(json)
        .ok()
        .and_then(|v| v.pointer("/process/terminal").and_then(Value::as_bool))
        .unwrap_or(false)
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
        return Err(status(
            Code::FAILED_PRECONDITION,
            format!("container {id:?} is not running"),
        ));
    }
    Ok(())
}

pub fn start(state: &State, id: &str) -> Result<()> {
    let h = handle(state, id)?;
    if h.started {
        return Err(status(
            Code::FAILED_PRECONDITION,
            format!("container {id:?} already started"),
        ));
    }
    running(&h, id)?;
    ns::start(&h.state_root, id).map_err(|e| lib_err("start container", id, &e))?;
    if let Some(c) = state.table().containers.get_mut(id) {
        c.started = true;
    }
    crate::debug!("container {id}: started");
    Ok(())
}

pub fn exec(
    state: &State,
    id: &str,
    exec_id: &str,
    process_json: &[u8],
    terminal: bool,
    open_stdin: bool,
) -> Result<()> {
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
        return Err(status(
            Code::FAILED_PRECONDITION,
            format!("container {id:?} is paused"),
        ));
    }
    let process = bundle::exec_process(process_json, terminal, &init_config, config().lsm)
        .map_err(|e| status(Code::INVALID_ARGUMENT, format!("process: {}", chain(&e))))?;
    let size = process
        .get("consoleSize")
        .and_then(|s| Some((s.get("height")?.as_u64()?, s.get("width")?.as_u64()?)))
        .and_then(|(h, w)| Some((u16::try_from(h).ok()?, u16::try_from(w).ok()?)))
        .filter(|s| s.0 > 0 && s.1 > 0);
    if !reserve(state, &key, |t| t.procs.contains_key(&key)) {
        return Err(status(
            Code::ALREADY_EXISTS,
            format!("exec {exec_id:?} exists in {id:?}"),
        ));
    }
    let file = bundle_dir.join(format!("exec-{}.json", SEQ.fetch_add(1, Ordering::Relaxed)));
    let result = (|| {
        let json = serde_json::to_vec(&process).map_err(|e| internal("encode process", e))?;
        std::fs::write(&file, json).map_err(|e| internal("write process file", e))?;
        let wiring = Wiring::new(terminal, open_stdin, size)?;
        let req_h = Request::Exec {
            id: id.to_string(),
            state_root: h.state_root.clone(),
            process_file: file.clone(),
            console_socket: wiring.console_path(),
        };
        let since = Instant::now();
        let (pid, ends) = wiring.run(&req_h).map_err(|e| match e {
            WiringError::Helper(e) => helper_err("exec in container", id, &e),
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
    ns::pids(&h.state_root, id).map_err(|e| lib_err("list processes of", id, &e))
}

pub fn kill_all(state: &State, id: &str, sig: i32) -> Result<()> {
    let h = handle(state, id)?;
    running(&h, id)?;
    ns::kill(&h.state_root, id, sig, true).map_err(|e| lib_err("signal container", id, &e))
}

pub fn freeze(state: &State, id: &str, frozen: bool) -> Result<()> {
    let h = handle(state, id)?;
    running(&h, id)?;
    let r = if frozen {
        ns::pause(&h.state_root, id)
    } else {
        ns::resume(&h.state_root, id)
    };
    r.map_err(|e| {
        let what = if frozen { "pause" } else { "resume" };
        status(
            Code::FAILED_PRECONDITION,
            format!("{what} container {id:?}: {}", chain(&e)),
        )
    })
}

/// Applies new limits (an OCI LinuxResources object, JSON) to the container's cgroup.
pub fn update(state: &State, id: &str, resources_json: &[u8]) -> Result<()> {
    let resources: oci_spec::runtime::LinuxResources = serde_json::from_slice(resources_json)
        .map_err(|e| {
            status(
                Code::INVALID_ARGUMENT,
                format!("update container {id:?}: invalid resources: {e}"),
            )
        })?;
    let h = handle(state, id)?;
    running(&h, id)?;
    ns::update(&h.state_root, id, &resources).map_err(|e| lib_err("update container", id, &e))
}

pub fn stats(state: &State, id: &str) -> Result<pb::StatsResponse> {
    let h = handle(state, id)?;
    let u = ns::usage(&h.state_root, id).map_err(|e| lib_err("stats of", id, &e))?;
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
        return Err(status(
            Code::FAILED_PRECONDITION,
            format!("container {id:?} is running (use force)"),
        ));
    }
    // Kills what is left (SIGKILL to the whole cgroup) and removes the cgroup.
    ns::delete(&h.state_root, id, true).map_err(|e| lib_err("delete container", id, &e))?;
    // Wait (without the table lock: the reaper needs it) for the init to be reaped.
    let until = Instant::now() + Duration::from_secs(10);
    while !h.init.has_exited() {
        if Instant::now() > until {
            return Err(status(
                Code::DEADLINE_EXCEEDED,
                format!("container {id:?} did not die"),
            ));
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

/// The VM's root network namespace, as the host names it in guest specs (the agent is PID 1).
const VM_ROOT_NETNS: &str = "/proc/1/ns/net";

/// A container that joins the VM's root network namespace (every VM container: the VM is its
/// network boundary) may still ask for `net.*` sysctls, as Docker does. libcontainer refuses
/// those for the namespace it runs in, so the agent, which owns that namespace, sets them
/// itself and takes them out of the spec: the container sees them as with runc.
fn vm_network_sysctls(config: &mut serde_json::Value) -> Result<()> {
    if std::process::id() != 1 {
        return Ok(());
    }
    let joins_root = config["linux"]["namespaces"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|n| n["type"] == "network" && n["path"] == VM_ROOT_NETNS);
    let Some(sysctl) = config["linux"]
        .get_mut("sysctl")
        .and_then(|s| s.as_object_mut())
    else {
        return Ok(());
    };
    if !joins_root {
        return Ok(());
    }
    let net: Vec<String> = sysctl
        .keys()
        .filter(|k| k.starts_with("net."))
        .cloned()
        .collect();
    for key in net {
        let value = sysctl.remove(&key).unwrap_or_default();
        let value = value.as_str().unwrap_or_default().to_string();
        if key.contains("..") || key.contains('/') {
            return Err(status(
                Code::INVALID_ARGUMENT,
                format!("bad sysctl {key:?}"),
            ));
        }
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        std::fs::write(&path, &value)
            .map_err(|e| status(Code::INVALID_ARGUMENT, format!("sysctl {key}={value}: {e}")))?;
    }
    Ok(())
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

    #[test]
    fn terminal_flag_is_read_from_the_spec() {
        assert!(spec_terminal(br#"{"process":{"terminal":true}}"#));
        assert!(!spec_terminal(br#"{"process":{}}"#));
        assert!(!spec_terminal(b"nonsense"));
    }
}
