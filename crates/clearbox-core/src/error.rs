//! Errors of the runtime core.

use std::path::PathBuf;

use crate::backend::BackendError;
use crate::state::Status;

/// Everything the lifecycle can refuse or fail at. Messages are one line, lower case, and name
/// the problem; the wording of the common cases follows runc's, because containerd and podman
/// match on it ("does not exist", "not running").
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid container id {id:?}: {reason}")]
    InvalidId { id: String, reason: String },
    #[error("container {0} does not exist")]
    NotFound(String),
    #[error("container {0} already exists")]
    AlreadyExists(String),
    #[error("{action}: container {id} is {status}")]
    WrongState {
        action: &'static str,
        id: String,
        status: Status,
    },
    #[error("container not running")]
    NotRunning,
    #[error("cannot delete container {id} that is not stopped: {status}")]
    NotStopped { id: String, status: Status },
    #[error("bundle {path}: {reason}")]
    Bundle { path: PathBuf, reason: String },
    #[error("invalid config.json in {path}")]
    Spec {
        path: PathBuf,
        #[source]
        source: oci_spec::OciSpecError,
    },
    #[error("unknown signal {0:?}")]
    UnknownSignal(String),
    #[error("invalid isolation {0:?}: expected vm, namespaces or fly")]
    InvalidIsolation(String),
    #[error("isolation {0} is not available: {1}")]
    IsolationUnavailable(crate::Isolation, String),
    #[error("configuration file {path}")]
    Config {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("state of container {id}")]
    StateCorrupt {
        id: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Usage(String),
    /// A termination signal came while the container was being created; it was removed.
    #[error("create interrupted by {}: the container was removed", signal_name(*.0))]
    Interrupted(i32),
    #[error(transparent)]
    Backend(#[from] BackendError),
}

impl Error {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            what,
            path: path.into(),
            source,
        }
    }
}

/// "SIGTERM" for 15 (nix's names), "signal N" for a number nix does not name.
fn signal_name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {sig}"))
}
