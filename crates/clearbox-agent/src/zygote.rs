//! The pre-forked container-setup helper.
//!
//! Re-executing the agent for every create and exec (see `helper`) costs an `execve` of the
//! static agent binary and its start-up, and the seccomp guard's compilation, on every request:
//! under TCG emulation that is a large share of a container's create. Instead, the agent forks
//! one helper ("zygote") at start-up, while it is still single-threaded and before it blocks any
//! signal. The zygote loads the seccomp guard on itself once, then waits on a `SOCK_SEQPACKET`
//! socket pair. Each request is one message: the request (JSON) and, as `SCM_RIGHTS`, the write
//! end of a response pipe and, without a console socket, the process's stdin/stdout/stderr.
//! The request is taken by a *standby*: a child the zygote forked ahead of time (at the
//! lowest priority, while the guest has nothing better to do; in a VM restored from a
//! template, before the template was saved), so that no create or exec waits for a fork. The
//! standby replies with its own pid, tells the zygote (which forks the next standby) and
//! becomes exactly the re-exec'd helper of `helper` (same descriptors: 1 = the response, 3/4/5
//! = the stdio), runs the library and exits. The child's container process is re-parented to the
//! agent when the child exits, as with the re-exec'd helper.
//!
//! The zygote reaps its children automatically (SIGCHLD ignored; the child restores the default
//! before it creates anything), dies with the agent (parent-death signal, and end of file on the
//! socket) and never runs anything but this loop. When it is gone, the agent falls back to the
//! re-exec'd helper.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Mutex, OnceLock};

use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};

use crate::helper::{ChildStdio, HelperError};

/// Largest request the zygote reads (requests carry paths and ids only).
const MAX_REQUEST: usize = 64 * 1024;

struct Zygote {
    sock: OwnedFd,
    pid: nix::unistd::Pid,
}

/// How long the agent waits for the zygote's answer (a standby's pid, or the result of a fork)
/// before it takes the zygote for gone: a helper that died between taking a request and
/// answering must not hang every later create and exec.
const ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

static ZYGOTE: OnceLock<Mutex<Option<Zygote>>> = OnceLock::new();

/// Forks the zygote. Call while the process is single-threaded (before any thread starts) and
/// before signals are blocked. Failure only disables it (requests then re-exec the agent).
pub fn start() {
    let (ours, theirs) = match socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    ) {
        Ok(p) => p,
        Err(e) => {
            crate::error!("pre-forked helper: socketpair: {e}");
            return;
        }
    };
    // SAFETY: the caller guarantees the process is single-threaded, so the child may run
    // arbitrary code (no lock can be held by a thread that does not exist in the child).
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            drop(ours);
            std::process::exit(serve(theirs));
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            drop(theirs);
            crate::debug!("pre-forked helper: pid {child}");
            let timeout = nix::sys::time::TimeVal::new(ANSWER_TIMEOUT.as_secs() as _, 0);
            if let Err(e) = nix::sys::socket::setsockopt(
                &ours,
                nix::sys::socket::sockopt::ReceiveTimeout,
                &timeout,
            ) {
                crate::error!("pre-forked helper: receive timeout: {e}");
            }
            let _ = ZYGOTE.set(Mutex::new(Some(Zygote {
                sock: ours,
                pid: child,
            })));
        }
        Err(e) => crate::error!("pre-forked helper: fork: {e}"),
    }
}

/// What [`run`] did.
pub enum Outcome {
    /// The helper ran: its answer (or why there is none).
    Done(Result<Vec<u8>, HelperError>),
    /// No zygote (never started, or gone): the caller runs the helper another way, with the
    /// stdio handed back.
    Unavailable(ChildStdio),
}

/// Runs one helper request through the zygote.
pub fn run(body: &[u8], stdio: ChildStdio) -> Outcome {
    let Some(slot) = ZYGOTE.get() else {
        return Outcome::Unavailable(stdio);
    };
    let (resp_r, resp_w) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => return Outcome::Done(Err(HelperError::Io(e.into()))),
    };
    let pid = {
        let mut guard = crate::process::lock(slot);
        let Some(z) = guard.as_ref() else {
            return Outcome::Unavailable(stdio);
        };
        let mut fds: Vec<RawFd> = vec![resp_w.as_raw_fd()];
        if let Some(s) = &stdio {
            fds.extend(s.iter().map(AsRawFd::as_raw_fd));
        }
        match request(z, body, &fds) {
            Ok(pid) => pid,
            Err(e) => {
                crate::error!("pre-forked helper gone ({e}): re-executing the agent instead");
                *guard = None;
                return Outcome::Unavailable(stdio);
            }
        }
    };
    // The child and the container process hold their copies now.
    drop(resp_w);
    drop(stdio);
    let pid = match pid {
        p if p > 0 => p,
        e => {
            return Outcome::Done(Err(HelperError::Spawn(std::io::Error::from_raw_os_error(
                -e,
            ))))
        }
    };
    let answer = crate::helper::read_answer(std::fs::File::from(resp_r));
    if answer.is_err() {
        // SAFETY: kill(2) with integers. A child that has not answered (timeout, broken pipe)
        // is normally still alive and holds its pid.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    Outcome::Done(answer)
}

/// Sends one request, returns the zygote's reply: the child's pid, or `-errno` of its fork.
fn request(z: &Zygote, body: &[u8], fds: &[RawFd]) -> nix::Result<i32> {
    let cmsg = [ControlMessage::ScmRights(fds)];
    sendmsg::<()>(
        z.sock.as_raw_fd(),
        &[IoSlice::new(body)],
        &cmsg,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    // A request is waiting: the zygote forks at full priority now, should the standby for it
    // still be in the making (it makes them at the lowest, see `serve`). After the send: the
    // zygote lowers itself only before it looks for a waiting request.
    // SAFETY: setpriority(2) with integers, on our own child.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, z.pid.as_raw() as libc::id_t, 0) };
    let mut buf = [0u8; 4];
    loop {
        let n = {
            let mut iov = [IoSliceMut::new(&mut buf)];
            match recvmsg::<()>(z.sock.as_raw_fd(), &mut iov, None, MsgFlags::empty()) {
                Err(nix::errno::Errno::EINTR) => continue,
                r => r?.bytes,
            }
        };
        if n != 4 {
            return Err(nix::errno::Errno::EPIPE);
        }
        return Ok(i32::from_ne_bytes(buf));
    }
}

/// The zygote's loop; returns its exit code.
fn serve(sock: OwnedFd) -> i32 {
    // SAFETY: prctl with integer arguments. The zygote dies with the agent (host mode: the
    // agent is an ordinary process).
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        libc::prctl(libc::PR_SET_NAME, c"clearbox-helper".as_ptr(), 0, 0, 0);
    }
    crate::helper::reset_signals();
    // Children are reaped by the kernel; each restores SIGCHLD's default first thing.
    // SAFETY: signal(2) with a valid signal and disposition.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
    // Every container process inherits it: no vsock, no io_uring (see `guard`). Compiled at
    // the lowest priority: on a one-vCPU guest the agent must get to listening first (the
    // first request comes long after that).
    set_nice(19);
    let guard = match crate::guard::install() {
        Ok(()) => true,
        Err(e) => {
            // Each child tries again and reports the error to the agent.
            crate::error!("pre-forked helper: {}", clearbox_util::error::chain(&e));
            false
        }
    };
    // The zygote stays at the lowest priority: it only forks standbys, which raise their own
    // once they have work; the next standby is made while the guest has nothing better to do.
    for (k, _) in std::env::vars_os() {
        std::env::remove_var(k);
    }
    let mut body = vec![0u8; MAX_REQUEST];
    let zygote = nix::unistd::getpid();
    loop {
        // The next standby is made at the lowest priority, behind the request in progress,
        // unless a request already waits for it (the agent raises the priority back once it
        // sent one: lowered first, then looked, no request is left waiting behind nice 19).
        set_nice(19);
        if request_waiting(&sock) {
            set_nice(0);
        }
        let (took_r, took_w) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
            Ok(p) => p,
            Err(_) => return 1,
        };
        // SAFETY: this process is single-threaded.
        match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Child) => {
                drop(took_r);
                // An idle standby goes with the zygote (the agent then falls back on the
                // re-exec'd helper); the check after the prctl covers a zygote already gone.
                // SAFETY: prctl with integer arguments.
                unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
                if nix::unistd::getppid() != zygote {
                    std::process::exit(1);
                }
                // Waiting costs nothing; its work must not queue behind busy containers.
                set_nice(0);
                // A zygote gone before the standby tells it must not end the helper.
                // SAFETY: signal(2) with a valid signal and disposition; `helper::serve`
                // restores the default before anything is created.
                unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
                std::process::exit(standby(sock, &mut body, took_w, guard));
            }
            Ok(nix::unistd::ForkResult::Parent { .. }) => {}
            Err(_) => {
                // No standby: fork for the next request when it comes (as before standbys),
                // answering with the error only if that fork fails too.
                drop((took_r, took_w));
                let Some((n, fds, whole)) = receive(&sock, &mut body) else {
                    return 0;
                };
                let answer = if acceptable(&fds, whole) {
                    set_nice(0);
                    // SAFETY: this process is single-threaded.
                    match unsafe { nix::unistd::fork() } {
                        Ok(nix::unistd::ForkResult::Child) => {
                            drop(sock);
                            std::process::exit(child(&body[..n], fds, !guard));
                        }
                        Ok(nix::unistd::ForkResult::Parent { child }) => child.as_raw(),
                        Err(e) => -(e as i32),
                    }
                } else {
                    -libc::EINVAL
                };
                drop(fds);
                if reply(&sock, answer).is_err() {
                    return 1;
                }
                continue;
            }
        }
        drop(took_w);
        let mut b = [0u8; 1];
        let told = loop {
            match nix::unistd::read(took_r.as_raw_fd(), &mut b) {
                Err(nix::errno::Errno::EINTR) => continue,
                Ok(1) => break Some(b[0]),
                _ => break None,
            }
        };
        match told {
            Some(STANDBY_TOOK) => {}
            Some(_) => return 0, // the agent closed its end
            // The standby died idle (killed): make another, not in a tight loop.
            None => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    }
}

/// What a standby tells the zygote (one byte on its pipe): it took a request, so the zygote
/// forks the next standby.
const STANDBY_TOOK: u8 = 1;
/// What a standby tells the zygote: the agent closed its end, the zygote ends too.
const STANDBY_AGENT_GONE: u8 = 0;

/// A standby: a child forked ahead of time that waits for the next request, so that a create
/// or exec does not wait for the fork (in a VM restored from a template, the standby was
/// forked before the template was saved). It answers with its own pid, tells the zygote, and
/// becomes the helper of that request.
fn standby(sock: OwnedFd, body: &mut [u8], took: OwnedFd, guard: bool) -> i32 {
    let tell = |b: u8| {
        let _ = nix::unistd::write(&took, &[b]);
    };
    let Some((n, fds, whole)) = receive(&sock, body) else {
        tell(STANDBY_AGENT_GONE);
        return 0;
    };
    // Work: no longer bound to the zygote's life (a helper ends on its own, as a forked one
    // did).
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, 0, 0, 0, 0) };
    let valid = acceptable(&fds, whole);
    let answer = if valid {
        nix::unistd::getpid().as_raw()
    } else {
        -libc::EINVAL
    };
    let sent = reply(&sock, answer);
    tell(STANDBY_TOOK);
    drop(took);
    drop(sock);
    if !valid || sent.is_err() {
        return 1;
    }
    child(&body[..n], fds, !guard)
}

/// Receives one request: its length, its descriptors and whether it came whole (neither it
/// nor its descriptors truncated); `None` once the agent closed its end (or the socket failed).
fn receive(sock: &OwnedFd, body: &mut [u8]) -> Option<(usize, Vec<OwnedFd>, bool)> {
    loop {
        let mut space = nix::cmsg_space!([RawFd; 4]);
        let mut iov = [IoSliceMut::new(body)];
        let msg = match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(m) => m,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return None,
        };
        let mut fds: Vec<OwnedFd> = Vec::new();
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                if let ControlMessageOwned::ScmRights(raw) = c {
                    // SAFETY: SCM_RIGHTS just installed these descriptors in this process;
                    // nothing else owns them.
                    fds.extend(
                        raw.into_iter()
                            .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                    );
                }
            }
        }
        if msg.bytes == 0 {
            return None;
        }
        let whole = !msg
            .flags
            .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC);
        return Some((msg.bytes, fds, whole));
    }
}

/// A request the helper can serve: whole, with the response pipe and (without a console
/// socket) the three stdio descriptors.
fn acceptable(fds: &[OwnedFd], whole: bool) -> bool {
    whole && (fds.len() == 1 || fds.len() == 4)
}

/// Whether a request waits on `sock` (without taking it).
fn request_waiting(sock: &OwnedFd) -> bool {
    let mut fds = [nix::poll::PollFd::new(
        sock.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO).is_ok_and(|n| n > 0)
}

/// The answer to one request: the helper's pid, or `-errno`.
fn reply(sock: &OwnedFd, answer: i32) -> nix::Result<usize> {
    sendmsg::<()>(
        sock.as_raw_fd(),
        &[IoSlice::new(&answer.to_ne_bytes())],
        &[],
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
}

/// A forked child: the helper of `helper`, with the descriptors it expects.
fn child(body: &[u8], fds: Vec<OwnedFd>, guard: bool) -> i32 {
    let mut it = fds.into_iter();
    let Some(resp) = it.next() else {
        return 1;
    };
    let stdio: Vec<OwnedFd> = it.collect();
    // SAFETY: dup2/open/close_range on integers in a single-threaded process; `resp` and
    // `stdio` stay open until the descriptors are placed.
    let placed = unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        let ok = null >= 0 && libc::dup2(null, 0) == 0 && libc::dup2(resp.as_raw_fd(), 1) == 1;
        ok && match stdio.as_slice() {
            [a, b, c] => {
                crate::helper::place_fds([a.as_raw_fd(), b.as_raw_fd(), c.as_raw_fd()]).is_ok()
            }
            _ => true,
        }
    };
    let first_free: u32 = if stdio.is_empty() { 3 } else { 6 };
    // Nothing else of the zygote's (or the agent's) reaches the container: close the originals
    // and anything inherited, keeping 0..2 (and 3..5).
    std::mem::forget(resp);
    std::mem::forget(stdio);
    // SAFETY: close_range on integers; every descriptor it closes is owned by nothing that is
    // used afterwards (the `OwnedFd`s above were forgotten).
    unsafe { libc::syscall(libc::SYS_close_range, first_free, u32::MAX, 0) };
    let served = if placed {
        crate::helper::serve(body, guard)
    } else {
        Err("helper: cannot place the descriptors".to_string())
    };
    // SAFETY: fd 1 is the response pipe placed above; the `File` is forgotten, never closed
    // twice (exit follows).
    let mut out = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(1) });
    crate::helper::respond(served, &mut *out)
}

/// Sets this process's nice value (root may raise its priority back).
fn set_nice(n: i32) {
    // SAFETY: setpriority(2) with integers, on this process only.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, n) };
}
