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
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

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
    let f = crate::jail::open_lock_file(&opts.dir.join(format!("{key}.lock"))).ok()?;
    if !crate::jail::flock(&f, libc::LOCK_SH) {
        return None;
    }
    if let Ok(d) = File::open(dir) {
        let _ = d.set_modified(std::time::SystemTime::now());
    }
    Some(BuildLock(f))
}

pub(crate) fn lock(opts: &TemplateOptions, key: &str) -> Result<BuildLock> {
    private_dir(&opts.dir)?;
    let f = crate::jail::open_lock_file(&opts.dir.join(format!("{key}.lock")))?;
    // Blocks while another process builds the same template (seconds).
    if !crate::jail::flock(&f, libc::LOCK_EX) {
        return Err(Error::Io("lock template", std::io::Error::last_os_error()));
    }
    Ok(BuildLock(f))
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

/// Whether the template recorded in `meta` (its `template.json`) can never be looked up
/// again: an older format, or a QEMU, kernel or initramfs that changed or is gone since.
fn is_stale(meta: &serde_json::Value) -> bool {
    if meta.get("format").and_then(serde_json::Value::as_u64) != Some(u64::from(FORMAT)) {
        return true;
    }
    ["qemu", "kernel", "initrd"].iter().any(|k| {
        let Some(rec) = meta.get(*k) else {
            return true;
        };
        let Some(path) = rec.get("path").and_then(serde_json::Value::as_str) else {
            return true;
        };
        match file_id(Path::new(path)).map(serde_json::to_value) {
            Ok(Ok(now)) => &now != rec,
            _ => true,
        }
    })
}

/// Removes the templates in `opts.dir` other than `keep` whose inputs changed (a rebuilt
/// kernel or initramfs, an upgraded QEMU): their keys are never computed again, and each
/// holds its guest's memory on tmpfs. A template being built (its lock held) is skipped;
/// a restore that already found a stale one keeps its open file. Returns how many went.
pub(crate) fn prune_stale(opts: &TemplateOptions, keep: &str) -> usize {
    let Ok(entries) = std::fs::read_dir(&opts.dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(key) = name.to_str() else { continue };
        if key == keep || key.starts_with('.') || !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let stale = std::fs::read(e.path().join(META))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|m| is_stale(&m));
        if !stale {
            continue;
        }
        if remove_unused(opts, key, &e.path()) {
            removed += 1;
            tracing::info!(template = %e.path().display(), "removed a stale VM template");
        }
    }
    removed
}

/// Removes the template `key` at `path` with its lock file and any unsupported marker,
/// unless its lock is held (a build in progress, or a restore copying from it right now).
/// True when it went.
fn remove_unused(opts: &TemplateOptions, key: &str, path: &Path) -> bool {
    let lock = opts.dir.join(format!("{key}.lock"));
    let Ok(f) = crate::jail::open_lock_file(&lock) else {
        return false;
    };
    if !crate::jail::flock(&f, libc::LOCK_EX | libc::LOCK_NB)
        || std::fs::remove_dir_all(path).is_err()
    {
        return false;
    }
    let _ = std::fs::remove_file(&lock);
    let _ = std::fs::remove_file(opts.dir.join(format!("{key}.unsupported")));
    true
}

/// Removes the least recently used templates in `opts.dir` (by the directory's mtime, see
/// [`use_template`]) until at most `opts.max` are left, never `keep` nor one whose lock is
/// held (being built, or restored from right now). Returns how many went.
pub(crate) fn prune_lru(opts: &TemplateOptions, keep: &str) -> usize {
    let Ok(entries) = std::fs::read_dir(&opts.dir) else {
        return 0;
    };
    let mut ready: Vec<(std::time::SystemTime, String, PathBuf)> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| {
            let key = e.file_name().to_str()?.to_string();
            if key.starts_with('.') || !e.path().join(META).is_file() {
                return None;
            }
            let used = e.metadata().and_then(|m| m.modified()).ok()?;
            Some((used, key, e.path()))
        })
        .collect();
    ready.sort();
    let excess = ready.len().saturating_sub(opts.max.max(1));
    let mut removed = 0;
    for (_, key, path) in ready {
        if removed == excess {
            break;
        }
        if key != keep && remove_unused(opts, &key, &path) {
            removed += 1;
            tracing::info!(template = %path.display(), max = opts.max, "removed the least recently used VM template");
        }
    }
    removed
}

/// Copies `src` to a new file `dst` (0600), skipping holes: a template's memory file is as
/// large as the guest's RAM but holds only the pages the guest touched.
pub(crate) fn copy_sparse(src: &Path, dst: &Path) -> Result<()> {
    let (s, d, len) = open_sparse_copy(src, dst)?;
    copy_data(&s, &d, len, src, dst)
}

/// A [`copy_sparse`] in two steps: [`PendingCopy::prepare`] creates `dst` with its full size
/// (all holes), [`PendingCopy::finish`] copies the data. A restore starts QEMU in between: QEMU
/// maps the file at start-up but touches no guest RAM before `migrate-incoming`, and page-cache
/// writes show in its shared mapping, so QEMU's start-up (its own process) and the copy overlap
/// without a second thread here (the VM shim must stay single-threaded to drop its privileges).
pub(crate) struct PendingCopy {
    s: File,
    d: File,
    len: u64,
    src: PathBuf,
    dst: PathBuf,
}

impl PendingCopy {
    pub(crate) fn prepare(src: &Path, dst: &Path) -> Result<PendingCopy> {
        let (s, d, len) = open_sparse_copy(src, dst)?;
        Ok(PendingCopy {
            s,
            d,
            len,
            src: src.to_path_buf(),
            dst: dst.to_path_buf(),
        })
    }

    /// Copies every data extent into `dst`.
    pub(crate) fn finish(self) -> Result<()> {
        copy_data(&self.s, &self.d, self.len, &self.src, &self.dst)
    }
}

fn path_err(op: &'static str, path: &Path) -> impl Fn(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |e: std::io::Error| Error::Path {
        op,
        path: path.clone(),
        source: e,
    }
}

/// Opens `src` and creates `dst` (0600) with `src`'s size, all holes.
fn open_sparse_copy(src: &Path, dst: &Path) -> Result<(File, File, u64)> {
    let s = File::open(src).map_err(path_err("open", src))?;
    let len = s.metadata().map_err(path_err("stat", src))?.len();
    let d = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(dst)
        .map_err(path_err("create", dst))?;
    d.set_len(len).map_err(path_err("size", dst))?;
    Ok((s, d, len))
}

/// Copies the data extents of `s` (`len` bytes) to the same offsets of `d`.
fn copy_data(s: &File, d: &File, len: u64, src: &Path, dst: &Path) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 1 << 20];
    let mut off: i64 = 0;
    let end = i64::try_from(len).unwrap_or(i64::MAX);
    while off < end {
        // SAFETY: lseek on a descriptor we own.
        let data = unsafe { libc::lseek(s.as_raw_fd(), off, libc::SEEK_DATA) };
        if data < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                break; // only a hole left
            }
            return Err(path_err("seek", src)(e));
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(s.as_raw_fd(), data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(path_err("seek", src)(std::io::Error::last_os_error()));
        }
        let mut at = data;
        while at < hole {
            let want = usize::try_from(hole - at)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            let n = s
                .read_at(&mut buf[..want], at as u64)
                .map_err(path_err("read", src))?;
            if n == 0 {
                break;
            }
            d.write_all_at(&buf[..n], at as u64)
                .map_err(path_err("write", dst))?;
            at += n as i64;
        }
        off = hole;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 64 MiB file in `dir` with data at its head, in its middle and at its tail, holes
    /// between.
    fn sparse_source(dir: &Path) -> PathBuf {
        let src = dir.join("src");
        let f = File::create(&src).unwrap();
        f.set_len(64 << 20).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(b"head", 0).unwrap();
        f.write_all_at(&vec![7u8; 3 << 20], 20 << 20).unwrap();
        f.write_all_at(b"tail", (64 << 20) - 4).unwrap();
        src
    }

    #[test]
    fn sparse_copy_keeps_data_and_holes() {
        let dir = tempfile::tempdir().unwrap();
        let src = sparse_source(dir.path());
        let dst = dir.path().join("dst");
        copy_sparse(&src, &dst).unwrap();
        assert_eq!(std::fs::read(&src).unwrap(), std::fs::read(&dst).unwrap());
        let m = std::fs::metadata(&dst).unwrap();
        assert!(
            m.blocks() * 512 < 16 << 20,
            "holes kept: {} blocks",
            m.blocks()
        );
        // Exists already: refused.
        assert!(copy_sparse(&src, &dst).is_err());
    }

    #[test]
    fn a_pending_copy_is_sized_at_once_and_whole_when_finished() {
        let dir = tempfile::tempdir().unwrap();
        let src = sparse_source(dir.path());
        let dst = dir.path().join("dst");
        let copy = PendingCopy::prepare(&src, &dst).unwrap();
        // Full size before any data: QEMU can map it now.
        assert_eq!(std::fs::metadata(&dst).unwrap().len(), 64 << 20);
        assert!(std::fs::metadata(&dst).unwrap().blocks() == 0);
        copy.finish().unwrap();
        assert_eq!(std::fs::read(&src).unwrap(), std::fs::read(&dst).unwrap());
        assert!(PendingCopy::prepare(&src, &dst).is_err());
    }

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
    fn stale_templates_are_pruned_fresh_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let k = dir.path().join("k");
        std::fs::write(&k, b"kernel").unwrap();
        let opts = TemplateOptions {
            dir: dir.path().join("t"),
            required: false,
            max: DEFAULT_TEMPLATE_MAX,
        };
        private_dir(&opts.dir).unwrap();
        let inputs = |mem: u32| {
            KeyInputs::new(&k, &k, &k, 1, mem, crate::Accel::Tcg, None, "", vec![], 0).unwrap()
        };
        let make = |i: &KeyInputs| {
            let key = i.key();
            let b = build_dir(&opts, &key).unwrap();
            for f in [MEMORY, STATE] {
                File::create(b.join(f)).unwrap();
            }
            drop(lock(&opts, &key).unwrap());
            commit(&opts, &key, &b, i).unwrap();
            key
        };
        let a = make(&inputs(256));
        let b = make(&inputs(512));
        // Same files: another VM size stays.
        assert_eq!(prune_stale(&opts, &b), 0);
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&k, b"kernel, rebuilt").unwrap();
        let c = make(&inputs(256));
        // A held lock (a build in progress) is skipped.
        let held = lock(&opts, &a).unwrap();
        assert_eq!(prune_stale(&opts, &c), 1);
        assert!(opts.dir.join(&a).is_dir() && !opts.dir.join(&b).exists());
        drop(held);
        assert_eq!(prune_stale(&opts, &c), 1);
        assert!(!opts.dir.join(&a).exists() && !opts.dir.join(format!("{a}.lock")).exists());
        assert!(matches!(lookup(&opts, &c), Cached::Ready(_)));
    }

    #[test]
    fn beyond_max_the_least_recently_used_templates_go() {
        let dir = tempfile::tempdir().unwrap();
        let k = dir.path().join("k");
        std::fs::write(&k, b"kernel").unwrap();
        let opts = TemplateOptions {
            dir: dir.path().join("t"),
            required: false,
            max: 2,
        };
        private_dir(&opts.dir).unwrap();
        let make = |mem: u32| {
            let i =
                KeyInputs::new(&k, &k, &k, 1, mem, crate::Accel::Tcg, None, "", vec![], 0).unwrap();
            let key = i.key();
            let b = build_dir(&opts, &key).unwrap();
            for f in [MEMORY, STATE] {
                File::create(b.join(f)).unwrap();
            }
            commit(&opts, &key, &b, &i).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
            key
        };
        let (a, b, c) = (make(256), make(512), make(768));
        // `a` is used again: `b` is now the least recently used.
        drop(use_template(&opts, &a, &opts.dir.join(&a)));
        assert_eq!(prune_lru(&opts, &c), 1);
        assert!(opts.dir.join(&a).is_dir() && opts.dir.join(&c).is_dir());
        assert!(!opts.dir.join(&b).exists() && !opts.dir.join(format!("{b}.lock")).exists());
        // At the bound: nothing goes.
        assert_eq!(prune_lru(&opts, &c), 0);
        // A template being restored from (its lock held shared) is skipped, and `keep` too.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let d = make(1024);
        let held = use_template(&opts, &c, &opts.dir.join(&c)).unwrap();
        let opts1 = TemplateOptions {
            max: 1,
            ..opts.clone()
        };
        assert_eq!(prune_lru(&opts1, &d), 1);
        assert!(!opts.dir.join(&a).exists() && opts.dir.join(&c).is_dir());
        drop(held);
        assert_eq!(prune_lru(&opts1, &d), 1);
        assert!(!opts.dir.join(&c).exists() && opts.dir.join(&d).is_dir());
    }
}
