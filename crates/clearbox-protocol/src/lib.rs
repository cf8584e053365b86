//! clearbox agent API: the ttrpc service served by `clearbox-agent` (PID 1 in the guest)
//! and a typed, transport-agnostic client.
//!
//! * [`pb`] holds the generated protobuf messages and ttrpc bindings of `proto/agent.proto`
//!   (package `clearbox.agent.v1`); read that file for the full contract, in particular the
//!   **output contract**: `WaitProcess` returns only after the process's stdout/stderr were
//!   drained to EOF inside the agent, and the host must read both streams until `eof`.
//! * [`AgentClient`] wraps the generated client: construct it from any connected byte-stream
//!   fd ([`AgentClient::new`], [`AgentClient::from_unix_stream`]) — e.g. a vsock hybrid
//!   socket after the `CONNECT 1024` handshake, or a Unix socket to a host-mode agent.
//! * [`server`] re-exports what the agent needs to serve the API.

mod client;
mod error;
mod types;

pub use client::AgentClient;
pub use error::AgentError;
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
    /// ttrpc client, server trait (`Agent`) and `create_agent` registration.
    #[allow(clippy::all, clippy::pedantic, clippy::restriction)]
    #[allow(dead_code, missing_docs, nonstandard_style, unused_results)]
    #[allow(unused_imports, unsafe_code, trivial_casts, unknown_lints)]
    pub mod agent_ttrpc {
        include!(concat!(env!("OUT_DIR"), "/agent_ttrpc.rs"));
    }
}

/// Server side, for the agent: implement [`server::Agent`], register it with
/// [`server::create_agent`] on a [`server::Server`].
pub mod server {
    pub use crate::pb::agent_ttrpc::{create_agent, Agent};
    pub use ttrpc::{get_status, Code, Error, Result, Server, TtrpcContext};
}
