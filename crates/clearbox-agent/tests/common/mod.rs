//! The real agent binary in host mode (`--no-init --listen-unix`), and busybox containers for
//! it, shared by the tests.
#![allow(dead_code)]

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use clearbox_protocol::{AgentClient, RootfsLocation};
use serde_json::{json, Value};

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

const APPLETS: &[&str] = &[
    "sh", "echo", "hostname", "sleep", "cat", "ls", "ps", "id", "grep", "stty", "test", "true",
    "head", "wc", "stat", "tr", "pwd", "printf",
];

pub fn busybox_rootfs(dir: &Path) {
    for d in ["bin", "proc", "dev", "sys", "tmp", "data"] {
        std::fs::create_dir_all(dir.join(d)).expect("mkdir");
    }
    std::fs::copy("/bin/busybox", dir.join("bin/busybox")).expect("copy busybox");
    for app in APPLETS {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(app)).expect("symlink");
    }
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn require_root_and_busybox() {
    assert!(
        Path::new("/bin/busybox").exists() && nix_is_root(),
        "container tests need root and /bin/busybox (busybox-static)"
    );
}

/// A container's world: a busybox rootfs, a host directory bind-mounted at /data, and a
/// cgroup parent private to this test (removed on drop).
pub struct Fixture {
    pub rootfs: tempfile::TempDir,
    pub data: tempfile::TempDir,
    pub cgroup_parent: String,
}

impl Fixture {
    pub fn new(name: &str) -> Self {
        require_root_and_busybox();
        let rootfs = tempfile::tempdir().expect("rootfs");
        busybox_rootfs(rootfs.path());
        Self {
            rootfs,
            data: tempfile::tempdir().expect("data dir"),
            cgroup_parent: format!("clearbox-agent-test-{name}-{}", std::process::id()),
        }
    }

    pub fn rootfs(&self) -> RootfsLocation {
        RootfsLocation::GuestPath(self.rootfs.path().to_string_lossy().into_owned())
    }

    /// The OCI default spec (as `runc spec` writes it) running `script`, with /data mounted.
    pub fn spec(&self, id: &str, script: &str) -> Value {
        let mut v = serde_json::to_value(oci_spec::runtime::Spec::default()).expect("default");
        v["process"]["args"] = json!(["/bin/sh", "-c", script]);
        v["process"]["env"] = json!(["PATH=/bin", "TERM=xterm"]);
        v["process"]["terminal"] = json!(false);
        v["root"] = json!({"path": "rootfs", "readonly": false});
        v["hostname"] = json!("box1");
        v["linux"]["cgroupsPath"] = json!(format!("/{}/{id}", self.cgroup_parent));
        v["mounts"].as_array_mut().expect("mounts").push(json!({
            "destination": "/data",
            "type": "bind",
            "source": self.data.path(),
            "options": ["rbind", "rw"]
        }));
        v
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // libcontainer removes a container's own cgroup; the parent is ours to remove (with
        // what a failed test left below it).
        let mut parents = vec![Path::new("/sys/fs/cgroup").join(&self.cgroup_parent)];
        if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
            parents.extend(rd.flatten().map(|e| e.path().join(&self.cgroup_parent)));
        }
        for parent in parents {
            if let Ok(rd) = std::fs::read_dir(&parent) {
                for e in rd.flatten().filter(|e| e.path().is_dir()) {
                    let _ = std::fs::remove_dir(e.path());
                }
            }
            let _ = std::fs::remove_dir(&parent);
        }
    }
}

pub fn create(c: &AgentClient, fx: &Fixture, id: &str, spec: &Value, terminal: bool, stdin: bool) {
    c.create_container(
        id,
        &clearbox_protocol::GuestSpec::from_json_text(spec.to_string()).expect("spec JSON"),
        &fx.rootfs(),
        terminal,
        stdin,
    )
    .unwrap_or_else(|e| panic!("create {id}: {e}"));
}

/// Id of the container of [`Boxed`].
pub const CID: &str = "box";

/// A host-mode agent with one started busybox container [`CID`] whose init sleeps; every
/// process of a test runs in it (the agent runs nothing outside a container). The container is
/// removed on drop.
pub struct Boxed {
    pub client: AgentClient,
    pub agent: Agent,
    pub fx: Fixture,
}

impl Boxed {
    pub fn start(name: &str) -> Self {
        let fx = Fixture::new(name);
        let agent = Agent::start();
        let client = agent.client();
        let spec = fx.spec(CID, "exec sleep 1000000");
        create(&client, &fx, CID, &spec, false, false);
        client.start_container(CID).expect("start");
        Self { client, agent, fx }
    }

    /// An exec'd process of the container.
    pub fn id(&self, exec: &str) -> clearbox_protocol::ProcessId {
        clearbox_protocol::ProcessId::container_exec(CID, exec)
    }
}

impl Drop for Boxed {
    fn drop(&mut self) {
        let _ = self.client.remove_container(CID, true);
    }
}
