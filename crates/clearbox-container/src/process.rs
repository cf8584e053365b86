//! Setting up the calling process as an OCI process: console, rlimits, user, capabilities,
//! no_new_privileges, and the final exec. Used in a freshly forked child, so everything here
//! reports errors instead of panicking and allocates only before `fork` where it matters.

use std::ffi::CString;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use caps::{CapSet, Capability, CapsHashSet};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use oci_spec::runtime::{LinuxCapabilities, PosixRlimit, Process};

use crate::Error;

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Opens a pty, sends its master to the `--console-socket` peer (SCM_RIGHTS, as runc does) and
/// returns the slave, to become the process's controlling terminal and stdio.
pub fn send_pty_master(console_socket: &Path) -> Result<OwnedFd, Error> {
    let pty = nix::pty::openpty(None, None).map_err(|e| Error::sys("openpty", e))?;
    let sock = UnixStream::connect(console_socket)
        .map_err(|e| Error::io(format!("connect {}", console_socket.display()), e))?;
    let fds = [pty.master.as_raw_fd()];
    let name = b"/dev/ptmx";
    sendmsg::<()>(
        sock.as_raw_fd(),
        &[IoSlice::new(name)],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(|e| Error::sys("send pty master over console socket", e))?;
    Ok(pty.slave)
}

/// Makes `slave` the controlling terminal of this (new session leader) process and its stdio.
pub fn attach_tty(slave: &OwnedFd) -> Result<(), Error> {
    // SAFETY: TIOCSCTTY takes an integer argument; `slave` is an open tty fd we own.
    let rc = unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) };
    if rc != 0 {
        return Err(Error::io(
            "set controlling tty",
            std::io::Error::last_os_error(),
        ));
    }
    for fd in 0..3 {
        nix::unistd::dup2(slave.as_raw_fd(), fd).map_err(|e| Error::sys("dup2 tty", e))?;
    }
    Ok(())
}

/// Marks every fd above `2 + preserve` close-on-exec, except `keep`.
pub fn cloexec_from(preserve: i32, keep: &[RawFd]) -> Result<(), Error> {
    let first = 3 + preserve.max(0);
    let dir = std::fs::read_dir("/proc/self/fd").map_err(|e| Error::io("list fds", e))?;
    let fds: Vec<RawFd> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    for fd in fds {
        if fd >= first && !keep.contains(&fd) {
            // SAFETY: F_SETFD only changes the flags of a descriptor number; a stale number (the
            // directory listing's own fd) yields EBADF, which we ignore.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
    Ok(())
}

pub fn set_rlimits(rlimits: &[PosixRlimit]) -> Result<(), Error> {
    for r in rlimits {
        let resource = rlimit_resource(&r.typ().to_string())
            .ok_or_else(|| Error::Setup(format!("unknown rlimit {}", r.typ())))?;
        let lim = libc::rlimit {
            rlim_cur: r.soft(),
            rlim_max: r.hard(),
        };
        // SAFETY: `lim` is a valid rlimit struct living across the call.
        let rc = unsafe { libc::setrlimit(resource, &lim) };
        if rc != 0 {
            return Err(Error::io(
                format!("setrlimit {}", r.typ()),
                std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(())
}

fn rlimit_resource(name: &str) -> Option<libc::__rlimit_resource_t> {
    Some(match name.trim_start_matches("RLIMIT_") {
        "CPU" => libc::RLIMIT_CPU,
        "FSIZE" => libc::RLIMIT_FSIZE,
        "DATA" => libc::RLIMIT_DATA,
        "STACK" => libc::RLIMIT_STACK,
        "CORE" => libc::RLIMIT_CORE,
        "RSS" => libc::RLIMIT_RSS,
        "NPROC" => libc::RLIMIT_NPROC,
        "NOFILE" => libc::RLIMIT_NOFILE,
        "MEMLOCK" => libc::RLIMIT_MEMLOCK,
        "AS" => libc::RLIMIT_AS,
        "LOCKS" => libc::RLIMIT_LOCKS,
        "SIGPENDING" => libc::RLIMIT_SIGPENDING,
        "MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
        "NICE" => libc::RLIMIT_NICE,
        "RTPRIO" => libc::RLIMIT_RTPRIO,
        "RTTIME" => libc::RLIMIT_RTTIME,
        _ => return None,
    })
}

/// Sets the calling process's `oom_score_adj` (inherited by what it forks). Lowering it below
/// the lowest value a privileged process set before needs CAP_SYS_RESOURCE: the error says so
/// (containerd's CRI asks -998 for every pod sandbox; on a host whose root lacks that
/// capability, containerd's `restrict_oom_score_adj = true` keeps its requests attainable).
pub fn set_oom_score_adj(value: i32) -> Result<(), Error> {
    std::fs::write("/proc/self/oom_score_adj", value.to_string()).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
            " (lowering it needs CAP_SYS_RESOURCE, which this process lacks)"
        } else {
            ""
        };
        Error::Setup(format!(
            "cannot set process.oomScoreAdj to {value}: {e}{hint}"
        ))
    })
}

fn cap_set(list: &Option<oci_spec::runtime::Capabilities>) -> Result<CapsHashSet, Error> {
    let mut out = CapsHashSet::new();
    for c in list.iter().flatten() {
        let name = format!("CAP_{c}");
        let cap: Capability = name
            .parse()
            .map_err(|_| Error::Setup(format!("unknown capability {name}")))?;
        out.insert(cap);
    }
    Ok(out)
}

/// Switches to the process's user and leaves exactly its capability sets, in the order the
/// kernel needs: drop from the bounding set while still privileged, keep caps across setuid,
/// change ids, then set effective/permitted/inheritable/ambient.
pub fn set_user_and_caps(process: &Process) -> Result<(), Error> {
    let user = process.user();
    let caps: Option<&LinuxCapabilities> = process.capabilities().as_ref();
    if let Some(c) = caps {
        let bounding = cap_set(c.bounding())?;
        for cap in caps::all() {
            if !bounding.contains(&cap) {
                // Capabilities newer than the running kernel cannot be dropped; ignore EINVAL.
                let _ = caps::drop(None, CapSet::Bounding, cap);
            }
        }
    }
    // SAFETY: PR_SET_KEEPCAPS takes one integer argument.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) };
    let gids: Vec<nix::unistd::Gid> = user
        .additional_gids()
        .iter()
        .flatten()
        .map(|g| nix::unistd::Gid::from_raw(*g))
        .collect();
    nix::unistd::setgroups(&gids).map_err(|e| Error::sys("setgroups", e))?;
    let gid = nix::unistd::Gid::from_raw(user.gid());
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| Error::sys("setgid", e))?;
    let uid = nix::unistd::Uid::from_raw(user.uid());
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| Error::sys("setuid", e))?;
    if let Some(umask) = user.umask() {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(umask));
    }
    if let Some(c) = caps {
        let set = |which, list: &Option<oci_spec::runtime::Capabilities>| {
            let s = cap_set(list)?;
            caps::set(None, which, &s)
                .map_err(|e| Error::Setup(format!("set {which:?} capabilities: {e}")))
        };
        // capset needs effective ⊆ permitted at every step: lower effective first.
        set(CapSet::Effective, c.effective())?;
        set(CapSet::Permitted, c.permitted())?;
        set(CapSet::Inheritable, c.inheritable())?;
        // Ambient capabilities must be in permitted and inheritable; skip those that are not.
        let ambient = cap_set(c.ambient())?;
        caps::clear(None, CapSet::Ambient)
            .map_err(|e| Error::Setup(format!("clear ambient capabilities: {e}")))?;
        for cap in ambient {
            let _ = caps::raise(None, CapSet::Ambient, cap);
        }
    } else if user.uid() != 0 {
        caps::clear(None, CapSet::Effective)
            .map_err(|e| Error::Setup(format!("clear capabilities: {e}")))?;
    }
    if process.no_new_privileges().unwrap_or(false) {
        // SAFETY: PR_SET_NO_NEW_PRIVS takes one integer argument.
        let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
        if rc != 0 {
            return Err(Error::io(
                "set no_new_privileges",
                std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(())
}

/// The program to exec: `args[0]` looked up as runc looks it up (Go's `exec.LookPath`) in the
/// process's own `PATH` (not ours: the process's environment is what counts), with runc's
/// error wording, and the argument list checked against the kernel's limits.
pub fn resolve_program(process: &Process) -> Result<PathBuf, Error> {
    let args: &[String] = process.args().as_deref().unwrap_or_default();
    let env: &[String] = process.env().as_deref().unwrap_or_default();
    check_program(args, env).map_err(Error::Setup)
}

/// [`lookup_program`] and [`check_arg_size`] for a process's args and env; the error is runc's
/// message (`exec: "x": ...`).
pub fn check_program(args: &[String], env: &[String]) -> Result<PathBuf, String> {
    let arg0 = args
        .first()
        .ok_or_else(|| "process.args is empty".to_string())?;
    let path_var = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    let program = lookup_program(arg0, path_var)?;
    check_arg_size(arg0, args, env)?;
    Ok(program)
}

/// Go's `exec.LookPath` as runc calls it: a name with a slash is used as is (it must exist and
/// be an executable file), any other is searched in `path_var`. Errors are runc's words, which
/// engines match on (podman: "no such file or directory" / "executable file not found" = 127,
/// "permission denied" = 126).
pub fn lookup_program(arg0: &str, path_var: &str) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |m: &std::fs::Metadata| !m.is_dir() && m.permissions().mode() & 0o111 != 0;
    if arg0.contains('/') {
        return match std::fs::metadata(arg0) {
            Ok(m) if executable(&m) => Ok(PathBuf::from(arg0)),
            Ok(_) => Err(format!("exec: {arg0:?}: permission denied")),
            Err(e) => Err(format!(
                "exec: {arg0:?}: stat {arg0}: {}",
                errno_text(e.raw_os_error().unwrap_or(libc::EIO))
            )),
        };
    }
    for dir in path_var.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = Path::new(dir).join(arg0);
        if std::fs::metadata(&candidate).is_ok_and(|m| executable(&m)) {
            return Ok(candidate);
        }
    }
    Err(format!(
        "exec: {arg0:?}: executable file not found in $PATH"
    ))
}

/// The kernel's `E2BIG` checks of execve, made before anything runs: one string longer than
/// MAX_ARG_STRLEN, or arguments and environment together beyond ARG_MAX.
pub fn check_arg_size(arg0: &str, args: &[String], env: &[String]) -> Result<(), String> {
    const MAX_ARG_STRLEN: usize = 32 * 4096;
    // SAFETY: sysconf only reads a system limit.
    let arg_max = usize::try_from(unsafe { libc::sysconf(libc::_SC_ARG_MAX) }).unwrap_or(0);
    let too_long = || format!("exec: {arg0:?}: argument list too long");
    let mut total = 0usize;
    for s in args.iter().chain(env) {
        if s.len() + 1 > MAX_ARG_STRLEN {
            return Err(too_long());
        }
        total += s.len() + 1 + std::mem::size_of::<usize>();
    }
    if arg_max > 0 && total > arg_max {
        return Err(too_long());
    }
    Ok(())
}

/// An errno's text as Go (and so runc) prints it: lower case.
pub fn errno_text(errno: i32) -> String {
    nix::errno::Errno::from_raw(errno)
        .desc()
        .to_ascii_lowercase()
}

/// Restores the default disposition of SIGPIPE just before the container's program runs: the
/// runtime ignores it while it writes to hooks and pipes, and an ignored disposition would
/// survive exec.
pub fn default_sigpipe() {
    // SAFETY: SIG_DFL is a valid disposition; signal() touches no memory of ours.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// The argv and envp of the process as C strings, prepared before anything irreversible.
pub struct ExecImage {
    pub program: CString,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
}

impl ExecImage {
    pub fn new(program: &Path, process: &Process) -> Result<Self, Error> {
        let cstr =
            |s: &str| CString::new(s).map_err(|_| Error::Setup(format!("NUL byte in {s:?}")));
        let program = cstr(&program.to_string_lossy())?;
        let argv = process
            .args()
            .iter()
            .flatten()
            .map(|a| cstr(a))
            .collect::<Result<_, _>>()?;
        let mut envp: Vec<CString> = process
            .env()
            .iter()
            .flatten()
            .map(|e| cstr(e))
            .collect::<Result<_, _>>()?;
        if !process
            .env()
            .iter()
            .flatten()
            .any(|e| e.starts_with("HOME="))
        {
            envp.push(cstr("HOME=/")?);
        }
        Ok(Self {
            program,
            argv,
            envp,
        })
    }

    /// Replaces this process; returns only on failure.
    pub fn exec(&self) -> Error {
        match nix::unistd::execve(&self.program, &self.argv, &self.envp) {
            Err(e) => Error::sys(format!("exec {:?}", self.program), e),
            Ok(never) => match never {},
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::ProcessBuilder;

    #[test]
    fn resolves_in_process_path() {
        let p = ProcessBuilder::default()
            .args(vec!["sh".to_string()])
            .env(vec!["PATH=/nonexistent:/bin".to_string()])
            .build()
            .unwrap();
        assert_eq!(resolve_program(&p).unwrap(), PathBuf::from("/bin/sh"));
        let p = ProcessBuilder::default()
            .args(vec!["no-such-program-x".to_string()])
            .build()
            .unwrap();
        assert_eq!(
            resolve_program(&p).unwrap_err().to_string(),
            r#"exec: "no-such-program-x": executable file not found in $PATH"#
        );
        assert_eq!(
            lookup_program("/nonexistent", "").unwrap_err(),
            r#"exec: "/nonexistent": stat /nonexistent: no such file or directory"#
        );
        assert_eq!(
            lookup_program("/etc/passwd", "").unwrap_err(),
            r#"exec: "/etc/passwd": permission denied"#
        );
        assert_eq!(
            lookup_program("/", "").unwrap_err(),
            r#"exec: "/": permission denied"#
        );
        let huge = vec!["x".repeat(200_000)];
        assert!(check_arg_size("sh", &huge, &[])
            .unwrap_err()
            .ends_with("argument list too long"));
        let many: Vec<String> = (0..100_000)
            .map(|i| format!("E{i}=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"))
            .collect();
        assert!(check_arg_size("sh", &["sh".into()], &many).is_err());
        assert!(check_arg_size("sh", &["sh".into()], &["A=1".into()]).is_ok());
    }

    #[test]
    fn rlimit_names() {
        assert_eq!(rlimit_resource("RLIMIT_NOFILE"), Some(libc::RLIMIT_NOFILE));
        assert_eq!(rlimit_resource("RLIMIT_BOGUS"), None);
    }
}
