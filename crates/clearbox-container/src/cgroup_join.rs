//! Moving the calling process into a cgroup on a cgroup v1 (or hybrid) host without the
//! kernel's global threadgroup lock.
//!
//! Writing a pid to a v1 `cgroup.procs` (what libcgroups' `add_task` does) write-locks the
//! kernel's `cgroup_threadgroup_rwsem`, a per-CPU rwsem whose writer waits for an RCU grace
//! period unless another writer went before it within the last one: measured on this host
//! (kernel 6.18, hybrid cgroups), 6-16 ms for the first move after a pause, 0.05 ms for the
//! next ones. A VM's shim pays it on the start path of every container, and an exec's shim
//! on every exec. Moving one thread, the caller itself, by writing `0` to `tasks` does not
//! take that lock (kernel/cgroup/cgroup.c, `cgroup_procs_write_start`: a thread moving
//! itself cannot exit or exec under the writer): 0.1 ms. For a single-threaded process, that
//! moves the whole process.
//!
//! Not used where it cannot be the same move: cgroup v2 (a thread may not leave its
//! process's domain) and a caller with more than one thread; [`join_self`] then says so and
//! the caller uses the library's `add_task`.

use std::io::Write;
use std::path::{Component, Path, PathBuf};

use crate::Error;

/// The controllers libcgroups' v1 manager handles (its `CONTROLLERS`, which it does not
/// export), by name.
const CONTROLLERS: [&str; 12] = [
    "cpu",
    "cpuacct",
    "cpuset",
    "devices",
    "hugetlb",
    "memory",
    "pids",
    "perf_event",
    "blkio",
    "net_prio",
    "net_cls",
    "freezer",
];

/// Moves the calling process into `cgroup_path` (created where missing) in every v1
/// hierarchy that libcgroups manages, as `add_task` would, by moving its only thread.
/// Returns false, having done nothing, when the host's cgroups are v2 only or the process
/// has more than one thread.
pub fn join_self(cgroup_path: &Path) -> Result<bool, Error> {
    if crate::namespaces::unified_cgroups()
        || clearbox_util::proc::thread_count()
            .map_err(|e| Error::io("count the threads of this process", e))?
            != 1
    {
        return Ok(false);
    }
    for dir in hierarchy_dirs(cgroup_path)? {
        std::fs::create_dir_all(&dir.path)
            .map_err(|e| Error::io(format!("create cgroup {}", dir.path.display()), e))?;
        if dir.cpuset {
            fill_cpuset(&dir.mount, &dir.path)?;
        }
        let tasks = dir.path.join("tasks");
        // `0`: the writing thread itself.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&tasks)
            .and_then(|mut f| f.write_all(b"0"))
            .map_err(|e| Error::io(format!("join cgroup {}", tasks.display()), e))?;
    }
    Ok(true)
}

/// The cgroup's directory in one v1 hierarchy.
struct HierarchyDir {
    mount: PathBuf,
    path: PathBuf,
    cpuset: bool,
}

/// The directories of `cgroup_path` in the v1 hierarchies of libcgroups' controllers that
/// this host mounts, from one read of the mount table (libcgroups looks each controller up
/// in it anew; its manager, made by the caller for the limits, already did that once), with
/// the same path joining as its v1 manager, which takes an absolute path as relative to each
/// hierarchy's root; a `..` is refused.
fn hierarchy_dirs(cgroup_path: &Path) -> Result<Vec<HierarchyDir>, Error> {
    let rel: PathBuf = cgroup_path
        .components()
        .filter(|c| !matches!(c, Component::RootDir | Component::CurDir))
        .collect();
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(Error::Setup(format!(
            "cgroup path {} leaves its hierarchy",
            cgroup_path.display()
        )));
    }
    let mounts = clearbox_util::proc::mounts().map_err(|e| Error::io("read the mount table", e))?;
    let mut out: Vec<HierarchyDir> = Vec::new();
    for m in mounts.into_iter().filter(|m| m.fs_type == "cgroup") {
        let opts: Vec<&str> = m.super_options.split(',').collect();
        if !CONTROLLERS.iter().any(|c| opts.contains(c)) {
            continue;
        }
        let mount = PathBuf::from(&m.mount_point);
        let path = mount.join(&rel);
        // A hierarchy mounted twice is one directory.
        if out.iter().any(|d| d.path == path) {
            continue;
        }
        out.push(HierarchyDir {
            mount,
            path,
            cpuset: opts.contains(&"cpuset"),
        });
    }
    Ok(out)
}

/// A new v1 cpuset cgroup has no CPUs and no memory nodes, and nothing may join it: each
/// empty level below the hierarchy's root takes its parent's (as libcgroups' cpuset
/// controller does before it adds a task).
fn fill_cpuset(mount: &Path, dir: &Path) -> Result<(), Error> {
    let rel = dir.strip_prefix(mount).map_err(|_| {
        Error::Setup(format!(
            "cgroup {} is not below {}",
            dir.display(),
            mount.display()
        ))
    })?;
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let mut current = mount.to_path_buf();
        for part in rel.components() {
            let read = |p: &Path| {
                std::fs::read_to_string(p)
                    .map_err(|e| Error::io(format!("read {}", p.display()), e))
            };
            let parent = read(&current.join(file))?;
            current.push(part);
            let child = current.join(file);
            if read(&child)?.trim().is_empty() {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&child)
                    .and_then(|mut f| f.write_all(parent.trim().as_bytes()))
                    .map_err(|e| Error::io(format!("write {}", child.display()), e))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_thread_is_one_of_several() {
        // The test harness runs tests on threads of their own.
        let other =
            std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_millis(200)));
        assert!(clearbox_util::proc::thread_count().unwrap() >= 2);
        other.join().unwrap();
    }

    #[test]
    fn a_path_that_climbs_out_is_refused() {
        assert!(hierarchy_dirs(Path::new("/a/../../etc")).is_err());
    }

    #[test]
    fn a_multi_threaded_caller_is_left_to_add_task() {
        let other =
            std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_millis(200)));
        // Never touches the host's cgroups: the thread check comes first.
        assert!(!join_self(Path::new("/clearbox-test-never-created")).unwrap());
        other.join().unwrap();
    }
}
