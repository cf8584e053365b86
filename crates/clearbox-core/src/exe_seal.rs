//! Protection of the host's clearbox binary from the containers it creates (CVE-2019-5736).
//!
//! The processes that set up a container (libcontainer's intermediate and init, for
//! `create`, `run` and `exec`) are forks of the clearbox process: until they exec the
//! container's program, their `/proc/PID/exe` is the host binary, visible in the container's PID
//! namespace. A container process allowed to look at them (CAP_SYS_PTRACE: `--cap-add
//! SYS_PTRACE`, `--privileged`) can open that link, wait for the process to exit and reopen the
//! file for writing through `/proc/self/fd`: the next `clearbox` run on the host is then the
//! attacker's program, as root. runc and crun defend by running from a copy the container cannot
//! write to, and so does clearbox: [`ensure_sealed`] re-executes the process from a read-only
//! view of its binary before any container is touched.
//!
//! The view, cheapest first (runc 1.2 does the same; written here because the only crate for
//! it, `pentacle`, has the copy alone, which costs a 20 MB copy per command):
//! 1. a detached, read-only overlayfs mount whose lower layer is the binary's directory (no
//!    copy: the file is the same page cache, but every write through the overlay is `EROFS`, and
//!    the mount is gone when the last process running from it ends);
//! 2. a sealed memfd copy (`F_SEAL_WRITE`, `F_SEAL_SHRINK`, `F_SEAL_GROW`, `F_SEAL_SEAL`), where
//!    overlayfs cannot be mounted (no privilege, no overlay in the kernel).
//!
//! A binary that already lives on a read-only mount, or in a sealed memfd, is left as it is: that
//! is also how the re-executed process knows it is done, without any marker the caller could set.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{Mode, OFlags, SealFlags, StatVfsMountFlags};
use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags};

/// Why the binary could not be sealed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// Reading the running binary failed.
    #[error("cannot open the running binary (/proc/self/exe)")]
    Open(#[source] io::Error),
    /// Neither an overlay view nor a sealed copy could be made.
    #[error("cannot make a read-only copy of the clearbox binary")]
    Copy(#[source] io::Error),
    /// execveat of the sealed binary failed.
    #[error("cannot re-execute clearbox from its sealed copy")]
    Exec(#[source] io::Error),
}

/// Makes sure the running binary cannot be written through `/proc/PID/exe`: returns at once
/// when it already is (a read-only mount or a sealed memfd), re-executes the process from a
/// sealed view otherwise (same arguments and environment; it does not return then).
pub fn ensure_sealed() -> Result<(), SealError> {
    let exe = File::open("/proc/self/exe").map_err(SealError::Open)?;
    if is_sealed(exe.as_fd()) {
        return Ok(());
    }
    let path = std::fs::read_link("/proc/self/exe").map_err(SealError::Open)?;
    let sealed = match overlay_view(&path) {
        Ok(fd) => fd,
        Err(e) => {
            tracing::debug!("overlay view of {} failed ({e}), copying", path.display());
            sealed_copy(&exe).map_err(SealError::Copy)?
        }
    };
    drop(exe);
    Err(SealError::Exec(exec_fd(sealed.as_fd(), &path)))
}

/// Set by the re-execution to the path of the installed binary (the sealed view's
/// `/proc/self/exe` is not it), for finding companion programs installed beside it
/// (`clearbox-vmux`).
pub const ORIGINAL_EXE_ENV: &str = "CLEARBOX_EXE";

/// True when writes to the file cannot happen: its mount is read-only, or it is a memfd
/// sealed against writing.
pub fn is_sealed(fd: BorrowedFd<'_>) -> bool {
    if let Ok(st) = rustix::fs::fstatvfs(fd) {
        if st.f_flag.contains(StatVfsMountFlags::RDONLY) {
            return true;
        }
    }
    matches!(rustix::fs::fcntl_get_seals(fd), Ok(s) if s.contains(SealFlags::WRITE))
}

/// An `O_PATH` descriptor of the binary seen through a detached read-only overlayfs mount.
fn overlay_view(path: &Path) -> io::Result<OwnedFd> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::other("the binary has no directory"));
    };
    // A deleted binary (replaced by an upgrade) reads as "… (deleted)": copy it instead.
    // Overlay's lowerdir option separates layers with ':' and options with ',': a path with
    // either (or an escape) would need escaping, so copy then too.
    let dir_bytes = dir.as_os_str().as_bytes();
    if !path.exists() || dir_bytes.iter().any(|b| matches!(b, b':' | b',' | b'\\')) {
        return Err(io::Error::other(
            "the binary's path cannot be an overlay layer",
        ));
    }
    // Overlayfs without an upper layer needs two lower ones: the second is an empty tmpfs,
    // detached like the overlay itself, so nothing appears in any mount table.
    let empty = detached("tmpfs", &[("size", "4k"), ("mode", "0500")])?;
    let mut lower = OsString::from(dir.as_os_str());
    lower.push(format!(":/proc/self/fd/{}", empty.as_raw_fd()));
    let lower = lower
        .into_string()
        .map_err(|_| io::Error::other("non-UTF-8 path"))?;
    let ovl = detached("overlay", &[("lowerdir", lower.as_str())])?;
    let fd = rustix::fs::openat(
        &ovl,
        name,
        OFlags::PATH | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    )?;
    Ok(fd)
}

/// A new filesystem of `fstype` with `options`, mounted read-only, nosuid and nodev, attached
/// nowhere: the descriptor is its root.
fn detached(fstype: &str, options: &[(&str, &str)]) -> io::Result<OwnedFd> {
    let ctx = rustix::mount::fsopen(fstype, FsOpenFlags::FSOPEN_CLOEXEC)?;
    for (k, v) in options {
        rustix::mount::fsconfig_set_string(&ctx, *k, *v)?;
    }
    rustix::mount::fsconfig_create(&ctx)?;
    let mnt = rustix::mount::fsmount(
        &ctx,
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::MOUNT_ATTR_RDONLY
            | MountAttrFlags::MOUNT_ATTR_NOSUID
            | MountAttrFlags::MOUNT_ATTR_NODEV,
    )?;
    Ok(mnt)
}

/// A memfd holding a copy of the binary, sealed against every change.
fn sealed_copy(exe: &File) -> io::Result<OwnedFd> {
    let fd = rustix::fs::memfd_create(
        "clearbox",
        rustix::fs::MemfdFlags::CLOEXEC | rustix::fs::MemfdFlags::ALLOW_SEALING,
    )?;
    let mut src = exe;
    let mut dst = File::from(fd);
    io::copy(&mut src, &mut dst)?;
    rustix::fs::fcntl_add_seals(
        &dst,
        SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE | SealFlags::SEAL,
    )?;
    Ok(OwnedFd::from(dst))
}

/// `execveat(fd, "", argv, environ, AT_EMPTY_PATH)` with this process's arguments and
/// environment, plus [`ORIGINAL_EXE_ENV`] = `original`. Returns only on failure.
fn exec_fd(fd: BorrowedFd<'_>, original: &Path) -> io::Error {
    let cstr = |s: &OsStr| CString::new(s.as_bytes()).ok();
    let args: Option<Vec<CString>> = std::env::args_os().map(|a| cstr(&a)).collect();
    let env: Option<Vec<CString>> = std::env::vars_os()
        .filter(|(k, _)| k != ORIGINAL_EXE_ENV)
        .chain(std::iter::once((
            OsString::from(ORIGINAL_EXE_ENV),
            original.as_os_str().to_owned(),
        )))
        .map(|(k, v)| {
            let mut kv = k;
            kv.push("=");
            kv.push(v);
            cstr(&kv)
        })
        .collect();
    let (Some(args), Some(env)) = (args, env) else {
        return io::Error::other("an argument or variable holds a NUL byte");
    };
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    // SAFETY: `fd` is an open descriptor borrowed for the call; the path is an empty
    // NUL-terminated string (AT_EMPTY_PATH execs `fd` itself); `argv` and `envp` are
    // NULL-terminated arrays of pointers to NUL-terminated strings owned by `args`/`env`,
    // which outlive the call. On success the call does not return.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            fd.as_raw_fd(),
            c"".as_ptr(),
            argv.as_ptr(),
            envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        );
    }
    io::Error::last_os_error()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_copy_reads_as_sealed_and_refuses_writes() {
        let exe = File::open("/proc/self/exe").unwrap();
        let fd = sealed_copy(&exe).unwrap();
        assert!(is_sealed(fd.as_fd()));
        // Opening for writing succeeds on a memfd; every write fails.
        let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
        let mut w = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        let err = io::Write::write_all(&mut w, b"PWNED").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
    }

    #[test]
    fn the_overlay_view_is_read_only() {
        // Mounting needs CAP_SYS_ADMIN: scripts/test.sh runs the tests as root.
        if !nix::unistd::geteuid().is_root() {
            panic!("run as root (the overlay view needs CAP_SYS_ADMIN)");
        }
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let fd = overlay_view(&exe).unwrap();
        let file = File::open(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
        assert!(is_sealed(file.as_fd()));
        let err = std::fs::OpenOptions::new()
            .append(true)
            .open(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
        // Same content as the binary.
        assert_eq!(
            std::fs::read(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap(),
            std::fs::read(&exe).unwrap()
        );
    }

    #[test]
    fn an_ordinary_file_is_not_sealed() {
        let f = tempfile::tempfile().unwrap();
        assert!(!is_sealed(f.as_fd()));
    }
}
