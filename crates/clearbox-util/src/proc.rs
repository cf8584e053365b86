//! Processes through `/proc` and pidfds: the fields of `/proc/<pid>/stat` clearbox reads, a
//! process identity that survives pid reuse (the pid plus its start time), the calling
//! process's threads and its mount table (`/proc/self/mountinfo`).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// The fields of `/proc/<pid>/stat` clearbox uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    /// Field 3: `R`, `S`, `D`, `Z`, `T`, …
    pub state: char,
    /// Field 4.
    pub ppid: i32,
    /// Field 22: clock ticks after boot; with the pid, an identity that survives pid reuse.
    pub start_time: u64,
}

impl Stat {
    /// Exited: a zombie (only its parent's wait is missing) or dead.
    pub fn has_exited(&self) -> bool {
        matches!(self.state, 'Z' | 'X')
    }
}

/// Parses the text of a `/proc/<pid>/stat`. The command name (field 2) is in parentheses and
/// may itself hold spaces and parentheses: the fields start after the last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let rest = text.get(text.rfind(')')? + 2..)?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    // `fields` is at field 5 now; the start time is field 22.
    let start_time = fields.nth(17)?.parse().ok()?;
    Some(Stat {
        state,
        ppid,
        start_time,
    })
}

/// `/proc/<pid>/stat` of `pid`, `None` when there is no such process.
pub fn stat(pid: i32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Start time of `pid` (clock ticks after boot), `None` when it is gone or has exited.
pub fn start_time(pid: i32) -> Option<u64> {
    stat(pid).filter(|s| !s.has_exited()).map(|s| s.start_time)
}

/// True when `pid` runs and, if `expected_start` is known, is the process that was recorded.
pub fn is_alive(pid: i32, expected_start: Option<u64>) -> bool {
    match (start_time(pid), expected_start) {
        (Some(now), Some(then)) => now == then,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// `pidfd_open(2)`: a descriptor of `pid` that is readable once the process has exited, and
/// names this process only (not a later one with the same pid).
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A pidfd of `pid` if it is (still) the process that started at `expected_start` (any, when
/// `None`) and has not exited. Opened first, verified second: the descriptor pins the process
/// that was checked, so a pid reused after the check cannot be signalled by mistake.
pub fn pidfd_verified(pid: i32, expected_start: Option<u64>) -> Option<OwnedFd> {
    let fd = pidfd_open(pid).ok()?;
    is_alive(pid, expected_start).then_some(fd)
}

/// `pidfd_send_signal(2)` of `signal` to the process of `fd` (no siginfo, no flags).
pub fn pidfd_send_signal(fd: BorrowedFd<'_>, signal: i32) -> io::Result<()> {
    // SAFETY: pidfd_send_signal on a descriptor borrowed for the call, a null siginfo and no
    // flags; the kernel reads nothing else of ours.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// How the child of `fd` ended, if it has: `Some(Ok(code))` for an exit, `Some(Err(signal))`
/// when a signal killed it, `None` while it runs (or when `fd` names no child of this
/// process). The child stays a zombie (`WNOWAIT`): whoever reaps it still can.
pub fn pidfd_exit_status(fd: BorrowedFd<'_>) -> Option<Result<i32, i32>> {
    // SAFETY: an all-zero siginfo_t is a valid value (plain integers and unions of them).
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
    // SAFETY: waitid on a descriptor borrowed for the call, writing into `info`, which lives
    // on this stack frame for the whole call.
    let rc = unsafe {
        libc::waitid(
            libc::P_PIDFD,
            fd.as_raw_fd() as libc::id_t,
            &mut info,
            flags,
        )
    };
    // SAFETY: waitid filled `info` (si_pid 0 when nothing has exited yet, WNOHANG).
    if rc != 0 || unsafe { info.si_pid() } == 0 {
        return None;
    }
    // SAFETY: as above: an exited child's siginfo carries si_status.
    let status = unsafe { info.si_status() };
    Some(match info.si_code {
        libc::CLD_EXITED => Ok(status),
        _ => Err(status),
    })
}

/// Threads of the calling process.
pub fn thread_count() -> io::Result<usize> {
    std::fs::read_dir("/proc/self/task").map(Iterator::count)
}

/// One line of `/proc/self/mountinfo`: what clearbox reads of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Field 5, unescaped.
    pub mount_point: String,
    /// The file system type (first field after the ` - ` separator).
    pub fs_type: String,
    /// The super block options (third field after the separator), comma-separated.
    pub super_options: String,
}

/// The calling process's mount table, in its order (a line it cannot parse is skipped).
pub fn mounts() -> io::Result<Vec<MountEntry>> {
    Ok(parse_mountinfo(&std::fs::read_to_string(
        "/proc/self/mountinfo",
    )?))
}

fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let mount_point = unescape(left.split(' ').nth(4)?);
            let mut r = right.split(' ');
            let fs_type = r.next()?.to_string();
            let super_options = r.nth(1).unwrap_or_default().to_string();
            Some(MountEntry {
                mount_point,
                fs_type,
                super_options,
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
pub fn unescape(s: &str) -> String {
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
    #[test]
    fn mountinfo_lines_and_escapes() {
        assert_eq!(super::unescape("/a\\040b"), "/a b");
        assert_eq!(super::unescape("/plain"), "/plain");
        assert_eq!(super::unescape("/x\\"), "/x\\");
        let m = super::parse_mountinfo(
            "35 25 0:30 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:15 - cgroup cgroup rw,cpu,cpuacct\n\
             36 25 0:31 / /a\\040b rw - tmpfs none rw\n\
             garbage\n",
        );
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].mount_point, "/sys/fs/cgroup/cpu,cpuacct");
        assert_eq!(m[0].fs_type, "cgroup");
        assert_eq!(m[0].super_options, "rw,cpu,cpuacct");
        assert_eq!(m[1].mount_point, "/a b");
    }

    use super::*;

    #[test]
    fn odd_command_names_parse() {
        let text = "123 (a) b (c)) S 7 123 123 0 -1 4194304 1 0 0 0 0 0 0 0 20 0 1 0 4242 1 2 3";
        assert_eq!(
            parse_stat(text),
            Some(Stat {
                state: 'S',
                ppid: 7,
                start_time: 4242
            })
        );
        assert_eq!(parse_stat("123 (x"), None);
        assert_eq!(parse_stat("123 (x) R"), None);
    }

    #[test]
    fn this_process_is_alive_with_a_stable_identity() {
        let me = i32::try_from(std::process::id()).unwrap();
        let s = stat(me).unwrap();
        assert!(!s.has_exited());
        assert_eq!(start_time(me), Some(s.start_time));
        assert!(is_alive(me, Some(s.start_time)));
        assert!(!is_alive(me, Some(s.start_time + 1)));
        assert!(!is_alive(i32::MAX, None));
    }

    #[test]
    fn a_pidfd_turns_readable_when_the_process_exits() {
        let mut child = std::process::Command::new("sleep")
            .arg("0.2")
            .spawn()
            .unwrap();
        let fd = pidfd_open(i32::try_from(child.id()).unwrap()).unwrap();
        let mut p = libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(&fd),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll on one valid pollfd for at most 5 s.
        let n = unsafe { libc::poll(&mut p, 1, 5000) };
        assert_eq!(n, 1);
        child.wait().unwrap();
    }

    #[test]
    fn a_verified_pidfd_signals_only_the_recorded_process() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        let start = start_time(pid).unwrap();
        assert!(pidfd_verified(pid, Some(start + 1)).is_none());
        let fd = pidfd_verified(pid, Some(start)).unwrap();
        pidfd_send_signal(std::os::fd::AsFd::as_fd(&fd), libc::SIGKILL).unwrap();
        let st = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&st),
            Some(libc::SIGKILL)
        );
        // Reaped: gone.
        assert!(pidfd_verified(pid, Some(start)).is_none());
    }

    #[test]
    fn a_childs_end_is_seen_without_reaping_it() {
        use std::os::fd::AsFd;
        let mut c = std::process::Command::new("sh")
            .args(["-c", "exit 3"])
            .spawn()
            .unwrap();
        let fd = pidfd_open(c.id() as i32).unwrap();
        let mut seen = None;
        for _ in 0..500 {
            seen = pidfd_exit_status(fd.as_fd());
            if seen.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(seen, Some(Ok(3)));
        // Still a zombie: the parent reaps it as usual.
        assert_eq!(c.wait().unwrap().code(), Some(3));
        let mut k = std::process::Command::new("sleep")
            .arg("10")
            .spawn()
            .unwrap();
        let fd = pidfd_open(k.id() as i32).unwrap();
        assert_eq!(pidfd_exit_status(fd.as_fd()), None);
        k.kill().unwrap();
        k.wait().unwrap();
    }
}
