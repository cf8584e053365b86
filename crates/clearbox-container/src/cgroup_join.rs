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

use libcgroups::v1::{util, ControllerType};

use crate::Error;

/// The controllers libcgroups' v1 manager handles (its `CONTROLLERS`, which it does not
/// export), in its order.
const CONTROLLERS: [ControllerType; 12] = [
    ControllerType::Cpu,
    ControllerType::CpuAcct,
    ControllerType::CpuSet,
    ControllerType::Devices,
    ControllerType::HugeTlb,
    ControllerType::Memory,
    ControllerType::Pids,
    ControllerType::PerfEvent,
    ControllerType::Blkio,
    ControllerType::NetworkPriority,
    ControllerType::NetworkClassifier,
    ControllerType::Freezer,
];

/// Moves the calling process into `cgroup_path` (created where missing) in every v1
/// hierarchy that libcgroups manages, as `add_task` would, by moving its only thread.
/// Returns false, having done nothing, when the host's cgroups are v2 only or the process
/// has more than one thread.
pub fn join_self(cgroup_path: &Path) -> Result<bool, Error> {
    if crate::namespaces::unified_cgroups() || thread_count()? != 1 {
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

/// The directories of `cgroup_path` in the hierarchies of libcgroups' controllers that this
/// host mounts (the same set and the same path joining as its v1 manager, which also takes
/// an absolute path as relative to each hierarchy's root); a `..` is refused.
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
    let mut out: Vec<HierarchyDir> = Vec::new();
    for ctrl in &CONTROLLERS {
        let Ok(mount) = util::get_subsystem_mount_point(ctrl) else {
            continue;
        };
        let path = mount.join(&rel);
        let cpuset = matches!(ctrl, ControllerType::CpuSet);
        // Controllers mounted together (cpu,cpuacct) share one directory.
        match out.iter_mut().find(|d| d.path == path) {
            Some(d) => d.cpuset |= cpuset,
            None => out.push(HierarchyDir {
                mount,
                path,
                cpuset,
            }),
        }
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

/// Threads of the calling process.
fn thread_count() -> Result<usize, Error> {
    std::fs::read_dir("/proc/self/task")
        .map(Iterator::count)
        .map_err(|e| Error::io("count the threads of this process", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_thread_is_one_of_several() {
        // The test harness runs tests on threads of their own.
        let other =
            std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_millis(200)));
        assert!(thread_count().unwrap() >= 2);
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
