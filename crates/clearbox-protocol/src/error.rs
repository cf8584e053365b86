use ttrpc::Code;

/// Errors of [`crate::AgentClient`] calls.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The connection failed or was closed.
    #[error("agent connection failed")]
    Transport(#[source] ttrpc::Error),
    /// The call did not complete in time (client timeout or `DEADLINE_EXCEEDED`).
    #[error("agent call {0} timed out")]
    Timeout(&'static str),
    /// The agent answered with a non-OK status.
    #[error("agent {method}: {code:?}: {message}")]
    Status {
        method: &'static str,
        code: Code,
        message: String,
    },
    /// A process spec could not be encoded.
    #[error("encoding process spec")]
    Encode(#[source] serde_json::Error),
}

impl AgentError {
    #[cfg(feature = "client")]
    pub(crate) fn from_ttrpc(method: &'static str, err: ttrpc::Error) -> Self {
        match err {
            ttrpc::Error::RpcStatus(s) if s.code() == Code::DEADLINE_EXCEEDED => {
                AgentError::Timeout(method)
            }
            ttrpc::Error::RpcStatus(s) => AgentError::Status {
                method,
                code: s.code(),
                message: s.message().to_string(),
            },
            // ttrpc's clients report their own deadline as `Others`: "Request deadline elapsed"
            // (async), "... timeout ..." (sync).
            ttrpc::Error::Others(ref m)
                if m.contains("deadline elapsed") || m.contains("timeout") =>
            {
                AgentError::Timeout(method)
            }
            other => AgentError::Transport(other),
        }
    }

    /// The status code when the agent answered with an error.
    pub fn code(&self) -> Option<Code> {
        match self {
            AgentError::Status { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The container or process does not exist (any more).
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(Code::NOT_FOUND)
    }
}
