//! The steps of a VM's start after its run directory is owned (see `Vm::start_mode`): the agent
//! channel's backend, the virtio-fs daemons, their sockets, then QEMU.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::templated::TemplateFiles;
use super::{keep_fds, pick_cid, qemu_jail, Mode, Vm, VMUX_ROLE, VSOCK_ROLE};
use crate::binaries;
use crate::config::{AgentChannel, QemuOptions, VmConfig, VsockMode};
use crate::error::{Error, Result};
use crate::jail::{self, Bind, Limits};
use crate::proc::SpawnOpts;
use crate::qemu::{self, QemuPlan, VsockDevice};
use crate::vsock::AgentTransport;

/// What carries the agent channel, and the program that serves its host side.
pub(super) enum ChannelProgram {
    /// One virtio-serial port multiplexed by `clearbox-vmux` (migrates: templates need it).
    Serial(PathBuf),
    /// vhost-user-vsock served by `vhost-device-vsock`.
    VhostUser(PathBuf),
    /// The kernel's vhost-vsock: no helper.
    Kernel,
}

impl ChannelProgram {
    pub(super) fn find(config: &VmConfig) -> Result<ChannelProgram> {
        let serial = match config.channel {
            AgentChannel::Serial => {
                Some(binaries::vmux().ok_or(Error::MissingBinary("clearbox-vmux"))?)
            }
            // The serial channel is what templates need; until they are on by default the
            // proven vsock channel stays the default for cold boots.
            AgentChannel::Auto if config.template.is_some() => binaries::vmux(),
            AgentChannel::Auto | AgentChannel::Vsock => None,
        };
        if let Some(bin) = serial {
            return Ok(ChannelProgram::Serial(bin));
        }
        let vsock = match config.vsock {
            VsockMode::Auto if Path::new("/dev/vhost-vsock").exists() => VsockMode::Kernel,
            VsockMode::Auto => VsockMode::VhostUser,
            m => m,
        };
        Ok(match vsock {
            VsockMode::VhostUser => ChannelProgram::VhostUser(
                binaries::vhost_device_vsock().ok_or(Error::MissingBinary("vhost-device-vsock"))?,
            ),
            _ => ChannelProgram::Kernel,
        })
    }
}

/// What the helper steps hand on to the QEMU step.
pub(super) struct Boot {
    /// Each helper's index and the socket it creates, which QEMU connects to.
    sockets: Vec<(usize, PathBuf)>,
    /// The kernel command line's additions (the caller's, the channel's, the shares').
    pub(super) cmdline_extra: Vec<String>,
}

impl Boot {
    pub(super) fn new(config: &VmConfig) -> Boot {
        Boot {
            sockets: Vec::new(),
            cmdline_extra: config.cmdline_extra.clone(),
        }
    }
}

/// The kernel command line word that names the VM's virtio-fs tags: the agent mounts them as
/// it starts, so a template is saved with them mounted (`clearbox_protocol::guest::SHARES_PARAM`).
pub(super) fn shares_word(config: &VmConfig) -> Option<String> {
    clearbox_protocol::guest::shares_word(config.shares.iter().map(|s| s.tag.as_str()))
}

/// What QEMU gets from the steps before it: the kernel command line, the agent channel's device
/// and the virtio-fs shares (tag, socket).
pub(super) struct Devices {
    pub(super) cmdline: String,
    pub(super) vsock: Option<VsockDevice>,
    pub(super) fs: Vec<(String, PathBuf)>,
}

/// rlimits of the jailed helpers (QEMU's file size grows by its RAM, see `launch_qemu`).
fn helper_limits() -> Limits {
    Limits {
        nofile: Some(jail::NOFILE),
        nproc: Some(jail::NPROC),
        fsize: Some(jail::FSIZE),
    }
}

impl Vm {
    /// Starts the agent channel's backend (none for kernel vhost-vsock) and records how the
    /// host reaches the agent.
    pub(super) fn attach_agent_channel(
        &mut self,
        channel: ChannelProgram,
        opts: &SpawnOpts,
        boot: &mut Boot,
    ) -> Result<Option<VsockDevice>> {
        let (bin, serial) = match &channel {
            ChannelProgram::Serial(bin) => (bin, true),
            ChannelProgram::VhostUser(bin) => (bin, false),
            ChannelProgram::Kernel => {
                let cid = pick_cid();
                self.state.transport = Some(AgentTransport::VhostVsock { cid });
                return Ok(Some(VsockDevice::Kernel { cid }));
            }
        };
        let (role, name, syscalls, socket_name) = if serial {
            (
                VMUX_ROLE,
                "vmux",
                crate::seccomp::VMUX_SYSCALLS,
                "serial.sock",
            )
        } else {
            (
                VSOCK_ROLE,
                "vsock",
                crate::seccomp::VSOCK_SYSCALLS,
                "vhost-vsock.sock",
            )
        };
        let dir = self.jail.as_ref().map_or(&self.run_dir, |j| &j.sock_dir);
        let socket = dir.join(socket_name);
        let uds = dir.join("vsock.sock");
        self.track_files([socket.clone(), uds.clone()]);
        let cmd = if serial {
            let mut cmd = Command::new(bin);
            cmd.arg("--listen").arg(&uds).arg("--serial").arg(&socket);
            cmd
        } else {
            crate::helpers::vhost_device_vsock(bin, &socket, &uds)
        };
        let mut o = opts.clone();
        if let Some(j) = &self.jail {
            let mut binds = jail::base_binds(bin);
            binds.push(Bind::rw(&j.sock_dir));
            let log_only = std::env::var_os(crate::seccomp::SECCOMP_LOG_ENV).is_some();
            if log_only {
                tracing::warn!("{role}'s seccomp filter only logs");
            }
            let filter = crate::seccomp::allow_list_filter(syscalls, log_only)?;
            let plan = j.unprivileged(name, &binds, &[], helper_limits(), Some(filter))?;
            o.jail = Some(std::sync::Arc::new(plan));
        }
        let idx = self.spawn_helper(role, cmd, &o, false)?;
        boot.sockets.push((idx, socket.clone()));
        self.state.transport = Some(AgentTransport::HybridVsock { uds });
        Ok(Some(if serial {
            boot.cmdline_extra.push("clearbox.channel=serial".into());
            VsockDevice::Serial { socket }
        } else {
            VsockDevice::VhostUser { socket }
        }))
    }

    /// Starts one virtiofsd per share; returns each share's tag and socket, in order.
    pub(super) fn attach_shares(
        &mut self,
        config: &VmConfig,
        bin: &Path,
        flavor: binaries::VirtiofsdFlavor,
        opts: &SpawnOpts,
        boot: &mut Boot,
    ) -> Result<Vec<(String, PathBuf)>> {
        let mut fs = Vec::new();
        for (i, share) in config.shares.iter().enumerate() {
            let dir = self.jail.as_ref().map_or(&self.run_dir, |j| &j.fs_dir);
            let socket = dir.join(format!("fs-{i}.sock"));
            self.track_files([socket.clone()]);
            // The Rust virtiofsd takes the listening socket made here (`--fd`); the C one
            // binds it itself, and QEMU waits for its file (`wait_for_sockets`).
            let listener = match flavor {
                binaries::VirtiofsdFlavor::Rust => Some(self.listen_for_qemu(&socket)?),
                binaries::VirtiofsdFlavor::Legacy => None,
            };
            let at = match &listener {
                Some(l) => crate::helpers::FsEndpoint::Fd(l.as_raw_fd()),
                None => crate::helpers::FsEndpoint::Path(&socket),
            };
            let mut cmd =
                crate::helpers::virtiofsd(bin, flavor, at, &share.host_dir, share.read_only);
            if let Some(l) = &listener {
                keep_fds(&mut cmd, vec![l.as_raw_fd()]);
            }
            let mut o = opts.clone();
            if share.read_only && flavor == binaries::VirtiofsdFlavor::Legacy {
                o.readonly_bind = Some(share.host_dir.clone());
            }
            if self.jail.is_some() {
                let no_growth = Limits {
                    nofile: None,
                    nproc: None,
                    fsize: None,
                };
                let plan = jail::privileged_helper(jail::VIRTIOFSD_CAPS, no_growth);
                o.jail = Some(std::sync::Arc::new(plan));
            }
            let idx = self.spawn_helper(&format!("virtiofsd-{i}"), cmd, &o, true)?;
            // virtiofsd holds its copy of a listener made here: nothing to wait for.
            if listener.is_none() {
                boot.sockets.push((idx, socket.clone()));
            }
            fs.push((share.tag.clone(), socket));
        }
        boot.cmdline_extra.extend(shares_word(config));
        Ok(fs)
    }

    /// A vhost-user socket listening at `socket` (close-on-exec here), given to the jail's
    /// uid, which QEMU connects as. Bound and listening before QEMU starts, so QEMU's
    /// connection waits in its backlog until the daemon that inherits it accepts.
    fn listen_for_qemu(&self, socket: &Path) -> Result<std::os::unix::net::UnixListener> {
        // One a crashed VM of this run directory left (the directory is root's).
        let _ = std::fs::remove_file(socket);
        let l = std::os::unix::net::UnixListener::bind(socket).map_err(|e| Error::Path {
            op: "listen on",
            path: socket.to_path_buf(),
            source: e,
        })?;
        if let Some(j) = &self.jail {
            j.give(socket)?;
        }
        Ok(l)
    }

    /// Waits until every helper's socket exists, and gives each to the jail's uid (QEMU
    /// connects to it as that uid).
    pub(super) fn wait_for_sockets(
        &mut self,
        boot: &Boot,
        timeout: std::time::Duration,
    ) -> Result<()> {
        for (idx, socket) in &boot.sockets {
            self.wait_for_socket(*idx, socket, timeout)?;
            if let Some(j) = &self.jail {
                if std::fs::symlink_metadata(socket)
                    .is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) != j.ids().uid)
                {
                    j.give(socket)?;
                }
            }
        }
        Ok(())
    }

    /// Starts QEMU (jailed, with the template's files for a build or a restore) and, for a
    /// restore, loads the template's state and lets the guest run.
    pub(super) fn launch_qemu(
        &mut self,
        config: &VmConfig,
        (qopts, qemu_bin): (&QemuOptions, &Path),
        mode: &Mode,
        devices: Devices,
        opts: &SpawnOpts,
    ) -> Result<()> {
        let Devices { cmdline, vsock, fs } = devices;
        let run_dir = self.run_dir.clone();
        let mut net = config.net.clone();
        let TemplateFiles {
            mem_file,
            state_file,
            placeholder_nics,
            mem_copy,
        } = self.template_files(mode, &run_dir, &mut net)?;
        let plan = QemuPlan {
            accel: self.state.accel,
            vcpus: config.vcpus,
            memory_mib: config.memory_mib,
            kernel: config.kernel.clone(),
            initrd: config.initrd.clone(),
            cmdline,
            serial_log: self.console_log.clone(),
            vsock,
            fs,
            sandbox: qopts.sandbox,
            tcg_tb_size_mib: qopts.tcg_tb_size_mib,
            net,
            vhost_net: Path::new("/dev/vhost-net").exists(),
            mem_file: mem_file.clone(),
            qmp: self.qmp.clone(),
            incoming: matches!(mode, Mode::Restore { .. }),
            placeholder_nics,
        };
        let mut o = opts.clone();
        if let Some(j) = &self.jail {
            // Guest RAM is a memfd QEMU sizes with ftruncate, which RLIMIT_FSIZE also bounds:
            // QEMU's file limit is its RAM plus the usual allowance for logs.
            let ram = u64::from(config.memory_mib) << 20;
            let limits = helper_limits();
            let limits = Limits {
                fsize: limits.fsize.map(|f| f.saturating_add(ram)),
                ..limits
            };
            let mut extra = Vec::new();
            if let Some(m) = &mem_file {
                extra.push(Bind::rw(m));
            }
            if let Some(st) = &state_file {
                extra.push(match mode {
                    Mode::Restore { .. } => Bind::ro(st),
                    _ => Bind::rw(st),
                });
            }
            if let Some(q) = self.qmp.as_ref().and_then(|q| q.parent()) {
                extra.push(Bind::rw(q));
            }
            o.jail = Some(std::sync::Arc::new(qemu_jail(
                j, &plan, qemu_bin, limits, extra,
            )?));
        }
        let mut cmd = Command::new(qemu_bin);
        cmd.args(qemu::args(&plan));
        keep_fds(&mut cmd, config.net.iter().map(|n| n.fd).collect());
        tracing::debug!(?cmd, "starting QEMU");
        let log = self.open_log("qemu.log")?;
        let p = self.spawn_proc("qemu", cmd, log, &o, false)?;
        self.qemu = Some(p);
        self.state.save(&run_dir)?;
        if let (Mode::Restore { .. }, Some(st)) = (mode, &state_file) {
            self.load_state(st, mem_copy)?;
        }
        Ok(())
    }
}
