//! clearbox agent API: the ttrpc service served by `clearbox-agent` (PID 1 in the guest)
//! and a typed, transport-agnostic client.
//!
//! * [`pb`] holds the generated protobuf messages and ttrpc bindings of `proto/agent.proto`
//!   (package `clearbox.agent.v1`); read that file for the full contract.
//! * [`AgentClient`] (feature `client`, on by default; the host crates enable it, the guest
//!   agent builds without it) wraps the generated client: construct it from any connected
//!   stream socket ([`AgentClient::new`], [`AgentClient::from_unix_stream`]) — a vsock hybrid
//!   socket after the `CONNECT 1024` handshake, a vsock socket, or a Unix socket to a host-mode
//!   agent (`clearbox-agent --no-init --listen-unix PATH`).
//! * [`server`] re-exports what the agent needs to serve the API.
//!
//! # Output contract
//! Output written by a process just before it exits is never lost: `WaitProcess` returns
//! only after the agent drained the process's stdout and stderr to EOF (into bounded
//! buffers), and the host reads each stream until [`ReadChunk::Eof`]. [`AgentClient::run`]
//! and [`AgentClient::read_to_end`] do this for you. An exec'd process is forgotten by the
//! agent once its status and both EOFs were delivered.
//!
//! # Example
//! ```no_run
//! use std::io::{BufRead, BufReader, Write};
//! use std::os::unix::net::UnixStream;
//! use clearbox_protocol::{AgentClient, ProcessId, ProcessSpec, Stream, AGENT_VSOCK_PORT};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // vhost-device-vsock hybrid socket: handshake, then the raw stream carries ttrpc.
//! let mut s = UnixStream::connect("/run/vm/vsock.sock")?;
//! s.write_all(format!("CONNECT {AGENT_VSOCK_PORT}\n").as_bytes())?;
//! let mut ok = Vec::new();
//! BufReader::with_capacity(1, &s).read_until(b'\n', &mut ok)?; // "OK <port>\n"
//! let agent = AgentClient::from_unix_stream(s)?;
//!
//! // Every process runs in a container (created with `create_container`, started).
//! // One call: exec, drain stdout+stderr, wait.
//! let out = agent.run(&ProcessId::container_exec("c1", "e1"), &ProcessSpec::new(["uname", "-r"]))?;
//! assert!(out.status.success());
//!
//! // Step by step, with stdin.
//! let id = ProcessId::container_exec("c1", "cat");
//! let mut spec = ProcessSpec::new(["cat"]);
//! spec.stdin = true;
//! agent.exec(&id, &spec)?;
//! agent.write_stdin(&id, b"hello")?;
//! agent.close_stdin(&id)?;
//! let stdout = agent.read_to_end(&id, Stream::Stdout)?;
//! let _stderr = agent.read_to_end(&id, Stream::Stderr)?;
//! let status = agent.wait(&id, None)?;
//! # let _ = (stdout, status);
//! # Ok(()) }
//! ```
//!
//! Boot timing: [`AgentClient::version`] returns the agent's boot milestones
//! (CLOCK_BOOTTIME ns: agent start, mounts done, listening, first request).

// Tests may unwrap: a panic is the failure report there.
#![cfg_attr(test, allow(clippy::unwrap_used))]

#[cfg(feature = "client")]
mod client;
mod error;
pub mod guest;
pub mod mux;
pub mod net;
pub mod request;
#[cfg(feature = "client")]
mod runtime;
mod types;

#[cfg(feature = "client")]
pub use client::AgentClient;
pub use error::AgentError;
pub use guest::{ContainerId, ShareDir};
pub use request::{GuestProcess, GuestSpec, Stdio};
pub use types::{ExitStatus, Output, ProcessId, ProcessSpec, ReadChunk, RootfsLocation, Stream};

/// vsock port the agent listens on inside the guest.
pub const AGENT_VSOCK_PORT: u32 = 1024;
/// Revision of the API in `proto/agent.proto`, reported by `Version`.
pub const API_VERSION: u32 = 1;
/// Largest chunk a single `ReadStdout`/`ReadStderr` returns.
pub const MAX_READ_CHUNK: u32 = 1024 * 1024;
/// Chunk size used when a read request asks for `max_len = 0`.
pub const DEFAULT_READ_CHUNK: u32 = 64 * 1024;

/// Generated protobuf messages and ttrpc bindings for `proto/agent.proto`.
pub mod pb {
    /// Protobuf messages (`clearbox.agent.v1`).
    #[allow(clippy::all, clippy::pedantic, clippy::restriction)]
    #[allow(dead_code, missing_docs, nonstandard_style, unused_results)]
    #[allow(unused_mut, unused_attributes, trivial_casts, unknown_lints)]
    pub mod agent {
        include!(concat!(env!("OUT_DIR"), "/agent.rs"));
    }
    /// ttrpc client (async with the `client` feature), sync server trait (`Agent`) and
    /// `create_agent` registration.
    #[allow(clippy::all, clippy::pedantic, clippy::restriction)]
    #[allow(dead_code, missing_docs, nonstandard_style, unused_results)]
    #[allow(unused_imports, unsafe_code, trivial_casts, unknown_lints)]
    pub mod agent_ttrpc {
        include!(concat!(env!("OUT_DIR"), "/agent_ttrpc.rs"));
    }
}

pub mod server;
