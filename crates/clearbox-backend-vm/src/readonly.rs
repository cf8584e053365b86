//! Read-only on the host side of the share.
//!
//! virtiofsd writes with its own (host) credentials, and a guest root can remount the virtio-fs
//! tag read-write, mount it again, or speak raw FUSE to virtiofsd: whatever the guest kernel
//! enforces is no protection. So a `ro` bind mount of the spec, and the rootfs when
//! `root.readonly` is set, are made read-only *on the host*: their bind mounts below `shared`
//! get the per-mount read-only flag (with every mount below them), and virtiofsd's writes
//! there fail with EROFS whatever the guest asks. virtiofsd's sandbox binds the shared
//! directory recursively into its own mount namespace; a recursive bind keeps each mount's
//! flags, so its view is read-only too (the VM attack tests check it end to end).
//!
//! Making a rootfs read-only means that the guest cannot create the mount points of the spec's
//! mounts in it any more (runc creates them before it remounts the root read-only). They are
//! created here first, on the host, resolved inside the rootfs (`openat2` with
//! `RESOLVE_IN_ROOT`, so a symlink or `..` in the image cannot lead out of it).

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;
use oci_spec::runtime::Mount;

use crate::Error;

/// Whether the spec asks for a read-only mount: the last of `ro`/`rw` wins, as in runc.
pub(crate) fn is_readonly(m: &Mount) -> bool {
    let mut ro = false;
    for o in m.options().as_deref().unwrap_or_default() {
        match o.as_str() {
            "ro" => ro = true,
            "rw" => ro = false,
            _ => {}
        }
    }
    ro
}

/// `struct mount_attr` of mount_setattr(2) (Linux 5.12, stable ABI; not in every libc
/// release).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;

/// Makes the detached mount tree `tree` (from `open_tree`) read-only, recursively.
pub(crate) fn make_readonly_fd(tree: &OwnedFd) -> std::io::Result<()> {
    setattr_fd(
        tree,
        &MountAttr {
            attr_set: MOUNT_ATTR_RDONLY,
            attr_clr: 0,
            propagation: 0,
            userns_fd: 0,
        },
    )
}

/// Makes the mount tree `tree` (from `open_tree`, attached or not) private, recursively:
/// nothing mounted later on either side of it propagates to the other.
pub(crate) fn make_private_fd(tree: &OwnedFd) -> std::io::Result<()> {
    setattr_fd(
        tree,
        &MountAttr {
            attr_set: 0,
            attr_clr: 0,
            propagation: libc::MS_PRIVATE,
            userns_fd: 0,
        },
    )
}

/// mount_setattr(2) on the mount tree `tree` itself, recursively.
fn setattr_fd(tree: &OwnedFd, attr: &MountAttr) -> std::io::Result<()> {
    // SAFETY: mount_setattr reads `attr` (its size is passed) and the empty NUL-terminated
    // path; `tree` is a valid descriptor.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
            attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Makes the mount at `dst` and every mount below it read-only, keeping their other flags
/// (nosuid, nodev, noexec, atime), then checks the result.
pub(crate) fn make_readonly(dst: &Path) -> Result<(), Error> {
    let what = || format!("make {} read-only", dst.display());
    let path = CString::new(dst.as_os_str().as_bytes())
        .map_err(|e| Error::io(what(), std::io::Error::other(e)))?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr reads `attr` (its size is passed) and the NUL-terminated `path`,
    // both alive for the whole call; no memory is written.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::AT_RECURSIVE | libc::AT_SYMLINK_NOFOLLOW,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        let e = if e.raw_os_error() == Some(libc::ENOSYS) {
            std::io::Error::other("mount_setattr(2) is missing: Linux 5.12 or later is needed")
        } else {
            e
        };
        return Err(Error::io(what(), e));
    }
    let flags = nix::sys::statvfs::statvfs(dst).map_err(|e| Error::errno(what(), e))?;
    if !flags
        .flags()
        .contains(nix::sys::statvfs::FsFlags::ST_RDONLY)
    {
        return Err(Error::Msg(format!(
            "{} is still writable after mount_setattr",
            dst.display()
        )));
    }
    Ok(())
}

/// Destinations that need a mount point in the rootfs: every mount's destination except those
/// below an earlier mount's (those live in that mount, e.g. `/dev/pts` in the `/dev` tmpfs).
/// The flag says whether the mount point is a file (a bind mount of a file).
pub(crate) fn mount_points(mounts: &[(PathBuf, bool)]) -> Vec<(PathBuf, bool)> {
    let mut out: Vec<(PathBuf, bool)> = Vec::new();
    for (i, (dst, is_file)) in mounts.iter().enumerate() {
        let nested = mounts[..i].iter().any(|(earlier, _)| {
            dst != earlier && dst.starts_with(earlier) && earlier != Path::new("/")
        });
        if !nested && dst != Path::new("/") {
            out.push((dst.clone(), *is_file));
        }
    }
    out
}

fn open_in_root(root: &OwnedFd, rel: &Path, flags: OFlag) -> nix::Result<OwnedFd> {
    openat2_fd(
        root,
        rel,
        flags,
        ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS,
    )
}

/// openat2(2) below `dir` with `flags` (and `O_CLOEXEC`) and `resolve`, as an owned
/// descriptor.
pub(crate) fn openat2_fd(
    dir: &OwnedFd,
    path: &(impl nix::NixPath + ?Sized),
    flags: OFlag,
    resolve: ResolveFlag,
) -> nix::Result<OwnedFd> {
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(resolve);
    let fd = openat2(dir.as_raw_fd(), path, how)?;
    // SAFETY: openat2 returned a new descriptor that nothing else owns.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
}

/// Creates the missing mount point `dst` (absolute in the container) below `rootfs`: its
/// directories, and the last component as a directory or an empty file. Every step is
/// resolved inside the rootfs.
pub(crate) fn create_mount_point(rootfs: &Path, dst: &Path, is_file: bool) -> Result<(), Error> {
    let what = || {
        format!(
            "create mount point {} in {}",
            dst.display(),
            rootfs.display()
        )
    };
    let root: OwnedFd = std::fs::File::open(rootfs)
        .map_err(|e| Error::io(what(), e))?
        .into();
    let parts: Vec<&std::ffi::OsStr> = dst
        .components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p),
            _ => None,
        })
        .collect();
    let mut rel = PathBuf::from(".");
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let parent = open_in_root(&root, &rel, OFlag::O_PATH | OFlag::O_DIRECTORY)
            .map_err(|e| Error::errno(what(), e))?;
        rel.push(part);
        // Already there (as anything; a symlink is resolved inside the rootfs by the next
        // step, or by the guest for the last component).
        if nix::sys::stat::fstatat(
            Some(parent.as_raw_fd()),
            *part,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .is_ok()
        {
            continue;
        }
        let r = if last && is_file {
            nix::fcntl::openat(
                Some(parent.as_raw_fd()),
                *part,
                OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC
                    | OFlag::O_WRONLY,
                Mode::from_bits_truncate(0o644),
            )
            .map(|fd| {
                // SAFETY: closing the descriptor openat just returned.
                unsafe { libc::close(fd) };
            })
        } else {
            nix::sys::stat::mkdirat(
                Some(parent.as_raw_fd()),
                *part,
                Mode::from_bits_truncate(0o755),
            )
        };
        match r {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => return Err(Error::errno(what(), e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(json: &str) -> Mount {
        serde_json::from_str(json).expect("mount")
    }

    #[test]
    fn ro_option_last_one_wins() {
        assert!(is_readonly(&m(
            r#"{"destination":"/d","type":"bind","source":"/s","options":["rbind","ro"]}"#
        )));
        assert!(!is_readonly(&m(
            r#"{"destination":"/d","type":"bind","source":"/s","options":["ro","rw"]}"#
        )));
        assert!(!is_readonly(&m(
            r#"{"destination":"/d","type":"bind","source":"/s"}"#
        )));
    }

    /// In a private mount namespace of a test thread: a recursive bind with a submount becomes
    /// read-only on every level, the source stays writable, and nosuid is kept.
    #[test]
    fn recursive_bind_becomes_read_only() {
        use nix::mount::{mount, MsFlags};
        // SAFETY: geteuid has no preconditions.
        assert_eq!(unsafe { libc::geteuid() }, 0, "needs root (mounts)");
        let tmp = tempfile::tempdir().expect("tmp");
        let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
        for d in [src.join("sub"), dst.clone(), tmp.path().join("other")] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        let (src2, other) = (src.clone(), tmp.path().join("other"));
        std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).expect("unshare");
            let none = None::<&str>;
            mount(none, "/", none, MsFlags::MS_PRIVATE | MsFlags::MS_REC, none).expect("private");
            mount(
                Some(&other),
                &src2.join("sub"),
                none,
                MsFlags::MS_BIND,
                none,
            )
            .expect("sub");
            let flags = MsFlags::MS_BIND | MsFlags::MS_REC;
            mount(Some(&src2), &dst, none, flags, none).expect("bind");
            let nosuid = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_NOSUID;
            mount(none, &dst, none, nosuid, none).expect("nosuid");
            make_readonly(&dst).expect("read-only");
            let erofs = |p: &Path| {
                let e = std::fs::write(p, "x").expect_err("written");
                assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{}", p.display());
            };
            erofs(&dst.join("f"));
            erofs(&dst.join("sub/f"));
            std::fs::write(src2.join("f"), "x").expect("source stays writable");
            let st = nix::sys::statvfs::statvfs(&dst).expect("statvfs");
            assert!(st.flags().contains(nix::sys::statvfs::FsFlags::ST_NOSUID));
        })
        .join()
        .expect("thread");
        assert!(src.join("f").exists());
    }

    #[test]
    fn nested_destinations_need_no_mount_point() {
        let list = |v: &[&str]| -> Vec<(PathBuf, bool)> {
            v.iter().map(|p| (PathBuf::from(p), false)).collect()
        };
        let got = mount_points(&list(&["/proc", "/dev", "/dev/pts", "/data", "/devx", "/"]));
        assert_eq!(got, list(&["/proc", "/dev", "/data", "/devx"]));
    }

    #[test]
    fn mount_points_stay_inside_the_rootfs() {
        let tmp = tempfile::tempdir().expect("tmp");
        let root = tmp.path().join("rootfs");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(root.join("etc")).expect("mkdir");
        std::fs::create_dir_all(&outside).expect("mkdir");
        // Hostile image: absolute and `..` symlinks pointing out of the rootfs.
        std::os::unix::fs::symlink(&outside, root.join("abs")).expect("symlink");
        std::os::unix::fs::symlink("../../outside", root.join("rel")).expect("symlink");
        // Dangling inside the rootfs: refused, nothing created anywhere.
        create_mount_point(&root, Path::new("/abs/x/y"), false).expect_err("dangling");
        let inner = root.join(outside.strip_prefix("/").expect("abs"));
        std::fs::create_dir_all(&inner).expect("mkdir");
        std::fs::create_dir_all(root.join("outside")).expect("mkdir");
        create_mount_point(&root, Path::new("/abs/x/y"), false).expect("abs");
        create_mount_point(&root, Path::new("/rel/z"), false).expect("rel");
        create_mount_point(&root, Path::new("/../../esc"), false).expect("dotdot");
        create_mount_point(&root, Path::new("/etc/hosts"), true).expect("file");
        assert_eq!(
            std::fs::read_dir(&outside).expect("outside").count(),
            0,
            "created outside the rootfs"
        );
        assert!(!tmp.path().join("esc").exists());
        // Symlinks resolved as the container would: inside the rootfs.
        assert!(inner.join("x/y").is_dir());
        assert!(root.join("outside/z").is_dir());
        assert!(root.join("esc").is_dir());
        assert!(root.join("etc/hosts").is_file());
        // Existing nodes are left alone.
        create_mount_point(&root, Path::new("/etc/hosts"), true).expect("again");
    }
}
