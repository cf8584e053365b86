//! clearbox runtime core.
//!
//! The core owns everything that does not depend on *how* a container is isolated: container ids,
//! the on-disk state (`<root>/<id>/state.json`, written atomically under a per-container lock),
//! the configuration file, the choice of isolation, the lifecycle state machine and the foreground
//! `run` loop. Isolation backends implement [`Backend`]; the core never imports one — the binary
//! hands the core a [`BackendRegistry`].

pub mod backend;
pub mod config;
pub mod error;
pub mod exe_seal;
pub mod foreground;
pub mod id;
pub mod isolation;
pub mod process;
pub mod runtime;
pub mod signal;
pub mod state;

pub use backend::{
    Backend, BackendError, BackendRegistry, ContainerCtx, CreateOpts, ExecOpts, ProcessRow,
};
pub use config::Config;
pub use error::Error;
pub use isolation::Isolation;
pub use runtime::Runtime;
pub use state::{State, Status};

/// The OCI runtime-spec version clearbox implements.
pub const OCI_VERSION: &str = "1.2.0";
