//! Error type of the driver.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong starting, talking to or tearing down a VM.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} not found at {path}")]
    MissingFile { what: &'static str, path: PathBuf },
    #[error("{0} not found (run scripts/install-deps.sh)")]
    MissingBinary(&'static str),
    #[error("invalid VM config: {0}")]
    InvalidConfig(String),
    #[error("accelerator kvm requested but unusable: {0}")]
    KvmUnusable(String),
    #[error("a VM already runs in {0}")]
    AlreadyRunning(PathBuf),
    #[error("{op} {path}")]
    Path {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot start {0}")]
    Spawn(String, #[source] io::Error),
    #[error("{role} exited ({status}) before it was ready: {log_tail}")]
    HelperDied {
        role: String,
        status: String,
        log_tail: String,
    },
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(std::time::Duration, String),
    #[error("the VM has exited ({status}); console: {console_tail}")]
    VmExited {
        status: String,
        console_tail: String,
    },
    #[error("agent port {port} handshake failed: {reason}")]
    Handshake { port: u32, reason: String },
    #[error("{0}")]
    Io(&'static str, #[source] io::Error),
    #[error("jail: {0}")]
    Jail(String),
    #[error("QEMU monitor: {0}")]
    Qmp(String),
    #[error("VM template: {0}")]
    Template(String),
    #[error("VM state {path} is corrupt")]
    State {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
