//! containerd's Task service (task API v2) over clearbox's runtime core.
//!
//! Operations that start processes (create, start, exec, delete) run in a helper process
//! ([`crate::helper`]); the others (state, kill, pause, resume, pids, stats, update) call the
//! runtime core in this process. Both use the same [`clearbox_core::Runtime`] over the same
//! backends as the CLI, with this shim's own state root.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use clearbox_core::{Error as CoreError, Runtime};
use containerd_shim::api::{CheckpointTaskRequest, Empty};
use containerd_shim::api::{
    CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest, CreateTaskResponse,
    DeleteRequest, DeleteResponse, ExecProcessRequest, KillRequest, PauseRequest, PidsRequest,
    PidsResponse, ResizePtyRequest, ResumeRequest, ShutdownRequest, StartRequest, StartResponse,
    StateRequest, StateResponse, StatsRequest, StatsResponse, UpdateTaskRequest, WaitRequest,
    WaitResponse,
};
use containerd_shim::monitor::{monitor_subscribe, ExitEvent, Subject, Topic};
use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::protos::ttrpc::{self, Code, Status as RpcStatus};
use containerd_shim::protos::types::task::{ProcessInfo, Status as TaskStatus};
use containerd_shim::{ExitSignal, Task, TtrpcContext};

mod watch;

use crate::events::Events;
use crate::exits::Unclaimed;
use crate::helper::{self, Op, RootMount};
use crate::metrics;
use crate::stdio::{Io, Paths, Pending};

type TtrpcResult<T> = ttrpc::Result<T>;

/// How long an exit waits for the process's output to reach containerd's fifos.
const DRAIN: Duration = Duration::from_secs(5);
/// How often a container's OOM counter is looked at (for backends that report one).
const OOM_POLL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Created,
    Running,
    Paused,
    Stopped,
}

/// One process: a container's init or an exec'd process.
struct Proc {
    pid: i32,
    phase: Phase,
    paths: Paths,
    io: Option<Io>,
    exit: Option<(u32, Timestamp)>,
    /// Exec only, until started: the OCI process (JSON).
    spec: Option<Vec<u8>>,
}

impl Proc {
    fn new(paths: Paths) -> Self {
        Self {
            pid: 0,
            phase: Phase::Created,
            paths,
            io: None,
            exit: None,
            spec: None,
        }
    }
}

struct Container {
    bundle: PathBuf,
    /// containerd handed rootfs mounts, which the shim mounted on `<bundle>/rootfs`.
    mounted_rootfs: bool,
    init: Proc,
    execs: HashMap<String, Proc>,
    /// OOM kills in the container's cgroup already reported (TaskOOM).
    oom_kills: u64,
}

struct Table {
    containers: HashMap<String, Container>,
}

impl Table {
    /// The container `id` and its process `exec_id` (its init when `exec_id` is empty).
    fn process(&self, id: &str, exec_id: &str) -> TtrpcResult<(&Container, &Proc)> {
        let c = self
            .containers
            .get(id)
            .ok_or_else(|| not_found(format!("container {id} not found")))?;
        let p = if exec_id.is_empty() {
            &c.init
        } else {
            c.execs
                .get(exec_id)
                .ok_or_else(|| not_found(format!("process {exec_id} not found")))?
        };
        Ok((c, p))
    }
}

pub struct Inner {
    root: PathBuf,
    table: Mutex<Table>,
    changed: Condvar,
    unclaimed: Unclaimed,
    events: Events,
    exit: Arc<ExitSignal>,
}

/// The Task service.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

/// Environment variable naming the directory under which the shim keeps its containers'
/// state (one directory per containerd namespace), as runc's shim takes its `Root` option.
/// containerd passes its own environment to the shims it starts.
pub const ROOT_ENV: &str = "CLEARBOX_SHIM_ROOT";
/// The default of [`ROOT_ENV`] (not the CLI's /run/clearbox).
pub const DEFAULT_ROOT: &str = "/run/clearbox-shim";

/// The state root of the containers of namespace `ns`.
pub fn state_root(ns: &str) -> PathBuf {
    match std::env::var_os(ROOT_ENV) {
        Some(r) if Path::new(&r).is_absolute() => PathBuf::from(r).join(ns),
        _ => PathBuf::from(DEFAULT_ROOT).join(ns),
    }
}

fn rpc_err(code: Code, msg: impl Into<String>) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(RpcStatus {
        code: code.into(),
        message: msg.into(),
        ..Default::default()
    })
}

fn internal(msg: impl Into<String>) -> ttrpc::Error {
    rpc_err(Code::UNKNOWN, msg)
}

fn not_found(msg: impl Into<String>) -> ttrpc::Error {
    rpc_err(Code::NOT_FOUND, msg)
}

/// A core error as containerd expects it (`errdefs`: NotFound for a process that is gone).
fn core_err(e: CoreError) -> ttrpc::Error {
    match e {
        CoreError::NotFound(_) => not_found(e.to_string()),
        CoreError::NotRunning => not_found("process already finished"),
        CoreError::WrongState { .. } | CoreError::NotStopped { .. } => {
            rpc_err(Code::FAILED_PRECONDITION, clearbox_util::error::chain(&e))
        }
        CoreError::Usage(_) | CoreError::InvalidId { .. } | CoreError::Bundle { .. } => {
            rpc_err(Code::INVALID_ARGUMENT, clearbox_util::error::chain(&e))
        }
        other => internal(clearbox_util::error::chain(&other)),
    }
}

fn now() -> Timestamp {
    Timestamp::now()
}

impl Service {
    pub fn new(namespace: &str, events: Events, exit: Arc<ExitSignal>) -> Self {
        let inner = Arc::new(Inner {
            root: state_root(namespace),
            table: Mutex::new(Table {
                containers: HashMap::new(),
            }),
            changed: Condvar::new(),
            unclaimed: Unclaimed::default(),
            events,
            exit,
        });
        let s = Self { inner };
        s.watch_exits();
        s
    }

    fn table(&self) -> TtrpcResult<MutexGuard<'_, Table>> {
        self.inner
            .table
            .lock()
            .map_err(|_| internal("shim state poisoned"))
    }

    fn runtime(&self) -> TtrpcResult<Runtime<'static>> {
        helper::runtime(&self.inner.root).map_err(internal)
    }

    fn sockets_dir(&self) -> PathBuf {
        self.inner.root.join(".console")
    }

    fn status_of(p: &Proc) -> TaskStatus {
        match p.phase {
            Phase::Created => TaskStatus::CREATED,
            Phase::Running => TaskStatus::RUNNING,
            Phase::Paused => TaskStatus::PAUSED,
            Phase::Stopped => TaskStatus::STOPPED,
        }
    }

    fn start_init(&self, id: &str) -> TtrpcResult<StartResponse> {
        {
            let t = self.table()?;
            let c = t
                .containers
                .get(id)
                .ok_or_else(|| not_found(format!("container {id} not found")))?;
            if c.init.phase != Phase::Created {
                return Err(rpc_err(
                    Code::FAILED_PRECONDITION,
                    format!("container {id} is not created"),
                ));
            }
        }
        helper::run(
            &self.inner.root,
            &Op::Start { id: id.into() },
            Default::default(),
        )
        .map_err(internal)?;
        let mut t = self.table()?;
        let c = t
            .containers
            .get_mut(id)
            .ok_or_else(|| not_found(format!("container {id} not found")))?;
        if c.init.phase == Phase::Created {
            c.init.phase = Phase::Running;
        }
        let pid = c.init.pid;
        self.inner.events.send(TaskStart {
            container_id: id.into(),
            pid: pid as u32,
            ..Default::default()
        });
        drop(t);
        self.watch_oom(id.to_string());
        Ok(StartResponse {
            pid: pid as u32,
            ..Default::default()
        })
    }

    fn start_exec(&self, id: &str, exec_id: &str) -> TtrpcResult<StartResponse> {
        let (spec, paths) = {
            let t = self.table()?;
            let c = t
                .containers
                .get(id)
                .ok_or_else(|| not_found(format!("container {id} not found")))?;
            let p = c
                .execs
                .get(exec_id)
                .ok_or_else(|| not_found(format!("process {exec_id} not found")))?;
            let Some(spec) = p.spec.clone() else {
                return Err(rpc_err(
                    Code::FAILED_PRECONDITION,
                    format!("process {exec_id} was already started"),
                ));
            };
            (spec, p.paths.clone())
        };
        let dir = self.inner.root.join(".exec");
        std::fs::create_dir_all(&dir)
            .map_err(|e| internal(format!("create {}: {e}", dir.display())))?;
        let file = dir.join(format!("{id}-{exec_id}.json"));
        std::fs::write(&file, &spec)
            .map_err(|e| internal(format!("write {}: {e}", file.display())))?;
        let result = (|| {
            let (pending, child, console) =
                Pending::prepare(&paths, &self.sockets_dir()).map_err(internal)?;
            let op = Op::Exec {
                id: id.into(),
                process_file: file.clone(),
                tty: paths.terminal,
                console_socket: console,
            };
            let pid = match helper::run(&self.inner.root, &op, child) {
                Ok(Some(pid)) => pid,
                Ok(None) => {
                    pending.discard();
                    return Err(internal("exec reported no pid"));
                }
                Err(e) => {
                    pending.discard();
                    return Err(internal(e));
                }
            };
            let io = pending.connect().map_err(internal)?;
            Ok((pid, io))
        })();
        let _ = std::fs::remove_file(&file);
        let (pid, io) = result?;
        {
            let mut t = self.table()?;
            let p = t
                .containers
                .get_mut(id)
                .and_then(|c| c.execs.get_mut(exec_id))
                .ok_or_else(|| not_found(format!("process {exec_id} not found")))?;
            p.pid = pid;
            p.phase = Phase::Running;
            p.io = Some(io);
            p.spec = None;
        }
        self.inner.events.send(TaskExecStarted {
            container_id: id.into(),
            exec_id: exec_id.into(),
            pid: pid as u32,
            ..Default::default()
        });
        self.claim_early_exit(pid);
        Ok(StartResponse {
            pid: pid as u32,
            ..Default::default()
        })
    }

    fn delete_exec(&self, id: &str, exec_id: &str) -> TtrpcResult<DeleteResponse> {
        let mut t = self.table()?;
        let c = t
            .containers
            .get_mut(id)
            .ok_or_else(|| not_found(format!("container {id} not found")))?;
        let p = c
            .execs
            .get(exec_id)
            .ok_or_else(|| not_found(format!("process {exec_id} not found")))?;
        if p.phase == Phase::Running {
            return Err(rpc_err(
                Code::FAILED_PRECONDITION,
                format!("process {exec_id} is running"),
            ));
        }
        let p = c.execs.remove(exec_id).ok_or_else(|| not_found(exec_id))?;
        let (code, at) = p.exit.unwrap_or((0, now()));
        Ok(DeleteResponse {
            pid: p.pid as u32,
            exit_status: code,
            exited_at: MessageField::some(at),
            ..Default::default()
        })
    }

    fn delete_init(&self, id: &str) -> TtrpcResult<DeleteResponse> {
        let (bundle, mounted) = {
            let t = self.table()?;
            let c = t
                .containers
                .get(id)
                .ok_or_else(|| not_found(format!("container {id} not found")))?;
            (c.bundle.clone(), c.mounted_rootfs)
        };
        let op = Op::Delete {
            id: id.into(),
            unmount: mounted.then(|| bundle.join("rootfs")),
        };
        helper::run(&self.inner.root, &op, Default::default()).map_err(internal)?;
        let mut t = self.table()?;
        let Some(mut c) = t.containers.remove(id) else {
            return Err(not_found(format!("container {id} not found")));
        };
        drop(t);
        if let Some(io) = c.init.io.as_mut() {
            io.close();
        }
        let pid = c.init.pid;
        let (code, at) = c.init.exit.clone().unwrap_or((137, now()));
        self.inner.events.send(TaskDelete {
            container_id: id.into(),
            pid: pid as u32,
            exit_status: code,
            exited_at: MessageField::some(at.clone()),
            id: id.into(),
            ..Default::default()
        });
        self.inner.changed.notify_all();
        Ok(DeleteResponse {
            pid: pid as u32,
            exit_status: code,
            exited_at: MessageField::some(at),
            ..Default::default()
        })
    }
}

/// The fifo paths of a request.
fn paths(stdin: &str, stdout: &str, stderr: &str, terminal: bool) -> Paths {
    Paths {
        stdin: stdin.into(),
        stdout: stdout.into(),
        stderr: stderr.into(),
        terminal,
    }
}

impl Task for Service {
    fn create(
        &self,
        _ctx: &TtrpcContext,
        req: CreateTaskRequest,
    ) -> TtrpcResult<CreateTaskResponse> {
        let id = req.id.clone();
        if !req.checkpoint.is_empty() || !req.parent_checkpoint.is_empty() {
            return Err(rpc_err(
                Code::UNIMPLEMENTED,
                "restoring from a checkpoint is not implemented by clearbox",
            ));
        }
        if self.table()?.containers.contains_key(&id) {
            return Err(rpc_err(
                Code::ALREADY_EXISTS,
                format!("container {id} already exists"),
            ));
        }
        let p = paths(&req.stdin, &req.stdout, &req.stderr, req.terminal);
        let (pending, child, console) =
            Pending::prepare(&p, &self.sockets_dir()).map_err(internal)?;
        let rootfs: Vec<RootMount> = req
            .rootfs
            .iter()
            .map(|m| RootMount {
                typ: m.type_.clone(),
                source: m.source.clone(),
                options: m.options.clone(),
            })
            .collect();
        let mounted = !rootfs.is_empty();
        let target = Path::new(&req.bundle).join("rootfs");
        if mounted {
            if let Err(e) = helper::mount_rootfs(&rootfs, &target) {
                pending.discard();
                return Err(internal(e));
            }
        }
        let op = Op::Create {
            id: id.clone(),
            bundle: PathBuf::from(&req.bundle),
            unmount: mounted,
            console_socket: console,
        };
        let pid = match helper::run(&self.inner.root, &op, child) {
            Ok(Some(pid)) => pid,
            Ok(None) => {
                pending.discard();
                if mounted {
                    helper::unmount_rootfs(&target);
                }
                return Err(internal("create reported no pid"));
            }
            Err(e) => {
                pending.discard();
                return Err(internal(e));
            }
        };
        let io = match pending.connect() {
            Ok(io) => io,
            Err(e) => {
                let _ = helper::run(
                    &self.inner.root,
                    &Op::Delete {
                        id: id.clone(),
                        unmount: mounted.then(|| Path::new(&req.bundle).join("rootfs")),
                    },
                    Default::default(),
                );
                return Err(internal(e));
            }
        };
        let mut init = Proc::new(p.clone());
        init.pid = pid;
        init.io = Some(io);
        self.table()?.containers.insert(
            id.clone(),
            Container {
                bundle: PathBuf::from(&req.bundle),
                mounted_rootfs: mounted,
                init,
                execs: HashMap::new(),
                oom_kills: 0,
            },
        );
        self.inner.events.send(TaskCreate {
            container_id: id.clone(),
            bundle: req.bundle.clone(),
            rootfs: req.rootfs.clone(),
            io: MessageField::some(TaskIO {
                stdin: p.stdin,
                stdout: p.stdout,
                stderr: p.stderr,
                terminal: p.terminal,
                ..Default::default()
            }),
            checkpoint: req.checkpoint.clone(),
            pid: pid as u32,
            ..Default::default()
        });
        self.claim_early_exit(pid);
        Ok(CreateTaskResponse {
            pid: pid as u32,
            ..Default::default()
        })
    }

    fn start(&self, _ctx: &TtrpcContext, req: StartRequest) -> TtrpcResult<StartResponse> {
        if req.exec_id.is_empty() {
            self.start_init(&req.id)
        } else {
            self.start_exec(&req.id, &req.exec_id)
        }
    }

    fn delete(&self, _ctx: &TtrpcContext, req: DeleteRequest) -> TtrpcResult<DeleteResponse> {
        if req.exec_id.is_empty() {
            self.delete_init(&req.id)
        } else {
            self.delete_exec(&req.id, &req.exec_id)
        }
    }

    fn state(&self, _ctx: &TtrpcContext, req: StateRequest) -> TtrpcResult<StateResponse> {
        let t = self.table()?;
        let (c, p) = t.process(&req.id, &req.exec_id)?;
        let (code, at) = p.exit.clone().unwrap_or((0, Timestamp::new()));
        Ok(StateResponse {
            id: req.id.clone(),
            bundle: c.bundle.to_string_lossy().into_owned(),
            pid: p.pid as u32,
            status: Self::status_of(p).into(),
            stdin: p.paths.stdin.clone(),
            stdout: p.paths.stdout.clone(),
            stderr: p.paths.stderr.clone(),
            terminal: p.paths.terminal,
            exit_status: code,
            exited_at: MessageField::some(at),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        })
    }

    fn pids(&self, _ctx: &TtrpcContext, req: PidsRequest) -> TtrpcResult<PidsResponse> {
        let pids = self.runtime()?.pids(&req.id).map_err(core_err)?;
        Ok(PidsResponse {
            processes: pids
                .into_iter()
                .map(|pid| ProcessInfo {
                    pid: pid as u32,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    fn pause(&self, _ctx: &TtrpcContext, req: PauseRequest) -> TtrpcResult<Empty> {
        self.runtime()?.pause(&req.id).map_err(core_err)?;
        if let Some(c) = self.table()?.containers.get_mut(&req.id) {
            c.init.phase = Phase::Paused;
        }
        self.inner.events.send(TaskPaused {
            container_id: req.id.clone(),
            ..Default::default()
        });
        Ok(Empty::new())
    }

    fn resume(&self, _ctx: &TtrpcContext, req: ResumeRequest) -> TtrpcResult<Empty> {
        self.runtime()?.resume(&req.id).map_err(core_err)?;
        if let Some(c) = self.table()?.containers.get_mut(&req.id) {
            if c.init.phase == Phase::Paused {
                c.init.phase = Phase::Running;
            }
        }
        self.inner.events.send(TaskResumed {
            container_id: req.id.clone(),
            ..Default::default()
        });
        Ok(Empty::new())
    }

    fn checkpoint(&self, _ctx: &TtrpcContext, _req: CheckpointTaskRequest) -> TtrpcResult<Empty> {
        Err(rpc_err(
            Code::UNIMPLEMENTED,
            "checkpoint is not implemented by clearbox (no CRIU; VM snapshots are not exposed yet)",
        ))
    }

    fn kill(&self, _ctx: &TtrpcContext, req: KillRequest) -> TtrpcResult<Empty> {
        let signal = i32::try_from(req.signal)
            .map_err(|_| rpc_err(Code::INVALID_ARGUMENT, "invalid signal"))?;
        if req.exec_id.is_empty() {
            let exited = self
                .table()?
                .containers
                .get(&req.id)
                .is_some_and(|c| c.init.exit.is_some());
            let rt = self.runtime()?;
            return match rt.kill(&req.id, signal, req.all) {
                Ok(()) => Ok(Empty::new()),
                // A container whose init is gone (`--all` still asks the backend): containerd
                // expects NotFound, which its forced delete ignores.
                Err(e)
                    if exited
                        || rt
                            .state(&req.id)
                            .is_ok_and(|s| s.status == clearbox_core::Status::Stopped) =>
                {
                    Err(not_found(format!(
                        "process already finished: {}",
                        clearbox_util::error::chain(&e)
                    )))
                }
                Err(e) => Err(core_err(e)),
            };
        }
        let pid = {
            let t = self.table()?;
            let p = t
                .containers
                .get(&req.id)
                .and_then(|c| c.execs.get(&req.exec_id))
                .ok_or_else(|| not_found(format!("process {} not found", req.exec_id)))?;
            if p.phase != Phase::Running {
                return Err(not_found("process already finished"));
            }
            p.pid
        };
        nix::sys::signal::Signal::try_from(signal)
            .map_err(|_| rpc_err(Code::INVALID_ARGUMENT, format!("invalid signal {signal}")))?;
        // The exec'd process on the host (namespaces, fly), or in the VM's guest (the backend
        // maps the host shim standing for it to the guest process).
        self.runtime()?
            .kill_exec(&req.id, pid, signal)
            .map_err(core_err)?;
        Ok(Empty::new())
    }

    fn exec(&self, _ctx: &TtrpcContext, req: ExecProcessRequest) -> TtrpcResult<Empty> {
        let spec = req
            .spec
            .as_ref()
            .map(|a| a.value.clone())
            .ok_or_else(|| rpc_err(Code::INVALID_ARGUMENT, "exec without a process spec"))?;
        let mut t = self.table()?;
        let c = t
            .containers
            .get_mut(&req.id)
            .ok_or_else(|| not_found(format!("container {} not found", req.id)))?;
        if c.init.phase == Phase::Stopped {
            return Err(rpc_err(
                Code::FAILED_PRECONDITION,
                format!("container {} is stopped", req.id),
            ));
        }
        if c.execs.contains_key(&req.exec_id) {
            return Err(rpc_err(
                Code::ALREADY_EXISTS,
                format!("process {} already exists", req.exec_id),
            ));
        }
        let mut p = Proc::new(paths(&req.stdin, &req.stdout, &req.stderr, req.terminal));
        p.spec = Some(spec);
        c.execs.insert(req.exec_id.clone(), p);
        self.inner.events.send(TaskExecAdded {
            container_id: req.id.clone(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        });
        Ok(Empty::new())
    }

    fn resize_pty(&self, _ctx: &TtrpcContext, req: ResizePtyRequest) -> TtrpcResult<Empty> {
        let t = self.table()?;
        let (_, p) = t.process(&req.id, &req.exec_id)?;
        match &p.io {
            Some(io) => io
                .resize(req.width, req.height)
                .map_err(|e| rpc_err(Code::FAILED_PRECONDITION, e))?,
            None => return Err(not_found("process has no terminal")),
        }
        Ok(Empty::new())
    }

    fn close_io(&self, _ctx: &TtrpcContext, req: CloseIORequest) -> TtrpcResult<Empty> {
        let t = self.table()?;
        let (_, p) = t.process(&req.id, &req.exec_id)?;
        if req.stdin {
            if let Some(io) = &p.io {
                io.close_stdin();
            }
        }
        Ok(Empty::new())
    }

    fn update(&self, _ctx: &TtrpcContext, req: UpdateTaskRequest) -> TtrpcResult<Empty> {
        let any = req
            .resources
            .as_ref()
            .ok_or_else(|| rpc_err(Code::INVALID_ARGUMENT, "update without resources"))?;
        let resources: oci_spec::runtime::LinuxResources = serde_json::from_slice(&any.value)
            .map_err(|e| rpc_err(Code::INVALID_ARGUMENT, format!("invalid resources: {e}")))?;
        self.runtime()?
            .update(&req.id, &resources)
            .map_err(core_err)?;
        Ok(Empty::new())
    }

    fn wait(&self, _ctx: &TtrpcContext, req: WaitRequest) -> TtrpcResult<WaitResponse> {
        let mut t = self.table()?;
        loop {
            let (_, p) = t.process(&req.id, &req.exec_id)?;
            if let Some((code, at)) = &p.exit {
                return Ok(WaitResponse {
                    exit_status: *code,
                    exited_at: MessageField::some(at.clone()),
                    ..Default::default()
                });
            }
            t = self
                .inner
                .changed
                .wait(t)
                .map_err(|_| internal("shim state poisoned"))?;
        }
    }

    fn stats(&self, _ctx: &TtrpcContext, req: StatsRequest) -> TtrpcResult<StatsResponse> {
        let stats = self.runtime()?.stats(&req.id).map_err(core_err)?;
        let any = metrics::to_any(&metrics::from_stats(&stats)).map_err(internal)?;
        Ok(StatsResponse {
            stats: MessageField::some(any),
            ..Default::default()
        })
    }

    fn connect(&self, _ctx: &TtrpcContext, req: ConnectRequest) -> TtrpcResult<ConnectResponse> {
        let t = self.table()?;
        let task_pid = t.containers.get(&req.id).map(|c| c.init.pid).unwrap_or(0);
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid: task_pid as u32,
            ..Default::default()
        })
    }

    fn shutdown(&self, _ctx: &TtrpcContext, _req: ShutdownRequest) -> TtrpcResult<Empty> {
        // One shim serves every container of a pod: it ends with the last of them.
        if self.table()?.containers.is_empty() {
            let _ = std::fs::remove_dir(self.sockets_dir());
            let _ = std::fs::remove_dir(self.inner.root.join(".exec"));
            // The namespace's directory, when no other shim of it keeps a container there.
            let _ = std::fs::remove_dir(&self.inner.root);
            self.inner.exit.signal();
        }
        Ok(Empty::new())
    }
}
