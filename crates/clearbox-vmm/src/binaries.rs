//! Locating helper programs.

use std::path::{Path, PathBuf};

/// First executable `name` on PATH, then in `extra` directories.
pub fn find_program(name: &str, extra: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.extend(extra.iter().map(PathBuf::from));
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(home).join("bin"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

pub fn qemu() -> Option<PathBuf> {
    find_program("qemu-system-x86_64", &[])
}

/// `qemu --version`, started in the background so it overlaps the helpers' start-up.
/// Dropped unread (the start failed meanwhile), it is killed and reaped.
pub(crate) struct QemuVersionProbe(Option<std::process::Child>);

impl QemuVersionProbe {
    pub(crate) fn start(qemu: &Path) -> Option<Self> {
        std::process::Command::new(qemu)
            .arg("--version")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()
            .map(|c| QemuVersionProbe(Some(c)))
    }

    /// The major version, `None` when QEMU did not say.
    pub(crate) fn major(mut self) -> Option<u32> {
        let out = self.0.take()?.wait_with_output().ok()?;
        parse_qemu_major(&String::from_utf8_lossy(&out.stdout))
    }
}

impl Drop for QemuVersionProbe {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `QEMU emulator version 10.0.2 (Debian ...)` -> 10.
pub fn parse_qemu_major(version: &str) -> Option<u32> {
    version
        .lines()
        .next()?
        .strip_prefix("QEMU emulator version ")?
        .split('.')
        .next()?
        .parse()
        .ok()
}

pub fn vhost_device_vsock() -> Option<PathBuf> {
    find_program("vhost-device-vsock", &["/usr/local/bin", "/usr/libexec"])
}

/// Which virtiofsd implementation a binary is: they take different flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VirtiofsdFlavor {
    /// The Rust virtiofsd (`--shared-dir`, `--readonly`).
    Rust,
    /// QEMU's legacy C virtiofsd (`-o source=`), e.g. /usr/lib/qemu/virtiofsd.
    Legacy,
}

/// The Rust virtiofsd is preferred (maintained, has `--readonly`); QEMU's
/// legacy C one (Debian's qemu-system-common) is the fallback.
pub fn virtiofsd() -> Option<(PathBuf, VirtiofsdFlavor)> {
    let rust = find_program("virtiofsd", &["/usr/libexec", "/usr/local/libexec"])
        .filter(|p| !p.starts_with("/usr/lib/qemu"));
    if let Some(p) = rust {
        return Some((p, VirtiofsdFlavor::Rust));
    }
    let legacy = PathBuf::from("/usr/lib/qemu/virtiofsd");
    is_executable(&legacy).then_some((legacy, VirtiofsdFlavor::Legacy))
}

/// clearbox-core's `exe_seal::ORIGINAL_EXE_ENV` (this crate sits below clearbox-core).
const ORIGINAL_EXE_ENV: &str = "CLEARBOX_EXE";

/// `clearbox-vmux`, the host end of the virtio-serial agent channel: next to the running
/// program first (a build tree's `target/<profile>/`, or the installed `clearbox`), then on
/// PATH.
pub fn vmux() -> Option<PathBuf> {
    const NAME: &str = "clearbox-vmux";
    // clearbox runs from a sealed view of its binary (clearbox-core's `exe_seal`), whose
    // /proc/self/exe is not the installed file: the re-execution names that in CLEARBOX_EXE.
    let exe = std::env::var_os(ORIGINAL_EXE_ENV)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::current_exe().ok());
    let beside = exe
        .as_deref()
        .and_then(Path::parent)
        .into_iter()
        .flat_map(|d| {
            // Test binaries live one level deeper (target/<profile>/deps).
            [Some(d.join(NAME)), d.parent().map(|p| p.join(NAME))]
        });
    beside
        .flatten()
        .find(|p| is_executable(p))
        .or_else(|| find_program(NAME, &["/usr/local/bin", "/usr/libexec/clearbox"]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_major() {
        assert_eq!(
            parse_qemu_major("QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2)\nCopyright"),
            Some(10)
        );
        assert_eq!(
            parse_qemu_major("QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7)"),
            Some(7)
        );
        assert_eq!(parse_qemu_major("qemu-system-x86_64: bad option"), None);
        assert_eq!(parse_qemu_major(""), None);
    }
}
