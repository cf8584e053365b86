//! The container's cgroup on the host: it holds the shim and, by inheritance, QEMU and its
//! helper daemons, with the VM's own limits. Engines read a container's usage from the cgroup
//! of its pid (containerd-shim-runc-v2) or of its `cgroupsPath` (podman), so `podman stats`
//! and `docker stats` show what the VM really costs, and the host bounds it.
//!
//! * Path: the spec's `linux.cgroupsPath` (cgroupfs; the guest gets its own, guest-local one),
//!   else `/clearbox/<id>`.
//! * Memory: the guest's RAM plus [`HOST_OVERHEAD_MIB`] (QEMU, its TCG translation cache,
//!   virtiofsd, the vsock backend, the shim, and the page cache of the files they read).
//! * CPU: the spec's CPU resources as they are (shares, quota/period, cpuset).
//! * Pids: the spec's limit bounds the guest's processes, not the host's threads; the VM's
//!   host tasks are bounded by the jail uid's RLIMIT_NPROC instead.
//!
//! The shims join it themselves (the init shim before it starts anything); `delete` removes
//! it after the processes are gone.

use std::path::{Path, PathBuf};

use libcgroups::common::{CgroupConfig, CgroupManager, ControllerOpt};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxMemoryBuilder, LinuxResources, LinuxResourcesBuilder, Spec};
use serde::{Deserialize, Serialize};

use clearbox_core::BackendError;

use crate::Error;

/// Host memory of a VM beyond its guest RAM, measured (docs/SECURITY.md): QEMU under TCG
/// ~47 MiB anonymous (its 32 MiB translation cache and heap), virtiofsd ~9 MiB,
/// vhost-device-vsock ~4 MiB, the shim ~8 MiB: ~68 MiB, plus headroom for the page cache of
/// the files virtiofsd reads and writes (reclaimable, charged here too).
pub const HOST_OVERHEAD_MIB: u64 = 128;

/// What the shim applies.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct HostCgroup {
    pub path: PathBuf,
    pub resources: LinuxResources,
}

/// The container's host cgroup for a VM of `guest_memory_mib`.
pub(crate) fn plan(spec: &Spec, id: &str, guest_memory_mib: u32) -> Result<HostCgroup, Error> {
    let linux = spec.linux().as_ref();
    let path = linux
        .and_then(|l| l.cgroups_path().clone())
        .unwrap_or_else(|| PathBuf::from(format!("/clearbox/{id}")));
    let bytes = (u64::from(guest_memory_mib) + HOST_OVERHEAD_MIB) * 1024 * 1024;
    let memory = LinuxMemoryBuilder::default()
        .limit(i64::try_from(bytes).unwrap_or(i64::MAX))
        .build()
        .map_err(|e| Error::Msg(format!("host cgroup memory: {e}")))?;
    let mut b = LinuxResourcesBuilder::default().memory(memory);
    if let Some(cpu) = linux
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.cpu().clone())
    {
        b = b.cpu(cpu);
    }
    let resources = b
        .build()
        .map_err(|e| Error::Msg(format!("host cgroup resources: {e}")))?;
    Ok(HostCgroup { path, resources })
}

/// The host cgroup of a pod's app container: it holds only its shims (the VM is in the
/// sandbox's), so it gets no limits of its own; the container's limits are its guest cgroup.
pub(crate) fn plan_member(spec: &Spec, id: &str) -> Result<HostCgroup, Error> {
    let path = spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().clone())
        .unwrap_or_else(|| PathBuf::from(format!("/clearbox/{id}")));
    let resources = LinuxResourcesBuilder::default()
        .build()
        .map_err(|e| Error::Msg(format!("host cgroup resources: {e}")))?;
    Ok(HostCgroup { path, resources })
}

fn manager(path: &Path) -> Result<libcgroups::common::AnyCgroupManager, Error> {
    libcgroups::common::create_cgroup_manager(CgroupConfig {
        cgroup_path: path.to_path_buf(),
        systemd_cgroup: false,
        container_name: String::new(),
    })
    .map_err(|e| Error::Msg(format!("host cgroup {}: {e}", path.display())))
}

/// Moves the calling process into the cgroup (created if missing) and applies the limits.
/// Called before the shim has a second thread: on a v1 host it then moves without the
/// kernel's global threadgroup lock (`clearbox_container::cgroup_join`).
pub(crate) fn join(cg: &HostCgroup) -> Result<(), Error> {
    let m = manager(&cg.path)?;
    add_self(&m, &cg.path)?;
    m.apply(&ControllerOpt {
        resources: &cg.resources,
        disable_oom_killer: false,
        oom_score_adj: None,
        freezer_state: None,
    })
    .map_err(|e| Error::Msg(format!("limits of host cgroup {}: {e}", cg.path.display())))
}

/// Moves the calling process (an exec'd process's shim) into an existing cgroup.
pub(crate) fn join_existing(path: &Path) -> Result<(), Error> {
    add_self(&manager(path)?, path)
}

/// The calling process into `path`: by moving its only thread where the host allows it,
/// else through the library (`cgroup.procs`).
fn add_self(m: &libcgroups::common::AnyCgroupManager, path: &Path) -> Result<(), Error> {
    let failed =
        |e: &dyn std::fmt::Display| Error::Msg(format!("join host cgroup {}: {e}", path.display()));
    let moved = clearbox_container::cgroup_join::join_self(path)
        .map_err(|e| failed(&BackendError::flatten(&e).message))?;
    if moved {
        return Ok(());
    }
    m.add_task(Pid::this()).map_err(|e| failed(&e))
}

/// Checks a cgroup that exists before the container, as runc 1.1 does (see
/// `clearbox_container::shared_cgroup`): a frozen one is refused (the shim would hang in it);
/// true when it holds processes already (warned).
pub(crate) fn check_existing(path: &Path) -> Result<bool, Error> {
    let dirs = clearbox_container::namespaces::cgroup_dirs(path);
    clearbox_container::shared_cgroup::check(&dirs)
        .map_err(|e| Error::Msg(BackendError::flatten(&e).message))
}

/// Removes the cgroup, killing whatever is still in it; a `shared` one (it held other
/// processes before the container) only where empty, its other processes untouched.
/// Idempotent.
pub(crate) fn remove(path: &Path, shared: bool) {
    if shared {
        let dirs = clearbox_container::namespaces::cgroup_dirs(path);
        if !clearbox_container::shared_cgroup::remove_empty(&dirs) {
            tracing::warn!(
                "cgroup {} still holds processes that are not the container's: left in place",
                path.display()
            );
        }
        return;
    }
    // The container library's remove kills and retries rmdir for about 100 ms; a QEMU whose
    // guest RAM is large takes longer to exit after SIGKILL (unmapping it), so wait for the
    // cgroup to be empty first (bounded).
    drain(
        &clearbox_container::namespaces::cgroup_dirs(path),
        std::time::Duration::from_secs(5),
    );
    match manager(path).map(|m| m.remove()) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(path = %path.display(), error = %e, "remove host cgroup"),
        Err(e) => tracing::warn!(error = %e.one_line(), "remove host cgroup"),
    }
}

/// SIGKILLs the processes in `dirs` (one cgroup's directories, every hierarchy) until none is
/// left or `timeout` passed.
fn drain(dirs: &[PathBuf], timeout: std::time::Duration) {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let mut any = false;
        for d in dirs {
            let Ok(procs) = std::fs::read_to_string(d.join("cgroup.procs")) else {
                continue;
            };
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                any = true;
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::SIGKILL);
            }
        }
        if !any || std::time::Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(linux: serde_json::Value) -> Spec {
        serde_json::from_value(serde_json::json!({"ociVersion": "1.0.2", "linux": linux})).unwrap()
    }

    #[test]
    fn path_and_limits() {
        let s = spec(serde_json::json!({
            "cgroupsPath": "/libpod_parent/libpod-abc",
            "resources": {"cpu": {"quota": 50000, "period": 100000},
                          "memory": {"limit": 1}, "pids": {"limit": 3}}
        }));
        let cg = plan(&s, "abc", 192).unwrap();
        assert_eq!(cg.path, Path::new("/libpod_parent/libpod-abc"));
        let mem = cg.resources.memory().as_ref().unwrap();
        assert_eq!(mem.limit(), Some(((192 + HOST_OVERHEAD_MIB) << 20) as i64));
        assert_eq!(cg.resources.cpu().as_ref().unwrap().quota(), Some(50000));
        assert!(
            cg.resources.pids().is_none(),
            "guest pids do not bound host threads"
        );
        let cg = plan(&spec(serde_json::json!({})), "x", 128).unwrap();
        assert_eq!(cg.path, Path::new("/clearbox/x"));
    }
}
