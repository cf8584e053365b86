//! The ttrpc `Agent` service: the agent's edge. Requests are decoded here into their typed
//! form, and the domain errors of everything below (`error::Error`) become ttrpc status codes
//! here and only here (`impl From<error::Error> for ttrpc::Error`).

use std::sync::Arc;

use clearbox_protocol::pb::agent as pb;
use clearbox_protocol::request::{CreateContainer, ExecProcess};
use clearbox_protocol::server::{get_status, Agent, Code, Error, Result, TtrpcContext};
use clearbox_protocol::{API_VERSION, DEFAULT_READ_CHUNK, MAX_READ_CHUNK};
use clearbox_util::error::chain;

use crate::container;
use crate::error::Error as Failure;
use crate::milestones::{self, Milestone};
use crate::process::{Process, WaitResult, Which};
use crate::state::{Key, State};
use crate::target;

fn status(code: Code, msg: impl std::fmt::Display) -> Error {
    Error::RpcStatus(get_status(code, msg.to_string()))
}

/// The one mapping of the agent's domain errors to ttrpc: the code the error stands for, and
/// its message with the whole source chain.
impl From<Failure> for Error {
    fn from(e: Failure) -> Self {
        status(e.code(), chain(&e))
    }
}

pub struct Service {
    pub state: Arc<State>,
    pub is_init: bool,
    /// Called on Shutdown (powers off as PID 1; exits in host mode).
    pub on_shutdown: Box<dyn Fn() + Send + Sync>,
}

/// The request's connection was closed (ttrpc drops the cancel sender).
fn cancelled(ctx: &TtrpcContext) -> bool {
    matches!(ctx.cancel_rx.try_recv(), Err(e) if e.is_disconnected())
}

fn key(container_id: &str, exec_id: &str) -> Key {
    (container_id.to_string(), exec_id.to_string())
}

impl Service {
    fn touch(&self) {
        milestones::mark(Milestone::FirstRequest);
    }

    fn find(&self, container_id: &str, exec_id: &str) -> Result<Arc<Process>> {
        Ok(target::find(&self.state, container_id, exec_id).map_err(Failure::from)?)
    }

    /// Drops an exec'd process once everything about it was delivered.
    fn maybe_release(&self, container_id: &str, exec_id: &str, p: &Process) {
        if exec_id.is_empty() || !p.fully_delivered() {
            return;
        }
        let mut t = self.state.table();
        let k = key(container_id, exec_id);
        if t.procs.get(&k).is_some_and(|q| q.pid == p.pid) {
            t.procs.remove(&k);
        }
    }

    fn read(
        &self,
        ctx: &TtrpcContext,
        req: &pb::ReadStreamRequest,
        which: Which,
    ) -> Result<pb::ReadStreamResponse> {
        let p = self.find(&req.container_id, &req.exec_id)?;
        let max = match req.max_len {
            0 => DEFAULT_READ_CHUNK,
            n => n.min(MAX_READ_CHUNK),
        };
        let chunk = p.read(which, max as usize, req.wait_timeout_ms, &|| cancelled(ctx));
        let mut r = pb::ReadStreamResponse::new();
        r.eof = chunk.eof;
        r.data = chunk.data;
        if r.eof {
            self.maybe_release(&req.container_id, &req.exec_id, &p);
        }
        Ok(r)
    }
}

fn empty() -> Result<pb::Empty> {
    Ok(pb::Empty::new())
}

impl Agent for Service {
    fn create_container(
        &self,
        _ctx: &TtrpcContext,
        req: pb::CreateContainerRequest,
    ) -> Result<pb::Empty> {
        self.touch();
        crate::debug!("create {}: request received", req.container_id);
        let req = CreateContainer::from_wire(&req).map_err(Failure::from)?;
        crate::debug!("create {}: request decoded", req.id.as_str());
        container::create(&self.state, req)?;
        empty()
    }

    fn start_container(&self, _ctx: &TtrpcContext, req: pb::ContainerRequest) -> Result<pb::Empty> {
        self.touch();
        crate::debug!("start {}: request received", req.container_id);
        target::container_id(&req.container_id).map_err(Failure::from)?;
        container::start(&self.state, &req.container_id)?;
        empty()
    }

    fn remove_container(
        &self,
        _ctx: &TtrpcContext,
        req: pb::RemoveContainerRequest,
    ) -> Result<pb::Empty> {
        self.touch();
        target::container_id(&req.container_id).map_err(Failure::from)?;
        container::remove(&self.state, &req.container_id, req.force)?;
        empty()
    }

    fn pause_container(&self, _ctx: &TtrpcContext, req: pb::ContainerRequest) -> Result<pb::Empty> {
        self.touch();
        target::container_id(&req.container_id).map_err(Failure::from)?;
        container::freeze(&self.state, &req.container_id, true)?;
        empty()
    }

    fn resume_container(
        &self,
        _ctx: &TtrpcContext,
        req: pb::ContainerRequest,
    ) -> Result<pb::Empty> {
        self.touch();
        target::container_id(&req.container_id).map_err(Failure::from)?;
        container::freeze(&self.state, &req.container_id, false)?;
        empty()
    }

    fn update_container(
        &self,
        _ctx: &TtrpcContext,
        req: pb::UpdateContainerRequest,
    ) -> Result<pb::Empty> {
        self.touch();
        target::container_id(&req.container_id).map_err(Failure::from)?;
        container::update(&self.state, &req.container_id, &req.resources_json)?;
        empty()
    }

    fn exec_process(&self, _ctx: &TtrpcContext, req: pb::ExecProcessRequest) -> Result<pb::Empty> {
        self.touch();
        // Said this way (not as a bad id): nothing runs outside a container.
        target::container_id(&req.container_id).map_err(Failure::from)?;
        let req = ExecProcess::from_wire(&req).map_err(Failure::from)?;
        container::exec(&self.state, req)?;
        empty()
    }

    fn signal_process(
        &self,
        _ctx: &TtrpcContext,
        req: pb::SignalProcessRequest,
    ) -> Result<pb::Empty> {
        self.touch();
        let sig = i32::try_from(req.signal).map_err(|_| Failure::BadSignal)?;
        target::container_id(&req.container_id).map_err(Failure::from)?;
        if req.exec_id.is_empty() && req.all {
            container::kill_all(&self.state, &req.container_id, sig)?;
            return empty();
        }
        let p = self.find(&req.container_id, &req.exec_id)?;
        if p.has_exited() {
            return Err(Failure::Exited.into());
        }
        // Guest processes run in their own session: `all` signals the process group.
        let target = if req.all { -p.pid } else { p.pid };
        // SAFETY: kill(2) with plain integers; no memory is passed.
        let rc = unsafe { libc::kill(target, sig) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            return Err(Failure::os(format!("kill {target} {sig}"), e).into());
        }
        empty()
    }

    fn wait_process(
        &self,
        ctx: &TtrpcContext,
        req: pb::WaitProcessRequest,
    ) -> Result<pb::WaitProcessResponse> {
        self.touch();
        let p = self.find(&req.container_id, &req.exec_id)?;
        match p.wait(req.timeout_ms, &|| cancelled(ctx)) {
            WaitResult::TimedOut => Err(Failure::StillRunning.into()),
            WaitResult::Done(exit) => {
                self.maybe_release(&req.container_id, &req.exec_id, &p);
                let mut r = pb::WaitProcessResponse::new();
                r.exit_code = exit.code;
                r.signal = exit.signal;
                r.core_dumped = exit.core_dumped;
                Ok(r)
            }
        }
    }

    fn list_processes(
        &self,
        _ctx: &TtrpcContext,
        req: pb::ContainerRequest,
    ) -> Result<pb::ListProcessesResponse> {
        self.touch();
        let mut r = pb::ListProcessesResponse::new();
        target::container_id(&req.container_id).map_err(Failure::from)?;
        r.pids = container::pids(&self.state, &req.container_id)?;
        r.processes = crate::ps::table(&r.pids);
        Ok(r)
    }

    fn write_stdin(
        &self,
        _ctx: &TtrpcContext,
        req: pb::WriteStdinRequest,
    ) -> Result<pb::WriteStdinResponse> {
        self.touch();
        let p = self.find(&req.container_id, &req.exec_id)?;
        let n = p.write_stdin(&req.data).map_err(Failure::Stdin)?;
        let mut r = pb::WriteStdinResponse::new();
        r.len = n as u64;
        Ok(r)
    }

    fn close_stdin(&self, _ctx: &TtrpcContext, req: pb::ProcessRequest) -> Result<pb::Empty> {
        self.touch();
        let p = self.find(&req.container_id, &req.exec_id)?;
        p.close_stdin().map_err(|e| Failure::os("close stdin", e))?;
        empty()
    }

    fn read_stdout(
        &self,
        ctx: &TtrpcContext,
        req: pb::ReadStreamRequest,
    ) -> Result<pb::ReadStreamResponse> {
        self.touch();
        self.read(ctx, &req, Which::Stdout)
    }

    fn read_stderr(
        &self,
        ctx: &TtrpcContext,
        req: pb::ReadStreamRequest,
    ) -> Result<pb::ReadStreamResponse> {
        self.touch();
        self.read(ctx, &req, Which::Stderr)
    }

    fn tty_win_resize(
        &self,
        _ctx: &TtrpcContext,
        req: pb::TtyWinResizeRequest,
    ) -> Result<pb::Empty> {
        self.touch();
        let p = self.find(&req.container_id, &req.exec_id)?;
        let Some(master) = p.pty_master.as_ref() else {
            return Err(Failure::NoTerminal.into());
        };
        let ws = libc::winsize {
            ws_row: u16::try_from(req.rows).unwrap_or(u16::MAX),
            ws_col: u16::try_from(req.cols).unwrap_or(u16::MAX),
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        use std::os::fd::AsRawFd;
        // SAFETY: TIOCSWINSZ reads a `winsize` that lives on the stack for the whole call;
        // the fd is owned by `p` and open.
        let rc = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            return Err(Failure::os("TIOCSWINSZ", e).into());
        }
        empty()
    }

    fn stats(&self, _ctx: &TtrpcContext, req: pb::ContainerRequest) -> Result<pb::StatsResponse> {
        self.touch();
        target::container_id(&req.container_id).map_err(Failure::from)?;
        Ok(container::stats(&self.state, &req.container_id)?)
    }

    fn check(&self, _ctx: &TtrpcContext, _req: pb::Empty) -> Result<pb::CheckResponse> {
        self.touch();
        let mut r = pb::CheckResponse::new();
        r.serving = true;
        Ok(r)
    }

    fn version(&self, _ctx: &TtrpcContext, _req: pb::Empty) -> Result<pb::VersionResponse> {
        self.touch();
        let mut r = pb::VersionResponse::new();
        r.agent_version = env!("CARGO_PKG_VERSION").to_string();
        r.api_version = API_VERSION;
        r.kernel_release = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        r.milestones = protobuf::MessageField::some(milestones::snapshot());
        r.is_init = self.is_init;
        Ok(r)
    }

    fn shutdown(&self, _ctx: &TtrpcContext, _req: pb::Empty) -> Result<pb::Empty> {
        self.touch();
        crate::debug!("shutdown requested");
        (self.on_shutdown)();
        empty()
    }

    fn update_interfaces(
        &self,
        _ctx: &TtrpcContext,
        req: pb::UpdateInterfacesRequest,
    ) -> Result<pb::Empty> {
        self.touch();
        self.network_allowed()?;
        let ifaces = req
            .interfaces
            .iter()
            .map(clearbox_protocol::net::interface_from_wire)
            .collect::<std::result::Result<Vec<_>, String>>()
            .map_err(Failure::BadNetwork)?;
        // Restored from a template: the NICs still have the template's placeholder MACs.
        clearbox_net::apply::claim_template_nics(&ifaces, |i| {
            clearbox_net::MacAddr(clearbox_protocol::mux::template_nic_mac(i))
        })
        .map_err(Failure::Network)?;
        clearbox_net::apply::configure_interfaces(&ifaces).map_err(Failure::Network)?;
        empty()
    }

    fn update_routes(
        &self,
        _ctx: &TtrpcContext,
        req: pb::UpdateRoutesRequest,
    ) -> Result<pb::Empty> {
        self.touch();
        self.network_allowed()?;
        let routes = req
            .routes
            .iter()
            .map(clearbox_protocol::net::route_from_wire)
            .collect::<std::result::Result<Vec<_>, String>>()
            .map_err(Failure::BadNetwork)?;
        clearbox_net::apply::add_routes(&routes).map_err(Failure::Network)?;
        empty()
    }
}

impl Service {
    /// Network changes apply to the agent's own namespace: only a VM's init may make them
    /// (in host test mode they would reconfigure the host).
    fn network_allowed(&self) -> Result<()> {
        if self.is_init {
            Ok(())
        } else {
            Err(Failure::NotInit.into())
        }
    }
}
