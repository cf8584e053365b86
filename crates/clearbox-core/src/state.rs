//! Container state on disk: `<root>/<id>/state.json`, replaced atomically (temp file + rename) and
//! only ever touched while holding the container's lock (an exclusive `flock` on its directory).

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::isolation::Isolation;

/// Lifecycle status, as in the OCI runtime spec (plus runc's `paused`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        })
    }
}

/// What clearbox remembers of a container. The OCI fields come first; `state` prints those (plus
/// runc's `rootfs`, `created`, `owner`), the rest is clearbox's own bookkeeping.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    pub oci_version: String,
    pub id: String,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: DateTime<Utc>,
    #[serde(default)]
    pub owner: String,
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub annotations: HashMap<String, String>,
    /// Which backend owns the container.
    pub isolation: Isolation,
    /// Start time of `pid` (clock ticks since boot), to tell the init from a recycled pid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_start_time: Option<u64>,
    /// Whether the container uses the systemd cgroup driver.
    #[serde(default)]
    pub systemd_cgroup: bool,
}

/// The view printed by `clearbox state`: the OCI state plus the fields runc adds.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OciState<'a> {
    pub oci_version: &'a str,
    pub id: &'a str,
    pub pid: i32,
    pub status: Status,
    pub bundle: &'a Path,
    pub rootfs: &'a Path,
    pub created: DateTime<Utc>,
    pub owner: &'a str,
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    pub annotations: &'a HashMap<String, String>,
}

impl State {
    /// Parses a `state.json` (what [`Locked::load`] reads; public for the fuzz targets).
    pub fn from_json(bytes: &[u8]) -> Result<State, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    pub fn oci(&self) -> OciState<'_> {
        OciState {
            oci_version: &self.oci_version,
            id: &self.id,
            // runc reports pid 0 once the container has stopped.
            pid: if self.status == Status::Stopped {
                0
            } else {
                self.pid.unwrap_or(0)
            },
            status: self.status,
            bundle: &self.bundle,
            rootfs: &self.rootfs,
            created: self.created,
            owner: &self.owner,
            annotations: &self.annotations,
        }
    }
}

/// The directory holding every container's state.
#[derive(Debug, Clone)]
pub struct StateStore {
    root: PathBuf,
}

const STATE_FILE: &str = "state.json";

impl StateStore {
    /// Opens (and creates, mode 0700) the state root.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, Error> {
        let root = root.into();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&root)
            .map_err(|e| Error::io("cannot create state root", &root, e))?;
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Directory of container `id` (the id must have been validated).
    pub fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// Reserves `id`: creates its directory (failing if it exists) and locks it.
    pub fn create(&self, id: &str) -> Result<Locked, Error> {
        let dir = self.dir(id);
        match fs::DirBuilder::new().mode(0o711).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::AlreadyExists(id.to_string()))
            }
            Err(e) => return Err(Error::io("cannot create state directory", &dir, e)),
        }
        match Locked::acquire(id, dir.clone()) {
            Ok(l) => Ok(l),
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    /// Locks an existing container; fails with [`Error::NotFound`] if it does not exist (or was
    /// deleted while we waited for the lock).
    pub fn open(&self, id: &str) -> Result<Locked, Error> {
        let locked = Locked::acquire(id, self.dir(id))?;
        if !locked.state_path().exists() {
            return Err(Error::NotFound(id.to_string()));
        }
        Ok(locked)
    }

    /// Ids of every container with a state file, sorted.
    pub fn ids(&self) -> Result<Vec<String>, Error> {
        let entries =
            fs::read_dir(&self.root).map_err(|e| Error::io("cannot list", &self.root, e))?;
        let mut ids: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join(STATE_FILE).exists())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        ids.sort();
        Ok(ids)
    }
}

/// A container directory whose lock this process holds; dropping it releases the lock.
#[derive(Debug)]
pub struct Locked {
    id: String,
    dir: PathBuf,
    _lock: Flock<OwnedFd>,
}

impl Locked {
    fn acquire(id: &str, dir: PathBuf) -> Result<Self, Error> {
        let file = match fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(&dir)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound(id.to_string()))
            }
            Err(e) => return Err(Error::io("cannot open state directory", &dir, e)),
        };
        let lock = Flock::lock(OwnedFd::from(file), FlockArg::LockExclusive)
            .map_err(|(_, errno)| Error::io("cannot lock", &dir, errno.into()))?;
        Ok(Self {
            id: id.to_string(),
            dir,
            _lock: lock,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    pub fn load(&self) -> Result<State, Error> {
        let path = self.state_path();
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound(self.id.clone()))
            }
            Err(e) => return Err(Error::io("cannot read", &path, e)),
        };
        State::from_json(&text).map_err(|source| Error::StateCorrupt {
            id: self.id.clone(),
            source,
        })
    }

    /// Writes the state atomically: a temp file in the same directory, then a rename, so a
    /// reader sees the old state or the new one, never a part. No fsync: the state only
    /// describes processes of this boot, which a crash of the host ends too (runc and crun
    /// do not sync theirs either); on a root that is not a tmpfs (this host's /run is ext4)
    /// the three syncs of a `run` cost more than its container setup's mounts.
    pub fn save(&self, state: &State) -> Result<(), Error> {
        let path = self.state_path();
        let tmp = self.dir.join(".state.json.tmp");
        let json = serde_json::to_vec(state).map_err(|source| Error::StateCorrupt {
            id: self.id.clone(),
            source,
        })?;
        let write = || -> std::io::Result<()> {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&json)?;
            fs::rename(&tmp, &path)
        };
        write().map_err(|e| Error::io("cannot write", &path, e))
    }

    /// Removes the container directory and everything in it, then releases the lock.
    pub fn remove(self) -> Result<(), Error> {
        // Remove the state file first so a waiter that gets the lock next sees "does not exist".
        let _ = fs::remove_file(self.state_path());
        match fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("cannot remove", &self.dir, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(id: &str) -> State {
        State {
            oci_version: crate::OCI_VERSION.into(),
            id: id.into(),
            status: Status::Created,
            pid: Some(42),
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            created: Utc::now(),
            owner: "root".into(),
            annotations: HashMap::new(),
            isolation: Isolation::Namespaces,
            pid_start_time: Some(7),
            systemd_cgroup: false,
        }
    }

    #[test]
    fn create_save_load_remove() {
        let tmp = tempfile::tempdir().unwrap();
        let store = StateStore::new(tmp.path().join("root")).unwrap();
        let l = store.create("c1").unwrap();
        assert!(matches!(store.create("c1"), Err(Error::AlreadyExists(_))));
        l.save(&sample("c1")).unwrap();
        assert_eq!(l.load().unwrap().pid, Some(42));
        drop(l);
        assert_eq!(store.ids().unwrap(), vec!["c1".to_string()]);
        let l = store.open("c1").unwrap();
        l.remove().unwrap();
        assert!(matches!(store.open("c1"), Err(Error::NotFound(_))));
        assert!(store.ids().unwrap().is_empty());
    }

    #[test]
    fn oci_view_has_runc_fields() {
        let mut s = sample("x");
        let v = serde_json::to_value(s.oci()).unwrap();
        for k in [
            "ociVersion",
            "id",
            "pid",
            "status",
            "bundle",
            "rootfs",
            "created",
        ] {
            assert!(v.get(k).is_some(), "{k}");
        }
        s.status = Status::Stopped;
        assert_eq!(serde_json::to_value(s.oci()).unwrap()["pid"], 0);
    }
}
