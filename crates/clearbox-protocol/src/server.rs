//! Server side, for the agent: implement [`Agent`], register it with [`create_agent`] and serve
//! it with [`Server`].
//!
//! [`Server`] is a small synchronous ttrpc server written here instead of `ttrpc::sync::Server`
//! (0.10, the newest release), because that one keeps threads it should release: its reader
//! thread does not stop at the end of the stream while it discards an oversized frame, so a
//! peer that sends an oversized header and hangs up keeps the connection's 3 + N threads busy
//! for a million empty reads; it starts a fixed pool of idle workers per connection; and a
//! connection's threads live until every worker has ended, with no bound on connections or on
//! requests in flight (found by the `agent_request` fuzz target, issue #10). The wire format,
//! the generated service code ([`MethodHandler`], [`TtrpcContext`]) and the client stay
//! ttrpc's.
//!
//! The model, bounded everywhere:
//! * one accept thread; at most [`Limits::max_connections`] connections (more are closed at
//!   once), each checked by the accept hook before a byte is read;
//! * per connection, one reader thread, and one thread per request in flight, started when
//!   the request arrives and ended when its answer is written: at most
//!   [`Limits::max_in_flight`] (a request beyond that is answered `RESOURCE_EXHAUSTED`). An
//!   idle connection holds one thread;
//! * end of stream (a hang-up, also mid-frame or mid-discard), a read error or a failed write
//!   ends the connection: its blocking calls are cancelled (`TtrpcContext::cancel_rx`
//!   disconnects), and its descriptor is closed when the last of them has answered;
//! * a peer that stops reading cannot hold a request thread: writes time out after
//!   [`Limits::write_timeout`] and end the connection.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::Duration;

use ttrpc::proto::{
    Codec, MessageHeader, Request, Response, ResponseInit, MESSAGE_HEADER_LENGTH,
    MESSAGE_LENGTH_MAX, MESSAGE_TYPE_REQUEST,
};
use ttrpc::sync::MethodHandler;
use ttrpc::ConnectionContext;

pub use crate::pb::agent_ttrpc::{create_agent, Agent};
pub use ttrpc::{get_status, Code, Error, Result, TtrpcContext};

/// The generated registration of a service (`create_agent`'s result).
pub type Methods = HashMap<String, Box<dyn MethodHandler + Send + Sync>>;

/// Decides on an accepted connection before anything is read from it (the agent's peer
/// check). An error closes it; the hook reports why itself.
pub type AcceptHook = dyn Fn(BorrowedFd<'_>) -> std::result::Result<(), String> + Send + Sync;

/// The server's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Open connections; one more is closed as soon as it is accepted.
    pub max_connections: usize,
    /// Requests of one connection being served at once (each holds a thread). The host's
    /// busiest connection (a shim relaying a process) has five: stdout, stderr, wait, stdin,
    /// and a signal or resize.
    pub max_in_flight: usize,
    /// How long writing one answer may block on a peer that does not read.
    pub write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            max_in_flight: 32,
            write_timeout: Duration::from_secs(30),
        }
    }
}

/// Live counts, for tests and diagnostics.
#[derive(Debug, Default)]
pub struct Stats {
    connections: AtomicUsize,
    in_flight: AtomicUsize,
    refused: AtomicUsize,
}

impl Stats {
    /// Connections not yet closed (a closed connection whose requests are still answering
    /// counts until the last answer).
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Requests being served, over all connections.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Connections closed at accept: by the hook or the connection limit.
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }
}

/// A ttrpc server for generated sync services.
pub struct Server {
    methods: Arc<Methods>,
    hook: Option<Arc<AcceptHook>>,
    limits: Limits,
}

impl Server {
    pub fn new(methods: Methods) -> Self {
        Self {
            methods: Arc::new(methods),
            hook: None,
            limits: Limits::default(),
        }
    }

    pub fn accept_hook(
        mut self,
        hook: impl Fn(BorrowedFd<'_>) -> std::result::Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        self.hook = Some(Arc::new(hook));
        self
    }

    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Serves a listening stream socket (Unix or vsock) from a thread of its own, for the
    /// life of the process.
    pub fn start(self, listener: OwnedFd) -> io::Result<Arc<Stats>> {
        let stats = Arc::new(Stats::default());
        let s = Arc::clone(&stats);
        std::thread::Builder::new()
            .name("ttrpc-accept".into())
            .spawn(move || self.accept_loop(&listener, &s))?;
        Ok(stats)
    }

    fn accept_loop(self, listener: &OwnedFd, stats: &Arc<Stats>) {
        use nix::errno::Errno;
        use nix::sys::socket::{accept4, SockFlag};
        loop {
            let fd = match accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
                // SAFETY: accept4 just returned this descriptor; nothing else owns it.
                Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd) },
                Err(Errno::EINTR | Errno::ECONNABORTED | Errno::EAGAIN) => continue,
                Err(_) => {
                    // Out of descriptors or memory (or a broken listener): the condition
                    // stays until something is released, so do not spin on it.
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            if let Some(hook) = &self.hook {
                if hook(fd.as_fd()).is_err() {
                    stats.refused.fetch_add(1, Ordering::SeqCst);
                    continue;
                }
            }
            if stats.connections.fetch_add(1, Ordering::SeqCst) >= self.limits.max_connections {
                stats.connections.fetch_sub(1, Ordering::SeqCst);
                stats.refused.fetch_add(1, Ordering::SeqCst);
                continue;
            }
            let conn = Arc::new(Conn {
                fd,
                write: Mutex::new(()),
                in_flight: AtomicUsize::new(0),
                stats: Arc::clone(stats),
            });
            let _ = nix::sys::socket::setsockopt(
                &conn.fd,
                nix::sys::socket::sockopt::SendTimeout,
                &nix::sys::time::TimeVal::new(
                    i64::try_from(self.limits.write_timeout.as_secs()).unwrap_or(i64::MAX),
                    i64::from(self.limits.write_timeout.subsec_micros()),
                ),
            );
            let methods = Arc::clone(&self.methods);
            let limits = self.limits;
            // A failed spawn drops the closure, hence the connection: it is closed.
            let _ = std::thread::Builder::new()
                .name("ttrpc-conn".into())
                .stack_size(256 * 1024)
                .spawn(move || serve(conn, &methods, limits));
        }
    }
}

/// One accepted connection, shared by its reader and its requests; closed (and uncounted)
/// when the last of them lets go.
struct Conn {
    fd: OwnedFd,
    /// Answers are written whole, one at a time.
    write: Mutex<()>,
    in_flight: AtomicUsize,
    stats: Arc<Stats>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.stats.connections.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Conn {
    /// Writes one frame; on failure the connection is shut down (its reader then ends it).
    fn write_frame(&self, mut mh: MessageHeader, payload: &[u8]) {
        use nix::sys::socket::{send, MsgFlags};
        mh.length = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        let mut buf = Vec::with_capacity(MESSAGE_HEADER_LENGTH + payload.len());
        buf.extend_from_slice(&mh.length.to_be_bytes());
        buf.extend_from_slice(&mh.stream_id.to_be_bytes());
        buf.push(mh.type_);
        buf.push(mh.flags);
        buf.extend_from_slice(payload);
        let _guard = self.write.lock().unwrap_or_else(PoisonError::into_inner);
        let mut rest = &buf[..];
        while !rest.is_empty() {
            match send(self.fd.as_raw_fd(), rest, MsgFlags::MSG_NOSIGNAL) {
                Ok(0) => break,
                Ok(n) => rest = &rest[n..],
                Err(nix::errno::Errno::EINTR) => {}
                // EAGAIN here is the send timeout: the peer does not read.
                Err(_) => break,
            }
        }
        if !rest.is_empty() {
            let _ =
                nix::sys::socket::shutdown(self.fd.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        }
    }

    /// Answers `stream_id` with an error status.
    fn answer_status(&self, stream_id: u32, code: Code, msg: String) {
        let res = Response::init_status(get_status(code, msg));
        self.answer(stream_id, res);
    }

    fn answer(&self, stream_id: u32, res: Response) {
        let (tx, rx) = mpsc::channel();
        if ttrpc::sync::send_response(stream_id, res, tx, &ConnectionContext::default()).is_ok() {
            for (mh, payload) in rx.try_iter() {
                self.write_frame(mh, &payload);
            }
        }
    }
}

/// What the reader got.
enum Frame {
    Message(MessageHeader, Vec<u8>),
    /// Longer than ttrpc allows; its body was skipped.
    Oversized(MessageHeader),
    /// End of stream or a read error, possibly mid-frame.
    End,
}

/// Reads until `buf` is full; false at end of stream or on an error.
fn read_full(fd: BorrowedFd<'_>, buf: &mut [u8]) -> bool {
    let mut got = 0;
    while got < buf.len() {
        match nix::unistd::read(fd.as_raw_fd(), &mut buf[got..]) {
            Ok(0) => return false,
            Ok(n) => got += n,
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return false,
        }
    }
    true
}

fn read_frame(fd: BorrowedFd<'_>) -> Frame {
    let mut head = [0u8; MESSAGE_HEADER_LENGTH];
    if !read_full(fd, &mut head) {
        return Frame::End;
    }
    let mh = MessageHeader::from(head);
    let len = mh.length as usize;
    if len > MESSAGE_LENGTH_MAX {
        // Skip the body (ttrpc answers such a request with an error), stopping at the end of
        // the stream.
        let mut left = len;
        let mut sink = vec![0u8; 64 * 1024];
        while left > 0 {
            let n = left.min(sink.len());
            if !read_full(fd, &mut sink[..n]) {
                return Frame::End;
            }
            left -= n;
        }
        return Frame::Oversized(mh);
    }
    let mut body = vec![0u8; len];
    if !read_full(fd, &mut body) {
        return Frame::End;
    }
    Frame::Message(mh, body)
}

/// The connection's reader: runs until the stream ends, dispatching each request to a thread
/// of its own.
fn serve(conn: Arc<Conn>, methods: &Arc<Methods>, limits: Limits) {
    // Dropped when the stream ends: every blocking call of this connection sees it.
    let (cancel_tx, cancel_rx) = crossbeam_channel::bounded::<()>(0);
    loop {
        let (mh, body) = match read_frame(conn.fd.as_fd()) {
            Frame::End => break,
            Frame::Oversized(mh) => {
                conn.answer_status(
                    mh.stream_id,
                    Code::INVALID_ARGUMENT,
                    format!(
                        "message length {} exceeds the maximum of {MESSAGE_LENGTH_MAX}",
                        mh.length
                    ),
                );
                continue;
            }
            Frame::Message(mh, body) => (mh, body),
        };
        // Only requests are served (ttrpc's streams are not part of this API).
        if mh.type_ != MESSAGE_TYPE_REQUEST {
            continue;
        }
        if conn.in_flight.fetch_add(1, Ordering::SeqCst) >= limits.max_in_flight {
            conn.in_flight.fetch_sub(1, Ordering::SeqCst);
            conn.answer_status(
                mh.stream_id,
                Code::RESOURCE_EXHAUSTED,
                format!(
                    "more than {} requests in flight on one connection",
                    limits.max_in_flight
                ),
            );
            continue;
        }
        conn.stats.in_flight.fetch_add(1, Ordering::SeqCst);
        let job = Job {
            conn: Arc::clone(&conn),
            methods: Arc::clone(methods),
            cancel_rx: cancel_rx.clone(),
            mh,
        };
        let spawned = std::thread::Builder::new()
            .name("ttrpc-req".into())
            .spawn(move || job.run(&body));
        if spawned.is_err() {
            // The job (dropped with the closure) uncounted itself.
            conn.answer_status(
                mh.stream_id,
                Code::RESOURCE_EXHAUSTED,
                "cannot start a thread for the request".into(),
            );
        }
    }
    drop(cancel_tx);
}

/// One request being served; uncounts itself when done.
struct Job {
    conn: Arc<Conn>,
    methods: Arc<Methods>,
    cancel_rx: crossbeam_channel::Receiver<()>,
    mh: MessageHeader,
}

impl Drop for Job {
    fn drop(&mut self) {
        self.conn.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.conn.stats.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Job {
    fn run(&self, body: &[u8]) {
        let stream_id = self.mh.stream_id;
        let req = match <Request as Codec>::decode(body) {
            Ok(r) => r,
            Err(e) => {
                self.conn
                    .answer_status(stream_id, Code::INVALID_ARGUMENT, e.to_string());
                return;
            }
        };
        let path = format!("/{}/{}", req.service, req.method);
        let Some(method) = self.methods.get(&path) else {
            self.conn.answer_status(
                stream_id,
                Code::INVALID_ARGUMENT,
                format!("{path} does not exist"),
            );
            return;
        };
        let (res_tx, res_rx) = mpsc::channel();
        let ctx = TtrpcContext {
            fd: self.conn.fd.as_raw_fd(),
            cancel_rx: self.cancel_rx.clone(),
            mh: self.mh,
            res_tx,
            metadata: ttrpc::context::from_pb(&req.metadata),
            timeout_nano: req.timeout_nano,
            conn_ctx: Arc::new(ConnectionContext::default()),
        };
        // The generated handler answers through `res_tx` before it returns; it fails only when
        // it could not (the request's payload did not decode, say): then answer that.
        let outcome = method.handler(ctx, req);
        let mut answered = false;
        for (mh, payload) in res_rx.try_iter() {
            self.conn.write_frame(mh, &payload);
            answered = true;
        }
        if let (false, Err(e)) = (answered, outcome) {
            self.conn.answer(stream_id, e.into());
        }
    }
}
