//! The uid lease: every VM runs its host processes as a uid/gid of its own from the configured
//! range, held as a locked lease file for as long as the VM's owner lives (see the module
//! comment of `jail`), and the lock-file helpers templates use too.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{path_err, JailOptions};
use crate::error::{Error, Result};

/// The uid/gid a VM runs as, recorded so that any later process can find it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JailIds {
    pub uid: u32,
    pub gid: u32,
    /// The lease file (removed at teardown).
    pub lock: PathBuf,
}

/// A leased uid: the lock is held for as long as this value lives (the VM's owner).
#[derive(Debug)]
pub(crate) struct Lease {
    pub ids: JailIds,
    _file: File,
}

impl Lease {
    /// Takes a free uid of the range: a lease file that no one holds locked, and that no live
    /// process runs as (a process left from a crashed VM would share it otherwise).
    pub(crate) fn take(opts: &JailOptions, owner: &Path) -> Result<Lease> {
        opts.validate()?;
        let dir = &opts.lock_dir;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| path_err("create", dir, e))?;
        let in_use = uids_in_use();
        let seed = std::process::id() as u64 ^ u64::from(nanos());
        for i in 0..u64::from(opts.uid_count) {
            let uid = opts.uid_base + ((seed + i) % u64::from(opts.uid_count)) as u32;
            if in_use.contains(&uid) {
                continue;
            }
            let path = dir.join(uid.to_string());
            let file = open_lock_file(&path)?;
            if !flock(&file, libc::LOCK_EX | libc::LOCK_NB) {
                continue;
            }
            // The holder of an earlier lease may have removed the file between our open and
            // our lock: then we locked an orphan and the path is free for someone else.
            let same = match (file.metadata(), std::fs::symlink_metadata(&path)) {
                (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
                _ => false,
            };
            if !same {
                continue;
            }
            let _ = file.set_len(0);
            let _ =
                std::os::unix::fs::FileExt::write_all_at(&file, owner.as_os_str().as_bytes(), 0);
            return Ok(Lease {
                ids: JailIds {
                    uid,
                    gid: uid,
                    lock: path,
                },
                _file: file,
            });
        }
        Err(Error::Jail(format!(
            "no free uid in {}..{} (lock dir {})",
            opts.uid_base,
            u64::from(opts.uid_base) + u64::from(opts.uid_count),
            dir.display()
        )))
    }
}

/// Removes the lease file of `ids` if it still names `owner` (a later VM may have leased the
/// uid again once the first one's processes were gone).
pub(crate) fn release(ids: &JailIds, owner: &Path) {
    match std::fs::read(&ids.lock) {
        Ok(text) if text == owner.as_os_str().as_bytes() => {
            let _ = std::fs::remove_file(&ids.lock);
        }
        _ => {}
    }
}

fn nanos() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}

/// Real, effective, saved and fs uids of every live process.
fn uids_in_use() -> std::collections::HashSet<u32> {
    let mut out = std::collections::HashSet::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        if !e.file_name().as_bytes().iter().all(u8::is_ascii_digit) {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(e.path().join("status")) else {
            continue;
        };
        if let Some(line) = status.lines().find(|l| l.starts_with("Uid:")) {
            out.extend(
                line[4..]
                    .split_whitespace()
                    .filter_map(|u| u.parse::<u32>().ok()),
            );
        }
    }
    out
}

/// Opens (creating it 0600, never through a symlink) a file held with `flock`: a uid lease,
/// a VM template's build lock.
pub(crate) fn open_lock_file(path: &Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| path_err("open", path, e))
}

/// `flock(op)` on `file`; false when it failed (with `LOCK_NB`: another holder).
pub(crate) fn flock(file: &std::fs::File, op: libc::c_int) -> bool {
    // SAFETY: flock on a descriptor `file` owns for the duration of the call.
    unsafe { libc::flock(file.as_raw_fd(), op) == 0 }
}
