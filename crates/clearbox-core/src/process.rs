//! Host process liveness, robust against pid reuse.

/// Start time and liveness of a host process, robust against pid reuse (the shared
/// implementation, re-exported for the core's users).
pub use clearbox_util::proc::{is_alive, start_time};

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
