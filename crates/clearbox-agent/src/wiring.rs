//! Stdio of container processes: pipes handed to the helper, or a console socket on which
//! libcontainer sends the pty master of a terminal process (as runc does with conmon).

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use nix::fcntl::OFlag;

use crate::container::{config, SEQ};
use crate::error::{Error, Result};
use crate::helper::{self, HelperError, Request};
use crate::process::{Process, Which};

/// A unix socket libcontainer connects to and sends the pty master over.
pub struct ConsoleSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl ConsoleSocket {
    fn bind() -> Result<Self> {
        let dir = config().run_dir.join("console");
        std::fs::create_dir_all(&dir).map_err(|e| Error::os("mkdir console dir", e))?;
        let path = dir.join(format!("{}.sock", SEQ.fetch_add(1, Ordering::Relaxed)));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)
            .map_err(|e| Error::os(format!("bind {}", path.display()), e))?;
        Ok(Self { listener, path })
    }

    /// Takes the pty master the container process sent. It was sent before libcontainer
    /// reported the process ready, so it is already queued: nothing here blocks.
    fn receive(&self) -> Result<OwnedFd> {
        use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
        self.listener
            .set_nonblocking(true)
            .map_err(|e| Error::os("console socket", e))?;
        let (stream, _) = self
            .listener
            .accept()
            .map_err(|e| Error::os("no console connection from the container", e))?;
        let mut buf = [0u8; 64];
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let msg = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(|e| Error::os("receive pty master", e))?;
        let cmsgs = msg
            .cmsgs()
            .map_err(|e| Error::os("receive pty master", e))?;
        for c in cmsgs {
            if let ControlMessageOwned::ScmRights(fds) = c {
                let mut owned: Vec<OwnedFd> = fds
                    .into_iter()
                    // SAFETY: SCM_RIGHTS just installed these descriptors in this process;
                    // nothing else owns them.
                    .map(|fd| unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
                    .collect();
                if let Some(master) = owned.pop() {
                    return Ok(master);
                }
            }
        }
        Err(Error::NoPtyMaster)
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The agent's ends of a process's stdio.
pub struct Ends {
    stdin: Option<File>,
    stdout: Option<File>,
    stderr: Option<File>,
    pty_master: Option<OwnedFd>,
}

/// Stdio being set up: pipes (child ends go to the helper) or a console socket.
pub enum Wiring {
    Pipes {
        child: [OwnedFd; 3],
        ends: Ends,
    },
    Console {
        socket: ConsoleSocket,
        open_stdin: bool,
        size: Option<(u16, u16)>,
    },
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::os("pipe", e))
}

impl Wiring {
    pub fn new(terminal: bool, open_stdin: bool, size: Option<(u16, u16)>) -> Result<Self> {
        if terminal {
            return Ok(Wiring::Console {
                socket: ConsoleSocket::bind()?,
                open_stdin,
                size,
            });
        }
        let (stdin_child, stdin_end) = if open_stdin {
            let (r, w) = pipe()?;
            (r, Some(File::from(w)))
        } else {
            let null = File::open("/dev/null").map_err(|e| Error::os("open /dev/null", e))?;
            (OwnedFd::from(null), None)
        };
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        Ok(Wiring::Pipes {
            child: [stdin_child, out_w, err_w],
            ends: Ends {
                stdin: stdin_end,
                stdout: Some(File::from(out_r)),
                stderr: Some(File::from(err_r)),
                pty_master: None,
            },
        })
    }

    pub fn console_path(&self) -> Option<PathBuf> {
        match self {
            Wiring::Console { socket, .. } => Some(socket.path.clone()),
            Wiring::Pipes { .. } => None,
        }
    }

    /// Runs the helper with this stdio, then returns the new pid and the agent's ends.
    pub fn run(self, req: &Request) -> std::result::Result<(i32, Ends), WiringError> {
        match self {
            Wiring::Pipes { child, ends } => {
                let pid = helper::run(req, Some(child)).map_err(WiringError::Helper)?;
                Ok((pid, ends))
            }
            Wiring::Console {
                socket,
                open_stdin,
                size,
            } => {
                let pid = helper::run(req, None).map_err(WiringError::Helper)?;
                let master = socket.receive().map_err(|e| WiringError::Console(pid, e))?;
                if let Some((rows, cols)) = size {
                    set_winsize(&master, rows, cols);
                }
                let dup = |m: &OwnedFd| {
                    m.try_clone()
                        .map(File::from)
                        .map_err(|e| WiringError::Console(pid, Error::os("dup pty master", e)))
                };
                let stdout = Some(dup(&master)?);
                let stdin = if open_stdin {
                    Some(dup(&master)?)
                } else {
                    None
                };
                Ok((
                    pid,
                    Ends {
                        stdin,
                        stdout,
                        stderr: None,
                        pty_master: Some(master),
                    },
                ))
            }
        }
    }
}

pub enum WiringError {
    Helper(HelperError),
    /// The process exists (pid) but its terminal could not be taken over.
    Console(i32, Error),
}

pub fn set_winsize(master: &OwnedFd, rows: u16, cols: u16) -> bool {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a `winsize` living on the stack for the call; the fd is open.
    unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) == 0 }
}

pub fn new_process(pid: i32, terminal: bool, ends: Ends) -> Arc<Process> {
    let p = Process::new(pid, terminal, ends.stdin, ends.pty_master);
    p.attach_output(Which::Stdout, ends.stdout);
    p.attach_output(Which::Stderr, ends.stderr);
    p
}
