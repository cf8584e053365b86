//! A tracked process: its exit status (dispatched by the reaper) and its output streams,
//! read to EOF by one thread per stream into bounded buffers (see the output contract in
//! `proto/agent.proto`).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Per-stream buffer limit; a reader thread stops reading (back-pressure) when it is full.
pub const STREAM_BUFFER_CAP: usize = 1024 * 1024;
/// How often blocked wait/read calls check whether their connection is gone, to free the
/// worker thread of an abandoned call. Rare on purpose: every timed wake-up of an idle
/// container costs the host CPU (an emulated timer interrupt under TCG), and an idle
/// container has three such calls (wait, stdout, stderr). An abandoned call never consumes
/// output meant for a later connection however long it sleeps: it checks for cancellation
/// on every wake-up before it takes anything (see `block`).
const CANCEL_POLL: Duration = Duration::from_secs(5);

/// Locks a mutex; poisoning cannot happen (panic = abort), so a poisoned guard is still
/// the consistent state.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub code: i32,
    pub signal: i32,
    pub core_dumped: bool,
}

impl Exit {
    pub fn exited(code: i32) -> Self {
        Self {
            code,
            signal: 0,
            core_dumped: false,
        }
    }

    pub fn signaled(signal: i32, core_dumped: bool) -> Self {
        Self {
            code: 128 + signal,
            signal,
            core_dumped,
        }
    }
}

#[derive(Debug, Default)]
struct StreamBuf {
    data: VecDeque<u8>,
    /// The producer saw EOF.
    eof: bool,
    /// A reader was told "eof" (all data delivered).
    eof_delivered: bool,
}

#[derive(Debug, Default)]
struct State {
    exit: Option<Exit>,
    streams: [StreamBuf; 2],
    wait_delivered: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Stdout = 0,
    Stderr = 1,
}

/// Result of a read on an output stream.
#[derive(Debug, PartialEq, Eq)]
pub struct Chunk {
    pub data: Vec<u8>,
    pub eof: bool,
}

/// Outcome of waiting.
#[derive(Debug, PartialEq, Eq)]
pub enum WaitResult {
    Done(Exit),
    TimedOut,
}

#[derive(Debug)]
pub struct Process {
    pub pid: i32,
    pub terminal: bool,
    state: Mutex<State>,
    cond: Condvar,
    stdin: Mutex<Option<File>>,
    /// pty master, kept for window resizing.
    pub pty_master: Option<OwnedFd>,
}

fn deadline(timeout_ms: u64) -> Option<Instant> {
    (timeout_ms > 0).then(|| Instant::now() + Duration::from_millis(timeout_ms))
}

impl Process {
    /// `stdin`: writer end (pipe or pty master dup) or None.
    pub fn new(
        pid: i32,
        terminal: bool,
        stdin: Option<File>,
        pty_master: Option<OwnedFd>,
    ) -> Arc<Self> {
        Arc::new(Self {
            pid,
            terminal,
            state: Mutex::new(State::default()),
            cond: Condvar::new(),
            stdin: Mutex::new(stdin),
            pty_master,
        })
    }

    /// Starts a thread reading `source` to EOF into the `which` buffer. `None` marks the
    /// stream as ended at once (e.g. stderr of a terminal process).
    pub fn attach_output(self: &Arc<Self>, which: Which, source: Option<File>) {
        let Some(mut file) = source else {
            self.push_eof(which);
            return;
        };
        let me = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name(format!("out-{}-{:?}", self.pid, which))
            .spawn(move || me.pump(which, &mut file));
        if let Err(e) = spawned {
            crate::error!("cannot start output reader for pid {}: {e}", self.pid);
            self.push_eof(which);
        }
    }

    fn pump(&self, which: Which, file: &mut File) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            {
                let mut st = lock(&self.state);
                while st.streams[which as usize].data.len() >= STREAM_BUFFER_CAP {
                    st = self.cond.wait(st).unwrap_or_else(PoisonError::into_inner);
                }
            }
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let mut st = lock(&self.state);
                    st.streams[which as usize].data.extend(&buf[..n]);
                    self.cond.notify_all();
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // EIO: a pty master after the last slave fd closed = end of output.
                Err(e) => {
                    if e.raw_os_error() != Some(libc::EIO) {
                        crate::debug!("pid {} {:?} read error: {e}", self.pid, which);
                    }
                    break;
                }
            }
        }
        self.push_eof(which);
    }

    fn push_eof(&self, which: Which) {
        let mut st = lock(&self.state);
        st.streams[which as usize].eof = true;
        self.cond.notify_all();
    }

    /// Called by the reaper.
    pub fn set_exit(&self, exit: Exit) {
        let mut st = lock(&self.state);
        if st.exit.is_none() {
            st.exit = Some(exit);
        }
        self.cond.notify_all();
    }

    pub fn exit_status(&self) -> Option<Exit> {
        lock(&self.state).exit
    }

    pub fn has_exited(&self) -> bool {
        self.exit_status().is_some()
    }

    /// Blocks until the process exited and both streams reached EOF, or the timeout.
    /// `cancelled` is polled while blocking (the caller's connection went away).
    pub fn wait(&self, timeout_ms: u64, cancelled: &dyn Fn() -> bool) -> WaitResult {
        let until = deadline(timeout_ms);
        let mut st = lock(&self.state);
        loop {
            if let (Some(exit), true) = (st.exit, st.streams.iter().all(|s| s.eof)) {
                st.wait_delivered = true;
                return WaitResult::Done(exit);
            }
            st = match self.block(st, until, cancelled) {
                Some(st) => st,
                None => return WaitResult::TimedOut,
            };
        }
    }

    /// One bounded sleep on the condition variable; None when the deadline passed or the
    /// caller was cancelled.
    fn block<'a>(
        &self,
        st: MutexGuard<'a, State>,
        until: Option<Instant>,
        cancelled: &dyn Fn() -> bool,
    ) -> Option<MutexGuard<'a, State>> {
        if cancelled() {
            return None;
        }
        let now = Instant::now();
        let slice = match until {
            Some(t) if now >= t => return None,
            Some(t) => (t - now).min(CANCEL_POLL),
            None => CANCEL_POLL,
        };
        let st = self
            .cond
            .wait_timeout(st, slice)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
        // Woken by new output or an exit: a call whose connection is gone must not take it.
        (!cancelled()).then_some(st)
    }

    /// Takes up to `max` bytes; blocks until data, EOF or the timeout (then empty, !eof).
    pub fn read(
        &self,
        which: Which,
        max: usize,
        timeout_ms: u64,
        cancelled: &dyn Fn() -> bool,
    ) -> Chunk {
        let until = deadline(timeout_ms);
        let mut st = lock(&self.state);
        loop {
            let s = &mut st.streams[which as usize];
            if !s.data.is_empty() || s.eof {
                let n = s.data.len().min(max.max(1));
                let data: Vec<u8> = s.data.drain(..n).collect();
                // EOF is reported by a separate, empty answer: then the host has certainly
                // received every data chunk before the agent releases the process.
                let eof = data.is_empty();
                if eof {
                    s.eof_delivered = true;
                }
                // Room was freed: wake the producer.
                self.cond.notify_all();
                return Chunk { data, eof };
            }
            st = match self.block(st, until, cancelled) {
                Some(st) => st,
                None => {
                    return Chunk {
                        data: Vec::new(),
                        eof: false,
                    }
                }
            };
        }
    }

    /// Everything was handed to the host: status and both streams' EOF.
    pub fn fully_delivered(&self) -> bool {
        let st = lock(&self.state);
        st.wait_delivered && st.streams.iter().all(|s| s.eof_delivered)
    }

    /// Writes all of `data` to stdin; returns the bytes written before the process closed
    /// its end.
    pub fn write_stdin(&self, data: &[u8]) -> std::io::Result<usize> {
        let mut guard = lock(&self.stdin);
        let Some(file) = guard.as_mut() else {
            return Err(std::io::Error::new(
                ErrorKind::BrokenPipe,
                "stdin is not open",
            ));
        };
        let mut written = 0;
        while written < data.len() {
            match file.write(&data[written..]) {
                Ok(0) => break,
                Ok(n) => written += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::BrokenPipe && written > 0 => break,
                Err(e) => return Err(e),
            }
        }
        Ok(written)
    }

    /// Closes stdin (pipes) or sends `^D` (terminal, where closing would hang up the pty).
    pub fn close_stdin(&self) -> std::io::Result<()> {
        let mut guard = lock(&self.stdin);
        if self.terminal {
            if let Some(f) = guard.as_mut() {
                f.write_all(&[0x04])?;
            }
        }
        *guard = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::OwnedFd;

    fn never() -> bool {
        false
    }

    fn pipe() -> (File, File) {
        let (r, w): (OwnedFd, OwnedFd) = nix::unistd::pipe().expect("pipe");
        (File::from(r), File::from(w))
    }

    #[test]
    fn wait_needs_exit_and_both_eofs() {
        let p = Process::new(1, false, None, None);
        let (r, mut w) = pipe();
        p.attach_output(Which::Stdout, Some(r));
        p.attach_output(Which::Stderr, None);
        p.set_exit(Exit::exited(3));
        assert_eq!(
            p.wait(50, &never),
            WaitResult::TimedOut,
            "stdout still open"
        );
        w.write_all(b"last words").expect("write");
        drop(w);
        assert_eq!(p.wait(0, &never), WaitResult::Done(Exit::exited(3)));
        assert_eq!(
            p.read(Which::Stdout, 4, 0, &never),
            Chunk {
                data: b"last".to_vec(),
                eof: false
            }
        );
        assert_eq!(
            p.read(Which::Stdout, 100, 0, &never),
            Chunk {
                data: b" words".to_vec(),
                eof: false
            }
        );
        assert_eq!(
            p.read(Which::Stdout, 100, 0, &never),
            Chunk {
                data: vec![],
                eof: true
            }
        );
        assert!(!p.fully_delivered(), "stderr eof not delivered yet");
        assert!(p.read(Which::Stderr, 100, 0, &never).eof);
        assert!(p.fully_delivered());
    }

    #[test]
    fn read_times_out_without_losing_data() {
        let p = Process::new(1, false, None, None);
        let (r, mut w) = pipe();
        p.attach_output(Which::Stdout, Some(r));
        let c = p.read(Which::Stdout, 10, 20, &never);
        assert_eq!(
            c,
            Chunk {
                data: vec![],
                eof: false
            }
        );
        w.write_all(b"x").expect("write");
        assert_eq!(p.read(Which::Stdout, 10, 0, &never).data, b"x".to_vec());
    }

    #[test]
    fn back_pressure_keeps_every_byte() {
        let p = Process::new(1, false, None, None);
        let (r, mut w) = pipe();
        p.attach_output(Which::Stdout, Some(r));
        let total = STREAM_BUFFER_CAP * 3 + 17;
        let writer = std::thread::spawn(move || {
            let data: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
            w.write_all(&data).expect("write");
        });
        let mut got = Vec::new();
        loop {
            let c = p.read(Which::Stdout, 100_000, 0, &never);
            got.extend_from_slice(&c.data);
            if c.eof {
                break;
            }
        }
        writer.join().expect("writer");
        assert_eq!(got.len(), total);
        assert!(got.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
    }

    #[test]
    fn cancelled_read_takes_nothing() {
        let p = Process::new(1, false, None, None);
        let (r, mut w) = pipe();
        p.attach_output(Which::Stdout, Some(r));
        let c = p.read(Which::Stdout, 10, 0, &|| true);
        assert_eq!(c.data.len(), 0);
        assert!(!c.eof);
        w.write_all(b"y").expect("write");
        drop(w);
        assert_eq!(p.read(Which::Stdout, 10, 0, &never).data, b"y".to_vec());
        assert_eq!(p.wait(0, &|| true), WaitResult::TimedOut);
    }

    #[test]
    fn signaled_exit_code_follows_shell_convention() {
        assert_eq!(Exit::signaled(9, false).code, 137);
    }
}
