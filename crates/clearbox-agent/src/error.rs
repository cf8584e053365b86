//! The agent's domain errors. Everything below the service edge works with these; `service`
//! turns them into ttrpc status codes in one place (`impl From<Error> for ttrpc::Error`),
//! with [`Error::code`].

use std::path::PathBuf;

use clearbox_protocol::server::Code;

use crate::bundle::BundleError;
use crate::helper::HelperError;
use crate::target::RequestError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request names no process, or one that does not exist.
    #[error(transparent)]
    Target(#[from] RequestError),
    /// A request cannot be decoded into its typed form (id, spec or process).
    #[error(transparent)]
    Decode(#[from] clearbox_protocol::request::RequestError),
    #[error("bad virtio-fs tag {0:?}")]
    BadTag(String),
    #[error("rootfs {} is not a directory", .0.display())]
    BadRootfs(PathBuf),
    #[error("spec")]
    Spec(#[source] BundleError),
    #[error("process")]
    Process(#[source] BundleError),
    #[error("bad sysctl {0:?}")]
    BadSysctl(String),
    /// An update's resources are not an OCI LinuxResources object.
    #[error("update container {id:?}: invalid resources")]
    BadResources {
        id: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("sysctl {key}={value}")]
    Sysctl {
        key: String,
        value: String,
        #[source]
        source: std::io::Error,
    },
    #[error("signal out of range")]
    BadSignal,
    /// A network request the agent cannot read (the reason).
    #[error("{0}")]
    BadNetwork(String),
    #[error("no container {0:?}")]
    NoContainer(String),
    #[error("container {0:?} exists")]
    ContainerExists(String),
    #[error("exec {exec_id:?} exists in {id:?}")]
    ExecExists { id: String, exec_id: String },
    #[error("process already exited")]
    Exited,
    #[error("container {0:?} is not running")]
    NotRunning(String),
    #[error("container {0:?} already started")]
    AlreadyStarted(String),
    #[error("container {0:?} is paused")]
    Paused(String),
    #[error("container {0:?} is running (use force)")]
    Running(String),
    /// Pause or resume refused by the library (e.g. a container that is not in that state).
    #[error("{what} container {id:?}")]
    Freeze {
        what: &'static str,
        id: String,
        #[source]
        source: Box<clearbox_container::Error>,
    },
    #[error("write stdin")]
    Stdin(#[source] std::io::Error),
    #[error("process has no terminal")]
    NoTerminal,
    #[error("network changes are only made by the agent running as a VM's init")]
    NotInit,
    #[error("process still running")]
    StillRunning,
    #[error("container {0:?} did not die")]
    DidNotDie(String),
    /// The container library failed.
    #[error("{what} {id:?}")]
    Library {
        what: &'static str,
        id: String,
        #[source]
        source: Box<clearbox_container::Error>,
    },
    /// The container setup helper failed.
    #[error("{what} {id:?}")]
    Helper {
        what: &'static str,
        id: String,
        #[source]
        source: HelperError,
    },
    /// An OS call failed; `what` names it.
    #[error("{what}")]
    Os {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the container sent no pty master over the console socket")]
    NoPtyMaster,
    #[error("network setup")]
    Network(#[source] clearbox_net::Error),
}

impl Error {
    /// An OS call `what` failed with `e`.
    pub fn os(what: impl Into<String>, e: impl Into<std::io::Error>) -> Self {
        Error::Os {
            what: what.into(),
            source: e.into(),
        }
    }

    /// The ttrpc status code the host sees (see "Errors" in `proto/agent.proto`).
    pub fn code(&self) -> Code {
        use Error as E;
        match self {
            E::Target(RequestError::UnknownProcess { .. }) => Code::NOT_FOUND,
            E::Target(RequestError::EmptyContainerId) => Code::INVALID_ARGUMENT,
            E::Decode(_)
            | E::BadTag(_)
            | E::BadRootfs(_)
            | E::Spec(_)
            | E::Process(_)
            | E::BadSysctl(_)
            | E::BadResources { .. }
            | E::Sysctl { .. }
            | E::BadSignal
            | E::BadNetwork(_) => Code::INVALID_ARGUMENT,
            // The library refused: almost always the spec or process (missing binary, bad
            // mount).
            E::Helper {
                source: HelperError::Setup(_),
                ..
            } => Code::INVALID_ARGUMENT,
            E::NoContainer(_) | E::Exited => Code::NOT_FOUND,
            E::ContainerExists(_) | E::ExecExists { .. } => Code::ALREADY_EXISTS,
            E::NotRunning(_)
            | E::AlreadyStarted(_)
            | E::Paused(_)
            | E::Running(_)
            | E::Freeze { .. }
            | E::Stdin(_)
            | E::NoTerminal
            | E::NotInit => Code::FAILED_PRECONDITION,
            E::StillRunning | E::DidNotDie(_) => Code::DEADLINE_EXCEEDED,
            E::Library { .. }
            | E::Helper { .. }
            | E::Os { .. }
            | E::NoPtyMaster
            | E::Network(_) => Code::INTERNAL,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_protocol() {
        assert_eq!(Error::NoContainer("c".into()).code(), Code::NOT_FOUND);
        assert_eq!(
            Error::Target(RequestError::EmptyContainerId).code(),
            Code::INVALID_ARGUMENT
        );
        assert_eq!(
            Error::Helper {
                what: "create container",
                id: "c".into(),
                source: HelperError::Setup("no such file".into())
            }
            .code(),
            Code::INVALID_ARGUMENT
        );
        assert_eq!(
            Error::Helper {
                what: "create container",
                id: "c".into(),
                source: HelperError::NoAnswer
            }
            .code(),
            Code::INTERNAL
        );
        assert_eq!(Error::Running("c".into()).code(), Code::FAILED_PRECONDITION);
        assert_eq!(
            Error::os("pipe", std::io::Error::from_raw_os_error(24)).code(),
            Code::INTERNAL
        );
    }
}
