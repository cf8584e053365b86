//! A process's stdio: containerd's fifos on one side, the container process on the other.
//!
//! Without a terminal the process gets pipes, and a thread per stream copies between pipe and
//! fifo. With a terminal the backend sends the pty master over a console socket (runc's
//! protocol, which every backend speaks) and threads copy between master and fifos.
//!
//! No fifo open ever blocks a ttrpc handler: output fifos are opened read-write (which never
//! waits for a reader; what the process writes waits in the fifo until containerd reads it),
//! the stdin fifo is opened read-only in its copying thread, which waits there until the client
//! opens its end.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

use crate::helper::ChildStdio;

/// containerd's fifo paths of one process (empty: not connected).
#[derive(Debug, Clone, Default)]
pub struct Paths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// The shim's side of a process's stdio once it runs.
pub struct Io {
    /// Where stdin goes (pipe or pty master); `None` once closed.
    stdin: Arc<Mutex<Option<File>>>,
    /// The pty master, for resizes.
    console: Option<File>,
    /// The output copiers; done when the process and everything sharing its output ended.
    outputs: Vec<JoinHandle<()>>,
    /// The stdin fifo, to wake a copier that still waits for the client to open it.
    stdin_fifo: Option<PathBuf>,
}

/// Prepared before the process exists.
pub enum Pending {
    Pipes {
        paths: Paths,
        stdin_w: Option<File>,
        stdout_r: Option<File>,
        stderr_r: Option<File>,
    },
    Console {
        paths: Paths,
        listener: UnixListener,
        path: PathBuf,
    },
}

static SOCKETS: AtomicU64 = AtomicU64::new(0);

impl Pending {
    /// Pipes, or a console socket under `sockets` for a terminal. Returns what the process
    /// gets (its stdio, or the console socket path for the backend).
    pub fn prepare(
        paths: &Paths,
        sockets: &Path,
    ) -> Result<(Self, ChildStdio, Option<PathBuf>), String> {
        if paths.terminal {
            std::fs::create_dir_all(sockets)
                .map_err(|e| format!("create {}: {e}", sockets.display()))?;
            let path = sockets.join(format!(
                "c{}-{}.sock",
                std::process::id(),
                SOCKETS.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_file(&path);
            let listener = UnixListener::bind(&path)
                .map_err(|e| format!("console socket {}: {e}", path.display()))?;
            return Ok((
                Pending::Console {
                    paths: paths.clone(),
                    listener,
                    path: path.clone(),
                },
                ChildStdio::default(),
                Some(path),
            ));
        }
        let pipe = || -> Result<(OwnedFd, OwnedFd), String> {
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))
        };
        let mut child = ChildStdio::default();
        let mut stdin_w = None;
        let mut stdout_r = None;
        let mut stderr_r = None;
        if !paths.stdin.is_empty() {
            let (r, w) = pipe()?;
            child.stdin = Some(r);
            stdin_w = Some(File::from(w));
        }
        if !paths.stdout.is_empty() {
            let (r, w) = pipe()?;
            child.stdout = Some(w);
            stdout_r = Some(File::from(r));
        }
        if !paths.stderr.is_empty() {
            let (r, w) = pipe()?;
            child.stderr = Some(w);
            stderr_r = Some(File::from(r));
        }
        Ok((
            Pending::Pipes {
                paths: paths.clone(),
                stdin_w,
                stdout_r,
                stderr_r,
            },
            child,
            None,
        ))
    }

    /// Removes the console socket (after a failed start).
    pub fn discard(self) {
        if let Pending::Console { path, .. } = self {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Once the process exists: connects the fifos and starts copying.
    pub fn connect(self) -> Result<Io, String> {
        match self {
            Pending::Pipes {
                paths,
                stdin_w,
                stdout_r,
                stderr_r,
            } => {
                let mut outputs = Vec::new();
                if let Some(r) = stdout_r {
                    outputs.push(copy_out(r, &paths.stdout)?);
                }
                if let Some(r) = stderr_r {
                    outputs.push(copy_out(r, &paths.stderr)?);
                }
                let stdin = Arc::new(Mutex::new(stdin_w));
                let stdin_fifo = (!paths.stdin.is_empty()).then(|| PathBuf::from(&paths.stdin));
                if let Some(fifo) = &stdin_fifo {
                    copy_in(fifo.clone(), Arc::clone(&stdin), true);
                }
                Ok(Io {
                    stdin,
                    console: None,
                    outputs,
                    stdin_fifo,
                })
            }
            Pending::Console {
                paths,
                listener,
                path,
            } => {
                let master = receive_master(&listener);
                let _ = std::fs::remove_file(&path);
                let master = master?;
                let mut outputs = Vec::new();
                if !paths.stdout.is_empty() {
                    let r = master
                        .try_clone()
                        .map_err(|e| format!("dup the pty master: {e}"))?;
                    outputs.push(copy_out(r, &paths.stdout)?);
                }
                let w = master
                    .try_clone()
                    .map_err(|e| format!("dup the pty master: {e}"))?;
                let stdin = Arc::new(Mutex::new(Some(w)));
                let stdin_fifo = (!paths.stdin.is_empty()).then(|| PathBuf::from(&paths.stdin));
                if let Some(fifo) = &stdin_fifo {
                    // EOF on the fifo leaves the terminal open (closing it would hang it up).
                    copy_in(fifo.clone(), Arc::clone(&stdin), false);
                }
                Ok(Io {
                    stdin,
                    console: Some(master),
                    outputs,
                    stdin_fifo,
                })
            }
        }
    }
}

impl Io {
    /// Closes the process's stdin (containerd's CloseIO).
    pub fn close_stdin(&self) {
        if let Ok(mut s) = self.stdin.lock() {
            s.take();
        }
    }

    pub fn resize(&self, width: u32, height: u32) -> Result<(), String> {
        let Some(master) = &self.console else {
            return Err("the process has no terminal".into());
        };
        let ws = libc::winsize {
            ws_row: u16::try_from(height).unwrap_or(u16::MAX),
            ws_col: u16::try_from(width).unwrap_or(u16::MAX),
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one `winsize` from the valid struct we pass.
        let rc = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        if rc != 0 {
            return Err(format!(
                "resize the terminal: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(())
    }

    /// Waits (at most `limit`) until the output reached containerd's fifos, after the process
    /// ended, so a client that reads after the exit event loses nothing.
    pub fn drain(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.outputs.iter().any(|h| !h.is_finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.outputs.retain(|h| !h.is_finished());
    }

    /// Releases everything: stdin, the terminal, a stdin copier still waiting for its client.
    pub fn close(&mut self) {
        self.close_stdin();
        self.console.take();
        if let Some(fifo) = self.stdin_fifo.take() {
            wake_fifo_reader(&fifo);
        }
    }
}

impl Drop for Io {
    fn drop(&mut self) {
        self.close();
    }
}

fn receive_master(listener: &UnixListener) -> Result<File, String> {
    // The backend connected and sent the master during create; give it a moment otherwise.
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("console socket: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(format!("no terminal came over the console socket: {e}")),
        }
    };
    stream
        .set_nonblocking(false)
        .map_err(|e| format!("console socket: {e}"))?;
    let mut buf = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| format!("receive the terminal: {e}"))?;
    for c in msg
        .cmsgs()
        .map_err(|e| format!("receive the terminal: {e}"))?
    {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(fd) = fds.first() {
                // SAFETY: SCM_RIGHTS just installed this descriptor in our table; nothing else
                // owns it.
                return Ok(File::from(unsafe {
                    <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(*fd)
                }));
            }
        }
    }
    Err("the console socket carried no terminal".into())
}

/// Opens an output fifo without waiting for a reader and copies `from` into it until EOF (or
/// EIO: a pty whose last slave closed).
fn copy_out(mut from: File, fifo: &str) -> Result<JoinHandle<()>, String> {
    let mut to = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(fifo)
        .map_err(|e| format!("open {fifo}: {e}"))?;
    Ok(std::thread::spawn(move || {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    }))
}

/// Copies the stdin fifo into `to` until EOF; then closes `to` when `close_at_eof`.
fn copy_in(fifo: PathBuf, to: Arc<Mutex<Option<File>>>, close_at_eof: bool) {
    std::thread::spawn(move || {
        // Blocks until the client opens its end (or `wake_fifo_reader`).
        let Ok(mut from) = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&fifo)
        else {
            return;
        };
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let mut guard = match to.lock() {
                        Ok(g) => g,
                        Err(_) => return,
                    };
                    let Some(w) = guard.as_mut() else {
                        return;
                    };
                    if w.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        if close_at_eof {
            if let Ok(mut g) = to.lock() {
                g.take();
            }
        }
    });
}

/// Opens and closes the write end of `fifo` without blocking, which releases a reader still
/// waiting in open(2).
fn wake_fifo_reader(fifo: &Path) {
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(fifo);
}
