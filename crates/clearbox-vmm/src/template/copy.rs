//! The sparse copy of a template's memory file into a restored VM's run directory.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

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

    /// Where the copy goes.
    pub(crate) fn dst(&self) -> &Path {
        &self.dst
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
    use std::os::unix::fs::MetadataExt;

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
}
