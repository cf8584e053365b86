//! The per-process host shim (`clearbox __vm-shim REQUEST READY_FD`).
//!
//! One shim stands for one guest process: the container's init (it also owns the VM) or one
//! exec'd process. Its pid is the pid `create`/`exec` report, so conmon, containerd's shim or
//! `clearbox run` wait on it like on runc's init. It relays its fds 0/1/2 to the guest process,
//! forwards the signals it receives, and ends with the process's exit code — or dies of the same
//! signal — so whoever waits on it sees what the guest process did. When the VM goes away it
//! exits with 137, as if killed.
//!
//! The shim tells the waiting `create`/`exec` "ok" or the error over the READY_FD pipe.

mod procview;
mod relay;
mod tty;
mod watch;

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clearbox_core::foreground::FORWARDED;
use clearbox_core::BackendError;
use clearbox_protocol::{AgentClient, GuestProcess, ProcessId, RootfsLocation, Stdio};
use clearbox_vmm::{Vm, VmConfig, VmHandle, AGENT_PORT};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use serde::{Deserialize, Serialize};

use crate::guest_spec::{Bind, ForGuest};
use crate::layout::{Record, START_FIFO};
use crate::net::{self, NetNs};
use crate::sizing::BOOT_TIMEOUT_SECS;
use crate::Error;

/// Exit code of a shim whose VM vanished: what a SIGKILLed process reports.
pub const VM_GONE_EXIT: i32 = 137;

/// What the parent asks of a shim; written to a 0600 file the shim reads and removes.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Request {
    pub dir: PathBuf,
    pub record: Record,
    pub terminal: bool,
    pub console_socket: Option<PathBuf>,
    pub kind: Kind,
    /// Init only: the pipe on which `create` says "go" once the create hooks ran.
    #[serde(default)]
    pub go_fd: Option<i32>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Kind {
    Init {
        vm: Box<VmConfig>,
        spec: ForGuest,
        netns: NetNs,
        cgroup: Box<crate::host_cgroup::HostCgroup>,
        /// A pod's sandbox: boots the VM, runs no container in it (see `pod.rs`).
        #[serde(default)]
        sandbox: bool,
    },
    /// An app container joining its pod's running VM.
    Member {
        spec: ForGuest,
        cgroup: Box<crate::host_cgroup::HostCgroup>,
    },
    Exec {
        exec_id: String,
        process: GuestProcess,
    },
}

/// The shim's side of the ready pipe.
struct Ready(Option<File>);

impl Ready {
    fn ok(&mut self) {
        if let Some(mut f) = self.0.take() {
            let _ = f.write_all(b"ok\n");
        }
    }

    /// Init: tells `create` the shim is in the container's network namespace, and waits until
    /// it ran the create hooks ("go"; EOF means `create` gave up).
    fn netns_and_wait(&mut self, go_fd: Option<i32>) -> Result<(), Error> {
        let Some(go_fd) = go_fd.filter(|fd| *fd >= 3) else {
            return Err(Error::Msg("shim request without a go pipe".into()));
        };
        // SAFETY: the parent passed this descriptor to us alone; we own it now.
        let go = unsafe { OwnedFd::from_raw_fd(go_fd) };
        if let Some(f) = self.0.as_mut() {
            f.write_all(b"netns\n")
                .map_err(|e| Error::io("report to create", e))?;
        }
        let mut answer = Vec::new();
        let mut go = File::from(go);
        std::io::Read::read_to_end(&mut go, &mut answer)
            .map_err(|e| Error::io("wait for the create hooks", e))?;
        if answer != b"go\n" {
            return Err(Error::Msg("create gave up (a create hook failed)".into()));
        }
        Ok(())
    }

    fn fail(&mut self, e: &Error) {
        if let Some(mut f) = self.0.take() {
            let _ = f.write_all(format!("error: {}\n", e.one_line()).as_bytes());
        }
    }
}

/// Entry point of `clearbox __vm-shim`. Returns the exit code, or does not return when the
/// guest process died of a signal (the shim then dies of it too).
pub fn main(request: &Path, ready_fd: RawFd) -> i32 {
    // SAFETY: F_GETFD only inspects the descriptor table.
    if unsafe { libc::fcntl(ready_fd, libc::F_GETFD) } < 0 || ready_fd < 3 {
        eprintln!("clearbox: __vm-shim is internal to clearbox");
        return 2;
    }
    // SAFETY: the parent passed this descriptor to us alone (it closed its copy); we own it now.
    let ready = unsafe { OwnedFd::from_raw_fd(ready_fd) };
    // A write to a peer that went away (the engine's pipes, the agent's socket when the VM
    // dies) must fail with EPIPE, not kill the shim with SIGPIPE (141): the shim's death is
    // the container's exit status. Blocked here (and in every thread started later), it is
    // reset for the processes the shim starts.
    let mut pipe = SigSet::empty();
    pipe.add(Signal::SIGPIPE);
    let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&pipe), None);
    // Nothing the caller passed (beyond stdio) may leak into QEMU or the daemons.
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags on our descriptors.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
    }
    // Before the init's shim changes its root to the container's (whose /dev may be empty).
    relay::keep_dev_null();
    let mut ready = Ready(Some(File::from(ready)));
    let req = match read_request(request) {
        Ok(r) => r,
        Err(e) => {
            ready.fail(&e);
            return 1;
        }
    };
    let code = match req.kind {
        Kind::Init {
            ref vm,
            ref spec,
            ref netns,
            ref cgroup,
            sandbox,
        } => init(
            &req,
            vm.as_ref().clone(),
            spec,
            netns,
            cgroup,
            sandbox,
            &mut ready,
        ),
        Kind::Member {
            ref spec,
            ref cgroup,
        } => member(&req, spec, cgroup, &mut ready),
        Kind::Exec {
            ref exec_id,
            ref process,
        } => exec(&req, exec_id, process, &mut ready),
    };
    match code {
        Ok(End::Code(c)) => c,
        Ok(End::Signal(s)) => die_by(s),
        Err(e) => {
            tracing::error!(error = %e.one_line(), "shim");
            ready.fail(&e);
            1
        }
    }
}

enum End {
    Code(i32),
    Signal(i32),
}

fn read_request(path: &Path) -> Result<Request, Error> {
    let bytes =
        std::fs::read(path).map_err(|e| Error::io(format!("read {}", path.display()), e))?;
    let _ = std::fs::remove_file(path);
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::Msg(format!("bad shim request {}: {e}", path.display())))
}

/// Terminal setup before anything runs: a pty for the console socket, or raw mode on a
/// caller's terminal.
fn terminal_setup(req: &Request) -> Result<Option<tty::RawMode>, Error> {
    if !req.terminal {
        return Ok(None);
    }
    match &req.console_socket {
        Some(sock) => {
            tty::console_socket(sock)?;
            Ok(None)
        }
        None => Ok(Some(tty::RawMode::stdin())),
    }
}

/// What ended a wait of the shim.
enum Wait {
    /// `start` wrote to the FIFO.
    Started,
    /// A signal that would have killed an ordinary process.
    Signal(i32),
    /// QEMU exited.
    VmGone,
}

/// Waits for `start` (when `fifo` is given), a fatal signal, or the VM's death.
fn wait_for(
    signals: &mut SignalFd,
    vm_exit: std::os::fd::BorrowedFd<'_>,
    fifo: Option<std::os::fd::BorrowedFd<'_>>,
) -> Result<Wait, Error> {
    loop {
        let mut fds = vec![
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
            PollFd::new(vm_exit, PollFlags::POLLIN),
        ];
        if let Some(f) = fifo {
            fds.push(PollFd::new(f, PollFlags::POLLIN));
        }
        match nix::poll::poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(Error::errno("poll", e)),
        }
        let ready = |i: usize| {
            fds.get(i)
                .and_then(|f| f.revents())
                .is_some_and(|r| !r.is_empty())
        };
        let (sig_ready, vm_ready, fifo_ready) = (ready(0), ready(1), ready(2));
        drop(fds);
        if vm_ready {
            return Ok(Wait::VmGone);
        }
        if sig_ready {
            if let Some(sig) = fatal_signal(signals) {
                return Ok(Wait::Signal(sig));
            }
        }
        if fifo_ready {
            if let Some(f) = fifo {
                let mut b = [0u8; 16];
                let _ = nix::unistd::read(f.as_raw_fd(), &mut b);
            }
            return Ok(Wait::Started);
        }
    }
}

/// Asks the agent to create the container: its rootfs is `rootfs` in its directory of the
/// export.
fn create_in_guest(
    agent: &AgentClient,
    record: &Record,
    spec: &ForGuest,
    terminal: bool,
) -> Result<(), Error> {
    agent.create_container(
        &record.guest_id,
        &spec.spec,
        &RootfsLocation::VirtioFs {
            tag: clearbox_protocol::guest::SHARE_TAG.into(),
            path: record.share_dir().rootfs(),
        },
        terminal,
        true,
    )?;
    Ok(())
}

/// An app container of a pod: joins the running VM of its sandbox (see `pod.rs`), creates
/// the container there, and stands for its init as the init's shim does, without owning the
/// VM.
fn member(
    req: &Request,
    spec: &ForGuest,
    cgroup: &crate::host_cgroup::HostCgroup,
    ready: &mut Ready,
) -> Result<End, Error> {
    // Before any thread exists (see `init`).
    let mut signals = block_signals()?;
    let mut raw = terminal_setup(req)?;
    crate::host_cgroup::join(cgroup)?;
    let handle = VmHandle::load(&req.record.vm_run_dir)?;
    let vm_exit = handle
        .exit_fd()
        .ok_or_else(|| Error::Msg("the pod's VM is not running".into()))?;
    let fd = handle.connect_agent(AGENT_PORT, Duration::from_secs(10))?;
    let fifo = open_fifo(&req.dir.join(START_FIFO))?;
    let single = single_threaded();
    let host_boot = procview::host_boot_time();
    let mut view = None;
    match enter_container_root(&req.record, &spec.binds) {
        Ok(()) => {
            let (uid, gid) = handle.jail_ids().map_or((0, 0), |i| (i.uid, i.gid));
            view = procview::ProcView::mount(uid, gid, host_boot);
        }
        Err(e) => {
            tracing::warn!(error = %e.one_line(), "cannot show the container's root at the shim's pid")
        }
    }
    if let Some(ids) = handle.jail_ids() {
        drop_privileges(single, ids.uid, ids.gid)?;
    }
    let agent = AgentClient::new(fd)?;
    create_in_guest(&agent, &req.record, spec, req.terminal)?;
    ready.ok();
    match wait_for(&mut signals, vm_exit.as_fd(), Some(fifo.as_fd()))? {
        Wait::VmGone => return Ok(End::Code(VM_GONE_EXIT)),
        Wait::Signal(sig) => {
            // Killed before start: the guest side goes at delete.
            if let Some(r) = raw.as_mut() {
                r.restore();
            }
            return Ok(End::Signal(sig));
        }
        Wait::Started => {}
    }
    drop(fifo);
    let pid = ProcessId::container(req.record.guest_id.clone());
    let outcome = relay::run(
        &agent,
        &pid,
        req.terminal,
        vm_exit.as_fd(),
        &mut signals,
        view.as_mut(),
    );
    if let Some(r) = raw.as_mut() {
        r.restore();
    }
    Ok(end_of(outcome))
}

fn init(
    req: &Request,
    mut vm_config: VmConfig,
    spec: &ForGuest,
    netns: &NetNs,
    cgroup: &crate::host_cgroup::HostCgroup,
    sandbox: bool,
    ready: &mut Ready,
) -> Result<End, Error> {
    let t0 = std::time::Instant::now();
    // Before any thread exists (the watcher, ttrpc's client threads): a thread that does not
    // block them would take a forwarded signal's default action and end the whole shim.
    let mut signals = block_signals()?;
    let mut raw = terminal_setup(req)?;
    // First: the hooks see the shim in its cgroup, and QEMU and the daemons inherit it.
    crate::host_cgroup::join(cgroup)?;
    // QEMU and the daemons are started from this thread: they inherit the namespace.
    net::enter(netns)?;
    ready.netns_and_wait(req.go_fd)?;
    let network = clearbox_net::scan::scan().map_err(|e| {
        Error::Msg(format!(
            "cannot read the container's network: {}",
            clearbox_util::error::chain(&e)
        ))
    })?;
    tracing::debug!(?network, "network");
    // Unwired when dropped: on every way out of this function.
    let mut wiring = net::wire(&network, netns, &req.dir, &req.record)?;
    vm_config.net = wiring.devices(&network);
    let vm = Vm::start(vm_config)?;
    wiring.close_taps();
    tracing::debug!(elapsed = ?t0.elapsed(), accel = %vm.accel(), "VM started");
    // Opened now, while the record and /proc are in view; watched once the shim has dropped
    // its privileges (which needs it single-threaded).
    let watch = watch::prepare(vm.run_dir());
    let boot = Duration::from_secs(BOOT_TIMEOUT_SECS);
    let fd = vm.connect_agent(AGENT_PORT, boot)?;
    tracing::debug!(elapsed = ?t0.elapsed(), "agent channel open");
    // Everything below needs only descriptors opened now (and the container's root, entered
    // now), then the shim gives up its privileges.
    let fifo = open_fifo(&req.dir.join(START_FIFO))?;
    let last_stats = open_last_stats(&req.dir);
    // Counted while /proc is still in view.
    let single = single_threaded();
    let host_boot = procview::host_boot_time();
    let mut view = None;
    match enter_container_root(&req.record, &spec.binds) {
        Ok(()) if !sandbox => {
            let (uid, gid) = vm.jail_ids().map_or((0, 0), |i| (i.uid, i.gid));
            view = procview::ProcView::mount(uid, gid, host_boot);
        }
        Ok(()) => {}
        Err(e) => {
            tracing::warn!(error = %e.one_line(), "cannot show the container's root at the shim's pid")
        }
    }
    if let Some(ids) = vm.jail_ids() {
        drop_privileges(single, ids.uid, ids.gid)?;
        wiring.leave_to_delete();
    }
    if let Some(w) = watch {
        w.spawn();
    }
    let agent = AgentClient::new(fd)?;
    tracing::debug!(elapsed = ?t0.elapsed(), "agent connected");
    if !network.interfaces.is_empty() {
        use clearbox_protocol::net::{interface_to_wire, route_to_wire};
        agent.update_interfaces(network.interfaces.iter().map(interface_to_wire).collect())?;
        agent.update_routes(network.routes.iter().map(route_to_wire).collect())?;
        tracing::debug!(elapsed = ?t0.elapsed(), "guest network configured");
    }
    if !sandbox {
        create_in_guest(&agent, &req.record, spec, req.terminal)?;
        tracing::debug!(elapsed = ?t0.elapsed(), "container created");
    }
    ready.ok();

    let vm_exit = vm
        .exit_fd()
        .ok_or_else(|| Error::Msg("QEMU is not running".into()))?
        .try_clone_to_owned()
        .map_err(|e| Error::io("dup QEMU pidfd", e))?;
    // Created: wait for `start`, a signal, or the VM's death.
    match wait_for(&mut signals, vm_exit.as_fd(), Some(fifo.as_fd()))? {
        Wait::VmGone => {
            drop(vm);
            drop(wiring);
            return Ok(End::Code(VM_GONE_EXIT));
        }
        Wait::Signal(sig) => {
            // Killed before start: the container dies with the VM.
            let _ = vm.kill();
            drop(wiring);
            if let Some(r) = raw.as_mut() {
                r.restore();
            }
            return Ok(End::Signal(sig));
        }
        Wait::Started => {}
    }
    drop(fifo);
    tracing::debug!(elapsed = ?t0.elapsed(), "started");
    if sandbox {
        // The pause container's part: live until killed. As pause, SIGINT and SIGTERM end
        // it with status 0; the VM goes with it.
        let end = match wait_for(&mut signals, vm_exit.as_fd(), None)? {
            Wait::Signal(libc::SIGINT | libc::SIGTERM) => End::Code(0),
            Wait::Signal(sig) => End::Signal(sig),
            Wait::VmGone | Wait::Started => End::Code(VM_GONE_EXIT),
        };
        let _ = vm.kill();
        drop(wiring);
        return Ok(end);
    }
    let pid = ProcessId::container(req.record.guest_id.clone());
    let outcome = relay::run(
        &agent,
        &pid,
        req.terminal,
        vm_exit.as_fd(),
        &mut signals,
        view.as_mut(),
    );
    tracing::debug!(elapsed = ?t0.elapsed(), "init ended");
    if let (relay::Outcome::Exited(_), Some(mut f)) = (&outcome, last_stats) {
        // What the container's cgroup says as the init ends (an OOM kill, say) goes with
        // the VM: keep it for `events`.
        if let Ok(s) = agent.stats(&req.record.guest_id) {
            let _ = f.write_all(crate::stats_json(&s).to_string().as_bytes());
        }
    }
    // The init is gone: so is the container. The rootfs is a host passthrough, nothing in the
    // guest needs saving.
    let _ = vm.kill();
    drop(wiring);
    tracing::debug!(elapsed = ?t0.elapsed(), "VM gone");
    if let Some(r) = raw.as_mut() {
        r.restore();
    }
    Ok(end_of(outcome))
}

fn exec(
    req: &Request,
    exec_id: &str,
    process: &GuestProcess,
    ready: &mut Ready,
) -> Result<End, Error> {
    // Before any thread exists (see `init`).
    let mut signals = block_signals()?;
    let mut raw = terminal_setup(req)?;
    if let Some(cg) = &req.record.host_cgroup {
        crate::host_cgroup::join_existing(cg)?;
    }
    let handle = VmHandle::load(&req.record.vm_run_dir)?;
    let vm_exit = handle
        .exit_fd()
        .ok_or_else(|| Error::Msg("the container's VM is not running".into()))?;
    let fd = handle.connect_agent(AGENT_PORT, Duration::from_secs(10))?;
    if let Some(ids) = handle.jail_ids() {
        drop_privileges(single_threaded(), ids.uid, ids.gid)?;
    }
    let agent = AgentClient::new(fd)?;
    let pid = ProcessId::container_exec(req.record.guest_id.clone(), exec_id);
    let stdio = Stdio {
        terminal: req.terminal,
        stdin: true,
    };
    agent.exec_process(&pid, process, stdio)?;
    ready.ok();
    let outcome = relay::run(
        &agent,
        &pid,
        req.terminal,
        vm_exit.as_fd(),
        &mut signals,
        None,
    );
    if let Some(r) = raw.as_mut() {
        r.restore();
    }
    Ok(end_of(outcome))
}

fn end_of(outcome: relay::Outcome) -> End {
    match outcome {
        relay::Outcome::Exited(st) => match st.signal {
            Some(sig) => End::Signal(sig),
            None => End::Code(st.code),
        },
        relay::Outcome::VmGone(why) => {
            tracing::warn!(%why, "guest process lost");
            End::Code(VM_GONE_EXIT)
        }
    }
}

/// After its setup a shim needs only its descriptors (agent connection, stdio, QEMU's pidfd)
/// and, for the init's shim, to end the VM. It takes the VM's jail uid (so it can still kill
/// QEMU and the vsock backend; virtiofsd gets its parent-death signal when the shim exits),
/// drops every capability, sets no_new_privs and becomes non-dumpable. Capabilities belong to
/// threads: this runs before the agent client starts its threads, and refuses to run after.
fn drop_privileges(single: Result<(), Error>, uid: u32, gid: u32) -> Result<(), Error> {
    single?;
    clearbox_vmm::drop_privileges(uid, gid).map_err(|e| Error::io("shim: drop privileges", e))
}

/// Whether this process runs one thread only.
fn single_threaded() -> Result<(), Error> {
    let threads = std::fs::read_dir("/proc/thread-self/..")
        .map(|d| d.count())
        .unwrap_or(0);
    if threads == 1 {
        Ok(())
    } else {
        Err(Error::Msg(format!(
            "shim: cannot drop privileges with {threads} threads running"
        )))
    }
}

/// Moves the shim into a mount namespace of its own whose root is the container's rootfs.
///
/// Clients treat the pid they are given as the container's init and look at the container
/// through it: `podman cp` on a running container `setns()`es into `/proc/<pid>/ns/mnt` and reads
/// and writes under "/" there, as it would with runc. The shim stands for the init, so its mount
/// namespace shows what the guest sees: the shared rootfs (the same directory virtio-fs passes
/// through) with the bind mounts at their destinations. The namespace is a slave of the host's,
/// so nothing mounted here reaches the host, and it vanishes with the shim. Everything the shim
/// still needs is an open descriptor by now; later path lookups (VM clean-up) are best effort,
/// `delete` cleans up from the host's view.
fn enter_container_root(record: &Record, binds: &[Bind]) -> Result<(), Error> {
    use clearbox_container::fly_mounts::{bind_existing, enter_private_mount_namespace, make_root};
    let setup = |e: clearbox_container::Error| Error::Msg(BackendError::flatten(&e).message);
    let root = record.shared.join(record.share_dir().rootfs());
    enter_private_mount_namespace().map_err(setup)?;
    let dir = record.share_dir();
    for b in binds {
        let target = root.join(b.destination.strip_prefix("/").unwrap_or(&b.destination));
        // Never create mount points in the user's rootfs for this view.
        if target.exists() {
            bind_existing(&record.shared.join(dir.mount(b.index)), &target).map_err(setup)?;
        }
    }
    make_root(&root).map_err(setup)
}

/// O_RDWR keeps the FIFO from ever reporting EOF/HUP while nobody has it open for writing.
/// The file the init's last statistics go to, opened while the shim may still create it.
fn open_last_stats(dir: &Path) -> Option<File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(dir.join(crate::layout::LAST_STATS))
        .map_err(|e| tracing::debug!(error = %e, "cannot open the last-stats file"))
        .ok()
}

fn open_fifo(path: &Path) -> Result<OwnedFd, Error> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
    Ok(OwnedFd::from(f))
}

/// Blocks SIGCHLD and the signals the core forwards ([`FORWARDED`]) in this thread (threads
/// started later inherit the mask; children do not:
/// std resets the mask before exec) and returns a signalfd for them.
fn block_signals() -> Result<SignalFd, Error> {
    let mut set = SigSet::empty();
    for s in FORWARDED.iter().chain([&Signal::SIGCHLD]) {
        set.add(*s);
    }
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None)
        .map_err(|e| Error::errno("block signals", e))?;
    SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| Error::errno("signalfd", e))
}

/// Before start: the first pending signal that would have killed an ordinary process.
fn fatal_signal(signals: &mut SignalFd) -> Option<i32> {
    while let Ok(Some(info)) = signals.read_signal() {
        let sig = info.ssi_signo as i32;
        if is_fatal(sig) {
            return Some(sig);
        }
    }
    None
}

fn is_fatal(sig: i32) -> bool {
    !matches!(
        Signal::try_from(sig),
        Ok(Signal::SIGCHLD
            | Signal::SIGWINCH
            | Signal::SIGCONT
            | Signal::SIGURG
            | Signal::SIGSTOP
            | Signal::SIGTSTP
            | Signal::SIGTTIN
            | Signal::SIGTTOU)
    )
}

/// Dies of `sig`, so a parent waiting on the shim sees the guest process's fate; exits with
/// 128+sig when the signal would not kill.
fn die_by(sig: i32) -> ! {
    if is_fatal(sig) {
        let zero = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: setrlimit(2) with a limit we own: no core file for the shim.
        unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) };
        clearbox_util::interrupt::reraise(sig);
    }
    std::process::exit(128 + sig)
}
