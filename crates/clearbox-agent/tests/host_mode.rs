//! Drives the real agent binary in host mode (`--no-init --listen-unix`) through
//! `clearbox_protocol::AgentClient`: plain guest processes.

mod common;

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use clearbox_protocol::server::Code;
use clearbox_protocol::{AgentClient, ProcessId, ProcessSpec, ReadChunk, Stream};
use common::Agent;

fn sh(script: &str) -> ProcessSpec {
    ProcessSpec::new(["sh", "-c", script])
}

#[test]
fn exec_collects_output_and_exit_code() {
    let agent = Agent::start();
    let c = agent.client();
    assert!(c.check().expect("check"));
    let out = c
        .run(
            &ProcessId::guest("e1"),
            &sh("echo hi; echo err >&2; exit 3"),
        )
        .expect("run");
    assert_eq!(out.stdout, b"hi\n");
    assert_eq!(out.stderr, b"err\n");
    assert_eq!(out.status.code, 3);
    assert_eq!(out.status.signal, None);
    // Everything was delivered: the entry is gone.
    let err = c.wait(&ProcessId::guest("e1"), None).expect_err("released");
    assert!(err.is_not_found(), "{err}");
}

#[test]
fn env_cwd_and_user_are_applied() {
    let agent = Agent::start();
    let c = agent.client();
    let mut spec = sh("echo $FOO; pwd; id -u; id -g");
    spec.env = vec!["FOO=bar".into()];
    spec.cwd = "/tmp".into();
    spec.uid = 65534;
    spec.gid = 65534;
    let out = c.run(&ProcessId::guest("u"), &spec).expect("run");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "bar\n/tmp\n65534\n65534\n"
    );
    assert!(out.status.success());
    // The agent's blocked/ignored signals must not leak into programs.
    let out = c
        .run(
            &ProcessId::guest("sig"),
            &ProcessSpec::new(["cat", "/proc/self/status"]),
        )
        .expect("run");
    let status = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(status.contains("SigBlk:\t0000000000000000"), "{status}");
    // Standard signals only: bit 31 (signal 32) is glibc-internal and may come from the
    // environment the test runs in.
    let ign = status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:\t"))
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .expect("SigIgn line");
    assert_eq!(ign & 0x7fff_ffff, 0, "{status}");
}

#[test]
fn stdin_round_trips_through_cat() {
    let agent = Agent::start();
    let c = agent.client();
    let id = ProcessId::guest("cat");
    let mut spec = ProcessSpec::new(["cat"]);
    spec.stdin = true;
    c.exec(&id, &spec).expect("exec");
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    let reader = {
        let c = c.clone();
        let id = id.clone();
        std::thread::spawn(move || c.read_to_end(&id, Stream::Stdout))
    };
    for chunk in payload.chunks(30_000) {
        assert_eq!(c.write_stdin(&id, chunk).expect("write"), chunk.len());
    }
    c.close_stdin(&id).expect("close");
    let got = reader.join().expect("reader").expect("read");
    assert_eq!(got.len(), payload.len());
    assert!(got == payload);
    assert_eq!(c.read_to_end(&id, Stream::Stderr).expect("stderr"), b"");
    assert!(c.wait(&id, None).expect("wait").success());
}

#[test]
fn signals_are_delivered_and_reported() {
    let agent = Agent::start();
    let c = agent.client();
    for (n, sig) in [(0, 15), (1, 9)] {
        let id = ProcessId::guest(format!("sleep{n}"));
        c.exec(&id, &ProcessSpec::new(["sleep", "100"]))
            .expect("exec");
        let err = c
            .wait(&id, Some(Duration::from_millis(100)))
            .expect_err("still running");
        assert!(
            matches!(err, clearbox_protocol::AgentError::Timeout(_)),
            "{err}"
        );
        c.signal(&id, sig, false).expect("signal");
        let st = c.wait(&id, Some(Duration::from_secs(10))).expect("wait");
        assert_eq!(st.signal, Some(sig));
        assert_eq!(st.code, 128 + sig);
    }
}

#[test]
fn output_right_before_exit_is_never_lost() {
    let agent = Agent::start();
    let c = agent.client();
    for i in 0..200 {
        let id = ProcessId::guest(format!("x{i}"));
        let script = format!("printf 'line-{i}'; printf 'err-{i}' >&2; exit {}", i % 7);
        c.exec(&id, &sh(&script)).expect("exec");
        // Wait first: the agent must already hold every byte.
        let st = c.wait(&id, None).expect("wait");
        assert_eq!(st.code, i % 7);
        let out = c.read_to_end(&id, Stream::Stdout).expect("stdout");
        let err = c.read_to_end(&id, Stream::Stderr).expect("stderr");
        assert_eq!(String::from_utf8_lossy(&out), format!("line-{i}"));
        assert_eq!(String::from_utf8_lossy(&err), format!("err-{i}"));
    }
    // A large burst right before exit, read while the process runs (back-pressure path).
    let id = ProcessId::guest("big");
    let out = c
        .run(&id, &sh("head -c 5000000 /dev/zero | tr '\\0' a; echo END"))
        .expect("run");
    assert_eq!(out.stdout.len(), 5_000_004);
    assert!(out.stdout.ends_with(b"aEND\n"));
}

#[test]
fn orphans_are_reaped_and_background_output_is_kept() {
    let agent = Agent::start();
    let c = agent.client();
    // The background child keeps stdout open: wait covers its output too.
    let out = c
        .run(
            &ProcessId::guest("bg"),
            &sh("(sleep 0.3; echo late) & echo early"),
        )
        .expect("run");
    assert_eq!(out.stdout, b"early\nlate\n");
    // An orphan (stdout detached) is re-parented to the agent and reaped there.
    let out = c
        .run(
            &ProcessId::guest("orphan"),
            &sh("sleep 0.2 >/dev/null 2>&1 & echo $!"),
        )
        .expect("run");
    let pid: i32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("pid");
    let until = Instant::now() + Duration::from_secs(5);
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(Instant::now() < until, "orphan {pid} not reaped");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn read_abandoned_by_a_closed_connection_loses_nothing() {
    let agent = Agent::start();
    let id = ProcessId::guest("late");
    let first = UnixStream::connect(&agent.socket).expect("connect");
    let killer = first.try_clone().expect("dup");
    let c1 = AgentClient::from_unix_stream(first).expect("client");
    // Output appears only after the first connection is gone.
    c1.exec(&id, &sh("sleep 1; echo payload")).expect("exec");
    let pending = {
        let c1 = c1.clone();
        let id = id.clone();
        std::thread::spawn(move || c1.read(&id, Stream::Stdout, 0, None))
    };
    std::thread::sleep(Duration::from_millis(100));
    killer
        .shutdown(std::net::Shutdown::Both)
        .expect("close first connection");
    assert!(
        pending.join().expect("join").is_err(),
        "read on a dead connection"
    );
    let c2 = agent.client();
    // Wait first (consumes nothing): the output is then buffered in the agent, and an
    // abandoned read that had not given up would have taken it already.
    assert!(c2.wait(&id, None).expect("wait").success());
    let out = c2
        .read_to_end(&id, Stream::Stdout)
        .expect("second connection reads");
    assert_eq!(out, b"payload\n");
}

#[test]
fn terminal_exec_and_resize() {
    let agent = Agent::start();
    let c = agent.client();
    let id = ProcessId::guest("tty");
    let mut spec = sh("test -t 0 && echo IS-TTY; read x; stty size");
    spec.terminal = true;
    spec.stdin = true;
    c.exec(&id, &spec).expect("exec");
    c.tty_resize(&id, 40, 100).expect("resize");
    c.write_stdin(&id, b"go\n").expect("write");
    let out =
        String::from_utf8_lossy(&c.read_to_end(&id, Stream::Stdout).expect("read")).into_owned();
    assert!(out.contains("IS-TTY"), "{out:?}");
    assert!(out.contains("40 100"), "{out:?}");
    assert_eq!(
        c.read(&id, Stream::Stderr, 0, None).expect("stderr"),
        ReadChunk::Eof
    );
    assert!(c.wait(&id, None).expect("wait").success());
}

#[test]
fn bad_requests_get_clear_errors() {
    let agent = Agent::start();
    let c = agent.client();
    let e = c
        .wait(&ProcessId::guest("nope"), None)
        .expect_err("unknown");
    assert!(e.is_not_found(), "{e}");
    let e = c
        .exec(
            &ProcessId::guest("a"),
            &ProcessSpec::new(Vec::<String>::new()),
        )
        .expect_err("no args");
    assert_eq!(e.code(), Some(Code::INVALID_ARGUMENT), "{e}");
    let e = c
        .exec(
            &ProcessId::guest("b"),
            &ProcessSpec::new(["/no/such/binary"]),
        )
        .expect_err("no binary");
    assert!(e.to_string().contains("/no/such/binary"), "{e}");
    c.exec(&ProcessId::guest("dup"), &ProcessSpec::new(["sleep", "5"]))
        .expect("exec");
    let e = c
        .exec(&ProcessId::guest("dup"), &ProcessSpec::new(["true"]))
        .expect_err("dup");
    assert_eq!(e.code(), Some(Code::ALREADY_EXISTS), "{e}");
    c.signal(&ProcessId::guest("dup"), 9, true).expect("kill");
    assert_eq!(
        c.wait(&ProcessId::guest("dup"), None).expect("wait").signal,
        Some(9)
    );
    let e = c.start_container("missing").expect_err("no container");
    assert!(e.is_not_found(), "{e}");
}

#[test]
fn version_reports_milestones_and_ps_stats_work() {
    let agent = Agent::start();
    let c = agent.client();
    let v = c.version().expect("version");
    assert_eq!(v.api_version, clearbox_protocol::API_VERSION);
    assert!(!v.is_init);
    assert!(!v.kernel_release.is_empty());
    let m = v.milestones.clone().unwrap_or_default();
    assert!(m.agent_start_ns > 0);
    assert!(m.agent_start_ns <= m.listening_ns);
    assert!(m.listening_ns <= m.first_request_ns);
    let id = ProcessId::guest("s");
    c.exec(&id, &ProcessSpec::new(["sleep", "100"]))
        .expect("exec");
    let pids = c.list_processes("").expect("ps");
    assert!(pids.len() > 2);
    let stats = c.stats("").expect("stats");
    assert!(stats.memory_usage_bytes > 0 && stats.pids_current > 0);
    c.signal(&id, 9, false).expect("kill");
    c.wait(&id, None).expect("wait");
}

#[test]
fn shutdown_stops_host_mode_agent() {
    let mut agent = Agent::start();
    let c = agent.client();
    c.exec(&ProcessId::guest("s"), &ProcessSpec::new(["sleep", "100"]))
        .expect("exec");
    c.shutdown().expect("shutdown");
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(st) = agent.child.try_wait().expect("try_wait") {
            assert!(st.success());
            break;
        }
        assert!(Instant::now() < until, "agent still running");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!agent.socket.exists(), "socket left behind");
    // A run directory given with --run-dir belongs to the caller: it stays.
    assert!(agent.dir.path().join("run").is_dir());
}
