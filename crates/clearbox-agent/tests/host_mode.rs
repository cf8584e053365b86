//! Drives the real agent binary in host mode (`--no-init --listen-unix`) through
//! `clearbox_protocol::AgentClient`: processes exec'd into a container (the agent runs nothing
//! outside one). Needs root and /bin/busybox, as `containers`.

mod common;

use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use clearbox_protocol::server::Code;
use clearbox_protocol::{AgentClient, ProcessId, ProcessSpec, ReadChunk, Stream};
use common::{create, Agent, Boxed, Fixture, CID};

fn sh(script: &str) -> ProcessSpec {
    ProcessSpec::new(["sh", "-c", script])
}

#[test]
fn exec_collects_output_and_exit_code() {
    let b = Boxed::start("exec_collect");
    let c = &b.client;
    assert!(c.check().expect("check"));
    let out = c
        .run(&b.id("e1"), &sh("echo hi; echo err >&2; exit 3"))
        .expect("run");
    assert_eq!(out.stdout, b"hi\n");
    assert_eq!(out.stderr, b"err\n");
    assert_eq!(out.status.code, 3);
    assert_eq!(out.status.signal, None);
    // Everything was delivered: the entry is gone.
    let err = c.wait(&b.id("e1"), None).expect_err("released");
    assert!(err.is_not_found(), "{err}");
}

#[test]
fn env_cwd_and_user_are_applied() {
    let b = Boxed::start("env_cwd_and_");
    let c = &b.client;
    let mut spec = sh("echo $FOO; pwd; id -u; id -g");
    spec.env = vec!["FOO=bar".into()];
    spec.cwd = "/tmp".into();
    spec.uid = 65534;
    spec.gid = 65534;
    let out = c.run(&b.id("u"), &spec).expect("run");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "bar\n/tmp\n65534\n65534\n"
    );
    assert!(out.status.success());
    // The agent's blocked/ignored signals must not leak into programs.
    let out = c
        .run(
            &b.id("sig"),
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
    let b = Boxed::start("stdin_round_");
    let c = &b.client;
    let id = b.id("cat");
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
    let b = Boxed::start("signals_are_");
    let c = &b.client;
    for (n, sig) in [(0, 15), (1, 9)] {
        let id = b.id(&format!("sleep{n}"));
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
    let b = Boxed::start("output_right");
    let c = &b.client;
    // Each one is a container exec (a libcontainer helper): fewer rounds than plain processes.
    for i in 0..40 {
        let id = b.id(&format!("x{i}"));
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
    let id = b.id("big");
    let out = c
        .run(&id, &sh("head -c 5000000 /dev/zero | tr '\\0' a; echo END"))
        .expect("run");
    assert_eq!(out.stdout.len(), 5_000_004);
    assert!(out.stdout.ends_with(b"aEND\n"));
}

#[test]
fn orphans_are_reaped_and_background_output_is_kept() {
    let b = Boxed::start("orphans_are_");
    let c = &b.client;
    // The background child keeps stdout open: wait covers its output too.
    let out = c
        .run(&b.id("bg"), &sh("(sleep 0.3; echo late) & echo early"))
        .expect("run");
    assert_eq!(out.stdout, b"early\nlate\n");
    // Orphans are re-parented to the container's init (its pid namespace), as with runc.
}

#[test]
fn read_abandoned_by_a_closed_connection_loses_nothing() {
    let b = Boxed::start("read_abandon");
    let agent = &b.agent;
    let id = b.id("late");
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
    let b = Boxed::start("terminal_exe");
    let c = &b.client;
    let id = b.id("tty");
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
    let b = Boxed::start("bad_requests");
    let c = &b.client;
    let e = c.wait(&b.id("nope"), None).expect_err("unknown");
    assert!(e.is_not_found(), "{e}");
    let e = c
        .exec(&b.id("a"), &ProcessSpec::new(Vec::<String>::new()))
        .expect_err("no args");
    assert_eq!(e.code(), Some(Code::INVALID_ARGUMENT), "{e}");
    let e = c
        .exec(&b.id("b"), &ProcessSpec::new(["/no/such/binary"]))
        .expect_err("no binary");
    assert!(e.to_string().contains("/no/such/binary"), "{e}");
    c.exec(&b.id("dup"), &ProcessSpec::new(["sleep", "5"]))
        .expect("exec");
    let e = c
        .exec(&b.id("dup"), &ProcessSpec::new(["true"]))
        .expect_err("dup");
    assert_eq!(e.code(), Some(Code::ALREADY_EXISTS), "{e}");
    c.signal(&b.id("dup"), 9, true).expect("kill");
    assert_eq!(c.wait(&b.id("dup"), None).expect("wait").signal, Some(9));
    let e = c.start_container("missing").expect_err("no container");
    assert!(e.is_not_found(), "{e}");
}

/// The agent runs nothing outside a container: an empty container id is refused by every
/// request naming a process or a container, an unknown one is not found.
#[test]
fn nothing_runs_outside_a_container() {
    let b = Boxed::start("outside");
    let c = &b.client;
    let invalid = |e: clearbox_protocol::AgentError| {
        assert_eq!(e.code(), Some(Code::INVALID_ARGUMENT), "{e}");
    };
    let plain = ProcessId {
        container_id: String::new(),
        exec_id: "e".into(),
    };
    invalid(c.exec(&plain, &sh("echo escaped")).expect_err("exec"));
    invalid(c.wait(&plain, None).expect_err("wait"));
    invalid(c.signal(&plain, 9, false).expect_err("signal"));
    invalid(
        c.signal(&ProcessId::container(""), 9, true)
            .expect_err("signal all"),
    );
    invalid(c.write_stdin(&plain, b"x").expect_err("stdin"));
    invalid(c.close_stdin(&plain).expect_err("close stdin"));
    invalid(c.read(&plain, Stream::Stdout, 0, None).expect_err("stdout"));
    invalid(c.read(&plain, Stream::Stderr, 0, None).expect_err("stderr"));
    invalid(c.tty_resize(&plain, 1, 1).expect_err("resize"));
    invalid(c.list_processes("").expect_err("ps"));
    invalid(c.stats("").expect_err("stats"));
    invalid(c.start_container("").expect_err("start"));
    invalid(c.remove_container("", true).expect_err("remove"));
    let ghost = ProcessId::container_exec("ghost", "e");
    assert!(c
        .exec(&ghost, &sh("true"))
        .expect_err("ghost")
        .is_not_found());
    assert!(c.wait(&ghost, None).expect_err("ghost").is_not_found());
    assert!(c.stats("ghost").expect_err("ghost").is_not_found());
    // The container itself still works.
    let out = c.run(&b.id("ok"), &sh("echo inside")).expect("run");
    assert_eq!(out.stdout, b"inside\n");
}

#[test]
fn version_reports_milestones_and_ps_stats_work() {
    let b = Boxed::start("version_repo");
    let c = &b.client;
    let v = c.version().expect("version");
    assert_eq!(v.api_version, clearbox_protocol::API_VERSION);
    assert!(!v.is_init);
    assert!(!v.kernel_release.is_empty());
    let m = v.milestones.clone().unwrap_or_default();
    assert!(m.agent_start_ns > 0);
    assert!(m.agent_start_ns <= m.listening_ns);
    assert!(m.listening_ns <= m.first_request_ns);
    let id = b.id("s");
    c.exec(&id, &ProcessSpec::new(["sleep", "100"]))
        .expect("exec");
    let pids = c.list_processes(CID).expect("ps");
    assert!(pids.len() >= 2, "{pids:?}");
    let stats = c.stats(CID).expect("stats");
    assert!(stats.memory_usage_bytes > 0 && stats.pids_current >= 2);
    c.signal(&id, 9, false).expect("kill");
    c.wait(&id, None).expect("wait");
}

#[test]
fn shutdown_stops_host_mode_agent() {
    let fx = Fixture::new("shutdown");
    let mut agent = Agent::start();
    let c = agent.client();
    create(
        &c,
        &fx,
        CID,
        &fx.spec(CID, "exec sleep 1000000"),
        false,
        false,
    );
    c.start_container(CID).expect("start");
    c.exec(
        &ProcessId::container_exec(CID, "s"),
        &ProcessSpec::new(["sleep", "100"]),
    )
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

/// Issue #10: every `clearbox` command opens a connection to the agent, and some end
/// mid-request (a killed `clearbox exec` waiting, a client that hangs up after half a frame):
/// the agent must give back the threads of each one.
#[test]
fn connections_that_end_anywhere_give_their_threads_back() {
    use std::io::Write;
    let b = Boxed::start("conn_threads");
    let agent_pid = b.agent.child.id();
    let threads = || {
        std::fs::read_dir(format!("/proc/{agent_pid}/task"))
            .expect("agent tasks")
            .count()
    };
    let settle = |limit: usize| {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let n = threads();
            if n <= limit {
                return n;
            }
            assert!(
                Instant::now() < until,
                "agent holds {n} threads, at most {limit} expected"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let base = threads();
    // What commands do: connect, ask, go.
    for i in 0..20 {
        let c = b.agent.client();
        let out = c.run(&b.id(&format!("r{i}")), &sh("true")).expect("run");
        assert!(out.status.success());
        assert!(c.check().expect("check"));
    }
    // A command killed while it waits for a process: the wait is cancelled.
    for i in 0..10 {
        let id = b.id(&format!("w{i}"));
        let c = b.agent.client();
        c.exec(&id, &sh("sleep 1000")).expect("exec");
        let waiter = {
            let c = c.clone();
            let id = id.clone();
            std::thread::spawn(move || c.wait(&id, None))
        };
        std::thread::sleep(Duration::from_millis(50));
        b.client.signal(&id, 9, false).expect("kill");
        let _ = waiter.join();
    }
    // Raw peers that hang up after half a header, half a frame, or an oversized header.
    let mut oversized = (u32::MAX - 1).to_be_bytes().to_vec();
    oversized.extend_from_slice(&[0, 0, 0, 1, 1, 0]);
    let partial: [&[u8]; 4] = [
        &[],
        &[0, 0, 0],
        &[0, 0, 0, 100, 0, 0, 0, 1, 1, 0, 7, 7],
        &oversized,
    ];
    for _ in 0..25 {
        for bytes in partial {
            let mut s = UnixStream::connect(&b.agent.socket).expect("connect");
            let _ = s.write_all(bytes);
        }
    }
    // Idle again: the container's output readers and the first client's connection, as before
    // (a thread or two of slack for the reaper's timing).
    settle(base + 2);
    assert!(b.client.check().expect("still serving"));
}

/// Children of `pid` named `comm`.
fn children_named(pid: u32, comm: &str) -> Vec<i32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            let ppid = clearbox_util::proc::stat(*p).and_then(|s| u32::try_from(s.ppid).ok());
            ppid == Some(pid)
                && std::fs::read_to_string(format!("/proc/{p}/comm"))
                    .is_ok_and(|c| c.trim() == comm)
        })
        .collect()
}

#[test]
fn pre_forked_helper_serves_execs_and_its_loss_is_survived() {
    let b = Boxed::start("zygote_loss");
    let c = &b.client;
    // The container above was set up by the pre-forked helper, a child of the agent.
    let zygotes = children_named(b.agent.child.id(), "clearbox-helper");
    assert_eq!(zygotes.len(), 1, "one pre-forked helper: {zygotes:?}");
    let out = c.run(&b.id("before"), &sh("echo one")).expect("run");
    assert_eq!(out.stdout, b"one\n");
    // It keeps one standby forked ahead of the next request (made again after each one).
    let zygote = u32::try_from(zygotes[0]).expect("pid");
    let until = Instant::now() + Duration::from_secs(10);
    let standbys = loop {
        let s = children_named(zygote, "clearbox-helper");
        if s.len() == 1 || Instant::now() > until {
            break s;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(standbys.len(), 1, "one standby: {standbys:?}");
    // A standby killed while idle is made again: the next request is served.
    // SAFETY: kill(2) with integers; the pid is the zygote's child found above.
    unsafe { libc::kill(standbys[0], libc::SIGKILL) };
    // Gone before the next request: a standby that dies as the request arrives may have
    // taken it (the agent then waits out its answer timeout and re-executes itself).
    let until = Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{}", standbys[0])).exists() {
        assert!(Instant::now() < until, "killed standby still there");
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = c.run(&b.id("standby"), &sh("echo again")).expect("run");
    assert_eq!(out.stdout, b"again\n");
    let until = Instant::now() + Duration::from_secs(10);
    let standbys = loop {
        let s = children_named(zygote, "clearbox-helper");
        if (s.len() == 1 && s[0] != standbys[0]) || Instant::now() > until {
            break s;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(standbys.len(), 1, "one new standby: {standbys:?}");
    // SAFETY: kill(2) with integers; the pid is the agent's child found above.
    unsafe { libc::kill(zygotes[0], libc::SIGKILL) };
    let until = Instant::now() + Duration::from_secs(10);
    while !children_named(b.agent.child.id(), "clearbox-helper").is_empty()
        || std::path::Path::new(&format!("/proc/{}", standbys[0])).exists()
    {
        assert!(
            Instant::now() < until,
            "pre-forked helper or its standby not gone"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Without it, the agent re-executes itself as the helper.
    let out = c.run(&b.id("after"), &sh("echo two")).expect("run");
    assert_eq!(out.stdout, b"two\n");
    assert!(out.status.success());
}
