//! Plain Rust types used by [`crate::AgentClient`] instead of raw protobuf messages.

use serde_json::json;

/// Names a process: see "Process identity" in `proto/agent.proto`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProcessId {
    /// Never empty: every process runs in a container (the agent refuses an empty id).
    pub container_id: String,
    /// Empty for a container's init process.
    pub exec_id: String,
}

impl ProcessId {
    /// The init process of a container.
    pub fn container(container_id: impl Into<String>) -> Self {
        Self {
            container_id: container_id.into(),
            exec_id: String::new(),
        }
    }

    /// A process exec'd into a container.
    pub fn container_exec(container_id: impl Into<String>, exec_id: impl Into<String>) -> Self {
        Self {
            container_id: container_id.into(),
            exec_id: exec_id.into(),
        }
    }
}

/// A process to exec; encoded as an OCI `Process` JSON object for `ExecProcess`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessSpec {
    pub args: Vec<String>,
    /// `KEY=value` entries; empty = agent default (`PATH=...`).
    pub env: Vec<String>,
    /// Empty = `/`.
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    /// Allocate a pty (merged output on stdout; resize with `tty_resize`).
    pub terminal: bool,
    /// Open a stdin stream; otherwise stdin is `/dev/null`.
    pub stdin: bool,
}

impl ProcessSpec {
    /// A process running `args` as root in `/`, pipes for stdout/stderr, no stdin.
    pub fn new<I, S>(args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            args: args.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// The OCI `Process` sent on the wire.
    pub fn to_guest_process(&self) -> Result<crate::GuestProcess, serde_json::Error> {
        let cwd = if self.cwd.is_empty() { "/" } else { &self.cwd };
        crate::GuestProcess::from_json_text(serde_json::to_string(&json!({
            "terminal": self.terminal,
            "user": {
                "uid": self.uid,
                "gid": self.gid,
                "additionalGids": self.additional_gids,
            },
            "args": self.args,
            "env": self.env,
            "cwd": cwd,
        }))?)
    }
}

/// Where a container's rootfs is inside the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootfsLocation {
    /// An absolute path in the guest.
    GuestPath(String),
    /// `path` below the mount of a virtio-fs `tag` (the agent mounts the tag).
    VirtioFs { tag: String, path: String },
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    /// Exit code; `128 + signal` when killed by a signal.
    pub code: i32,
    /// The signal that killed the process.
    pub signal: Option<i32>,
    pub core_dumped: bool,
}

impl ExitStatus {
    pub fn success(&self) -> bool {
        self.code == 0 && self.signal.is_none()
    }
}

/// One answer of `read_stdout`/`read_stderr`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadChunk {
    /// Bytes, in order. Empty when the read's wait timeout expired without data.
    Data(Vec<u8>),
    /// The stream ended; everything was returned before.
    Eof,
}

/// Which output stream to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Collected result of [`crate::AgentClient::run`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_spec_encodes_oci_process() {
        let mut spec = ProcessSpec::new(["sh", "-c", "true"]);
        spec.uid = 1000;
        spec.env = vec!["A=b".into()];
        let json: serde_json::Value =
            serde_json::from_slice(spec.to_guest_process().expect("encode").as_bytes())
                .expect("decode");
        assert_eq!(json["args"][2], "true");
        assert_eq!(json["user"]["uid"], 1000);
        assert_eq!(json["cwd"], "/");
        assert_eq!(json["env"][0], "A=b");
        assert_eq!(json["terminal"], false);
    }

    #[test]
    fn exit_status_success() {
        let ok = ExitStatus {
            code: 0,
            signal: None,
            core_dumped: false,
        };
        let killed = ExitStatus {
            code: 137,
            signal: Some(9),
            core_dumped: false,
        };
        assert!(ok.success());
        assert!(!killed.success());
    }
}
