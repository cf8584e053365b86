//! Starting processes: stdio as pipes or a pty, new session, credentials.
//!
//! Uses `std::process::Command`. Its `spawn` waits on the child when `exec` fails, so the
//! caller must hold the process-table lock across `spawn` (the reaper takes the same lock
//! before `waitpid(-1)`) — then the reaper can never steal that status.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::pty::{openpty, Winsize};

use crate::spec;

#[derive(Debug)]
pub struct Spawned {
    pub pid: i32,
    pub stdin: Option<File>,
    pub stdout: Option<File>,
    pub stderr: Option<File>,
    pub pty_master: Option<OwnedFd>,
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("creating stdio")]
    Stdio(#[source] nix::Error),
    #[error("starting {program:?}")]
    Exec {
        program: String,
        #[source]
        source: io::Error,
    },
}

fn pipe() -> Result<(OwnedFd, OwnedFd), SpawnError> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(SpawnError::Stdio)
}

fn set_cloexec(fd: &OwnedFd) -> Result<(), SpawnError> {
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
        .map(|_| ())
        .map_err(SpawnError::Stdio)
}

fn dup(fd: &OwnedFd) -> Result<OwnedFd, SpawnError> {
    fd.try_clone()
        .map_err(|e| SpawnError::Stdio(nix::Error::from_raw(e.raw_os_error().unwrap_or(0))))
}

/// Spawns `p`. `terminal`: allocate a pty (stdout = merged output, no stderr stream).
/// `open_stdin`: keep a writer for stdin, else stdin is /dev/null (with a terminal, stdin
/// is always the pty; the writer is kept only when `open_stdin`).
pub fn spawn(p: &spec::Process, terminal: bool, open_stdin: bool) -> Result<Spawned, SpawnError> {
    let mut cmd = Command::new(OsStr::from_bytes(p.args[0].as_bytes()));
    cmd.args(&p.args[1..]).env_clear();
    for kv in &p.env {
        match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                cmd.env(k, v);
            }
            _ => {}
        }
    }
    cmd.current_dir(&p.cwd);

    let mut out = Spawned {
        pid: 0,
        stdin: None,
        stdout: None,
        stderr: None,
        pty_master: None,
    };
    if terminal {
        let ws = p.console_size.map(|c| Winsize {
            ws_row: c.height,
            ws_col: c.width,
            ws_xpixel: 0,
            ws_ypixel: 0,
        });
        let pty = openpty(ws.as_ref(), None).map_err(SpawnError::Stdio)?;
        set_cloexec(&pty.master)?;
        set_cloexec(&pty.slave)?;
        cmd.stdin(Stdio::from(dup(&pty.slave)?))
            .stdout(Stdio::from(dup(&pty.slave)?))
            .stderr(Stdio::from(pty.slave));
        out.stdout = Some(File::from(dup(&pty.master)?));
        if open_stdin {
            out.stdin = Some(File::from(dup(&pty.master)?));
        }
        out.pty_master = Some(pty.master);
    } else {
        if open_stdin {
            let (r, w) = pipe()?;
            cmd.stdin(Stdio::from(r));
            out.stdin = Some(File::from(w));
        } else {
            cmd.stdin(Stdio::null());
        }
        let (r, w) = pipe()?;
        cmd.stdout(Stdio::from(w));
        out.stdout = Some(File::from(r));
        let (r, w) = pipe()?;
        cmd.stderr(Stdio::from(w));
        out.stderr = Some(File::from(r));
    }

    let uid = p.user.uid;
    let gid = p.user.gid;
    let gids: Vec<libc::gid_t> = p.user.additional_gids.clone();
    let umask = p.user.umask;
    let child_setup = move || -> io::Result<()> {
        // SAFETY: plain syscalls in the forked child on memory owned by this closure
        // (no allocation): close_range, signal, sigmask, setsid, ioctl on fd 0,
        // setgroups on a live Vec, setgid/setuid/umask.
        unsafe {
            // Nothing but stdio crosses exec, whatever the agent inherited. CLOEXEC instead
            // of closing: std's exec-error pipe (already CLOEXEC) must stay open until exec.
            // Errors (kernels before 5.11) are ignored: the agent's own fds are CLOEXEC.
            libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
            // The agent blocks SIGCHLD/SIGTERM/SIGINT for its signalfd and may have
            // inherited ignored signals: start the program with a clean slate (std keeps
            // the parent's mask).
            for sig in 1..32 {
                if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                    libc::signal(sig, libc::SIG_DFL);
                }
            }
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            let rc = libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            if rc != 0 {
                return Err(io::Error::from_raw_os_error(rc));
            }
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            if terminal && libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::setgroups(gids.len(), gids.as_ptr()) < 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::setgid(gid) < 0 || libc::setuid(uid) < 0 {
                return Err(io::Error::last_os_error());
            }
            if let Some(m) = umask {
                libc::umask(m);
            }
        }
        Ok(())
    };
    // SAFETY: `child_setup` only performs async-signal-safe syscalls (see above).
    unsafe {
        cmd.pre_exec(child_setup);
    }
    let child = cmd.spawn().map_err(|source| SpawnError::Exec {
        program: p.args[0].clone(),
        source,
    })?;
    // The command (and the child ends of the pipes / pty slave) is dropped here; the
    // `Child` handle is dropped without waiting: the reaper collects the status.
    out.pid = i32::try_from(child.id()).unwrap_or(-1);
    drop(cmd);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn exec_failure_is_reported() {
        let p = spec::Process::from_json(br#"{"args":["/nonexistent/binary"]}"#).expect("spec");
        let err = spawn(&p, false, false).expect_err("must fail");
        assert!(matches!(err, SpawnError::Exec { .. }));
    }

    #[test]
    fn pipes_carry_output() {
        let p = spec::Process::from_json(br#"{"args":["sh","-c","echo out; echo err >&2"]}"#)
            .expect("spec");
        let s = spawn(&p, false, false).expect("spawn");
        let mut o = String::new();
        s.stdout
            .expect("stdout")
            .read_to_string(&mut o)
            .expect("read");
        let mut e = String::new();
        s.stderr
            .expect("stderr")
            .read_to_string(&mut e)
            .expect("read");
        assert_eq!((o.as_str(), e.as_str()), ("out\n", "err\n"));
        nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(s.pid), None).expect("wait");
    }
}
