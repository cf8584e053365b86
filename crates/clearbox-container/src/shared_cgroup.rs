//! A pre-existing cgroup named by the spec's `cgroupsPath`, handled as runc 1.1 handles it.
//!
//! runc 1.1 (libcontainer's factory `Create`):
//! * a cgroup that already holds processes is used, with two warnings ("container's cgroup is
//!   not empty: N process(es) found" and the deprecation notice); its other processes are not
//!   the container's: `delete` kills only the container's own (its init, and with it its pid
//!   namespace) and leaves the cgroup while anything is in it;
//! * a frozen cgroup is refused ("container's cgroup unexpectedly frozen"): the init would
//!   hang in it. Nothing is created and the cgroup is left as it was.
//!
//! The frozen check reads the v1 freezer and, stricter than runc on a hybrid host, the v2
//! `cgroup.freeze` too.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::Error;

/// The message runc gives for a frozen cgroup.
pub const FROZEN: &str = "container's cgroup unexpectedly frozen";

/// The pids in `dir` and every cgroup below it (runc's GetAllPids).
fn all_pids(dir: &Path, out: &mut HashSet<i32>) {
    if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            all_pids(&e.path(), out);
        }
    }
}

fn frozen(dir: &Path) -> bool {
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok();
    read("freezer.state").is_some_and(|s| s.trim() != "THAWED")
        || read("cgroup.freeze").is_some_and(|s| s.trim() == "1")
}

/// Checks the cgroup directories `dirs` (one per hierarchy) before a container joins them.
/// Ok(true): they hold processes already (warned, as runc warns); Ok(false): empty or absent.
pub fn check(dirs: &[PathBuf]) -> Result<bool, Error> {
    let mut pids = HashSet::new();
    for d in dirs {
        all_pids(d, &mut pids);
    }
    if !pids.is_empty() {
        tracing::warn!(
            "container's cgroup is not empty: {} process(es) found",
            pids.len()
        );
        tracing::warn!("DEPRECATED: running container in a non-empty cgroup won't be supported in runc 1.2; https://github.com/opencontainers/runc/issues/3132");
    }
    if dirs.iter().any(|d| frozen(d)) {
        return Err(Error::Setup(FROZEN.into()));
    }
    Ok(!pids.is_empty())
}

/// Removes the cgroup directories that are empty (deepest first) and leaves the others; true
/// when every one is gone.
pub fn remove_empty(dirs: &[PathBuf]) -> bool {
    fn below(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                below(&e.path(), out);
                out.push(e.path());
            }
        }
    }
    let mut all_gone = true;
    for d in dirs {
        let mut order = Vec::new();
        below(d, &mut order);
        order.push(d.clone());
        for dir in order {
            if std::fs::remove_dir(&dir).is_err() && dir.exists() {
                all_gone = false;
            }
        }
    }
    all_gone
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_busy_and_frozen_cgroups() {
        let t = tempfile::tempdir().expect("tempdir");
        let a = t.path().join("freezer");
        let b = t.path().join("unified");
        std::fs::create_dir_all(a.join("sub")).expect("mkdir");
        std::fs::create_dir_all(&b).expect("mkdir");
        std::fs::write(a.join("freezer.state"), "THAWED\n").expect("write");
        std::fs::write(b.join("cgroup.freeze"), "0\n").expect("write");
        std::fs::write(a.join("cgroup.procs"), "").expect("write");
        let dirs = vec![a.clone(), b.clone()];
        assert!(!check(&dirs).expect("empty"));
        std::fs::write(a.join("sub").join("cgroup.procs"), "42\n").expect("write");
        std::fs::write(b.join("cgroup.procs"), "42\n43\n").expect("write");
        assert!(check(&dirs).expect("busy"));
        std::fs::write(a.join("freezer.state"), "FROZEN\n").expect("write");
        assert_eq!(check(&dirs).unwrap_err().to_string(), FROZEN);
        std::fs::write(a.join("freezer.state"), "THAWED\n").expect("write");
        std::fs::write(b.join("cgroup.freeze"), "1\n").expect("write");
        assert!(check(&dirs).is_err());
        assert!(check(&[t.path().join("absent")]).is_ok_and(|busy| !busy));
    }
}
