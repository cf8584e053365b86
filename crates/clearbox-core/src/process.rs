//! Host process liveness, robust against pid reuse.

/// Start time of `pid` in clock ticks since boot (field 22 of `/proc/<pid>/stat`), or `None` if
/// the process is gone or a zombie (a zombie has exited; only its parent's wait is missing).
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may itself contain spaces or parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    // `rest` starts at field 3 (state); start time is field 22.
    fields.nth(18)?.parse().ok()
}

/// True when `pid` runs and, if `expected_start` is known, is the same process that was recorded.
pub fn is_alive(pid: i32, expected_start: Option<u64>) -> bool {
    match (start_time(pid), expected_start) {
        (Some(now), Some(then)) => now == then,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// Ignores SIGPIPE while it lives, then restores the previous disposition.
///
/// The CLI keeps SIGPIPE's default (a closed stdout ends it quietly) but must not die of it
/// while it writes the state to a hook that did not read it, or to a pipe of a process that went
/// away: runc, a Go program, only gets EPIPE there. The container's processes get the default
/// back before they exec (std's `Command` resets it, the container library does so itself).
pub struct SigpipeIgnored {
    old: libc::sighandler_t,
}

impl SigpipeIgnored {
    pub fn new() -> Self {
        // SAFETY: SIG_IGN is a valid disposition; signal() touches no memory of ours.
        let old = unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
        Self { old }
    }
}

impl Default for SigpipeIgnored {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for SigpipeIgnored {
    fn drop(&mut self) {
        if self.old != libc::SIG_ERR {
            // SAFETY: restores the disposition signal() returned earlier.
            unsafe {
                libc::signal(libc::SIGPIPE, self.old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_is_alive_and_reuse_is_detected() {
        let me = std::process::id() as i32;
        let st = start_time(me).expect("own stat");
        assert!(is_alive(me, Some(st)));
        assert!(!is_alive(me, Some(st + 1)));
        assert!(!is_alive(i32::MAX, None));
    }
}
