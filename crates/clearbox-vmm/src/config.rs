//! VM configuration.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::accel::AccelMode;
use crate::jail::JailOptions;

/// Default guest kernel (built by scripts/build-guest-kernel.sh).
pub const DEFAULT_KERNEL: &str = "/usr/share/clearbox/vmlinux";
/// Default initramfs holding the agent (built by scripts/build-initramfs.sh).
pub const DEFAULT_INITRAMFS: &str = "/usr/share/clearbox/initramfs.img";
/// Port the agent listens on inside the guest.
pub const AGENT_PORT: u32 = 1024;

/// The hypervisor backend. Closed on purpose: a built-in VMM joins as a new
/// variant, and the driver matches on it exhaustively.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Hypervisor {
    Qemu(QemuOptions),
}

impl Default for Hypervisor {
    fn default() -> Self {
        Hypervisor::Qemu(QemuOptions::default())
    }
}

/// QEMU specifics.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QemuOptions {
    /// `qemu-system-x86_64` path; searched on PATH when `None`.
    pub binary: Option<PathBuf>,
    /// Run QEMU under its seccomp sandbox (`-sandbox on,...`).
    pub sandbox: bool,
    /// TCG translation-cache size; smaller means less host memory, but a full cache is
    /// flushed whole and everything is translated again. 16 MiB boots as fast as 32
    /// (bench/vm-boot.sh), but boot plus one container create fill 16 MiB several times
    /// over (HMP `info jit`: 7 flushes for three creates in one VM): a create in a warm VM
    /// took 650-750 ms with 16 MiB and 135-170 ms with 32 or 64, and `clearbox run` from a
    /// template 1.16-1.39 s vs 0.84-0.92 s, for ~13 MiB more QEMU PSS per VM
    /// (docs/BENCHMARKS.md, "TCG translation cache"). 32 keeps the speed with half the
    /// worst-case memory of 64.
    pub tcg_tb_size_mib: Option<u32>,
}

impl Default for QemuOptions {
    fn default() -> Self {
        QemuOptions {
            binary: None,
            sandbox: true,
            tcg_tb_size_mib: Some(32),
        }
    }
}

/// How the host reaches the agent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VsockMode {
    /// Kernel vhost-vsock when `/dev/vhost-vsock` exists, else vhost-user.
    #[default]
    Auto,
    /// Kernel vhost-vsock (`/dev/vhost-vsock`), host connects with AF_VSOCK.
    Kernel,
    /// `vhost-device-vsock` daemon in hybrid mode, host connects to a Unix socket.
    VhostUser,
}

/// Which device carries the agent channel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentChannel {
    /// virtio-serial when `clearbox-vmux` is installed, else vsock.
    #[default]
    Auto,
    /// A virtio-serial port served by `clearbox-vmux` (migrates: VM templates need it).
    Serial,
    /// virtio-vsock ([`VsockMode`]).
    Vsock,
}

/// A host directory shared into the guest with virtio-fs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsShare {
    /// virtio-fs tag the guest mounts (`mount -t virtiofs TAG /dir`), ≤ 36 bytes.
    pub tag: String,
    pub host_dir: PathBuf,
    /// Enforced on the host: the guest cannot write whatever it mounts.
    pub read_only: bool,
}

/// A virtio-net NIC backed by a tap the caller opened (in the network namespace QEMU will run
/// in). The fd is passed to QEMU at the same number (`-netdev tap,fd=N`); the caller keeps it
/// open until [`crate::Vm::start`] returns and may close its copy then.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetDevice {
    /// Open tap queue in the starting process; close-on-exec there (only QEMU inherits it).
    pub fd: i32,
    /// Guest MAC, `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// Advertised to the guest (`host_mtu`); 0 leaves QEMU's default.
    pub mtu: u32,
}

/// Everything needed to start one VM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmConfig {
    pub hypervisor: Hypervisor,
    pub vcpus: u32,
    pub memory_mib: u32,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// Appended to the built-in kernel command line.
    pub cmdline_extra: Vec<String>,
    pub accel: AccelMode,
    pub vsock: VsockMode,
    /// The agent channel's device.
    #[serde(default)]
    pub channel: AgentChannel,
    pub shares: Vec<FsShare>,
    /// NICs, in guest order (eth0, eth1, …).
    #[serde(default)]
    pub net: Vec<NetDevice>,
    /// Private directory for sockets, logs and the pid record. Created if
    /// missing (mode 0700); everything the driver puts there is removed on
    /// shutdown, and the directory too when it is then empty.
    pub run_dir: PathBuf,
    /// Guest serial console; `run_dir/console.log` (removed with the VM) when
    /// `None`. A path outside `run_dir` is kept.
    pub serial_log: Option<PathBuf>,
    /// Helper processes get SIGKILL when the thread that started them exits
    /// (PR_SET_PDEATHSIG: it follows the starting *thread*, so start VMs from
    /// a thread that lives as long as they should, not a short-lived worker). Turn off for a VM that must outlive its starter
    /// (then they run in their own session and a later process tears them down
    /// with [`crate::VmHandle`]).
    pub die_with_parent: bool,
    /// Bound on waiting for helper daemons to create their sockets.
    pub helper_timeout: Duration,
    /// Restore the VM from a template of its inputs where the host supports it (see
    /// `template.rs`); `None` boots cold.
    #[serde(default)]
    pub template: Option<crate::template::TemplateOptions>,
    /// Run QEMU and the vsock backend as a leased unprivileged uid in a jail, and virtiofsd
    /// with a reduced capability set (see `jail/`). `None` runs them as the caller. On by
    /// default when the caller is root.
    pub jail: Option<JailOptions>,
}

impl VmConfig {
    /// Defaults: 1 vCPU, 256 MiB, auto accelerator and vsock, no shares.
    pub fn new(
        kernel: impl Into<PathBuf>,
        initrd: impl Into<PathBuf>,
        run_dir: impl Into<PathBuf>,
    ) -> Self {
        VmConfig {
            hypervisor: Hypervisor::default(),
            vcpus: 1,
            memory_mib: 256,
            kernel: kernel.into(),
            initrd: initrd.into(),
            cmdline_extra: Vec::new(),
            accel: AccelMode::Auto,
            vsock: VsockMode::Auto,
            channel: AgentChannel::Auto,
            shares: Vec::new(),
            net: Vec::new(),
            run_dir: run_dir.into(),
            serial_log: None,
            die_with_parent: true,
            helper_timeout: Duration::from_secs(5),
            template: None,
            // SAFETY: geteuid has no preconditions. Only root can give processes another uid.
            jail: (unsafe { libc::geteuid() } == 0).then(JailOptions::default),
        }
    }

    /// Rejects values QEMU would choke on later, with a message naming the field.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |m: String| Err(crate::Error::InvalidConfig(m));
        if self.vcpus == 0 || self.vcpus > 255 {
            return bad(format!("vcpus must be 1..=255, not {}", self.vcpus));
        }
        if self.memory_mib < 32 {
            return bad(format!(
                "memory_mib must be at least 32, not {}",
                self.memory_mib
            ));
        }
        // Longest socket path the driver makes below run_dir (a jail puts the vsock backend's
        // sockets in sock/, virtiofsd's in fs/).
        let longest = self.run_dir.as_os_str().len() + "/sock/vsock.sock_1024".len();
        if longest >= 108 {
            return bad(format!(
                "run_dir {} is too long for Unix socket paths (max ~90 bytes)",
                self.run_dir.display()
            ));
        }
        let mut tags = std::collections::HashSet::new();
        for share in &self.shares {
            let t = &share.tag;
            if t.is_empty() || t.len() > 36 {
                return bad(format!("virtio-fs tag {t:?} must be 1..=36 bytes"));
            }
            if t.chars()
                .any(|c| c.is_whitespace() || c == ',' || c == '=' || c.is_control())
            {
                return bad(format!("virtio-fs tag {t:?} has whitespace, ',' or '='"));
            }
            if !tags.insert(t) {
                return bad(format!("virtio-fs tag {t:?} used twice"));
            }
            if !share.host_dir.is_dir() {
                return bad(format!(
                    "share {t}: {} is not a directory",
                    share.host_dir.display()
                ));
            }
        }
        for n in &self.net {
            if n.fd < 3 {
                return bad(format!("NIC fd {} is not a tap fd", n.fd));
            }
            let hex = n.mac.split(':').collect::<Vec<_>>();
            if hex.len() != 6
                || hex
                    .iter()
                    .any(|b| b.len() != 2 || !b.bytes().all(|c| c.is_ascii_hexdigit()))
            {
                return bad(format!("NIC MAC {:?} is not aa:bb:cc:dd:ee:ff", n.mac));
            }
            if n.mtu != 0 && !(68..=65535).contains(&n.mtu) {
                return bad(format!("NIC MTU {} is out of range", n.mtu));
            }
        }
        if let Some(j) = &self.jail {
            j.validate()?;
        }
        for word in &self.cmdline_extra {
            if word.contains('\n') {
                return bad(format!("kernel cmdline word {word:?} has a newline"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> VmConfig {
        VmConfig::new("/k", "/i", "/run/cb/x")
    }

    #[test]
    fn validate_rejects_bad_values() {
        assert!(cfg().validate().is_ok());
        let mut c = cfg();
        c.vcpus = 0;
        assert!(c.validate().is_err());
        let mut c = cfg();
        c.memory_mib = 8;
        assert!(c.validate().is_err());
        let mut c = cfg();
        c.run_dir = PathBuf::from(format!("/{}", "x".repeat(100)));
        assert!(c.validate().is_err());
        let mut c = cfg();
        c.shares.push(FsShare {
            tag: "a,b".into(),
            host_dir: "/".into(),
            read_only: true,
        });
        assert!(c.validate().unwrap_err().to_string().contains("a,b"));
        let mut c = cfg();
        let share = FsShare {
            tag: "root".into(),
            host_dir: "/".into(),
            read_only: true,
        };
        c.shares = vec![share.clone(), share];
        assert!(c.validate().unwrap_err().to_string().contains("twice"));
        let mut c = cfg();
        c.net.push(NetDevice {
            fd: 7,
            mac: "0a:58:0a:58:00:zz".into(),
            mtu: 1500,
        });
        assert!(c.validate().unwrap_err().to_string().contains("MAC"));
        let mut c = cfg();
        c.shares.push(FsShare {
            tag: "x".into(),
            host_dir: "/nonexistent-dir-xyz".into(),
            read_only: false,
        });
        assert!(c.validate().is_err());
    }
}
