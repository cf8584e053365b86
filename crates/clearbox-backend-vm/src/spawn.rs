//! Starting a shim from `create`/`exec` and waiting for its "ok".

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout};

use crate::shim::Request;
use crate::sizing::BOOT_TIMEOUT_SECS;
use crate::Error;

/// The hidden subcommand of the `clearbox` binary that runs [`crate::shim::main`].
pub const SHIM_SUBCOMMAND: &str = "__vm-shim";

/// A started shim that reported "ok".
pub(crate) struct Started {
    pub pid: i32,
}

/// Called with the shim's pid once it sits in the container's network namespace, before it
/// looks at it: runs the create hooks. An error aborts the create.
pub(crate) type OnNetns<'a> = &'a mut dyn FnMut(i32) -> Result<(), Error>;

/// Starts `clearbox __vm-shim` (this very binary) in a new session with our stdio and the
/// bundle as its working directory (as runc's processes have), hands it `req`, and waits until
/// it reports. With `on_netns` (the init shim), the shim first reports "netns" and waits for
/// "go" on a second pipe while `on_netns` runs. Once `interrupt` is readable (a termination
/// signal came), it stops waiting with [`Error::Interrupted`]. On failure the shim is gone when
/// this returns.
pub(crate) fn shim(
    dir: &Path,
    bundle: &Path,
    name: &str,
    req: &mut Request,
    on_netns: Option<OnNetns<'_>>,
    interrupt: Option<BorrowedFd<'_>>,
) -> Result<Started, Error> {
    let go = match on_netns {
        Some(_) => {
            let (r, w) =
                nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::errno("pipe", e))?;
            req.go_fd = Some(r.as_raw_fd());
            Some((r, w))
        }
        None => None,
    };
    let req_path = dir.join(format!("{name}.json"));
    let text = serde_json::to_vec(req)
        .map_err(|e| Error::Msg(format!("cannot encode the shim request: {e}")))?;
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&req_path)
            .map_err(|e| Error::io(format!("create {}", req_path.display()), e))?;
        f.write_all(&text)
            .map_err(|e| Error::io(format!("write {}", req_path.display()), e))?;
    }
    let result = start(dir, bundle, name, &req_path, go, on_netns, interrupt);
    let _ = std::fs::remove_file(&req_path);
    result
}

/// Writes `data` to `w` (best effort) from a thread that blocks SIGPIPE, so a reader that is
/// gone costs an ignored EPIPE (the pending signal dies with the thread), never the caller.
pub(crate) fn write_without_sigpipe(mut w: impl std::io::Write + Send + 'static, data: Vec<u8>) {
    let t = std::thread::spawn(move || {
        let mut set = nix::sys::signal::SigSet::empty();
        set.add(nix::sys::signal::Signal::SIGPIPE);
        let _ = set.thread_block();
        let _ = w.write_all(&data);
    });
    let _ = t.join();
}

fn start(
    dir: &Path,
    bundle: &Path,
    name: &str,
    req_path: &Path,
    go: Option<(OwnedFd, OwnedFd)>,
    mut on_netns: Option<OnNetns<'_>>,
    interrupt: Option<BorrowedFd<'_>>,
) -> Result<Started, Error> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::errno("pipe", e))?;
    let w_raw = w.as_raw_fd();
    let go_raw = go.as_ref().map(|(r, _)| r.as_raw_fd()).unwrap_or(-1);
    let mut cmd = Command::new("/proc/self/exe");
    cmd.current_dir(bundle);
    cmd.arg("--log").arg(dir.join(format!("{name}.log")));
    if tracing::enabled!(tracing::Level::DEBUG) {
        cmd.arg("--debug");
    }
    cmd.arg(SHIM_SUBCOMMAND)
        .arg(req_path)
        .arg(w_raw.to_string());
    // SAFETY: runs between fork and exec, only async-signal-safe calls (setsid, fcntl) on
    // values copied before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The ready pipe (and the init's go pipe) are the descriptors the shim inherits
            // besides stdio.
            if libc::fcntl(w_raw, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if go_raw >= 0 && libc::fcntl(go_raw, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::io("cannot start the VM shim", e))?;
    drop(w);
    let mut go_w = go.map(|(r, w)| {
        drop(r);
        std::fs::File::from(w)
    });
    let pid = child.id() as i32;
    let mut answer = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(BOOT_TIMEOUT_SECS + 30);
    let mut file = std::fs::File::from(r);
    let outcome = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break Err(Error::Msg("the VM shim did not report in time".into()));
        }
        let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
        let mut fds = vec![PollFd::new(file.as_fd(), PollFlags::POLLIN)];
        if let Some(i) = interrupt {
            fds.push(PollFd::new(i, PollFlags::POLLIN));
        }
        match nix::poll::poll(
            &mut fds,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => break Err(Error::errno("poll", e)),
        }
        if fds
            .get(1)
            .and_then(|f| f.revents())
            .is_some_and(|r| r.intersects(PollFlags::POLLIN))
        {
            break Err(Error::Interrupted);
        }
        let mut buf = [0u8; 4096];
        match file.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => {
                answer.extend_from_slice(&buf[..n]);
                if answer == b"netns\n" {
                    answer.clear();
                    // The shim is in the container's network namespace and waits.
                    let hooks = match on_netns.as_mut() {
                        Some(f) => f(pid),
                        None => Err(Error::Msg("the VM shim reported out of turn".into())),
                    };
                    if let Err(e) = hooks {
                        break Err(e);
                    }
                    if let Some(g) = go_w.take() {
                        // A shim that died meanwhile shows as EOF on the ready pipe.
                        write_without_sigpipe(g, b"go\n".to_vec());
                    }
                    continue;
                }
                if answer.ends_with(b"\n") {
                    break Ok(());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => break Err(Error::io("read from the VM shim", e)),
        }
    };
    let text = String::from_utf8_lossy(&answer).trim().to_string();
    match outcome {
        Ok(()) if text == "ok" => Ok(Started { pid }),
        other => {
            let _ = child.kill();
            let status = child.wait().ok();
            Err(match other {
                Err(e) => e,
                Ok(()) => match text.strip_prefix("error: ") {
                    Some(msg) => Error::Msg(msg.to_string()),
                    None => Error::Msg(format!(
                        "the VM shim exited ({}) without reporting; see {}",
                        status.map(|s| s.to_string()).unwrap_or_default(),
                        dir.join(format!("{name}.log")).display()
                    )),
                },
            })
        }
    }
}
