//! The mounts of a fly container.
//!
//! fly creates no namespace but one: a private mount namespace (a slave of the host's), so the
//! bind mounts it sets up under the rootfs never show in, or propagate back to, the host's mount
//! table, and vanish with the container's last process — nothing to clean up, nothing to leak.
//! The rootfs becomes that namespace's "/" (pivot_root), so tools that look at a container
//! through its init's mount namespace (`podman cp`) see the container's files, as with runc.
//! Processes share the host's pid, network, IPC, UTS, user and cgroup namespaces.
//!
//! OCI mounts map to host resources, since a fly container sees the host:
//! `bind`/`rbind` bind their source; `proc` is a new procfs (of the host pid namespace); `sysfs`
//! binds the host's /sys; a tmpfs on `/dev` binds the host's /dev (so pty names resolve), and
//! the mounts below `/dev` are then already there; other tmpfs are new tmpfs; cgroup mounts live
//! under /sys. Anything else is skipped with a debug log.

use std::path::Path;

use nix::mount::{mount, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use oci_spec::runtime::Mount;

use crate::Error;

/// Enters a new mount namespace that receives but never sends mount events, and mounts the
/// spec's mounts under `rootfs`.
pub fn setup(rootfs: &Path, mounts: &[Mount]) -> Result<(), Error> {
    enter_private_mount_namespace()?;
    // pivot_root needs the new root to be a mount point; the spec's mounts go below it.
    bind(rootfs, rootfs, true, false)?;
    let mut dev_bound = false;
    for m in mounts {
        let dest_rel = m.destination().strip_prefix("/").unwrap_or(m.destination());
        let dest = rootfs.join(dest_rel);
        let opts: Vec<&str> = m.options().iter().flatten().map(String::as_str).collect();
        let ro = opts.contains(&"ro");
        let typ = m.typ().as_deref().unwrap_or("");
        let is_bind = typ == "bind" || opts.iter().any(|o| *o == "bind" || *o == "rbind");
        if is_bind {
            let src = m
                .source()
                .as_ref()
                .ok_or_else(|| Error::Setup(format!("bind mount {dest_rel:?} has no source")))?;
            prepare_target(&dest, src.is_dir())?;
            let rec = opts.contains(&"rbind");
            bind(src, &dest, rec, ro)?;
            continue;
        }
        if m.destination().starts_with("/dev/") && dev_bound {
            continue;
        }
        match typ {
            "proc" => {
                prepare_target(&dest, true)?;
                mount(
                    Some("proc"),
                    &dest,
                    Some("proc"),
                    MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV,
                    None::<&str>,
                )
                .map_err(|e| Error::sys(format!("mount proc on {}", dest.display()), e))?;
            }
            "sysfs" => {
                prepare_target(&dest, true)?;
                bind(Path::new("/sys"), &dest, true, ro)?;
            }
            "tmpfs" if m.destination() == Path::new("/dev") => {
                prepare_target(&dest, true)?;
                bind(Path::new("/dev"), &dest, true, false)?;
                dev_bound = true;
            }
            "tmpfs" => {
                prepare_target(&dest, true)?;
                let (flags, data) = tmpfs_options(&opts);
                mount(
                    Some("tmpfs"),
                    &dest,
                    Some("tmpfs"),
                    flags,
                    Some(data.as_str()),
                )
                .map_err(|e| Error::sys(format!("mount tmpfs on {}", dest.display()), e))?;
            }
            other => tracing::debug!(typ = other, dest = %dest.display(), "fly: mount skipped"),
        }
    }
    make_root(rootfs)
}

/// Moves the calling process into a new mount namespace that receives the host's mount events
/// but never sends its own (a recursive slave of the host's).
pub fn enter_private_mount_namespace() -> Result<(), Error> {
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| Error::sys("unshare mount namespace", e))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(|e| Error::sys("make / a slave mount", e))
}

/// Makes `root` (a mount point) the root of the current mount namespace and detaches the old
/// one (`pivot_root(".", ".")`: no directory for the old root is needed in `root`).
pub fn make_root(root: &Path) -> Result<(), Error> {
    nix::unistd::chdir(root).map_err(|e| Error::sys("chdir to the new root", e))?;
    nix::unistd::pivot_root(".", ".").map_err(|e| Error::sys("pivot_root", e))?;
    nix::mount::umount2(".", nix::mount::MntFlags::MNT_DETACH)
        .map_err(|e| Error::sys("detach the old root", e))?;
    nix::unistd::chdir("/").map_err(|e| Error::sys("chdir /", e))
}

/// Bind-mounts `src` (recursively) on the existing `dest`.
pub fn bind_existing(src: &Path, dest: &Path) -> Result<(), Error> {
    bind(src, dest, true, false)
}

/// Joins the mount namespace of the container's init (for `exec`).
pub fn join(init_pid: i32) -> Result<(), Error> {
    let path = format!("/proc/{init_pid}/ns/mnt");
    let f = std::fs::File::open(&path).map_err(|e| Error::io(format!("open {path}"), e))?;
    setns(f, CloneFlags::CLONE_NEWNS).map_err(|e| Error::sys("join the container's mounts", e))
}

fn bind(src: &Path, dest: &Path, recursive: bool, ro: bool) -> Result<(), Error> {
    let mut flags = MsFlags::MS_BIND;
    if recursive {
        flags |= MsFlags::MS_REC;
    }
    mount(Some(src), dest, None::<&str>, flags, None::<&str>)
        .map_err(|e| Error::sys(format!("bind {} on {}", src.display(), dest.display()), e))?;
    if ro {
        mount(
            None::<&str>,
            dest,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(|e| Error::sys(format!("remount {} read-only", dest.display()), e))?;
    }
    Ok(())
}

/// Creates the mount point (a directory, or an empty file for a file bind) if missing.
fn prepare_target(dest: &Path, dir: bool) -> Result<(), Error> {
    if dest.exists() {
        return Ok(());
    }
    let made = if dir {
        std::fs::create_dir_all(dest)
    } else {
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io("create mount point", e))?;
        }
        std::fs::File::create(dest).map(|_| ())
    };
    made.map_err(|e| Error::io(format!("create mount point {}", dest.display()), e))
}

fn tmpfs_options(opts: &[&str]) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut data: Vec<&str> = Vec::new();
    for o in opts {
        match *o {
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "ro" => flags |= MsFlags::MS_RDONLY,
            "strictatime" => flags |= MsFlags::MS_STRICTATIME,
            "relatime" => flags |= MsFlags::MS_RELATIME,
            "noatime" => flags |= MsFlags::MS_NOATIME,
            "rw" | "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" => {}
            other => data.push(other),
        }
    }
    (flags, data.join(","))
}

/// Processes in the same mount namespace as `pid`, unless that is this process's own (then
/// `pid` is no fly container init and the answer would be "everything").
pub fn processes_sharing_mounts_with(pid: i32) -> Vec<i32> {
    mount_ns(&pid.to_string())
        .map(|t| processes_in_mount_ns(&t))
        .unwrap_or_default()
}

/// The mount namespace of process `p` (a pid or `self`), as its nsfs link reads
/// (`mnt:[<inode>]`).
pub fn mount_ns(p: &str) -> Option<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/{p}/ns/mnt")).ok()
}

/// Every process in mount namespace `target` ([`mount_ns`]); none when it is our own.
pub fn processes_in_mount_ns(target: &Path) -> Vec<i32> {
    if mount_ns("self").as_deref() == Some(target) {
        return Vec::new();
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| mount_ns(&p.to_string()).as_deref() == Some(target))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tmpfs_flags_and_data() {
        let (f, d) = tmpfs_options(&["nosuid", "strictatime", "mode=755", "size=65536k"]);
        assert!(f.contains(MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME));
        assert_eq!(d, "mode=755,size=65536k");
    }

    #[test]
    fn own_namespace_is_never_a_container() {
        assert!(processes_sharing_mounts_with(std::process::id() as i32).is_empty());
    }
}
