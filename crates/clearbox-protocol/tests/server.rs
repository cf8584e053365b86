//! The agent's ttrpc server (`clearbox_protocol::server::Server`) against real sockets: peers
//! that hang up anywhere in a request leave no thread behind, blocking calls share a
//! connection with quick ones and end with it, and the limits hold (issue #10).
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clearbox_protocol::pb::agent as pb;
use clearbox_protocol::server::{create_agent, Agent, Code, Limits, Server, Stats, TtrpcContext};
use clearbox_protocol::AgentClient;

/// Check answers at once; WaitProcess blocks until its connection goes away (as the agent's
/// does for a process that keeps running), at most 60 s.
struct Fake;

impl Agent for Fake {
    fn check(&self, _ctx: &TtrpcContext, _req: pb::Empty) -> ttrpc::Result<pb::CheckResponse> {
        let mut r = pb::CheckResponse::new();
        r.serving = true;
        Ok(r)
    }

    fn wait_process(
        &self,
        ctx: &TtrpcContext,
        _req: pb::WaitProcessRequest,
    ) -> ttrpc::Result<pb::WaitProcessResponse> {
        let until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until {
            if let Err(e) = ctx.cancel_rx.try_recv() {
                if e.is_disconnected() {
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(pb::WaitProcessResponse::new())
    }
}

struct Served {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    stats: Arc<Stats>,
}

fn serve(limits: Limits) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let stats = Server::new(create_agent(Arc::new(Fake)))
        .limits(limits)
        .start(listener.into())
        .unwrap();
    Served {
        _dir: dir,
        socket,
        stats,
    }
}

/// The tests count this process's threads: one at a time.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

fn client(socket: &Path) -> AgentClient {
    AgentClient::from_unix_stream(UnixStream::connect(socket).unwrap())
        .unwrap()
        .with_timeout(Duration::from_secs(10))
}

/// A ttrpc request frame for `method` with an empty payload.
fn frame(method: &str, stream_id: u32) -> Vec<u8> {
    let field = |n: u8, b: &[u8]| {
        let mut v = vec![(n << 3) | 2, u8::try_from(b.len()).unwrap()];
        v.extend_from_slice(b);
        v
    };
    let mut body = field(1, b"clearbox.agent.v1.Agent");
    body.extend(field(2, method.as_bytes()));
    let mut f = u32::try_from(body.len()).unwrap().to_be_bytes().to_vec();
    f.extend_from_slice(&stream_id.to_be_bytes());
    f.extend_from_slice(&[1, 0]);
    f.extend(body);
    f
}

fn settle(s: &Served, base_threads: usize) {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let (c, f, t) = (s.stats.connections(), s.stats.in_flight(), threads());
        if c == 0 && f == 0 && t <= base_threads {
            return;
        }
        assert!(
            Instant::now() < until,
            "not released: {c} connections, {f} requests in flight, {t} threads (base {base_threads})"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What a peer does before it hangs up.
type HangUp<'a> = Box<dyn Fn(&mut UnixStream) + 'a>;

#[test]
fn peers_that_hang_up_anywhere_leave_no_thread_behind() {
    let _serial = serial();
    let s = serve(Limits::default());
    // The accept thread is up (a first connection went through).
    assert!(client(&s.socket).check().unwrap());
    settle(&s, usize::MAX);
    let base = threads();
    let check = frame("Check", 1);
    let wait = frame("WaitProcess", 3);
    let mut oversized = (u32::MAX - 1).to_be_bytes().to_vec();
    oversized.extend_from_slice(&[0, 0, 0, 5, 1, 0]);
    let hang_ups: Vec<(&str, HangUp)> = vec![
        ("nothing sent", Box::new(|_| {})),
        (
            "half a header",
            Box::new(|c| c.write_all(&[0, 0, 0]).unwrap()),
        ),
        (
            "half a body",
            Box::new(|c| c.write_all(&check[..check.len() - 4]).unwrap()),
        ),
        (
            "oversized header",
            Box::new(|c| c.write_all(&oversized).unwrap()),
        ),
        (
            "oversized header, half its body",
            Box::new(|c| {
                c.write_all(&oversized).unwrap();
                c.write_all(&[7u8; 100_000]).unwrap();
            }),
        ),
        (
            "a request, the answer unread",
            Box::new(|c| c.write_all(&check).unwrap()),
        ),
        (
            "a request, write side shut",
            Box::new(|c| {
                c.write_all(&check).unwrap();
                c.shutdown(std::net::Shutdown::Write).unwrap();
            }),
        ),
        (
            "a blocking request",
            Box::new(|c| c.write_all(&wait).unwrap()),
        ),
        (
            "blocking and quick requests",
            Box::new(|c| {
                for i in 0..8u32 {
                    c.write_all(&frame("WaitProcess", 2 * i + 1)).unwrap();
                    c.write_all(&frame("Check", 2 * i + 101)).unwrap();
                }
            }),
        ),
    ];
    for (what, hang_up) in &hang_ups {
        for _ in 0..40 {
            let mut c = UnixStream::connect(&s.socket).unwrap();
            hang_up(&mut c);
        }
        settle(&s, base);
        // Still serving.
        assert!(client(&s.socket).check().unwrap(), "after {what}");
        settle(&s, base);
    }
}

#[test]
fn an_oversized_request_is_refused_and_the_connection_goes_on() {
    let _serial = serial();
    let s = serve(Limits::default());
    let mut c = UnixStream::connect(&s.socket).unwrap();
    let len = 5 << 20;
    let mut head = u32::try_from(len).unwrap().to_be_bytes().to_vec();
    head.extend_from_slice(&[0, 0, 0, 9, 1, 0]);
    c.write_all(&head).unwrap();
    c.write_all(&vec![0u8; len]).unwrap();
    c.write_all(&frame("Check", 11)).unwrap();
    // Two answers: INVALID_ARGUMENT for stream 9, then Check's for stream 11.
    let mut ids = Vec::new();
    for _ in 0..2 {
        let mut h = [0u8; 10];
        c.read_exact(&mut h).unwrap();
        let n = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
        ids.push(u32::from_be_bytes([h[4], h[5], h[6], h[7]]));
        let mut body = vec![0u8; n];
        c.read_exact(&mut body).unwrap();
    }
    assert_eq!(ids, [9, 11]);
}

/// Reads one answer: its stream id and status code.
fn answer(c: &mut UnixStream) -> (u32, Code) {
    use ttrpc::proto::{Codec, Response};
    let mut h = [0u8; 10];
    c.read_exact(&mut h).unwrap();
    let n = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
    let id = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
    let mut body = vec![0u8; n];
    c.read_exact(&mut body).unwrap();
    let res = <Response as Codec>::decode(&body).unwrap();
    (id, res.status.code.enum_value_or_default())
}

fn wait_in_flight(s: &Served, n: usize) {
    let until = Instant::now() + Duration::from_secs(10);
    while s.stats.in_flight() < n {
        assert!(Instant::now() < until, "the requests never arrived");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn blocking_calls_share_a_connection_and_end_with_it() {
    let _serial = serial();
    let s = serve(Limits::default());
    let mut c = UnixStream::connect(&s.socket).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for i in 0..4u32 {
        c.write_all(&frame("WaitProcess", 2 * i + 1)).unwrap();
    }
    wait_in_flight(&s, 4);
    // Quick calls are answered while the blocking ones wait.
    for i in 0..20u32 {
        c.write_all(&frame("Check", 100 + 2 * i)).unwrap();
        assert_eq!(answer(&mut c), (100 + 2 * i, Code::OK));
    }
    // A quick call leaves the in-flight count just after its answer is written: let the
    // last one finish, then only the four blocking calls remain.
    let until = Instant::now() + Duration::from_secs(5);
    while s.stats.in_flight() != 4 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(s.stats.in_flight(), 4);
    // Another connection is served meanwhile, through the real client.
    assert!(client(&s.socket).check().unwrap());
    // The host goes away: the blocked calls are cancelled and everything is released.
    drop(c);
    settle(&s, usize::MAX);
}

#[test]
fn limits_hold() {
    let _serial = serial();
    let s = serve(Limits {
        max_connections: 2,
        max_in_flight: 2,
        write_timeout: Duration::from_secs(5),
    });
    let mut c = UnixStream::connect(&s.socket).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(&frame("WaitProcess", 1)).unwrap();
    c.write_all(&frame("WaitProcess", 3)).unwrap();
    wait_in_flight(&s, 2);
    // A third request on that connection is refused, not queued behind the blocked ones.
    c.write_all(&frame("Check", 5)).unwrap();
    assert_eq!(answer(&mut c), (5, Code::RESOURCE_EXHAUSTED));
    // A second connection is served; a third is closed at once.
    let second = client(&s.socket);
    assert!(second.check().unwrap());
    let mut third = UnixStream::connect(&s.socket).unwrap();
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = third.write_all(&frame("Check", 1));
    let mut buf = [0u8; 16];
    assert_eq!(
        third.read(&mut buf).unwrap_or(0),
        0,
        "a third connection was served"
    );
    assert!(s.stats.refused() >= 1);
    // Once the blocked calls' connection is gone, requests are served again.
    drop(c);
    drop(third);
    let until = Instant::now() + Duration::from_secs(10);
    while s.stats.connections() > 1 {
        assert!(Instant::now() < until, "connection not released");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(client(&s.socket).check().unwrap());
}

#[test]
fn the_accept_hook_closes_refused_connections_unread() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let stats = Server::new(create_agent(Arc::new(Fake)))
        .accept_hook(|_| Err("not the host".into()))
        .start(listener.into())
        .unwrap();
    let mut c = UnixStream::connect(&socket).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = c.write_all(&frame("Check", 1));
    let mut buf = [0u8; 16];
    assert_eq!(c.read(&mut buf).unwrap_or(0), 0);
    assert_eq!(stats.refused(), 1);
    assert_eq!(stats.connections(), 0);
}
