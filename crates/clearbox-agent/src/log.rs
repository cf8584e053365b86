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
