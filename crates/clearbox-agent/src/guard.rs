//! The agent's own seccomp filter for every container process: no `AF_VSOCK` socket, no
//! io_uring and no `open_by_handle_at`.
//!
//! vsock is how the host talks to the agent; a container has no business on it (its network is
//! its interfaces). The agent serves only the host's CID (see `peer`); this filter keeps
//! container processes from opening a vsock socket at all, whatever the spec says.
//!
//! How: the container-setup helper loads this filter on itself before it calls libcontainer.
//! Seccomp filters are inherited by every child and can never be removed, so the container's
//! init and every exec'd process run under it, on top of the spec's own filter (the kernel
//! applies every filter of the stack and keeps the most restrictive answer). That holds for a
//! spec without any seccomp section too (`--privileged`), and does not depend on how
//! libseccomp merges rules for the same syscall in the spec's filter (an unconditional
//! `socket` allow there cannot override a rule in another filter).
//!
//! io_uring: `IORING_OP_SOCKET` (Linux 5.19+) creates sockets without the socket(2) syscall,
//! so a filter on socket(2) alone is bypassed through io_uring. The guest kernel has
//! `CONFIG_IO_URING=y`, hence `io_uring_setup`, `io_uring_enter` and `io_uring_register` are
//! refused as well (Docker's default profile refuses them too). Building the guest kernel
//! without io_uring (and without `CONFIG_VSOCKETS_LOOPBACK`, which only serves guest-internal
//! vsock connections) would remove the bypass class altogether.
//!
//! `open_by_handle_at`: a container's root and volumes are subtrees of one virtio-fs mount, and
//! a file handle names a node of the mount, not of the subtree. A process with
//! `CAP_DAC_READ_SEARCH` (granted by `--cap-add` or `--privileged`) could forge the handle of
//! the export's root node and reach what the container was never given (the host side keeps
//! that harmless too, see the backend's `share`), the guest's version of the 2014
//! "shocker" escape from Docker. Docker's default profile refuses it too.
//!
//! Only the native architecture is allowed (libseccomp's default "bad arch" action kills), so
//! 32-bit `socketcall(2)`, whose arguments a filter cannot read, is no way around it either; the
//! guest kernel has no IA32 or x32 emulation anyway.
//!
//! The filter does not set no_new_privs (the helper is root with CAP_SYS_ADMIN), so setuid
//! programs in containers keep working as the spec allows.

use libseccomp::{ScmpAction, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};

/// errno of a refused `socket(AF_VSOCK, ...)`: the permission to create it is denied.
pub const VSOCK_ERRNO: i32 = libc::EACCES;
/// errno of refused io_uring calls.
pub const IO_URING_ERRNO: i32 = libc::EPERM;
/// errno of a refused `open_by_handle_at`.
pub const BY_HANDLE_ERRNO: i32 = libc::EPERM;

const IO_URING: [&str; 3] = ["io_uring_setup", "io_uring_enter", "io_uring_register"];

#[derive(Debug, thiserror::Error)]
#[error("building the container seccomp guard")]
pub struct GuardError(#[source] libseccomp::error::SeccompError);

/// The filter: allow everything but `socket(AF_VSOCK, ...)`, io_uring and
/// `open_by_handle_at`.
pub fn filter() -> Result<ScmpFilterContext, GuardError> {
    let mut f = ScmpFilterContext::new(ScmpAction::Allow).map_err(GuardError)?;
    f.set_ctl_nnp(false).map_err(GuardError)?;
    let socket = ScmpSyscall::from_name("socket").map_err(GuardError)?;
    f.add_rule_conditional(
        ScmpAction::Errno(VSOCK_ERRNO),
        socket,
        &[ScmpArgCompare::new(
            0,
            ScmpCompareOp::Equal,
            libc::AF_VSOCK as u64,
        )],
    )
    .map_err(GuardError)?;
    for name in IO_URING {
        let sys = ScmpSyscall::from_name(name).map_err(GuardError)?;
        f.add_rule(ScmpAction::Errno(IO_URING_ERRNO), sys)
            .map_err(GuardError)?;
    }
    let by_handle = ScmpSyscall::from_name("open_by_handle_at").map_err(GuardError)?;
    f.add_rule(ScmpAction::Errno(BY_HANDLE_ERRNO), by_handle)
        .map_err(GuardError)?;
    Ok(f)
}

/// Loads the filter on the calling thread (the single-threaded helper: its whole process, and
/// every process it creates from then on).
pub fn install() -> Result<(), GuardError> {
    filter()?.load().map_err(GuardError)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errno_of(rc: libc::c_long) -> i32 {
        if rc >= 0 {
            0
        } else {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
        }
    }

    /// Loaded on one test thread only (no TSYNC): the filter dies with the thread.
    #[test]
    fn vsock_io_uring_and_handles_are_refused_other_sockets_work() {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(unsafe { libc::geteuid() }, 0, "needs root (CAP_SYS_ADMIN)");
        let results = std::thread::spawn(|| {
            install().expect("install");
            let mut out = Vec::new();
            for (family, ty) in [
                (libc::AF_VSOCK, libc::SOCK_STREAM),
                (libc::AF_VSOCK, libc::SOCK_SEQPACKET),
                (libc::AF_VSOCK, libc::SOCK_DGRAM),
                (libc::AF_UNIX, libc::SOCK_STREAM),
            ] {
                // SAFETY: socket(2) with integers; a created fd is closed at once.
                let fd = unsafe { libc::socket(family, ty | libc::SOCK_CLOEXEC, 0) };
                out.push(errno_of(fd.into()));
                if fd >= 0 {
                    // SAFETY: closing the fd just created.
                    unsafe { libc::close(fd) };
                }
            }
            let mut params = [0u8; 120];
            // SAFETY: io_uring_setup reads/writes `params` (120 bytes, the kernel's struct
            // io_uring_params size); refused by the filter before the kernel looks at it.
            let rc = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4, params.as_mut_ptr()) };
            out.push(errno_of(rc));
            // A handle of nothing: refused by the filter before the kernel reads it.
            let mut handle = [0u8; 16];
            // SAFETY: open_by_handle_at reads `handle` (16 bytes: a file_handle header with a
            // zero-sized handle); refused by the filter before the kernel looks at it.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_open_by_handle_at,
                    libc::AT_FDCWD,
                    handle.as_mut_ptr(),
                    libc::O_RDONLY,
                )
            };
            out.push(errno_of(rc));
            out
        })
        .join()
        .expect("thread");
        assert_eq!(
            results,
            vec![
                VSOCK_ERRNO,
                VSOCK_ERRNO,
                VSOCK_ERRNO,
                0,
                IO_URING_ERRNO,
                BY_HANDLE_ERRNO
            ]
        );
    }
}
