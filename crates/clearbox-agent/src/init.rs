//! PID-1 duties: early mounts, cgroups, hostname, power-off.

use std::path::Path;

use nix::mount::{mount, MsFlags};
use nix::sys::stat::Mode;

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("mkdir {0}")]
    Mkdir(String, #[source] std::io::Error),
    #[error("mount {fstype} on {target}")]
    Mount {
        fstype: &'static str,
        target: &'static str,
        #[source]
        source: nix::Error,
    },
}

struct M {
    fstype: &'static str,
    target: &'static str,
    flags: MsFlags,
    data: Option<&'static str>,
}

const NOSUID_NODEV: MsFlags = MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV);
const NOSUID_NODEV_NOEXEC: MsFlags = NOSUID_NODEV.union(MsFlags::MS_NOEXEC);

const MOUNTS: &[M] = &[
    M {
        fstype: "devtmpfs",
        target: "/dev",
        flags: MsFlags::MS_NOSUID,
        data: Some("mode=0755"),
    },
    M {
        fstype: "proc",
        target: "/proc",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
    },
    M {
        fstype: "sysfs",
        target: "/sys",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
    },
    M {
        fstype: "devpts",
        target: "/dev/pts",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
        data: Some("gid=5,mode=0620,ptmxmode=0666"),
    },
    M {
        fstype: "tmpfs",
        target: "/dev/shm",
        flags: NOSUID_NODEV,
        data: Some("mode=1777"),
    },
    M {
        fstype: "tmpfs",
        target: "/run",
        flags: NOSUID_NODEV,
        data: Some("mode=0755"),
    },
    M {
        fstype: "tmpfs",
        target: "/tmp",
        flags: NOSUID_NODEV,
        data: Some("mode=1777"),
    },
    M {
        fstype: "cgroup2",
        target: "/sys/fs/cgroup",
        flags: NOSUID_NODEV_NOEXEC,
        data: Some("nsdelegate"),
    },
];

/// Mounts the basic filesystems. An already-mounted target (EBUSY) is fine.
pub fn mount_all() -> Result<(), InitError> {
    for m in MOUNTS {
        std::fs::create_dir_all(m.target).map_err(|e| InitError::Mkdir(m.target.into(), e))?;
        match mount(Some(m.fstype), m.target, Some(m.fstype), m.flags, m.data) {
            Ok(()) | Err(nix::errno::Errno::EBUSY) => {}
            Err(source) => {
                return Err(InitError::Mount {
                    fstype: m.fstype,
                    target: m.target,
                    source,
                })
            }
        }
    }
    // Conventional links; failures are harmless (e.g. they exist).
    for (link, to) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ] {
        let _ = std::os::unix::fs::symlink(to, link);
    }
    let _ = nix::sys::stat::umask(Mode::from_bits_truncate(0o022));
    Ok(())
}

/// Enables every available controller for children of the root cgroup and creates the
/// parent of per-container cgroups (`/sys/fs/cgroup/<parent>`) with them enabled too, so
/// libcontainer finds the controllers it needs for the containers below it.
pub fn setup_cgroups(parent: &str) {
    let root = Path::new("/sys/fs/cgroup");
    let Ok(controllers) = std::fs::read_to_string(root.join("cgroup.controllers")) else {
        crate::error!("no cgroup2 at {}", root.display());
        return;
    };
    let enable: String = controllers
        .split_whitespace()
        .map(|c| format!("+{c} "))
        .collect();
    if let Err(e) = std::fs::write(root.join("cgroup.subtree_control"), enable.trim()) {
        crate::error!("enabling cgroup controllers: {e}");
    }
    let parent = root.join(parent);
    if let Err(e) = std::fs::create_dir_all(&parent) {
        crate::error!("creating {}: {e}", parent.display());
        return;
    }
    if let Err(e) = std::fs::write(parent.join("cgroup.subtree_control"), enable.trim()) {
        crate::debug!("enabling controllers in {}: {e}", parent.display());
    }
}

/// `clearbox.debug=1` on the kernel command line.
pub fn cmdline_debug(cmdline: &str) -> bool {
    cmdline
        .split_whitespace()
        .any(|w| w == "clearbox.debug=1" || w == "clearbox.debug")
}

/// Brings the loopback interface up (best effort).
pub fn loopback_up() {
    // SAFETY: socket/ioctl/close with a zeroed, NUL-terminated `ifreq` on the stack.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return;
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        ifr.ifr_name[0] = b'l' as libc::c_char;
        ifr.ifr_name[1] = b'o' as libc::c_char;
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr) == 0 {
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr);
        }
        libc::close(fd);
    }
}

/// Kills everything, syncs and powers off (`reboot(RB_AUTOBOOT)`: with `reboot=t` on the
/// cmdline and QEMU's `-no-reboot`, QEMU exits). Never returns.
pub fn power_off() -> ! {
    // SAFETY: kill(-1) spares the caller; sync has no arguments.
    unsafe {
        libc::kill(-1, libc::SIGKILL);
        libc::sync();
    }
    let err = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
    crate::error!("reboot failed: {err:?}");
    // Last resort: let the kernel deal with init exiting.
    std::process::exit(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_flag_from_cmdline() {
        assert!(cmdline_debug("console=ttyS0 clearbox.debug=1 quiet"));
        assert!(!cmdline_debug("console=ttyS0 clearbox.debug=0"));
        assert!(!cmdline_debug(""));
    }
}
