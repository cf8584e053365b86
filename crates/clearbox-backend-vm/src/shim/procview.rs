//! The guest's processes at `/proc` of the init shim's mount namespace, for `podman top`.
//!
//! podman lists a container's processes with psgo: it joins the mount namespace of the
//! container's pid (the init's shim, whose root is the container's rootfs: see
//! `enter_container_root`) and reads `/proc` there. A VM's processes are not in any host
//! `/proc`, so the shim mounts a small tmpfs on `/proc` in its own namespace and fills it with
//! the guest's view of the container (the agent's `ListProcesses`), in the files and the format
//! psgo reads: `<pid>/stat`, `<pid>/status`, `<pid>/cmdline`, `<pid>/ns/pid`, and `stat`'s
//! `btime`. It is refreshed when someone opens the directory: a fanotify permission event
//! (`FAN_OPEN_PERM` on the directory only) holds the reader until the shim has rewritten the
//! files, so the listing is current, and no timer wakes the guest while nobody looks.
//!
//! Only this namespace sees the tmpfs (podman, as root, setns()es into it); the host's `/proc`
//! is untouched. The view is emptied when the process ends, before the shim's own clean-up
//! (which scans this namespace's /proc) runs. What the guest sends is bounded (process count, command length) and
//! sanitised (no whitespace or control characters in the fields psgo splits).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use clearbox_protocol::pb::agent as pb;
use clearbox_protocol::AgentClient;

/// At most this many processes are shown.
const MAX_PROCESSES: usize = 4096;
/// Command lines are cut at this many bytes.
const MAX_CMD: usize = 4096;
/// USER_HZ, the unit of /proc's times (psgo divides by sysconf(_SC_CLK_TCK), 100 on Linux).
const TICKS: u64 = 100;

pub(crate) struct ProcView {
    fan: OwnedFd,
    dir: PathBuf,
    /// The host's boot time (epoch seconds): start times are written relative to it, so psgo
    /// computes the same start whether it reads this `stat` or the host's.
    host_boot: u64,
    shown: Vec<i32>,
    marked: bool,
}

pub(crate) fn host_boot_time() -> Option<u64> {
    std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

impl ProcView {
    /// Mounts the tmpfs on `/proc` of the current (private) mount namespace, owned by
    /// `uid`/`gid` (the shim after it drops its privileges), and opens the fanotify group.
    /// Needs CAP_SYS_ADMIN; call before dropping it. `host_boot`: read before the root changed.
    pub(crate) fn mount(uid: u32, gid: u32, host_boot: Option<u64>) -> Option<Self> {
        let dir = PathBuf::from("/proc");
        if !dir.is_dir() {
            return None;
        }
        let opts = format!("mode=0755,size=8m,nr_inodes=40000,uid={uid},gid={gid}");
        let mounted = nix::mount::mount(
            Some("clearbox-proc"),
            &dir,
            Some("tmpfs"),
            nix::mount::MsFlags::MS_NOSUID
                | nix::mount::MsFlags::MS_NODEV
                | nix::mount::MsFlags::MS_NOEXEC,
            Some(opts.as_str()),
        );
        if let Err(e) = mounted {
            tracing::warn!(error = %e, "cannot mount the process view on /proc");
            return None;
        }
        // SAFETY: fanotify_init(2) with constant flags; the result is checked.
        let fd = unsafe {
            libc::fanotify_init(
                libc::FAN_CLASS_CONTENT | libc::FAN_CLOEXEC | libc::FAN_NONBLOCK,
                (libc::O_RDONLY | libc::O_CLOEXEC) as u32,
            )
        };
        if fd < 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), "fanotify_init");
            return None;
        }
        // SAFETY: fanotify_init returned a new descriptor owned by nothing else.
        let fan = unsafe { OwnedFd::from_raw_fd(fd) };
        Some(Self {
            fan,
            dir,
            host_boot: host_boot.unwrap_or(0),
            shown: Vec::new(),
            marked: false,
        })
    }

    /// Starts holding readers of the directory until it is refreshed (once the container
    /// runs: before, nobody would answer them).
    pub(crate) fn watch(&mut self) {
        if self.marked {
            return;
        }
        let path = match std::ffi::CString::new(self.dir.as_os_str().as_encoded_bytes()) {
            Ok(p) => p,
            Err(_) => return,
        };
        // SAFETY: fanotify_mark(2) on our group with a NUL-terminated path.
        let rc = unsafe {
            libc::fanotify_mark(
                self.fan.as_raw_fd(),
                libc::FAN_MARK_ADD,
                libc::FAN_OPEN_PERM | libc::FAN_ONDIR,
                libc::AT_FDCWD,
                path.as_ptr(),
            )
        };
        if rc < 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), "fanotify_mark /proc");
            return;
        }
        self.marked = true;
    }

    /// Stops holding readers (every mark removed; pending events are answered first).
    pub(crate) fn unwatch(&mut self) {
        if !self.marked {
            return;
        }
        // SAFETY: fanotify_mark(2) on our group; FLUSH takes no path.
        unsafe {
            libc::fanotify_mark(
                self.fan.as_raw_fd(),
                libc::FAN_MARK_FLUSH,
                0,
                libc::AT_FDCWD,
                std::ptr::null(),
            );
        }
        self.marked = false;
        self.answer_pending();
        // The shim's own clean-up scans /proc (the VMM's descendants of QEMU): it must find
        // nothing there, as before the view existed, never the guest's pids.
        for pid in std::mem::take(&mut self.shown) {
            let _ = std::fs::remove_dir_all(self.dir.join(pid.to_string()));
        }
        let _ = std::fs::remove_file(self.dir.join("stat"));
    }

    /// Allows every queued open without refreshing.
    fn answer_pending(&mut self) {
        let mut buf = [0u8; 4096];
        while let Ok(n) = nix::unistd::read(self.fan.as_raw_fd(), &mut buf) {
            if n == 0 {
                return;
            }
            for ev in events(&buf[..n]) {
                allow(&self.fan, ev.fd);
            }
        }
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fan.as_fd()
    }

    /// Answers every pending open: refreshed first when the reader is not the shim itself.
    pub(crate) fn serve(&mut self, agent: &AgentClient, container_id: &str) {
        let me = std::process::id() as i32;
        let mut buf = [0u8; 4096];
        loop {
            let n = match nix::unistd::read(self.fan.as_raw_fd(), &mut buf) {
                Ok(n) if n > 0 => n,
                _ => return,
            };
            let evs = events(&buf[..n]);
            if evs.iter().any(|e| e.pid != me) {
                self.refresh(agent, container_id);
            }
            for ev in evs {
                allow(&self.fan, ev.fd);
            }
        }
    }

    fn refresh(&mut self, agent: &AgentClient, container_id: &str) {
        let table = match agent.process_table(container_id) {
            Ok(t) => t,
            Err(e) => {
                tracing::debug!(error = %e, "process table");
                Vec::new()
            }
        };
        let table: Vec<&pb::ProcessInfo> = table.iter().take(MAX_PROCESSES).collect();
        for pid in std::mem::take(&mut self.shown) {
            if !table.iter().any(|p| p.pid == pid) {
                let _ = std::fs::remove_dir_all(self.dir.join(pid.to_string()));
            }
        }
        let _ = std::fs::write(self.dir.join("stat"), format!("btime {}\n", self.host_boot));
        for p in table {
            if write_process(&self.dir, p, self.host_boot).is_ok() {
                self.shown.push(p.pid);
            }
        }
    }
}

/// The event records in `buf` (as the kernel wrote them, whole).
fn events(buf: &[u8]) -> Vec<libc::fanotify_event_metadata> {
    let size = std::mem::size_of::<libc::fanotify_event_metadata>();
    let mut out = Vec::new();
    let mut off = 0;
    while off + size <= buf.len() {
        // SAFETY: `off + size` is within `buf`; read_unaligned copies one record.
        let ev: libc::fanotify_event_metadata =
            unsafe { std::ptr::read_unaligned(buf.as_ptr().add(off).cast()) };
        if (ev.event_len as usize) < size {
            break;
        }
        off += ev.event_len as usize;
        out.push(ev);
    }
    out
}

/// Lets the held open go on and closes the descriptor the event carried.
fn allow(fan: &OwnedFd, fd: i32) {
    if fd < 0 {
        return;
    }
    let resp = libc::fanotify_response {
        fd,
        response: libc::FAN_ALLOW,
    };
    // SAFETY: writes the response struct to our group; `fd` was given to this process by the
    // event and is closed right after, once.
    unsafe {
        libc::write(
            fan.as_raw_fd(),
            (&resp as *const libc::fanotify_response).cast(),
            std::mem::size_of::<libc::fanotify_response>(),
        );
        libc::close(fd);
    }
}

/// `s` without whitespace or control characters (psgo splits its fields on whitespace).
fn field(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

fn write_process(dir: &Path, p: &pb::ProcessInfo, host_boot: u64) -> std::io::Result<()> {
    let d = dir.join(p.pid.to_string());
    std::fs::create_dir_all(d.join("ns"))?;
    let comm: String = {
        let first = p.cmd.split_whitespace().next().unwrap_or("?");
        let base = first.rsplit('/').next().unwrap_or(first);
        field(base.trim_start_matches('[').trim_end_matches(']'))
            .chars()
            .take(15)
            .collect()
    };
    let start_ticks = p.start_time.saturating_sub(host_boot) * TICKS;
    let cpu_ticks = p.cpu_time_ms * TICKS / 1000;
    // proc(5) fields 1..23 (psgo reads up to vsize), the rest zero.
    let stat = format!(
        "{pid} ({comm}) S {ppid} {pid} {pid} 0 -1 0 0 0 0 0 {cpu_ticks} 0 0 0 20 0 1 0 {start_ticks} 0 0\n",
        pid = p.pid,
        ppid = p.ppid,
    );
    std::fs::write(d.join("stat"), stat)?;
    let status = format!(
        "Name:\t{comm}\nState:\tS (sleeping)\nTgid:\t{pid}\nPid:\t{pid}\nPPid:\t{ppid}\n\
         Uid:\t{uid}\t{uid}\t{uid}\t{uid}\nGid:\t0\t0\t0\t0\nGroups:\t\nNSpid:\t{pid}\n",
        pid = p.pid,
        ppid = p.ppid,
        uid = p.uid,
    );
    std::fs::write(d.join("status"), status)?;
    let mut cmd: Vec<u8> = p.cmd.as_bytes().iter().copied().take(MAX_CMD).collect();
    // One argument per word (podman joins them with spaces again); NULs from the guest would
    // split it anyway.
    for b in cmd.iter_mut() {
        if *b == b' ' || *b == 0 {
            *b = 0;
        }
    }
    if p.cmd.starts_with('[') {
        // No command line (psgo prints "[comm]" then).
        cmd.clear();
    } else {
        cmd.push(0);
    }
    std::fs::write(d.join("cmdline"), cmd)?;
    let ns = d.join("ns").join("pid");
    let _ = std::fs::remove_file(&ns);
    std::os::unix::fs::symlink("pid:[4026531836]", ns)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_in_psgo_format() {
        let t = tempfile::tempdir().expect("tempdir");
        let mut p = pb::ProcessInfo::new();
        p.pid = 7;
        p.ppid = 1;
        p.uid = 1000;
        p.start_time = 1_000_100;
        p.cpu_time_ms = 2_500;
        p.cmd = "/bin/sleep 1000".into();
        write_process(t.path(), &p, 1_000_000).expect("write");
        let stat = std::fs::read_to_string(t.path().join("7/stat")).expect("stat");
        let f: Vec<&str> = stat.split_whitespace().collect();
        assert_eq!(f[1], "(sleep)");
        assert_eq!(f[3], "1", "ppid");
        assert_eq!(f[13], "250", "utime in ticks");
        assert_eq!(f[21], "10000", "start, ticks after the host's boot");
        let status = std::fs::read_to_string(t.path().join("7/status")).expect("status");
        assert!(
            status.contains("Uid:\t1000\t1000\t1000\t1000\n"),
            "{status}"
        );
        let cmd = std::fs::read(t.path().join("7/cmdline")).expect("cmdline");
        assert_eq!(cmd, b"/bin/sleep\x001000\x00");
        assert_eq!(
            std::fs::read_link(t.path().join("7/ns/pid")).expect("ns"),
            PathBuf::from("pid:[4026531836]")
        );
        assert_eq!(field("a b\nc"), "a_b_c");
    }
}
