//! Removals while layers are applied: an entry that replaces an existing one, a whiteout
//! (`.wh.<name>`) and an opaque directory (`.wh..wh..opq`), on disk and in the metadata.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use nix::errno::Errno;
use nix::fcntl::{OFlag, ResolveFlag};
use nix::sys::stat::SFlag;

use super::{errno_io, open_beneath, Unpacker};
use crate::error::{Error, Result};

impl Unpacker {
    /// Removes `name` (in `parent`, physical path `phys`) from disk and from the metadata.
    pub(super) fn remove_existing(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &str,
        phys: &str,
    ) -> Result<()> {
        let st = match nix::sys::stat::fstatat(
            Some(parent.as_raw_fd()),
            name,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(st) => st,
            Err(Errno::ENOENT) => {
                self.forget(phys);
                return Ok(());
            }
            Err(e) => {
                return Err(Error::io(
                    "cannot stat",
                    self.root_path.join(phys),
                    errno_io(e),
                ))
            }
        };
        let is_dir = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFDIR;
        let full = self.root_path.join(phys);
        let res = if is_dir {
            // `full` is physical (no symlink in it) and only this process writes the tree;
            // std's remove_dir_all does not follow symlinks inside it.
            std::fs::remove_dir_all(&full)
        } else {
            nix::unistd::unlinkat(
                Some(parent.as_raw_fd()),
                name,
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            )
            .map_err(errno_io)
        };
        res.map_err(|e| Error::io("cannot remove", &full, e))?;
        self.forget(phys);
        Ok(())
    }

    /// The metadata's paths that start with `prefix` (a range of the sorted map).
    fn paths_under<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a String> + 'a {
        self.meta
            .entries
            .range(prefix.to_owned()..)
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k)
    }

    fn forget(&mut self, phys: &str) {
        self.meta.entries.remove(phys);
        let prefix = format!("{phys}/");
        let doomed: Vec<String> = self.paths_under(&prefix).cloned().collect();
        for k in doomed {
            self.meta.entries.remove(&k);
        }
    }

    /// `.wh..wh..opq`: removes what lower layers put in `dir`.
    pub(super) fn opaque(&mut self, dir: &str) -> Result<()> {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let children: Vec<String> = self
            .paths_under(&prefix)
            .filter(|k| !k.is_empty() && !k[prefix.len()..].contains('/'))
            .filter(|k| !self.this_layer.contains(*k))
            .cloned()
            .collect();
        if children.is_empty() {
            return Ok(());
        }
        let dfd = open_beneath(
            self.root.as_fd(),
            dir,
            OFlag::O_PATH | OFlag::O_DIRECTORY,
            ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS,
        )
        .map_err(|e| Error::io("cannot open", self.root_path.join(dir), errno_io(e)))?;
        for c in children {
            let name = c[prefix.len()..].to_string();
            self.remove_existing(dfd.as_fd(), &name, &c)?;
        }
        Ok(())
    }
}
