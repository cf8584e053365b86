//! Bodies of the fuzz targets, one function per target. `fuzz/` (a cargo-fuzz crate with its own
//! workspace, built with `RUSTC_BOOTSTRAP=1`) calls them from libFuzzer; `tests/regressions.rs`
//! replays every input kept in `fuzz/regressions/<target>/` through them in the normal
//! `cargo test`, so an input that once crashed stays a test. Every function must return (or
//! fail) without panicking, hanging or growing without bound, whatever the bytes.
//!
//! The agent is a static binary without a library: its request decoding is the protocol
//! crate's typed requests (`CreateContainer::from_wire`, `ExecProcess::from_wire`: the one
//! parse of every spec and process JSON), and its `bundle` module (the spec the agent prepares
//! for libcontainer) is compiled here from the agent's own source file, not copied.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use clearbox_protocol::pb::agent as pb;
use clearbox_protocol::request::{CreateContainer, ExecProcess};
use clearbox_protocol::server::{create_agent, Agent, Server};
use clearbox_protocol::{AgentClient, ProcessId, ProcessSpec, RootfsLocation, Stream};
use protobuf::Message;

/// The agent's console logging, which `bundle` calls; silent here.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => {{
        let _ = format_args!($($arg)*);
    }};
}

#[allow(dead_code, clippy::all)]
#[path = "../../clearbox-agent/src/bundle.rs"]
mod bundle;

/// A fuzz target body.
pub type Target = fn(&[u8]);

/// The targets, by name (what `scripts/fuzz.sh` and the regression test iterate over).
pub const TARGETS: &[(&str, Target)] = &[
    ("spec_json", spec_json),
    ("state_json", state_json),
    ("config_toml", config_toml),
    ("agent_request", agent_request),
    ("agent_reply", agent_reply),
];

/// config.json as `create` validates it (the core), then as the agent parses and prepares it.
pub fn spec_json(data: &[u8]) {
    if let Ok(spec) = serde_json::from_slice::<oci_spec::runtime::Spec>(data) {
        if clearbox_core::runtime::check_spec(&spec).is_ok() {
            let _ = clearbox_core::isolation::select(
                spec.annotations().as_ref(),
                None,
                None,
                clearbox_core::Isolation::Vm,
            );
            let _ = clearbox_core::runtime::merge_exec_process(&spec, &Default::default());
        }
    }
    agent_spec(data);
}

/// What the agent does with the spec of a CreateContainer request and the process of an
/// ExecProcess request.
fn agent_spec(data: &[u8]) {
    let mut create = pb::CreateContainerRequest::new();
    create.container_id = "c1".into();
    create.oci_spec_json = data.to_vec();
    agent_create(&create);
    let mut exec = pb::ExecProcessRequest::new();
    exec.container_id = "c1".into();
    exec.exec_id = "e1".into();
    exec.process_json = data.to_vec();
    agent_exec(&exec, &oci_spec::runtime::Spec::default());
}

/// A CreateContainer request as the agent decodes it and prepares its bundle; then an exec of
/// the container's own process into it.
fn agent_create(r: &pb::CreateContainerRequest) {
    let Ok(req) = CreateContainer::from_wire(r) else {
        return;
    };
    let process = req.spec.process().clone();
    if let Ok(prepared) = bundle::prepare(
        req.spec,
        &req.id,
        Path::new("/run/clearbox/shared/rootfs"),
        req.rootfs_readonly,
        req.stdio.terminal,
        clearbox_protocol::guest::CGROUP_PARENT,
        bundle::Lsm::default(),
    ) {
        let _ = serde_json::to_vec(&prepared);
        if let Some(p) = process {
            let _ = bundle::exec_process(p, false, &prepared, bundle::Lsm::default());
        }
    }
}

/// An ExecProcess request as the agent decodes it and completes its process, in a container
/// whose spec is `container`.
fn agent_exec(r: &pb::ExecProcessRequest, container: &oci_spec::runtime::Spec) {
    if let Ok(req) = ExecProcess::from_wire(r) {
        if let Ok(p) = bundle::exec_process(req.process, true, container, bundle::Lsm::default()) {
            let _ = serde_json::to_vec(&p);
        }
    }
}

/// state.json as every command reads it, and its OCI view as `state` prints it.
pub fn state_json(data: &[u8]) {
    if let Ok(state) = clearbox_core::State::from_json(data) {
        let _ = serde_json::to_vec(&state.oci());
        let _ = serde_json::to_vec(&state);
    }
}

/// /etc/clearbox/config.toml.
pub fn config_toml(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = clearbox_core::Config::parse(text);
    }
}

/// The agent's request decoding: every request message from raw protobuf bytes, and raw bytes
/// as ttrpc frames through a real ttrpc server serving the agent's service (frame header,
/// length limits, request envelope, method dispatch, message decoding). The service behind it
/// refuses every call (the generated defaults): what is fuzzed is the decoding.
pub fn agent_request(data: &[u8]) {
    decode_requests(data);
    let Ok(mut s) = UnixStream::connect(stub_server()) else {
        return;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(10)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    let _ = s.write_all(data);
    let _ = s.shutdown(std::net::Shutdown::Write);
    // Take what the server answers for a moment, then hang up: a server that does not clean up
    // closed connections shows as growing memory (-rss_limit_mb).
    let mut sink = Vec::new();
    let _ = s.take(8 << 20).read_to_end(&mut sink);
}

fn decode_requests(data: &[u8]) {
    fn one<M: Message>(data: &[u8]) {
        if let Ok(m) = M::parse_from_bytes(data) {
            let _ = m.write_to_bytes();
        }
    }
    one::<pb::CreateContainerRequest>(data);
    one::<pb::ContainerRequest>(data);
    one::<pb::RemoveContainerRequest>(data);
    one::<pb::ProcessRequest>(data);
    one::<pb::ExecProcessRequest>(data);
    one::<pb::SignalProcessRequest>(data);
    one::<pb::WaitProcessRequest>(data);
    one::<pb::WriteStdinRequest>(data);
    one::<pb::ReadStreamRequest>(data);
    one::<pb::TtyWinResizeRequest>(data);
    one::<pb::Empty>(data);
    if let Ok(r) = pb::CreateContainerRequest::parse_from_bytes(data) {
        agent_create(&r);
    }
    if let Ok(r) = pb::ExecProcessRequest::parse_from_bytes(data) {
        agent_exec(&r, &oci_spec::runtime::Spec::default());
    }
}

struct Refuse;
impl Agent for Refuse {}

/// A ttrpc server with the agent's service on a Unix socket, started once per process.
fn stub_server() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        // libFuzzer's main is not Rust's: SIGPIPE is not ignored, and the server writing an
        // answer to a connection that hung up would kill the process (the agent, a Rust
        // binary, ignores SIGPIPE from the start).
        // SAFETY: signal(2) with integer arguments, before any thread of ours writes a socket.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
        let dir = std::env::temp_dir().join(format!("clearbox-fuzz-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("agent.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).expect("bind fuzz server socket");
        Server::new(create_agent(Arc::new(Refuse)))
            .start(listener.into())
            .expect("start fuzz server");
        path
    })
}

/// The host's decoding of agent replies: a fake agent answers one call of the real
/// `AgentClient` with the fuzz bytes (first byte: which call; the reply's stream id is patched
/// to the request's so that a well-formed frame is matched).
pub fn agent_reply(data: &[u8]) {
    let Some((&call, reply)) = data.split_first() else {
        return;
    };
    let Ok((ours, theirs)) = UnixStream::pair() else {
        return;
    };
    let reply = reply.to_vec();
    let agent = std::thread::spawn(move || fake_agent(theirs, reply));
    if let Ok(client) = AgentClient::from_unix_stream(ours) {
        // Short: a reply that never completes a call costs the whole timeout.
        let client = client.with_timeout(Duration::from_millis(100));
        let id = ProcessId::container_exec("c1", "e1");
        let t = Some(Duration::from_millis(1));
        match call % 10 {
            0 => drop(client.version()),
            1 => drop(client.check()),
            2 => drop(client.wait(&id, t)),
            3 => drop(client.read(&id, Stream::Stdout, 0, t)),
            4 => drop(client.stats("c1")),
            5 => drop(client.list_processes("c1")),
            6 => drop(client.write_stdin(&id, b"x")),
            7 => drop(client.exec(&id, &ProcessSpec::new(["true"]))),
            8 => drop(client.create_container(
                "c1",
                &clearbox_protocol::GuestSpec::from_json_text("{}".into()).expect("JSON"),
                &RootfsLocation::GuestPath("/".into()),
                false,
                false,
            )),
            _ => drop(client.shutdown()),
        }
    }
    let _ = agent.join();
}

/// Reads one request frame, answers with `reply`, closes.
fn fake_agent(mut s: UnixStream, mut reply: Vec<u8>) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut hdr = [0u8; 10];
    if s.read_exact(&mut hdr).is_err() {
        return;
    }
    let len = u32::from_be_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as u64;
    let mut payload = Vec::new();
    let _ = (&mut s).take(len).read_to_end(&mut payload);
    if reply.len() >= 8 {
        reply[4..8].copy_from_slice(&hdr[4..8]);
    }
    let _ = s.write_all(&reply);
}
