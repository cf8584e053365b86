//! `isolation = "vm"`: each container runs in its own lightweight VM (QEMU microvm, minimal
//! guest kernel, the clearbox agent as PID 1).
//!
//! # Process model: daemonless, one shim per container process
//! `create` starts a host *shim* (`clearbox __vm-shim`, see [`shim`]) in a new session with the
//! caller's stdio. The shim starts the VM — QEMU, vhost-device-vsock and virtiofsd are its
//! children and die with it (PR_SET_PDEATHSIG) — connects to the agent, sends CreateContainer
//! and tells `create` "ok"; its pid is the container's pid. `start` sends StartContainer from the
//! CLI process and wakes the shim (a FIFO in the state dir), which then relays stdio and signals
//! until the init exits, and exits with the init's status. `exec` starts another shim for the
//! exec'd process. `kill`, `pause`, `resume`, `ps`, `events --stats` talk to the agent directly.
//! `delete` kills the shim and whatever of the VM is left (found through the VMM's record, so any
//! process can do it), unmounts the share and removes every file.
//!
//! # Files
//! See `layout.rs` for where things live; the rootfs reaches the guest through one virtio-fs
//! share (`share.rs`) and the spec is rewritten for the guest (`guest_spec.rs`).
//!
//! # Network
//! The engine's network namespace reaches the guest as virtio-net NICs on taps wired to its
//! interfaces (`net.rs`); host networking (no network namespace) is refused.
//!
//! # Limits
//! * `--preserve-fds` and the `createContainer`/`startContainer` hooks (which would have to run
//!   inside the guest) are not supported: each gets a clear error. `update` changes the
//!   container's guest cgroup, not the VM's size.
//! * `ps` lists the host shims (init first, then one per exec), not guest pids; the host sees no
//!   other process of the container. `cgroupsPath` is the host cgroup of the shims and the VM
//!   (`host_cgroup.rs`); the guest applies the spec's resources in a cgroup of its own.

// Tests may unwrap: a panic is the failure report there.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod error;
mod guest_spec;
mod hooks;
mod host_cgroup;
mod layout;
mod net;
mod pod;
mod readonly;
mod share;
pub mod shim;
mod sizing;
mod spawn;
mod teardown;

use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use clearbox_core::backend::default_status;
use clearbox_core::runtime::SPEC_COPY;
use clearbox_core::{
    Backend, BackendError, Config, ContainerCtx, CreateOpts, ExecOpts, Isolation, Status,
};
use clearbox_protocol::{AgentClient, ProcessId};
use clearbox_util::proc::{pidfd_send_signal, pidfd_verified};
use clearbox_vmm::{VmHandle, AGENT_PORT};
use oci_spec::runtime::{LinuxResources, Spec};

pub use error::Error;
pub use host_cgroup::HOST_OVERHEAD_MIB;
pub use sizing::{template_cache, DEFAULT_MEMORY_MIB, OVERHEAD_MIB};
pub use spawn::SHIM_SUBCOMMAND;

/// Whether VM templates are on by configuration (`[vm] template`, `CLEARBOX_TEMPLATE`):
/// `None` off, `Some(required)` on (required: asked for explicitly, no cold-boot fallback);
/// the host's support is `clearbox check`'s and the driver's call.
pub fn templates_enabled(defaults: &clearbox_core::config::VmDefaults) -> Option<bool> {
    // As root, never an error.
    sizing::template_options(defaults, true)
        .ok()
        .flatten()
        .map(|t| t.required)
}

/// Builds (or finds) the VM template of a container without resource limits with `nics`
/// network interfaces: what such a container's VM is restored from. An error says why when
/// this host cannot use templates.
pub fn build_template(
    defaults: &clearbox_core::config::VmDefaults,
    nics: usize,
) -> Result<std::path::PathBuf, Error> {
    let spec = oci_spec::runtime::Spec::default();
    let run_dir = std::path::PathBuf::from(format!("/run/clearbox-vm/tb-{}", std::process::id()));
    let mut vm = sizing::vm_config(&spec, defaults, run_dir)?;
    // Asked for by name: build even where containers do not use templates (yet).
    if vm.template.is_none() {
        vm.template = Some(sizing::template_cache(defaults)?);
    }
    // The same devices as a container's VM (`create`): the share, and `nics` NICs (only
    // their count matters to the template).
    vm.shares.push(clearbox_vmm::FsShare {
        tag: clearbox_protocol::guest::SHARE_TAG.into(),
        host_dir: "/".into(),
        read_only: false,
    });
    vm.net = (0..nics)
        .map(|i| clearbox_vmm::NetDevice {
            fd: 3,
            mac: clearbox_vmm::template_nic_mac(i),
            mtu: 0,
        })
        .collect();
    Ok(clearbox_vmm::Vm::ensure_template(&vm)?)
}

use layout::{PodPart, Record, START_FIFO};
use teardown::{shims_of, teardown};

/// What operations on a pod sandbox's (absent) guest process answer.
const NO_PROCESS: &str =
    "a pod sandbox runs no process in its VM (its containers do): not supported on the sandbox";

/// How long CLI commands wait for a running VM's agent to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The VM backend.
#[derive(Debug, Default, Clone, Copy)]
pub struct VmBackend;

impl Backend for VmBackend {
    fn isolation(&self) -> Isolation {
        Isolation::Vm
    }

    /// Every process a VM create starts (the shim, hooks) execs.
    fn create_interruptible(&self) -> bool {
        true
    }

    fn create(&self, o: &CreateOpts<'_>) -> Result<clearbox_core::backend::Created, BackendError> {
        Ok(create(o)?)
    }

    fn start(&self, c: &ContainerCtx<'_>) -> Result<(), BackendError> {
        Ok(start(c)?)
    }

    fn status(&self, c: &ContainerCtx<'_>) -> Result<Status, BackendError> {
        // The shim lives exactly as long as the init: its liveness is the container's.
        Ok(default_status(c.state))
    }

    fn kill(&self, c: &ContainerCtx<'_>, signal: i32, all: bool) -> Result<(), BackendError> {
        Ok(kill(c, signal, all)?)
    }

    /// `pid` is the host shim of an exec'd process: the signal goes to the guest process it
    /// stands for (a shim cannot pass on SIGKILL or SIGSTOP, which it cannot catch).
    fn kill_exec(&self, c: &ContainerCtx<'_>, pid: i32, signal: i32) -> Result<(), BackendError> {
        Ok(kill_exec(c, pid, signal)?)
    }

    fn pause(&self, c: &ContainerCtx<'_>) -> Result<(), BackendError> {
        let (rec, agent) = connect(c)?;
        agent.pause_container(&rec.guest_id).map_err(Error::from)?;
        Ok(())
    }

    fn resume(&self, c: &ContainerCtx<'_>) -> Result<(), BackendError> {
        let (rec, agent) = connect(c)?;
        agent.resume_container(&rec.guest_id).map_err(Error::from)?;
        Ok(())
    }

    fn delete(&self, c: &ContainerCtx<'_>, _force: bool) -> Result<(), BackendError> {
        Ok(delete(c)?)
    }

    fn exec(&self, c: &ContainerCtx<'_>, o: &ExecOpts<'_>) -> Result<i32, BackendError> {
        Ok(exec(c, o)?)
    }

    /// Host pids standing for the container's processes: the init's shim, then one shim per
    /// running exec'd process (what containerd matches exec pids against). The guest's own pids
    /// mean nothing on the host; `clearbox events --stats` reports their count.
    fn pids(&self, c: &ContainerCtx<'_>) -> Result<Vec<i32>, BackendError> {
        let mut pids: Vec<i32> = c.state.pid.into_iter().collect();
        pids.extend(
            shims_of(c.dir)
                .into_iter()
                .map(|(p, _)| p)
                .filter(|p| Some(*p) != c.state.pid),
        );
        Ok(pids)
    }

    /// The guest's processes of the container, from the agent (the host's `ps` sees only the
    /// shims).
    fn process_table(
        &self,
        c: &ContainerCtx<'_>,
    ) -> Result<Option<Vec<clearbox_core::ProcessRow>>, BackendError> {
        let (rec, agent) = connect(c)?;
        let table = agent.process_table(&rec.guest_id).map_err(Error::from)?;
        Ok(Some(
            table
                .into_iter()
                .map(|p| clearbox_core::ProcessRow {
                    pid: p.pid,
                    ppid: p.ppid,
                    uid: p.uid,
                    user: Some(p.user).filter(|u| !u.is_empty()),
                    start_time: p.start_time,
                    cpu_time_ms: p.cpu_time_ms,
                    elapsed_secs: p.elapsed_secs,
                    tty: p.tty,
                    cmd: p.cmd,
                })
                .collect(),
        ))
    }

    fn stats(&self, c: &ContainerCtx<'_>) -> Result<serde_json::Value, BackendError> {
        let live =
            connect(c).and_then(|(rec, agent)| agent.stats(&rec.guest_id).map_err(Error::from));
        match live {
            Ok(s) => Ok(stats_json(&s)),
            // The VM is gone, or going, with the init: what its shim saw last (written before
            // it ends the VM; `events` looks there for the OOM kill that ended the container).
            Err(e) => std::fs::read(c.dir.join(layout::LAST_STATS))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .ok_or_else(|| BackendError::from(e)),
        }
    }

    /// The container's cgroup in the guest gets the new limits (the agent applies them as the
    /// namespaces backend does on the host). The VM's own size does not change: limits above
    /// it only stop being reachable.
    fn update(&self, c: &ContainerCtx<'_>, r: &LinuxResources) -> Result<(), BackendError> {
        let (rec, agent) = connect(c)?;
        if rec.is_sandbox() {
            return Err(Error::Msg(NO_PROCESS.into()).into());
        }
        let json = serde_json::to_vec(r)
            .map_err(|e| Error::Msg(format!("cannot encode the resources: {e}")))?;
        agent
            .update_container(&rec.guest_id, json)
            .map_err(Error::from)?;
        Ok(())
    }
}

/// The agent's statistics in the shape of libcgroups' stats, which the other backends print,
/// plus `memory.oom_kill` (the `events` command turns its growth into `oom` events).
pub(crate) fn stats_json(s: &clearbox_protocol::pb::agent::StatsResponse) -> serde_json::Value {
    serde_json::json!({
        "cpu": {"usage": {
            "total": s.cpu_usage_usec.saturating_mul(1000),
            "user": s.cpu_user_usec.saturating_mul(1000),
            "kernel": s.cpu_system_usec.saturating_mul(1000),
        }},
        "memory": {
            "usage": {
                "usage": s.memory_usage_bytes,
                "limit": s.memory_limit_bytes,
            },
            "oom_kill": s.oom_kill,
        },
        "pids": {"current": s.pids_current},
        "source": s.source,
    })
}

fn create(o: &CreateOpts<'_>) -> Result<clearbox_core::backend::Created, Error> {
    if o.preserve_fds > 0 {
        return Err(Error::Msg(
            "--preserve-fds is not supported with isolation vm".into(),
        ));
    }
    hooks::check_supported(o.spec)?;
    let role = pod::role(o.spec.annotations().as_ref())?;
    if let pod::Role::Member { sandbox_id } = &role {
        return create_member(o, sandbox_id);
    }
    let netns = net::netns_of(o.spec)?;
    let config = Config::load_default().map_err(|e| Error::Msg(clearbox_util::error::chain(&e)))?;
    let mut record = Record::new(o.dir, o.id);
    if record.base.exists() {
        // Left by an earlier container with the same state directory that was never deleted.
        teardown(&record, Some(o.dir), None);
    }
    let sandbox = role == pod::Role::Sandbox;
    let mut vm = if sandbox {
        record.pod = Some(PodPart::Sandbox);
        pod_vm_config(o.spec, &config.vm, record.vm_run_dir.clone())?
    } else {
        sizing::vm_config(o.spec, &config.vm, record.vm_run_dir.clone())?
    };
    // Kept in the state directory (removed by delete): the agent logs there.
    vm.serial_log = Some(o.dir.join("console.log"));
    if tracing::enabled!(tracing::Level::DEBUG) {
        // `clearbox --debug`: the agent logs its debug lines to the console log too.
        vm.cmdline_extra.push("clearbox.debug=1".into());
    }
    vm.shares.push(clearbox_vmm::FsShare {
        tag: clearbox_protocol::guest::SHARE_TAG.into(),
        host_dir: record.shared.clone(),
        read_only: false,
    });
    let cgroup = host_cgroup::plan(o.spec, o.id, vm.memory_mib)?;
    record.host_cgroup_shared = host_cgroup::check_existing(&cgroup.path)?;
    record.host_cgroup = Some(cgroup.path.clone());
    let guest = guest_spec::rewrite(o.spec, &record)?;
    record.mounts = share_mounts(&record, o.spec);
    record.save(o.dir)?;
    share::prepare(&record, o.bundle, o.rootfs, o.spec)?;
    let started = (|| {
        let fifo = o.dir.join(START_FIFO);
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .map_err(|e| Error::errno(format!("mkfifo {}", fifo.display()), e))?;
        let terminal = o
            .spec
            .process()
            .as_ref()
            .and_then(|p| p.terminal())
            .unwrap_or(false);
        let mut req = shim::Request {
            dir: o.dir.to_path_buf(),
            record: record.clone(),
            terminal,
            console_socket: o.console_socket.map(Path::to_path_buf),
            kind: shim::Kind::Init {
                vm: Box::new(vm),
                spec: guest,
                netns,
                cgroup: Box::new(cgroup),
                sandbox,
            },
            go_fd: None,
        };
        // runc's order: prestart, then createRuntime, both with the init's (the shim's) pid,
        // while the shim waits in the container's network namespace before reading it.
        let mut create_hooks = |pid: i32| {
            hooks::run(o.spec, hooks::Phase::Prestart, o.id, pid, o.bundle)?;
            hooks::run(o.spec, hooks::Phase::CreateRuntime, o.id, pid, o.bundle)
        };
        let s = spawn::shim(
            o.dir,
            o.bundle,
            "shim",
            &mut req,
            Some(&mut create_hooks),
            o.interrupt,
        )?;
        Ok(s.pid)
    })();
    match started {
        Ok(pid) => Ok(clearbox_core::backend::Created { pid }),
        Err(e) => {
            teardown(&record, Some(o.dir), None);
            Err(e)
        }
    }
}

/// The sandbox's VM: sized from the pod's annotations (see `pod.rs`), else as a container
/// without limits. The sandbox spec's own resources (containerd 1.6 puts the pod overhead
/// there) say nothing about the pod's containers and are not used.
fn pod_vm_config(
    spec: &Spec,
    defaults: &clearbox_core::config::VmDefaults,
    run_dir: std::path::PathBuf,
) -> Result<clearbox_vmm::VmConfig, Error> {
    let mut plain = spec.clone();
    if let Some(mut linux) = plain.linux().clone() {
        linux.set_resources(None);
        plain.set_linux(Some(linux));
    }
    let mut vm = sizing::vm_config(&plain, defaults, run_dir)?;
    let (vcpus, memory) = pod::requested(spec.annotations().as_ref())?;
    if let Some(v) = vcpus {
        vm.vcpus = v;
    }
    if let Some(m) = memory {
        let mib = (m + OVERHEAD_MIB).max(u64::from(DEFAULT_MEMORY_MIB));
        vm.memory_mib = u32::try_from(mib).unwrap_or(u32::MAX);
    }
    Ok(vm)
}

/// An app container of a pod: joins the VM of its sandbox (`<root>/<sandbox id>`).
fn create_member(
    o: &CreateOpts<'_>,
    sandbox_id: &str,
) -> Result<clearbox_core::backend::Created, Error> {
    let root = o
        .dir
        .parent()
        .ok_or_else(|| Error::Msg("state directory without a parent".into()))?;
    let not_running = || {
        Error::Msg(format!(
            "pod sandbox {sandbox_id} is not running (no VM to join under this --root)"
        ))
    };
    let sandbox = Record::load(&root.join(sandbox_id))
        .ok()
        .flatten()
        .ok_or_else(not_running)?;
    if !sandbox.is_sandbox() {
        return Err(Error::Msg(format!(
            "container {sandbox_id} is not a pod sandbox (annotation io.kubernetes.cri.container-type=sandbox)"
        )));
    }
    if !VmHandle::load(&sandbox.vm_run_dir).is_ok_and(|h| h.is_running()) {
        return Err(not_running());
    }
    let mut record = Record::member(&sandbox, sandbox_id, o.id)?;
    if record.base.exists() {
        // Left by an earlier container of this id in this pod that was never deleted.
        teardown(&record, Some(o.dir), None);
    }
    let cgroup = host_cgroup::plan_member(o.spec, o.id)?;
    record.host_cgroup_shared = host_cgroup::check_existing(&cgroup.path)?;
    record.host_cgroup = Some(cgroup.path.clone());
    let guest = guest_spec::rewrite(o.spec, &record)?;
    record.mounts = share_mounts(&record, o.spec);
    record.save(o.dir)?;
    let started = (|| {
        share::prepare(&record, o.bundle, o.rootfs, o.spec)?;
        let fifo = o.dir.join(START_FIFO);
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .map_err(|e| Error::errno(format!("mkfifo {}", fifo.display()), e))?;
        let terminal = o
            .spec
            .process()
            .as_ref()
            .and_then(|p| p.terminal())
            .unwrap_or(false);
        let mut req = shim::Request {
            dir: o.dir.to_path_buf(),
            record: record.clone(),
            terminal,
            console_socket: o.console_socket.map(Path::to_path_buf),
            kind: shim::Kind::Member {
                spec: guest,
                cgroup: Box::new(cgroup),
            },
            go_fd: None,
        };
        // The member has no network namespace of its own to wait in (it uses the pod's):
        // the create hooks run with its pid once it reported.
        let s = spawn::shim(o.dir, o.bundle, "shim", &mut req, None, o.interrupt)?;
        hooks::run(o.spec, hooks::Phase::Prestart, o.id, s.pid, o.bundle)?;
        hooks::run(o.spec, hooks::Phase::CreateRuntime, o.id, s.pid, o.bundle)?;
        Ok(s.pid)
    })();
    match started {
        Ok(pid) => Ok(clearbox_core::backend::Created { pid }),
        Err(e) => {
            teardown(&record, Some(o.dir), None);
            Err(e)
        }
    }
}

/// The host-side mount points of a container's share: its rootfs, then one per bind mount
/// (recorded, so that delete undoes exactly these).
fn share_mounts(record: &Record, spec: &Spec) -> Vec<std::path::PathBuf> {
    std::iter::once(record.shared.join(record.share_dir().rootfs()))
        .chain(
            spec.mounts()
                .as_deref()
                .unwrap_or_default()
                .iter()
                .enumerate()
                .filter(|(_, m)| share::is_bind(m))
                .map(|(i, _)| share::mount_point(record, i)),
        )
        .collect()
}

fn record(c: &ContainerCtx<'_>) -> Result<Record, Error> {
    Record::load(c.dir)?.ok_or_else(|| Error::Msg(format!("container {} has no VM record", c.id)))
}

fn connect(c: &ContainerCtx<'_>) -> Result<(Record, AgentClient), Error> {
    let rec = record(c)?;
    if rec.is_sandbox() {
        return Err(Error::Msg(NO_PROCESS.into()));
    }
    let agent = connect_record(&rec)?;
    Ok((rec, agent))
}

fn connect_record(rec: &Record) -> Result<AgentClient, Error> {
    let handle = VmHandle::load(&rec.vm_run_dir)
        .map_err(|_| Error::Msg("container not running (its VM is gone)".into()))?;
    if !handle.is_running() {
        return Err(Error::Msg("container not running (its VM is gone)".into()));
    }
    Ok(AgentClient::new(
        handle.connect_agent(AGENT_PORT, CONNECT_TIMEOUT)?,
    )?)
}

fn spec_of(c: &ContainerCtx<'_>) -> Option<Spec> {
    Spec::load(c.dir.join(SPEC_COPY)).ok()
}

fn start(c: &ContainerCtx<'_>) -> Result<(), Error> {
    let rec = record(c)?;
    if !rec.is_sandbox() {
        // A sandbox runs nothing in the guest: its shim is its process.
        connect_record(&rec)?.start_container(&rec.guest_id)?;
    }
    // Wake the shim: it relays from now on.
    let fifo = c.dir.join(START_FIFO);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&fifo)
        .map_err(|e| Error::io("the container's shim is gone", e))?;
    f.write_all(b"s")
        .map_err(|e| Error::io(format!("write {}", fifo.display()), e))?;
    if let (Some(spec), Some(pid)) = (spec_of(c), c.state.pid) {
        if let Err(e) = hooks::run(&spec, hooks::Phase::Poststart, c.id, pid, &c.state.bundle) {
            // As runc: a failing poststart hook is logged, the container keeps running.
            tracing::warn!(error = %e.one_line(), "poststart hook");
        }
    }
    Ok(())
}

fn kill(c: &ContainerCtx<'_>, signal: i32, all: bool) -> Result<(), Error> {
    let shim = c.state.pid.map(|p| (p, c.state.pid_start_time));
    if c.state.status == Status::Created {
        // The init has not run yet; the shim stands for it and dies of the signal (taking the
        // VM with it), as runc's waiting init would.
        return signal_shim(shim, signal);
    }
    let rec = record(c)?;
    if rec.is_sandbox() {
        // The pause container's process is the shim itself.
        return signal_shim(shim, signal);
    }
    match connect_record(&rec) {
        Ok(agent) => {
            let r = agent.signal(&ProcessId::container(rec.guest_id.clone()), signal, all);
            match r {
                Ok(()) => Ok(()),
                Err(e) if e.is_not_found() || e.code() == Some(ttrpc_failed_precondition()) => {
                    Err(Error::Msg("container not running".into()))
                }
                // A fatal signal can end the init, and with it the VM, before the agent's
                // answer gets out; the signal did its job if the shim is ending too.
                Err(clearbox_protocol::AgentError::Transport(_))
                    if shim_exits_within(shim, Duration::from_secs(2)) =>
                {
                    Ok(())
                }
                Err(e) => Err(e.into()),
            }
        }
        // No agent to talk to: the shim is the only thing left to signal.
        Err(_) => signal_shim(shim, signal),
    }
}

fn kill_exec(c: &ContainerCtx<'_>, pid: i32, signal: i32) -> Result<(), Error> {
    let exec_id = shims_of(c.dir)
        .into_iter()
        .find(|(p, _)| *p == pid && Some(*p) != c.state.pid)
        .and_then(|(p, _)| exec_id_of_shim(c.dir, p))
        .ok_or_else(|| {
            Error::Msg(format!(
                "process {pid} is not an exec'd process of the container"
            ))
        })?;
    let rec = record(c)?;
    let agent = connect_record(&rec)?;
    let process = ProcessId::container_exec(rec.guest_id.clone(), exec_id);
    match agent.signal(&process, signal, false) {
        Ok(()) => Ok(()),
        Err(e) if e.is_not_found() || e.code() == Some(ttrpc_failed_precondition()) => {
            Err(Error::Msg("process not running".into()))
        }
        Err(e) => Err(e.into()),
    }
}

/// The guest exec id of the exec shim `pid`, from its log file argument
/// (`--log <dir>/shim-<exec id>.log`, see [`exec`]).
fn exec_id_of_shim(dir: &Path, pid: i32) -> Option<String> {
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let mut args = cmd.split(|b| *b == 0);
    let log = args.by_ref().skip_while(|a| *a != &b"--log"[..]).nth(1)?;
    let name = Path::new(std::ffi::OsStr::from_bytes(log));
    if name.parent() != Some(dir) {
        return None;
    }
    let id = name
        .file_name()?
        .to_str()?
        .strip_prefix("shim-")?
        .strip_suffix(".log")?;
    id.starts_with("exec-").then(|| id.to_string())
}

fn ttrpc_failed_precondition() -> clearbox_protocol::server::Code {
    clearbox_protocol::server::Code::FAILED_PRECONDITION
}

/// Whether the shim is gone, or goes within `limit`.
fn shim_exits_within(shim: Option<(i32, Option<u64>)>, limit: Duration) -> bool {
    let Some((pid, start)) = shim else {
        return true;
    };
    let Some(fd) = pidfd_verified(pid, start) else {
        return true;
    };
    let ms = u16::try_from(limit.as_millis()).unwrap_or(u16::MAX);
    let mut fds = [nix::poll::PollFd::new(
        fd.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    matches!(nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms)), Ok(n) if n > 0)
}

fn signal_shim(shim: Option<(i32, Option<u64>)>, signal: i32) -> Result<(), Error> {
    let Some((pid, start)) = shim else {
        return Err(Error::Msg("container not running".into()));
    };
    let Some(fd) = pidfd_verified(pid, start) else {
        return Err(Error::Msg("container not running".into()));
    };
    pidfd_send_signal(fd.as_fd(), signal).map_err(|e| Error::io("signal the container's shim", e))
}

fn delete(c: &ContainerCtx<'_>) -> Result<(), Error> {
    if let Some(rec) = Record::load(c.dir)? {
        teardown(
            &rec,
            Some(c.dir),
            c.state.pid.map(|p| (p, c.state.pid_start_time)),
        );
        let left = share::mounts_below(&rec.base);
        if !left.is_empty() {
            return Err(Error::Msg(format!("cannot unmount {}", left[0].display())));
        }
    }
    if let (Some(spec), Some(pid)) = (spec_of(c), c.state.pid) {
        if let Err(e) = hooks::run(&spec, hooks::Phase::Poststop, c.id, pid, &c.state.bundle) {
            // OCI: a failing poststop hook is a warning; the delete goes on.
            tracing::warn!(error = %e.one_line(), "poststop hook");
        }
    }
    Ok(())
}

fn exec(c: &ContainerCtx<'_>, o: &ExecOpts<'_>) -> Result<i32, Error> {
    if o.preserve_fds > 0 {
        return Err(Error::Msg(
            "--preserve-fds is not supported with isolation vm".into(),
        ));
    }
    if let Some(sub) = o.sub_cgroup {
        return Err(Error::Msg(format!(
            "exec --cgroup {sub} is not supported with isolation vm (the container's cgroups are in its VM)"
        )));
    }
    let rec = record(c)?;
    if rec.is_sandbox() {
        return Err(Error::Msg(NO_PROCESS.into()));
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let exec_id = format!("exec-{}-{nanos}", std::process::id());
    let process = clearbox_protocol::GuestProcess::encode(o.process)
        .map_err(|e| Error::Msg(format!("cannot encode the process: {e}")))?;
    let mut req = shim::Request {
        dir: c.dir.to_path_buf(),
        record: rec,
        terminal: o.process.terminal().unwrap_or(false),
        console_socket: o.console_socket.map(Path::to_path_buf),
        kind: shim::Kind::Exec { exec_id, process },
        go_fd: None,
    };
    let name = format!("shim-{}", req_exec_id(&req));
    Ok(spawn::shim(c.dir, &c.state.bundle, &name, &mut req, None, None)?.pid)
}

fn req_exec_id(req: &shim::Request) -> &str {
    match &req.kind {
        shim::Kind::Exec { exec_id, .. } => exec_id,
        shim::Kind::Init { .. } | shim::Kind::Member { .. } => "init",
    }
}
