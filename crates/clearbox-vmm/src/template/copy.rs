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

/// The next data extent of `f` at or after `off`, as `(start, end)`; `None` when only a hole
/// is left.
fn next_extent(f: &File, off: i64, path: &Path) -> Result<Option<(i64, i64)>> {
    // SAFETY: lseek on a descriptor we own (no memory is passed).
    let data = unsafe { libc::lseek(f.as_raw_fd(), off, libc::SEEK_DATA) };
    if data < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENXIO) {
            return Ok(None); // only a hole left
        }
        return Err(path_err("seek", path)(e));
    }
    // SAFETY: as above.
    let hole = unsafe { libc::lseek(f.as_raw_fd(), data, libc::SEEK_HOLE) };
    if hole < 0 {
        return Err(path_err("seek", path)(std::io::Error::last_os_error()));
    }
    Ok(Some((data, hole)))
}

/// Reads every data extent of `f` (`len` bytes) in chunks of at most 1 MiB and hands each to
/// `each` with its offset in the file.
fn each_data_chunk(
    f: &File,
    len: u64,
    path: &Path,
    mut each: impl FnMut(i64, &[u8]) -> Result<()>,
) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 1 << 20];
    let mut off: i64 = 0;
    let end = i64::try_from(len).unwrap_or(i64::MAX);
    while off < end {
        let Some((data, hole)) = next_extent(f, off, path)? else {
            break;
        };
        let mut at = data;
        while at < hole {
            let want = usize::try_from(hole - at)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            let n = f
                .read_at(&mut buf[..want], at as u64)
                .map_err(path_err("read", path))?;
            if n == 0 {
                break;
            }
            each(at, &buf[..n])?;
            at += n as i64;
        }
        off = hole;
    }
    Ok(())
}

/// Copies the data extents of `s` (`len` bytes) to the same offsets of `d`.
fn copy_data(s: &File, d: &File, len: u64, src: &Path, dst: &Path) -> Result<()> {
    use std::os::unix::fs::FileExt;
    each_data_chunk(s, len, src, |at, bytes| {
        d.write_all_at(bytes, at as u64)
            .map_err(path_err("write", dst))
    })
}

/// The page size of guest memory the punch works in.
const PAGE: usize = 4096;

/// Turns every page of zeros in `path` into a hole and returns how many bytes that freed. A
/// template's memory file is copied into every VM restored from it, holes left out; a hole
/// reads as zeros, so the guest sees the same memory, and a restored VM holds only the pages
/// that carry data (the guest kernel's free boot memory is zeroed for this: guest kernel
/// patch 0005).
pub(crate) fn punch_zero_pages(path: &Path) -> Result<u64> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(path_err("open", path))?;
    let len = f.metadata().map_err(path_err("stat", path))?.len();
    let mut punched = 0u64;
    // The run of zero pages being collected, punched once data (or the end) ends it. Extents
    // are separated by holes, so a run never spans two.
    let mut run: Option<(i64, i64)> = None;
    each_data_chunk(&f, len, path, |at, bytes| {
        for (i, page) in bytes.chunks(PAGE).enumerate() {
            let p = at + (i * PAGE) as i64;
            // Only whole, page-aligned pages: a partial one at the file's end stays.
            let whole = page.len() == PAGE && p % PAGE as i64 == 0;
            if whole && page.iter().all(|b| *b == 0) {
                match &mut run {
                    Some((_, e)) if *e == p => *e = p + PAGE as i64,
                    _ => {
                        punch(&f, run.take(), path, &mut punched)?;
                        run = Some((p, p + PAGE as i64));
                    }
                }
            } else {
                punch(&f, run.take(), path, &mut punched)?;
            }
        }
        Ok(())
    })?;
    punch(&f, run, path, &mut punched)?;
    Ok(punched)
}

/// Punches the range `run` (if any) out of `f`, adding its length to `punched`.
fn punch(f: &File, run: Option<(i64, i64)>, path: &Path, punched: &mut u64) -> Result<()> {
    let Some((a, b)) = run else {
        return Ok(());
    };
    nix::fcntl::fallocate(
        f.as_raw_fd(),
        nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE
            | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
        a,
        b - a,
    )
    .map_err(|e| path_err("punch a hole in", path)(e.into()))?;
    *punched += (b - a) as u64;
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
    fn zero_pages_become_holes_and_the_content_stays() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("mem");
        let f = File::create(&p).unwrap();
        f.set_len(16 << 20).unwrap();
        use std::os::unix::fs::FileExt;
        // Data, then 64 pages of zeros written out (allocated), then data with one zero byte
        // at a page's start, then a lone zero page between data pages, then a partial tail.
        f.write_all_at(&[1u8; PAGE], 0).unwrap();
        f.write_all_at(&vec![0u8; 64 * PAGE], PAGE as u64).unwrap();
        let mut odd = vec![9u8; PAGE];
        odd[0] = 0;
        f.write_all_at(&odd, 65 * PAGE as u64).unwrap();
        f.write_all_at(&[0u8; PAGE], 66 * PAGE as u64).unwrap();
        f.write_all_at(&[2u8; PAGE], 67 * PAGE as u64).unwrap();
        f.sync_all().unwrap();
        let before = std::fs::read(&p).unwrap();
        let blocks = std::fs::metadata(&p).unwrap().blocks();
        let freed = punch_zero_pages(&p).unwrap();
        assert_eq!(freed, 65 * PAGE as u64, "the 64-page run and the lone page");
        assert_eq!(std::fs::read(&p).unwrap(), before, "same bytes");
        let after = std::fs::metadata(&p).unwrap().blocks();
        assert!(after < blocks, "blocks {blocks} -> {after}");
        // Nothing left to punch.
        assert_eq!(punch_zero_pages(&p).unwrap(), 0);
        // A copy skips the holes too.
        let dst = dir.path().join("copy");
        copy_sparse(&p, &dst).unwrap();
        assert_eq!(std::fs::read(&dst).unwrap(), before);
        assert_eq!(std::fs::metadata(&dst).unwrap().blocks(), after);
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
