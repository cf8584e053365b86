//! Least privilege for the VM's host processes, as Firecracker's jailer gives it.
//!
//! Every VM leases an unprivileged uid/gid of its own from a configured range
//! ([`JailOptions`]); the lease is a locked file in a lock directory, taken safely by VMs
//! that start in parallel and released at teardown. QEMU and vhost-device-vsock then run:
//!
//! * as that uid/gid, with no supplementary groups (but `kvm` when QEMU uses `/dev/kvm`);
//! * with every capability gone, the bounding set and the ambient set empty, and
//!   `no_new_privs`;
//! * in a private mount namespace whose root (pivot_root) is a per-process jail directory
//!   holding only what that process needs, bind-mounted at the same paths it has on the host
//!   (so command lines keep naming host paths): `/usr` read-only, `/dev/null`, `/dev/urandom`,
//!   `ld.so.cache`, and its own files (QEMU: kernel, initrd, console log, the vhost-user
//!   sockets it connects to; the vsock backend: its socket directory);
//! * with rlimits (no core files, bounded files, processes and file size);
//! * under seccomp: QEMU's own `-sandbox`, and for vhost-device-vsock an allow-list filter
//!   (KILL_PROCESS on anything else) loaded before exec.
//!
//! virtiofsd must serve files as their owners, so it stays uid 0, but starts with a bounding
//! set reduced to what it needs (see [`VIRTIOFSD_CAPS`]), `no_new_privs`, and its own
//! namespace sandbox and seccomp filter.
//!
//! Everything done between fork and exec is precomputed here ([`ExecJail`]) so that the child
//! only makes async-signal-safe system calls.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

mod lease;
pub use lease::JailIds;
pub(crate) use lease::{flock, open_lock_file, release, Lease};

/// Default first uid/gid of the range VMs lease from (far above login users, subuid ranges
/// (100000 + 65536·n) and nspawn's container range).
pub const DEFAULT_UID_BASE: u32 = 1_000_000_000;
/// Default size of that range: as many VMs as can run at once.
pub const DEFAULT_UID_COUNT: u32 = 65_536;
/// Default directory of the lease files (one per leased uid, `<dir>/<uid>`).
pub const DEFAULT_LOCK_DIR: &str = "/run/clearbox-vm/uids";

/// Where the jailed processes' uids come from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JailOptions {
    pub uid_base: u32,
    pub uid_count: u32,
    pub lock_dir: PathBuf,
}

impl Default for JailOptions {
    fn default() -> Self {
        JailOptions {
            uid_base: DEFAULT_UID_BASE,
            uid_count: DEFAULT_UID_COUNT,
            lock_dir: PathBuf::from(DEFAULT_LOCK_DIR),
        }
    }
}

impl JailOptions {
    pub fn validate(&self) -> Result<()> {
        let end = u64::from(self.uid_base) + u64::from(self.uid_count);
        if self.uid_count == 0 || self.uid_base == 0 || end > u64::from(u32::MAX) {
            return Err(Error::InvalidConfig(format!(
                "jail uid range {}+{} must be non-empty, above 0 and below 2^32-1",
                self.uid_base, self.uid_count
            )));
        }
        if !self.lock_dir.is_absolute() {
            return Err(Error::InvalidConfig(format!(
                "jail lock_dir {} must be absolute",
                self.lock_dir.display()
            )));
        }
        Ok(())
    }
}

pub(super) fn path_err(op: &'static str, path: &Path, source: io::Error) -> Error {
    Error::Path {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn cstr(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| Error::InvalidConfig(format!("path {} has a NUL byte", p.display())))
}

/// One bind mount into a jail, at the same path as on the host.
#[derive(Clone, Debug)]
pub(crate) struct Bind {
    pub path: PathBuf,
    pub writable: bool,
}

impl Bind {
    pub(crate) fn ro(p: impl Into<PathBuf>) -> Bind {
        Bind {
            path: p.into(),
            writable: false,
        }
    }

    pub(crate) fn rw(p: impl Into<PathBuf>) -> Bind {
        Bind {
            path: p.into(),
            writable: true,
        }
    }
}

/// What every dynamically linked program needs: the host's `/usr` (read-only), the top-level
/// links into it (merged /usr), the loader cache, `/dev/null` and `/dev/urandom`.
pub(crate) fn base_binds(program: &Path) -> Vec<Bind> {
    let mut v = vec![
        Bind::ro("/usr"),
        Bind::rw("/dev/null"),
        Bind::ro("/dev/urandom"),
    ];
    if Path::new("/etc/ld.so.cache").is_file() {
        v.push(Bind::ro("/etc/ld.so.cache"));
    }
    // /bin, /lib, ... are links into /usr on merged-/usr systems (made as links in the jail);
    // real directories elsewhere are bound read-only.
    for d in ["/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"] {
        match std::fs::symlink_metadata(d) {
            Ok(m) if m.is_dir() => v.push(Bind::ro(d)),
            _ => {}
        }
    }
    if !program.starts_with("/usr") {
        v.push(Bind::ro(program));
    }
    v
}

/// Process limits applied before exec.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub nofile: Option<u64>,
    /// Tasks (threads count) of the jail uid, across the VM's jailed processes.
    pub nproc: Option<u64>,
    pub fsize: Option<u64>,
}

/// Files per jailed process; QEMU keeps one per device plus its event fds.
pub(crate) const NOFILE: u64 = 4096;
/// Tasks of one VM's uid: QEMU's vCPU, I/O and worker threads, the vsock backend's threads and
/// the shim (threads count). 255 vCPUs fit.
pub(crate) const NPROC: u64 = 1024;
/// Largest file a jailed process writes (QEMU's console log, logs on stderr).
pub(crate) const FSIZE: u64 = 256 << 20;

/// Capabilities virtiofsd keeps in its bounding set: to serve files as their owners
/// (CHOWN, DAC_OVERRIDE, FOWNER, FSETID, SETGID, SETUID for setfsuid/setfsgid), to build
/// its own namespace sandbox (SYS_ADMIN: unshare, mount, pivot_root) and drop capabilities
/// (SETPCAP; the Rust virtiofsd's libcap-ng also refuses to apply its set without
/// DAC_READ_SEARCH in the bounding set, measured). Not MKNOD (no device nodes on the host's
/// filesystem), not SETFCAP (no file capabilities on host files), nothing else. Its worker
/// keeps only the six file capabilities.
pub(crate) const VIRTIOFSD_CAPS: &[u32] = &[
    0,  // CAP_CHOWN
    1,  // CAP_DAC_OVERRIDE
    2,  // CAP_DAC_READ_SEARCH
    3,  // CAP_FOWNER
    4,  // CAP_FSETID
    6,  // CAP_SETGID
    7,  // CAP_SETUID
    8,  // CAP_SETPCAP
    21, // CAP_SYS_ADMIN
];

/// The per-VM jail: the leased ids and the directories of its jailed processes.
#[derive(Debug)]
pub(crate) struct Jail {
    pub lease: Lease,
    /// `<run_dir>/jail`: one root directory per jailed process below it.
    pub dir: PathBuf,
    /// `<run_dir>/sock`: owned by the jail uid, 0700: the vsock backend's sockets.
    pub sock_dir: PathBuf,
    /// `<run_dir>/fs`: root's, 0711: virtiofsd's sockets (each handed to the jail uid).
    pub fs_dir: PathBuf,
}

impl Jail {
    pub(crate) fn new(opts: &JailOptions, run_dir: &Path) -> Result<Jail> {
        let lease = Lease::take(opts, run_dir)?;
        let jail = Jail {
            dir: run_dir.join("jail"),
            sock_dir: run_dir.join("sock"),
            fs_dir: run_dir.join("fs"),
            lease,
        };
        let made = (|| {
            for (d, mode) in [
                (&jail.dir, 0o711),
                (&jail.sock_dir, 0o700),
                (&jail.fs_dir, 0o711),
            ] {
                mkdir(d, mode)?;
            }
            jail.give(&jail.sock_dir)
        })();
        if let Err(e) = made {
            for d in [&jail.dir, &jail.sock_dir, &jail.fs_dir] {
                let _ = std::fs::remove_dir_all(d);
            }
            release(jail.ids(), run_dir);
            return Err(e);
        }
        Ok(jail)
    }

    pub(crate) fn ids(&self) -> &JailIds {
        &self.lease.ids
    }

    /// Hands `path` to the jail uid (mode 0600 for files; directories keep theirs).
    pub(crate) fn give(&self, path: &Path) -> Result<()> {
        let ids = self.ids();
        std::os::unix::fs::lchown(path, Some(ids.uid), Some(ids.gid))
            .map_err(|e| path_err("chown", path, e))?;
        let meta = std::fs::symlink_metadata(path).map_err(|e| path_err("stat", path, e))?;
        if !meta.is_dir() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| path_err("chmod", path, e))?;
        }
        Ok(())
    }

    /// The pre-exec plan of an unprivileged process named `role` that sees only `binds`.
    pub(crate) fn unprivileged(
        &self,
        role: &str,
        binds: &[Bind],
        extra_groups: &[u32],
        limits: Limits,
        seccomp: Option<Vec<libc::sock_filter>>,
    ) -> Result<ExecJail> {
        let root = self.dir.join(role);
        mkdir(&root, 0o711)?;
        let mut mounts = Vec::new();
        for b in binds {
            let meta = match std::fs::metadata(&b.path) {
                Ok(m) => m,
                Err(e) => return Err(path_err("stat (for the jail)", &b.path, e)),
            };
            let target = root.join(b.path.strip_prefix("/").unwrap_or(&b.path));
            make_mount_point(&root, &target, meta.is_dir())?;
            let mut flags = libc::MS_NOSUID;
            if !b.writable {
                flags |= libc::MS_RDONLY;
            }
            if meta.is_dir() && b.writable {
                flags |= libc::MS_NOEXEC | libc::MS_NODEV;
            }
            mounts.push(MountStep {
                src: cstr(&b.path)?,
                dst: cstr(&target)?,
                remount_flags: flags,
            });
        }
        // Top-level links of a merged /usr, as on the host.
        for d in ["/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"] {
            if let Ok(link) = std::fs::read_link(d) {
                let at = root.join(&d[1..]);
                if std::fs::symlink_metadata(&at).is_err() {
                    std::os::unix::fs::symlink(&link, &at)
                        .map_err(|e| path_err("symlink", &at, e))?;
                }
            }
        }
        let ids = self.ids();
        let mut groups = extra_groups.to_vec();
        groups.sort_unstable();
        groups.dedup();
        Ok(ExecJail {
            root: Some(cstr(&root)?),
            mounts,
            ids: Some((ids.uid, ids.gid)),
            groups,
            keep_caps: 0,
            limits,
            seccomp,
            umask: 0o077,
        })
    }
}

/// The pre-exec plan of a helper that stays uid 0 (virtiofsd): bounding set cut to `keep`,
/// no_new_privs, rlimits. No mount namespace of ours: it builds its own sandbox.
pub(crate) fn privileged_helper(keep: &[u32], limits: Limits) -> ExecJail {
    ExecJail {
        root: None,
        mounts: Vec::new(),
        ids: None,
        groups: Vec::new(),
        keep_caps: keep.iter().fold(0u64, |m, c| m | (1u64 << c)),
        limits,
        seccomp: None,
        // Its sockets are handed to the jail uid by the parent once they exist.
        umask: 0o077,
    }
}

pub(crate) fn mkdir(d: &Path, mode: u32) -> Result<()> {
    match std::fs::DirBuilder::new().mode(mode).create(d) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && d.is_dir() => Ok(()),
        Err(e) => Err(path_err("create", d, e)),
    }
}

/// Creates `target` (a directory or an empty file) and its parents below `root`.
fn make_mount_point(root: &Path, target: &Path, dir: bool) -> Result<()> {
    if let Some(parent) = target.parent() {
        if parent.starts_with(root) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o711)
                .create(parent)
                .map_err(|e| path_err("create", parent, e))?;
        }
    }
    if std::fs::symlink_metadata(target).is_ok() {
        return Ok(());
    }
    if dir {
        mkdir(target, 0o711)
    } else {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(target)
            .map(drop)
            .map_err(|e| path_err("create", target, e))
    }
}

#[derive(Debug)]
struct MountStep {
    src: CString,
    dst: CString,
    remount_flags: libc::c_ulong,
}

/// Everything a child does between fork and exec to enter its jail, precomputed.
#[derive(Debug)]
pub(crate) struct ExecJail {
    root: Option<CString>,
    mounts: Vec<MountStep>,
    ids: Option<(u32, u32)>,
    groups: Vec<u32>,
    /// Bounding set kept (bit n = capability n); 0 drops all.
    keep_caps: u64,
    limits: Limits,
    seccomp: Option<Vec<libc::sock_filter>>,
    umask: libc::mode_t,
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl ExecJail {
    /// Runs in the forked child before exec: only async-signal-safe system calls on memory
    /// allocated before the fork.
    ///
    /// # Safety
    /// Call only between fork and exec in the child.
    pub(crate) unsafe fn enter(&self) -> io::Result<()> {
        let l = &self.limits;
        // SAFETY: plain system calls on values owned by `self`, which outlives
        // the call; no allocation.
        unsafe {
            let set = |res, v: u64| {
                let r = libc::rlimit {
                    rlim_cur: v,
                    rlim_max: v,
                };
                check(libc::setrlimit(res, &r))
            };
            set(libc::RLIMIT_CORE, 0)?;
            if let Some(n) = l.nofile {
                let mut cur: libc::rlimit = std::mem::zeroed();
                check(libc::getrlimit(libc::RLIMIT_NOFILE, &mut cur))?;
                // Never above what the caller may raise to.
                set(libc::RLIMIT_NOFILE, n.min(cur.rlim_max))?;
            }
            if let Some(n) = l.nproc {
                set(libc::RLIMIT_NPROC, n)?;
            }
            if let Some(n) = l.fsize {
                set(libc::RLIMIT_FSIZE, n)?;
            }
            if let Some(root) = &self.root {
                self.pivot(root)?;
            }
            check(libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL,
                0,
                0,
                0,
            ))?;
            drop_bounding_set(self.keep_caps)?;
            if let Some((uid, gid)) = self.ids {
                check(libc::setgroups(self.groups.len(), self.groups.as_ptr()))?;
                check(libc::setresgid(gid, gid, gid))?;
                // From uid 0 to another uid without KEEPCAPS: permitted, effective and
                // ambient sets are cleared.
                check(libc::setresuid(uid, uid, uid))?;
            }
            libc::umask(self.umask);
            check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
        }
        Ok(())
    }

    /// Loads the seccomp filter, if any: the very last step before exec, since from here on
    /// only the allowed system calls (and `execve`) work.
    ///
    /// # Safety
    /// As [`ExecJail::enter`], after it.
    pub(crate) unsafe fn load_seccomp(&self) -> io::Result<()> {
        if let Some(filter) = &self.seccomp {
            let prog = libc::sock_fprog {
                len: filter.len() as libc::c_ushort,
                filter: filter.as_ptr() as *mut libc::sock_filter,
            };
            // SAFETY: `prog` points into `self`, alive for the call; no_new_privs is set.
            check(unsafe {
                libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &prog as *const libc::sock_fprog,
                    0,
                    0,
                )
            })?;
        }
        Ok(())
    }

    /// A private mount namespace whose root is `root` with the binds in it.
    ///
    /// # Safety
    /// As [`ExecJail::enter`].
    unsafe fn pivot(&self, root: &CString) -> io::Result<()> {
        let null = std::ptr::null::<libc::c_char>();
        let nodata = std::ptr::null::<libc::c_void>();
        // SAFETY: system calls on NUL-terminated strings owned by `self`.
        unsafe {
            check(libc::unshare(libc::CLONE_NEWNS))?;
            check(libc::mount(
                null,
                c"/".as_ptr(),
                null,
                libc::MS_REC | libc::MS_PRIVATE,
                nodata,
            ))?;
            check(libc::mount(
                root.as_ptr(),
                root.as_ptr(),
                null,
                libc::MS_BIND,
                nodata,
            ))?;
            for m in &self.mounts {
                check(libc::mount(
                    m.src.as_ptr(),
                    m.dst.as_ptr(),
                    null,
                    libc::MS_BIND | libc::MS_REC,
                    nodata,
                ))?;
                check(libc::mount(
                    null,
                    m.dst.as_ptr(),
                    null,
                    libc::MS_BIND | libc::MS_REMOUNT | m.remount_flags,
                    nodata,
                ))?;
            }
            check(libc::chdir(root.as_ptr()))?;
            check(libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) as i32)?;
            check(libc::umount2(c".".as_ptr(), libc::MNT_DETACH))?;
            check(libc::chdir(c"/".as_ptr()))?;
            // The jail's own directories are read-only too; only binds marked writable are not.
            check(libc::mount(
                null,
                c"/".as_ptr(),
                null,
                libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID,
                nodata,
            ))?;
        }
        Ok(())
    }
}

/// Group owning a device node (`kvm` for `/dev/kvm`), for a QEMU that opens it; none for
/// root's group.
pub(crate) fn device_group(dev: &Path) -> Option<u32> {
    std::fs::metadata(dev)
        .ok()
        .map(|m| m.gid())
        .filter(|g| *g != 0)
}

/// Drops the calling process (a shim, after its setup) to the VM's uid/gid with no
/// capability at all (permitted, effective, bounding, ambient), no_new_privs, and not dumpable
/// (the jailed processes share its uid and must not ptrace it). It can still signal QEMU and
/// the vsock backend (same uid); virtiofsd (uid 0) goes with it through its parent-death
/// signal. Call it from a single-threaded process: capabilities are per thread.
pub fn drop_privileges(uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: plain prctl/set*id system calls on local values.
    unsafe {
        drop_bounding_set(0)?;
        check(libc::setgroups(0, std::ptr::null()))?;
        check(libc::setresgid(gid, gid, gid))?;
        // From uid 0 to another uid without KEEPCAPS: permitted, effective and ambient sets
        // are cleared.
        check(libc::setresuid(uid, uid, uid))?;
        check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
        check(libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0))?;
    }
    Ok(())
}

/// Drops every capability not in `keep` (bit n = capability n) from the bounding set.
///
/// # Safety
/// Async-signal-safe: usable between fork and exec.
unsafe fn drop_bounding_set(keep: u64) -> io::Result<()> {
    for cap in 0..64u32 {
        if keep & (1u64 << cap) != 0 {
            continue;
        }
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } != 0 {
            let e = io::Error::last_os_error();
            // EINVAL: beyond the kernel's last capability.
            if e.raw_os_error() == Some(libc::EINVAL) {
                break;
            }
            return Err(e);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seccomp::{allow_list_filter, VSOCK_SYSCALLS};

    #[test]
    fn leases_are_exclusive_and_reusable() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = JailOptions {
            uid_base: 3_000_000_000,
            uid_count: 2,
            lock_dir: tmp.path().join("ids"),
        };
        let a = Lease::take(&opts, Path::new("/a")).unwrap();
        let b = Lease::take(&opts, Path::new("/b")).unwrap();
        assert_ne!(a.ids.uid, b.ids.uid);
        assert!(
            Lease::take(&opts, Path::new("/c")).is_err(),
            "range is full"
        );
        let freed = a.ids.uid;
        std::fs::remove_file(&a.ids.lock).unwrap();
        drop(a);
        let c = Lease::take(&opts, Path::new("/c")).unwrap();
        assert_eq!(c.ids.uid, freed);
    }

    #[test]
    fn bad_ranges_are_refused() {
        let o = JailOptions {
            uid_count: 0,
            ..Default::default()
        };
        assert!(o.validate().is_err());
        let o = JailOptions {
            uid_base: u32::MAX - 1,
            ..Default::default()
        };
        assert!(o.validate().is_err());
        assert!(JailOptions::default().validate().is_ok());
    }

    fn status_field(pid: u32, key: &str) -> String {
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}:")))
            .unwrap_or_else(|| panic!("{key} missing"))
            .trim()
            .to_string()
    }

    fn jailed(
        tmp: &Path,
        seccomp: Option<Vec<libc::sock_filter>>,
        secs: &str,
    ) -> (Jail, std::process::Child) {
        let opts = JailOptions {
            uid_base: 3_100_000_000,
            uid_count: 1000,
            lock_dir: tmp.join("ids"),
        };
        let run_dir = tmp.join("vm");
        std::fs::create_dir(&run_dir).unwrap();
        let j = Jail::new(&opts, &run_dir).unwrap();
        let sleep = Path::new("/usr/bin/sleep");
        let mut binds = base_binds(sleep);
        binds.push(Bind::rw(&j.sock_dir));
        let limits = Limits {
            nofile: Some(NOFILE),
            nproc: Some(NPROC),
            fsize: Some(FSIZE),
        };
        let plan = j.unprivileged("t", &binds, &[], limits, seccomp).unwrap();
        let child = crate::proc::spawn(
            std::process::Command::new(sleep).arg(secs),
            &crate::proc::SpawnOpts {
                die_with_parent: true,
                jail: Some(std::sync::Arc::new(plan)),
                ..Default::default()
            },
        )
        .unwrap();
        (j, child)
    }

    /// Needs root, as the driver does.
    #[test]
    fn jailed_process_has_no_privilege_and_its_own_root() {
        let tmp = tempfile::tempdir().unwrap();
        let (j, mut child) = jailed(tmp.path(), None, "5");
        let pid = child.id();
        // Wait for the exec (the comm changes).
        for _ in 0..200 {
            if std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap() == "sleep\n" {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let uid = j.ids().uid.to_string();
        assert_eq!(
            status_field(pid, "Uid"),
            [uid.as_str(); 4].join("\t"),
            "uid"
        );
        assert_eq!(status_field(pid, "Groups"), "");
        for k in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            assert_eq!(status_field(pid, k), "0000000000000000", "{k}");
        }
        assert_eq!(status_field(pid, "NoNewPrivs"), "1");
        let ns = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/mnt")).unwrap();
        assert_ne!(ns(&pid.to_string()), ns("self"), "own mount namespace");
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
        assert!(
            limits
                .lines()
                .any(|l| l.starts_with("Max core file size") && l.contains(" 0 ")),
            "{limits}"
        );
        // Its root holds only the jail: no /etc/passwd, no /home.
        let root = std::fs::read_link(format!("/proc/{pid}/root")).unwrap();
        assert_eq!(root, Path::new("/"), "pivoted root reads as / from outside");
        assert!(!Path::new(&format!("/proc/{pid}/root/etc/passwd")).exists());
        assert!(Path::new(&format!("/proc/{pid}/root/usr/bin/sleep")).exists());
        child.kill().unwrap();
        child.wait().unwrap();
        let ids = j.ids().clone();
        drop(j);
        release(&ids, &tmp.path().join("vm"));
        assert!(!ids.lock.exists());
    }

    #[test]
    fn seccomp_allow_list_kills_other_calls() {
        use std::os::unix::process::ExitStatusExt;
        let without_sleep: Vec<&str> = VSOCK_SYSCALLS
            .iter()
            .copied()
            .filter(|n| !n.ends_with("nanosleep"))
            .collect();
        let mut with_sleep = without_sleep.clone();
        with_sleep.push("clock_nanosleep");
        // With clock_nanosleep allowed, sleep(1) runs to its end under the filter...
        let tmp = tempfile::tempdir().unwrap();
        let filter = allow_list_filter(&with_sleep, false).unwrap();
        let (_j, mut child) = jailed(tmp.path(), Some(filter), "0.05");
        let status = child.wait().unwrap();
        assert!(status.success(), "{status:?}");
        // ... without it, sleep dies of SIGSYS.
        let tmp = tempfile::tempdir().unwrap();
        let filter = allow_list_filter(&without_sleep, false).unwrap();
        let (_j, mut child) = jailed(tmp.path(), Some(filter), "5");
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGSYS), "{status:?}");
    }

    #[test]
    fn vsock_filter_compiles() {
        let f = allow_list_filter(VSOCK_SYSCALLS, false).unwrap();
        assert!(f.len() > VSOCK_SYSCALLS.len() / 2, "{}", f.len());
    }
}
