//! Command lines of the vhost-user daemons (one module per device would be
//! overkill: each is a handful of flags).

use std::path::Path;
use std::process::Command;

use crate::binaries::VirtiofsdFlavor;

/// vhost-device-vsock in hybrid mode: QEMU connects to `socket`, the host
/// connects to `uds` and sends `CONNECT <port>`. The CID only matters inside
/// the guest, which has this one device: every VM can use 3.
pub(crate) fn vhost_device_vsock(bin: &Path, socket: &Path, uds: &Path) -> Command {
    let mut c = Command::new(bin);
    c.args(["--guest-cid", "3", "--socket"])
        .arg(socket)
        .arg("--uds-path")
        .arg(uds);
    c
}

/// Where a virtiofsd serves its vhost-user frontend (QEMU).
pub(crate) enum FsEndpoint<'a> {
    /// A listening socket it inherits as this descriptor (the Rust virtiofsd's `--fd`): it
    /// listens before virtiofsd even starts, so QEMU can start at once and never meets a
    /// socket file that is bound but not yet listening.
    Fd(i32),
    /// A socket path it binds itself (the C virtiofsd of QEMU 7.2).
    Path(&'a Path),
}

/// One virtiofsd serving `dir` on vhost-user endpoint `at`.
pub(crate) fn virtiofsd(
    bin: &Path,
    flavor: VirtiofsdFlavor,
    at: FsEndpoint<'_>,
    dir: &Path,
    read_only: bool,
) -> Command {
    let mut c = Command::new(bin);
    match (flavor, at) {
        (_, FsEndpoint::Fd(fd)) => {
            c.arg(format!("--fd={fd}"));
        }
        (VirtiofsdFlavor::Rust, FsEndpoint::Path(socket)) => {
            c.arg("--socket-path").arg(socket);
        }
        (VirtiofsdFlavor::Legacy, FsEndpoint::Path(socket)) => {
            let mut sock = std::ffi::OsString::from("--socket-path=");
            sock.push(socket);
            c.arg(sock);
        }
    }
    match flavor {
        VirtiofsdFlavor::Rust => {
            c.arg("--shared-dir").arg(dir);
            c.args(["--cache", "auto", "--sandbox", "namespace"]);
            // Least privilege (docs/SECURITY.md): its seccomp filter kills on a stray system
            // call; no device nodes or file capabilities on the host's files.
            c.args(["--seccomp", "kill", "--modcaps=-mknod:-setfcap"]);
            if read_only {
                c.arg("--readonly");
            }
        }
        VirtiofsdFlavor::Legacy => {
            // No read-only flag: the caller runs it in a mount namespace where
            // `dir` is a read-only bind mount.
            let mut src = std::ffi::OsString::from("source=");
            src.push(dir);
            c.arg("-o").arg(src);
            c.args([
                "-o",
                "cache=auto",
                "-o",
                "sandbox=namespace",
                "-o",
                "log_level=warn",
                // No device nodes or file capabilities on the host's files (docs/SECURITY.md).
                // Its seccomp filter is always on and kills the process.
                "-o",
                "modcaps=-mknod:-setfcap",
            ]);
        }
    }
    c
}
