//! The content-addressed image store (`/var/lib/clearbox/images` by default).
//!
//! ```text
//! <store>/blobs/sha256/<hex>        manifests, configs, layer blobs (compressed as fetched),
//!                                   stored signatures; shared by every image that names them
//! <store>/unpacked/<manifest-hex>/  rootfs/ (layers applied in order) + meta.json (the owner,
//!                                   mode and digest of every entry, see [`crate::unpack`])
//! <store>/refs/<escaped name>.json  one record per image name ([`ImageRecord`])
//! <store>/tmp/                      partial downloads (same file system, renamed into place)
//! <store>/.lock                     flock: exclusive for changes, shared while a bundle is built
//! ```
//!
//! The store belongs to the unprivileged fetch user (mode 0700): only the fetch worker writes it.
//! Root only reads it (to build a bundle) after checking the digests it reads.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::{Digest, Hashing};
use crate::error::{Error, Result};

/// Where images live unless `[image] store` says otherwise.
pub const DEFAULT_ROOT: &str = "/var/lib/clearbox/images";

/// How an image's signature was checked when it entered the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Verification {
    /// Accepted by the policy: the requirement that accepted it and the key that signed it.
    Verified { requirement: String, key: String },
    /// The policy scope says `insecureAcceptAnything`.
    AcceptAnything { scope: String },
    /// `--insecure-skip-verify`: nothing was checked.
    Skipped,
}

/// One image name in the store.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageRecord {
    /// The full reference, e.g. `127.0.0.1:5000/app:1.0` or `docker.io/library/busybox:latest`.
    pub name: String,
    /// The digest the name resolved to: what signatures sign (an index or a manifest).
    pub digest: Digest,
    /// The image manifest for this platform (equal to `digest` unless `digest` is an index).
    pub manifest: Digest,
    pub config: Digest,
    pub layers: Vec<Digest>,
    /// Signatures kept with the image (blobs of [`crate::signature::StoredSignature`]).
    #[serde(default)]
    pub signatures: Vec<Digest>,
    pub verification: Verification,
    /// registry, oci-layout, oci-archive or docker-archive.
    pub source: String,
    pub created: String,
    /// Bytes of the blobs (compressed layers + config + manifest).
    pub size: u64,
}

impl ImageRecord {
    /// Every blob this image keeps alive.
    pub fn blobs(&self) -> impl Iterator<Item = &Digest> {
        [&self.digest, &self.manifest, &self.config]
            .into_iter()
            .chain(self.layers.iter())
            .chain(self.signatures.iter())
    }
}

/// A handle on the store directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// A held flock on the store; released on drop.
pub struct StoreLock {
    _file: File,
}

impl Store {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Root side: creates the store directory owned by the fetch user, mode 0700, so that only
    /// that user (and root) can read it and only that user writes it.
    pub fn prepare(&self, uid: u32, gid: u32) -> Result<()> {
        match fs::create_dir(&self.root) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(parent) = self.root.parent() {
                    fs::create_dir_all(parent)
                        .map_err(|e| Error::io("cannot create", parent, e))?;
                }
                fs::create_dir(&self.root)
                    .or_else(|e| {
                        if e.kind() == std::io::ErrorKind::AlreadyExists {
                            Ok(())
                        } else {
                            Err(e)
                        }
                    })
                    .map_err(|e| Error::io("cannot create the image store", &self.root, e))?;
            }
            Err(e) => return Err(Error::io("cannot create the image store", &self.root, e)),
        }
        let meta = fs::symlink_metadata(&self.root)
            .map_err(|e| Error::io("cannot stat", &self.root, e))?;
        if !meta.is_dir() {
            return Err(Error::invalid(
                "image store",
                format!("{} is not a directory", self.root.display()),
            ));
        }
        std::os::unix::fs::lchown(&self.root, Some(uid), Some(gid)).map_err(|e| {
            Error::io(
                "cannot give the image store to the fetch user",
                &self.root,
                e,
            )
        })?;
        fs::set_permissions(&self.root, fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io("cannot chmod", &self.root, e))?;
        Ok(())
    }

    /// Worker side: the subdirectories (created as the fetch user).
    pub fn init_layout(&self) -> Result<()> {
        for d in ["blobs/sha256", "unpacked", "refs", "tmp"] {
            let p = self.root.join(d);
            fs::create_dir_all(&p).map_err(|e| Error::io("cannot create", &p, e))?;
        }
        Ok(())
    }

    pub fn lock_exclusive(&self) -> Result<StoreLock> {
        self.lock(nix::fcntl::FlockArg::LockExclusive)
    }

    pub fn lock_shared(&self) -> Result<StoreLock> {
        self.lock(nix::fcntl::FlockArg::LockShared)
    }

    #[allow(deprecated)] // nix::fcntl::flock: Flock's owned-fd API does not fit a guard we drop
    fn lock(&self, how: nix::fcntl::FlockArg) -> Result<StoreLock> {
        let path = self.root.join(".lock");
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .or_else(|_| File::open(&path))
            .map_err(|e| Error::io("cannot open the store lock", &path, e))?;
        use std::os::fd::AsRawFd;
        nix::fcntl::flock(file.as_raw_fd(), how)
            .map_err(|e| Error::io("cannot lock the image store", &path, e.into()))?;
        Ok(StoreLock { _file: file })
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    /// Reads a blob and checks that it still hashes to its name.
    pub fn read_blob(&self, d: &Digest) -> Result<Vec<u8>> {
        let p = self.blob_path(d);
        let bytes = fs::read(&p).map_err(|e| Error::io("cannot read blob", &p, e))?;
        d.verify(&format!("blob {}", p.display()), &bytes)?;
        Ok(bytes)
    }

    /// Stores bytes under their digest (atomically).
    pub fn put_blob(&self, bytes: &[u8]) -> Result<Digest> {
        let mut w = self.blob_writer()?;
        w.write_all(bytes)
            .map_err(|e| Error::io("cannot write blob", &w.tmp, e))?;
        w.commit(None)
    }

    /// A temporary file that becomes a blob once its digest is known (and checked).
    pub fn blob_writer(&self) -> Result<BlobWriter> {
        let dir = self.root.join("tmp");
        let tmp = dir.join(format!(
            "blob-{}-{}",
            std::process::id(),
            TMP_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| Error::io("cannot create", &tmp, e))?;
        Ok(BlobWriter {
            hashing: Some(Hashing::new(file)),
            tmp,
            blobs: self.root.join("blobs/sha256"),
        })
    }

    pub fn unpacked_dir(&self, manifest: &Digest) -> PathBuf {
        self.root.join("unpacked").join(manifest.hex())
    }

    fn ref_path(&self, name: &str) -> PathBuf {
        self.root
            .join("refs")
            .join(format!("{}.json", escape_name(name)))
    }

    pub fn put_ref(&self, rec: &ImageRecord) -> Result<()> {
        let path = self.ref_path(&rec.name);
        let tmp = path.with_extension("json.tmp");
        let json = serde_json::to_vec_pretty(rec)
            .map_err(|e| Error::invalid("image record", e.to_string()))?;
        let write = || -> std::io::Result<()> {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&json)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)
        };
        write().map_err(|e| Error::io("cannot write image record", &path, e))
    }

    pub fn get_ref(&self, name: &str) -> Result<Option<ImageRecord>> {
        let path = self.ref_path(name);
        match fs::read(&path) {
            Ok(bytes) => parse_record(&path, &bytes).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("cannot read image record", &path, e)),
        }
    }

    pub fn remove_ref(&self, name: &str) -> Result<bool> {
        let path = self.ref_path(name);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io("cannot remove image record", &path, e)),
        }
    }

    /// Every image record, sorted by name. A store that does not exist yet is empty.
    pub fn list(&self) -> Result<Vec<ImageRecord>> {
        let dir = self.root.join("refs");
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("cannot list", &dir, e)),
        };
        let mut out = Vec::new();
        for ent in rd {
            let ent = ent.map_err(|e| Error::io("cannot list", &dir, e))?;
            let path = ent.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let bytes = fs::read(&path).map_err(|e| Error::io("cannot read", &path, e))?;
            out.push(parse_record(&path, &bytes)?);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Removes every blob and unpacked tree no record names any more, and stale temp files.
    /// Returns the number of entries removed. Call with the exclusive lock held.
    pub fn gc(&self) -> Result<usize> {
        let records = self.list()?;
        let mut live_blobs = std::collections::HashSet::new();
        let mut live_unpacked = std::collections::HashSet::new();
        for r in &records {
            for b in r.blobs() {
                live_blobs.insert(b.hex().to_string());
            }
            live_unpacked.insert(r.manifest.hex().to_string());
        }
        let mut removed = 0;
        for (sub, live) in [("blobs/sha256", &live_blobs), ("unpacked", &live_unpacked)] {
            let dir = self.root.join(sub);
            let Ok(rd) = fs::read_dir(&dir) else { continue };
            for ent in rd.flatten() {
                let name = ent.file_name().to_string_lossy().into_owned();
                if live.contains(&name) {
                    continue;
                }
                let p = ent.path();
                let res = if ent.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    fs::remove_dir_all(&p)
                } else {
                    fs::remove_file(&p)
                };
                res.map_err(|e| Error::io("cannot remove", &p, e))?;
                removed += 1;
            }
        }
        let tmp = self.root.join("tmp");
        if let Ok(rd) = fs::read_dir(&tmp) {
            for ent in rd.flatten() {
                let p = ent.path();
                let _ = if p.is_dir() {
                    fs::remove_dir_all(&p)
                } else {
                    fs::remove_file(&p)
                };
            }
        }
        Ok(removed)
    }
}

static TMP_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn parse_record(path: &Path, bytes: &[u8]) -> Result<ImageRecord> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::invalid(format!("image record {}", path.display()), e.to_string()))
}

/// A file name for an image name: every byte outside `[A-Za-z0-9._-]` becomes `%XX`.
fn escape_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A blob being written; [`BlobWriter::commit`] renames it to its digest.
pub struct BlobWriter {
    hashing: Option<Hashing<File>>,
    tmp: PathBuf,
    blobs: PathBuf,
}

impl BlobWriter {
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// Finishes the blob; with `expected`, fails (and removes it) unless the content matches.
    pub fn commit(mut self, expected: Option<(&Digest, &str)>) -> Result<Digest> {
        let Some(h) = self.hashing.take() else {
            return Err(Error::invalid("blob writer", "already committed"));
        };
        let (file, digest) = h.finish();
        file.sync_all()
            .map_err(|e| Error::io("cannot sync", &self.tmp, e))?;
        drop(file);
        if let Some((want, what)) = expected {
            if want != &digest {
                let _ = fs::remove_file(&self.tmp);
                return Err(Error::Digest {
                    what: what.to_string(),
                    expected: want.to_string(),
                    actual: digest.to_string(),
                });
            }
        }
        let dest = self.blobs.join(digest.hex());
        fs::rename(&self.tmp, &dest).map_err(|e| Error::io("cannot store blob", &dest, e))?;
        Ok(digest)
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.hashing.as_mut() {
            Some(h) => h.write(buf),
            None => Err(std::io::Error::other("blob already committed")),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self.hashing.as_mut() {
            Some(h) => h.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if self.hashing.is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Reads at most `limit` bytes (manifests, configs, signatures are small; a registry that sends
/// more is refused instead of filling memory).
pub fn read_limited(mut r: impl Read, limit: u64, what: &str) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    (&mut r)
        .take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::io("cannot read", what, e))?;
    if buf.len() as u64 > limit {
        return Err(Error::invalid(what, format!("larger than {limit} bytes")));
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, layers: Vec<Digest>) -> ImageRecord {
        ImageRecord {
            name: name.into(),
            digest: Digest::of(name.as_bytes()),
            manifest: Digest::of(name.as_bytes()),
            config: Digest::of(b"config"),
            layers,
            signatures: vec![],
            verification: Verification::Skipped,
            source: "test".into(),
            created: String::new(),
            size: 0,
        }
    }

    #[test]
    fn blobs_refs_and_gc_share_layers() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::new(tmp.path().join("store"));
        fs::create_dir(s.root()).unwrap();
        s.init_layout().unwrap();
        let layer = s.put_blob(b"shared layer").unwrap();
        let only_a = s.put_blob(b"a only").unwrap();
        s.put_blob(b"config").unwrap();
        s.put_ref(&record("reg/a:1", vec![layer.clone(), only_a.clone()]))
            .unwrap();
        s.put_ref(&record("reg/b:1", vec![layer.clone()])).unwrap();
        assert_eq!(s.list().unwrap().len(), 2);
        assert_eq!(s.read_blob(&layer).unwrap(), b"shared layer");
        assert!(s.remove_ref("reg/a:1").unwrap());
        s.gc().unwrap();
        assert!(s.has_blob(&layer), "layer shared with b survives");
        assert!(!s.has_blob(&only_a));
        assert!(s.remove_ref("reg/b:1").unwrap());
        s.gc().unwrap();
        assert!(!s.has_blob(&layer));
        assert_eq!(
            fs::read_dir(s.root().join("blobs/sha256")).unwrap().count(),
            0
        );
    }

    #[test]
    fn blob_writer_checks_the_digest() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::new(tmp.path());
        s.init_layout().unwrap();
        let mut w = s.blob_writer().unwrap();
        w.write_all(b"tampered").unwrap();
        let want = Digest::of(b"original");
        let e = w.commit(Some((&want, "layer x"))).unwrap_err().to_string();
        assert!(e.contains("digest mismatch"), "{e}");
        assert_eq!(fs::read_dir(s.root().join("tmp")).unwrap().count(), 0);
        assert_eq!(
            fs::read_dir(s.root().join("blobs/sha256")).unwrap().count(),
            0
        );
    }

    #[test]
    fn names_escape_to_safe_files() {
        assert_eq!(
            escape_name("127.0.0.1:5000/a/b:1"),
            "127.0.0.1%3A5000%2Fa%2Fb%3A1"
        );
        assert_eq!(escape_name("../x"), "..%2Fx");
    }
}
