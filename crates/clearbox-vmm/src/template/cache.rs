//! The template cache's upkeep: stale templates (inputs changed) and the least recently used
//! beyond `[vm] template_max` are removed, never one being built or restored from.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::{file_id, TemplateOptions, FORMAT, META};
use crate::error::Result;

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

/// What one entry of the template cache is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheState {
    /// Restored from by the VMs of its key.
    Ready,
    /// Its QEMU, kernel or initramfs changed (or its format is older): never used again.
    Stale,
    /// This key's VMs boot cold; `detail` says why (checked once, remembered here).
    Unsupported,
    /// Being built right now.
    Building,
    /// What a build that died left: its guest memory, never used.
    Partial,
}

impl CacheState {
    /// The states [`prune`] removes without `all`: what no VM can use.
    fn unusable(self) -> bool {
        matches!(self, Self::Stale | Self::Unsupported | Self::Partial)
    }
}

/// One entry of the template cache (`clearbox template list`).
#[derive(Clone, Debug, Serialize)]
pub struct CachedTemplate {
    /// Its key: the hash of its inputs, the directory's name.
    pub key: String,
    pub state: CacheState,
    pub path: PathBuf,
    /// Memory it holds (its files' blocks: the cache is on tmpfs, so this is RAM).
    pub bytes: u64,
    pub vcpus: Option<u64>,
    pub memory_mib: Option<u64>,
    pub nics: Option<u64>,
    /// Last build or restore, seconds since the Unix epoch.
    pub last_used: Option<u64>,
    /// The same, exact: what the least recently used order goes by.
    #[serde(skip)]
    used: Option<SystemTime>,
    /// Why an unsupported key boots cold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Blocks of the files directly in `dir` (a template: memory, state, template.json), bytes.
fn bytes_in(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.blocks() * 512)
        .sum()
}

fn epoch_secs(t: Option<SystemTime>) -> Option<u64> {
    t?.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

/// Whether `key`'s lock is held (a build, or a restore copying the template right now).
/// Only tested where the lock file exists: listing creates nothing.
fn lock_held(dir: &Path, key: &str) -> bool {
    let lock = dir.join(format!("{key}.lock"));
    if !lock.exists() {
        return false;
    }
    match crate::jail::open_lock_file(&lock) {
        Ok(f) => !crate::jail::flock(&f, libc::LOCK_EX | libc::LOCK_NB),
        Err(_) => false,
    }
}

/// A template's `template.json`: not through a link, at most 64 KiB (the cache is root's;
/// this is the guard should anything else get written there).
fn read_meta(dir: &Path) -> Option<serde_json::Value> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(dir.join(META))
        .ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let mut b = Vec::new();
    f.take(64 << 10).read_to_end(&mut b).ok()?;
    serde_json::from_slice(&b).ok()
}

/// Every entry of the template cache in `dir`, oldest use first. A missing or unreadable
/// directory, or one that is not private to this user (see `private_dir`), is an empty
/// cache.
pub fn list(dir: &Path) -> Vec<CachedTemplate> {
    if super::check_private(dir).is_err() {
        return Vec::new();
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let Some(name) = e.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let Ok(ft) = e.file_type() else { continue };
        let used = e.metadata().and_then(|m| m.modified()).ok();
        let entry = |key: &str, state, detail| CachedTemplate {
            key: key.to_string(),
            state,
            path: e.path(),
            bytes: if ft.is_dir() {
                bytes_in(&e.path())
            } else {
                e.metadata().map(|m| m.blocks() * 512).unwrap_or(0)
            },
            vcpus: None,
            memory_mib: None,
            nics: None,
            last_used: epoch_secs(used),
            used,
            detail,
        };
        if let Some(key) = name.strip_prefix(".build-").filter(|_| ft.is_dir()) {
            let state = if lock_held(dir, key) {
                CacheState::Building
            } else {
                CacheState::Partial
            };
            out.push(entry(key, state, None));
        } else if let Some(key) = name.strip_suffix(".unsupported").filter(|_| ft.is_file()) {
            let why = std::fs::read_to_string(e.path()).ok();
            out.push(entry(key, CacheState::Unsupported, why));
        } else if ft.is_dir() && !name.starts_with('.') {
            let Some(meta) = read_meta(&e.path()) else {
                // No record: not a template of ours (or one being renamed into place).
                continue;
            };
            let state = if is_stale(&meta) {
                CacheState::Stale
            } else {
                CacheState::Ready
            };
            let num = |k: &str| meta.get(k).and_then(serde_json::Value::as_u64);
            out.push(CachedTemplate {
                vcpus: num("vcpus"),
                memory_mib: num("memory_mib"),
                nics: num("nics"),
                ..entry(&name, state, None)
            });
        }
    }
    out.sort_by(|a, b| (a.used, &a.key).cmp(&(b.used, &b.key)));
    out
}

/// Removes one cache entry (a template, a leftover build directory, an unsupported marker)
/// under its key's lock, unless that lock is held (a build, or a restore copying from it
/// right now). A template takes its unsupported marker with it; the key's lock file goes
/// when neither a template nor a build directory of the key is left. True when it went.
fn remove(opts: &TemplateOptions, t: &CachedTemplate) -> bool {
    if t.state == CacheState::Building {
        return false;
    }
    let lock = opts.dir.join(format!("{}.lock", t.key));
    let Ok(f) = crate::jail::open_lock_file(&lock) else {
        return false;
    };
    if !crate::jail::flock(&f, libc::LOCK_EX | libc::LOCK_NB) {
        return false;
    }
    let gone = match t.state {
        CacheState::Unsupported => std::fs::remove_file(&t.path),
        _ => std::fs::remove_dir_all(&t.path),
    };
    if gone.is_err() {
        return false;
    }
    if matches!(t.state, CacheState::Ready | CacheState::Stale) {
        let _ = std::fs::remove_file(opts.dir.join(format!("{}.unsupported", t.key)));
    }
    let build = opts.dir.join(format!(".build-{}", t.key));
    if !opts.dir.join(&t.key).exists() && !build.exists() {
        let _ = std::fs::remove_file(&lock);
    }
    true
}

/// Removes the lock files of keys with nothing else in the cache (a build that failed before
/// it made its directory, a key looked up while the host could not build), each under its own
/// lock, so that a build or restore waiting on one takes it again on a new file (see `lock`).
/// Returns how many went.
fn remove_orphan_locks(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(key) = name.to_str().and_then(|n| n.strip_suffix(".lock")) else {
            continue;
        };
        let orphan = || {
            [
                key.to_string(),
                format!(".build-{key}"),
                format!("{key}.unsupported"),
            ]
            .iter()
            .all(|n| std::fs::symlink_metadata(dir.join(n)).is_err())
        };
        if key.is_empty() || !e.file_type().is_ok_and(|t| t.is_file()) || !orphan() {
            continue;
        }
        let Ok(f) = crate::jail::open_lock_file(&e.path()) else {
            continue;
        };
        // Checked again under the lock: a build may have begun meanwhile.
        if crate::jail::flock(&f, libc::LOCK_EX | libc::LOCK_NB)
            && orphan()
            && std::fs::remove_file(e.path()).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

/// What [`prune`] did.
#[derive(Debug, Default, Serialize)]
pub struct Pruned {
    pub removed: Vec<CachedTemplate>,
    /// Entries it would have removed but that were in use (being built or copied from).
    pub busy: Vec<CachedTemplate>,
}

/// `clearbox template prune`: removes what no VM can use (stale templates, leftovers of
/// builds that died, unsupported markers: each is checked again on the next use) or, with
/// `all`, every template not in use right now. VMs already restored keep running: each has
/// its own copy of the memory.
/// A cache directory that is not private to this user (another user could have planted
/// what it holds) is refused; a missing one is empty.
pub fn prune(opts: &TemplateOptions, all: bool) -> Result<Pruned> {
    let mut out = Pruned::default();
    if !opts.dir.exists() {
        return Ok(out);
    }
    super::check_private(&opts.dir)?;
    for t in list(&opts.dir) {
        if !all && !t.state.unusable() {
            continue;
        }
        if remove(opts, &t) {
            out.removed.push(t);
        } else {
            out.busy.push(t);
        }
    }
    remove_orphan_locks(&opts.dir);
    Ok(out)
}

/// Removes the templates in `opts.dir` other than `keep` whose inputs changed (a rebuilt
/// kernel or initramfs, an upgraded QEMU): their keys are never computed again, and each
/// holds its guest's memory on tmpfs; and what builds that died left (their memory too). A
/// template being built or restored from (its lock held) is skipped; a restore that already
/// found a stale one keeps its open file. Returns how many went.
pub(crate) fn prune_stale(opts: &TemplateOptions, keep: &str) -> usize {
    let mut removed = 0;
    for t in list(&opts.dir) {
        if t.key == keep || !matches!(t.state, CacheState::Stale | CacheState::Partial) {
            continue;
        }
        if remove(opts, &t) {
            removed += 1;
            tracing::info!(template = %t.path.display(), state = ?t.state, "removed an unusable VM template");
        }
    }
    remove_orphan_locks(&opts.dir);
    removed
}

/// Removes the least recently used templates in `opts.dir` (by the directory's mtime, see
/// [`use_template`]) until at most `opts.max` are left, never `keep` nor one whose lock is
/// held (being built, or restored from right now). Returns how many went.
pub(crate) fn prune_lru(opts: &TemplateOptions, keep: &str) -> usize {
    let templates: Vec<CachedTemplate> = list(&opts.dir)
        .into_iter()
        .filter(|t| matches!(t.state, CacheState::Ready | CacheState::Stale))
        .collect();
    let excess = templates.len().saturating_sub(opts.max.max(1));
    let mut removed = 0;
    for t in templates {
        if removed == excess {
            break;
        }
        if t.key != keep && remove(opts, &t) {
            removed += 1;
            tracing::info!(template = %t.path.display(), max = opts.max, "removed the least recently used VM template");
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use super::*;
    use std::fs::File;

    /// A private template cache in a temporary directory, and one file standing for QEMU,
    /// the kernel and the initramfs (rewriting it makes every template of it stale).
    struct Fixture {
        _tmp: tempfile::TempDir,
        k: PathBuf,
        opts: TemplateOptions,
    }

    impl Fixture {
        fn new(max: usize) -> Self {
            let tmp = tempfile::tempdir().unwrap();
            let k = tmp.path().join("k");
            std::fs::write(&k, b"kernel").unwrap();
            let opts = TemplateOptions {
                dir: tmp.path().join("t"),
                required: false,
                max,
            };
            private_dir(&opts.dir).unwrap();
            Fixture { _tmp: tmp, k, opts }
        }

        fn inputs(&self, vcpus: u32, mem: u32, nics: usize) -> KeyInputs {
            let k = &self.k;
            KeyInputs::new(
                k,
                k,
                k,
                vcpus,
                mem,
                crate::Accel::Tcg,
                None,
                "",
                vec![],
                nics,
            )
            .unwrap()
        }

        /// Builds and commits the template of `i` (its memory file `memory` bytes) as a
        /// build does, under the key's lock; returns its key.
        fn make(&self, i: &KeyInputs, memory: usize) -> String {
            let key = i.key();
            let b = build_dir(&self.opts, &key).unwrap();
            std::fs::write(b.join(MEMORY), vec![1u8; memory]).unwrap();
            File::create(b.join(STATE)).unwrap();
            drop(lock(&self.opts, &key).unwrap());
            commit(&self.opts, &key, &b, i).unwrap();
            key
        }
    }

    #[test]
    fn stale_templates_are_pruned_fresh_ones_kept() {
        let f = Fixture::new(DEFAULT_TEMPLATE_MAX);
        let opts = &f.opts;
        let make = |mem: u32| f.make(&f.inputs(1, mem, 0), 0);
        let a = make(256);
        let b = make(512);
        // Same files: another VM size stays.
        assert_eq!(prune_stale(opts, &b), 0);
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&f.k, b"kernel, rebuilt").unwrap();
        let c = make(256);
        // A held lock (a build in progress) is skipped.
        let held = lock(opts, &a).unwrap();
        assert_eq!(prune_stale(opts, &c), 1);
        assert!(opts.dir.join(&a).is_dir() && !opts.dir.join(&b).exists());
        drop(held);
        assert_eq!(prune_stale(opts, &c), 1);
        assert!(!opts.dir.join(&a).exists() && !opts.dir.join(format!("{a}.lock")).exists());
        assert!(matches!(lookup(opts, &c), Cached::Ready(_)));
    }

    #[test]
    fn beyond_max_the_least_recently_used_templates_go() {
        let f = Fixture::new(2);
        let opts = &f.opts;
        let make = |mem: u32| {
            let key = f.make(&f.inputs(1, mem, 0), 0);
            std::thread::sleep(std::time::Duration::from_millis(20));
            key
        };
        let (a, b, c) = (make(256), make(512), make(768));
        // `a` is used again: `b` is now the least recently used.
        drop(use_template(opts, &a, &opts.dir.join(&a)));
        assert_eq!(prune_lru(opts, &c), 1);
        assert!(opts.dir.join(&a).is_dir() && opts.dir.join(&c).is_dir());
        assert!(!opts.dir.join(&b).exists() && !opts.dir.join(format!("{b}.lock")).exists());
        // At the bound: nothing goes.
        assert_eq!(prune_lru(opts, &c), 0);
        // A template being restored from (its lock held shared) is skipped, and `keep` too.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let d = make(1024);
        let held = use_template(opts, &c, &opts.dir.join(&c)).unwrap();
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

    #[test]
    fn list_and_prune_show_and_remove_what_no_vm_can_use() {
        let f = Fixture::new(DEFAULT_TEMPLATE_MAX);
        let opts = &f.opts;
        let make = |mem: u32| f.make(&f.inputs(2, mem, 1), 64 << 10);
        let old = make(256);
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&f.k, b"kernel, rebuilt").unwrap();
        let fresh = make(256);
        // A build that died (its lock free) and one going on (its lock held).
        let dead = build_dir(opts, "deadbeef").unwrap();
        std::fs::write(dead.join(MEMORY), vec![1u8; 8 << 10]).unwrap();
        let going = build_dir(opts, "cafe").unwrap();
        let building = lock(opts, "cafe").unwrap();
        drop(lock(opts, "f00d").unwrap());
        mark_unsupported(opts, "f00d", "QEMU 7 cannot migrate vhost-user-fs");
        let l = list(&opts.dir);
        let state = |key: &str| l.iter().find(|t| t.key == key).map(|t| t.state);
        assert_eq!(l.len(), 5, "{l:?}");
        assert_eq!(state(&old), Some(CacheState::Stale));
        assert_eq!(state(&fresh), Some(CacheState::Ready));
        assert_eq!(state("deadbeef"), Some(CacheState::Partial));
        assert_eq!(state("cafe"), Some(CacheState::Building));
        assert_eq!(state("f00d"), Some(CacheState::Unsupported));
        let f = l.iter().find(|t| t.key == fresh).unwrap();
        assert_eq!(
            (f.vcpus, f.memory_mib, f.nics),
            (Some(2), Some(256), Some(1))
        );
        assert!(f.bytes >= 64 << 10 && f.last_used.is_some(), "{f:?}");
        // Without `all`: what no VM can use, never a build going on or a usable template.
        let p = prune(opts, false).unwrap();
        let mut gone: Vec<_> = p.removed.iter().map(|t| t.key.clone()).collect();
        gone.sort();
        let mut want = vec![old.clone(), "deadbeef".to_string(), "f00d".to_string()];
        want.sort();
        assert_eq!(gone, want);
        assert!(p.busy.is_empty());
        assert!(!dead.exists() && !opts.dir.join("deadbeef.lock").exists());
        assert!(
            !opts.dir.join("f00d.lock").exists(),
            "the marker's lock file was left"
        );
        assert!(going.is_dir() && opts.dir.join(&fresh).is_dir());
        // With `all`: every template not in use; the build going on is reported busy.
        let p = prune(opts, true).unwrap();
        assert_eq!(p.removed.len(), 1);
        assert_eq!(p.busy.len(), 1);
        assert!(!opts.dir.join(&fresh).exists() && going.is_dir());
        drop(building);
        // Lock files of keys with nothing else: a free one goes, a held one stays.
        drop(lock(opts, "0rphan").unwrap());
        let held = lock(opts, "1n-use").unwrap();
        assert_eq!(prune(opts, true).unwrap().removed.len(), 1);
        assert!(list(&opts.dir).is_empty());
        assert!(
            !opts.dir.join("0rphan.lock").exists(),
            "an orphan lock file was left"
        );
        assert!(
            opts.dir.join("1n-use.lock").exists(),
            "a held lock file was removed"
        );
        drop(held);
        prune(opts, false).unwrap();
        let left: Vec<_> = std::fs::read_dir(&opts.dir).unwrap().flatten().collect();
        assert!(left.is_empty(), "{left:?}");
        // Not private to this user: refused, nothing touched.
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir(opts.dir.join("x")).unwrap();
        std::fs::write(opts.dir.join("x").join(META), b"{}").unwrap();
        std::fs::set_permissions(&opts.dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(prune(opts, true).is_err());
        assert!(opts.dir.join("x").is_dir());
    }
}
