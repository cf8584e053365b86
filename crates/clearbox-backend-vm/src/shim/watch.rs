//! The VM stands or falls as a whole: when any of its host-side helpers (the vsock backend,
//! virtiofsd) dies, the guest can no longer reach its agent or its files, so QEMU is killed too
//! and the shim, which watches QEMU, reports the container stopped (137) at once instead of
//! leaving it "running" with a dead file system.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use clearbox_vmm::VmHandle;
use nix::poll::{PollFd, PollFlags, PollTimeout};

/// Starts a thread that kills QEMU as soon as any helper recorded for the VM in `run_dir` exits.
pub(crate) fn helpers(run_dir: &Path) {
    let Ok(handle) = VmHandle::load(run_dir) else {
        tracing::warn!("no VM record: helpers are not watched");
        return;
    };
    let mut qemu: Option<OwnedFd> = None;
    let mut helpers: Vec<(String, OwnedFd)> = Vec::new();
    for p in handle.processes() {
        let Some(fd) = crate::pidfd_verified(p.pid, Some(p.start_time)) else {
            // Already gone: treat it as dying right now.
            if p.role != "qemu" {
                tracing::warn!(role = %p.role, "VM helper already gone");
                if let Some(q) = handle.exit_fd() {
                    let _ = crate::pidfd_signal(&q, libc::SIGKILL);
                }
                return;
            }
            continue;
        };
        if p.role == "qemu" {
            qemu = Some(fd);
        } else {
            helpers.push((p.role.clone(), fd));
        }
    }
    let Some(qemu) = qemu else {
        return;
    };
    if helpers.is_empty() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("helper-watch".into())
        .spawn(move || {
            let mut fds: Vec<PollFd<'_>> = helpers
                .iter()
                .map(|(_, fd)| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
                .chain(std::iter::once(PollFd::new(
                    qemu.as_fd(),
                    PollFlags::POLLIN,
                )))
                .collect();
            loop {
                match nix::poll::poll(&mut fds, PollTimeout::NONE) {
                    Ok(_) => break,
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "watching the VM helpers");
                        return;
                    }
                }
            }
            let dead: Vec<&str> = fds
                .iter()
                .zip(helpers.iter().map(|(r, _)| r.as_str()).chain(["qemu"]))
                .filter(|(f, _)| f.revents().is_some_and(|r| !r.is_empty()))
                .map(|(_, role)| role)
                .collect();
            if dead.contains(&"qemu") {
                return;
            }
            tracing::warn!(helpers = ?dead, "a VM helper died: stopping the VM");
            if let Err(e) = crate::pidfd_signal(&qemu, libc::SIGKILL) {
                tracing::warn!(error = %e, "cannot kill QEMU");
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot watch the VM helpers");
    }
}
