//! clearbox-agent: PID 1 inside a clearbox VM. Mounts the basics, reaps orphans and serves
//! the agent API (`clearbox-protocol`) on vsock port 1024, or over a virtio-serial port when
//! the host asks for it (`clearbox.channel=serial`, see `serial`).
//!
//! Host test mode: `clearbox-agent --no-init --listen-unix PATH [--debug] [--run-dir DIR]
//! [--cgroup-parent NAME]` serves the same API on a Unix socket without any PID-1 duties.
//! `--run-dir` (default: a fresh `clearbox-agent-<pid>` in the temp dir, removed on exit)
//! holds bundles and container state; `--cgroup-parent` (default `clearbox`) is the parent
//! cgroup of containers whose spec has no `linux.cgroupsPath`.
//!
//! `clearbox-agent __clearbox-container-helper` is the agent's own container-setup helper
//! (see `helper`), never started by anyone else.

mod bundle;
mod container;
mod error;
mod guard;
mod helper;
mod init;
mod log;
mod milestones;
mod peer;
mod process;
mod ps;
mod serial;
mod service;
mod state;
mod target;
mod wiring;
mod zygote;

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use clearbox_protocol::server::{create_agent, Server};
use clearbox_protocol::AGENT_VSOCK_PORT;
use milestones::Milestone;

#[derive(Debug, Default)]
struct Args {
    no_init: bool,
    listen_unix: Option<PathBuf>,
    debug: bool,
    run_dir: Option<PathBuf>,
    cgroup_parent: Option<String>,
}

/// Hand-rolled: five flags do not justify an argument-parser in the static init binary.
/// As PID 1 the kernel passes unknown cmdline words as arguments, so those are ignored.
fn parse_args(args: impl Iterator<Item = String>, strict: bool) -> anyhow::Result<Args> {
    let mut a = Args::default();
    let mut it = args;
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--no-init" => a.no_init = true,
            "--debug" => a.debug = true,
            "--listen-unix" => {
                a.listen_unix = Some(it.next().context("--listen-unix needs a path")?.into())
            }
            "--run-dir" => a.run_dir = Some(it.next().context("--run-dir needs a path")?.into()),
            "--cgroup-parent" => {
                let name = it.next().context("--cgroup-parent needs a name")?;
                if name.is_empty() || name.contains("..") || name.starts_with('/') {
                    bail!("--cgroup-parent must be a relative cgroup name, got {name:?}");
                }
                a.cgroup_parent = Some(name)
            }
            other if strict => bail!("unknown argument {other:?}"),
            _ => {}
        }
    }
    Ok(a)
}

fn vsock_listener(port: u32) -> anyhow::Result<OwnedFd> {
    use nix::sys::socket::{
        bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType, VsockAddr,
    };
    let fd = socket(
        AddressFamily::Vsock,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .context("vsock socket")?;
    bind(fd.as_raw_fd(), &VsockAddr::new(libc::VMADDR_CID_ANY, port))
        .with_context(|| format!("bind vsock port {port}"))?;
    listen(&fd, Backlog::new(64).context("backlog")?).context("listen vsock")?;
    Ok(fd)
}

fn unix_listener(path: &PathBuf) -> anyhow::Result<OwnedFd> {
    let l = std::os::unix::net::UnixListener::bind(path)
        .with_context(|| format!("bind {}", path.display()))?;
    Ok(OwnedFd::from(l))
}

fn run(is_pid1: bool) -> anyhow::Result<()> {
    let args = parse_args(std::env::args().skip(1), !is_pid1)?;
    let as_init = is_pid1 && !args.no_init;
    log::set_debug(args.debug);
    let mut serial_channel = false;
    let mut cmdline = String::new();
    if as_init {
        init::mount_all().context("early mounts")?;
        cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
        serial_channel = serial::requested(&cmdline);
        if init::cmdline_debug(&cmdline) {
            log::set_debug(true);
        }
        if let Err(e) = nix::unistd::sethostname("clearbox") {
            crate::error!("sethostname: {e}");
        }
        init::loopback_up();
        init::setup_cgroups(container::DEFAULT_CGROUP_PARENT);
    } else {
        if args.listen_unix.is_none() {
            bail!("not running as PID 1: use --no-init --listen-unix PATH");
        }
        // Orphans of our children are re-parented to us, like in the VM.
        // SAFETY: prctl with integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    }
    let mut host_files = HostFiles::default();
    let run_dir = match (&args.run_dir, as_init) {
        (Some(d), _) => d.clone(),
        (None, true) => PathBuf::from(clearbox_protocol::guest::RUN_DIR),
        (None, false) => {
            let d = std::env::temp_dir().join(format!("clearbox-agent-{}", std::process::id()));
            host_files.run_dir = Some(d.clone());
            d
        }
    };
    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("creating run dir {}", run_dir.display()))?;
    container::configure(container::Config {
        run_dir: run_dir.clone(),
        cgroup_parent: args
            .cgroup_parent
            .clone()
            .unwrap_or_else(|| container::DEFAULT_CGROUP_PARENT.to_string()),
        no_pivot: container::root_is_initramfs(),
        lsm: bundle::Lsm::detect(),
    });
    // The host's shares, before the agent listens: a template is saved with them mounted
    // (and a cold boot mounts them while the host still prepares the create). A failure only
    // costs time: a create mounts its share again and says why it cannot.
    for tag in clearbox_protocol::guest::shares_from_cmdline(&cmdline) {
        match container::mount_virtiofs(tag) {
            Ok(_) => debug!("virtio-fs {tag} mounted"),
            Err(e) => error!("mounting virtio-fs {tag} at start: {e}"),
        }
    }
    milestones::mark(Milestone::MountsDone);
    debug!("mounts done");
    // While still single-threaded and before any signal is blocked.
    zygote::start();

    // Host mode: SIGTERM/SIGINT shut down cleanly (PID 1 never gets them from the kernel).
    let sigset = state::block_signals(!as_init).context("blocking signals")?;
    let state = Arc::new(state::State::default());
    let (shutdown_tx, shutdown_rx) = mpsc::channel::<()>();
    let stop_tx = shutdown_tx.clone();
    state::start_reaper(
        Arc::clone(&state),
        sigset,
        Box::new(move || {
            let _ = stop_tx.send(());
        }),
    )
    .context("starting reaper")?;

    let mut serial_port = None;
    let (listener, channel) = match &args.listen_unix {
        Some(path) => {
            let l = unix_listener(path)?;
            host_files.socket = Some(path.clone());
            (l, peer::Channel::Unix)
        }
        None if serial_channel => {
            let port = serial::find_port(Duration::from_secs(10))
                .context("the host asked for the virtio-serial channel: no such port")?;
            // Only this process connects here (the accept hook checks it).
            let path = run_dir.join("agent.sock");
            let _ = std::fs::remove_file(&path);
            let l = unix_listener(&path)?;
            std::fs::set_permissions(
                &path,
                <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600),
            )
            .context("chmod agent socket")?;
            serial_port = Some((port, path));
            (l, peer::Channel::VirtioSerial)
        }
        None => (vsock_listener(AGENT_VSOCK_PORT)?, peer::Channel::Vsock),
    };
    let shutdown_tx = Mutex::new(shutdown_tx);
    let service = service::Service {
        state: Arc::clone(&state),
        is_init: as_init,
        on_shutdown: Box::new(move || {
            let _ = process::lock(&shutdown_tx).send(());
        }),
    };
    // Bounded: one thread per connection plus one per request in flight (blocking calls such
    // as WaitProcess and stream reads hold theirs until they answer or their connection ends).
    let guard = peer::Guard(channel);
    Server::new(create_agent(Arc::new(service)))
        // Only the host is served (see `peer`).
        .accept_hook(move |fd| guard.check_fd(fd))
        .start(listener)
        .context("starting the ttrpc server")?;
    if let Some((port, path)) = serial_port {
        serial::start(&port, path)?;
    }
    milestones::mark(Milestone::Listening);
    debug!("listening");

    // Init work ends on Shutdown (or if the channel breaks).
    let _ = shutdown_rx.recv();
    // Let the Shutdown reply leave before the VM goes away.
    std::thread::sleep(Duration::from_millis(20));
    if as_init {
        init::power_off();
    }
    container::remove_all(&state);
    let pids: Vec<i32> = state.table().procs.values().map(|p| p.pid).collect();
    for pid in &pids {
        // SAFETY: kill(2) with integers; every tracked process leads its own group.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
    // Reap them before exiting so no zombie is handed to the host's init (ECHILD when the
    // reaper thread was faster).
    for pid in pids {
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
    }
    drop(host_files);
    Ok(())
}

/// Host mode: files the agent created itself, removed however `run` ends.
#[derive(Default)]
struct HostFiles {
    socket: Option<PathBuf>,
    run_dir: Option<PathBuf>,
}

impl Drop for HostFiles {
    fn drop(&mut self) {
        if let Some(p) = &self.socket {
            let _ = std::fs::remove_file(p);
        }
        if let Some(d) = &self.run_dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

fn main() {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == helper::HELPER_ARG)
    {
        std::process::exit(helper::main());
    }
    milestones::mark(Milestone::AgentStart);
    let is_pid1 = std::process::id() == 1;
    if is_pid1 {
        // PID 1 must not die: a panic logs to the console and powers the VM off.
        std::panic::set_hook(Box::new(|info| {
            error!("panic: {info}");
            init::power_off();
        }));
    }
    if let Err(e) = run(is_pid1) {
        error!("{e:#}");
        if is_pid1 {
            init::power_off();
        }
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> impl Iterator<Item = String> {
        v.iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn parses_host_mode_flags() {
        let a = parse_args(
            args(&[
                "--no-init",
                "--listen-unix",
                "/tmp/s",
                "--debug",
                "--run-dir",
                "/tmp/r",
                "--cgroup-parent",
                "t/x",
            ]),
            true,
        )
        .expect("parse");
        assert!(a.no_init && a.debug);
        assert_eq!(a.listen_unix, Some(PathBuf::from("/tmp/s")));
        assert_eq!(a.run_dir, Some(PathBuf::from("/tmp/r")));
        assert_eq!(a.cgroup_parent.as_deref(), Some("t/x"));
        assert!(parse_args(args(&["--cgroup-parent", "/abs"]), true).is_err());
    }

    #[test]
    fn strictness_depends_on_mode() {
        assert!(parse_args(args(&["--bogus"]), true).is_err());
        assert!(parse_args(args(&["splash", "quiet"]), false).is_ok());
        assert!(parse_args(args(&["--listen-unix"]), false).is_err());
    }
}
