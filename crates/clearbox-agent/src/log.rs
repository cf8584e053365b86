//! Minimal console logging: the agent writes to stderr, which is /dev/console (the serial
//! port) when it runs as PID 1. Quiet by default: only errors; `clearbox.debug=1` on the
//! kernel cmdline (or `--debug`) enables debug lines. A full tracing subscriber would add
//! size to the static binary for no gain here.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static DEBUG: AtomicBool = AtomicBool::new(false);

pub fn set_debug(on: bool) {
    DEBUG.store(on, Ordering::Relaxed);
}

pub fn debug_enabled() -> bool {
    DEBUG.load(Ordering::Relaxed)
}

pub fn write_line(level: &str, args: std::fmt::Arguments<'_>) {
    let ms = crate::milestones::boottime_ns() / 1_000_000;
    let line = format!("[{:>6}ms clearbox-agent {level}] {args}\n", ms);
    // Logging must never take the agent down: ignore console write errors.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Always printed.
#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => { $crate::log::write_line("error", format_args!($($arg)*)) };
}

/// Printed only in debug mode.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => {
        if $crate::log::debug_enabled() {
            $crate::log::write_line("debug", format_args!($($arg)*))
        }
    };
}

/// Timing of the steps of one request, printed as debug lines (`what: step +N.Nms (total
/// M.Mms)`): where the time of a create goes, measured in the guest.
pub struct Span {
    what: String,
    start: std::time::Instant,
    last: std::time::Instant,
}

impl Span {
    pub fn new(what: impl Into<String>) -> Self {
        let now = std::time::Instant::now();
        Self {
            what: what.into(),
            start: now,
            last: now,
        }
    }

    /// Logs the time since the previous step (debug mode only).
    pub fn step(&mut self, step: &str) {
        let now = std::time::Instant::now();
        if debug_enabled() {
            let d = now.duration_since(self.last).as_secs_f64() * 1e3;
            let t = now.duration_since(self.start).as_secs_f64() * 1e3;
            write_line(
                "debug",
                format_args!("{}: {step} +{d:.1}ms (total {t:.1}ms)", self.what),
            );
        }
        self.last = now;
    }
}

/// Prints the container library's `tracing` events (libcontainer's steps) as debug lines, so
/// the phases of a create show on the console with their times. Installed in the helper in
/// debug mode only; a full `tracing-subscriber` would add size to the static binary.
pub fn trace_library_events() {
    // Onto a copy of stderr: the container's init replaces its descriptors 0..2 with the
    // container's stdio, which must not receive these lines; the copy is close-on-exec.
    // SAFETY: fcntl on an integer descriptor.
    let fd = unsafe { libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 100) };
    if fd >= 0 {
        let _ = tracing::subscriber::set_global_default(ConsoleSubscriber(fd));
    }
}

struct ConsoleSubscriber(i32);

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write as _;
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?} ");
        } else {
            let _ = write!(self.0, "{}={value:?} ", field.name());
        }
    }
}

impl tracing::Subscriber for ConsoleSubscriber {
    fn enabled(&self, m: &tracing::Metadata<'_>) -> bool {
        *m.level() <= tracing::Level::DEBUG
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, e: &tracing::Event<'_>) {
        let mut f = Fields(String::new());
        e.record(&mut f);
        let ms = crate::milestones::boottime_ns() / 1_000_000;
        let line = format!(
            "[{ms:>6}ms clearbox-agent trace] [pid {}] {}: {}\n",
            std::process::id(),
            e.metadata().target(),
            f.0
        );
        // SAFETY: write(2) of a live buffer to the descriptor this subscriber owns.
        let _ = unsafe { libc::write(self.0, line.as_ptr().cast(), line.len()) };
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}
