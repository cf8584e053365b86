//! Root side of the image store: `meta.json` and the bundle rootfs built from it
//! (see the parent module for the threat model).

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{OFlag, ResolveFlag};
use nix::sys::stat::{Mode, SFlag};

use super::{clean_path, errno_io, open_beneath, Entry, Kind, Meta};
use crate::digest::Hashing;
use crate::error::{Error, Result};

/// Root side: reads and checks `meta.json` of an unpacked image.
pub fn load_meta(path: &Path) -> Result<Meta> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("cannot read", path, e))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::invalid(path.display().to_string(), e.to_string()))
}

/// Root side: builds `dest` (an empty directory) from the store's unpacked `src` rootfs and its
/// metadata, checking every file's digest and applying the image's owners and modes.
pub fn materialize(src: &Path, meta: &Meta, dest: &Path) -> Result<()> {
    let open_dir = |p: &Path| -> Result<OwnedFd> {
        let fd = nix::fcntl::open(
            p,
            OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
            Mode::empty(),
        )
        .map_err(|e| Error::io("cannot open", p, errno_io(e)))?;
        // SAFETY: open returned a new descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    };
    let sfd = open_dir(src)?;
    let dfd = open_dir(dest)?;
    let strict = ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS;
    let bad = |path: &str, reason: String| {
        Error::invalid(format!("unpacked image entry {path:?}"), reason)
    };
    let mut parents: HashMap<String, OwnedFd> = HashMap::new();
    let mut links = Vec::new();
    for (path, e) in &meta.entries {
        if path.is_empty() {
            apply_owner_mode(dfd.as_fd(), None, e)
                .map_err(|err| Error::io("cannot chown", dest, err))?;
            continue;
        }
        let comps = clean_path(Path::new(path)).map_err(|r| bad(path, r))?;
        if comps.join("/") != *path {
            return Err(bad(path, "not a normalised path".into()));
        }
        let (name, pcomps) = comps
            .split_last()
            .ok_or_else(|| bad(path, "empty".into()))?;
        let ppath = pcomps.join("/");
        if !parents.contains_key(&ppath) {
            let fd = open_beneath(
                dfd.as_fd(),
                &ppath,
                OFlag::O_PATH | OFlag::O_DIRECTORY,
                strict,
            )
            .map_err(|err| bad(path, format!("parent: {}", errno_io(err))))?;
            parents.insert(ppath.clone(), fd);
        }
        let pfd = parents
            .get(&ppath)
            .ok_or_else(|| bad(path, "parent missing".into()))?;
        let target_path = dest.join(path);
        let ioerr = |err: Errno| Error::io("cannot create", &target_path, errno_io(err));
        match e.kind {
            Kind::Dir => {
                nix::sys::stat::mkdirat(
                    Some(pfd.as_raw_fd()),
                    name.as_str(),
                    Mode::from_bits_truncate(0o700),
                )
                .map_err(ioerr)?;
                let fd = open_beneath(
                    dfd.as_fd(),
                    path,
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY,
                    strict,
                )
                .map_err(ioerr)?;
                apply_owner_mode(fd.as_fd(), None, e)
                    .map_err(|err| Error::io("cannot chown", &target_path, err))?;
            }
            Kind::File => {
                let want = e
                    .sha256
                    .as_ref()
                    .ok_or_else(|| bad(path, "file without a digest".into()))?;
                let from = open_beneath(
                    sfd.as_fd(),
                    path,
                    OFlag::O_RDONLY | OFlag::O_NOFOLLOW,
                    strict,
                )
                .map_err(|err| Error::io("cannot open", src.join(path), errno_io(err)))?;
                let to = nix::fcntl::openat(
                    Some(pfd.as_raw_fd()),
                    name.as_str(),
                    OFlag::O_WRONLY
                        | OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(ioerr)?;
                let mut from = File::from(from);
                // SAFETY: openat returned a new descriptor that nothing else owns.
                let to = unsafe { File::from_raw_fd(to) };
                let mut w = Hashing::new(to);
                io::copy(&mut from, &mut w)
                    .map_err(|err| Error::io("cannot copy", &target_path, err))?;
                let (to, got) = w.finish();
                if &got != want {
                    return Err(Error::Digest {
                        what: format!("file {path} of the unpacked image"),
                        expected: want.to_string(),
                        actual: got.to_string(),
                    });
                }
                apply_owner_mode(to.as_fd(), None, e)
                    .map_err(|err| Error::io("cannot chown", &target_path, err))?;
            }
            Kind::Symlink => {
                let t = e
                    .target
                    .as_deref()
                    .ok_or_else(|| bad(path, "symlink without a target".into()))?;
                nix::unistd::symlinkat(t, Some(pfd.as_raw_fd()), name.as_str()).map_err(ioerr)?;
                nix::unistd::fchownat(
                    Some(pfd.as_raw_fd()),
                    name.as_str(),
                    Some(nix::unistd::Uid::from_raw(e.uid)),
                    Some(nix::unistd::Gid::from_raw(e.gid)),
                    nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(ioerr)?;
            }
            Kind::Fifo => {
                nix::sys::stat::mknodat(
                    Some(pfd.as_raw_fd()),
                    name.as_str(),
                    SFlag::S_IFIFO,
                    Mode::from_bits_truncate(0o600),
                    0,
                )
                .map_err(ioerr)?;
                nix::unistd::fchownat(
                    Some(pfd.as_raw_fd()),
                    name.as_str(),
                    Some(nix::unistd::Uid::from_raw(e.uid)),
                    Some(nix::unistd::Gid::from_raw(e.gid)),
                    nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(ioerr)?;
                nix::sys::stat::fchmodat(
                    Some(pfd.as_raw_fd()),
                    name.as_str(),
                    Mode::from_bits_truncate(e.mode & 0o777),
                    nix::sys::stat::FchmodatFlags::FollowSymlink,
                )
                .map_err(ioerr)?;
            }
            Kind::Link => links.push((path.clone(), e.clone())),
        }
    }
    // Hard links last: their targets exist by now.
    for (path, e) in links {
        let target = e
            .target
            .as_deref()
            .ok_or_else(|| bad(&path, "hard link without a target".into()))?;
        let split = |p: &str| -> Result<(OwnedFd, String)> {
            let comps = clean_path(Path::new(p)).map_err(|r| bad(&path, r))?;
            let (name, pc) = comps
                .split_last()
                .ok_or_else(|| bad(&path, "empty".into()))?;
            let fd = open_beneath(
                dfd.as_fd(),
                &pc.join("/"),
                OFlag::O_PATH | OFlag::O_DIRECTORY,
                strict,
            )
            .map_err(|err| bad(&path, format!("parent: {}", errno_io(err))))?;
            Ok((fd, name.clone()))
        };
        let (tfd, tname) = split(target)?;
        let (lfd, lname) = split(&path)?;
        let same = meta
            .entries
            .get(target)
            .map(|t| t.kind == Kind::File && t.sha256 == e.sha256)
            .unwrap_or(false);
        if !same {
            return Err(bad(
                &path,
                format!("hard link target {target:?} is not the same file"),
            ));
        }
        nix::unistd::linkat(
            Some(tfd.as_raw_fd()),
            tname.as_str(),
            Some(lfd.as_raw_fd()),
            lname.as_str(),
            nix::fcntl::AtFlags::empty(),
        )
        .map_err(|err| Error::io("cannot link", dest.join(&path), errno_io(err)))?;
    }
    Ok(())
}

/// chown then chmod (chown clears set-id bits, so the mode goes last).
fn apply_owner_mode(fd: BorrowedFd<'_>, _name: Option<&str>, e: &Entry) -> io::Result<()> {
    nix::unistd::fchown(
        fd.as_raw_fd(),
        Some(nix::unistd::Uid::from_raw(e.uid)),
        Some(nix::unistd::Gid::from_raw(e.gid)),
    )
    .map_err(errno_io)?;
    nix::sys::stat::fchmod(fd.as_raw_fd(), Mode::from_bits_truncate(e.mode & 0o7777))
        .map_err(errno_io)
}
