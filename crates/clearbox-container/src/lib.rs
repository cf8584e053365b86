//! OCI container setup, independent of how it is invoked.
//!
//! Two isolations live here, both driven by plain paths and OCI types — no CLI, no state store,
//! no wire protocol — so the host runtime and the in-guest agent can share them:
//!
//! * [`namespaces`]: runc-style containers (namespaces, pivot_root, mounts, cgroups v1/v2,
//!   seccomp, capabilities, hooks), built on youki's `libcontainer`.
//! * [`fly`]: rkt-style host-level containers: chroot, user, capabilities, rlimits, env and cwd,
//!   no new namespaces or cgroups.

pub mod cgroup_join;
pub mod cgroup_stats;
pub mod executor;
pub mod fly;
pub mod fly_mounts;
pub mod namespaces;
pub mod process;
mod seccomp;
pub mod shared_cgroup;

/// Why a container operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Libcontainer(#[from] libcontainer::error::LibcontainerError),
    #[error("cgroups")]
    Cgroups(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("{what}")]
    Sys {
        what: String,
        #[source]
        source: nix::Error,
    },
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Setup(String),
    #[error("{0} is not supported with isolation fly (no cgroups)")]
    Unsupported(&'static str),
    #[error("hook")]
    Hook(#[source] libcontainer::hooks::HookError),
}

impl Error {
    pub(crate) fn sys(what: impl Into<String>, source: nix::Error) -> Self {
        Self::Sys {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}

/// Container status as the setup library sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}
