//! The real agent binary in host mode (`--no-init --listen-unix`), shared by the tests.

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use clearbox_protocol::AgentClient;

pub struct Agent {
    pub child: Child,
    pub socket: PathBuf,
    /// Holds the socket and the agent's run directory (`run/`).
    pub dir: tempfile::TempDir,
}

impl Agent {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("agent.sock");
        let child = Command::new(env!("CARGO_BIN_EXE_clearbox-agent"))
            .args(["--no-init", "--listen-unix"])
            .arg(&socket)
            .arg("--run-dir")
            .arg(dir.path().join("run"))
            .spawn()
            .expect("start agent");
        // The socket file appears at bind(), just before listen(): wait until it accepts.
        let until = Instant::now() + Duration::from_secs(10);
        while UnixStream::connect(&socket).is_err() {
            assert!(Instant::now() < until, "agent is not accepting connections");
            std::thread::sleep(Duration::from_millis(5));
        }
        Self { child, socket, dir }
    }

    pub fn client(&self) -> AgentClient {
        let s = UnixStream::connect(&self.socket).expect("connect");
        AgentClient::from_unix_stream(s)
            .expect("client")
            .with_timeout(Duration::from_secs(20))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
