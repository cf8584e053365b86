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
        let live = name
            .parse()
            .is_ok_and(|pid| clearbox_util::proc::is_alive(pid, None));
        if cmd.contains(needle) && live {
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

/// `create --pid-file` of `id` (isolation vm); returns the pid the file names.
fn create_with_pid_file(env: &Env, bundle: &Path, id: &str) -> i32 {
    let pidfile = env.tmp.path().join(format!("{id}.pid"));
    let o = vm(
        env,
        &[
            "create",
            "--bundle",
            bundle.to_str().expect("utf-8 path"),
            "--pid-file",
            pidfile.to_str().expect("utf-8 path"),
            id,
        ],
    );
    assert!(o.status.success(), "create {id}: {}", stderr(&o));
    std::fs::read_to_string(&pidfile)
        .expect("pid file")
        .trim()
        .parse()
        .expect("a pid")
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
    let pid = create_with_pid_file(&env, &b, "c1");
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

/// One field of /proc/PID/status.
fn status_field(pid: i32, key: &str) -> String {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("status of {pid}: {e}"));
    s.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("{key} missing for {pid}"))
        .trim()
        .to_string()
}

fn cap_mask(pid: i32, key: &str) -> u64 {
    u64::from_str_radix(&status_field(pid, key), 16).expect("hex capability mask")
}

fn mount_ns(pid: &str) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/ns/mnt")).expect("mnt ns")
}

/// The memory controller's cgroup of `pid` (v1 `memory` line, else the v2 line).
fn memory_cgroup(pid: i32) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
    let line = |pred: &dyn Fn(&str) -> bool| {
        text.lines()
            .find(|l| pred(l.split(':').nth(1).unwrap_or("")))
            .and_then(|l| l.splitn(3, ':').nth(2))
            .map(str::to_string)
    };
    line(&|c| c.split(',').any(|c| c == "memory"))
        .or_else(|| line(&|c| c.is_empty()))
        .expect("memory cgroup line")
}

/// Memory limit of cgroup `path` in bytes (v1 `memory.limit_in_bytes`, or v2 `memory.max`).
fn cgroup_memory_limit(path: &str) -> u64 {
    let v1 = format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes");
    let v2 = format!("/sys/fs/cgroup{path}/memory.max");
    let text = std::fs::read_to_string(&v1)
        .or_else(|_| std::fs::read_to_string(&v2))
        .unwrap_or_else(|e| panic!("no memory limit file for {path}: {e}"));
    text.trim().parse().expect("numeric limit")
}

fn cgroup_exists(path: &str) -> bool {
    Path::new(&format!("/sys/fs/cgroup/memory{path}")).exists()
        || Path::new(&format!("/sys/fs/cgroup/unified{path}")).exists()
        || Path::new(&format!("/sys/fs/cgroup{path}/cgroup.procs")).exists()
}

/// issue #10: every host process of a VM container runs with least privilege, in the
/// container's host cgroup, and `delete` removes the cgroup, the uid lease and the jail.
#[test]
fn host_processes_are_confined_and_in_the_container_cgroup() {
    // CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID SETGID SETUID SETPCAP SYS_ADMIN
    // (docs/SECURITY.md); never MKNOD or SETFCAP.
    const VIRTIOFSD_MAX: u64 = 0x2001df;
    let env = vm_env();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let cg = format!("/clearbox-test/sec-{}-{nanos}", std::process::id());
    let cg2 = cg.clone();
    let b = env.bundle("b", &["sleep", "300"], move |v| {
        v["root"]["readonly"] = false.into();
        v["linux"]["cgroupsPath"] = cg2.into();
    });
    let shim = create_with_pid_file(&env, &b, "s1");
    let base = vm_base(&env, "s1");
    let rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(base.join("vm/vm.json")).expect("vm.json"))
            .expect("vm.json");
    let uid = rec["jail"]["uid"].as_u64().expect("jail uid") as u32;
    let lock = PathBuf::from(rec["jail"]["lock"].as_str().expect("lease file"));
    assert!(lock.is_file(), "uid lease {} held", lock.display());
    assert_ne!(uid, 0);
    let host_ns = mount_ns("self");
    let mut roles = Vec::new();
    let mut checked = Vec::new();
    for p in rec["processes"].as_array().expect("processes") {
        let role = p["role"].as_str().unwrap().to_string();
        let pid = p["pid"].as_i64().unwrap() as i32;
        roles.push(role.clone());
        checked.push((role, pid));
    }
    // virtiofsd's sandboxed worker is its child, not spawned by the driver.
    let children: Vec<(String, i32)> = checked
        .iter()
        .filter(|(r, _)| r.starts_with("virtiofsd"))
        .flat_map(|(r, pid)| {
            let list = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .unwrap_or_default();
            let r = r.clone();
            list.split_whitespace()
                .map(move |c| (format!("{r} worker"), c.parse().unwrap()))
                .collect::<Vec<_>>()
        })
        .collect();
    checked.extend(children);
    assert!(roles.contains(&"qemu".to_string()), "{roles:?}");
    assert!(
        roles.iter().any(|r| r.starts_with("virtiofsd")),
        "{roles:?}"
    );
    for (role, pid) in &checked {
        let what = format!("{role} (pid {pid})");
        assert_eq!(
            status_field(*pid, "NoNewPrivs"),
            "1",
            "{what}: no_new_privs"
        );
        assert_ne!(mount_ns(&pid.to_string()), host_ns, "{what}: own mount ns");
        assert_eq!(memory_cgroup(*pid), cg, "{what}: in the container's cgroup");
        assert_eq!(cap_mask(*pid, "CapAmb"), 0, "{what}: ambient caps");
        let uids = status_field(*pid, "Uid");
        if role.starts_with("virtiofsd") {
            // Serves files as their owners: uid 0 with a cut-down capability set.
            assert_eq!(
                cap_mask(*pid, "CapBnd") & !VIRTIOFSD_MAX,
                0,
                "{what}: CapBnd"
            );
            assert_eq!(
                cap_mask(*pid, "CapEff") & !VIRTIOFSD_MAX,
                0,
                "{what}: CapEff"
            );
        } else {
            assert_eq!(uids, vec![uid.to_string(); 4].join("\t"), "{what}: uid");
            for k in ["CapEff", "CapPrm", "CapBnd", "CapInh"] {
                assert_eq!(cap_mask(*pid, k), 0, "{what}: {k}");
            }
            assert_eq!(status_field(*pid, "Seccomp"), "2", "{what}: seccomp filter");
        }
        if role.ends_with("worker") {
            assert_eq!(status_field(*pid, "Seccomp"), "2", "{what}: seccomp filter");
        }
    }
    // The shim: the VM's uid, no capability, no_new_privs, the container's root.
    assert_eq!(
        status_field(shim, "Uid"),
        vec![uid.to_string(); 4].join("\t"),
        "shim uid"
    );
    for k in ["CapEff", "CapPrm", "CapBnd", "CapInh", "CapAmb"] {
        assert_eq!(cap_mask(shim, k), 0, "shim {k}");
    }
    assert_eq!(status_field(shim, "NoNewPrivs"), "1", "shim no_new_privs");
    assert_ne!(mount_ns(&shim.to_string()), host_ns, "shim mount ns");
    assert_eq!(memory_cgroup(shim), cg, "shim cgroup");
    // The limit: guest RAM (QEMU's -m) plus the documented host overhead.
    let qemu = checked.iter().find(|(r, _)| r == "qemu").unwrap().1;
    let cmdline = std::fs::read(format!("/proc/{qemu}/cmdline")).unwrap();
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let mem = args[args.iter().position(|a| a == "-m").unwrap() + 1].clone();
    let guest_mib: u64 = mem.trim_end_matches('M').parse().unwrap();
    assert_eq!(
        cgroup_memory_limit(&cg),
        (guest_mib + clearbox_backend_vm::HOST_OVERHEAD_MIB) << 20
    );
    let o = env.run(&["delete", "--force", "s1"]);
    assert!(o.status.success(), "delete: {}", stderr(&o));
    assert_nothing_left(&env, "s1", &base);
    assert!(!cgroup_exists(&cg), "cgroup {cg} left");
    assert!(!lock.exists(), "uid lease {} left", lock.display());
    for c in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let _ = std::fs::remove_dir(c.path().join("clearbox-test"));
    }
}
