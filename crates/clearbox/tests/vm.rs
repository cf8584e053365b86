//! isolation=vm through the real binary: real VMs (KVM when usable, TCG otherwise), the guest
//! kernel and agent from /usr/share/clearbox. Missing assets fail the tests, naming the script
//! that builds them. Needs root (mounts, QEMU helpers).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

fn bundle(env: &Env, name: &str, args: &[&str]) -> PathBuf {
    env.bundle(name, args, |v| v["root"]["readonly"] = false.into())
}

fn vm(env: &Env, args: &[&str]) -> std::process::Output {
    let mut a = vec!["--isolation", "vm"];
    a.extend_from_slice(args);
    env.run(&a)
}

fn state(env: &Env, id: &str) -> serde_json::Value {
    let o = env.run(&["state", id]);
    assert!(o.status.success(), "state {id}: {}", stderr(&o));
    serde_json::from_slice(&o.stdout).expect("state json")
}

/// The host directory holding the container's VM sockets and share (from its record).
fn vm_base(env: &Env, id: &str) -> PathBuf {
    let rec = std::fs::read(env.root.join(id).join("vm-box.json")).expect("vm record");
    let v: serde_json::Value = serde_json::from_slice(&rec).expect("record json");
    PathBuf::from(v["base"].as_str().expect("base"))
}

/// Live (non-zombie) processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    let me = std::process::id().to_string();
    for e in std::fs::read_dir("/proc").expect("proc").flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) || name == me {
            continue;
        }
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        let zombie = std::fs::read_to_string(e.path().join("stat"))
            .ok()
            .and_then(|s| s.rfind(')').map(|i| s[i + 2..].starts_with('Z')))
            .unwrap_or(true);
        if cmd.contains(needle) && !zombie {
            out.push(format!("{name}: {cmd}"));
        }
    }
    out
}

/// Nothing of container `id` is left: state dir, VM base dir (sockets, share), mounts, and no
/// shim, QEMU, virtiofsd or vhost-device-vsock process.
fn assert_nothing_left(env: &Env, id: &str, base: &Path) {
    assert!(!env.root.join(id).exists(), "state dir of {id} left");
    assert!(!base.exists(), "{} left", base.display());
    assert!(
        mounts_below(base).is_empty(),
        "mounts left: {:?}",
        mounts_below(base)
    );
    let b = base.to_string_lossy();
    let d = env.root.join(id).to_string_lossy().into_owned();
    // QEMU and the daemons name sockets in `base`; shims name their log in the state dir.
    let procs: Vec<String> = processes_mentioning(&b)
        .into_iter()
        .chain(processes_mentioning(&d))
        .collect();
    assert!(procs.is_empty(), "processes left: {procs:#?}");
}

fn wait_for_status(env: &Env, id: &str, want: &str, within: Duration) -> serde_json::Value {
    let until = Instant::now() + within;
    loop {
        let s = state(env, id);
        if s["status"] == want || Instant::now() > until {
            return s;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn run_passes_output_and_exit_code_from_a_guest_kernel() {
    let env = vm_env();
    let b = bundle(
        &env,
        "b",
        &["sh", "-c", "echo out-$(uname -r); echo err >&2; exit 42"],
    );
    let o = vm(&env, &["run", "--bundle", b.to_str().unwrap(), "r1"]);
    assert_eq!(o.status.code(), Some(42), "stderr: {}", stderr(&o));
    let out = stdout(&o);
    let host = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let guest = out.trim().strip_prefix("out-").expect(&out).to_string();
    assert!(!guest.is_empty());
    assert_ne!(
        guest,
        host.trim(),
        "the container must run on the guest kernel"
    );
    assert!(stderr(&o).contains("err"), "{}", stderr(&o));
    assert!(env.leftover_ids().is_empty(), "run left state");
}

#[test]
fn run_reports_death_by_signal_as_128_plus_n() {
    // The init is PID 1 of its PID namespace and cannot signal itself to death; kill it from
    // outside, through the agent.
    let env = vm_env();
    let b = bundle(&env, "b", &["sleep", "300"]);
    let out = tempfile::tempfile().unwrap();
    let mut run = env
        .cb()
        .args(["--isolation", "vm", "run", "-b", b.to_str().unwrap(), "sig"])
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(60);
    while !(env.root.join("sig/state.json").exists() && state(&env, "sig")["status"] == "running") {
        assert!(Instant::now() < until, "container never ran");
        assert!(run.try_wait().unwrap().is_none(), "run ended early");
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = env.run(&["kill", "sig", "KILL"]);
    assert!(o.status.success(), "kill: {}", stderr(&o));
    let status = run.wait().unwrap();
    assert_eq!(status.code(), Some(137));
    assert!(env.leftover_ids().is_empty(), "run left state");
}

#[test]
fn create_start_state_exec_kill_delete() {
    let env = vm_env();
    let b = bundle(&env, "b", &["sh", "-c", "echo started; exec sleep 300"]);
    let pidfile = env.tmp.path().join("init.pid");
    let o = vm(
        &env,
        &[
            "create",
            "--bundle",
            b.to_str().unwrap(),
            "--pid-file",
            pidfile.to_str().unwrap(),
            "c1",
        ],
    );
    assert!(o.status.success(), "create: {}", stderr(&o));
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let s = state(&env, "c1");
    assert_eq!(s["status"], "created");
    assert_eq!(s["pid"], pid);
    let base = vm_base(&env, "c1");
    assert!(
        !processes_mentioning(&base.to_string_lossy()).is_empty(),
        "no VM process runs after create"
    );

    let o = env.run(&["start", "c1"]);
    assert!(o.status.success(), "start: {}", stderr(&o));
    assert_eq!(state(&env, "c1")["status"], "running");

    let o = env.run(&[
        "exec",
        "c1",
        "sh",
        "-c",
        "echo exec-ok; echo exec-err >&2; exit 3",
    ]);
    assert_eq!(o.status.code(), Some(3), "exec: {}", stderr(&o));
    assert_eq!(stdout(&o), "exec-ok\n");
    assert_eq!(stderr(&o), "exec-err\n");

    // stdin reaches an exec'd process, and its EOF too.
    let o = {
        use std::io::Write;
        let mut c = env
            .cb()
            .args(["exec", "c1", "cat"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(b"via-stdin").unwrap();
        c.wait_with_output().unwrap()
    };
    assert!(o.status.success(), "exec cat: {}", stderr(&o));
    assert_eq!(stdout(&o), "via-stdin");

    let o = env.run(&["kill", "c1", "KILL"]);
    assert!(o.status.success(), "kill: {}", stderr(&o));
    let s = wait_for_status(&env, "c1", "stopped", Duration::from_secs(10));
    assert_eq!(s["status"], "stopped");

    let o = env.run(&["delete", "c1"]);
    assert!(o.status.success(), "delete: {}", stderr(&o));
    assert_nothing_left(&env, "c1", &base);
}

#[test]
fn delete_force_of_a_running_container_leaves_nothing() {
    let env = vm_env();
    let b = bundle(&env, "b", &["sleep", "300"]);
    let o = vm(&env, &["run", "--detach", "-b", b.to_str().unwrap(), "d1"]);
    assert!(o.status.success(), "run -d: {}", stderr(&o));
    assert_eq!(state(&env, "d1")["status"], "running");
    let base = vm_base(&env, "d1");
    assert!(!mounts_below(&base).is_empty(), "the share is not mounted");
    let o = env.run(&["delete", "d1"]);
    assert!(
        !o.status.success(),
        "delete of a running container must fail"
    );
    let o = env.run(&["delete", "--force", "d1"]);
    assert!(o.status.success(), "delete --force: {}", stderr(&o));
    assert_nothing_left(&env, "d1", &base);
}

#[test]
fn files_written_in_the_container_appear_in_the_bundle_rootfs() {
    let env = vm_env();
    let b = bundle(
        &env,
        "b",
        &[
            "sh",
            "-c",
            "echo from-guest > /tmp/out && cat /etc/from-host",
        ],
    );
    std::fs::write(b.join("rootfs/etc/from-host"), "from-host\n").unwrap();
    let o = vm(&env, &["run", "-b", b.to_str().unwrap(), "f1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "from-host\n");
    assert_eq!(
        std::fs::read_to_string(b.join("rootfs/tmp/out")).unwrap(),
        "from-guest\n"
    );
}

#[test]
fn killing_qemu_stops_the_container_and_delete_cleans_up() {
    let env = vm_env();
    let b = bundle(&env, "b", &["sleep", "300"]);
    let o = vm(&env, &["run", "--detach", "-b", b.to_str().unwrap(), "q1"]);
    assert!(o.status.success(), "run -d: {}", stderr(&o));
    let base = vm_base(&env, "q1");
    let qemu: Vec<i32> = processes_mentioning(&base.to_string_lossy())
        .iter()
        .filter(|l| l.contains("qemu-system"))
        .map(|l| l.split(':').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(qemu.len(), 1, "one QEMU per container");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(qemu[0]),
        nix::sys::signal::SIGKILL,
    )
    .unwrap();
    let t = Instant::now();
    let s = wait_for_status(&env, "q1", "stopped", Duration::from_secs(10));
    assert_eq!(
        s["status"], "stopped",
        "QEMU died but the container reads {}",
        s["status"]
    );
    eprintln!("stopped {:?} after QEMU's SIGKILL", t.elapsed());
    let o = env.run(&["delete", "q1"]);
    assert!(o.status.success(), "delete: {}", stderr(&o));
    assert_nothing_left(&env, "q1", &base);
}

#[test]
fn five_containers_in_a_row_leave_nothing_behind() {
    let env = vm_env();
    let b = bundle(&env, "b", &["sleep", "300"]);
    for i in 0..5 {
        let id = format!("row{i}");
        let o = vm(&env, &["create", "-b", b.to_str().unwrap(), &id]);
        assert!(o.status.success(), "create {id}: {}", stderr(&o));
        let base = vm_base(&env, &id);
        if i % 2 == 0 {
            assert!(env.run(&["start", &id]).status.success());
        }
        let o = env.run(&["delete", "--force", &id]);
        assert!(o.status.success(), "delete {id}: {}", stderr(&o));
        assert_nothing_left(&env, &id, &base);
    }
}

#[test]
fn bad_input_leaves_nothing_behind() {
    let env = vm_env();
    // A bind mount whose source does not exist: a one-line error naming it, and no leftovers.
    let b = env.bundle("b", &["true"], |v| {
        v["root"]["readonly"] = false.into();
        v["mounts"].as_array_mut().unwrap().push(serde_json::json!({
            "destination": "/data",
            "type": "bind",
            "source": "/nonexistent/clearbox-src",
            "options": ["rbind"]
        }));
    });
    let o = vm(&env, &["run", "-b", b.to_str().unwrap(), "bad1"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("/nonexistent/clearbox-src"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(env.leftover_ids().is_empty(), "state left");
    let root = env.root.join("bad1").to_string_lossy().into_owned();
    assert!(processes_mentioning(&root).is_empty());
}

#[test]
fn kill_of_a_created_container_stops_it() {
    let env = vm_env();
    let b = bundle(&env, "b", &["sleep", "300"]);
    let o = vm(&env, &["create", "-b", b.to_str().unwrap(), "k1"]);
    assert!(o.status.success(), "create: {}", stderr(&o));
    let base = vm_base(&env, "k1");
    let o = env.run(&["kill", "k1", "TERM"]);
    assert!(o.status.success(), "kill: {}", stderr(&o));
    let s = wait_for_status(&env, "k1", "stopped", Duration::from_secs(10));
    assert_eq!(s["status"], "stopped");
    let o = env.run(&["delete", "k1"]);
    assert!(o.status.success(), "delete: {}", stderr(&o));
    assert_nothing_left(&env, "k1", &base);
}

#[test]
fn ps_lists_the_host_shims_of_init_and_execs() {
    let env = vm_env();
    let b = bundle(&env, "b", &["sleep", "300"]);
    let o = vm(&env, &["run", "-d", "-b", b.to_str().unwrap(), "p1"]);
    assert!(o.status.success(), "run -d: {}", stderr(&o));
    let init = state(&env, "p1")["pid"].as_i64().unwrap() as i32;
    let pidfile = env.tmp.path().join("exec.pid");
    let o = env.run(&[
        "exec",
        "-d",
        "--pid-file",
        pidfile.to_str().unwrap(),
        "p1",
        "sleep",
        "300",
    ]);
    assert!(o.status.success(), "exec -d: {}", stderr(&o));
    let exec: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let o = env.run(&["ps", "--format", "json", "p1"]);
    assert!(o.status.success(), "ps: {}", stderr(&o));
    let pids: Vec<i32> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(pids, vec![init, exec]);
    let base = vm_base(&env, "p1");
    let o = env.run(&["delete", "--force", "p1"]);
    assert!(o.status.success(), "delete: {}", stderr(&o));
    assert_nothing_left(&env, "p1", &base);
}

#[test]
fn terminal_through_the_console_socket() {
    use std::io::Read;
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::net::UnixListener;

    let env = vm_env();
    let b = env.bundle("b", &["sh", "-c", "echo tty-$((6*7)); exit 4"], |v| {
        v["root"]["readonly"] = false.into();
        v["process"]["terminal"] = true.into();
    });
    let sock = env.tmp.path().join("console.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let receiver = std::thread::spawn(move || -> OwnedFd {
        let (conn, _) = listener.accept().unwrap();
        let mut buf = [0u8; 64];
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let msg = nix::sys::socket::recvmsg::<()>(
            std::os::fd::AsRawFd::as_raw_fd(&conn),
            &mut iov,
            Some(&mut space),
            nix::sys::socket::MsgFlags::empty(),
        )
        .unwrap();
        for c in msg.cmsgs().unwrap() {
            if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c {
                // SAFETY: the kernel just installed this descriptor for us.
                return unsafe { OwnedFd::from_raw_fd(fds[0]) };
            }
        }
        panic!("no fd received on the console socket");
    });
    let o = vm(
        &env,
        &[
            "create",
            "-b",
            b.to_str().unwrap(),
            "--console-socket",
            sock.to_str().unwrap(),
            "t1",
        ],
    );
    assert!(o.status.success(), "create: {}", stderr(&o));
    let master = receiver.join().unwrap();
    let o = env.run(&["start", "t1"]);
    assert!(o.status.success(), "start: {}", stderr(&o));
    let mut out = Vec::new();
    let mut f = std::fs::File::from(master);
    let mut buf = [0u8; 256];
    // EIO once the shim (the last holder of the slave) is gone.
    while let Ok(n) = f.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("tty-42"), "{text:?}");
    assert!(
        text.contains("\r\n"),
        "guest pty output is cooked: {text:?}"
    );
    let s = wait_for_status(&env, "t1", "stopped", Duration::from_secs(10));
    assert_eq!(s["status"], "stopped");
    let base = vm_base(&env, "t1");
    assert!(env.run(&["delete", "t1"]).status.success());
    assert_nothing_left(&env, "t1", &base);
}

#[test]
fn host_hooks_run_in_order_with_the_container_state() {
    let env = vm_env();
    let log = env.tmp.path().join("hooks.log");
    let script = env.tmp.path().join("hook.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\necho \"$1 $(cat)\" >> {}\n", log.display()),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let b = env.bundle("b", &["true"], |v| {
        v["root"]["readonly"] = false.into();
        let h = |n: &str| serde_json::json!([{"path": script, "args": ["hook.sh", n]}]);
        v["annotations"] = serde_json::json!({"org.example/hooks": "yes"});
        v["hooks"] = serde_json::json!({
            "createRuntime": h("createRuntime"),
            "prestart": h("prestart"),
            "poststart": h("poststart"),
            "poststop": h("poststop"),
        });
    });
    let o = vm(&env, &["run", "-b", b.to_str().unwrap(), "h1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let names: Vec<&str> = lines.iter().map(|l| l.split(' ').next().unwrap()).collect();
    // runc's order: prestart, then createRuntime.
    assert_eq!(
        names,
        ["prestart", "createRuntime", "poststart", "poststop"],
        "{text}"
    );
    for (line, status) in lines
        .iter()
        .zip(["created", "creating", "running", "stopped"])
    {
        let state: serde_json::Value =
            serde_json::from_str(line.split_once(' ').unwrap().1).unwrap();
        assert_eq!(state["id"], "h1");
        assert_eq!(state["status"], status, "{line}");
        assert_eq!(state["annotations"]["org.example/hooks"], "yes", "{line}");
    }
    // The pid the create hooks get is the shim's, in the container's network namespace.
    let pre: serde_json::Value = serde_json::from_str(lines[0].split_once(' ').unwrap().1).unwrap();
    assert!(pre["pid"].as_i64().unwrap() > 0, "{text}");
}

#[test]
fn bind_mounts_of_host_dirs_and_files_reach_the_container() {
    // Needs an agent that applies the spec's mounts (the libcontainer-based one).
    let env = vm_env();
    let dir = env.tmp.path().join("hostdir");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("in"), "into-dir\n").unwrap();
    let file = env.tmp.path().join("hostfile");
    std::fs::write(&file, "into-file\n").unwrap();
    let b = env.bundle(
        "b",
        &["sh", "-c", "cat /data/in /etc/hf && echo out > /data/out"],
        |v| {
            v["root"]["readonly"] = false.into();
            let m = v["mounts"].as_array_mut().unwrap();
            m.push(serde_json::json!({"destination": "/data", "type": "bind",
                "source": dir, "options": ["rbind", "rw"]}));
            m.push(serde_json::json!({"destination": "/etc/hf", "type": "bind",
                "source": file, "options": ["bind", "ro"]}));
        },
    );
    let o = vm(&env, &["run", "-b", b.to_str().unwrap(), "m1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "into-dir\ninto-file\n");
    assert_eq!(std::fs::read_to_string(dir.join("out")).unwrap(), "out\n");
    assert!(env.leftover_ids().is_empty());
}
