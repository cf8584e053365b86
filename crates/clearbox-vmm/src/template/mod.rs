//! VM templates: a VM booted once to "agent ready, no container yet" and saved, from which
//! each later VM of the same inputs is restored instead of booted.
//!
//! * **Key.** One template per QEMU binary, guest kernel, initramfs (each by path, size,
//!   mtime and inode: a rebuilt asset is a new template), VM size (vCPUs, memory),
//!   accelerator, kernel command line, virtio-fs tags and NIC count, hashed (SHA-256) into
//!   the directory name under [`TemplateOptions::dir`]
//!   (`/dev/shm/clearbox-templates/<key>/`, tmpfs: see [`DEFAULT_TEMPLATE_DIR`]).
//! * **Build** (first use, or `clearbox template build`): under an exclusive `flock` of
//!   `<key>.lock` (a second first use waits, then finds it built), a VM with the same device
//!   model boots with its RAM in a shared memory file (empty virtio-fs shares, NICs on
//!   unconnected hub ports with placeholder MACs), the agent answers, QEMU stops it and
//!   migrates its device state to a file with `x-ignore-shared` (the RAM stays in the
//!   memory file); the directory is then renamed into place (atomic).
//! * **Restore**: the memory file is copied (sparse: only the pages the template touched)
//!   into the VM's run directory, QEMU starts with `-incoming defer` on that file and loads
//!   the state (`migrate-incoming`). The copy is needed: vhost-user devices (virtiofsd)
//!   map guest memory from the file, so it must be `share=on`, and a shared mapping of one
//!   file by two VMs would be one memory for both. The clone's identity: `clearbox-vmux`
//!   sends fresh host entropy and the host's time at once (`HELLO`: the agent reseeds its
//!   RNG and sets its clock), the NICs take the container's MACs from the agent
//!   (`UpdateInterfaces` on a NIC with placeholder MAC N gives it interface N's MAC), and
//!   everything else of the guest (uid lease, sockets, taps) is per VM on the host anyway.
//! * **Support**: QEMU 10 or newer (vhost-user-fs migrates with the Rust virtiofsd only from
//!   QEMU 10 on), the virtio-serial agent channel (vhost-user vsock cannot migrate), and the
//!   Rust virtiofsd when the VM has shares. Elsewhere VMs boot cold; an unsupported QEMU is
//!   remembered in `<key>.unsupported` so it is checked once.

use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

mod cache;
mod copy;

pub use cache::{list, prune, CacheState, CachedTemplate, Pruned};
pub(crate) use cache::{prune_lru, prune_stale};
pub(crate) use copy::{copy_sparse, punch_zero_pages, PendingCopy};

/// Where templates live unless configured otherwise: tmpfs, because every VM copies the
/// template's memory file sparsely (SEEK_DATA/SEEK_HOLE), which must be exact and fast. On a
/// disk filesystem the copy took seconds under load and a clone once crashed a guest program
/// (holes reported for pages still in delayed allocation, the likely cause); on tmpfs both
/// hold. Rebuilt after a reboot, on first use (one boot).
pub const DEFAULT_TEMPLATE_DIR: &str = "/dev/shm/clearbox-templates";
/// Where a restored VM's copy of the memory file lives (tmpfs, like the template).
pub(crate) const CLONE_MEMORY_DIR: &str = "/dev/shm/clearbox-vm";
/// Bumped when the template's format or device model changes.
const FORMAT: u32 = 1;
/// Inside a template directory.
pub(crate) const MEMORY: &str = "memory";
pub(crate) const STATE: &str = "state";
const META: &str = "template.json";

/// Templates on: where they are kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateOptions {
    pub dir: PathBuf,
    /// The user asked for templates explicitly (`[vm] template = true`,
    /// `CLEARBOX_TEMPLATE=on`): a host or VM that cannot use them is an error, never a
    /// silent cold boot. `false` (`CLEARBOX_TEMPLATE=auto`) falls back to a cold boot.
    pub required: bool,
    /// Most templates kept in `dir` (`[vm] template_max`): each holds a booted guest's
    /// memory on tmpfs (40-80 MiB), and every VM size, NIC count or kernel command line has
    /// its own, so without a bound a host running many sizes would fill its RAM with them.
    /// Beyond it, the least recently used go ([`prune_lru`]).
    #[serde(default = "default_max")]
    pub max: usize,
}

/// Default of [`TemplateOptions::max`].
pub const DEFAULT_TEMPLATE_MAX: usize = 8;

fn default_max() -> usize {
    DEFAULT_TEMPLATE_MAX
}

impl Default for TemplateOptions {
    fn default() -> Self {
        TemplateOptions {
            dir: PathBuf::from(DEFAULT_TEMPLATE_DIR),
            required: true,
            max: DEFAULT_TEMPLATE_MAX,
        }
    }
}

/// A file as the key sees it.
#[derive(Debug, Serialize)]
struct FileId {
    path: PathBuf,
    size: u64,
    mtime_ns: i128,
    ino: u64,
}

fn file_id(p: &Path) -> Result<FileId> {
    let m = std::fs::metadata(p).map_err(|e| Error::Path {
        op: "stat",
        path: p.to_path_buf(),
        source: e,
    })?;
    Ok(FileId {
        path: p.to_path_buf(),
        size: m.len(),
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        ino: m.ino(),
    })
}

/// Everything the saved guest depends on.
#[derive(Debug, Serialize)]
pub(crate) struct KeyInputs {
    format: u32,
    qemu: FileId,
    kernel: FileId,
    initrd: FileId,
    vcpus: u32,
    memory_mib: u32,
    accel: String,
    tcg_tb_size_mib: Option<u32>,
    cmdline: String,
    share_tags: Vec<String>,
    nics: usize,
}

#[allow(clippy::too_many_arguments)]
impl KeyInputs {
    pub(crate) fn new(
        qemu: &Path,
        kernel: &Path,
        initrd: &Path,
        vcpus: u32,
        memory_mib: u32,
        accel: crate::Accel,
        tcg_tb_size_mib: Option<u32>,
        cmdline: &str,
        share_tags: Vec<String>,
        nics: usize,
    ) -> Result<KeyInputs> {
        Ok(KeyInputs {
            format: FORMAT,
            qemu: file_id(qemu)?,
            kernel: file_id(kernel)?,
            initrd: file_id(initrd)?,
            vcpus,
            memory_mib,
            accel: accel.to_string(),
            tcg_tb_size_mib,
            cmdline: cmdline.to_string(),
            share_tags,
            nics,
        })
    }

    pub(crate) fn key(&self) -> String {
        // Serialising plain data cannot fail.
        let text = serde_json::to_vec(self).unwrap_or_default();
        Sha256::digest(&text)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// The placeholder MAC of a template's NIC `i` (locally administered; the agent replaces it
/// with the interface's MAC, `clearbox_net::apply::claim_template_nics`).
pub fn template_nic_mac(i: usize) -> String {
    clearbox_protocol::mux::template_nic_mac(i)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The major version of a QEMU binary (`--version`).
pub fn qemu_major(qemu: &Path) -> Option<u32> {
    let out = std::process::Command::new(qemu)
        .arg("--version")
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    crate::binaries::parse_qemu_major(&text)
}

/// Lowest QEMU version whose templates work here.
pub const MIN_QEMU_MAJOR: u32 = 10;

/// A directory's cache state for one key.
pub(crate) enum Cached {
    Ready(PathBuf),
    Unsupported(String),
    Missing,
}

/// Whether `dir` holds a whole template (its record is written last, before the rename).
pub(crate) fn is_committed(dir: &Path) -> bool {
    dir.join(META).is_file()
}

pub(crate) fn lookup(opts: &TemplateOptions, key: &str) -> Cached {
    if let Err(e) = private_dir(&opts.dir) {
        return Cached::Unsupported(e.to_string());
    }
    let dir = opts.dir.join(key);
    if dir.join(META).is_file() {
        return Cached::Ready(dir);
    }
    match std::fs::read_to_string(opts.dir.join(format!("{key}.unsupported"))) {
        Ok(why) => Cached::Unsupported(why),
        Err(_) => Cached::Missing,
    }
}

/// Creates `dir` (0700) if missing and checks it is a directory of this user's, not a link,
/// and reachable by no one else: /dev/shm is world-writable, and a directory another user
/// made there first must not receive templates (their memory is the guests').
pub(crate) fn private_dir(dir: &Path) -> Result<()> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(Error::Path {
                op: "create",
                path: dir.to_path_buf(),
                source: e,
            })
        }
    }
    check_private(dir)
}

/// Fails unless `dir` is a directory (not a link) of this user's that no one else can reach.
pub fn check_private(dir: &Path) -> Result<()> {
    let m = std::fs::symlink_metadata(dir).map_err(|e| Error::Path {
        op: "stat",
        path: dir.to_path_buf(),
        source: e,
    })?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if !m.is_dir() || m.uid() != me || m.mode() & 0o077 != 0 {
        return Err(Error::Template(format!(
            "{} is not a private directory of uid {me} (mode 0700); refusing to use it",
            dir.display()
        )));
    }
    Ok(())
}

/// Holds `<key>.lock` (exclusive for a build, shared for a restore) while alive.
pub(crate) struct BuildLock(#[allow(dead_code)] File);

/// A restore's hold on the template in `dir` (key `key`): a shared lock, so that no prune
/// removes it while its files are being opened and copied, and its last use recorded (the
/// directory's mtime, which nothing else changes after the commit) for [`prune_lru`].
/// `None` when the lock cannot be taken: the restore then goes on unprotected, as before.
pub(crate) fn use_template(opts: &TemplateOptions, key: &str, dir: &Path) -> Option<BuildLock> {
    let f = lock_file(opts, key, libc::LOCK_SH).ok()?;
    if let Ok(d) = File::open(dir) {
        let _ = d.set_modified(std::time::SystemTime::now());
    }
    Some(BuildLock(f))
}

pub(crate) fn lock(opts: &TemplateOptions, key: &str) -> Result<BuildLock> {
    private_dir(&opts.dir)?;
    // Blocks while another process builds the same template (seconds).
    Ok(BuildLock(lock_file(opts, key, libc::LOCK_EX)?))
}

/// `<key>.lock`, locked with `op`. A prune removes a template's lock file with it (holding
/// the lock): a process that opened the file before and waited gets its lock on a file no
/// longer named, which protects nothing. So the lock is taken again, on the file the name
/// now holds, until the two are the same.
fn lock_file(opts: &TemplateOptions, key: &str, op: libc::c_int) -> Result<File> {
    let path = opts.dir.join(format!("{key}.lock"));
    loop {
        let f = crate::jail::open_lock_file(&path)?;
        if !crate::jail::flock(&f, op) {
            return Err(Error::Io("lock template", std::io::Error::last_os_error()));
        }
        let held = f.metadata().map(|m| (m.dev(), m.ino())).ok();
        let named = std::fs::symlink_metadata(&path)
            .map(|m| (m.dev(), m.ino()))
            .ok();
        if held.is_some() && held == named {
            return Ok(f);
        }
    }
}

pub(crate) fn mark_unsupported(opts: &TemplateOptions, key: &str, why: &str) {
    let _ = std::fs::write(opts.dir.join(format!("{key}.unsupported")), why);
}

/// A fresh build directory (removed first if a crashed build left it).
pub(crate) fn build_dir(opts: &TemplateOptions, key: &str) -> Result<PathBuf> {
    let dir = opts.dir.join(format!(".build-{key}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| Error::Path {
            op: "create",
            path: dir.clone(),
            source: e,
        })?;
    Ok(dir)
}

/// Finishes a build: files back to root, the inputs recorded, the directory renamed into
/// place (atomic: a reader sees a whole template or none).
pub(crate) fn commit(
    opts: &TemplateOptions,
    key: &str,
    build: &Path,
    inputs: &KeyInputs,
) -> Result<PathBuf> {
    for f in [MEMORY, STATE] {
        let p = build.join(f);
        std::os::unix::fs::lchown(&p, Some(0), Some(0)).map_err(|e| Error::Path {
            op: "chown",
            path: p.clone(),
            source: e,
        })?;
    }
    let meta = serde_json::to_vec_pretty(inputs).unwrap_or_default();
    std::fs::write(build.join(META), meta).map_err(|e| Error::Path {
        op: "write",
        path: build.join(META),
        source: e,
    })?;
    let dir = opts.dir.join(key);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(build, &dir).map_err(|e| Error::Path {
        op: "rename into place",
        path: dir.clone(),
        source: e,
    })?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_inputs() {
        let dir = tempfile::tempdir().unwrap();
        let k = dir.path().join("k");
        std::fs::write(&k, b"kernel").unwrap();
        let key = |mem: u32, nics: usize| {
            KeyInputs::new(
                &k,
                &k,
                &k,
                1,
                mem,
                crate::Accel::Tcg,
                Some(16),
                "console=ttyS0",
                vec!["clearbox".into()],
                nics,
            )
            .unwrap()
            .key()
        };
        assert_eq!(key(256, 1), key(256, 1));
        assert_ne!(key(256, 1), key(512, 1));
        assert_ne!(key(256, 1), key(256, 0));
        let before = key(256, 1);
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&k, b"kernel, rebuilt").unwrap();
        assert_ne!(before, key(256, 1));
        assert_eq!(template_nic_mac(1), "02:cb:7e:00:00:01");
    }

    #[test]
    fn a_lock_whose_file_a_prune_removed_is_taken_again_on_the_new_file() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = TemplateOptions {
            dir: tmp.path().join("t"),
            required: false,
            max: DEFAULT_TEMPLATE_MAX,
        };
        private_dir(&opts.dir).unwrap();
        let held = lock(&opts, "k").unwrap();
        let o = opts.clone();
        let waiter = std::thread::spawn(move || lock(&o, "k").unwrap());
        // The waiter now blocks on the file a prune is about to remove, as a prune does:
        // under the lock.
        std::thread::sleep(std::time::Duration::from_millis(100));
        std::fs::remove_file(opts.dir.join("k.lock")).unwrap();
        drop(held);
        let got = waiter.join().unwrap();
        let named = std::fs::metadata(opts.dir.join("k.lock")).unwrap().ino();
        assert_eq!(got.0.metadata().unwrap().ino(), named);
    }
}
