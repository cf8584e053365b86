//! Tearing a VM container down from any process: kill its shim (when it still is the recorded
//! process) and everything of its VM, unwire its network, unmount and remove its share, its
//! host cgroup and its files. Used by `delete`, by a `create` that failed half-way, and before
//! a `create` that finds leftovers of an earlier container with the same state directory.

use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use clearbox_util::proc::{pidfd_send_signal, pidfd_verified};
use clearbox_vmm::VmHandle;

use crate::layout::Record;
use crate::{connect_record, host_cgroup, net, share, SHIM_SUBCOMMAND};

/// Kills the shim (when it still is the recorded process) and everything of the VM, unmounts
/// the share and removes its files. Idempotent; works from any process.
pub(crate) fn teardown(rec: &Record, dir: Option<&Path>, shim: Option<(i32, Option<u64>)>) {
    if rec.is_member() {
        return teardown_member(rec, dir, shim);
    }
    // The shim records what it wired in the state dir's copy of the record.
    let wired = dir
        .and_then(|d| Record::load(d).ok().flatten())
        .and_then(|r| r.net)
        .or_else(|| rec.net.clone());
    // Opened before the shim dies: a namespace it created is reachable only through its pid.
    let netns = wired.as_ref().and_then(|n| net::open_netns(n, shim));
    let shims = shim
        .into_iter()
        .chain(dir.map(shims_of).unwrap_or_default());
    for (pid, start) in shims {
        kill_and_wait(pid, start);
    }
    // Processes the VMM did not record: virtiofsd's sandboxed child (it only gets SIGTERM when
    // its parent dies), or QEMU and daemons of a shim killed before it recorded them. Each
    // names a socket in the VM's run dir on its command line. Killed before the files go, so
    // that none creates one afterwards (the shim, their only parent, is dead by now).
    let mut needle = rec.vm_run_dir.as_os_str().as_bytes().to_vec();
    needle.push(b'/');
    for (pid, start) in processes_naming(&needle) {
        kill_and_wait(pid, start);
    }
    match VmHandle::load(&rec.vm_run_dir) {
        Ok(h) => {
            if let Err(e) = h.kill_and_cleanup() {
                tracing::warn!(error = %e, "VM cleanup");
            }
        }
        Err(_) => remove_plain_files(&rec.vm_run_dir),
    }
    // QEMU is gone, so are its taps; the veths' qdiscs stay until removed here.
    if let (Some(n), Some(ns)) = (&wired, &netns) {
        net::unwire_in(ns, n);
    }
    share::remove(rec);
    if let Some(cg) = &rec.host_cgroup {
        host_cgroup::remove(cg, rec.host_cgroup_shared);
    }
}

/// An app container of a pod: its shims, its container in the guest (when the VM still runs),
/// its mounts in the pod's export and its host cgroup. The VM is the sandbox's and stays.
fn teardown_member(rec: &Record, dir: Option<&Path>, shim: Option<(i32, Option<u64>)>) {
    let shims = shim
        .into_iter()
        .chain(dir.map(shims_of).unwrap_or_default());
    for (pid, start) in shims {
        kill_and_wait(pid, start);
    }
    if let Ok(agent) = connect_record(rec) {
        match agent.remove_container(&rec.guest_id, true) {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => tracing::warn!(error = %e, "remove the container from the pod's VM"),
        }
    }
    share::remove(rec);
    if let Some(cg) = &rec.host_cgroup {
        host_cgroup::remove(cg, rec.host_cgroup_shared);
    }
}

/// SIGKILLs `pid` if it still is the process that started at `start`, and waits (bounded) for
/// it to be gone.
fn kill_and_wait(pid: i32, start: Option<u64>) {
    if let Some(fd) = pidfd_verified(pid, start) {
        if pidfd_send_signal(fd.as_fd(), libc::SIGKILL).is_ok() {
            let mut fds = [nix::poll::PollFd::new(
                fd.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(5000u16));
        }
    }
}

/// Live processes with an argument containing `needle`, with their start times.
fn processes_naming(needle: &[u8]) -> Vec<(i32, Option<u64>)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    let me = std::process::id() as i32;
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let hit = cmd
            .split(|b| *b == 0)
            .any(|a| a.windows(needle.len()).any(|w| w == needle));
        if hit {
            if let Some(start) = clearbox_core::process::start_time(pid) {
                out.push((pid, Some(start)));
            }
        }
    }
    out
}

/// Live shims of the container in `dir` (init and exec'd processes), found by their command
/// line (`clearbox --log <dir>/shim….log __vm-shim …`), with their start times.
pub(crate) fn shims_of(dir: &Path) -> Vec<(i32, Option<u64>)> {
    let prefix = dir.join("shim");
    let prefix = prefix.as_os_str().as_bytes();
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let mut args = cmd.split(|b| *b == 0);
        let is_shim = args.clone().any(|a| a == SHIM_SUBCOMMAND.as_bytes())
            && args.any(|a| a.starts_with(prefix));
        if is_shim {
            if let Some(start) = clearbox_core::process::start_time(pid) {
                out.push((pid, Some(start)));
            }
        }
    }
    out.sort();
    out
}

/// Without a VMM record (the shim died before writing it) only plain files can be left.
fn remove_plain_files(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| !t.is_dir()) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}
