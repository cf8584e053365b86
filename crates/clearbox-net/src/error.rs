use std::io;

/// Errors of the networking helpers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kernel refused a netlink request, or the socket failed.
    #[error("{op}")]
    Netlink {
        op: String,
        #[source]
        source: io::Error,
    },
    /// Another system call failed.
    #[error("{op}")]
    Io {
        op: String,
        #[source]
        source: io::Error,
    },
    /// A kernel answer that could not be decoded.
    #[error("netlink: cannot decode the kernel's answer: {0}")]
    Decode(String),
    /// Bad input (an address, a MAC, a missing interface).
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    pub(crate) fn io(op: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            op: op.into(),
            source,
        }
    }

    /// The errno behind a failed request, if any.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Netlink { source, .. } | Error::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}
