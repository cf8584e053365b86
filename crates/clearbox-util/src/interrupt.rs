//! Termination signals caught while a step that leaves things behind is under way (a `create`
//! booting its VM), so that the step is undone before the process ends instead of the signal's
//! default action ending it half-way (a VM, its helpers, mounts and a "creating" state left).
//!
//! [`Armed::arm`] installs a handler for SIGHUP, SIGINT and SIGTERM (those not ignored: a
//! background job keeps ignoring SIGINT) that records the signal and wakes a pipe that a waiting
//! loop polls beside what it waits for. Dropping the guard restores the earlier handlers; the
//! caller undoes its work and then ends the process with the signal ([`reraise`]), so that its
//! parent sees what it sent.
//!
//! Children forked while armed inherit the handler until they exec. In a process other than the
//! one that armed it, the handler restores the default action and sends the signal again, so a
//! forked child still dies of it as it would have. That cannot work for the init of a new PID
//! namespace (the kernel drops the default-action signals it sends itself, and a signal it has
//! a handler for reaches it where one without would not): do not arm where a forked child that
//! has not exec'd outlives the guard (a container init waiting for `start`).
//!
//! Written here rather than with a signal crate: it is one handler with three async-signal-safe
//! calls, and it must be restored exactly on drop (no handler left registered behind a library).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::OnceLock;

/// The signals a create is undone for.
pub const SIGNALS: [libc::c_int; 3] = [libc::SIGHUP, libc::SIGINT, libc::SIGTERM];

/// The first signal caught while armed (0: none). Kept after disarming: the caller asks once
/// it has undone its work.
static CAUGHT: AtomicI32 = AtomicI32::new(0);
/// The write end of the wake pipe while armed (-1 otherwise).
static WAKE: AtomicI32 = AtomicI32::new(-1);
/// The process that armed the handler.
static OWNER: AtomicI32 = AtomicI32::new(0);
/// A guard exists.
static ARMED: AtomicBool = AtomicBool::new(false);
/// The wake pipe (read end, write end), made on the first `arm` and never closed, so that a
/// handler running on any thread never writes to a descriptor closed (and perhaps reused)
/// meanwhile. Close-on-exec: exec'd children do not get it.
static PIPE: OnceLock<(OwnedFd, OwnedFd)> = OnceLock::new();

extern "C" fn on_signal(sig: libc::c_int) {
    // SAFETY: __errno_location returns this thread's errno slot, valid for the thread's life;
    // it is restored before returning so the interrupted code sees its own errno.
    let errno = unsafe { *libc::__errno_location() };
    // SAFETY: getpid(2) is async-signal-safe and has no preconditions.
    let me = unsafe { libc::getpid() };
    if me != OWNER.load(Ordering::SeqCst) {
        // A forked child that has not exec'd yet: act as if the handler were not there.
        // SAFETY: signal(2) and raise(3) are async-signal-safe; SIG_DFL is a valid disposition.
        // The signal is blocked while this handler runs, so it is delivered (with the default
        // action) when the handler returns.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
    } else {
        let _ = CAUGHT.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
        let fd = WAKE.load(Ordering::SeqCst);
        if fd >= 0 {
            let byte = 1u8;
            // SAFETY: write(2) is async-signal-safe; `byte` lives across the call, the length
            // is 1. The descriptor is the wake pipe's non-blocking write end, which is never
            // closed (`PIPE`); a full pipe is fine (already woken).
            unsafe { libc::write(fd, std::ptr::addr_of!(byte).cast(), 1) };
        }
    }
    // SAFETY: as above, this thread's errno slot.
    unsafe { *libc::__errno_location() = errno };
}

fn pipe() -> io::Result<&'static (OwnedFd, OwnedFd)> {
    if let Some(p) = PIPE.get() {
        return Ok(p);
    }
    let mut fds = [0; 2];
    // SAFETY: pipe2(2) writes two descriptors into `fds`, which has room for them.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded: both descriptors are open and owned by nothing else.
    let made = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // Only the one guard's thread gets here (ARMED), so no other pipe was set meanwhile.
    Ok(PIPE.get_or_init(|| made))
}

/// The handler is installed while this lives.
pub struct Armed {
    read: BorrowedFd<'static>,
    /// The earlier action of each signal that was given our handler.
    old: Vec<(libc::c_int, libc::sigaction)>,
}

impl Armed {
    /// Installs the handler and clears an earlier catch. One guard at a time per process: a
    /// second is refused (`WouldBlock`).
    pub fn arm() -> io::Result<Self> {
        if ARMED.swap(true, Ordering::SeqCst) {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "termination signals are already caught",
            ));
        }
        let mut armed = Self {
            read: match pipe() {
                Ok((r, _)) => std::os::fd::AsFd::as_fd(r),
                Err(e) => {
                    ARMED.store(false, Ordering::SeqCst);
                    return Err(e);
                }
            },
            old: Vec::new(),
        };
        // Left from an earlier guard: the pipe starts empty.
        let mut sink = [0u8; 64];
        // SAFETY: read(2) into `sink` (64 bytes) from the non-blocking read end; stops at EAGAIN.
        while unsafe { libc::read(armed.read.as_raw_fd(), sink.as_mut_ptr().cast(), sink.len()) }
            > 0
        {}
        CAUGHT.store(0, Ordering::SeqCst);
        // SAFETY: getpid(2) has no preconditions.
        OWNER.store(unsafe { libc::getpid() }, Ordering::SeqCst);
        if let Some((_, w)) = PIPE.get() {
            WAKE.store(w.as_raw_fd(), Ordering::SeqCst);
        }
        for sig in SIGNALS {
            // SAFETY: a zeroed sigaction is a valid value to read the current action into.
            let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
            // SAFETY: sigaction(2) with a null new action only reads the current one into `old`.
            if unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) } < 0 {
                return Err(io::Error::last_os_error());
            }
            if old.sa_sigaction == libc::SIG_IGN {
                continue;
            }
            // SAFETY: a zeroed sigaction (empty mask, no flags) is valid; the fields are set below.
            let mut new: libc::sigaction = unsafe { std::mem::zeroed() };
            new.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            // Blocking system calls elsewhere resume; waiting loops poll the wake pipe.
            new.sa_flags = libc::SA_RESTART;
            // SAFETY: `new` is a valid action whose handler only makes async-signal-safe calls
            // on atomics, errno and a descriptor that is never closed.
            if unsafe { libc::sigaction(sig, &new, std::ptr::null_mut()) } < 0 {
                return Err(io::Error::last_os_error());
            }
            armed.old.push((sig, old));
        }
        Ok(armed)
    }

    /// Readable once a signal was caught: poll it beside what a loop waits for.
    pub fn wake_fd(&self) -> BorrowedFd<'_> {
        self.read
    }

    /// The signal caught since [`Armed::arm`], if any.
    pub fn caught(&self) -> Option<libc::c_int> {
        caught()
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        for (sig, old) in &self.old {
            // SAFETY: `old` is the action sigaction(2) returned for `sig`, restored as it was.
            unsafe { libc::sigaction(*sig, old, std::ptr::null_mut()) };
        }
        WAKE.store(-1, Ordering::SeqCst);
        ARMED.store(false, Ordering::SeqCst);
    }
}

/// The first signal caught by the last [`Armed`] guard, if any (still set after it dropped).
pub fn caught() -> Option<libc::c_int> {
    match CAUGHT.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// Ends this process with `sig`'s default action (after the caller undid its work), so the
/// parent sees the signal it sent; exits 128+`sig` should the signal not end it.
pub fn reraise(sig: libc::c_int) -> ! {
    // SAFETY: signal(2), pthread_sigmask(3) and raise(3) with a valid signal number and
    // disposition; `set` is initialised by sigemptyset before use. The signal is unblocked
    // in the calling thread, which raise(3) delivers it to.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(sig);
    }
    std::process::exit(128 + sig)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caught_signal_wakes_the_pipe_and_is_remembered() {
        let armed = Armed::arm().expect("arm");
        assert_eq!(armed.caught(), None);
        assert!(Armed::arm().is_err(), "a second guard is refused");
        // A signal the test's parent ignores is left alone; at least one is caught.
        let sig = armed.old.first().expect("one signal not ignored").0;
        // SAFETY: raise(3) of a signal that the handler just installed catches.
        unsafe { libc::raise(sig) };
        assert_eq!(armed.caught(), Some(sig));
        let mut byte = 0u8;
        // SAFETY: read(2) of one byte into `byte` from the open wake pipe.
        let n = unsafe {
            libc::read(
                armed.wake_fd().as_raw_fd(),
                std::ptr::addr_of_mut!(byte).cast(),
                1,
            )
        };
        assert_eq!(n, 1, "the wake pipe holds a byte");
        drop(armed);
        assert_eq!(caught(), Some(sig), "kept after disarming");
        // Armed again: nothing caught yet, the pipe empty.
        let again = Armed::arm().expect("arm again");
        assert_eq!(again.caught(), None);
        // SAFETY: read(2) of one byte into `byte` from the open, non-blocking wake pipe.
        let n = unsafe {
            libc::read(
                again.wake_fd().as_raw_fd(),
                std::ptr::addr_of_mut!(byte).cast(),
                1,
            )
        };
        assert_eq!(n, -1, "the wake pipe was drained");
        drop(again);
        // The earlier action is back: check it without raising.
        // SAFETY: a zeroed sigaction is a valid value to read the current action into.
        let mut now: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: sigaction(2) with a null new action only reads the current one.
        unsafe { libc::sigaction(sig, std::ptr::null(), &mut now) };
        assert_ne!(
            now.sa_sigaction,
            on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t
        );
    }
}
