//! The per-container virtio-fs share: `<base>/shared/rootfs` is a bind mount of the bundle's
//! rootfs and `<base>/shared/mounts/<n>` one of the source of the spec's n-th bind mount (a
//! directory or a file). virtiofsd exports only `shared`, so the guest sees nothing else of the
//! host. virtio-fs is a passthrough: what the container writes lands in the bundle's rootfs.
//! Read-only binds and a read-only rootfs are read-only on the host (see `readonly`).

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
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
    let place = |src: &Path, dst: &Path, recursive: bool, ro: bool| -> Result<(), Error> {
        if late {
            return attach(src, dst, recursive, ro);
        }
        bind(src, dst, recursive)?;
        if ro {
            readonly::make_readonly(dst)?;
        }
        Ok(())
    };
    let result = (|| {
        if late {
            mkdir(&record.base, 0o755)?;
        } else {
            if let Some(parent) = record.base.parent() {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(parent)
                    .map_err(|e| Error::io(format!("create {}", parent.display()), e))?;
            }
            mkdir(&record.base, 0o700)?;
            mkdir(&record.shared, 0o755)?;
            if record.is_sandbox() {
                share_export(&record.shared)?;
            }
        }
        let dir = record.share_dir();
        let root_mp = record.shared.join(dir.rootfs());
        mkdir(&root_mp, 0o755)?;
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
            let base = if late { rootfs } else { &root_mp };
            for (dst, is_file) in readonly::mount_points(&wanted) {
                readonly::create_mount_point(base, &dst, is_file)?;
            }
            if late {
                place(rootfs, &root_mp, true, true)?;
            } else {
                readonly::make_readonly(&root_mp)?;
            }
        }
        if mounts.iter().any(is_bind) {
            mkdir(&record.shared.join(dir.mounts()), 0o755)?;
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
            if meta.is_dir() {
                mkdir(&mp, 0o755)?;
            } else {
                fs::File::create(&mp)
                    .map_err(|e| Error::io(format!("create {}", mp.display()), e))?;
            }
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

fn mkdir(p: &Path, mode: u32) -> Result<(), Error> {
    match fs::DirBuilder::new().mode(mode).create(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && p.is_dir() => Ok(()),
        Err(e) => Err(Error::io(format!("create {}", p.display()), e)),
    }
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
fn attach(src: &Path, dst: &Path, recursive: bool, readonly: bool) -> Result<(), Error> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
    let what = || format!("attach {} at {}", src.display(), dst.display());
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| Error::Msg(format!("path {} has a NUL byte", p.display())))
    };
    let (csrc, cdst) = (c(src)?, c(dst)?);
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
    // SAFETY: move_mount reads the two NUL-terminated paths; `tree` is a valid descriptor.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            cdst.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc != 0 {
        return Err(Error::io(what(), std::io::Error::last_os_error()));
    }
    mount(
        None::<&str>,
        dst,
        None::<&str>,
        MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| Error::errno(format!("make {} private", dst.display()), e))
}

fn bind(src: &Path, dst: &Path, recursive: bool) -> Result<(), Error> {
    let mut flags = MsFlags::MS_BIND;
    if recursive {
        flags |= MsFlags::MS_REC;
    }
    mount(Some(src), dst, None::<&str>, flags, None::<&str>)
        .map_err(|e| Error::errno(format!("bind {} to {}", src.display(), dst.display()), e))?;
    // Private: nothing mounted later on either side propagates to the other, and unmounting
    // it at delete does not reach peers of the source.
    mount(
        None::<&str>,
        dst,
        None::<&str>,
        MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| Error::errno(format!("make {} private", dst.display()), e))
}

/// Unmounts every mount below `record.base` and removes the share's directories. Never removes
/// anything recursively: a mount point that is somehow still mounted stays (with a warning)
/// rather than having the user's files below it deleted.
pub(crate) fn remove(record: &Record) {
    for mp in mounts_below(&record.base) {
        if let Err(e) = umount2(&mp, MntFlags::MNT_DETACH) {
            tracing::warn!(path = %mp.display(), error = %e, "cannot unmount");
        }
    }
    for i in (0..record.mounts.len()).rev() {
        remove_node(&record.mounts[i]);
    }
    if record.is_member() {
        // Its own directory in the pod's export; the export is the sandbox's.
        for p in [
            record.base.join("rootfs"),
            record.base.join("mounts"),
            record.base.clone(),
        ] {
            remove_node(&p);
        }
        return;
    }
    for p in [
        record.shared.join("rootfs"),
        record.shared.join("mounts"),
        record.shared.clone(),
        record.vm_run_dir.clone(),
        record.base.clone(),
    ] {
        remove_node(&p);
    }
}

fn remove_node(p: &Path) {
    let r = match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir(p),
        Ok(_) => fs::remove_file(p),
        Err(_) => return,
    };
    if let Err(e) = r {
        tracing::warn!(path = %p.display(), error = %e, "cannot remove");
    }
}

/// Mount points at or below `dir`, deepest first.
pub(crate) fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape(m)))
        .filter(|m| m.starts_with(dir))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    out
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("/x\\"), "/x\\");
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
