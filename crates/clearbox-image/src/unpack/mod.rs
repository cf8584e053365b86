//! Safe, unprivileged layer unpacking (the fetch worker), and the rootfs a bundle gets (root).
//!
//! **Unpack** (as the unprivileged fetch user): layers are applied in order into
//! `unpacked/<manifest>/rootfs`. Every parent directory is opened with `openat2(2)` and
//! `RESOLVE_BENEATH` from the rootfs, so neither `..` nor a symlink (absolute or relative) planted
//! by an earlier entry can lead outside; the entry itself is created with `O_NOFOLLOW`/`*at`
//! calls relative to that parent. Entries naming `..`, absolute paths, paths that escape through
//! a symlink and device nodes are refused, naming the entry. `.wh.NAME` removes NAME from lower
//! layers, `.wh..wh..opq` empties a directory of lower-layer content (OCI image spec).
//!
//! An unprivileged process cannot chown to root or keep set-id bits on files for other users, so
//! the tree on disk holds content only (files 0600, directories 0700, owned by the fetch user),
//! and `meta.json` records what the image says for each entry: type, mode (with set-id bits),
//! uid, gid, symlink target, and the sha256 of each file's content — like umoci's rootless mode.
//!
//! **Materialise** (root, when `image run` builds a bundle): walks `meta.json`, copies each file
//! from the store into the bundle's rootfs while hashing it (a store file that no longer matches
//! its recorded digest is refused), and applies the recorded owner and mode. Parents are opened
//! with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` on both sides, so a store tampered with by the
//! fetch user cannot make root write or read outside the two trees. Device nodes are never
//! created. The copy also keeps the store read-only for containers.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{Mode, SFlag};
use serde::{Deserialize, Serialize};

use crate::digest::{Digest, Hashing};
use crate::error::{Error, Result};

mod materialize;
mod whiteout;
pub use materialize::{load_meta, materialize};

/// The file that records ownership and modes next to `rootfs/`.
pub const META_FILE: &str = "meta.json";

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Dir,
    File,
    Symlink,
    /// A hard link to `target` (another path of the rootfs).
    Link,
    Fifo,
}

/// One entry of the unpacked rootfs, as the image describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<Digest>,
}

/// `meta.json`: the image's view of every path of the unpacked rootfs (keys are relative paths;
/// "" is the root directory itself).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Meta {
    pub manifest: Option<Digest>,
    pub diff_ids: Vec<Digest>,
    pub entries: BTreeMap<String, Entry>,
}

const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

fn errno_io(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// `openat2` beneath `root`; `path` is relative ("" opens `root` itself).
fn open_beneath(
    root: BorrowedFd<'_>,
    path: &str,
    flags: OFlag,
    resolve: ResolveFlag,
) -> std::result::Result<OwnedFd, Errno> {
    let p = if path.is_empty() { "." } else { path };
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(resolve);
    let fd = nix::fcntl::openat2(root.as_raw_fd(), p, how)?;
    // SAFETY: openat2 returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Splits and checks a tar path: relative, no `..`; `.` components dropped. Returns the
/// normalised components (empty for the root itself).
fn clean_path(raw: &Path) -> std::result::Result<Vec<String>, String> {
    let mut out = Vec::new();
    for c in raw.components() {
        match c {
            Component::Normal(s) => match s.to_str() {
                Some(s) => out.push(s.to_string()),
                None => return Err("path is not valid UTF-8".into()),
            },
            Component::CurDir => {}
            Component::ParentDir => return Err("path contains `..`".into()),
            Component::RootDir | Component::Prefix(_) => return Err("absolute path".into()),
        }
    }
    Ok(out)
}

/// Applies layers into a rootfs directory, keeping [`Meta`].
pub struct Unpacker {
    root: OwnedFd,
    root_path: PathBuf,
    pub meta: Meta,
    this_layer: HashSet<String>,
    layer: String,
}

impl Unpacker {
    /// `rootfs` must be an empty directory.
    pub fn new(rootfs: &Path) -> Result<Self> {
        let fd = nix::fcntl::open(
            rootfs,
            OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
            Mode::empty(),
        )
        .map_err(|e| Error::io("cannot open", rootfs, errno_io(e)))?;
        // SAFETY: open returned a new descriptor that nothing else owns.
        let root = unsafe { OwnedFd::from_raw_fd(fd) };
        let root_path =
            fd_path(root.as_fd()).map_err(|e| Error::io("cannot resolve", rootfs, e))?;
        let mut meta = Meta::default();
        meta.entries.insert(
            String::new(),
            Entry {
                kind: Kind::Dir,
                mode: 0o755,
                uid: 0,
                gid: 0,
                target: None,
                sha256: None,
            },
        );
        Ok(Self {
            root,
            root_path,
            meta,
            this_layer: HashSet::new(),
            layer: String::new(),
        })
    }

    fn refuse(&self, entry: &str, reason: impl Into<String>) -> Error {
        Error::UnsafeEntry {
            layer: self.layer.clone(),
            entry: entry.to_string(),
            reason: reason.into(),
        }
    }

    /// Applies one (uncompressed) layer tar; returns its diff id (sha256 of the tar stream).
    pub fn apply_layer(&mut self, name: &str, tar_stream: impl Read) -> Result<Digest> {
        self.layer = name.to_string();
        self.this_layer.clear();
        let mut archive = tar::Archive::new(Hashing::new(tar_stream));
        let entries = archive
            .entries()
            .map_err(|e| Error::io("cannot read layer", name, e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| Error::io("cannot read layer", name, e))?;
            let raw = entry
                .path()
                .map_err(|e| Error::io("cannot read a tar entry of layer", name, e))?
                .into_owned();
            let shown = raw.display().to_string();
            let comps = clean_path(&raw).map_err(|r| self.refuse(&shown, r))?;
            self.apply_entry(&shown, comps, &mut entry)?;
        }
        // The diff id covers the whole stream, including the end-of-archive padding.
        let mut rest = archive.into_inner();
        io::copy(&mut rest, &mut io::sink())
            .map_err(|e| Error::io("cannot read layer", name, e))?;
        Ok(rest.finish().1)
    }

    fn apply_entry<R: Read>(
        &mut self,
        shown: &str,
        comps: Vec<String>,
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<()> {
        let Some((name, parents)) = comps.split_last() else {
            // The root directory itself: record its owner and mode.
            let h = entry.header();
            let (uid, gid) = self.owner(shown, h)?;
            let mode = h.mode().unwrap_or(0o755) & 0o7777;
            if let Some(e) = self.meta.entries.get_mut("") {
                e.mode = mode;
                e.uid = uid;
                e.gid = gid;
            }
            return Ok(());
        };
        let kind = entry.header().entry_type();
        if let Some(hidden) = name.strip_prefix(".wh.") {
            let (pfd, pphys) = match self.parent(shown, parents, false)? {
                Some(p) => p,
                None => return Ok(()), // whiteout in a directory that does not exist
            };
            if hidden == ".wh..opq" {
                let dir_phys = pphys;
                return self.opaque(&dir_phys);
            }
            if hidden.is_empty() || hidden == "." || hidden == ".." || hidden.contains('/') {
                return Err(self.refuse(shown, "invalid whiteout"));
            }
            let victim = join(&pphys, hidden);
            self.remove_existing(pfd.as_fd(), hidden, &victim)?;
            return Ok(());
        }
        let h = entry.header();
        let mode = h.mode().unwrap_or(0o644) & 0o7777;
        let (uid, gid) = self.owner(shown, h)?;
        use tar::EntryType as T;
        let k = match kind {
            T::Directory => Kind::Dir,
            T::Regular | T::Continuous => Kind::File,
            T::Symlink => Kind::Symlink,
            T::Link => Kind::Link,
            T::Fifo => Kind::Fifo,
            T::Char | T::Block => {
                let (maj, min) = (
                    h.device_major().ok().flatten().unwrap_or(0),
                    h.device_minor().ok().flatten().unwrap_or(0),
                );
                let what = if kind == T::Char {
                    "character"
                } else {
                    "block"
                };
                return Err(self.refuse(shown, format!("device node ({what} {maj}:{min})")));
            }
            other => return Err(self.refuse(shown, format!("unsupported entry type {other:?}"))),
        };
        let (pfd, pphys) = self
            .parent(shown, parents, true)?
            .ok_or_else(|| self.refuse(shown, "parent directory missing"))?;
        let phys = join(&pphys, name);
        let existing = nix::sys::stat::fstatat(
            Some(pfd.as_raw_fd()),
            name.as_str(),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .ok();
        let existing_dir = existing
            .map(|st| {
                SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFDIR
            })
            .unwrap_or(false);
        if existing.is_some() && !(k == Kind::Dir && existing_dir) {
            self.remove_existing(pfd.as_fd(), name, &phys)?;
        }
        let mut rec = Entry {
            kind: k,
            mode,
            uid,
            gid,
            target: None,
            sha256: None,
        };
        let layer = self.layer.clone();
        let io_err = |e: Errno| Error::UnsafeEntry {
            layer: layer.clone(),
            entry: shown.to_string(),
            reason: format!("cannot create: {}", errno_io(e)),
        };
        match k {
            Kind::Dir => {
                if !existing_dir {
                    nix::sys::stat::mkdirat(
                        Some(pfd.as_raw_fd()),
                        name.as_str(),
                        Mode::from_bits_truncate(DIR_MODE),
                    )
                    .map_err(io_err)?;
                }
            }
            Kind::File => {
                let fd = nix::fcntl::openat(
                    Some(pfd.as_raw_fd()),
                    name.as_str(),
                    OFlag::O_WRONLY
                        | OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(FILE_MODE),
                )
                .map_err(io_err)?;
                // SAFETY: openat returned a new descriptor that nothing else owns.
                let file = unsafe { File::from_raw_fd(fd) };
                let mut w = Hashing::new(file);
                io::copy(entry, &mut w)
                    .map_err(|e| Error::io("cannot write", self.root_path.join(&phys), e))?;
                rec.sha256 = Some(w.finish().1);
            }
            Kind::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|e| Error::io("cannot read a tar entry of layer", &self.layer, e))?
                    .ok_or_else(|| self.refuse(shown, "symlink without a target"))?;
                let target = target
                    .to_str()
                    .ok_or_else(|| self.refuse(shown, "symlink target is not UTF-8"))?
                    .to_string();
                nix::unistd::symlinkat(target.as_str(), Some(pfd.as_raw_fd()), name.as_str())
                    .map_err(io_err)?;
                rec.target = Some(target);
            }
            Kind::Link => {
                let target = entry
                    .link_name()
                    .map_err(|e| Error::io("cannot read a tar entry of layer", &self.layer, e))?
                    .ok_or_else(|| self.refuse(shown, "hard link without a target"))?
                    .into_owned();
                let tcomps = clean_path(&target)
                    .map_err(|r| self.refuse(shown, format!("hard link target: {r}")))?;
                let Some((tname, tparents)) = tcomps.split_last() else {
                    return Err(self.refuse(shown, "hard link to the root directory"));
                };
                let (tfd, tphys) = self
                    .parent(shown, tparents, false)?
                    .ok_or_else(|| self.refuse(shown, "hard link target does not exist"))?;
                let tpath = join(&tphys, tname);
                let tentry = self
                    .meta
                    .entries
                    .get(&tpath)
                    .cloned()
                    .ok_or_else(|| self.refuse(shown, "hard link target does not exist"))?;
                if tentry.kind == Kind::Dir {
                    return Err(self.refuse(shown, "hard link to a directory"));
                }
                nix::unistd::linkat(
                    Some(tfd.as_raw_fd()),
                    tname.as_str(),
                    Some(pfd.as_raw_fd()),
                    name.as_str(),
                    nix::fcntl::AtFlags::empty(),
                )
                .map_err(io_err)?;
                // Ownership and mode are the inode's: the target's.
                rec = Entry {
                    kind: Kind::Link,
                    target: Some(tpath),
                    sha256: tentry.sha256.clone(),
                    ..tentry
                };
            }
            Kind::Fifo => {
                nix::sys::stat::mknodat(
                    Some(pfd.as_raw_fd()),
                    name.as_str(),
                    SFlag::S_IFIFO,
                    Mode::from_bits_truncate(FILE_MODE),
                    0,
                )
                .map_err(io_err)?;
            }
        }
        self.this_layer.insert(phys.clone());
        self.meta.entries.insert(phys, rec);
        Ok(())
    }

    fn owner(&self, shown: &str, h: &tar::Header) -> Result<(u32, u32)> {
        let uid = h.uid().map_err(|_| self.refuse(shown, "invalid uid"))?;
        let gid = h.gid().map_err(|_| self.refuse(shown, "invalid gid"))?;
        let uid = u32::try_from(uid).map_err(|_| self.refuse(shown, "uid out of range"))?;
        let gid = u32::try_from(gid).map_err(|_| self.refuse(shown, "gid out of range"))?;
        Ok((uid, gid))
    }

    /// Opens the parent directory beneath the rootfs and returns it with its physical path
    /// (symlinks inside the rootfs resolved). With `create`, missing directories are created
    /// (as the image would have them: root-owned 0755); without, a missing parent is `None`.
    fn parent(
        &mut self,
        shown: &str,
        parents: &[String],
        create: bool,
    ) -> Result<Option<(OwnedFd, String)>> {
        let resolve = ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS;
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY;
        let full = parents.join("/");
        match open_beneath(self.root.as_fd(), &full, flags, resolve) {
            Ok(fd) => {
                let phys = self.phys(shown, fd.as_fd())?;
                return Ok(Some((fd, phys)));
            }
            Err(Errno::ENOENT) if create => {}
            Err(Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(self.resolve_error(shown, e)),
        }
        // Create the missing directories one by one, each step resolved beneath the rootfs.
        let mut cur = self
            .root
            .try_clone()
            .map_err(|e| Error::io("cannot dup", &self.root_path, e))?;
        let mut prefix = String::new();
        for c in parents {
            let next = if prefix.is_empty() {
                c.clone()
            } else {
                format!("{prefix}/{c}")
            };
            match open_beneath(self.root.as_fd(), &next, flags, resolve) {
                Ok(fd) => cur = fd,
                Err(Errno::ENOENT) => {
                    nix::sys::stat::mkdirat(
                        Some(cur.as_raw_fd()),
                        c.as_str(),
                        Mode::from_bits_truncate(DIR_MODE),
                    )
                    .map_err(|e| {
                        self.refuse(shown, format!("cannot create parent: {}", errno_io(e)))
                    })?;
                    let fd = open_beneath(self.root.as_fd(), &next, flags, resolve)
                        .map_err(|e| self.resolve_error(shown, e))?;
                    let phys = self.phys(shown, fd.as_fd())?;
                    self.meta.entries.insert(
                        phys,
                        Entry {
                            kind: Kind::Dir,
                            mode: 0o755,
                            uid: 0,
                            gid: 0,
                            target: None,
                            sha256: None,
                        },
                    );
                    cur = fd;
                }
                Err(e) => return Err(self.resolve_error(shown, e)),
            }
            prefix = next;
        }
        let phys = self.phys(shown, cur.as_fd())?;
        Ok(Some((cur, phys)))
    }

    fn resolve_error(&self, shown: &str, e: Errno) -> Error {
        let reason = match e {
            Errno::EXDEV => "path escapes the rootfs (through `..` or a symlink)".to_string(),
            Errno::ELOOP => "too many levels of symlinks".to_string(),
            Errno::ENOTDIR => "a parent is not a directory".to_string(),
            other => format!("cannot resolve its parent: {}", errno_io(other)),
        };
        self.refuse(shown, reason)
    }

    /// The path of an open directory relative to the rootfs.
    fn phys(&self, shown: &str, fd: BorrowedFd<'_>) -> Result<String> {
        let p = fd_path(fd).map_err(|e| Error::io("cannot resolve", &self.root_path, e))?;
        let rel = p
            .strip_prefix(&self.root_path)
            .map_err(|_| self.refuse(shown, "path escapes the rootfs"))?;
        rel.to_str()
            .map(str::to_string)
            .ok_or_else(|| self.refuse(shown, "path is not valid UTF-8"))
    }

    /// Writes `meta.json` next to the rootfs directory.
    pub fn write_meta(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_vec(&self.meta)
            .map_err(|e| Error::invalid("unpack metadata", e.to_string()))?;
        std::fs::write(path, json).map_err(|e| Error::io("cannot write", path, e))
    }
}

fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    }
}

fn fd_path(fd: BorrowedFd<'_>) -> io::Result<PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Decompresses a layer blob by its content (gzip or plain tar; zstd is refused clearly).
pub fn decompressed(mut blob: File, what: &str) -> Result<Box<dyn Read>> {
    let mut magic = [0u8; 4];
    let n = read_up_to(&mut blob, &mut magic).map_err(|e| Error::io("cannot read", what, e))?;
    use std::io::Seek;
    blob.rewind()
        .map_err(|e| Error::io("cannot read", what, e))?;
    let buf = io::BufReader::with_capacity(256 * 1024, blob);
    if n >= 2 && magic[..2] == [0x1f, 0x8b] {
        return Ok(Box::new(flate2::read::MultiGzDecoder::new(buf)));
    }
    if n == 4 && magic == [0x28, 0xb5, 0x2f, 0xfd] {
        return Err(Error::unsupported(
            format!("layer {what}"),
            "zstd-compressed layers are not supported (gzip and plain tar are)",
        ));
    }
    Ok(Box::new(buf))
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar builder for hostile and ordinary layers.
    struct Layer(tar::Builder<Vec<u8>>);

    impl Layer {
        fn new() -> Self {
            Self(tar::Builder::new(Vec::new()))
        }
        fn header(path: &str, kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
            let mut h = tar::Header::new_gnu();
            // set_path refuses `..`: write the raw name so hostile paths get through.
            let name = path.as_bytes();
            h.as_old_mut().name[..name.len()].copy_from_slice(name);
            h.set_entry_type(kind);
            h.set_size(size);
            h.set_mode(mode);
            h.set_uid(0);
            h.set_gid(0);
            h.set_cksum();
            h
        }
        fn dir(mut self, p: &str) -> Self {
            let h = Self::header(p, tar::EntryType::Directory, 0, 0o755);
            self.0.append(&h, io::empty()).unwrap();
            self
        }
        fn file(mut self, p: &str, data: &[u8]) -> Self {
            let h = Self::header(p, tar::EntryType::Regular, data.len() as u64, 0o4755);
            self.0.append(&h, data).unwrap();
            self
        }
        fn link(mut self, p: &str, kind: tar::EntryType, target: &str) -> Self {
            let mut h = Self::header(p, kind, 0, 0o777);
            h.set_link_name(target).unwrap();
            h.set_cksum();
            self.0.append(&h, io::empty()).unwrap();
            self
        }
        fn dev(mut self, p: &str) -> Self {
            let mut h = Self::header(p, tar::EntryType::Char, 0, 0o666);
            h.set_device_major(1).unwrap();
            h.set_device_minor(3).unwrap();
            h.set_cksum();
            self.0.append(&h, io::empty()).unwrap();
            self
        }
        fn bytes(self) -> Vec<u8> {
            self.0.into_inner().unwrap()
        }
    }

    fn unpack(layers: &[Vec<u8>]) -> (tempfile::TempDir, Result<Unpacker>) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("rootfs");
        std::fs::create_dir(&root).unwrap();
        let mut u = Unpacker::new(&root).unwrap();
        for (i, l) in layers.iter().enumerate() {
            if let Err(e) = u.apply_layer(&format!("layer{i}"), &l[..]) {
                return (tmp, Err(e));
            }
        }
        (tmp, Ok(u))
    }

    #[test]
    fn whiteouts_and_opaque_dirs() {
        let l1 = Layer::new()
            .dir("etc")
            .file("etc/a", b"a")
            .file("etc/b", b"b")
            .dir("opt")
            .file("opt/x", b"x")
            .file("keep", b"k")
            .bytes();
        let l2 = Layer::new()
            .file("etc/.wh.a", b"")
            .dir("opt")
            .file("opt/.wh..wh..opq", b"")
            .file("opt/y", b"y")
            .bytes();
        let (tmp, u) = unpack(&[l1, l2]);
        let u = u.unwrap();
        let r = tmp.path().join("rootfs");
        assert!(!r.join("etc/a").exists());
        assert!(r.join("etc/b").exists());
        assert!(!r.join("opt/x").exists());
        assert_eq!(std::fs::read(r.join("opt/y")).unwrap(), b"y");
        assert!(r.join("keep").exists());
        assert!(!u.meta.entries.contains_key("etc/a"));
        assert!(!u.meta.entries.contains_key("opt/x"));
        let y = &u.meta.entries["opt/y"];
        assert_eq!((y.mode, y.uid), (0o4755, 0));
        assert_eq!(y.sha256.as_ref().unwrap(), &Digest::of(b"y"));
    }

    #[test]
    fn hostile_entries_are_refused_by_name() {
        let cases = [
            (
                Layer::new().file("../evil", b"x").bytes(),
                "../evil",
                "`..`",
            ),
            (
                Layer::new().file("a/../../evil", b"x").bytes(),
                "a/../../evil",
                "`..`",
            ),
            (
                Layer::new().file("/etc/evil", b"x").bytes(),
                "/etc/evil",
                "absolute",
            ),
            (
                Layer::new()
                    .link("esc", tar::EntryType::Symlink, "/")
                    .file("esc/etc/evil", b"x")
                    .bytes(),
                "esc/etc/evil",
                "escapes",
            ),
            (
                Layer::new()
                    .link("up", tar::EntryType::Symlink, "../../..")
                    .file("up/evil", b"x")
                    .bytes(),
                "up/evil",
                "escapes",
            ),
            (
                Layer::new().dev("dev/null").bytes(),
                "dev/null",
                "device node",
            ),
            (
                Layer::new()
                    .link("h", tar::EntryType::Link, "../../etc/passwd")
                    .bytes(),
                "h",
                "`..`",
            ),
        ];
        for (layer, entry, why) in cases {
            let (tmp, r) = unpack(&[layer]);
            let e = r
                .err()
                .unwrap_or_else(|| panic!("{entry} accepted"))
                .to_string();
            assert!(e.contains(&format!("{entry:?}")), "{e}");
            assert!(e.contains(why), "{e}");
            assert!(!tmp.path().join("evil").exists());
        }
    }

    #[test]
    fn relative_symlinks_inside_are_followed() {
        let l = Layer::new()
            .dir("usr")
            .dir("usr/lib")
            .link("lib", tar::EntryType::Symlink, "usr/lib")
            .file("lib/x", b"x")
            .link("bin", tar::EntryType::Symlink, "/usr/bin")
            .bytes();
        let (tmp, u) = unpack(&[l]);
        let u = u.unwrap();
        assert!(tmp.path().join("rootfs/usr/lib/x").exists());
        assert!(u.meta.entries.contains_key("usr/lib/x"));
        assert_eq!(u.meta.entries["bin"].target.as_deref(), Some("/usr/bin"));
    }

    #[test]
    fn materialize_applies_owners_and_checks_digests() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "materialize chowns to root: run the tests as root (as scripts/test.sh does)"
        );
        let l = Layer::new()
            .dir("bin")
            .file("bin/tool", b"tool")
            .link("bin/sh", tar::EntryType::Symlink, "/bin/tool")
            .link("bin/hard", tar::EntryType::Link, "bin/tool")
            .bytes();
        let (tmp, u) = unpack(&[l]);
        let u = u.unwrap();
        let src = tmp.path().join("rootfs");
        let dest = tmp.path().join("dest");
        std::fs::create_dir(&dest).unwrap();
        materialize(&src, &u.meta, &dest).unwrap();
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(dest.join("bin/tool")).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o4755);
        assert_eq!(m.uid(), 0);
        assert_eq!(m.nlink(), 2);
        // A tampered store file is refused.
        std::fs::write(src.join("bin/tool"), b"evil").unwrap();
        let dest2 = tmp.path().join("dest2");
        std::fs::create_dir(&dest2).unwrap();
        let e = materialize(&src, &u.meta, &dest2).unwrap_err().to_string();
        assert!(e.contains("digest mismatch"), "{e}");
    }
}
