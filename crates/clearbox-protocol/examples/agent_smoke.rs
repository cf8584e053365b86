//! End-to-end checks against a running agent (host mode or in a VM), printing one line per
//! check and exiting non-zero on the first failure.
//!
//! ```text
//! agent_smoke unix PATH | hybrid-vsock PATH [--shutdown]
//! ```
//! Needs `/bin/busybox` on the agent's side (the container check copies it into a rootfs).
//!
//! In a VM (what was run to validate the agent; TCG, no /dev/vhost-vsock needed):
//! ```text
//! # initramfs: /init = the static agent, plus /bin/busybox and /bin/sh -> busybox
//! vhost-device-vsock --socket /tmp/vhost.sock --uds-path /tmp/vsock.sock --guest-cid 3 &
//! guest/kernel/qemu-boot.sh VMLINUX INITRAMFS -- \
//!     -chardev socket,id=vs0,path=/tmp/vhost.sock -device vhost-user-vsock-device,chardev=vs0 &
//! cargo run -p clearbox-protocol --example agent_smoke -- hybrid-vsock /tmp/vsock.sock --shutdown
//! ```

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use clearbox_protocol::{
    AgentClient, ProcessId, ProcessSpec, RootfsLocation, Stream, AGENT_VSOCK_PORT,
};

type R<T> = Result<T, String>;

fn connect(kind: &str, path: &str) -> R<UnixStream> {
    let mut s = UnixStream::connect(path).map_err(|e| format!("connect {path}: {e}"))?;
    if kind == "hybrid-vsock" {
        s.write_all(format!("CONNECT {AGENT_VSOCK_PORT}\n").as_bytes())
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

fn sh(script: &str) -> ProcessSpec {
    ProcessSpec::new(["/bin/sh", "-c", script])
}

fn check(name: &str, ok: bool, detail: impl std::fmt::Debug) -> R<()> {
    if ok {
        println!("PASS {name}");
        Ok(())
    } else {
        Err(format!("FAIL {name}: {detail:?}"))
    }
}

fn smoke(c: &AgentClient) -> R<()> {
    let e = |e: clearbox_protocol::AgentError| e.to_string();
    let out = c
        .run(&ProcessId::guest("a"), &sh("echo hi; echo err >&2; exit 3"))
        .map_err(e)?;
    check(
        "exec output + exit code",
        out.stdout == b"hi\n" && out.stderr == b"err\n" && out.status.code == 3,
        &out,
    )?;

    let t = Instant::now();
    for i in 0..50 {
        let id = ProcessId::guest(format!("l{i}"));
        c.exec(&id, &sh(&format!("printf x{i}; exit 1")))
            .map_err(e)?;
        let st = c.wait(&id, None).map_err(e)?;
        let o = c.read_to_end(&id, Stream::Stdout).map_err(e)?;
        c.read_to_end(&id, Stream::Stderr).map_err(e)?;
        check_quiet(o == format!("x{i}").as_bytes() && st.code == 1, i)?;
    }
    println!("PASS 50x output-before-exit ({:?}/exec)", t.elapsed() / 50);

    let id = ProcessId::guest("cat");
    let mut spec = ProcessSpec::new(["/bin/sh", "-c", "cat"]);
    spec.stdin = true;
    c.exec(&id, &spec).map_err(e)?;
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    c.write_stdin(&id, &data).map_err(e)?;
    c.close_stdin(&id).map_err(e)?;
    let got = c.read_to_end(&id, Stream::Stdout).map_err(e)?;
    c.read_to_end(&id, Stream::Stderr).map_err(e)?;
    let st = c.wait(&id, None).map_err(e)?;
    check(
        "stdin round trip 300 kB",
        got == data && st.success(),
        got.len(),
    )?;

    let id = ProcessId::guest("sleep");
    c.exec(&id, &sh("exec sleep 100")).map_err(e)?;
    std::thread::sleep(Duration::from_millis(50));
    c.signal(&id, 15, false).map_err(e)?;
    let st = c.wait(&id, Some(Duration::from_secs(10))).map_err(e)?;
    check("signal 15 reported", st.signal == Some(15), st)?;

    let id = ProcessId::guest("tty");
    let mut spec = sh("test -t 1 && echo TTY; stty size");
    spec.terminal = true;
    let out = c.run(&id, &spec).map_err(e)?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    check("terminal", text.contains("TTY"), &text)?;

    let s = c.stats("").map_err(e)?;
    check(
        "guest stats",
        s.memory_limit_bytes > 0 && s.pids_current > 0,
        &s,
    )?;

    // Container from a busybox rootfs built inside the agent's system.
    let prep = c
        .run(
            &ProcessId::guest("prep"),
            &sh("set -e; r=/tmp/smoke-rootfs; rm -rf $r; mkdir -p $r/bin $r/proc $r/dev $r/sys; \
                 cp /bin/busybox $r/bin/; for a in sh sleep hostname cat ls; do ln -s busybox $r/bin/$a; done"),
        )
        .map_err(e)?;
    check("rootfs prepared", prep.status.success(), &prep)?;
    let spec = serde_json::json!({
        "hostname": "smoke",
        "process": {"args": ["/bin/sh", "-c", "echo pid=$$ host=$(hostname); exec sleep 100"], "env": ["PATH=/bin"]}
    });
    let root = RootfsLocation::GuestPath("/tmp/smoke-rootfs".into());
    c.create_container("s1", spec.to_string().as_bytes(), &root, false, false)
        .map_err(e)?;
    c.start_container("s1").map_err(e)?;
    let init = ProcessId::container("s1");
    let mut first = Vec::new();
    while !first.ends_with(b"\n") {
        match c
            .read(&init, Stream::Stdout, 0, Some(Duration::from_secs(10)))
            .map_err(e)?
        {
            clearbox_protocol::ReadChunk::Data(d) if !d.is_empty() => first.extend(d),
            other => return Err(format!("FAIL container output: {other:?}")),
        }
    }
    check(
        "container pid 1 + hostname",
        first == b"pid=1 host=smoke\n",
        String::from_utf8_lossy(&first),
    )?;
    let x = c
        .run(&ProcessId::container_exec("s1", "x"), &sh("hostname; ls /"))
        .map_err(e)?;
    check(
        "exec in container",
        x.stdout.starts_with(b"smoke\n") && x.status.success(),
        &x,
    )?;
    let pids = c.list_processes("s1").map_err(e)?;
    check("container ps", !pids.is_empty(), &pids)?;
    let st = c.stats("s1").map_err(e)?;
    println!("     container stats: {st:?}");
    match c.pause_container("s1") {
        Ok(()) => {
            c.resume_container("s1").map_err(e)?;
            println!("PASS pause/resume");
        }
        Err(err) => println!("SKIP pause/resume: {err}"),
    }
    c.signal(&init, 9, true).map_err(e)?;
    let st = c.wait(&init, Some(Duration::from_secs(10))).map_err(e)?;
    check("container kill-all", st.signal == Some(9), st)?;
    c.remove_container("s1", false).map_err(e)?;
    println!("PASS container removed");
    Ok(())
}

fn check_quiet(ok: bool, i: usize) -> R<()> {
    if ok {
        Ok(())
    } else {
        Err(format!("FAIL output-before-exit iteration {i}"))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (kind, path) = match args.as_slice() {
        [k, p, ..] => (k.clone(), p.clone()),
        _ => {
            eprintln!("usage: agent_smoke unix|hybrid-vsock PATH [--shutdown]");
            std::process::exit(2);
        }
    };
    let shutdown = args.iter().any(|a| a == "--shutdown");
    let result = connect(&kind, &path)
        .and_then(|s| AgentClient::from_unix_stream(s).map_err(|e| e.to_string()))
        .and_then(|c| {
            let v = c.version().map_err(|e| e.to_string())?;
            println!(
                "agent {} kernel {} init={} milestones {:?}",
                v.agent_version, v.kernel_release, v.is_init, v.milestones
            );
            smoke(&c)?;
            if shutdown {
                c.shutdown().map_err(|e| e.to_string())?;
                println!("PASS shutdown sent");
            }
            Ok(())
        });
    if let Err(msg) = result {
        eprintln!("{msg}");
        std::process::exit(1);
    }
}
