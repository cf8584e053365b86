//! Errors of the VM backend.

use std::path::PathBuf;

use clearbox_core::BackendError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Msg(String),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("VM record {0}")]
    Record(
        PathBuf,
        #[source] Box<dyn std::error::Error + Send + Sync + 'static>,
    ),
    #[error("VM")]
    Vmm(#[from] clearbox_vmm::Error),
    #[error(transparent)]
    Agent(#[from] clearbox_protocol::AgentError),
    /// A termination signal came while waiting for the shim (the caller reports which).
    #[error("interrupted")]
    Interrupted,
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn errno(what: impl Into<String>, e: nix::errno::Errno) -> Self {
        Error::io(what, e.into())
    }

    /// The whole chain in one line, skipping causes the message already contains.
    pub fn one_line(&self) -> String {
        BackendError::flatten(self).message
    }
}

impl From<Error> for BackendError {
    fn from(e: Error) -> Self {
        BackendError::msg(e.one_line())
    }
}
