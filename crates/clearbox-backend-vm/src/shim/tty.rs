//! Host side of a container terminal: a pty whose master goes to `--console-socket` (as runc
//! does), raw mode for a caller's terminal, window sizes.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use nix::sys::termios::{self, SetArg, Termios};

use crate::Error;

/// Makes a pty, sends its master over the console socket, and makes the slave this process's
/// controlling terminal and fds 0, 1 and 2. The caller must already be a session leader.
pub(crate) fn console_socket(socket: &Path) -> Result<(), Error> {
    let pty = nix::pty::openpty(None, None).map_err(|e| Error::errno("openpty", e))?;
    let stream = UnixStream::connect(socket)
        .map_err(|e| Error::io(format!("connect to console socket {}", socket.display()), e))?;
    let fds = [pty.master.as_raw_fd()];
    // runc sends the name of the master as the payload; receivers only need the fd.
    let name = b"/dev/ptmx";
    let iov = [std::io::IoSlice::new(name)];
    sendmsg::<()>(
        stream.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(|e| Error::errno("send the pty master over the console socket", e))?;
    drop(stream);
    drop(pty.master);
    let slave = pty.slave;
    // The guest's pty does the line discipline; this one only carries bytes.
    make_raw(slave.as_fd())?;
    // SAFETY: TIOCSCTTY takes an integer argument (0: do not steal) and touches no memory.
    if unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) } != 0 {
        return Err(Error::io(
            "make the pty the controlling terminal",
            std::io::Error::last_os_error(),
        ));
    }
    for fd in 0..3 {
        // SAFETY: dup2 onto the standard descriptors, which this process owns.
        if unsafe { libc::dup2(slave.as_raw_fd(), fd) } < 0 {
            return Err(Error::io(
                "dup the pty to stdio",
                std::io::Error::last_os_error(),
            ));
        }
    }
    drop::<OwnedFd>(slave);
    Ok(())
}

fn make_raw(fd: BorrowedFd<'_>) -> Result<Termios, Error> {
    let saved = termios::tcgetattr(fd).map_err(|e| Error::errno("tcgetattr", e))?;
    let mut raw = saved.clone();
    termios::cfmakeraw(&mut raw);
    termios::tcsetattr(fd, SetArg::TCSANOW, &raw).map_err(|e| Error::errno("tcsetattr", e))?;
    Ok(saved)
}

/// The caller's terminal in raw mode while the container uses it; restored on drop.
pub(crate) struct RawMode {
    saved: Option<Termios>,
}

impl RawMode {
    /// Raw mode on fd 0 when it is a terminal; a no-op otherwise.
    pub(crate) fn stdin() -> Self {
        // SAFETY: fd 0 stays open for the life of the process.
        let fd = unsafe { BorrowedFd::borrow_raw(0) };
        let saved = if nix::unistd::isatty(fd.as_raw_fd()).unwrap_or(false) {
            make_raw(fd).ok()
        } else {
            None
        };
        Self { saved }
    }

    pub(crate) fn restore(&mut self) {
        if let Some(t) = self.saved.take() {
            // SAFETY: fd 0 stays open for the life of the process.
            let fd = unsafe { BorrowedFd::borrow_raw(0) };
            let _ = termios::tcsetattr(fd, SetArg::TCSANOW, &t);
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        self.restore();
    }
}

/// Rows and columns of the terminal on `fd`, if it is one and has a size.
pub(crate) fn winsize(fd: RawFd) -> Option<(u32, u32)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` into the valid struct we pass.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_row > 0 && ws.ws_col > 0)
        .then(|| (u32::from(ws.ws_row), u32::from(ws.ws_col)))
}
