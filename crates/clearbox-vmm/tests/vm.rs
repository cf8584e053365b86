//! VM integration tests: real QEMU, guest kernel and agent (TCG on hosts
//! without usable hardware KVM). They need the guest assets; when missing they
//! fail naming the script that builds them.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use clearbox_protocol::{ProcessSpec, Stream, API_VERSION};
use clearbox_vmm::{Error, FsShare, Vm, VmConfig, VmHandle, AGENT_PORT};
use common::*;

fn sh(script: &str) -> ProcessSpec {
    ProcessSpec::new(["/bin/sh", "-c", script])
}

#[test]
fn agent_version_exec_and_clean_shutdown() {
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = run_dir(&tmp);
    let share = tempfile::tempdir().unwrap();
    std::fs::write(share.path().join("greeting"), "hello from the host\n").unwrap();
    let mut cfg = config(&tmp);
    cfg.shares.push(FsShare {
        tag: "ro".into(),
        host_dir: share.path().to_path_buf(),
        read_only: true,
    });
    let (vm, client) = boot(cfg);
    let pids = vm.processes();
    assert_eq!(
        pids.len(),
        3,
        "qemu, vhost-device-vsock (or none), virtiofsd: {pids:?}"
    );
    assert!(run_dir.join("vm.json").is_file());

    // Handshake.
    let v = client.version().unwrap();
    assert_eq!(v.api_version, API_VERSION);
    assert!(v.is_init, "agent must run as PID 1 in the VM");
    assert!(!v.kernel_release.is_empty());
    assert_ne!(
        v.kernel_release,
        host_kernel_release(),
        "guest kernel must not be the host's"
    );

    // Nothing runs outside a container.
    let e = client
        .run(
            &clearbox_protocol::ProcessId {
                container_id: String::new(),
                exec_id: "plain".into(),
            },
            &sh("true"),
        )
        .unwrap_err();
    assert_eq!(
        e.code(),
        Some(clearbox_protocol::server::Code::INVALID_ARGUMENT),
        "{e}"
    );
    start_container(&client);

    // A command with output on both streams and an exit code.
    let out = client
        .run(&in_container("e1"), &sh("echo out; echo err >&2; exit 3"))
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    assert_eq!(out.status.code, 3);
    assert_eq!(out.status.signal, None);

    // uname -r in the guest is the guest kernel, not the host's.
    let out = client
        .run(&in_container("uname"), &ProcessSpec::new(["uname", "-r"]))
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let guest = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(guest, v.kernel_release);
    assert_ne!(guest, host_kernel_release());

    // Clean shutdown: the agent powers off, QEMU exits by itself.
    client.shutdown().unwrap();
    drop(client);
    let status = vm.shutdown(Duration::from_secs(30)).unwrap();
    assert!(
        status.success(),
        "QEMU should exit 0 after a guest reboot, got {status}"
    );
    assert_nothing_left(&pids, &run_dir);
}

#[test]
fn stdin_round_trip_and_signal() {
    let tmp = tempfile::tempdir().unwrap();
    let (vm, client) = boot(config(&tmp));
    start_container(&client);

    let id = in_container("cat");
    let mut spec = ProcessSpec::new(["cat"]);
    spec.stdin = true;
    client.exec(&id, &spec).unwrap();
    let input = b"line one\nline two\n".repeat(100);
    let mut written = 0;
    while written < input.len() {
        written += client.write_stdin(&id, &input[written..]).unwrap();
    }
    client.close_stdin(&id).unwrap();
    let stdout = client.read_to_end(&id, Stream::Stdout).unwrap();
    let stderr = client.read_to_end(&id, Stream::Stderr).unwrap();
    let status = client.wait(&id, Some(Duration::from_secs(30))).unwrap();
    assert_eq!(stdout, input);
    assert!(stderr.is_empty());
    assert!(status.success());

    let id = in_container("sleep");
    client
        .exec(&id, &ProcessSpec::new(["sleep", "1000"]))
        .unwrap();
    client.signal(&id, libc::SIGTERM, false).unwrap();
    let status = client.wait(&id, Some(Duration::from_secs(30))).unwrap();
    assert_eq!(status.signal, Some(libc::SIGTERM), "{status:?}");
    assert_eq!(status.code, 128 + libc::SIGTERM);

    // Not asked to power off: shutdown() waits out the grace, then kills.
    let pids = vm.processes();
    let run_dir = vm.run_dir().to_path_buf();
    drop(client);
    let status = vm.shutdown(Duration::from_millis(300)).unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    assert_nothing_left(&pids, &run_dir);
}

#[test]
fn virtio_fs_shares_read_only_and_writable() {
    let tmp = tempfile::tempdir().unwrap();
    let ro = tempfile::tempdir().unwrap();
    let rw = tempfile::tempdir().unwrap();
    std::fs::write(ro.path().join("greeting"), "hello via virtio-fs\n").unwrap();
    let mut cfg = config(&tmp);
    cfg.shares = vec![
        FsShare {
            tag: "ro".into(),
            host_dir: ro.path().to_path_buf(),
            read_only: true,
        },
        FsShare {
            tag: "rw".into(),
            host_dir: rw.path().to_path_buf(),
            read_only: false,
        },
    ];
    let (vm, client) = boot(cfg);
    start_container(&client);
    let script = "mkdir -p /ro /rw && mount -t virtiofs ro /ro && mount -t virtiofs rw /rw && \
                  cat /ro/greeting && \
                  if echo x > /ro/new 2>/dev/null; then echo ro-writable; else echo ro-refused; fi && \
                  echo written-by-guest > /rw/out";
    let out = client.run(&in_container("fs"), &sh(script)).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        stdout,
        "hello via virtio-fs\nro-refused\n",
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !ro.path().join("new").exists(),
        "read-only share was written"
    );
    assert_eq!(
        std::fs::read_to_string(rw.path().join("out")).unwrap(),
        "written-by-guest\n"
    );
    client.shutdown().unwrap();
    drop(client);
    vm.shutdown(Duration::from_secs(30)).unwrap();
}

#[test]
fn sigkill_of_qemu_is_detected_promptly() {
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = run_dir(&tmp);
    let share = tempfile::tempdir().unwrap();
    let mut cfg = config(&tmp);
    cfg.shares.push(FsShare {
        tag: "s".into(),
        host_dir: share.path().to_path_buf(),
        read_only: false,
    });
    let (mut vm, client) = boot(cfg);
    client.version().unwrap();
    let pids = vm.processes();
    let handle = VmHandle::load(&run_dir).unwrap();
    assert!(handle.is_running());
    assert_eq!(
        vm.wait_timeout(Some(Duration::ZERO)).unwrap(),
        None,
        "VM reported dead while running"
    );

    let qemu = vm.pid().unwrap();
    let t0 = Instant::now();
    // SAFETY: kill(2) with a pid we spawned and have not reaped yet.
    assert_eq!(unsafe { libc::kill(qemu as i32, libc::SIGKILL) }, 0);
    // The wait is event-driven (pidfd): it returns as soon as QEMU is gone.
    let status = vm.wait_timeout(Some(Duration::from_secs(30))).unwrap();
    let took = t0.elapsed();
    let status = status.expect("wait did not notice the dead VM");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    eprintln!("QEMU death noticed after {took:?}");
    assert!(!handle.is_running(), "handle still reports the VM alive");
    // The agent connection fails instead of hanging.
    assert!(client.version().is_err());
    drop(client);
    drop(vm);
    assert_nothing_left(&pids, &run_dir);
}

/// Starting a VM whose QEMU dies at once (a kernel it cannot load) fails fast
/// with QEMU's words, and leaves nothing behind.
#[test]
fn early_qemu_death_is_reported_and_cleaned() {
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = run_dir(&tmp);
    let bogus = tmp.path().join("not-a-kernel");
    std::fs::write(&bogus, b"garbage").unwrap();
    let mut cfg = config(&tmp);
    cfg.kernel = bogus;
    let vm = Vm::start(cfg).unwrap();
    let pids = vm.processes();
    let t0 = Instant::now();
    let err = vm
        .connect_agent(AGENT_PORT, Duration::from_secs(60))
        .unwrap_err();
    assert!(matches!(err, Error::VmExited { .. }), "{err}");
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "took {:?}",
        t0.elapsed()
    );
    assert!(
        err.to_string().contains("qemu"),
        "error should carry QEMU's message: {err}"
    );
    drop(vm);
    assert_nothing_left(&pids, &run_dir);
}

#[test]
fn bad_input_fails_before_starting_anything() {
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = run_dir(&tmp);
    let mut cfg = VmConfig::new(
        tmp.path().join("no-kernel"),
        tmp.path().join("no-initrd"),
        &run_dir,
    );
    let err = Vm::start(cfg.clone()).unwrap_err();
    assert!(err.to_string().contains("no-kernel"), "{err}");
    cfg.kernel = kernel();
    cfg.initrd = agent_initramfs();
    cfg.shares.push(FsShare {
        tag: "bad,tag".into(),
        host_dir: tmp.path().to_path_buf(),
        read_only: true,
    });
    let err = Vm::start(cfg).unwrap_err();
    assert!(err.to_string().contains("bad,tag"), "{err}");
    assert!(!run_dir.exists());
}

/// A VM started detached by one process is reached and torn down by another.
#[test]
fn detached_vm_is_torn_down_from_another_process() {
    const ROLE: &str = "CLEARBOX_VMM_TEST_DETACHED_RUN_DIR";
    if let Some(dir) = std::env::var_os(ROLE) {
        // Child role: start the VM, make sure the agent is up, leave it running.
        let dir = std::path::PathBuf::from(dir);
        let share = dir.parent().unwrap().join("share");
        let mut cfg = VmConfig::new(kernel(), test_initramfs(), &dir);
        cfg.die_with_parent = false;
        // With a share, so a virtiofsd (and the worker it forks) is included.
        cfg.shares.push(FsShare {
            tag: "s".into(),
            host_dir: share,
            read_only: true,
        });
        let (vm, client) = boot(cfg);
        client.version().unwrap();
        drop(client);
        let _handle = vm.into_handle();
        return;
    }
    // Adopt the VM's processes when the starter exits, as a runtime's
    // long-lived parent would, so they are reaped rather than left as zombies
    // of a PID 1 that may not reap.
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) only sets a flag on this process.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = run_dir(&tmp);
    std::fs::create_dir(tmp.path().join("share")).unwrap();
    // Output captured: the child's own test summary must not look like ours.
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "detached_vm_is_torn_down_from_another_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE, &run_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "child process failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The starter is gone; the VM is not.
    let handle = VmHandle::load(&run_dir).unwrap();
    assert!(handle.is_running(), "detached VM died with its starter");
    assert!(handle
        .processes()
        .iter()
        .any(|p| p.role.starts_with("virtiofsd")));
    let pids: Vec<(String, u32)> = handle
        .processes()
        .iter()
        .map(|p| (p.role.clone(), p.pid as u32))
        .collect();
    // This process can talk to the agent too.
    let client = clearbox_protocol::AgentClient::new(
        handle.connect_agent(AGENT_PORT, BOOT_TIMEOUT).unwrap(),
    )
    .unwrap();
    assert_eq!(client.version().unwrap().api_version, API_VERSION);
    drop(client);
    handle.kill_and_cleanup().unwrap();
    assert_nothing_left(&pids, &run_dir);
}
