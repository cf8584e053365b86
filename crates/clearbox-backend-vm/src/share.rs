//! The per-container virtio-fs share: `<base>/shared/rootfs` is a bind mount of the bundle's
//! rootfs and `<base>/shared/mounts/<n>` one of the source of the spec's n-th bind mount (a
//! directory or a file). virtiofsd exports only `shared`, so the guest sees nothing else of the
//! host. virtio-fs is a passthrough: what the container writes lands in the bundle's rootfs.
//! Read-only binds and a read-only rootfs are read-only on the host (see `readonly`).
//!
//! The guest can write into the export itself, not only into the rootfs and the volumes
//! (virtiofsd serves the export's root node to a guest that asks for it, e.g. by a forged
//! file handle). So nothing the host does there as root follows a symlink: the share's
//! directories and mount points are made and opened component by component without following
//! one (`Anchor`), binds and attaches go onto those descriptors, a container's base directory
//! is always new (a leftover of an earlier container with the same id is cleared first), and
//! teardown removes whatever the guest left in the export once nothing is mounted below it.

use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{OFlag, ResolveFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{fstat, Mode, SFlag};
use oci_spec::runtime::{Mount, Spec};

use crate::layout::Record;
use crate::readonly;
use crate::Error;

/// Whether an OCI mount is a bind mount (by type or by option, as runc reads it).
pub(crate) fn is_bind(m: &Mount) -> bool {
    m.typ().as_deref() == Some("bind")
        || m.options()
            .as_ref()
            .is_some_and(|o| o.iter().any(|x| x == "bind" || x == "rbind"))
}

fn is_rbind(m: &Mount) -> bool {
    m.options()
        .as_ref()
        .is_some_and(|o| o.iter().any(|x| x == "rbind"))
}

/// Mount point below `shared` for the spec's mount number `index`.
pub(crate) fn mount_point(record: &Record, index: usize) -> PathBuf {
    record.shared.join(record.share_dir().mount(index))
}

/// Creates the share. On error everything mounted so far is undone before returning.
/// The record (already holding the planned mount points) must be saved by the caller before
/// this runs, so that a crash half-way still leaves a record naming every mount.
pub(crate) fn prepare(
    record: &Record,
    bundle: &Path,
    rootfs: &Path,
    spec: &Spec,
) -> Result<(), Error> {
    // An app container joins a running VM: its mounts appear in virtiofsd's view by
    // propagation, with the flags they have when attached (see `attach`).
    let late = record.is_member();
    let place = |src: &Path, dst: &Node, recursive: bool, ro: bool| -> Result<(), Error> {
        if late {
            return attach(src, dst, recursive, ro);
        }
        bind(src, dst, recursive)?;
        if ro {
            readonly::make_readonly(&dst.path)?;
        }
        Ok(())
    };
    let result = (|| {
        let anchor = if late {
            let anchor = Anchor::open(&record.base)?;
            anchor.dir(&record.base, 0o755)?;
            anchor
        } else {
            if let Some(parent) = record.base.parent() {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(parent)
                    .map_err(|e| Error::io(format!("create {}", parent.display()), e))?;
            }
            clear_leftover(&record.base)?;
            let anchor = Anchor::open(&record.base)?;
            anchor.dir(&record.base, 0o700)?;
            anchor.dir(&record.shared, 0o755)?;
            if record.is_sandbox() {
                share_export(&record.shared)?;
            }
            anchor
        };
        let dir = record.share_dir();
        let root_mp = anchor.dir(&record.shared.join(dir.rootfs()), 0o755)?;
        let root_ro = spec.root().as_ref().and_then(|r| r.readonly()) == Some(true);
        let mounts = spec.mounts().as_deref().unwrap_or_default();
        if !root_ro || !late {
            place(rootfs, &root_mp, true, false)?;
        }
        if root_ro {
            // The guest cannot create mount points in a read-only rootfs: make them first.
            let wanted: Vec<(PathBuf, bool)> = mounts
                .iter()
                .map(|m| {
                    (
                        m.destination().clone(),
                        is_bind(m) && source_is_file(bundle, m),
                    )
                })
                .collect();
            let base = if late { rootfs } else { &root_mp.path };
            for (dst, is_file) in readonly::mount_points(&wanted) {
                readonly::create_mount_point(base, &dst, is_file)?;
            }
            if late {
                place(rootfs, &root_mp, true, true)?;
            } else {
                readonly::make_readonly(&root_mp.path)?;
            }
        }
        if mounts.iter().any(is_bind) {
            anchor.dir(&record.shared.join(dir.mounts()), 0o755)?;
        }
        for (i, m) in mounts.iter().enumerate() {
            if !is_bind(m) {
                continue;
            }
            let Some(src) = m.source() else {
                return Err(Error::Msg(format!(
                    "bind mount {} has no source",
                    m.destination().display()
                )));
            };
            let src = if src.is_absolute() {
                src.clone()
            } else {
                bundle.join(src)
            };
            let meta = fs::metadata(&src).map_err(|e| {
                Error::io(
                    format!(
                        "bind mount source {} (for {})",
                        src.display(),
                        m.destination().display()
                    ),
                    e,
                )
            })?;
            let mp = mount_point(record, i);
            let mp = if meta.is_dir() {
                anchor.dir(&mp, 0o755)?
            } else {
                anchor.file(&mp)?
            };
            place(&src, &mp, is_rbind(m), readonly::is_readonly(m))?;
        }
        Ok(())
    })();
    if result.is_err() {
        remove(record);
    }
    result
}

/// Whether the source of bind mount `m` is a file (relative sources are in the bundle).
fn source_is_file(bundle: &Path, m: &Mount) -> bool {
    m.source()
        .as_ref()
        .is_some_and(|s| bundle.join(s).is_file())
}

/// A directory the guest cannot write to (the parent of a container's base: the runtime's
/// own `/run/clearbox-vm`, or a pod's export root for an app container's directory, whose
/// name the guest cannot replace), from which the share's nodes are reached without
/// following a symlink.
struct Anchor {
    dir: PathBuf,
    fd: OwnedFd,
}

/// A directory or file of the share, opened (`O_PATH`) where it was checked to be one.
pub(crate) struct Node {
    path: PathBuf,
    fd: OwnedFd,
}

impl Node {
    /// The path through the descriptor: a mount there lands on this very node, wherever a
    /// name below the anchor points by then.
    fn fd_path(&self) -> String {
        format!("/proc/self/fd/{}", self.fd.as_raw_fd())
    }
}

impl Anchor {
    /// The anchor of the share rooted at `base` (its parent).
    fn open(base: &Path) -> Result<Self, Error> {
        let dir = base
            .parent()
            .ok_or_else(|| Error::Msg(format!("share base {} has no parent", base.display())))?
            .to_path_buf();
        let fd = nix::fcntl::open(
            &dir,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::errno(format!("open {}", dir.display()), e))?;
        // SAFETY: open returned a new descriptor that nothing else owns.
        let fd = unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) };
        Ok(Self { dir, fd })
    }

    /// The components of `p` below the anchor; none may be `..`.
    fn parts<'a>(&self, p: &'a Path) -> Result<Vec<&'a std::ffi::OsStr>, Error> {
        let rel = p.strip_prefix(&self.dir).map_err(|_| {
            Error::Msg(format!("{} is outside {}", p.display(), self.dir.display()))
        })?;
        rel.components()
            .map(|c| match c {
                Component::Normal(n) => Ok(n),
                _ => Err(Error::Msg(format!(
                    "share path {} is not plain",
                    p.display()
                ))),
            })
            .collect()
    }

    /// Opens `name` in `parent` without following a symlink there or anywhere on the way.
    fn open_at(parent: &OwnedFd, name: &std::ffi::OsStr, flags: OFlag) -> nix::Result<OwnedFd> {
        readonly::openat2_fd(
            parent,
            name,
            flags | OFlag::O_PATH | OFlag::O_NOFOLLOW,
            ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_BENEATH,
        )
    }

    /// The existing node `p` below the anchor (a mount point: the mount's root), reached
    /// without following a symlink.
    fn existing(&self, p: &Path) -> Result<Node, Error> {
        let what = || format!("open {}", p.display());
        let parts = self.parts(p)?;
        let mut cur = self.fd.try_clone().map_err(|e| Error::io(what(), e))?;
        for (i, name) in parts.iter().enumerate() {
            let flags = if i + 1 == parts.len() {
                OFlag::empty()
            } else {
                OFlag::O_DIRECTORY
            };
            cur = Self::open_at(&cur, name, flags).map_err(|e| Error::errno(what(), e))?;
        }
        // O_PATH | O_NOFOLLOW opens a trailing symlink itself: not a node of the share.
        let st = fstat(cur.as_raw_fd()).map_err(|e| Error::errno(what(), e))?;
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK {
            return Err(Error::Msg(format!("{} is a symlink", p.display())));
        }
        Ok(Node {
            path: p.to_path_buf(),
            fd: cur,
        })
    }

    /// The directory `p` below the anchor, each missing component made with `mode`; an
    /// existing one must be a directory (a symlink is an error, never followed).
    fn dir(&self, p: &Path, mode: u32) -> Result<Node, Error> {
        let what = || format!("create {}", p.display());
        let mut cur = self.fd.try_clone().map_err(|e| Error::io(what(), e))?;
        for name in self.parts(p)? {
            match nix::sys::stat::mkdirat(
                Some(cur.as_raw_fd()),
                name,
                Mode::from_bits_truncate(mode),
            ) {
                Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                Err(e) => return Err(Error::errno(what(), e)),
            }
            cur = Self::open_at(&cur, name, OFlag::O_DIRECTORY)
                .map_err(|e| Error::errno(what(), e))?;
        }
        Ok(Node {
            path: p.to_path_buf(),
            fd: cur,
        })
    }

    /// The file `p` below the anchor (its directories made), created empty if missing, never
    /// truncated; an existing one must be a regular file.
    fn file(&self, p: &Path) -> Result<Node, Error> {
        let what = || format!("create {}", p.display());
        let (Some(parent), Some(name)) = (p.parent(), p.file_name()) else {
            return Err(Error::Msg(format!(
                "mount point {} has no name",
                p.display()
            )));
        };
        let parent = self.dir(parent, 0o755)?;
        match nix::fcntl::openat(
            Some(parent.fd.as_raw_fd()),
            name,
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        ) {
            Ok(fd) => {
                let _ = nix::unistd::close(fd);
            }
            Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => return Err(Error::errno(what(), e)),
        }
        let fd =
            Self::open_at(&parent.fd, name, OFlag::empty()).map_err(|e| Error::errno(what(), e))?;
        let st = fstat(fd.as_raw_fd()).map_err(|e| Error::errno(what(), e))?;
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
            return Err(Error::Msg(format!(
                "{} exists and is not a file",
                p.display()
            )));
        }
        Ok(Node {
            path: p.to_path_buf(),
            fd,
        })
    }
}

/// A container's base directory is new: what an earlier container with the same state
/// directory left there (a crash, or files its guest wrote into the export) is unmounted and
/// removed first; if anything stays mounted below it, the create fails rather than reuse it.
fn clear_leftover(base: &Path) -> Result<(), Error> {
    if fs::symlink_metadata(base).is_err() {
        return Ok(());
    }
    tracing::warn!(path = %base.display(), "removing what an earlier container left here");
    unmount_below(base);
    remove_unmounted(base)
}

/// Removes `p` and everything below it, without following a symlink and without crossing
/// into a mount: a node that is a mount point (or holds one) stays, and with it its parents,
/// and that is an error. Works through descriptors only, so it holds whatever the guest
/// renames meanwhile and whether or not mountinfo could be read.
fn remove_unmounted(p: &Path) -> Result<(), Error> {
    let anchor = Anchor::open(p)?;
    let [name] = anchor.parts(p)?[..] else {
        return Err(Error::Msg(format!(
            "{} is not a child of its anchor",
            p.display()
        )));
    };
    remove_tree(&anchor.fd, name).map_err(|e| Error::errno(format!("remove {}", p.display()), e))
}

/// `name` in `parent` and everything below it (see [`remove_unmounted`]).
fn remove_tree(parent: &OwnedFd, name: &std::ffi::OsStr) -> nix::Result<()> {
    use nix::errno::Errno;
    use nix::unistd::{unlinkat, UnlinkatFlags};
    match unlinkat(Some(parent.as_raw_fd()), name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => return Ok(()),
        Err(Errno::EISDIR) => {}
        Err(e) => return Err(e),
    }
    // EXDEV: a mount point. Never entered.
    let dir_fd = readonly::openat2_fd(
        parent,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW,
        ResolveFlag::RESOLVE_NO_SYMLINKS
            | ResolveFlag::RESOLVE_BENEATH
            | ResolveFlag::RESOLVE_NO_XDEV,
    )?;
    let names: Vec<std::ffi::OsString> = {
        let dup = dir_fd.try_clone().map_err(|_| Errno::EMFILE)?;
        let mut dir = nix::dir::Dir::from_fd(std::os::fd::IntoRawFd::into_raw_fd(dup))?;
        dir.iter()
            .filter_map(Result::ok)
            .map(|e| {
                <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(
                    e.file_name().to_bytes(),
                )
                .to_os_string()
            })
            .filter(|n| n != "." && n != "..")
            .collect()
    };
    let mut first_err = None;
    for n in &names {
        if let Err(e) = remove_tree(&dir_fd, n) {
            first_err.get_or_insert(e);
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    unlinkat(Some(parent.as_raw_fd()), name, UnlinkatFlags::RemoveDir)
}

/// Makes the export a shared mount (a bind mount of itself, in a peer group of its own), so
/// that mounts attached below it later reach virtiofsd's mount namespace, which its sandbox
/// makes a slave of ours. Done before virtiofsd starts.
fn share_export(dir: &Path) -> Result<(), Error> {
    mount(Some(dir), dir, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .map_err(|e| Error::errno(format!("bind {} to itself", dir.display()), e))?;
    mount(
        None::<&str>,
        dir,
        None::<&str>,
        MsFlags::MS_SHARED,
        None::<&str>,
    )
    .map_err(|e| Error::errno(format!("make {} shared", dir.display()), e))
}

/// Attaches a copy of `src` at `dst` below a running VM's export with the new mount API: the
/// copy is made (`open_tree`), made read-only if asked (`mount_setattr`, recursively) while
/// still detached, and only then attached (`move_mount`), so the copy propagated to
/// virtiofsd's namespace is read-only from its first moment (a flag set after the attach
/// would not propagate). Then made private on our side, as `bind` does.
fn attach(src: &Path, dst: &Node, recursive: bool, readonly: bool) -> Result<(), Error> {
    use std::os::fd::FromRawFd;
    use std::os::unix::ffi::OsStrExt;
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
    const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
    let what = || format!("attach {} at {}", src.display(), dst.path.display());
    let csrc = std::ffi::CString::new(src.as_os_str().as_bytes())
        .map_err(|_| Error::Msg(format!("path {} has a NUL byte", src.display())))?;
    let mut flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: open_tree reads the NUL-terminated path and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, csrc.as_ptr(), flags) };
    if fd < 0 {
        return Err(Error::io(what(), std::io::Error::last_os_error()));
    }
    // SAFETY: open_tree returned a fresh descriptor that nothing else owns.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    if readonly {
        readonly::make_readonly_fd(&tree).map_err(|e| Error::io(what(), e))?;
    }
    // Onto the node's descriptor: the guest can rename or replace names in a running pod's
    // export, not the node the descriptor holds.
    // SAFETY: move_mount reads the two empty NUL-terminated paths; `tree` and `dst.fd` are
    // valid descriptors.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            dst.fd.as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    if rc != 0 {
        return Err(Error::io(what(), std::io::Error::last_os_error()));
    }
    // The attached copy itself, through its descriptor (not a path).
    readonly::make_private_fd(&tree)
        .map_err(|e| Error::io(format!("make {} private", dst.path.display()), e))
}

fn bind(src: &Path, dst: &Node, recursive: bool) -> Result<(), Error> {
    let mut flags = MsFlags::MS_BIND;
    if recursive {
        flags |= MsFlags::MS_REC;
    }
    let target = dst.fd_path();
    mount(
        Some(src),
        target.as_str(),
        None::<&str>,
        flags,
        None::<&str>,
    )
    .map_err(|e| {
        Error::errno(
            format!("bind {} to {}", src.display(), dst.path.display()),
            e,
        )
    })?;
    // Private: nothing mounted later on either side propagates to the other, and unmounting
    // it at delete does not reach peers of the source. (Before the VM runs: no guest can
    // have touched the path yet.)
    mount(
        None::<&str>,
        &dst.path,
        None::<&str>,
        MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| Error::errno(format!("make {} private", dst.path.display()), e))
}

/// Unmounts every mount below `record.base`, then removes the base and everything below it
/// (what the guest wrote into the export too). Both steps hold against what the guest can do
/// in the export meanwhile (rename a directory, put a symlink in its place): each mount is
/// reached without following a symlink, and the removal (std's `remove_dir_all`) follows
/// none either. It never removes anything below a mount: if one is still mounted below the
/// base, everything stays (with a warning) rather than the user's files below it deleted.
pub(crate) fn remove(record: &Record) {
    unmount_below(&record.base);
    if fs::symlink_metadata(&record.base).is_ok() {
        if let Err(e) = remove_unmounted(&record.base) {
            tracing::warn!(error = %clearbox_util::error::chain(&e), "cannot remove the share");
        }
    }
}

/// Unmounts every mount at or below `base`, deepest first, each through a descriptor of its
/// path opened from `base`'s parent without following a symlink: a name the guest replaced
/// by a symlink never leads the unmount to another mount (another container's share, say).
fn unmount_below(base: &Path) {
    let anchor = match Anchor::open(base) {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %clearbox_util::error::chain(&e), "cannot unmount the share");
            return;
        }
    };
    for mp in mounts_below(base) {
        let r = anchor.existing(&mp).and_then(|n| {
            umount2(n.fd_path().as_str(), MntFlags::MNT_DETACH)
                .map_err(|e| Error::errno(format!("unmount {}", mp.display()), e))
        });
        if let Err(e) = r {
            tracing::warn!(error = %clearbox_util::error::chain(&e), "cannot unmount");
        }
    }
}

/// Mount points at or below `dir`, deepest first.
pub(crate) fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = clearbox_util::proc::mounts()
        .unwrap_or_default()
        .into_iter()
        .map(|m| PathBuf::from(m.mount_point))
        .filter(|m| m.starts_with(dir))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A base below a temp dir, a victim outside it, and a symlink to the victim planted
    /// where the share will want a mount point (what a guest can do through the export).
    fn planted() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let base = t.path().join("base");
        let victim = t.path().join("victim");
        fs::write(&victim, "host data").unwrap();
        fs::create_dir_all(base.join("shared/mounts")).unwrap();
        std::os::unix::fs::symlink(&victim, base.join("shared/mounts/5")).unwrap();
        std::os::unix::fs::symlink(t.path(), base.join("shared/mounts/6")).unwrap();
        (t, base, victim)
    }

    #[test]
    fn planted_symlinks_are_never_followed() {
        let (_t, base, victim) = planted();
        let a = Anchor::open(&base).unwrap();
        assert!(a.file(&base.join("shared/mounts/5")).is_err());
        assert!(a.dir(&base.join("shared/mounts/6"), 0o755).is_err());
        assert!(a.dir(&base.join("shared/mounts/6/x"), 0o755).is_err());
        assert!(a.file(&base.join("shared/mounts/6/x")).is_err());
        assert_eq!(fs::read_to_string(&victim).unwrap(), "host data");
        assert!(!victim.parent().unwrap().join("x").exists());
        // An existing node behind a symlink (what teardown unmounts by) is not reached either.
        fs::write(victim.parent().unwrap().join("y"), "").unwrap();
        assert!(a.existing(&base.join("shared/mounts/6/y")).is_err());
        assert!(a.existing(&base.join("shared/mounts/5")).is_err());
        a.existing(&base.join("shared/mounts")).unwrap();
        // The anchor refuses what is not below it.
        assert!(a.dir(Path::new("/tmp/elsewhere"), 0o755).is_err());
        assert!(a.dir(&base.join("shared/../../escape"), 0o755).is_err());
    }

    #[test]
    fn nodes_are_made_and_kept_but_never_truncated() {
        let (_t, base, _) = planted();
        let a = Anchor::open(&base).unwrap();
        let d = a.dir(&base.join("shared/mounts/0/deep"), 0o755).unwrap();
        assert!(d.path.is_dir());
        let f = a.file(&base.join("shared/mounts/1")).unwrap();
        fs::write(&f.path, "kept").unwrap();
        a.file(&base.join("shared/mounts/1")).unwrap();
        assert_eq!(fs::read_to_string(&f.path).unwrap(), "kept");
        nix::unistd::mkfifo(
            &base.join("shared/mounts/2"),
            Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        assert!(a.file(&base.join("shared/mounts/2")).is_err());
        // A file where a directory is wanted, and the other way round.
        assert!(a.dir(&base.join("shared/mounts/1"), 0o755).is_err());
        assert!(a.file(&base.join("shared/mounts/0")).is_err());
    }

    #[test]
    fn leftovers_are_removed_without_following_links() {
        let (t, base, victim) = planted();
        fs::write(base.join("shared/PLANTED"), "x").unwrap();
        clear_leftover(&base).unwrap();
        assert!(!base.exists());
        assert_eq!(fs::read_to_string(&victim).unwrap(), "host data");
        assert!(t.path().is_dir());
        // Nothing there: nothing to do.
        clear_leftover(&base).unwrap();
    }

    #[test]
    fn removal_stops_at_mounts_and_never_follows_links() {
        let (t, base, victim) = planted();
        // A mount below (a volume that is somehow still mounted): it and its parents stay,
        // its files too; the rest goes.
        let vol = base.join("shared/mounts/0");
        fs::create_dir_all(&vol).unwrap();
        mount(
            Some("tmpfs"),
            &vol,
            Some("tmpfs"),
            MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        fs::write(vol.join("user-data"), "keep").unwrap();
        fs::write(base.join("shared/PLANTED"), "x").unwrap();
        assert!(remove_unmounted(&base).is_err());
        assert_eq!(fs::read_to_string(vol.join("user-data")).unwrap(), "keep");
        assert!(!base.join("shared/PLANTED").exists());
        assert!(
            !base.join("shared/mounts/5").exists(),
            "the planted link stays"
        );
        assert_eq!(fs::read_to_string(&victim).unwrap(), "host data");
        assert!(t.path().is_dir());
        umount2(&vol, MntFlags::MNT_DETACH).unwrap();
        remove_unmounted(&base).unwrap();
        assert!(!base.exists());
    }

    #[test]
    fn bind_detection() {
        let m: Mount = serde_json::from_str(
            r#"{"destination":"/d","type":"none","source":"/s","options":["rbind","ro"]}"#,
        )
        .unwrap();
        assert!(is_bind(&m) && is_rbind(&m));
        let m: Mount =
            serde_json::from_str(r#"{"destination":"/proc","type":"proc","source":"proc"}"#)
                .unwrap();
        assert!(!is_bind(&m));
    }
}
