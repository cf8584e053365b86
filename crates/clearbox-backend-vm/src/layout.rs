//! Where a VM container keeps its host files, and the record that lets any later `clearbox`
//! process find them.
//!
//! * `<state dir>/vm-box.json`: the [`Record`].
//! * `<state dir>/start.fifo`: `start` writes one byte to it once the agent started the init, so
//!   the shim begins relaying.
//! * `<state dir>/last-stats.json`: the init's statistics as the init ended, written by its
//!   shim before the VM goes (`events` reads the OOM kills that ended the container there).
//! * `<state dir>/shim*.log`: the shims' own logs (their stderr is the container's).
//! * `<base>` = `/run/clearbox-vm/<hash of the state dir>`: short on purpose, because Unix socket
//!   paths are limited to 108 bytes and podman's container ids alone are 64. It holds `vm/` (the
//!   VMM's run dir: sockets, logs, pid record) and `shared/` (the only directory virtiofsd
//!   exports: `rootfs` and `mounts/<n>`, bind mounts of the bundle's rootfs and of each bind
//!   mount source). The base is kept *outside* the state directory so that nothing that removes
//!   the state directory recursively can ever descend into the user's rootfs through a bind
//!   mount that was left behind.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use clearbox_protocol::{ContainerId, ShareDir};
use serde::{Deserialize, Serialize};

use crate::Error;

pub(crate) const RECORD: &str = "vm-box.json";
pub(crate) const START_FIFO: &str = "start.fifo";
pub(crate) const LAST_STATS: &str = "last-stats.json";

/// Everything of a VM container that lives outside its state directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Record {
    /// Container id as the agent knows it (the host id when the agent accepts it).
    pub guest_id: String,
    pub base: PathBuf,
    /// The VMM's run dir (`VmHandle::load` reads it).
    pub vm_run_dir: PathBuf,
    /// The directory virtiofsd exports.
    pub shared: PathBuf,
    /// Mount points created below `shared`, in the order they were mounted.
    #[serde(default)]
    pub mounts: Vec<PathBuf>,
    /// Taps and qdiscs the shim wired in the container's network namespace.
    #[serde(default)]
    pub net: Option<crate::net::NetRecord>,
    /// The container's host cgroup (holds the shims and the VM), removed at delete.
    #[serde(default)]
    pub host_cgroup: Option<PathBuf>,
    /// The host cgroup held other processes before the container (runc 1.1 runs it there with
    /// a warning): delete kills only the VM's processes and leaves the cgroup while others are
    /// in it.
    #[serde(default)]
    pub host_cgroup_shared: bool,
    /// Its part in a pod (see `pod.rs`); `None` for a container with a VM of its own.
    #[serde(default)]
    pub pod: Option<PodPart>,
}

/// A container's part in a pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum PodPart {
    /// The sandbox: owns the VM; `shared` is a shared mount that app containers attach to.
    Sandbox,
    /// An app container in the VM of sandbox `sandbox_id`. Its `base` is its own directory
    /// below the sandbox's `shared` (`shared/<guest id>`, holding `rootfs` and `mounts/<n>`),
    /// and `vm_run_dir`/`shared` are the sandbox's.
    Member { sandbox_id: String },
}

impl Record {
    pub(crate) fn new(state_dir: &Path, id: &str) -> Self {
        let base = base_parent().join(format!("{:016x}", hash(state_dir)));
        Record {
            guest_id: guest_id(id),
            vm_run_dir: base.join("vm"),
            shared: base.join("shared"),
            base,
            mounts: Vec::new(),
            net: None,
            host_cgroup: None,
            host_cgroup_shared: false,
            pod: None,
        }
    }

    /// An app container's record in the VM of the sandbox whose record is `sandbox`.
    pub(crate) fn member(sandbox: &Record, sandbox_id: &str, id: &str) -> Result<Self, Error> {
        let guest_id = ContainerId::parse(id)
            .map_err(|e| Error::Msg(format!("{e}: it cannot join a pod VM")))?
            .as_str()
            .to_string();
        // The sandbox's own nodes in the export: a member there would be set up inside the
        // sandbox's rootfs and take its mounts down at delete.
        if matches!(guest_id.as_str(), "rootfs" | "mounts") {
            return Err(Error::Msg(format!(
                "container id {guest_id:?} is reserved in a pod VM (the sandbox's share uses it)"
            )));
        }
        Ok(Record {
            base: sandbox.shared.join(&guest_id),
            guest_id,
            vm_run_dir: sandbox.vm_run_dir.clone(),
            shared: sandbox.shared.clone(),
            mounts: Vec::new(),
            net: None,
            host_cgroup: None,
            host_cgroup_shared: false,
            pod: Some(PodPart::Member {
                sandbox_id: sandbox_id.to_string(),
            }),
        })
    }

    /// The directory holding this container's `rootfs` and `mounts/<n>` in the export: the
    /// export itself, or an app container's directory in its pod's export (its `base`).
    pub(crate) fn share_dir(&self) -> ShareDir {
        match self.pod {
            Some(PodPart::Member { .. }) => ShareDir::Member(self.container_id()),
            _ => ShareDir::Whole,
        }
    }

    /// The container's id in the guest.
    pub(crate) fn container_id(&self) -> ContainerId {
        // Made by `guest_id` or checked in `member`; a record edited by hand falls back.
        ContainerId::for_guest(&self.guest_id)
    }

    pub(crate) fn is_member(&self) -> bool {
        matches!(self.pod, Some(PodPart::Member { .. }))
    }

    pub(crate) fn is_sandbox(&self) -> bool {
        self.pod == Some(PodPart::Sandbox)
    }

    pub(crate) fn load(state_dir: &Path) -> Result<Option<Self>, Error> {
        let path = state_dir.join(RECORD);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::Record(path, Box::new(e))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Record(path, Box::new(e))),
        }
    }

    pub(crate) fn save(&self, state_dir: &Path) -> Result<(), Error> {
        let path = state_dir.join(RECORD);
        let tmp = state_dir.join(".vm-box.json.tmp");
        let text =
            serde_json::to_vec(self).map_err(|e| Error::Record(path.clone(), Box::new(e)))?;
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| Error::Record(path, Box::new(e)))
    }
}

/// Parent of every container's base directory: `/run/clearbox-vm` for root, else the user's
/// runtime directory.
fn base_parent() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/run/clearbox-vm");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("clearbox-vm"),
        _ => PathBuf::from(format!("/tmp/clearbox-vm-{}", nix::unistd::geteuid())),
    }
}

/// A stable name for a state directory. The record stores the result, so the hash only has to
/// be unique among live containers, not stable across releases.
fn hash(dir: &Path) -> u64 {
    let mut h = DefaultHasher::new();
    dir.as_os_str().as_bytes().hash(&mut h);
    h.finish()
}

/// The id of a container with a VM of its own in the guest (see [`ContainerId::for_guest`]).
fn guest_id(id: &str) -> String {
    ContainerId::for_guest(id).as_str().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_paths_are_short_and_distinct() {
        let a = Record::new(Path::new(&format!("/run/clearbox/{}", "a".repeat(64))), "x");
        let b = Record::new(Path::new(&format!("/run/clearbox/{}", "b".repeat(64))), "x");
        assert_ne!(a.base, b.base);
        // The VMM needs run_dir + "/vsock.sock_1024" below 108 bytes.
        assert!(
            a.vm_run_dir.as_os_str().len() + 16 < 100,
            "{:?}",
            a.vm_run_dir
        );
    }

    #[test]
    fn a_member_cannot_take_the_sandboxs_own_names() {
        let sandbox = Record::new(Path::new("/run/clearbox/pod"), "pod");
        for id in ["rootfs", "mounts"] {
            assert!(Record::member(&sandbox, "pod", id).is_err(), "{id}");
        }
        let m = Record::member(&sandbox, "pod", "app").unwrap();
        assert_eq!(m.base, sandbox.shared.join("app"));
    }

    #[test]
    fn guest_ids_fit_the_agent() {
        assert_eq!(guest_id("abc-1.2_x"), "abc-1.2_x");
        assert_eq!(guest_id("a+b"), "container");
        assert_eq!(guest_id(&"x".repeat(200)), "container");
    }
}
