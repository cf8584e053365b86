//! Attacks on the host from isolation=namespaces containers, through the real binary.
//!
//! CVE-2019-5736: while `clearbox exec` (or `create`) sets a process up, the processes that
//! join the container are forks of the host's clearbox binary, so `/proc/PID/exe` inside the
//! container points at it. A container with CAP_SYS_PTRACE opens that link and, once the
//! process is gone, reopens the file for writing. clearbox runs those commands from a read-only
//! view of its binary (clearbox_core::exe_seal), so the write must fail and the binary must be
//! unchanged. The test runs a private copy of the binary: a regression damages only the copy.
//! Needs root (namespaces), like lifecycle.rs.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The spec's capability sets plus CAP_SYS_PTRACE (`--cap-add SYS_PTRACE`).
fn with_ptrace(v: &mut serde_json::Value) {
    for set in ["bounding", "effective", "permitted"] {
        if let Some(caps) = v["process"]["capabilities"][set].as_array_mut() {
            caps.push("CAP_SYS_PTRACE".into());
        }
    }
}

fn clearbox(bin: &Path, env: &Env) -> Command {
    let mut c = Command::new(bin);
    c.arg("--root").arg(&env.root);
    c.env_remove("CLEARBOX_ISOLATION");
    c.env("CLEARBOX_CONFIG", env.tmp.path().join("no-config.toml"));
    c.arg("--isolation").arg("namespaces");
    c
}

#[test]
fn a_container_cannot_overwrite_the_runtime_binary_through_proc_exe() {
    let env = Env::new();
    let bin = env.tmp.path().join("bin/clearbox");
    std::fs::create_dir_all(bin.parent().expect("parent")).expect("mkdir");
    std::fs::copy(bin_path(), &bin).expect("copy clearbox");
    let before = std::fs::read(&bin).expect("read");
    // The probe watches for processes whose command line names this container and attacks
    // their executable for 12 seconds, then exits; its lines go to a file.
    let id = format!("cve5736-{}", std::process::id());
    let b = env.bundle(
        "b",
        &["/bin/probe", "exe", "12", &format!("exec {id}")],
        with_ptrace,
    );
    std::fs::copy(probe(), b.join("rootfs/bin/probe")).expect("copy probe");
    let log = env.tmp.path().join("probe.log");
    let out = std::fs::File::create(&log).expect("log");
    let status = clearbox(&bin, &env)
        .args(["run", "-d", "--bundle"])
        .arg(&b)
        .arg(&id)
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup"))
        .stderr(out)
        .status()
        .expect("run");
    assert!(status.success(), "run -d failed: {}", read(&log));
    // Exec into it over and over while the probe watches.
    let start = Instant::now();
    let mut execs = 0;
    while start.elapsed() < Duration::from_secs(8) {
        let o = match clearbox(&bin, &env)
            .args(["exec", &id, "true"])
            .stdin(Stdio::null())
            .output()
        {
            Ok(o) => o,
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => panic!(
                "the container holds the runtime binary open for writing:\n{}",
                read(&log)
            ),
            Err(e) => panic!("exec: {e}"),
        };
        assert!(o.status.success(), "exec: {}", stderr(&o));
        execs += 1;
    }
    // Wait for the probe to finish (it exits after its 12 seconds).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let o = clearbox(&bin, &env)
            .args(["state", &id])
            .output()
            .expect("state");
        if !stdout(&o).contains("\"running\"") || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = clearbox(&bin, &env)
        .args(["delete", "--force", &id])
        .output();
    let lines = read(&log);
    assert!(
        !lines.contains("WROTE"),
        "the container wrote to the runtime binary:\n{lines}"
    );
    assert_eq!(
        std::fs::read(&bin).expect("read"),
        before,
        "the runtime binary changed:\n{lines}"
    );
    // The attack really ran: the probe saw and opened the runtime's processes, and was refused.
    assert!(
        lines.contains("exe OPENED"),
        "the probe never saw a runtime process in {execs} execs (the test did not test):\n{lines}"
    );
    assert!(lines.contains("refused"), "no write was refused:\n{lines}");
    assert!(env.leftover_ids().is_empty(), "state left behind");
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}
