//! Drives a container inside a clearbox VM whose rootfs comes from the host over virtio-fs,
//! printing one line per check and exiting non-zero on the first failure.
//!
//! ```text
//! vm_container unix|hybrid-vsock AGENT_SOCKET SHARED_DIR [--shutdown] [--podman-spec FILE]
//! ```
//! `--podman-spec` also runs a container from a config.json podman wrote (after rewriting
//! it for the guest as the host backend does).
//! SHARED_DIR is the host directory served by virtiofsd with tag `clearbox`: it must hold
//! `rootfs/` (a busybox rootfs) and `mounts/0/` (bind-mounted at /data in the container).
//! `crates/clearbox-agent/scripts/vm-container-check.sh` sets everything up and runs this.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clearbox_protocol::{AgentClient, ProcessId, ProcessSpec, RootfsLocation, Stream};
use serde_json::json;

type R<T> = Result<T, String>;

/// Where the agent mounts the share's virtio-fs tag.
const GUEST_SHARED: &str = clearbox_protocol::guest::SHARE;

fn connect(kind: &str, path: &str) -> R<UnixStream> {
    let mut s = UnixStream::connect(path).map_err(|e| format!("connect {path}: {e}"))?;
    if kind == "hybrid-vsock" {
        s.write_all(format!("CONNECT {}\n", clearbox_protocol::AGENT_VSOCK_PORT).as_bytes())
            .map_err(|e| e.to_string())?;
        let mut line = Vec::new();
        BufReader::with_capacity(1, &s)
            .read_until(b'\n', &mut line)
            .map_err(|e| e.to_string())?;
        if !line.starts_with(b"OK ") {
            return Err(format!("handshake: {:?}", String::from_utf8_lossy(&line)));
        }
    }
    Ok(s)
}

fn check(name: &str, ok: bool, detail: impl std::fmt::Debug) -> R<()> {
    if ok {
        println!("PASS {name}");
        Ok(())
    } else {
        Err(format!("FAIL {name}: {detail:?}"))
    }
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

fn run(c: &AgentClient, shared: &Path, podman_spec: Option<&Path>) -> R<()> {
    let e = |e: clearbox_protocol::AgentError| e.to_string();
    let v = c.version().map_err(e)?;
    println!(
        "agent {} in guest kernel {} (init={})",
        v.agent_version, v.kernel_release, v.is_init
    );
    let data = shared.join("mounts/0");
    let _ = std::fs::remove_file(data.join("from-guest"));
    let _ = std::fs::remove_file(data.join("ticks"));
    std::fs::write(data.join("from-host"), "host-data\n").map_err(|e| e.to_string())?;

    // The spec as the host would send it: rewritten for the guest (guest rootfs and bind
    // sources, no hooks; cgroupsPath left to the agent's default /clearbox/<id>).
    let mut spec =
        serde_json::to_value(oci_spec::runtime::Spec::default()).map_err(|e| e.to_string())?;
    spec["root"] = json!({"path": format!("{GUEST_SHARED}/rootfs"), "readonly": false});
    spec["hostname"] = json!("vmbox");
    spec["process"]["terminal"] = json!(false);
    spec["process"]["env"] = json!(["PATH=/bin", "GREETING=hi"]);
    spec["process"]["args"] = json!([
        "/bin/sh",
        "-c",
        "echo uname=$(uname -r) host=$(hostname) pid=$$ greeting=$GREETING nofile=$(ulimit -n); \
         cat /data/from-host; echo written-in-guest > /data/from-guest; \
         while [ ! -e /data/stop ]; do echo x >> /data/ticks; sleep 0.1; done; exit 3"
    ]);
    spec["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": 4321, "hard": 4321}]);
    spec["mounts"]
        .as_array_mut()
        .ok_or("default spec has no mounts")?
        .push(json!({
            "destination": "/data",
            "type": "bind",
            "source": format!("{GUEST_SHARED}/mounts/0"),
            "options": ["rbind", "rw"]
        }));
    let root = RootfsLocation::VirtioFs {
        tag: clearbox_protocol::guest::SHARE_TAG.into(),
        path: "rootfs".into(),
    };
    let t = Instant::now();
    c.create_container(
        "c1",
        &clearbox_protocol::GuestSpec::from_json_text(spec.to_string())
            .map_err(|e| e.to_string())?,
        &root,
        false,
        false,
    )
    .map_err(e)?;
    let created = t.elapsed();
    c.start_container("c1").map_err(e)?;
    println!(
        "PASS create ({created:?}) + start ({:?})",
        t.elapsed() - created
    );
    let init = ProcessId::container("c1");
    let mut first = Vec::new();
    while first.iter().filter(|b| **b == b'\n').count() < 2 {
        match c
            .read(&init, Stream::Stdout, 0, Some(Duration::from_secs(30)))
            .map_err(e)?
        {
            clearbox_protocol::ReadChunk::Data(d) if !d.is_empty() => first.extend(d),
            other => {
                let err = c.read(&init, Stream::Stderr, 0, Some(Duration::from_secs(1)));
                return Err(format!("FAIL container output: {other:?}, stderr {err:?}"));
            }
        }
    }
    let text = String::from_utf8_lossy(&first).into_owned();
    print!("     container says: {text}");
    check(
        "uname -r = guest kernel, hostname, pid 1, env, rlimit, bind mount",
        text == format!(
            "uname={} host=vmbox pid=1 greeting=hi nofile=4321\nhost-data\n",
            v.kernel_release
        ),
        &text,
    )?;
    let until = Instant::now() + Duration::from_secs(30);
    while file_len(&data.join("from-guest")) == 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    let written = std::fs::read_to_string(data.join("from-guest")).unwrap_or_default();
    check(
        "file written in the container appears on the host",
        written == "written-in-guest\n",
        &written,
    )?;

    let t = Instant::now();
    let x = c
        .run(
            &ProcessId::container_exec("c1", "x1"),
            &ProcessSpec::new([
                "/bin/sh",
                "-c",
                "echo $(hostname) $(cat /proc/1/cmdline | head -c 7) $(ulimit -n); exit 4",
            ]),
        )
        .map_err(e)?;
    check(
        &format!("exec in container ({:?})", t.elapsed()),
        x.stdout == b"vmbox /bin/sh 4321\n" && x.status.code == 4,
        &x,
    )?;
    let mut tty = ProcessSpec::new(["/bin/sh", "-c", "test -t 1 && echo TTY"]);
    tty.terminal = true;
    let x = c
        .run(&ProcessId::container_exec("c1", "tty"), &tty)
        .map_err(e)?;
    check("terminal exec", x.stdout == b"TTY\r\n", &x)?;

    let pids = c.list_processes("c1").map_err(e)?;
    check("container ps", !pids.is_empty(), &pids)?;
    let st = c.stats("c1").map_err(e)?;
    check(
        "container stats from its cgroup",
        st.source == "cgroup" && st.pids_current >= 1 && st.cpu_usage_usec > 0,
        &st,
    )?;

    let ticks = data.join("ticks");
    c.pause_container("c1").map_err(e)?;
    std::thread::sleep(Duration::from_millis(500));
    let frozen = file_len(&ticks);
    std::thread::sleep(Duration::from_millis(1500));
    let still = file_len(&ticks);
    c.resume_container("c1").map_err(e)?;
    let until = Instant::now() + Duration::from_secs(30);
    while file_len(&ticks) == still && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    check(
        "pause freezes, resume thaws (cgroup v2 freezer)",
        frozen == still && file_len(&ticks) > still,
        (frozen, still, file_len(&ticks)),
    )?;

    std::fs::write(data.join("stop"), "").map_err(|e| e.to_string())?;
    let st = c.wait(&init, Some(Duration::from_secs(60))).map_err(e)?;
    c.read_to_end(&init, Stream::Stdout).map_err(e)?;
    check("init exit code 3", st.code == 3 && st.signal.is_none(), st)?;
    let _ = std::fs::remove_file(data.join("stop"));
    c.remove_container("c1", false).map_err(e)?;
    println!("PASS container removed");

    // Seccomp (libseccomp, linked statically into the agent), a read-only root, capabilities.
    let mut spec2 = spec.clone();
    spec2["root"]["readonly"] = json!(true);
    spec2["process"]["args"] = json!([
        "/bin/sh",
        "-c",
        "id -u; grep CapBnd /proc/self/status; mkdir /dev/shm/x; touch /newfile; exit 0"
    ]);
    spec2["linux"]["seccomp"] = seccomp_denying_mkdir();
    c.create_container(
        "c2",
        &clearbox_protocol::GuestSpec::from_json_text(spec2.to_string())
            .map_err(|e| e.to_string())?,
        &root,
        false,
        false,
    )
    .map_err(e)?;
    c.start_container("c2").map_err(e)?;
    let id2 = ProcessId::container("c2");
    let out = c.read_to_end(&id2, Stream::Stdout).map_err(e)?;
    let err = c.read_to_end(&id2, Stream::Stderr).map_err(e)?;
    let st = c.wait(&id2, Some(Duration::from_secs(60))).map_err(e)?;
    let (out, err) = (
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    );
    print!("     c2 stdout: {out}     c2 stderr: {err}");
    check(
        "seccomp (mkdir -> EPERM), read-only root, capability bounding set",
        st.success()
            && out == "0\nCapBnd:\t0000000020000420\n"
            && err.contains("Operation not permitted")
            && err.contains("Read-only file system"),
        (&out, &err),
    )?;
    c.remove_container("c2", false).map_err(e)?;

    // A terminal init: libcontainer opens the pty inside the container and sends the master
    // to the agent over a console socket.
    let mut spec4 = spec.clone();
    spec4["process"]["args"] = json!([
        "/bin/sh",
        "-c",
        "test -t 0 && test -t 1 && echo TTY; stty size"
    ]);
    spec4["process"]["consoleSize"] = json!({"height": 33, "width": 101});
    c.create_container(
        "c4",
        &clearbox_protocol::GuestSpec::from_json_text(spec4.to_string())
            .map_err(|e| e.to_string())?,
        &root,
        true,
        false,
    )
    .map_err(e)?;
    c.start_container("c4").map_err(e)?;
    let id4 = ProcessId::container("c4");
    let out = c.read_to_end(&id4, Stream::Stdout).map_err(e)?;
    let st = c.wait(&id4, Some(Duration::from_secs(60))).map_err(e)?;
    check(
        "terminal init (pty from the container's devpts, size 33x101)",
        st.success() && out == b"TTY\r\n33 101\r\n",
        String::from_utf8_lossy(&out),
    )?;
    c.remove_container("c4", false).map_err(e)?;
    if let Some(file) = podman_spec {
        podman_shaped(c, shared, &root, file)?;
    }
    println!("PASS containers removed");
    Ok(())
}

/// A config.json written by podman (seccomp profile, sysctls, device rules, bind mounts of
/// its own files...), rewritten for the guest the way the host backend does: bind sources
/// copied into the share's `mounts/<n>`, host namespace paths dropped, a guest cgroup, no
/// hooks.
fn podman_shaped(c: &AgentClient, shared: &Path, root: &RootfsLocation, file: &Path) -> R<()> {
    let e = |e: clearbox_protocol::AgentError| e.to_string();
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let mut spec: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    spec["root"] = json!({"path": format!("{GUEST_SHARED}/rootfs"), "readonly": false});
    spec["process"]["args"] = json!([
        "/bin/sh",
        "-c",
        "echo host=$(hostname) id=$(id -u) nofile=$(ulimit -n); \
         cat /proc/sys/net/ipv4/ping_group_range; test -e /etc/hosts && echo hosts-mounted"
    ]);
    spec["process"]["terminal"] = json!(false);
    if let Some(obj) = spec.as_object_mut() {
        obj.remove("hooks");
    }
    spec["linux"]["cgroupsPath"] = json!("/clearbox/c3");
    if let Some(ns) = spec["linux"]["namespaces"].as_array_mut() {
        for n in ns.iter_mut().filter_map(|n| n.as_object_mut()) {
            n.remove("path");
        }
    }
    if let Some(mounts) = spec["mounts"].as_array_mut() {
        for (i, m) in mounts.iter_mut().enumerate() {
            if m["type"] != "bind" {
                continue;
            }
            let src = PathBuf::from(m["source"].as_str().unwrap_or_default());
            let dst = shared.join(format!("mounts/{i}"));
            let _ = std::fs::remove_dir_all(&dst);
            let _ = std::fs::remove_file(&dst);
            let dest = m["destination"].as_str().unwrap_or_default().to_string();
            if src.is_dir() || (!src.exists() && dest == "/dev/shm") {
                std::fs::create_dir_all(&dst).map_err(|e| e.to_string())?;
            } else if src.exists() {
                std::fs::copy(&src, &dst).map_err(|e| format!("{}: {e}", src.display()))?;
            } else {
                // podman's per-container files are gone once the container was removed.
                std::fs::write(&dst, format!("# stand-in for {}\n", src.display()))
                    .map_err(|e| e.to_string())?;
            }
            m["source"] = json!(format!("{GUEST_SHARED}/mounts/{i}"));
        }
    }
    c.create_container(
        "c3",
        &clearbox_protocol::GuestSpec::from_json_text(spec.to_string())
            .map_err(|e| e.to_string())?,
        root,
        false,
        false,
    )
    .map_err(e)?;
    c.start_container("c3").map_err(e)?;
    let id = ProcessId::container("c3");
    let out = c.read_to_end(&id, Stream::Stdout).map_err(e)?;
    let err = c.read_to_end(&id, Stream::Stderr).map_err(e)?;
    let st = c.wait(&id, Some(Duration::from_secs(60))).map_err(e)?;
    let out = String::from_utf8_lossy(&out).into_owned();
    print!("     c3 stdout: {out}");
    check(
        "podman-generated spec (seccomp profile, sysctl, rlimits, bind-mounted /etc files)",
        st.success() && out.contains("id=0 nofile=1048576") && out.contains("hosts-mounted"),
        (&out, String::from_utf8_lossy(&err)),
    )?;
    c.remove_container("c3", false).map_err(e)
}

fn seccomp_denying_mkdir() -> serde_json::Value {
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
    })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (kind, path, shared) = match args.as_slice() {
        [k, p, s, ..] => (k.clone(), p.clone(), PathBuf::from(s)),
        _ => {
            eprintln!(
                "usage: vm_container unix|hybrid-vsock AGENT_SOCKET SHARED_DIR \
                 [--shutdown] [--podman-spec CONFIG_JSON]"
            );
            std::process::exit(2);
        }
    };
    let shutdown = args.iter().any(|a| a == "--shutdown");
    let podman_spec = args
        .iter()
        .position(|a| a == "--podman-spec")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from);
    // The VM may still be booting: retry the connection for a while.
    let until = Instant::now() + Duration::from_secs(120);
    let mut conn = connect(&kind, &path);
    while conn.is_err() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(200));
        conn = connect(&kind, &path);
    }
    let result = conn
        .and_then(|s| AgentClient::from_unix_stream(s).map_err(|e| e.to_string()))
        .map(|c| c.with_timeout(Duration::from_secs(120)))
        .and_then(|c| {
            let r = run(&c, &shared, podman_spec.as_deref());
            if shutdown {
                let _ = c.shutdown();
            }
            r
        });
    if let Err(msg) = result {
        eprintln!("{msg}");
        std::process::exit(1);
    }
}
