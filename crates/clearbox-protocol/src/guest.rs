//! The guest side of the host<->guest contract: where things are inside the VM and which
//! container ids the guest takes. The host writes these paths into the specs it sends (see
//! `clearbox-backend-vm`'s `guest_spec`), the agent creates them: both use these definitions
//! and nothing else.
//!
//! Layout inside the VM (below the agent's run directory, [`RUN_DIR`] when it is PID 1):
//! ```text
//! /run/clearbox/virtiofs/<tag>/          mount point of each virtio-fs tag (the agent mounts it)
//! /run/clearbox/virtiofs/clearbox/       the host's per-VM share (tag SHARE_TAG) = SHARE
//!     rootfs/  mounts/<n>/                  a VM's only container (ShareDir::Whole)
//!     <id>/rootfs/  <id>/mounts/<n>/        pod member <id> (ShareDir::Member)
//! /run/clearbox/shared -> virtiofs/clearbox
//! /sys/fs/cgroup/clearbox/<id>            a container's cgroup (cgroup_path)
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

/// The agent's run directory when it is a VM's init.
pub const RUN_DIR: &str = "/run/clearbox";
/// Directory below the run directory where each virtio-fs tag is mounted.
pub const VIRTIOFS_DIR: &str = "virtiofs";
/// virtio-fs tag of the host's per-VM share (a container's rootfs and bind-mount sources).
pub const SHARE_TAG: &str = "clearbox";
/// Where the share is mounted in a VM: `RUN_DIR/VIRTIOFS_DIR/SHARE_TAG`.
pub const SHARE: &str = "/run/clearbox/virtiofs/clearbox";
/// `<run dir>/SHARED_LINK` is a symlink to the share's mount ([`SHARED_LINK_TARGET`]).
pub const SHARED_LINK: &str = "shared";
/// Target of [`SHARED_LINK`], relative so it holds for any run directory.
pub const SHARED_LINK_TARGET: &str = "virtiofs/clearbox";
/// Kernel command line parameter naming the virtio-fs tags of a VM, comma-separated
/// (`clearbox.shares=clearbox`): the agent mounts them as it starts, before it listens. A VM
/// restored from a template then has its share mounted already (the mount, and virtiofsd's
/// session, are part of the saved state), instead of mounting it in its first create.
pub const SHARES_PARAM: &str = "clearbox.shares";

/// The kernel command line word that names `tags` ([`SHARES_PARAM`]); `None` without tags.
pub fn shares_word<'a>(tags: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let tags: Vec<&str> = tags.into_iter().collect();
    (!tags.is_empty()).then(|| format!("{SHARES_PARAM}={}", tags.join(",")))
}

/// The tags a kernel command line names ([`SHARES_PARAM`]), as written; the agent checks
/// each against the tag rule before it mounts it.
pub fn shares_from_cmdline(cmdline: &str) -> Vec<&str> {
    cmdline
        .split_whitespace()
        .filter_map(|w| w.strip_prefix(SHARES_PARAM)?.strip_prefix('='))
        .flat_map(|v| v.split(','))
        .filter(|t| !t.is_empty())
        .collect()
}
/// The VM's root network namespace, as the host names it in guest specs (the agent is PID 1):
/// every container of a VM joins it (the VM is the network boundary).
pub const ROOT_NETNS: &str = "/proc/1/ns/net";
/// Parent of the containers' cgroups in the guest.
pub const CGROUP_PARENT: &str = "clearbox";
/// Longest container id the guest takes.
pub const MAX_ID_LEN: usize = 128;

/// Mount point of virtio-fs `tag` below the agent's run directory.
pub fn virtiofs_mount(run_dir: &Path, tag: &str) -> PathBuf {
    run_dir.join(VIRTIOFS_DIR).join(tag)
}

/// The guest cgroup of container `id` (`/clearbox/<id>`), below `parent` ([`CGROUP_PARENT`]
/// in a VM).
pub fn cgroup_path(parent: &str, id: &ContainerId) -> String {
    format!("/{parent}/{id}")
}

/// Why a string is not a [`ContainerId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("container id is empty")]
    Empty,
    #[error("container id {0:?} is longer than {MAX_ID_LEN} bytes")]
    TooLong(String),
    #[error("container id {0:?} has a character outside [A-Za-z0-9_.-] or is . or ..")]
    BadChar(String),
}

/// A container id the guest takes: up to [`MAX_ID_LEN`] bytes of `[A-Za-z0-9_.-]`, not `.` or
/// `..`. It names a directory (bundle, state, share) and a cgroup in the guest, so nothing
/// else gets through. The host accepts more (`+`, 255 bytes): it maps such ids with
/// [`ContainerId::for_guest`]. Also the rule for virtio-fs tags.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContainerId(String);

impl ContainerId {
    /// Checks `id` against the guest's rule.
    pub fn parse(id: &str) -> Result<Self, IdError> {
        if id.is_empty() {
            return Err(IdError::Empty);
        }
        if id.len() > MAX_ID_LEN {
            return Err(IdError::TooLong(id.to_string()));
        }
        let chars_ok = id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !chars_ok || id == "." || id == ".." {
            return Err(IdError::BadChar(id.to_string()));
        }
        Ok(Self(id.to_string()))
    }

    /// The id of a host container in its own VM: the host id when the guest takes it, else
    /// a fixed name (one container per VM, so any fixed name works).
    pub fn for_guest(host_id: &str) -> Self {
        Self::parse(host_id).unwrap_or_else(|_| Self("container".to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ContainerId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A container's directory in the share: what the host attaches there (its rootfs and the
/// sources of its bind mounts) and where the guest finds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShareDir {
    /// The share itself: the only container of its VM.
    Whole,
    /// `<id>/` in the share of a pod's VM: app container `id` of the pod.
    Member(ContainerId),
}

impl ShareDir {
    /// Path of the directory relative to the share: `""` or `"<id>/"`.
    pub fn prefix(&self) -> String {
        match self {
            ShareDir::Whole => String::new(),
            ShareDir::Member(id) => format!("{id}/"),
        }
    }

    /// The container's rootfs, relative to the share.
    pub fn rootfs(&self) -> String {
        format!("{}rootfs", self.prefix())
    }

    /// The directory of the spec's bind-mount sources, relative to the share.
    pub fn mounts(&self) -> String {
        format!("{}mounts", self.prefix())
    }

    /// The source of the spec's mount number `index`, relative to the share.
    pub fn mount(&self, index: usize) -> String {
        format!("{}mounts/{index}", self.prefix())
    }

    /// The rootfs as the guest sees it.
    pub fn guest_rootfs(&self) -> String {
        format!("{SHARE}/{}", self.rootfs())
    }

    /// The source of the spec's mount number `index` as the guest sees it.
    pub fn guest_mount(&self, index: usize) -> String {
        format!("{SHARE}/{}", self.mount(index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_round_trip_through_the_command_line() {
        assert_eq!(shares_word([]), None);
        let w = shares_word([SHARE_TAG, "other"]).expect("word");
        assert_eq!(w, "clearbox.shares=clearbox,other");
        let cmdline = format!("console=ttyS0 {w} clearbox.sharesx=no quiet");
        assert_eq!(shares_from_cmdline(&cmdline), vec![SHARE_TAG, "other"]);
        assert!(shares_from_cmdline("console=ttyS0 clearbox.shares= quiet").is_empty());
    }

    #[test]
    fn the_share_is_the_mount_of_its_tag() {
        assert_eq!(
            virtiofs_mount(Path::new(RUN_DIR), SHARE_TAG),
            Path::new(SHARE)
        );
        assert_eq!(
            Path::new(RUN_DIR).join(SHARED_LINK).parent(),
            Some(Path::new(RUN_DIR))
        );
        assert_eq!(
            Path::new(RUN_DIR).join(SHARED_LINK_TARGET),
            Path::new(SHARE)
        );
    }

    #[test]
    fn container_ids_follow_the_guest_rule() {
        assert!(ContainerId::parse("abc-1.2_x").is_ok());
        assert_eq!(ContainerId::parse(""), Err(IdError::Empty));
        for bad in ["..", ".", "a/b", "a b", "a+b"] {
            assert!(
                matches!(ContainerId::parse(bad), Err(IdError::BadChar(_))),
                "{bad}"
            );
        }
        assert!(ContainerId::parse(&"x".repeat(MAX_ID_LEN)).is_ok());
        assert!(matches!(
            ContainerId::parse(&"x".repeat(MAX_ID_LEN + 1)),
            Err(IdError::TooLong(_))
        ));
        assert_eq!(ContainerId::for_guest("abc").as_str(), "abc");
        assert_eq!(ContainerId::for_guest("a+b").as_str(), "container");
        assert_eq!(
            ContainerId::for_guest(&"x".repeat(200)).as_str(),
            "container"
        );
    }

    #[test]
    fn share_dirs() {
        let id = ContainerId::parse("app1").unwrap();
        let whole = ShareDir::Whole;
        let member = ShareDir::Member(id.clone());
        assert_eq!(whole.guest_rootfs(), format!("{SHARE}/rootfs"));
        assert_eq!(member.guest_rootfs(), format!("{SHARE}/app1/rootfs"));
        assert_eq!(member.guest_mount(3), format!("{SHARE}/app1/mounts/3"));
        assert_eq!(whole.mount(0), "mounts/0");
        assert_eq!(cgroup_path(CGROUP_PARENT, &id), "/clearbox/app1");
    }
}
