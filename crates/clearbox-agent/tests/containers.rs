//! Containers through the agent in host mode: set up by clearbox-container (youki's
//! libcontainer) on this host's cgroups, as the agent does inside the VM. Needs root and
//! /bin/busybox (busybox-static).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clearbox_protocol::server::Code;
use clearbox_protocol::{ProcessId, ProcessSpec, ReadChunk, RootfsLocation, Stream};
use common::{create, Agent, Fixture};
use serde_json::json;

fn cgroup_dirs_of(parent: &str, id: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
        for e in rd.flatten() {
            let d = e.path().join(parent).join(id);
            if d.exists() {
                found.push(d);
            }
        }
    }
    found
}

#[test]
fn container_honours_the_spec() {
    let fx = Fixture::new("spec");
    std::fs::write(fx.data.path().join("in"), "from-host").expect("write");
    let agent = Agent::start();
    let c = agent.client();
    let mut spec = fx.spec(
        "c1",
        "echo pid=$$ host=$(hostname) foo=$FOO uid=$(id -u) gid=$(id -g) groups=$(id -G) \
         nofile=$(ulimit -n) cwd=$(pwd) in=$(cat /data/in); \
         grep -E '^(CapBnd|SigBlk)' /proc/self/status; \
         read line; echo got=$line; echo written > /data/out; exit 7",
    );
    spec["process"]["env"] = json!(["PATH=/bin", "FOO=bar"]);
    spec["process"]["cwd"] = json!("/data");
    spec["process"]["user"] = json!({"uid": 1000, "gid": 1001, "additionalGids": [1002]});
    spec["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": 777, "hard": 888}]);
    // /data must be writable by uid 1000.
    std::fs::set_permissions(
        fx.data.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .expect("chmod");
    create(&c, &fx, "c1", &spec, false, true);
    let e = c
        .create_container(
            "c1",
            &clearbox_protocol::GuestSpec::from_json_text(spec.to_string()).expect("spec JSON"),
            &fx.rootfs(),
            false,
            true,
        )
        .expect_err("dup");
    assert_eq!(e.code(), Some(Code::ALREADY_EXISTS), "{e}");
    assert!(
        !cgroup_dirs_of(&fx.cgroup_parent, "c1").is_empty(),
        "the container's cgroup exists"
    );
    c.start_container("c1").expect("start");
    let init = ProcessId::container("c1");
    c.write_stdin(&init, b"hello\n").expect("stdin");
    c.close_stdin(&init).expect("close stdin");
    let out =
        String::from_utf8_lossy(&c.read_to_end(&init, Stream::Stdout).expect("out")).into_owned();
    let err = c.read_to_end(&init, Stream::Stderr).expect("err");
    // Bounding set of the OCI default: CAP_AUDIT_WRITE, CAP_KILL, CAP_NET_BIND_SERVICE.
    assert_eq!(
        out,
        "pid=1 host=box1 foo=bar uid=1000 gid=1001 groups=1001 1002 nofile=777 cwd=/data \
         in=from-host\nSigBlk:\t0000000000000000\nCapBnd:\t0000000020000420\ngot=hello\n",
        "stderr: {}",
        String::from_utf8_lossy(&err)
    );
    let st = c.wait(&init, None).expect("wait");
    assert_eq!((st.code, st.signal), (7, None));
    assert_eq!(
        std::fs::read_to_string(fx.data.path().join("out")).expect("file from container"),
        "written\n"
    );
    c.remove_container("c1", false).expect("remove");
    assert!(
        cgroup_dirs_of(&fx.cgroup_parent, "c1").is_empty(),
        "cgroup removed"
    );
    let run = agent.dir.path().join("run");
    assert!(!run.join("bundles/c1").exists() && !run.join("containers/c1").exists());
    assert!(c
        .remove_container("c1", false)
        .expect_err("gone")
        .is_not_found());
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn exec_pause_resume_kill_and_remove() {
    let fx = Fixture::new("exec");
    let agent = Agent::start();
    let c = agent.client();
    let ticks = fx.data.path().join("ticks");
    let mut spec = fx.spec(
        "c2",
        "while true; do echo x >> /data/ticks; sleep 0.05; done",
    );
    spec["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": 555, "hard": 555}]);
    create(&c, &fx, "c2", &spec, false, false);
    // As runc: a created (not yet started) container takes execs.
    let early = c
        .run(
            &ProcessId::container_exec("c2", "early"),
            &ProcessSpec::new(["true"]),
        )
        .expect("exec before start");
    assert_eq!(early.status.code, 0, "{early:?}");
    c.start_container("c2").expect("start");
    wait_until("ticks", || file_len(&ticks) > 0);

    // Exec joins the init's namespaces, cgroup and privileges.
    let out = c
        .run(
            &ProcessId::container_exec("c2", "x1"),
            &ProcessSpec::new([
                "/bin/sh",
                "-c",
                "hostname; cat /proc/1/cmdline | head -c 7; echo; \
                 grep CapBnd /proc/self/status; ulimit -n; exit 5",
            ]),
        )
        .expect("exec in container");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "box1\n/bin/sh\nCapBnd:\t0000000020000420\n555\n",
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code, 5);
    // Short-lived execs often exit before the agent knows their pid: statuses are kept.
    for i in 0..10 {
        let out = c
            .run(
                &ProcessId::container_exec("c2", format!("q{i}")),
                &ProcessSpec::new(["/bin/sh", "-c", &format!("echo {i}; exit {i}")]),
            )
            .expect("quick exec");
        assert_eq!(
            (out.status.code, out.stdout),
            (i, format!("{i}\n").into_bytes())
        );
    }
    // Terminal exec.
    let mut tty = ProcessSpec::new(["/bin/sh", "-c", "test -t 0 && test -t 1 && echo TTY"]);
    tty.terminal = true;
    let out = c
        .run(&ProcessId::container_exec("c2", "tty"), &tty)
        .expect("tty exec");
    assert_eq!(out.stdout, b"TTY\r\n");
    let e = c
        .run(
            &ProcessId::container_exec("c2", "nobin"),
            &ProcessSpec::new(["/no/such/binary"]),
        )
        .expect_err("missing binary");
    assert!(e.to_string().contains("/no/such/binary"), "{e}");

    let pids = c.list_processes("c2").expect("ps");
    assert!(!pids.is_empty(), "container has processes");
    let st = c.stats("c2").expect("stats");
    assert_eq!(st.source, "cgroup");
    assert!(st.pids_current >= 1 && st.memory_usage_bytes > 0, "{st:?}");

    // Pause: the ticking loop stops; resume: it goes on.
    c.pause_container("c2").expect("pause");
    std::thread::sleep(Duration::from_millis(150));
    let frozen = file_len(&ticks);
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(file_len(&ticks), frozen, "no progress while paused");
    let e = c
        .run(
            &ProcessId::container_exec("c2", "paused"),
            &ProcessSpec::new(["true"]),
        )
        .expect_err("exec while paused");
    assert_eq!(e.code(), Some(Code::FAILED_PRECONDITION), "{e}");
    c.resume_container("c2").expect("resume");
    wait_until("ticks after resume", || file_len(&ticks) > frozen);

    let e = c.remove_container("c2", false).expect_err("running");
    assert_eq!(e.code(), Some(Code::FAILED_PRECONDITION), "{e}");
    let init = ProcessId::container("c2");
    c.signal(&init, 9, true).expect("kill all");
    let st = c.wait(&init, Some(Duration::from_secs(10))).expect("wait");
    assert_eq!(st.signal, Some(9));
    c.remove_container("c2", false).expect("remove");
    assert!(
        cgroup_dirs_of(&fx.cgroup_parent, "c2").is_empty(),
        "cgroup removed"
    );

    // Force-remove a running container; remove a created one without force.
    create(&c, &fx, "c3", &fx.spec("c3", "sleep 100"), false, false);
    c.start_container("c3").expect("start c3");
    c.remove_container("c3", true).expect("force remove");
    create(&c, &fx, "c4", &fx.spec("c4", "sleep 100"), false, false);
    c.remove_container("c4", false).expect("remove created");
    assert!(
        cgroup_dirs_of(&fx.cgroup_parent, "c4").is_empty(),
        "cgroup removed"
    );
}

#[test]
fn seccomp_and_read_only_root_are_enforced() {
    let fx = Fixture::new("seccomp");
    let agent = Agent::start();
    let c = agent.client();
    let mut spec = fx.spec(
        "sc",
        "mkdir /dev/shm/x; touch /newfile; echo done; touch /dev/shm/ok && echo tmpfs-writable",
    );
    spec["root"]["readonly"] = json!(true);
    spec["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
    });
    create(&c, &fx, "sc", &spec, false, false);
    c.start_container("sc").expect("start");
    let init = ProcessId::container("sc");
    let out = c.read_to_end(&init, Stream::Stdout).expect("out");
    let err =
        String::from_utf8_lossy(&c.read_to_end(&init, Stream::Stderr).expect("err")).into_owned();
    assert_eq!(String::from_utf8_lossy(&out), "done\ntmpfs-writable\n");
    assert!(err.contains("Operation not permitted"), "{err}");
    assert!(err.contains("Read-only file system"), "{err}");
    assert!(c.wait(&init, None).expect("wait").success());
    c.remove_container("sc", false).expect("remove");
}

#[test]
fn terminal_container_gets_a_pty_of_the_requested_size() {
    let fx = Fixture::new("tty");
    let agent = Agent::start();
    let c = agent.client();
    let mut spec = fx.spec("t1", "test -t 0 && test -t 1 && echo TTY; stty size");
    spec["process"]["consoleSize"] = json!({"height": 30, "width": 90});
    create(&c, &fx, "t1", &spec, true, false);
    c.start_container("t1").expect("start");
    let init = ProcessId::container("t1");
    let out = c.read_to_end(&init, Stream::Stdout).expect("tty output");
    assert_eq!(String::from_utf8_lossy(&out), "TTY\r\n30 90\r\n");
    assert_eq!(
        c.read(&init, Stream::Stderr, 0, None).expect("stderr"),
        ReadChunk::Eof
    );
    assert!(c.wait(&init, None).expect("wait").success());
    c.remove_container("t1", false).expect("remove");
}

#[test]
fn bad_containers_get_clear_errors_and_leave_nothing() {
    let fx = Fixture::new("bad");
    let agent = Agent::start();
    let c = agent.client();
    let run = agent.dir.path().join("run");
    let spec = fx.spec("b1", "true");
    let mut nobin = spec.clone();
    nobin["process"]["args"] = json!(["/bin/not-there"]);
    let e = c
        .create_container(
            "b1",
            &clearbox_protocol::GuestSpec::from_json_text(nobin.to_string()).expect("spec JSON"),
            &fx.rootfs(),
            false,
            false,
        )
        .expect_err("missing executable");
    assert_eq!(e.code(), Some(Code::INVALID_ARGUMENT), "{e}");
    assert!(e.to_string().contains("not-there"), "{e}");
    assert!(!run.join("bundles/b1").exists() && !run.join("containers/b1").exists());
    assert!(
        cgroup_dirs_of(&fx.cgroup_parent, "b1").is_empty(),
        "no cgroup left"
    );

    let mut hooks = spec.clone();
    hooks["hooks"] = json!({"prestart": [{"path": "/bin/true"}]});
    let e = c
        .create_container(
            "b2",
            &clearbox_protocol::GuestSpec::from_json_text(hooks.to_string()).expect("spec JSON"),
            &fx.rootfs(),
            false,
            false,
        )
        .expect_err("hooks");
    assert_eq!(e.code(), Some(Code::INVALID_ARGUMENT), "{e}");
    assert!(e.to_string().contains("hooks"), "{e}");

    let e = c
        .create_container(
            "b3",
            &clearbox_protocol::GuestSpec::from_json_text(spec.to_string()).expect("spec JSON"),
            &RootfsLocation::GuestPath("/no/such/rootfs".into()),
            false,
            false,
        )
        .expect_err("rootfs");
    assert_eq!(e.code(), Some(Code::INVALID_ARGUMENT), "{e}");
    let e = c
        .create_container(
            "../x",
            &clearbox_protocol::GuestSpec::from_json_text(spec.to_string()).expect("spec JSON"),
            &fx.rootfs(),
            false,
            false,
        )
        .expect_err("bad id");
    assert_eq!(e.code(), Some(Code::INVALID_ARGUMENT), "{e}");
    // The id is free again after the failures.
    create(&c, &fx, "b1", &spec, false, false);
    c.remove_container("b1", false).expect("remove");
}

#[test]
fn shutdown_removes_containers() {
    let fx = Fixture::new("shut");
    let mut agent = Agent::start();
    let c = agent.client();
    create(&c, &fx, "s1", &fx.spec("s1", "sleep 100"), false, false);
    c.start_container("s1").expect("start");
    assert!(!cgroup_dirs_of(&fx.cgroup_parent, "s1").is_empty());
    c.shutdown().expect("shutdown");
    let until = Instant::now() + Duration::from_secs(20);
    while agent.child.try_wait().expect("try_wait").is_none() {
        assert!(Instant::now() < until, "agent still running");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        cgroup_dirs_of(&fx.cgroup_parent, "s1").is_empty(),
        "cgroup removed"
    );
}
