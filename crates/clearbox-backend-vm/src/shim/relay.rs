//! The shim's running phase: fds 0/1/2 ↔ the guest process's stdio, signals → SignalProcess,
//! SIGWINCH → TtyWinResize, until WaitProcess answers (after both output streams reached EOF in
//! the agent; the copiers then drain them) or the VM goes away.

use std::os::fd::{AsFd, BorrowedFd, RawFd};
use std::sync::mpsc;
use std::thread;

use clearbox_protocol::{AgentClient, ExitStatus, ProcessId, ReadChunk, Stream};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;

use super::tty;

pub(crate) enum Outcome {
    Exited(ExitStatus),
    /// QEMU exited or the agent connection broke.
    VmGone(String),
}

pub(crate) fn run(
    agent: &AgentClient,
    pid: &ProcessId,
    terminal: bool,
    vm_exit: BorrowedFd<'_>,
    signals: &mut SignalFd,
    mut view: Option<&mut super::procview::ProcView>,
) -> Outcome {
    if let Some(v) = view.as_deref_mut() {
        v.watch();
    }
    let outcome = relay(agent, pid, terminal, vm_exit, signals, view.as_deref_mut());
    // Nobody answers the process view's readers from here on, the shim's own included.
    if let Some(v) = view {
        v.unwatch();
    }
    outcome
}

fn relay(
    agent: &AgentClient,
    pid: &ProcessId,
    terminal: bool,
    vm_exit: BorrowedFd<'_>,
    signals: &mut SignalFd,
    mut view: Option<&mut super::procview::ProcView>,
) -> Outcome {
    let out = spawn_copier(agent, pid, Stream::Stdout, 1);
    let err = spawn_copier(agent, pid, Stream::Stderr, 2);
    spawn_stdin_pump(agent, pid);
    let (done_r, done_w) = match nix::unistd::pipe() {
        Ok(p) => p,
        Err(e) => return Outcome::VmGone(format!("pipe: {e}")),
    };
    let (tx, rx) = mpsc::channel();
    {
        let agent = agent.clone();
        let pid = pid.clone();
        thread::spawn(move || {
            let r = agent.wait(&pid, None);
            let _ = tx.send(r);
            let _ = nix::unistd::write(&done_w, b"x");
        });
    }
    if terminal {
        resize(agent, pid);
    }
    loop {
        let (sig_ready, vm_ready, done_ready, view_ready) = {
            let mut fds = vec![
                PollFd::new(signals.as_fd(), PollFlags::POLLIN),
                PollFd::new(vm_exit, PollFlags::POLLIN),
                PollFd::new(done_r.as_fd(), PollFlags::POLLIN),
            ];
            if let Some(v) = view.as_deref() {
                fds.push(PollFd::new(v.fd(), PollFlags::POLLIN));
            }
            match nix::poll::poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(e) => return Outcome::VmGone(format!("poll: {e}")),
            }
            let ready = |i: usize| {
                fds.get(i)
                    .and_then(|f| f.revents())
                    .is_some_and(|r| !r.is_empty())
            };
            (ready(0), ready(1), ready(2), ready(3))
        };
        if view_ready {
            if let Some(v) = view.as_deref_mut() {
                v.serve(agent, &pid.container_id);
            }
        }
        if done_ready {
            return match rx.recv() {
                Ok(Ok(status)) => {
                    // Every byte is in the agent; the copiers stop at EOF.
                    let _ = out.join();
                    let _ = err.join();
                    Outcome::Exited(status)
                }
                Ok(Err(e)) => Outcome::VmGone(format!("waiting for the process: {e}")),
                Err(_) => Outcome::VmGone("wait thread ended".into()),
            };
        }
        if vm_ready {
            return Outcome::VmGone("the VM exited".into());
        }
        if sig_ready {
            while let Ok(Some(info)) = signals.read_signal() {
                let sig = info.ssi_signo as i32;
                forward(agent, pid, terminal, sig);
            }
        }
    }
}

/// What the shim does with a signal it received while the process runs.
fn forward(agent: &AgentClient, pid: &ProcessId, terminal: bool, sig: i32) {
    match Signal::try_from(sig) {
        Ok(Signal::SIGCHLD) => {}
        Ok(Signal::SIGWINCH) => {
            if terminal {
                resize(agent, pid);
            }
        }
        _ => {
            if let Err(e) = agent.signal(pid, sig, false) {
                tracing::warn!(sig, error = %e, "forwarding signal");
            }
        }
    }
}

fn resize(agent: &AgentClient, pid: &ProcessId) {
    if let Some((rows, cols)) = tty::winsize(0).or_else(|| tty::winsize(1)) {
        if let Err(e) = agent.tty_resize(pid, rows, cols) {
            tracing::debug!(error = %e, "tty resize");
        }
    }
}

fn spawn_copier(
    agent: &AgentClient,
    pid: &ProcessId,
    stream: Stream,
    fd: RawFd,
) -> thread::JoinHandle<()> {
    let agent = agent.clone();
    let pid = pid.clone();
    thread::spawn(move || {
        let mut broken = false;
        loop {
            match agent.read(&pid, stream, 0, None) {
                Ok(ReadChunk::Data(d)) => {
                    // Keep draining after the host side went away so the process is never
                    // blocked by back-pressure.
                    if !broken && write_all(fd, &d).is_err() {
                        broken = true;
                    }
                }
                Ok(ReadChunk::Eof) => {
                    // The process closed its end: so does the shim, which stands for it (a
                    // caller reading the pipe, as `$(run --detach …)` does, sees EOF exactly
                    // when it would with runc).
                    release(fd);
                    return;
                }
                Err(e) => {
                    tracing::debug!(?stream, error = %e, "read");
                    return;
                }
            }
        }
    })
}

/// The host's /dev/null, opened while the shim still sees the host's root: the init's shim
/// later moves into the container's root, whose /dev may well be empty.
static DEV_NULL: std::sync::OnceLock<Option<std::fs::File>> = std::sync::OnceLock::new();

/// Opens [`DEV_NULL`] (once; close-on-exec).
pub(crate) fn keep_dev_null() {
    DEV_NULL.get_or_init(|| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map_err(|e| tracing::warn!(error = %e, "cannot open /dev/null"))
            .ok()
    });
}

/// Points `fd` at /dev/null, closing what it was (the caller's pipe or terminal).
fn release(fd: RawFd) {
    keep_dev_null();
    if let Some(Some(null)) = DEV_NULL.get() {
        use std::os::fd::AsRawFd;
        // SAFETY: dup2 onto one of this process's standard descriptors; `null` lives in a
        // static for the life of the process.
        unsafe {
            libc::dup2(null.as_raw_fd(), fd);
        }
    }
}

fn spawn_stdin_pump(agent: &AgentClient, pid: &ProcessId) {
    let agent = agent.clone();
    let pid = pid.clone();
    // Detached: it may block in read(0) until the process ends; exiting the shim ends it.
    thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match read_fd(0, &mut buf) {
                Ok(0) | Err(_) => {
                    let _ = agent.close_stdin(&pid);
                    return;
                }
                Ok(n) => match agent.write_stdin(&pid, &buf[..n]) {
                    Ok(w) if w == n => {}
                    _ => return,
                },
            }
        }
    });
}

/// `read(2)` on a raw fd, retrying EINTR and waiting out EAGAIN on a non-blocking fd.
fn read_fd(fd: RawFd, buf: &mut [u8]) -> Result<usize, Errno> {
    loop {
        match nix::unistd::read(fd, buf) {
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => wait_fd(fd, PollFlags::POLLIN)?,
            other => return other,
        }
    }
}

fn write_all(fd: RawFd, mut data: &[u8]) -> Result<(), Errno> {
    // SAFETY: fds 1 and 2 stay open for the life of the process.
    let f = unsafe { BorrowedFd::borrow_raw(fd) };
    while !data.is_empty() {
        match nix::unistd::write(f, data) {
            Ok(n) => data = &data[n..],
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => wait_fd(fd, PollFlags::POLLOUT)?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn wait_fd(fd: RawFd, what: PollFlags) -> Result<(), Errno> {
    // SAFETY: the standard descriptors stay open for the life of the process.
    let f = unsafe { BorrowedFd::borrow_raw(fd) };
    let mut fds = [PollFd::new(f, what)];
    match nix::poll::poll(&mut fds, PollTimeout::NONE) {
        Ok(_) | Err(Errno::EINTR) => Ok(()),
        Err(e) => Err(e),
    }
}
