//! A running VM owned by this process.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use crate::accel::{host_tsc_khz, Accel, KvmFacts};
use crate::binaries;
use crate::config::{Hypervisor, VmConfig};
use crate::error::{Error, Result};
use crate::handle::{VmHandle, VmState, STATE_FILE};
use crate::jail::{self, Bind, Jail, Limits};
use crate::proc::{self, SpawnOpts};
use crate::qemu::{self, QemuPlan, VsockDevice};
use crate::qmp::Qmp;
use crate::vsock::AgentTransport;

mod attach;
mod procs;
mod templated;
use procs::Proc;

pub(crate) const VSOCK_ROLE: &str = "vhost-device-vsock";
pub(crate) const VMUX_ROLE: &str = "clearbox-vmux";

/// A VM started by [`Vm::start`]. Dropping it kills the VM and removes its
/// files; [`Vm::into_handle`] lets it outlive this value instead.
pub struct Vm {
    run_dir: PathBuf,
    state: VmState,
    qemu: Option<Proc>,
    helpers: Vec<Proc>,
    exit: Option<ExitStatus>,
    console_log: PathBuf,
    qemu_log: PathBuf,
    /// Tail of console + QEMU log kept when files are removed.
    last_words: String,
    torn_down: bool,
    /// The leased uid and jail directories (holds the lease while the VM lives).
    jail: Option<Jail>,
    /// QEMU's monitor socket (template builds and restores only).
    qmp: Option<PathBuf>,
}

impl Vm {
    /// Starts the helper daemons, waits for their sockets, then starts QEMU.
    /// Returns as soon as QEMU is spawned; [`Vm::connect_agent`] waits for
    /// the guest. With [`VmConfig::template`] set, the VM is restored from its template
    /// (built first when missing) instead of booted. A host or VM that cannot use templates,
    /// or a failed restore, is an error when the user asked for templates explicitly
    /// ([`TemplateOptions::required`]) and a cold boot otherwise.
    pub fn start(mut config: VmConfig) -> Result<Vm> {
        if let Some(opts) = config.template.take() {
            // A cold boot after all keeps the default agent channel (vsock).
            let mut c = config.clone();
            c.template = Some(opts.clone());
            match Self::from_template(&c, &opts) {
                Ok(Ok(vm)) => return Ok(vm),
                Ok(Err(why)) if opts.required => return Err(Error::Template(why)),
                Ok(Err(why)) => tracing::info!(%why, "no VM template; booting cold"),
                Err(e) if opts.required => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %clearbox_util::error::chain(&e), "VM template unusable; booting cold")
                }
            }
        }
        Self::start_mode(config, Mode::Cold)
    }

    /// Boot recipe, one step each: find the programs, own the run directory, enter the jail,
    /// start the agent channel's backend and the virtio-fs daemons, wait for the sockets they bind
    /// themselves (the Rust virtiofsd gets its socket listening already, `--fd`),
    /// then start QEMU (and, for a restore, load the template's state). From `Vm::owned` on,
    /// an error drops `vm`, which kills what was started and removes the files.
    fn start_mode(config: VmConfig, mode: Mode) -> Result<Vm> {
        config.validate()?;
        for (what, path) in [
            ("guest kernel", &config.kernel),
            ("initramfs", &config.initrd),
        ] {
            if !path.is_file() {
                return Err(Error::MissingFile {
                    what,
                    path: path.clone(),
                });
            }
        }
        let Hypervisor::Qemu(qopts) = &config.hypervisor;
        let qemu_bin = match &qopts.binary {
            Some(p) => p.clone(),
            None => binaries::qemu().ok_or(Error::MissingBinary("qemu-system-x86_64"))?,
        };
        let (accel, why) = KvmFacts::host().select(config.accel)?;
        tracing::info!(%accel, reason = %why, "accelerator");
        // Only TCG with virtio-fs needs to know (qemu::TCG_VHOST_USER_FS_GUARD); the probe
        // runs while the helpers start. A restore does not ask: templates exist only for
        // QEMU 10+ (`template::MIN_QEMU_MAJOR`, checked when this binary, by identity, built
        // it), which gets the guard, so the answer is known (and `qemu --version` is a
        // process of ~20 ms of CPU per start).
        let restore = matches!(mode, Mode::Restore { .. });
        let version_probe = (accel == Accel::Tcg && !config.shares.is_empty() && !restore)
            .then(|| binaries::QemuVersionProbe::start(&qemu_bin))
            .flatten();
        let channel = attach::ChannelProgram::find(&config)?;
        let virtiofsd = match config.shares.is_empty() {
            true => None,
            false => Some(binaries::virtiofsd().ok_or(Error::MissingBinary("virtiofsd"))?),
        };

        let mut vm = Vm::owned(&config, accel)?;
        let opts = SpawnOpts {
            die_with_parent: config.die_with_parent,
            ..Default::default()
        };
        if let Some(o) = &config.jail {
            vm.enter_jail(o)?;
        }
        let mut boot = attach::Boot::new(&config);
        let vsock_dev = vm.attach_agent_channel(channel, &opts, &mut boot)?;
        let fs = match &virtiofsd {
            Some((bin, flavor)) => vm.attach_shares(&config, bin, *flavor, &opts, &mut boot)?,
            None => Vec::new(),
        };
        vm.state.save(&vm.run_dir.clone())?;
        vm.wait_for_sockets(&boot, config.helper_timeout)?;
        // An unknown version gets the guard too: it only costs time.
        let fs_guard = !fs.is_empty()
            && (restore
                || version_probe
                    .and_then(binaries::QemuVersionProbe::major)
                    .is_none_or(qemu::needs_vhost_user_fs_guard));
        let devices = attach::Devices {
            cmdline: qemu::kernel_cmdline(accel, host_tsc_khz(), fs_guard, &boot.cmdline_extra),
            vsock: vsock_dev,
            fs,
        };
        if let Err(e) = vm.launch_qemu(&config, (qopts, &qemu_bin), &mode, devices, &opts) {
            return Err(vm.blame_failed_helper(e));
        }
        Ok(vm)
    }

    /// This process's VM in `config.run_dir` (created or taken over), nothing started yet.
    fn owned(config: &VmConfig, accel: Accel) -> Result<Vm> {
        let run_dir = config.run_dir.clone();
        let created = prepare_run_dir(&run_dir)?;
        let console_log = config
            .serial_log
            .clone()
            .unwrap_or_else(|| run_dir.join("console.log"));
        let mut vm = Vm {
            qemu_log: run_dir.join("qemu.log"),
            run_dir: run_dir.clone(),
            state: VmState::new(accel, created),
            qemu: None,
            helpers: Vec::new(),
            exit: None,
            console_log: console_log.clone(),
            last_words: String::new(),
            torn_down: false,
            jail: None,
            qmp: None,
        };
        if console_log.starts_with(&run_dir) {
            vm.state.files.push(console_log);
        }
        Ok(vm)
    }

    /// Leases the VM's uid and builds its jail directories (recorded at once, so that any
    /// later process can tear them down).
    fn enter_jail(&mut self, o: &crate::jail::JailOptions) -> Result<()> {
        let j = Jail::new(o, &self.run_dir)?;
        self.state.jail = Some(j.ids().clone());
        self.state.dirs = vec![j.dir.clone(), j.sock_dir.clone(), j.fs_dir.clone()];
        self.jail = Some(j);
        self.state.save(&self.run_dir)
    }

    /// A QMP connection to this VM's QEMU (template builds and restores).
    fn monitor(&self) -> Result<Qmp> {
        let path = self
            .qmp
            .as_ref()
            .ok_or_else(|| Error::InvalidConfig("VM has no monitor".into()))?;
        let dead = self
            .exit_fd()
            .ok_or_else(|| Error::InvalidConfig("QEMU is not running".into()))?;
        Qmp::connect(path, Duration::from_secs(10), dead).map_err(|e| self.explain(e))
    }

    /// Adds QEMU's last words to an error from its monitor.
    fn explain(&self, e: Error) -> Error {
        match e {
            Error::Qmp(m) => Error::Qmp(format!("{m}; qemu: {}", proc::tail(&self.qemu_log, 800))),
            other => other,
        }
    }

    fn track_files(&mut self, files: impl IntoIterator<Item = PathBuf>) {
        self.state.files.extend(files);
    }

    fn open_log(&mut self, name: &str) -> Result<File> {
        let path = self.run_dir.join(name);
        self.state.files.push(path.clone());
        File::create(&path).map_err(|e| Error::Path {
            op: "create",
            path,
            source: e,
        })
    }

    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// The uid/gid QEMU and the vsock backend run as, when jailed.
    pub fn jail_ids(&self) -> Option<&crate::jail::JailIds> {
        self.state.jail.as_ref()
    }

    pub fn accel(&self) -> Accel {
        self.state.accel
    }

    /// QEMU's pid.
    pub fn pid(&self) -> Option<u32> {
        self.qemu.as_ref().map(|q| q.child.id())
    }

    /// Pids of QEMU and every helper daemon, with their roles.
    pub fn processes(&self) -> Vec<(String, u32)> {
        self.qemu
            .iter()
            .chain(self.helpers.iter())
            .map(|p| (p.role.clone(), p.child.id()))
            .collect()
    }

    /// The agent channel; a different process can use it too.
    pub fn transport(&self) -> Option<&AgentTransport> {
        self.state.transport.as_ref()
    }

    /// Readable once QEMU has exited: for the caller's poll/epoll loop.
    pub fn exit_fd(&self) -> Option<BorrowedFd<'_>> {
        self.qemu.as_ref().map(|q| q.pidfd.as_fd())
    }

    /// The guest serial console log (removed with the VM unless it was
    /// configured outside run_dir).
    pub fn console_log(&self) -> &Path {
        &self.console_log
    }

    /// Console and QEMU output tails, kept after the files are gone.
    pub fn last_words(&self) -> String {
        if self.torn_down {
            self.last_words.clone()
        } else {
            self.collect_last_words()
        }
    }

    fn collect_last_words(&self) -> String {
        let console = proc::tail(&self.console_log, 1500);
        let qemu = proc::tail(&self.qemu_log, 1000);
        match (console.is_empty(), qemu.is_empty()) {
            (_, true) => console,
            (true, false) => format!("qemu: {qemu}"),
            (false, false) => format!("{console}\nqemu: {qemu}"),
        }
    }

    /// Connects to guest vsock `port`, retrying with a short backoff until
    /// the agent listens or `timeout` passes; fails at once if QEMU exits.
    pub fn connect_agent(&self, port: u32, timeout: Duration) -> Result<OwnedFd> {
        let transport = self
            .transport()
            .ok_or_else(|| Error::InvalidConfig("VM has no agent channel".into()))?;
        let dead = self.exit_fd();
        let started = Instant::now();
        let gate = match (
            transport,
            self.helpers.iter().find(|h| h.role == VSOCK_ROLE),
        ) {
            (AgentTransport::HybridVsock { .. }, Some(h)) => {
                crate::vsock::wait_hybrid_backend_ready(h.child.id() as i32, timeout, dead)
            }
            _ => Ok(()),
        };
        let left = timeout.saturating_sub(started.elapsed());
        match gate.and_then(|()| transport.connect_until(port, left, dead)) {
            Err(Error::VmExited { .. }) => Err(self.blame_failed_helper(Error::VmExited {
                status: "exited while connecting to the agent".into(),
                console_tail: self.collect_last_words(),
            })),
            Err(Error::Timeout(..)) if self.vsock_worker_died() => Err(Error::Handshake {
                port,
                reason: "vhost-device-vsock's vring worker thread died: the device is dead".into(),
            }),
            other => other,
        }
    }

    /// vhost-user-backend runs the device in a thread named `vring_worker`;
    /// when an event handler fails, that thread ends and the device never
    /// answers again while the daemon lives on.
    fn vsock_worker_died(&self) -> bool {
        let Some(h) = self.helpers.iter().find(|h| h.role == VSOCK_ROLE) else {
            return false;
        };
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", h.child.id())) else {
            return false;
        };
        !tasks.flatten().any(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "vring_worker")
        })
    }

    /// Non-blocking: `Some` once QEMU has exited (helpers are then torn down
    /// and files removed).
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if let Some(s) = self.exit {
            return Ok(Some(s));
        }
        let Some(q) = self.qemu.as_mut() else {
            return Ok(None);
        };
        match q
            .child
            .try_wait()
            .map_err(|e| Error::Io("wait for QEMU", e))?
        {
            Some(status) => {
                self.exit = Some(status);
                self.teardown();
                Ok(Some(status))
            }
            None => Ok(None),
        }
    }

    /// Waits up to `timeout` (`None`: forever) for QEMU to exit.
    pub fn wait_timeout(&mut self, timeout: Option<Duration>) -> Result<Option<ExitStatus>> {
        if let Some(q) = &self.qemu {
            if self.exit.is_none() {
                proc::wait_readable(q.pidfd.as_fd(), timeout)
                    .map_err(|e| Error::Io("poll QEMU", e))?;
            }
        }
        self.try_wait()
    }

    /// Blocks until QEMU exits.
    pub fn wait(&mut self) -> Result<ExitStatus> {
        loop {
            if let Some(s) = self.wait_timeout(None)? {
                return Ok(s);
            }
        }
    }

    /// After the caller asked the guest to power off: waits up to `grace`
    /// for QEMU to exit, then SIGKILLs it. Everything is cleaned up.
    pub fn shutdown(mut self, grace: Duration) -> Result<ExitStatus> {
        if let Some(s) = self.wait_timeout(Some(grace))? {
            return Ok(s);
        }
        tracing::warn!(?grace, "VM did not power off in time; killing it");
        self.kill_now()
    }

    /// SIGKILLs QEMU and its helpers and removes everything.
    pub fn kill(mut self) -> Result<ExitStatus> {
        self.kill_now()
    }

    fn kill_now(&mut self) -> Result<ExitStatus> {
        if let Some(q) = self.qemu.as_mut() {
            if self.exit.is_none() {
                let _ = q.child.kill();
            }
        }
        self.wait()
    }

    /// Lets the VM outlive this value (and this process, if it was started
    /// with `die_with_parent: false`): tear it down later with the returned
    /// handle or [`VmHandle::load`].
    pub fn into_handle(mut self) -> VmHandle {
        self.torn_down = true;
        VmHandle::from_state(self.run_dir.clone(), self.state.clone())
    }

    /// Kills whatever still runs, reaps it, removes the files. Idempotent.
    fn teardown(&mut self) {
        if self.torn_down {
            return;
        }
        if let Some(q) = self.qemu.as_mut() {
            q.reap_or_kill(Duration::ZERO);
        }
        for h in &mut self.helpers {
            h.reap_or_kill(Duration::from_millis(200));
        }
        self.last_words = self.collect_last_words();
        self.state.remove_files(&self.run_dir);
        self.torn_down = true;
    }
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vm")
            .field("run_dir", &self.run_dir)
            .field("accel", &self.state.accel)
            .field("processes", &self.processes())
            .field("exit", &self.exit)
            .finish_non_exhaustive()
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if !self.torn_down {
            if let Some(q) = self.qemu.as_mut() {
                let _ = q.child.kill();
            }
            self.teardown();
        }
    }
}

/// QEMU's jail: its program, kernel, initrd, console log and the sockets it connects to;
/// `/dev/kvm` and `/dev/vhost-vsock` (and their groups) when it uses them.
fn qemu_jail(
    j: &Jail,
    plan: &QemuPlan,
    bin: &Path,
    limits: Limits,
    extra: Vec<Bind>,
) -> Result<jail::ExecJail> {
    let mut binds = jail::base_binds(bin);
    binds.extend(extra);
    binds.push(Bind::ro(&plan.kernel));
    binds.push(Bind::ro(&plan.initrd));
    // QEMU opens (and truncates) it as the jail uid.
    File::create(&plan.serial_log).map_err(|e| Error::Path {
        op: "create",
        path: plan.serial_log.clone(),
        source: e,
    })?;
    j.give(&plan.serial_log)?;
    binds.push(Bind::rw(&plan.serial_log));
    if let Some(VsockDevice::VhostUser { socket } | VsockDevice::Serial { socket }) = &plan.vsock {
        binds.push(Bind::rw(socket));
    }
    for (_, socket) in &plan.fs {
        binds.push(Bind::rw(socket));
    }
    // Devices it opens, and their groups (kvm) so that its uid may open them.
    let mut devices = Vec::new();
    if plan.accel == Accel::Kvm {
        devices.push("/dev/kvm");
    }
    if let Some(VsockDevice::Kernel { .. }) = &plan.vsock {
        devices.push("/dev/vhost-vsock");
    }
    let mut groups = Vec::new();
    for d in devices {
        binds.push(Bind::rw(d));
        groups.extend(jail::device_group(Path::new(d)));
    }
    j.unprivileged("qemu", &binds, &groups, limits, None)
}

/// Creates run_dir (0700) if needed; refuses one that holds a live VM and
/// cleans a stale record. Returns whether it created the directory.
fn prepare_run_dir(run_dir: &Path) -> Result<bool> {
    use std::os::unix::fs::DirBuilderExt;
    if run_dir.join(STATE_FILE).exists() {
        let old = VmHandle::load(run_dir)?;
        if old.is_running() {
            return Err(Error::AlreadyRunning(run_dir.to_path_buf()));
        }
        tracing::info!(run_dir = %run_dir.display(), "removing stale VM record");
        old.kill_and_cleanup()?;
    }
    if run_dir.is_dir() {
        return Ok(false);
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(run_dir)
        .map_err(|e| Error::Path {
            op: "create run dir",
            path: run_dir.to_path_buf(),
            source: e,
        })?;
    Ok(true)
}

/// Lets the child of `cmd` (only) inherit `fds` at their numbers (QEMU its taps, virtiofsd its
/// listening socket): the caller opened them close-on-exec.
fn keep_fds(cmd: &mut Command, fds: Vec<i32>) {
    if fds.is_empty() {
        return;
    }
    use std::os::unix::process::CommandExt;
    // SAFETY: runs between fork and exec; fcntl is async-signal-safe and `fds` was allocated
    // before the fork.
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &fds {
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// A guest CID for kernel vhost-vsock: unique per host, so derived from the
/// pid and the clock; 0-2 are reserved.
fn pick_cid() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mixed = (std::process::id().wrapping_mul(2_654_435_761)) ^ nanos;
    3 + mixed % 0x7fff_fff0
}

/// How a VM comes up.
#[derive(Clone, Debug)]
pub(crate) enum Mode {
    Cold,
    /// Boot with RAM in `dir`'s memory file and placeholder NICs, to be saved as a template.
    Build {
        dir: PathBuf,
        nics: usize,
    },
    /// Restore from the template in `dir`.
    Restore {
        dir: PathBuf,
    },
}
