//! The VM stands or falls as a whole: when any of its host-side helpers (the vsock backend,
//! virtiofsd) dies, the guest can no longer reach its agent or its files, so QEMU is killed too
//! and the shim, which watches QEMU, reports the container stopped (137) at once instead of
//! leaving it "running" with a dead file system.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use clearbox_vmm::VmHandle;
use nix::poll::{PollFd, PollFlags, PollTimeout};

/// The pidfds of a VM's QEMU and helpers, opened while the shim can still read the VM's record
/// and /proc; [`Watch::spawn`] watches them from a thread once the shim is single-threaded no
/// more (after it dropped its privileges, which needs a single thread).
pub(crate) struct Watch {
    qemu: OwnedFd,
    helpers: Vec<(String, OwnedFd)>,
}

/// Opens the pidfds of every process recorded for the VM in `run_dir`. `None` when there is
/// nothing to watch, or when a helper is already gone (QEMU is then killed at once).
pub(crate) fn prepare(run_dir: &Path) -> Option<Watch> {
    let Ok(handle) = VmHandle::load(run_dir) else {
        tracing::warn!("no VM record: helpers are not watched");
        return None;
    };
    let mut qemu: Option<OwnedFd> = None;
    let mut helpers: Vec<(String, OwnedFd)> = Vec::new();
    for p in handle.processes() {
        let Some(fd) = clearbox_util::proc::pidfd_verified(p.pid, Some(p.start_time)) else {
            // Already gone: treat it as dying right now.
            if p.role != "qemu" {
                tracing::warn!(role = %p.role, "VM helper already gone");
                if let Some(q) = handle.exit_fd() {
                    let _ = clearbox_util::proc::pidfd_send_signal(q.as_fd(), libc::SIGKILL);
                }
                return None;
            }
            continue;
        };
        if p.role == "qemu" {
            qemu = Some(fd);
        } else {
            helpers.push((p.role.clone(), fd));
        }
    }
    let qemu = qemu?;
    if helpers.is_empty() {
        return None;
    }
    Some(Watch { qemu, helpers })
}

impl Watch {
    /// Starts a thread that kills QEMU as soon as any helper exits.
    pub(crate) fn spawn(self) {
        let Watch { qemu, helpers } = self;
        spawn_watcher(qemu, helpers);
    }
}

/// How long a helper's death waits for QEMU's own exit to show before it counts as the
/// helper's failure.
const QEMU_EXIT_GRACE_MS: u16 = 200;

/// True when QEMU's pidfd reports its exit within `grace_ms`.
fn qemu_ends_within(qemu: &OwnedFd, grace_ms: u16) -> bool {
    let mut fds = [PollFd::new(qemu.as_fd(), PollFlags::POLLIN)];
    loop {
        match nix::poll::poll(&mut fds, PollTimeout::from(grace_ms)) {
            Ok(n) => return n > 0,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return false,
        }
    }
}

fn spawn_watcher(qemu: OwnedFd, helpers: Vec<(String, OwnedFd)>) {
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
            if dead.contains(&"qemu") || qemu_ends_within(&qemu, QEMU_EXIT_GRACE_MS) {
                // QEMU going away takes its helpers with it (it closes their sockets before
                // its own exit shows), and at a container's end the shim kills it: no helper
                // died on its own.
                return;
            }
            tracing::warn!(helpers = ?dead, "a VM helper died: stopping the VM");
            if let Err(e) = clearbox_util::proc::pidfd_send_signal(qemu.as_fd(), libc::SIGKILL) {
                tracing::warn!(error = %e, "cannot kill QEMU");
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot watch the VM helpers");
    }
}
