//! Container setup in a helper process.
//!
//! `clearbox_container::namespaces::{create, exec}` (youki's libcontainer) clone without fork
//! handlers, change caller-wide state (dumpable flag, oom_score_adj, the current directory)
//! and let the new process inherit the caller's signal mask. None of that is acceptable in the
//! multi-threaded agent, whose threads block SIGCHLD for the reaper's signalfd. So the agent
//! re-executes itself as a short-lived, single-threaded helper (like runc's `runc init` or
//! conmon calling the runtime) that calls the library and exits.
//!
//! Process tree: the helper is libcontainer's "main" process; the container process (init or
//! exec'd) is cloned as a sibling of libcontainer's intermediate process, i.e. as a child of
//! the helper. When the helper exits, the kernel re-parents the process to the agent (PID 1,
//! or a child subreaper in host mode) and makes its exit signal SIGCHLD, so the agent's
//! central reaper collects its status. The process may even exit before the agent learns its
//! pid: the reaper keeps such statuses (see `state::Table::claim`).
//!
//! Helper descriptors: 0 = the request (JSON, read to EOF), 1 = the response (one JSON
//! object), 2 = the agent's stderr (console), and without a console socket 3/4/5 = the
//! container process's stdin/stdout/stderr. libcontainer's init replaces its inherited 0..2
//! before it reports ready, so once the helper exits nothing else holds the response pipe.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clearbox_container::namespaces as ns;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use serde::{Deserialize, Serialize};

/// First argument that turns the agent binary into the helper.
pub const HELPER_ARG: &str = "__clearbox-container-helper";
/// Set in the helper's environment when the agent logs debug lines.
const DEBUG_ENV: &str = "CLEARBOX_AGENT_DEBUG";
/// Where the helper finds the process's stdio (when there is no console socket).
const STDIO_FDS: [RawFd; 3] = [3, 4, 5];
/// A helper that neither answers nor exits within this time is killed. Generous: container
/// setup under TCG emulation takes a good fraction of a second.
const HELPER_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Create {
        id: String,
        bundle: PathBuf,
        state_root: PathBuf,
        console_socket: Option<PathBuf>,
        /// Enter the rootfs with MS_MOVE + chroot instead of pivot_root, which fails while
        /// the agent's own root is the initramfs.
        no_pivot: bool,
    },
    Exec {
        id: String,
        state_root: PathBuf,
        process_file: PathBuf,
        console_socket: Option<PathBuf>,
    },
}

impl Request {
    fn console_socket(&self) -> Option<&PathBuf> {
        match self {
            Request::Create { console_socket, .. } | Request::Exec { console_socket, .. } => {
                console_socket.as_ref()
            }
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Response {
    pid: Option<i32>,
    error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    #[error("starting the container helper")]
    Spawn(#[source] io::Error),
    #[error("talking to the container helper")]
    Io(#[source] io::Error),
    #[error("the container helper did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the container helper gave no answer (crashed?)")]
    NoAnswer,
    /// The library's error, already formatted with its source chain.
    #[error("{0}")]
    Setup(String),
}

/// The process's stdio for [`run`]: `None` when it gets a terminal through the console socket.
pub type ChildStdio = Option<[OwnedFd; 3]>;

/// Runs `req` in a helper process and returns the new process's pid: a child of the
/// pre-forked helper (see `zygote`) where it runs, else a fresh re-exec of the agent.
pub fn run(req: &Request, stdio: ChildStdio) -> Result<i32, HelperError> {
    let body = serde_json::to_vec(req).map_err(|e| HelperError::Io(e.into()))?;
    let stdio = match crate::zygote::run(&body, stdio) {
        crate::zygote::Outcome::Done(answer) => return parse_answer(answer),
        crate::zygote::Outcome::Unavailable(stdio) => stdio,
    };
    run_exec(&body, stdio)
}

/// [`run`] by re-executing the agent as the helper.
fn run_exec(body: &[u8], stdio: ChildStdio) -> Result<i32, HelperError> {
    // The running binary itself, even if its file was replaced since.
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg(HELPER_ARG).env_clear();
    if crate::log::debug_enabled() {
        cmd.env(DEBUG_ENV, "1");
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(fds) = &stdio {
        let raw: [RawFd; 3] = [fds[0].as_raw_fd(), fds[1].as_raw_fd(), fds[2].as_raw_fd()];
        // SAFETY: the closure only makes async-signal-safe syscalls (fcntl, dup2, close_range)
        // on integers; `raw` is a plain array copied into the closure.
        unsafe {
            cmd.pre_exec(move || place_fds(raw));
        }
    } else {
        // SAFETY: as above.
        unsafe {
            cmd.pre_exec(|| {
                cloexec_from(3);
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn().map_err(HelperError::Spawn)?;
    // Our copies of the child's ends: the helper and the container process hold theirs.
    drop(stdio);
    let pid = child.id();
    let answer = (|| {
        let mut stdin = child.stdin.take().ok_or(HelperError::NoAnswer)?;
        stdin.write_all(body).map_err(HelperError::Io)?;
        drop(stdin);
        let stdout = child.stdout.take().ok_or(HelperError::NoAnswer)?;
        read_answer(File::from(OwnedFd::from(stdout)))
    })();
    if answer.is_err() {
        // SAFETY: kill(2) with integers; the helper is our child and not reaped yet (or the
        // reaper already collected it, then the pid cannot have been reused this fast).
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    // The `Child` is dropped without waiting: the agent's reaper collects the helper.
    drop(child);
    parse_answer(answer)
}

fn parse_answer(answer: Result<Vec<u8>, HelperError>) -> Result<i32, HelperError> {
    let resp: Response = serde_json::from_slice(&answer?).map_err(|_| HelperError::NoAnswer)?;
    match (resp.pid, resp.error) {
        (_, Some(e)) => Err(HelperError::Setup(e)),
        (Some(pid), None) if pid > 0 => Ok(pid),
        _ => Err(HelperError::NoAnswer),
    }
}

/// Reads the response to EOF (= the helper exited), bounded by [`HELPER_TIMEOUT`].
pub(crate) fn read_answer(mut f: File) -> Result<Vec<u8>, HelperError> {
    let until = Instant::now() + HELPER_TIMEOUT;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HelperError::Timeout(HELPER_TIMEOUT));
        }
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(
            std::os::fd::AsFd::as_fd(&f),
            PollFlags::POLLIN | PollFlags::POLLHUP,
        )];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(HelperError::Io(e.into())),
        }
        match f.read(&mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(HelperError::Io(e)),
        }
    }
}

/// Marks every descriptor from `first` up close-on-exec (errors: kernels before 5.11; the
/// agent's own descriptors are close-on-exec anyway).
pub(crate) fn cloexec_from(first: u32) {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only changes descriptor flags.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
    }
}

/// Child side (after fork, before exec): moves `raw` to [`STDIO_FDS`]. First duplicates every
/// source above the targets, so a source that already sits on a target cannot be clobbered.
pub(crate) fn place_fds(raw: [RawFd; 3]) -> io::Result<()> {
    let mut high = [0 as RawFd; 3];
    for (h, fd) in high.iter_mut().zip(raw) {
        // SAFETY: fcntl on an integer descriptor; failure is reported.
        let n = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        *h = n;
    }
    for (h, target) in high.iter().zip(STDIO_FDS) {
        // SAFETY: dup2 on integer descriptors; the target is not close-on-exec afterwards.
        if unsafe { libc::dup2(*h, target) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    cloexec_from(6);
    Ok(())
}

/// Entry point of the helper process; returns its exit code.
pub fn main() -> i32 {
    if std::env::var_os(DEBUG_ENV).is_some() {
        crate::log::set_debug(true);
    }
    let mut body = Vec::new();
    let served = io::stdin()
        .read_to_end(&mut body)
        .map_err(|e| format!("helper: read request: {e}"))
        .and_then(|_| serve(&body, true));
    respond(served, &mut io::stdout().lock())
}

/// Writes the response for `served` to `out`; returns the helper's exit code.
pub(crate) fn respond(served: Result<i32, String>, out: &mut dyn Write) -> i32 {
    let resp = match served {
        Ok(pid) => Response {
            pid: Some(pid),
            error: None,
        },
        Err(e) => Response {
            pid: None,
            error: Some(e),
        },
    };
    let body = serde_json::to_vec(&resp).unwrap_or_default();
    match out.write_all(&body).and_then(|()| out.flush()) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

/// Gives the container process a clean signal state: exec keeps the mask the agent's thread
/// had (SIGCHLD and, in host mode, SIGTERM/SIGINT blocked), and libcontainer does not reset it.
pub(crate) fn reset_signals() {
    // SAFETY: signal/sigprocmask with valid arguments in a single-threaded process.
    unsafe {
        for sig in 1..32 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

fn take_stdio() -> Result<ns::Stdio, String> {
    let mut fds = Vec::with_capacity(3);
    for fd in STDIO_FDS {
        // SAFETY: F_GETFD only queries flags; it tells whether `fd` is open.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return Err(format!("helper: stdio descriptor {fd} is not open"));
        }
        // SAFETY: `fd` is open (checked above) and was placed here for us alone by the agent
        // (`place_fds`); nothing else in this process owns it.
        fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    let mut it = fds.into_iter();
    Ok(ns::Stdio {
        stdin: it.next(),
        stdout: it.next(),
        stderr: it.next(),
    })
}

/// Sets up the container `body` asks for; `guard`: load the seccomp guard first (the
/// pre-forked helper loaded it on itself already).
pub(crate) fn serve(body: &[u8], guard: bool) -> Result<i32, String> {
    if crate::log::debug_enabled() {
        crate::log::trace_library_events();
    }
    let mut span = crate::log::Span::new("helper");
    reset_signals();
    let req: Request =
        serde_json::from_slice(body).map_err(|e| format!("helper: bad request: {e}"))?;
    let stdio = match req.console_socket() {
        Some(_) => ns::Stdio::default(),
        None => take_stdio()?,
    };
    span.step("request read");
    if guard {
        // Every container process inherits it: no vsock, no io_uring (see `guard`).
        crate::guard::install().map_err(|e| clearbox_util::error::chain(&e))?;
        span.step("guard installed");
    }
    let chain = |e: clearbox_container::Error| clearbox_util::error::chain(&e);
    let r = match &req {
        Request::Create {
            id,
            bundle,
            state_root,
            console_socket,
            no_pivot,
        } => ns::create_with_stdio(
            &ns::CreateParams {
                id,
                bundle,
                state_root,
                console_socket: console_socket.as_deref(),
                preserve_fds: 0,
                no_pivot: *no_pivot,
                systemd: false,
                foreground: false,
            },
            stdio,
        )
        .map_err(chain),
        Request::Exec {
            id,
            state_root,
            process_file,
            console_socket,
        } => ns::exec_with_stdio(
            &ns::ExecParams {
                id,
                state_root,
                process_file,
                console_socket: console_socket.as_deref(),
                detach: true,
                preserve_fds: 0,
                ignore_paused: false,
                sub_cgroup: None,
            },
            stdio,
        )
        .map_err(chain),
    };
    span.step("libcontainer done");
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let r = Request::Exec {
            id: "c".into(),
            state_root: "/s".into(),
            process_file: "/p.json".into(),
            console_socket: None,
        };
        let v = serde_json::to_value(&r).expect("encode");
        assert_eq!(v["op"], "exec");
        let back: Request = serde_json::from_value(v).expect("decode");
        assert!(back.console_socket().is_none());
    }
}
