//! The allow-list seccomp filter clearbox loads into vhost-device-vsock (which has none of its
//! own) between fork and exec; see `jail/` and docs/SECURITY.md.

use std::fs::File;
use std::io;

use crate::error::{Error, Result};

/// The system calls vhost-device-vsock makes (0.3, hybrid mode, with QEMU's vhost-user
/// frontend), found by running it under this filter in log mode ([`SECCOMP_LOG_ENV`]) through
/// boots, agent traffic (create, start, exec, signals, stats), the e2e suites and teardown, and
/// reading the kernel's audit lines; plus the `execve` that starts it and what Rust's runtime
/// needs to report a panic and abort. Anything else kills the process.
pub(crate) const VSOCK_SYSCALLS: &[&str] = &[
    "accept4",
    "access",
    "arch_prctl",
    "bind",
    "brk",
    "clock_gettime",
    "clock_nanosleep",
    "clone",
    "clone3",
    "close",
    "connect",
    "dup",
    "dup2",
    "dup3",
    "epoll_create1",
    "epoll_ctl",
    "epoll_pwait",
    "epoll_wait",
    "eventfd2",
    "execve",
    "exit",
    "exit_group",
    "fcntl",
    "fstat",
    "futex",
    "getcwd",
    "getpid",
    "getrandom",
    "getsockopt",
    "gettid",
    "ioctl",
    "listen",
    "lseek",
    "madvise",
    "mmap",
    "mprotect",
    "mremap",
    "munmap",
    "nanosleep",
    "newfstatat",
    "openat",
    "poll",
    "prctl",
    "pread64",
    "prlimit64",
    "read",
    "readlink",
    "readv",
    "recvfrom",
    "recvmsg",
    "rseq",
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "sched_getaffinity",
    "sched_yield",
    "sendmsg",
    "sendto",
    "set_robust_list",
    "set_tid_address",
    "setsockopt",
    "shutdown",
    "sigaltstack",
    "socket",
    "statx",
    "tgkill",
    "unlink",
    "unlinkat",
    "write",
    "writev",
];

/// The system calls `clearbox-vmux` makes (threads, Unix sockets, one read of
/// `/dev/urandom`), found like [`VSOCK_SYSCALLS`]; anything else kills it.
pub(crate) const VMUX_SYSCALLS: &[&str] = &[
    "accept4",
    "access",
    "arch_prctl",
    "bind",
    "brk",
    "clock_gettime",
    "clock_nanosleep",
    "clone",
    "clone3",
    "close",
    "execve",
    "exit",
    "exit_group",
    "fcntl",
    "fstat",
    "futex",
    "getcwd",
    "getpid",
    "getrandom",
    "gettid",
    "ioctl",
    "listen",
    "lseek",
    "madvise",
    "mmap",
    "mprotect",
    "mremap",
    "munmap",
    "nanosleep",
    "newfstatat",
    "openat",
    "poll",
    "prctl",
    "pread64",
    "prlimit64",
    "read",
    "readlink",
    "recvfrom",
    "rename",
    "renameat",
    "renameat2",
    "rseq",
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "sched_getaffinity",
    "sched_yield",
    "sendto",
    "set_robust_list",
    "set_tid_address",
    "setsockopt",
    "shutdown",
    "sigaltstack",
    "socket",
    "statx",
    "tgkill",
    "unlink",
    "unlinkat",
    "write",
    "writev",
];

/// Set (to anything) in the environment of whoever starts a VM, the vsock backend's filter
/// logs calls outside its allow list (kernel audit lines, `dmesg`) instead of killing: how the
/// list is kept up to date when vhost-device-vsock changes (docs/SECURITY.md).
pub const SECCOMP_LOG_ENV: &str = "CLEARBOX_SECCOMP_LOG";

/// A seccomp filter (BPF, for the host's architecture) allowing `syscalls` and killing the
/// process on anything else (logging it instead with `log_only`). Compiled by libseccomp in
/// the parent; loaded in the child.
pub(crate) fn allow_list_filter(
    syscalls: &[&str],
    log_only: bool,
) -> Result<Vec<libc::sock_filter>> {
    use libseccomp::{ScmpAction, ScmpFilterContext, ScmpSyscall};
    let err = |what: String| Error::Jail(format!("seccomp filter: {what}"));
    let default = if log_only {
        ScmpAction::Log
    } else {
        ScmpAction::KillProcess
    };
    let mut ctx = ScmpFilterContext::new(default).map_err(|e| err(format!("new: {e}")))?;
    // The child sets no_new_privs itself, right before loading.
    ctx.set_ctl_nnp(false)
        .map_err(|e| err(format!("nnp: {e}")))?;
    for name in syscalls {
        // A name this architecture lacks (e.g. `poll` on arm64) is simply not allowed.
        let Ok(sc) = ScmpSyscall::from_name(name) else {
            continue;
        };
        ctx.add_rule(ScmpAction::Allow, sc)
            .map_err(|e| err(format!("allow {name}: {e}")))?;
    }
    // libseccomp 2.5 (Debian 12) exports to a descriptor only.
    let mut mem = memfd()?;
    ctx.export_bpf(&mem)
        .map_err(|e| err(format!("export: {e}")))?;
    let mut bytes = Vec::new();
    {
        use std::io::{Read, Seek};
        mem.rewind()
            .and_then(|_| mem.read_to_end(&mut bytes))
            .map_err(|e| Error::Io("read the seccomp filter", e))?;
    }
    let size = std::mem::size_of::<libc::sock_filter>();
    if bytes.is_empty() || bytes.len() % size != 0 {
        return Err(err(format!("odd BPF length {}", bytes.len())));
    }
    Ok(bytes
        .chunks_exact(size)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect())
}

fn memfd() -> Result<File> {
    // SAFETY: memfd_create with a static name returns a new descriptor or -1.
    let fd = unsafe { libc::memfd_create(c"clearbox-seccomp".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(Error::Io("memfd_create", io::Error::last_os_error()));
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}
