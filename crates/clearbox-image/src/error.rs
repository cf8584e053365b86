//! The image library's errors: short messages, sources chained, never repeated inline.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context} {}", path.display())]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid image reference {reference:?}: {reason}")]
    Reference { reference: String, reason: String },
    #[error("registry request for {image} failed")]
    Registry {
        image: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{what}: digest mismatch: expected {expected}, got {actual}")]
    Digest {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("invalid {what}: {reason}")]
    Invalid { what: String, reason: String },
    #[error("unsupported {what}: {reason}")]
    Unsupported { what: String, reason: String },
    #[error("layer {layer}: tar entry {entry:?} refused: {reason}")]
    UnsafeEntry {
        layer: String,
        entry: String,
        reason: String,
    },
    #[error("image {image} refused by policy {policy}: {reason}")]
    Refused {
        image: String,
        policy: String,
        reason: String,
    },
    #[error("policy {}: {reason}", path.display())]
    Policy { path: PathBuf, reason: String },
    #[error("image {0} is not in the store (pull or import it first)")]
    NotFound(String),
    #[error("privilege separation: {0}")]
    Privilege(String),
    #[error("trust: {0}")]
    Trust(String),
}

impl Error {
    pub fn io(context: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            context,
            path: path.into(),
            source,
        }
    }

    pub fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Invalid {
            what: what.into(),
            reason: reason.into(),
        }
    }

    pub fn unsupported(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Unsupported {
            what: what.into(),
            reason: reason.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
