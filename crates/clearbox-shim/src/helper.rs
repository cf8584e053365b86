//! Lifecycle operations that start processes run in a helper: this binary re-executed as
//! `__op ROOT REPLY REQUEST`, single-threaded, with the container process's stdio as its own
//! fds 0/1/2 (the backends hand the caller's stdio to the container's process, as runc does).
//! It calls clearbox's runtime core, writes a [`Reply`] to the file REPLY and exits. (A file,
//! not a pipe: the processes the helper leaves behind would inherit a pipe and keep it open.)
//!
//! Why not in the shim's own process: container setup forks (fly, libcontainer) and changes
//! process-wide state (current directory, dumpable flag, SIGPIPE disposition), and hooks and
//! the VM shim are started with `Command` and waited for — while the shim's reaper thread
//! reaps every child of the shim. A fresh process per operation keeps both apart, as the runc
//! shim keeps them apart by running `runc create`/`start`/`exec`/`delete`.
//!
//! Processes the helper leaves behind (the container's init or the VM's host shim, exec'd
//! processes) are re-parented to the shim, a child subreaper, which reaps them and reports
//! their exit.

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use clearbox_core::runtime::{CreateArgs, ExecArgs};
use clearbox_core::{Config, Error};
use clearbox_util::error::chain;
use containerd_shim::monitor::{monitor_subscribe, wait_pid, Topic};
use serde::{Deserialize, Serialize};

/// The first argument that selects the helper role.
pub const SUBCOMMAND: &str = "__op";

static REPLIES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A mount of the container's root file system, as containerd hands it to `Create`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RootMount {
    pub typ: String,
    pub source: String,
    pub options: Vec<String>,
}

/// One operation.
#[derive(Debug, Serialize, Deserialize)]
pub enum Op {
    /// Creates the container; on failure unmounts `<bundle>/rootfs` when `unmount`.
    Create {
        id: String,
        bundle: PathBuf,
        unmount: bool,
        console_socket: Option<PathBuf>,
    },
    Start {
        id: String,
    },
    Exec {
        id: String,
        process_file: PathBuf,
        tty: bool,
        console_socket: Option<PathBuf>,
    },
    /// Deletes the container (forced: whatever still runs is killed), then unmounts
    /// `<bundle>/rootfs` when `unmount` is given.
    Delete {
        id: String,
        unmount: Option<PathBuf>,
    },
}

/// What the helper reports.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Reply {
    pub pid: Option<i32>,
    pub error: Option<String>,
}

/// The container process's stdio for the helper (each `None`: /dev/null).
#[derive(Debug, Default)]
pub struct ChildStdio {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

/// Runs `op` in a helper process and returns the pid it reports.
pub fn run(root: &Path, op: &Op, stdio: ChildStdio) -> Result<Option<i32>, String> {
    let request = serde_json::to_string(op).map_err(|e| format!("encode request: {e}"))?;
    // A directory of this operation's own: every shim of the namespace (one per pod) shares
    // `root`, and a directory shared by their operations would be removed by one while another's
    // helper is about to write its reply there (10 pods at once failed that way).
    std::fs::create_dir_all(root).map_err(|e| format!("create {}: {e}", root.display()))?;
    let dir = root.join(format!(
        ".op-{}-{}",
        std::process::id(),
        REPLIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let reply_path = dir.join("reply.json");
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg(SUBCOMMAND).arg(root).arg(&reply_path).arg(&request);
    let fd_or_null = |fd: Option<OwnedFd>| fd.map(Stdio::from).unwrap_or_else(Stdio::null);
    cmd.stdin(fd_or_null(stdio.stdin))
        .stdout(fd_or_null(stdio.stdout))
        .stderr(fd_or_null(stdio.stderr));
    // Subscribed before the child exists: the shim's reaper reaps it and reports its exit.
    let spawned = monitor_subscribe(Topic::Pid)
        .map_err(|e| format!("subscribe to exits: {e}"))
        .and_then(|exits| {
            let child = cmd.spawn().map_err(|e| format!("start the helper: {e}"))?;
            Ok((exits, child))
        });
    let (exits, child) = match spawned {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_dir(&dir);
            return Err(e);
        }
    };
    // Our copies of the process's stdio go now: only the process may hold them.
    drop(cmd);
    let code = wait_pid(child.id() as i32, exits);
    let text = std::fs::read(&reply_path);
    let _ = std::fs::remove_file(&reply_path);
    let _ = std::fs::remove_dir(&dir);
    let text = text.map_err(|e| format!("the helper ended ({code}) without a reply: {e}"))?;
    let reply: Reply = serde_json::from_slice(&text)
        .map_err(|e| format!("the helper ended ({code}) with a bad reply: {e}"))?;
    match reply.error {
        Some(e) => Err(e),
        None => Ok(reply.pid),
    }
}

/// Entry point of `__op ROOT REPLY REQUEST`.
pub fn main(args: &[OsString]) -> u8 {
    let [root, reply_path, request] = args else {
        eprintln!("containerd-shim-clearbox-v2: {SUBCOMMAND} is internal to the shim");
        return 2;
    };
    let root = PathBuf::from(root);
    // Operations fork the processes that enter a container: they run from a read-only view
    // of this binary (CVE-2019-5736; clearbox_core::exe_seal). The shim itself, which enters
    // nothing, stays as containerd started it.
    let sealed = clearbox_core::exe_seal::ensure_sealed().map_err(|e| chain(&e));
    let reply = match sealed.and_then(|()| {
        serde_json::from_str::<Op>(&request.to_string_lossy())
            .map_err(|e| format!("bad request: {e}"))
    }) {
        Ok(op) => match perform(&root, op) {
            Ok(pid) => Reply { pid, error: None },
            Err(e) => Reply {
                pid: None,
                error: Some(e),
            },
        },
        Err(e) => Reply {
            pid: None,
            error: Some(e),
        },
    };
    let failed = reply.error.is_some();
    let text = serde_json::to_vec(&reply).unwrap_or_default();
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(reply_path)
        .and_then(|mut f| f.write_all(&text));
    if written.is_err() {
        return 3;
    }
    u8::from(failed)
}

fn perform(root: &Path, op: Op) -> Result<Option<i32>, String> {
    let rt = runtime(root)?;
    match op {
        Op::Create {
            id,
            bundle,
            unmount,
            console_socket,
        } => {
            let target = bundle.join("rootfs");
            let created = rt.create(
                &CreateArgs {
                    id,
                    bundle,
                    console_socket,
                    ..Default::default()
                },
                false,
            );
            match created {
                Ok(state) => Ok(state.pid),
                Err(e) => {
                    if unmount {
                        unmount_rootfs(&target);
                    }
                    Err(chain(&e))
                }
            }
        }
        Op::Start { id } => rt.start(&id).map(|s| s.pid).map_err(|e| chain(&e)),
        Op::Exec {
            id,
            process_file,
            tty,
            console_socket,
        } => {
            let pid = rt
                .exec(&ExecArgs {
                    id,
                    process_file: Some(process_file),
                    tty,
                    console_socket,
                    // The helper does not wait: the shim reaps the process.
                    detach: true,
                    ..Default::default()
                })
                .map_err(|e| chain(&e))?;
            Ok(Some(pid))
        }
        Op::Delete { id, unmount } => {
            let deleted = match rt.delete(&id, true) {
                Ok(()) | Err(Error::NotFound(_)) => Ok(None),
                Err(e) => Err(chain(&e)),
            };
            if let Some(target) = unmount {
                unmount_rootfs(&target);
            }
            deleted
        }
    }
}

/// Mounts containerd's rootfs mounts on `target` (`<bundle>/rootfs`). Runs in the shim's
/// process: containerd-shim's mount helper forks a child and waits for it through the shim's
/// reaper.
pub fn mount_rootfs(mounts: &[RootMount], target: &Path) -> Result<(), String> {
    std::fs::create_dir_all(target).map_err(|e| format!("create {}: {e}", target.display()))?;
    for m in mounts {
        containerd_shim::mount::mount_rootfs(
            Some(m.typ.as_str()).filter(|t| !t.is_empty()),
            Some(m.source.as_str()).filter(|s| !s.is_empty()),
            &m.options,
            target,
        )
        .map_err(|e| {
            unmount_rootfs(target);
            format!("mount the rootfs ({} {}): {e}", m.typ, m.source)
        })?;
    }
    Ok(())
}

/// Unmounts everything at and below `target` (lazily, so a busy mount cannot stay behind).
pub fn unmount_rootfs(target: &Path) {
    while nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH).is_ok() {}
}

/// The runtime over every backend, with its state under `root`. The isolation comes from the
/// spec's annotation, else `CLEARBOX_ISOLATION` (as the CLI's `--isolation`), else the
/// configuration file, else `vm`.
pub fn runtime(root: &Path) -> Result<clearbox_core::Runtime<'static>, String> {
    let config = Config::load_default().map_err(|e| chain(&e))?;
    let isolation = match std::env::var("CLEARBOX_ISOLATION") {
        Ok(v) if !v.is_empty() => Some(v.parse().map_err(|e: Error| chain(&e))?),
        _ => None,
    };
    clearbox_backends::runtime(root, config, isolation, false).map_err(|e| chain(&e))
}
