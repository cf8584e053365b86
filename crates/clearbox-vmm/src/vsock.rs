//! The agent channel: kernel vhost-vsock (AF_VSOCK) or a hybrid vsock Unix
//! socket served by vhost-device-vsock (`CONNECT <port>\n` → `OK <n>\n`).

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How the host reaches a guest's vsock ports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentTransport {
    /// Kernel vhost-vsock: AF_VSOCK to this guest CID.
    VhostVsock { cid: u32 },
    /// Unix socket of a hybrid-vsock backend.
    HybridVsock { uds: PathBuf },
}

/// Why one connection attempt failed.
enum Attempt {
    /// Nobody listens yet (guest still booting): try again.
    Retry(String),
    /// Will not get better by retrying.
    Fatal(Error),
}

impl AgentTransport {
    /// Connects to guest `port`, retrying with a short backoff until the agent
    /// accepts or `timeout` passes. `dead` is polled between attempts: when it
    /// turns readable (a pidfd of the VM process) the wait ends at once.
    /// For a VM prefer [`crate::Vm::connect_agent`] / [`crate::VmHandle::connect_agent`]:
    /// they first wait out a vhost-device-vsock start-up race (see
    /// `wait_hybrid_backend_ready`).
    pub fn connect_until(
        &self,
        port: u32,
        timeout: Duration,
        dead: Option<BorrowedFd<'_>>,
    ) -> Result<OwnedFd> {
        let deadline = Instant::now() + timeout;
        let mut backoff = Duration::from_micros(500);
        let mut last = String::from("no attempt");
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout(
                    timeout,
                    format!("agent on vsock port {port} ({last})"),
                ));
            }
            match self.try_connect(port, left.min(Duration::from_secs(2))) {
                Ok(fd) => return Ok(fd),
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Retry(why)) => last = why,
            }
            pause(
                backoff.min(deadline.saturating_duration_since(Instant::now())),
                dead,
            )?;
            backoff = (backoff * 2).min(Duration::from_millis(5));
        }
    }

    /// One attempt, without retries.
    pub fn connect(&self, port: u32, timeout: Duration) -> Result<OwnedFd> {
        match self.try_connect(port, timeout) {
            Ok(fd) => Ok(fd),
            Err(Attempt::Fatal(e)) => Err(e),
            Err(Attempt::Retry(reason)) => Err(Error::Handshake { port, reason }),
        }
    }

    fn try_connect(&self, port: u32, timeout: Duration) -> Result<OwnedFd, Attempt> {
        match self {
            AgentTransport::HybridVsock { uds } => hybrid_connect(uds, port, timeout),
            AgentTransport::VhostVsock { cid } => vsock_connect(*cid, port),
        }
    }
}

/// Waits until the vhost-device-vsock daemon `pid` has its vrings set up.
///
/// vhost-device-vsock 0.3 has a fatal race: a host connection that arrives
/// after QEMU sent the guest memory table but before the vrings are ready
/// makes its worker thread fail (QueueNotReady) and exit, and the device
/// never answers again. Before the memory table arrives it harmlessly closes
/// host connections. So: wait until the daemon maps guest memory (visible in
/// /proc/PID/maps), then give QEMU's vring setup, a few synchronous
/// vhost-user messages sent right after it, a margin. The guest driver does
/// this during kernel init, well before the agent listens, so the margin
/// costs nothing. Returns at once when the memory was already mapped.
pub(crate) fn wait_hybrid_backend_ready(
    pid: i32,
    timeout: Duration,
    dead: Option<BorrowedFd<'_>>,
) -> Result<()> {
    const MARGIN: Duration = Duration::from_millis(50);
    let deadline = Instant::now() + timeout;
    let maps = format!("/proc/{pid}/maps");
    let mut first = true;
    loop {
        let text = std::fs::read_to_string(&maps)
            .map_err(|e| Error::Io("read vhost-device-vsock memory map", e))?;
        if text.contains("/memfd:") {
            if first {
                return Ok(());
            }
            return pause(MARGIN, dead);
        }
        first = false;
        if Instant::now() >= deadline {
            return Err(Error::Timeout(timeout, "the guest vsock driver".into()));
        }
        pause(Duration::from_millis(2), dead)?;
    }
}

/// Sleeps `d`, waking early with an error if `dead` (a pidfd) turns readable.
fn pause(d: Duration, dead: Option<BorrowedFd<'_>>) -> Result<()> {
    match dead {
        Some(fd) => {
            if crate::proc::wait_readable(fd, Some(d))
                .map_err(|e| Error::Io("poll VM process", e))?
            {
                return Err(Error::VmExited {
                    status: "exited while connecting to the agent".into(),
                    console_tail: String::new(),
                });
            }
        }
        None => std::thread::sleep(d),
    }
    Ok(())
}

fn hybrid_connect(uds: &std::path::Path, port: u32, timeout: Duration) -> Result<OwnedFd, Attempt> {
    let mut s = match UnixStream::connect(uds) {
        Ok(s) => s,
        // Socket not created yet, or backend not listening yet.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(Attempt::Retry(format!("{}: {e}", uds.display())))
        }
        Err(e) => return Err(Attempt::Fatal(Error::Io("connect hybrid vsock socket", e))),
    };
    let io_err = |e: io::Error| Attempt::Fatal(Error::Io("hybrid vsock handshake", e));
    s.set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
        .map_err(io_err)?;
    if let Err(e) = s.write_all(format!("CONNECT {port}\n").as_bytes()) {
        // The backend drops the connection when the guest refuses it.
        return Err(Attempt::Retry(format!("write CONNECT: {e}")));
    }
    // Read byte by byte: whatever follows the reply line belongs to the agent.
    let mut line = Vec::with_capacity(16);
    let mut byte = [0u8; 1];
    loop {
        match s.read(&mut byte) {
            Ok(0) => return Err(Attempt::Retry("guest refused the connection".into())),
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) if line.len() < 64 => line.push(byte[0]),
            Ok(_) => {
                return Err(Attempt::Fatal(Error::Handshake {
                    port,
                    reason: "reply line too long".into(),
                }))
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(Attempt::Retry("no reply to CONNECT".into()))
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Attempt::Retry(format!("read reply: {e}"))),
        }
    }
    let reply = String::from_utf8_lossy(&line);
    if !reply.starts_with("OK ") {
        return Err(Attempt::Fatal(Error::Handshake {
            port,
            reason: format!("unexpected reply {reply:?}"),
        }));
    }
    s.set_read_timeout(None).map_err(io_err)?;
    Ok(OwnedFd::from(s))
}

fn vsock_connect(cid: u32, port: u32) -> Result<OwnedFd, Attempt> {
    use nix::errno::Errno;
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, VsockAddr};
    let fd = socket(
        AddressFamily::Vsock,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| Attempt::Fatal(Error::Io("AF_VSOCK socket", e.into())))?;
    let addr = VsockAddr::new(cid, port);
    match connect(fd.as_raw_fd(), &addr) {
        Ok(()) => Ok(fd),
        Err(e @ (Errno::ECONNREFUSED | Errno::ECONNRESET | Errno::ETIMEDOUT | Errno::EINTR)) => {
            Err(Attempt::Retry(format!("vsock {cid}:{port}: {e}")))
        }
        Err(e) => Err(Attempt::Fatal(Error::Io("AF_VSOCK connect", e.into()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A fake hybrid backend: refuses the first `refuse` connections by
    /// closing them, then answers OK and echoes one line.
    fn fake_backend(
        dir: &std::path::Path,
        refuse: usize,
    ) -> (PathBuf, std::thread::JoinHandle<String>) {
        let path = dir.join("v.sock");
        let l = UnixListener::bind(&path).unwrap();
        let h = std::thread::spawn(move || {
            for _ in 0..refuse {
                let (mut s, _) = l.accept().unwrap();
                let mut buf = [0u8; 32];
                let _ = s.read(&mut buf);
            }
            let (mut s, _) = l.accept().unwrap();
            let mut req = Vec::new();
            let mut b = [0u8; 1];
            while s.read(&mut b).unwrap() == 1 && b[0] != b'\n' {
                req.push(b[0]);
            }
            s.write_all(b"OK 4242\nhello\n").unwrap();
            String::from_utf8(req).unwrap()
        });
        (path, h)
    }

    #[test]
    fn hybrid_handshake_with_retries() {
        let dir = tempfile::tempdir().unwrap();
        let (uds, h) = fake_backend(dir.path(), 3);
        let t = AgentTransport::HybridVsock { uds };
        let fd = t.connect_until(1024, Duration::from_secs(5), None).unwrap();
        let mut s = UnixStream::from(fd);
        let mut got = String::new();
        s.read_to_string(&mut got).unwrap();
        // Data after the OK line is left for the caller.
        assert_eq!(got, "hello\n");
        assert_eq!(h.join().unwrap(), "CONNECT 1024");
    }

    #[test]
    fn hybrid_missing_socket_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let t = AgentTransport::HybridVsock {
            uds: dir.path().join("nope.sock"),
        };
        let start = Instant::now();
        let err = t
            .connect_until(1024, Duration::from_millis(100), None)
            .unwrap_err();
        assert!(matches!(err, Error::Timeout(..)), "{err}");
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn hybrid_bad_reply_is_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sock");
        let l = UnixListener::bind(&path).unwrap();
        let h = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut b = [0u8; 13];
            s.read_exact(&mut b).unwrap();
            s.write_all(b"NOPE\n").unwrap();
        });
        let t = AgentTransport::HybridVsock { uds: path };
        let err = t
            .connect_until(1024, Duration::from_secs(5), None)
            .unwrap_err();
        assert!(err.to_string().contains("NOPE"), "{err}");
        h.join().unwrap();
    }
}
