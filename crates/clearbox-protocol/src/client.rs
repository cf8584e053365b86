//! Typed synchronous client for the agent API, over ttrpc's async client (see `runtime.rs`:
//! the sync one polls every 10 ms while idle).

use std::future::Future;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use tokio::runtime::Handle;
use ttrpc::context::{self, Context};

use crate::error::AgentError;
use crate::pb::agent as pb;
use crate::pb::agent_ttrpc;
use crate::request::{CreateContainer, ExecProcess, GuestProcess, GuestSpec, Stdio};
use crate::runtime::{self, FdStream};
use crate::types::{ExitStatus, Output, ProcessId, ProcessSpec, ReadChunk, RootfsLocation, Stream};

/// Extra client-side time granted to calls that carry their own server-side timeout, so the
/// agent's answer (data or "timed out") always arrives before the client gives up.
const SERVER_TIMEOUT_GRACE: Duration = Duration::from_secs(5);

/// Default timeout of control calls (everything except wait/read).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A connection to a clearbox agent.
///
/// Cheap to clone; clones share the connection and may issue calls concurrently from
/// several threads (e.g. one thread per output stream plus one waiting). The connection is
/// closed when the last clone is dropped.
///
/// Calls block the calling thread; they must not be made from a thread of an async runtime's
/// executor. The connection is served by one tokio runtime thread per process
/// (`agent-client`, every signal blocked in it), which sleeps while no call is in flight.
///
/// Control calls use the client timeout ([`AgentClient::with_timeout`], default 30 s).
/// `wait` and the stream reads take their own optional timeout which the agent enforces,
/// so a timed-out read never loses data.
#[derive(Clone)]
pub struct AgentClient {
    inner: agent_ttrpc::AgentClient,
    rt: Handle,
    timeout: Duration,
}

impl std::fmt::Debug for AgentClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentClient")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// One unary call: `ctx` and `req` are evaluated here, then owned by the call's future.
macro_rules! rpc {
    ($self:ident, $method:ident, $name:literal, $ctx:expr, $req:expr) => {{
        let (ctx, req) = ($ctx, $req);
        $self.call($name, move |c| async move { c.$method(ctx, &req).await })
    }};
}

fn ctx(timeout: Duration) -> Context {
    context::with_duration(timeout)
}

fn proc_fields(id: &ProcessId) -> (String, String) {
    (id.container_id.clone(), id.exec_id.clone())
}

fn millis(d: Option<Duration>) -> u64 {
    d.map_or(0, |d| {
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
    })
}

impl AgentClient {
    /// Takes ownership of a connected stream socket (Unix socket, vsock, hybrid vsock after
    /// the `CONNECT` handshake, ...). The fd is closed when the last clone is dropped.
    pub fn new(fd: OwnedFd) -> Result<Self, AgentError> {
        let io = |e: std::io::Error| {
            AgentError::from_ttrpc(
                "connect",
                ttrpc::Error::Others(format!("agent client: {e}")),
            )
        };
        let rt = runtime::handle().map_err(io)?;
        // The stream registers with the runtime's reactor and the client spawns its
        // connection's tasks there.
        let _in_runtime = rt.enter();
        let stream = FdStream::new(fd).map_err(io)?;
        let client = ttrpc::r#async::Client::new(ttrpc::r#async::transport::Socket::new(stream));
        Ok(Self {
            inner: agent_ttrpc::AgentClient::new(client),
            rt: rt.clone(),
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// Runs one call on the runtime and waits for it; `call` gets a clone of the generated
    /// client (the future owns what it uses). Errors map through [`AgentError::from_ttrpc`].
    fn call<T, F>(
        &self,
        method: &'static str,
        call: impl FnOnce(agent_ttrpc::AgentClient) -> F,
    ) -> Result<T, AgentError>
    where
        T: Send + 'static,
        F: Future<Output = ttrpc::Result<T>> + Send + 'static,
    {
        let fut = call(self.inner.clone());
        runtime::block_on(&self.rt, fut)
            .unwrap_or_else(|| {
                Err(ttrpc::Error::Others(
                    "agent client runtime dropped the call".into(),
                ))
            })
            .map_err(|e| AgentError::from_ttrpc(method, e))
    }

    /// Same as [`AgentClient::new`] for a connected [`UnixStream`].
    pub fn from_unix_stream(stream: UnixStream) -> Result<Self, AgentError> {
        Self::new(OwnedFd::from(stream))
    }

    /// Sets the timeout of control calls.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn blocking_ctx(&self, server_timeout: Option<Duration>) -> Context {
        match server_timeout {
            // No client-side timeout: the agent answers when done.
            None => context::with_timeout(0),
            Some(t) => ctx(t + SERVER_TIMEOUT_GRACE),
        }
    }

    /// `Check`: true when the agent serves requests.
    pub fn check(&self) -> Result<bool, AgentError> {
        let r = rpc!(self, check, "Check", ctx(self.timeout), pb::Empty::new())?;
        Ok(r.serving)
    }

    /// `Version`: agent version, API revision, guest kernel release, boot milestones.
    pub fn version(&self) -> Result<pb::VersionResponse, AgentError> {
        rpc!(
            self,
            version,
            "Version",
            ctx(self.timeout),
            pb::Empty::new()
        )
    }

    /// `CreateContainer`: `spec` is the container's config.json as rewritten for the guest
    /// (sent as it was serialised).
    pub fn create_container(
        &self,
        container_id: &str,
        spec: &GuestSpec,
        rootfs: &RootfsLocation,
        terminal: bool,
        stdin: bool,
    ) -> Result<(), AgentError> {
        let req = CreateContainer::to_wire(container_id, spec, rootfs, Stdio { terminal, stdin });
        rpc!(
            self,
            create_container,
            "CreateContainer",
            ctx(self.timeout),
            req
        )?;
        Ok(())
    }

    fn container_req(container_id: &str) -> pb::ContainerRequest {
        let mut req = pb::ContainerRequest::new();
        req.container_id = container_id.to_string();
        req
    }

    /// `StartContainer`: runs the container's init process.
    pub fn start_container(&self, container_id: &str) -> Result<(), AgentError> {
        rpc!(
            self,
            start_container,
            "StartContainer",
            ctx(self.timeout),
            Self::container_req(container_id)
        )?;
        Ok(())
    }

    /// `RemoveContainer`; `force` kills what still runs.
    pub fn remove_container(&self, container_id: &str, force: bool) -> Result<(), AgentError> {
        let mut req = pb::RemoveContainerRequest::new();
        req.container_id = container_id.to_string();
        req.force = force;
        rpc!(
            self,
            remove_container,
            "RemoveContainer",
            ctx(self.timeout),
            req
        )?;
        Ok(())
    }

    /// `PauseContainer` (cgroup freezer).
    pub fn pause_container(&self, container_id: &str) -> Result<(), AgentError> {
        rpc!(
            self,
            pause_container,
            "PauseContainer",
            ctx(self.timeout),
            Self::container_req(container_id)
        )?;
        Ok(())
    }

    /// `UpdateContainer`: `resources_json` is an OCI LinuxResources object.
    pub fn update_container(
        &self,
        container_id: &str,
        resources_json: Vec<u8>,
    ) -> Result<(), AgentError> {
        let mut req = pb::UpdateContainerRequest::new();
        req.container_id = container_id.to_string();
        req.resources_json = resources_json;
        rpc!(
            self,
            update_container,
            "UpdateContainer",
            ctx(self.timeout),
            req
        )?;
        Ok(())
    }

    /// `ResumeContainer`.
    pub fn resume_container(&self, container_id: &str) -> Result<(), AgentError> {
        rpc!(
            self,
            resume_container,
            "ResumeContainer",
            ctx(self.timeout),
            Self::container_req(container_id)
        )?;
        Ok(())
    }

    /// `ExecProcess` with a [`ProcessSpec`]. An empty `id.container_id` runs the process in
    /// the guest itself.
    pub fn exec(&self, id: &ProcessId, spec: &ProcessSpec) -> Result<(), AgentError> {
        let process = spec.to_guest_process().map_err(AgentError::Encode)?;
        self.exec_process(
            id,
            &process,
            Stdio {
                terminal: spec.terminal,
                stdin: spec.stdin,
            },
        )
    }

    /// `ExecProcess` with a serialised OCI `Process`.
    pub fn exec_process(
        &self,
        id: &ProcessId,
        process: &GuestProcess,
        stdio: Stdio,
    ) -> Result<(), AgentError> {
        let req = ExecProcess::to_wire(&id.container_id, &id.exec_id, process, stdio);
        rpc!(self, exec_process, "ExecProcess", ctx(self.timeout), req)?;
        Ok(())
    }

    /// `SignalProcess`; `all` signals every process of the container / process group.
    pub fn signal(&self, id: &ProcessId, signal: i32, all: bool) -> Result<(), AgentError> {
        let (container_id, exec_id) = proc_fields(id);
        let mut req = pb::SignalProcessRequest::new();
        req.container_id = container_id;
        req.exec_id = exec_id;
        req.signal = u32::try_from(signal).unwrap_or(0);
        req.all = all;
        rpc!(
            self,
            signal_process,
            "SignalProcess",
            ctx(self.timeout),
            req
        )?;
        Ok(())
    }

    /// `WaitProcess`: blocks until the process exited and its output was drained inside the
    /// agent. `timeout: None` waits forever; on expiry returns [`AgentError::Timeout`] and the
    /// call can be repeated.
    pub fn wait(
        &self,
        id: &ProcessId,
        timeout: Option<Duration>,
    ) -> Result<ExitStatus, AgentError> {
        let (container_id, exec_id) = proc_fields(id);
        let mut req = pb::WaitProcessRequest::new();
        req.container_id = container_id;
        req.exec_id = exec_id;
        req.timeout_ms = millis(timeout);
        let r = rpc!(
            self,
            wait_process,
            "WaitProcess",
            self.blocking_ctx(timeout),
            req
        )?;
        Ok(ExitStatus {
            code: r.exit_code,
            signal: (r.signal != 0).then_some(r.signal),
            core_dumped: r.core_dumped,
        })
    }

    /// `WriteStdin`, split into messages of at most [`crate::MAX_READ_CHUNK`] bytes (ttrpc
    /// limits message size). Returns the bytes written; fewer than `data.len()` when the
    /// process closed its stdin.
    pub fn write_stdin(&self, id: &ProcessId, data: &[u8]) -> Result<usize, AgentError> {
        let mut total = 0;
        for chunk in data.chunks(crate::MAX_READ_CHUNK as usize) {
            let mut req = pb::WriteStdinRequest::new();
            req.container_id = id.container_id.clone();
            req.exec_id = id.exec_id.clone();
            req.data = chunk.to_vec();
            let r = rpc!(self, write_stdin, "WriteStdin", ctx(self.timeout), req)?;
            let n = usize::try_from(r.len).unwrap_or(usize::MAX);
            total += n;
            if n < chunk.len() {
                break;
            }
        }
        Ok(total)
    }

    /// `CloseStdin`: the process sees EOF on stdin (with a terminal: `^D`).
    pub fn close_stdin(&self, id: &ProcessId) -> Result<(), AgentError> {
        let (container_id, exec_id) = proc_fields(id);
        let mut req = pb::ProcessRequest::new();
        req.container_id = container_id;
        req.exec_id = exec_id;
        rpc!(self, close_stdin, "CloseStdin", ctx(self.timeout), req)?;
        Ok(())
    }

    /// `ReadStdout`/`ReadStderr`: up to `max_len` bytes (0 = 64 KiB). Blocks until data or
    /// EOF, or until `wait` elapsed (then `Data(vec![])`).
    pub fn read(
        &self,
        id: &ProcessId,
        stream: Stream,
        max_len: u32,
        wait: Option<Duration>,
    ) -> Result<ReadChunk, AgentError> {
        let (container_id, exec_id) = proc_fields(id);
        let mut req = pb::ReadStreamRequest::new();
        req.container_id = container_id;
        req.exec_id = exec_id;
        req.max_len = max_len;
        req.wait_timeout_ms = millis(wait);
        let c = self.blocking_ctx(wait);
        let r = match stream {
            Stream::Stdout => rpc!(self, read_stdout, "ReadStdout", c, req)?,
            Stream::Stderr => rpc!(self, read_stderr, "ReadStderr", c, req)?,
        };
        if r.eof {
            // The agent never sends data with eof (see the proto).
            Ok(ReadChunk::Eof)
        } else {
            Ok(ReadChunk::Data(r.data))
        }
    }

    /// Reads `stream` until EOF.
    pub fn read_to_end(&self, id: &ProcessId, stream: Stream) -> Result<Vec<u8>, AgentError> {
        let mut out = Vec::new();
        loop {
            match self.read(id, stream, 0, None)? {
                ReadChunk::Data(d) => out.extend_from_slice(&d),
                ReadChunk::Eof => return Ok(out),
            }
        }
    }

    /// `TtyWinResize`.
    pub fn tty_resize(&self, id: &ProcessId, rows: u32, cols: u32) -> Result<(), AgentError> {
        let (container_id, exec_id) = proc_fields(id);
        let mut req = pb::TtyWinResizeRequest::new();
        req.container_id = container_id;
        req.exec_id = exec_id;
        req.rows = rows;
        req.cols = cols;
        rpc!(self, tty_win_resize, "TtyWinResize", ctx(self.timeout), req)?;
        Ok(())
    }

    /// `ListProcesses`: guest pids of the container ("" = all guest processes).
    pub fn list_processes(&self, container_id: &str) -> Result<Vec<i32>, AgentError> {
        let r = rpc!(
            self,
            list_processes,
            "ListProcesses",
            ctx(self.timeout),
            Self::container_req(container_id)
        )?;
        Ok(r.pids)
    }

    /// `ListProcesses` with each process's `ps -ef` columns (empty from an agent that predates
    /// them).
    pub fn process_table(&self, container_id: &str) -> Result<Vec<pb::ProcessInfo>, AgentError> {
        let r = rpc!(
            self,
            list_processes,
            "ListProcesses",
            ctx(self.timeout),
            Self::container_req(container_id)
        )?;
        Ok(r.processes)
    }

    /// `Stats` of a container ("" = the whole guest).
    pub fn stats(&self, container_id: &str) -> Result<pb::StatsResponse, AgentError> {
        rpc!(
            self,
            stats,
            "Stats",
            ctx(self.timeout),
            Self::container_req(container_id)
        )
    }

    /// `Shutdown`: powers the VM off. A connection closed before the reply counts as success.
    pub fn shutdown(&self) -> Result<(), AgentError> {
        match rpc!(
            self,
            shutdown,
            "Shutdown",
            ctx(self.timeout),
            pb::Empty::new()
        ) {
            Ok(_) | Err(AgentError::Transport(_)) => Ok(()),
            Err(other) => Err(other),
        }
    }

    /// `UpdateInterfaces`: name, MTU, addresses and link state of the VM's NICs.
    pub fn update_interfaces(&self, interfaces: Vec<pb::Interface>) -> Result<(), AgentError> {
        let mut r = pb::UpdateInterfacesRequest::new();
        r.interfaces = interfaces;
        rpc!(
            self,
            update_interfaces,
            "UpdateInterfaces",
            ctx(self.timeout),
            r
        )?;
        Ok(())
    }

    /// `UpdateRoutes`: routes of the VM's root network namespace.
    pub fn update_routes(&self, routes: Vec<pb::Route>) -> Result<(), AgentError> {
        let mut r = pb::UpdateRoutesRequest::new();
        r.routes = routes;
        rpc!(self, update_routes, "UpdateRoutes", ctx(self.timeout), r)?;
        Ok(())
    }

    /// Runs `spec` (stdin is not opened), collects stdout and stderr to EOF and the exit
    /// status. Convenience for tests and simple commands.
    pub fn run(&self, id: &ProcessId, spec: &ProcessSpec) -> Result<Output, AgentError> {
        let mut spec = spec.clone();
        spec.stdin = false;
        self.exec(id, &spec)?;
        let err_client = self.clone();
        let err_id = id.clone();
        let stderr_reader =
            std::thread::spawn(move || err_client.read_to_end(&err_id, Stream::Stderr));
        let stdout = self.read_to_end(id, Stream::Stdout);
        let stderr = stderr_reader.join().unwrap_or_else(|_| {
            Err(AgentError::Transport(ttrpc::Error::Others(
                "stderr reader thread failed".into(),
            )))
        });
        let status = self.wait(id, None)?;
        Ok(Output {
            status,
            stdout: stdout?,
            stderr: stderr?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::unix::net::UnixListener;
    use std::sync::{mpsc, Arc, Mutex, MutexGuard, PoisonError};

    use super::*;
    use crate::server::{create_agent, get_status, Agent, Code, Server, TtrpcContext};

    /// Check answers; SignalProcess says NOT_FOUND; WaitProcess answers with the length of
    /// the exec id as exit code.
    struct Fake;

    impl Agent for Fake {
        fn check(&self, _: &TtrpcContext, _: pb::Empty) -> ttrpc::Result<pb::CheckResponse> {
            let mut r = pb::CheckResponse::new();
            r.serving = true;
            Ok(r)
        }

        fn signal_process(
            &self,
            _: &TtrpcContext,
            _: pb::SignalProcessRequest,
        ) -> ttrpc::Result<pb::Empty> {
            Err(ttrpc::Error::RpcStatus(get_status(
                Code::NOT_FOUND,
                "no such process",
            )))
        }

        fn wait_process(
            &self,
            _: &TtrpcContext,
            req: pb::WaitProcessRequest,
        ) -> ttrpc::Result<pb::WaitProcessResponse> {
            let mut r = pb::WaitProcessResponse::new();
            r.exit_code = i32::try_from(req.exec_id.len()).unwrap();
            Ok(r)
        }
    }

    /// The tests share the process's client runtime, whose thread one of them watches.
    fn serial() -> MutexGuard<'static, ()> {
        static LOCK: Mutex<()> = Mutex::new(());
        LOCK.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn served() -> (tempfile::TempDir, AgentClient) {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        Server::new(create_agent(Arc::new(Fake)))
            .start(listener.into())
            .unwrap();
        let c = AgentClient::from_unix_stream(UnixStream::connect(&socket).unwrap()).unwrap();
        (dir, c.with_timeout(Duration::from_secs(10)))
    }

    #[test]
    fn calls_answers_and_statuses_from_several_threads() {
        let _serial = serial();
        let (_dir, c) = served();
        assert!(c.check().unwrap());
        let e = c.signal(&ProcessId::container("c1"), 9, false).unwrap_err();
        assert!(e.is_not_found(), "{e:?}");
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let c = c.clone();
                std::thread::spawn(move || {
                    let id = ProcessId::container_exec("c1", "x".repeat(i + 1));
                    for _ in 0..50 {
                        assert_eq!(
                            c.wait(&id, None).unwrap().code,
                            i32::try_from(i + 1).unwrap()
                        );
                        assert!(c.check().unwrap());
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }

    #[test]
    fn the_client_timeout_is_a_timeout_and_a_closed_connection_a_transport_error() {
        let _serial = serial();
        let (ours, theirs) = UnixStream::pair().unwrap();
        let c = AgentClient::from_unix_stream(ours)
            .unwrap()
            .with_timeout(Duration::from_millis(100));
        assert!(matches!(c.check(), Err(AgentError::Timeout("Check"))));
        // No client timeout for a wait without one: it ends with the connection.
        let waiter = {
            let c = c.clone();
            std::thread::spawn(move || c.wait(&ProcessId::container("c1"), None))
        };
        std::thread::sleep(Duration::from_millis(300));
        assert!(!waiter.is_finished());
        drop(theirs);
        assert!(matches!(
            waiter.join().unwrap(),
            Err(AgentError::Transport(_))
        ));
        // Shutdown counts a closed connection as done.
        c.shutdown().unwrap();
    }

    #[test]
    fn the_last_clone_closes_the_connection() {
        let _serial = serial();
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let c = AgentClient::from_unix_stream(ours).unwrap();
        let c2 = c.clone();
        drop(c);
        theirs
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut b = [0u8; 1];
        let e = theirs.read(&mut b).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock, "closed too early");
        drop(c2);
        theirs
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        assert_eq!(theirs.read(&mut b).unwrap(), 0);
    }

    /// Context switches (voluntary and not) of one thread of this process.
    fn switches(tid: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/self/task/{tid}/status"))
            .unwrap()
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .map(|l| l.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap())
            .sum()
    }

    /// An idle connection (calls without timeout waiting for an agent that does not answer, as
    /// the VM shim's waiter and stream readers do) wakes no thread: ttrpc's sync client woke
    /// its receiver thread every 10 ms (~30 switches in the 300 ms watched here).
    #[test]
    fn an_idle_client_does_not_wake_up() {
        let _serial = serial();
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let c = AgentClient::from_unix_stream(ours).unwrap();
        let (tx, rx) = mpsc::channel();
        let blocked: Vec<_> = [Stream::Stdout, Stream::Stderr]
            .into_iter()
            .map(|stream| {
                let (c, tx) = (c.clone(), tx.clone());
                std::thread::spawn(move || {
                    tx.send(nix::unistd::gettid().to_string()).unwrap();
                    c.read(&ProcessId::container("c1"), stream, 0, None)
                })
            })
            .collect();
        let mut tids: Vec<String> = (0..2).map(|_| rx.recv().unwrap()).collect();
        // Both calls arrived: the readers and the runtime's thread are going to sleep.
        theirs
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        for _ in 0..2 {
            let mut header = [0u8; 10];
            theirs.read_exact(&mut header).unwrap();
            let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
            let mut body = vec![0u8; len as usize];
            theirs.read_exact(&mut body).unwrap();
        }
        std::thread::sleep(Duration::from_millis(100));
        let until = std::time::Instant::now() + Duration::from_secs(10);
        let runtime_thread = loop {
            // The thread names itself once it runs.
            let found = std::fs::read_dir("/proc/self/task")
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .find(|tid| {
                    std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
                        .is_ok_and(|n| n.trim() == runtime::THREAD_NAME)
                });
            match found {
                Some(tid) => break tid,
                None if std::time::Instant::now() < until => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                None => panic!("no {} thread", runtime::THREAD_NAME),
            }
        };
        tids.push(runtime_thread);
        let before: Vec<u64> = tids.iter().map(|t| switches(t)).collect();
        std::thread::sleep(Duration::from_millis(300));
        let after: Vec<u64> = tids.iter().map(|t| switches(t)).collect();
        let woke: u64 = after.iter().zip(&before).map(|(a, b)| a - b).sum();
        assert!(
            woke <= 2,
            "idle threads woke up: {before:?} -> {after:?} (readers, runtime)"
        );
        drop(theirs);
        for t in blocked {
            assert!(matches!(t.join().unwrap(), Err(AgentError::Transport(_))));
        }
    }
}
