//! Network namespaces: entering one (by path or a new one) on the calling thread, and running a
//! closure inside another one on a short-lived thread.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;

use nix::sched::CloneFlags;

use crate::Error;

/// Moves the calling thread into the network namespace at `path` (e.g. `/run/netns/x`,
/// `/proc/PID/ns/net`). Processes it starts afterwards inherit it.
pub fn enter_path(path: &Path) -> Result<(), Error> {
    let f = File::open(path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
    enter(&f)
}

/// Moves the calling thread into the network namespace `ns` refers to.
pub fn enter(ns: &impl AsFd) -> Result<(), Error> {
    nix::sched::setns(ns.as_fd(), CloneFlags::CLONE_NEWNET)
        .map_err(|e| Error::io("setns(CLONE_NEWNET)", e.into()))
}

/// Moves the calling thread into a new network namespace (as runc does for a spec that asks for
/// one without a path) and brings its loopback up.
pub fn enter_new() -> Result<(), Error> {
    nix::sched::unshare(CloneFlags::CLONE_NEWNET)
        .map_err(|e| Error::io("unshare(CLONE_NEWNET)", e.into()))?;
    crate::apply::loopback_up()
}

/// Runs `f` on a new thread that first enters the network namespace `ns`; the caller's own
/// namespace is untouched.
pub fn run_in<T: Send>(
    ns: &(impl AsFd + Sync),
    f: impl FnOnce() -> Result<T, Error> + Send,
) -> Result<T, Error> {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter(ns)?;
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(Error::Invalid("network namespace worker panicked".into())))
    })
}
