//! Helper processes: spawning with a parent-death signal, pidfds, identity
//! checks that survive pid reuse.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use clearbox_util::proc::stat as proc_stat;
use nix::poll::{PollFd, PollFlags, PollTimeout};

/// How a helper is detached from (or tied to) the process starting it.
#[derive(Clone, Debug, Default)]
pub(crate) struct SpawnOpts {
    /// PR_SET_PDEATHSIG(SIGKILL); otherwise the child runs in a new session.
    pub die_with_parent: bool,
    /// Run the child in a private mount namespace where this directory is
    /// bind-mounted read-only onto itself (for read-only virtio-fs shares).
    pub readonly_bind: Option<std::path::PathBuf>,
    /// Least privilege entered right before exec (see `jail/`).
    pub jail: Option<std::sync::Arc<crate::jail::ExecJail>>,
}

/// Spawns `cmd` with the isolation in `opts`.
pub(crate) fn spawn(cmd: &mut Command, opts: &SpawnOpts) -> io::Result<Child> {
    let die = opts.die_with_parent;
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    let ro = match &opts.readonly_bind {
        Some(p) => Some(CString::new(p.as_os_str().as_bytes()).map_err(io::Error::other)?),
        None => None,
    };
    let root = c"/";
    let jail = opts.jail.clone();
    // SAFETY: the closure runs between fork and exec and only makes
    // async-signal-safe system calls (prctl, getppid, setsid, unshare, mount,
    // and the jail's, see `ExecJail::enter`) on memory allocated before the
    // fork; it allocates nothing itself.
    unsafe {
        cmd.pre_exec(move || {
            if !die && libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            if let Some(dir) = &ro {
                if libc::unshare(libc::CLONE_NEWNS) != 0 {
                    return Err(io::Error::last_os_error());
                }
                let null = std::ptr::null();
                let flags = libc::MS_REC | libc::MS_PRIVATE;
                if libc::mount(null, root.as_ptr(), null, flags, std::ptr::null()) != 0 {
                    return Err(io::Error::last_os_error());
                }
                let flags = libc::MS_BIND | libc::MS_REC;
                if libc::mount(dir.as_ptr(), dir.as_ptr(), null, flags, std::ptr::null()) != 0 {
                    return Err(io::Error::last_os_error());
                }
                let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
                if libc::mount(null, dir.as_ptr(), null, flags, std::ptr::null()) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if let Some(j) = &jail {
                j.enter()?;
            }
            // Last: a change of credentials (the jail's setresuid) clears the
            // parent-death signal.
            if die {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The parent may have died before prctl took effect.
                if libc::getppid() != parent {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
            }
            if let Some(j) = &jail {
                j.load_seccomp()?;
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Waits until `fd` is readable or `timeout` passes; `None` waits forever.
/// Returns whether it became readable.
pub(crate) fn wait_readable(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> io::Result<bool> {
    let deadline = timeout.map(|t| std::time::Instant::now() + t);
    loop {
        let t = match deadline {
            None => PollTimeout::NONE,
            Some(d) => {
                let left = d.saturating_duration_since(std::time::Instant::now());
                // Round up so a 0.5 ms wait does not become a busy loop.
                let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
            }
        };
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, t) {
            Ok(0) => {
                if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                    return Ok(false);
                }
            }
            Ok(_) => return Ok(true),
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Parent pid of `pid` (also of a zombie).
pub(crate) fn parent_of(pid: i32) -> Option<i32> {
    proc_stat(pid).map(|s| s.ppid)
}

/// Live descendants of `root` (children first found, then theirs), from a
/// /proc scan. A sandboxed virtiofsd forks a worker that the driver did not
/// spawn itself; teardown must not miss it.
pub(crate) fn descendants(root: i32) -> Vec<(i32, u64)> {
    let mut table = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if let Some(s) = proc_stat(pid) {
                table.push((pid, s.ppid, s.start_time));
            }
        }
    }
    let mut out: Vec<(i32, u64)> = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for &(pid, ppid, start) in &table {
            if ppid == parent && !out.iter().any(|(p, _)| *p == pid) {
                out.push((pid, start));
                frontier.push(pid);
            }
        }
    }
    out
}

/// Last `max` bytes of a file, lossily decoded, trimmed; empty if unreadable.
pub(crate) fn tail(path: &Path, max: usize) -> String {
    let Ok(bytes) = std::fs::read(path) else {
        return String::new();
    };
    let start = bytes.len().saturating_sub(max);
    String::from_utf8_lossy(&bytes[start..]).trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_start_time_is_stable() {
        let me = std::process::id() as i32;
        let st = clearbox_util::proc::start_time(me).unwrap();
        assert!(clearbox_util::proc::is_alive(me, Some(st)));
        assert!(!clearbox_util::proc::is_alive(me, Some(st + 1)));
    }

    #[test]
    fn finds_grandchildren() {
        let mut child = spawn(
            Command::new("sh").args(["-c", "sleep 5 & wait"]),
            &SpawnOpts {
                die_with_parent: true,
                ..Default::default()
            },
        )
        .unwrap();
        let pid = child.id() as i32;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut found = Vec::new();
        while found.is_empty() && std::time::Instant::now() < deadline {
            found = descendants(pid);
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(found.len(), 1, "{found:?}");
        let (gc, start) = found[0];
        assert!(clearbox_util::proc::is_alive(gc, Some(start)));
        // SAFETY: kill(2) on the grandchild we just found alive.
        unsafe { libc::kill(gc, libc::SIGKILL) };
        child.wait().unwrap();
    }

    #[test]
    fn pidfd_signals_exit() {
        let mut child = spawn(
            Command::new("sleep").arg("0.05"),
            &SpawnOpts {
                die_with_parent: true,
                ..Default::default()
            },
        )
        .unwrap();
        let fd = clearbox_util::proc::pidfd_open(child.id() as i32).unwrap();
        assert!(!wait_readable(fd.as_fd(), Some(Duration::from_millis(1))).unwrap());
        assert!(wait_readable(fd.as_fd(), Some(Duration::from_secs(5))).unwrap());
        assert!(child.wait().unwrap().success());
    }
}
