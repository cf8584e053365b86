//! Debugging aid: runs a command as a plain guest process (outside any container) in the VM of
//! a running `isolation=vm` container, and prints its output.
//!
//! `guest-exec STATE_DIR CMD [ARGS...]` — STATE_DIR is `<--root>/<id>`. The guest has no
//! programs of its own; use the container's, e.g.
//! `/run/clearbox/virtiofs/clearbox/rootfs/bin/busybox ls /run/clearbox`.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::time::Duration;

use clearbox_protocol::{AgentClient, ProcessId, ProcessSpec};
use clearbox_vmm::{VmHandle, AGENT_PORT};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        eprintln!("usage: guest-exec STATE_DIR CMD [ARGS...]");
        std::process::exit(2);
    }
    let rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(format!("{}/vm-box.json", args[0])).unwrap())
            .unwrap();
    let handle = VmHandle::load(rec["vm_run_dir"].as_str().unwrap()).unwrap();
    let agent = AgentClient::new(
        handle
            .connect_agent(AGENT_PORT, Duration::from_secs(10))
            .unwrap(),
    )
    .unwrap();
    let id = format!("debug-{}", std::process::id());
    let out = agent
        .run(
            &ProcessId::guest(id),
            &ProcessSpec::new(args[1..].iter().cloned()),
        )
        .unwrap();
    std::io::stdout().write_all(&out.stdout).unwrap();
    std::io::stderr().write_all(&out.stderr).unwrap();
    std::process::exit(out.status.code);
}
