//! What drives [`crate::AgentClient`]: one small tokio runtime per process and the agent
//! connection as a tokio byte stream.
//!
//! ttrpc's sync client polls its socket with a 10 ms timeout, forever (a hundred wake-ups a
//! second for every idle container's host shim). Its async client is event-driven: with nothing
//! in flight, the runtime's thread sleeps in `epoll_wait` without a timeout and the callers
//! block on their own replies.
//!
//! The runtime is a current-thread runtime on one thread of its own (`agent-client`), started
//! by the first client of the process and kept for its lifetime. That thread blocks every
//! signal: a process-directed signal is delivered to a thread that does not block it, and the
//! callers (the VM shim's `signalfd`, `clearbox run`'s `sigwait`) block the signals they wait
//! for only in their own threads. Like any thread it does not survive `fork`: a child that
//! does not exec must not use a client of its parent.

use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::task::{ready, Context, Poll};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow};
use nix::sys::socket::{send, shutdown, MsgFlags, Shutdown};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::runtime::Handle;

/// Name of the runtime's thread (`/proc/<pid>/task/<tid>/comm`).
pub(crate) const THREAD_NAME: &str = "agent-client";

/// The process's client runtime, started on first use. A failed start is not remembered:
/// the next client tries again.
pub(crate) fn handle() -> io::Result<Handle> {
    static RUNTIME: Mutex<Option<Handle>> = Mutex::new(None);
    let mut slot = RUNTIME.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(h) = slot.as_ref() {
        return Ok(h.clone());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let h = rt.handle().clone();
    // The thread starts with every signal blocked (it inherits this thread's mask, restored
    // right after), so there is no moment at which it could take one.
    let mut old = SigSet::empty();
    pthread_sigmask(
        SigmaskHow::SIG_SETMASK,
        Some(&SigSet::all()),
        Some(&mut old),
    )
    .map_err(io::Error::from)?;
    let spawned = std::thread::Builder::new()
        .name(THREAD_NAME.into())
        // Drives the connections' tasks and the I/O and timer drivers; never returns.
        .spawn(move || rt.block_on(std::future::pending::<()>()));
    pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None).map_err(io::Error::from)?;
    spawned?;
    *slot = Some(h.clone());
    Ok(h)
}

/// Runs `fut` on the runtime and blocks the calling thread (which must not be a thread of an
/// async runtime's executor) until it completes. `None` when the runtime dropped the task.
pub(crate) fn block_on<T: Send + 'static>(
    rt: &Handle,
    fut: impl Future<Output = T> + Send + 'static,
) -> Option<T> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    rt.spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv().ok()
}

/// A connected stream socket (Unix, vsock, ...) as a tokio byte stream. Writes use
/// `MSG_NOSIGNAL`: a peer that went away is an error, never a SIGPIPE. The socket is closed
/// when the stream is dropped.
pub(crate) struct FdStream(AsyncFd<OwnedFd>);

impl FdStream {
    /// Needs the runtime's context (`Handle::enter`); makes the socket non-blocking.
    pub(crate) fn new(fd: OwnedFd) -> io::Result<Self> {
        let flags = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL).map_err(io::Error::from)?;
        let flags = OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK;
        fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
        // SAFETY: an `OwnedFd` is a valid open descriptor that it alone closes (when the
        // `AsyncFd` drops it), and its `as_raw_fd` always returns that same descriptor.
        let fd = unsafe { AsyncFd::register(fd) }?;
        Ok(Self(fd))
    }
}

impl AsyncRead for FdStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.0.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard
                .try_io(|fd| nix::unistd::read(fd.as_raw_fd(), unfilled).map_err(io::Error::from))
            {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                // Not readable after all: readiness cleared, wait again.
                Err(_would_block) => {}
            }
        }
    }
}

impl AsyncWrite for FdStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.0.poll_write_ready(cx))?;
            match guard.try_io(|fd| {
                send(fd.as_raw_fd(), buf, MsgFlags::MSG_NOSIGNAL).map_err(io::Error::from)
            }) {
                Ok(Ok(n)) => return Poll::Ready(Ok(n)),
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => {}
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match shutdown(self.0.as_raw_fd(), Shutdown::Write) {
            Ok(()) | Err(nix::errno::Errno::ENOTCONN) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(e.into())),
        }
    }
}
