//! Typed synchronous client for the agent API.

use std::os::fd::{IntoRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use ttrpc::context::{self, Context};

use crate::error::AgentError;
use crate::pb::agent as pb;
use crate::pb::agent_ttrpc;
use crate::request::{CreateContainer, ExecProcess, GuestProcess, GuestSpec, Stdio};
use crate::types::{ExitStatus, Output, ProcessId, ProcessSpec, ReadChunk, RootfsLocation, Stream};

/// Extra client-side time granted to calls that carry their own server-side timeout, so the
/// agent's answer (data or "timed out") always arrives before the client gives up.
const SERVER_TIMEOUT_GRACE: Duration = Duration::from_secs(5);

/// Default timeout of control calls (everything except wait/read).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A connection to a clearbox agent.
///
/// Cheap to clone; clones share the connection and may issue calls concurrently from
/// several threads (e.g. one thread per output stream plus one waiting).
///
/// Control calls use the client timeout ([`AgentClient::with_timeout`], default 30 s).
/// `wait` and the stream reads take their own optional timeout which the agent enforces,
/// so a timed-out read never loses data.
#[derive(Clone)]
pub struct AgentClient {
    inner: agent_ttrpc::AgentClient,
    timeout: Duration,
}

impl std::fmt::Debug for AgentClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentClient")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
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
    /// Takes ownership of a connected byte-stream fd (Unix socket, vsock, hybrid vsock after
    /// the `CONNECT` handshake, ...). The fd is closed when the last clone is dropped.
    pub fn new(fd: OwnedFd) -> Result<Self, AgentError> {
        let client = ttrpc::Client::new(fd.into_raw_fd())
            .map_err(|e| AgentError::from_ttrpc("connect", e))?;
        Ok(Self {
            inner: agent_ttrpc::AgentClient::new(client),
            timeout: DEFAULT_TIMEOUT,
        })
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
        let r = self
            .inner
            .check(ctx(self.timeout), &pb::Empty::new())
            .map_err(|e| AgentError::from_ttrpc("Check", e))?;
        Ok(r.serving)
    }

    /// `Version`: agent version, API revision, guest kernel release, boot milestones.
    pub fn version(&self) -> Result<pb::VersionResponse, AgentError> {
        self.inner
            .version(ctx(self.timeout), &pb::Empty::new())
            .map_err(|e| AgentError::from_ttrpc("Version", e))
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
        self.inner
            .create_container(ctx(self.timeout), &req)
            .map_err(|e| AgentError::from_ttrpc("CreateContainer", e))?;
        Ok(())
    }

    fn container_req(container_id: &str) -> pb::ContainerRequest {
        let mut req = pb::ContainerRequest::new();
        req.container_id = container_id.to_string();
        req
    }

    /// `StartContainer`: runs the container's init process.
    pub fn start_container(&self, container_id: &str) -> Result<(), AgentError> {
        self.inner
            .start_container(ctx(self.timeout), &Self::container_req(container_id))
            .map_err(|e| AgentError::from_ttrpc("StartContainer", e))?;
        Ok(())
    }

    /// `RemoveContainer`; `force` kills what still runs.
    pub fn remove_container(&self, container_id: &str, force: bool) -> Result<(), AgentError> {
        let mut req = pb::RemoveContainerRequest::new();
        req.container_id = container_id.to_string();
        req.force = force;
        self.inner
            .remove_container(ctx(self.timeout), &req)
            .map_err(|e| AgentError::from_ttrpc("RemoveContainer", e))?;
        Ok(())
    }

    /// `PauseContainer` (cgroup freezer).
    pub fn pause_container(&self, container_id: &str) -> Result<(), AgentError> {
        self.inner
            .pause_container(ctx(self.timeout), &Self::container_req(container_id))
            .map_err(|e| AgentError::from_ttrpc("PauseContainer", e))?;
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
        self.inner
            .update_container(ctx(self.timeout), &req)
            .map_err(|e| AgentError::from_ttrpc("UpdateContainer", e))?;
        Ok(())
    }

    /// `ResumeContainer`.
    pub fn resume_container(&self, container_id: &str) -> Result<(), AgentError> {
        self.inner
            .resume_container(ctx(self.timeout), &Self::container_req(container_id))
            .map_err(|e| AgentError::from_ttrpc("ResumeContainer", e))?;
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
        self.inner
            .exec_process(ctx(self.timeout), &req)
            .map_err(|e| AgentError::from_ttrpc("ExecProcess", e))?;
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
        self.inner
            .signal_process(ctx(self.timeout), &req)
            .map_err(|e| AgentError::from_ttrpc("SignalProcess", e))?;
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
        let r = self
            .inner
            .wait_process(self.blocking_ctx(timeout), &req)
            .map_err(|e| AgentError::from_ttrpc("WaitProcess", e))?;
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
            let r = self
                .inner
                .write_stdin(ctx(self.timeout), &req)
                .map_err(|e| AgentError::from_ttrpc("WriteStdin", e))?;
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
        self.inner
            .close_stdin(ctx(self.timeout), &req)
            .map_err(|e| AgentError::from_ttrpc("CloseStdin", e))?;
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
            Stream::Stdout => self
                .inner
                .read_stdout(c, &req)
                .map_err(|e| AgentError::from_ttrpc("ReadStdout", e))?,
            Stream::Stderr => self
                .inner
                .read_stderr(c, &req)
                .map_err(|e| AgentError::from_ttrpc("ReadStderr", e))?,
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
        self.inner
            .tty_win_resize(ctx(self.timeout), &req)
            .map_err(|e| AgentError::from_ttrpc("TtyWinResize", e))?;
        Ok(())
    }

    /// `ListProcesses`: guest pids of the container ("" = all guest processes).
    pub fn list_processes(&self, container_id: &str) -> Result<Vec<i32>, AgentError> {
        let r = self
            .inner
            .list_processes(ctx(self.timeout), &Self::container_req(container_id))
            .map_err(|e| AgentError::from_ttrpc("ListProcesses", e))?;
        Ok(r.pids)
    }

    /// `ListProcesses` with each process's `ps -ef` columns (empty from an agent that predates
    /// them).
    pub fn process_table(&self, container_id: &str) -> Result<Vec<pb::ProcessInfo>, AgentError> {
        let r = self
            .inner
            .list_processes(ctx(self.timeout), &Self::container_req(container_id))
            .map_err(|e| AgentError::from_ttrpc("ListProcesses", e))?;
        Ok(r.processes)
    }

    /// `Stats` of a container ("" = the whole guest).
    pub fn stats(&self, container_id: &str) -> Result<pb::StatsResponse, AgentError> {
        self.inner
            .stats(ctx(self.timeout), &Self::container_req(container_id))
            .map_err(|e| AgentError::from_ttrpc("Stats", e))
    }

    /// `Shutdown`: powers the VM off. A connection closed before the reply counts as success.
    pub fn shutdown(&self) -> Result<(), AgentError> {
        match self.inner.shutdown(ctx(self.timeout), &pb::Empty::new()) {
            Ok(_) => Ok(()),
            Err(e) => match AgentError::from_ttrpc("Shutdown", e) {
                AgentError::Transport(_) => Ok(()),
                other => Err(other),
            },
        }
    }

    /// `UpdateInterfaces`: name, MTU, addresses and link state of the VM's NICs.
    pub fn update_interfaces(&self, interfaces: Vec<pb::Interface>) -> Result<(), AgentError> {
        let mut r = pb::UpdateInterfacesRequest::new();
        r.interfaces = interfaces;
        self.inner
            .update_interfaces(ctx(self.timeout), &r)
            .map_err(|e| AgentError::from_ttrpc("UpdateInterfaces", e))?;
        Ok(())
    }

    /// `UpdateRoutes`: routes of the VM's root network namespace.
    pub fn update_routes(&self, routes: Vec<pb::Route>) -> Result<(), AgentError> {
        let mut r = pb::UpdateRoutesRequest::new();
        r.routes = routes;
        self.inner
            .update_routes(ctx(self.timeout), &r)
            .map_err(|e| AgentError::from_ttrpc("UpdateRoutes", e))?;
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
