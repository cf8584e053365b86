//! Privilege separation: fetch, verify and unpack run in a worker process (a re-exec of the
//! clearbox binary) that drops to the unprivileged fetch user before it reads anything from the
//! network or an archive: all capabilities gone (bounding, ambient, inheritable, permitted,
//! effective), no supplementary groups, `no_new_privs`, and a private mount namespace in which
//! every mount but the store is read-only — so it can write only into the store, which that user
//! owns.
//!
//! Protocol: the parent writes one JSON [`Request`] line on the worker's stdin (followed, for an
//! archive import, by the archive's bytes, which root opened); the worker answers one JSON
//! [`Response`] on stdout. Messages for the user go to stderr.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fetch::{self, FetchOptions};
use crate::policy::{Policy, PolicyFiles};
use crate::store::{ImageRecord, Store};

/// The hidden subcommand the parent runs.
pub const SUBCOMMAND: &str = "__image-worker";

/// What the worker is asked to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum Op {
    Pull {
        reference: String,
    },
    /// The archive's bytes follow the request on stdin (root opened the file, or streamed the
    /// layout directory `path` as a tar when `layout`).
    Import {
        path: PathBuf,
        layout: bool,
        name: Option<String>,
    },
    Verify {
        name: String,
    },
    Remove {
        names: Vec<String>,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub op: Op,
    pub store: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub policy: PolicyFiles,
    pub fetch: FetchOptions,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "camelCase")]
pub enum Response {
    Ok {
        records: Vec<ImageRecord>,
        removed: Vec<String>,
    },
    Err {
        message: String,
        refused: bool,
    },
}

/// The worker's main: returns the process exit code.
pub fn main() -> i32 {
    let stdin = std::io::stdin();
    let mut input = std::io::BufReader::new(stdin.lock());
    let response = match serve(&mut input) {
        Ok(r) => r,
        Err(e) => Response::Err {
            refused: matches!(e, Error::Refused { .. }),
            message: chain(&e),
        },
    };
    let out = serde_json::to_string(&response).unwrap_or_else(|e| {
        format!("{{\"result\":\"err\",\"message\":\"cannot encode the response: {e}\",\"refused\":false}}")
    });
    let mut stdout = std::io::stdout();
    if writeln!(stdout, "{out}")
        .and_then(|_| stdout.flush())
        .is_err()
    {
        return 1;
    }
    0
}

use clearbox_util::error::chain;

fn serve(input: &mut dyn BufRead) -> Result<Response> {
    let mut line = String::new();
    input
        .read_line(&mut line)
        .map_err(|e| Error::io("cannot read the request", "stdin", e))?;
    let req: Request =
        serde_json::from_str(&line).map_err(|e| Error::invalid("worker request", e.to_string()))?;
    drop_privileges(req.uid, req.gid, &req.store)?;
    let store = Store::new(&req.store);
    store.init_layout()?;
    let _lock = store.lock_exclusive()?;
    let policy = Policy::load(&req.policy)?;
    Ok(match req.op {
        Op::Pull { reference } => Response::Ok {
            records: vec![fetch::pull(&store, &policy, &req.fetch, &reference)?],
            removed: vec![],
        },
        Op::Import { path, layout, name } => {
            let rec = fetch::import(
                &store,
                &policy,
                &req.fetch,
                &path,
                input,
                layout,
                name.as_deref(),
            );
            // An archive leaves every file it carried in the store; keep only what is named.
            let gc = store.gc();
            let rec = rec?;
            gc?;
            Response::Ok {
                records: vec![rec],
                removed: vec![],
            }
        }
        Op::Verify { name } => Response::Ok {
            records: vec![fetch::verify_stored(&store, &policy, &name)?],
            removed: vec![],
        },
        Op::Remove { names } => Response::Ok {
            records: vec![],
            removed: fetch::remove(&store, &names)?,
        },
    })
}

/// Becomes `uid:gid` with no capabilities, no supplementary groups and `no_new_privs`, in a mount
/// namespace where only `store` is writable. When already running as `uid` (tests, a rootless
/// caller) only the last steps apply.
pub fn drop_privileges(uid: u32, gid: u32, store: &Path) -> Result<()> {
    use nix::unistd::{Gid, Uid};
    let perr = |what: &str, e: &dyn std::fmt::Display| Error::Privilege(format!("{what}: {e}"));
    if uid == 0 {
        return Err(Error::Privilege(
            "the fetch user must not be root (set [image] user in config.toml)".into(),
        ));
    }
    let euid = nix::unistd::geteuid().as_raw();
    if euid == 0 {
        restrict_writes(store)?;
        // Bounding set first (needs CAP_SETPCAP, which we still have).
        for cap in caps::all() {
            caps::drop(None, caps::CapSet::Bounding, cap)
                .map_err(|e| perr("cannot drop the bounding set", &e))?;
        }
        caps::clear(None, caps::CapSet::Ambient)
            .map_err(|e| perr("cannot clear ambient capabilities", &e))?;
        caps::clear(None, caps::CapSet::Inheritable)
            .map_err(|e| perr("cannot clear inheritable capabilities", &e))?;
        nix::unistd::setgroups(&[]).map_err(|e| perr("setgroups", &e))?;
        let g = Gid::from_raw(gid);
        nix::unistd::setresgid(g, g, g).map_err(|e| perr("setresgid", &e))?;
        let u = Uid::from_raw(uid);
        // Without PR_SET_KEEPCAPS the permitted and effective sets are cleared here.
        nix::unistd::setresuid(u, u, u).map_err(|e| perr("setresuid", &e))?;
    } else if euid != uid {
        return Err(Error::Privilege(format!(
            "running as uid {euid}: cannot switch to the fetch user {uid} (run as root)"
        )));
    }
    // SAFETY: PR_SET_NO_NEW_PRIVS and PR_SET_PDEATHSIG take integer arguments only.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(perr("no_new_privs", &std::io::Error::last_os_error()));
        }
        // Set after the uid change, which clears it: the worker dies with its parent.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
    }
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    // Check, rather than trust, the result.
    let r = nix::unistd::getresuid().map_err(|e| perr("getresuid", &e))?;
    if r.real.as_raw() != uid || r.effective.as_raw() != uid || r.saved.as_raw() != uid {
        return Err(Error::Privilege("the uid did not change".into()));
    }
    let eff = caps::read(None, caps::CapSet::Effective).map_err(|e| perr("capabilities", &e))?;
    let per = caps::read(None, caps::CapSet::Permitted).map_err(|e| perr("capabilities", &e))?;
    if !eff.is_empty() || !per.is_empty() {
        return Err(Error::Privilege(format!("capabilities remain: {eff:?}")));
    }
    Ok(())
}

/// A private mount namespace where everything is read-only but the store.
fn restrict_writes(store: &Path) -> Result<()> {
    use nix::mount::{mount, MsFlags};
    let perr = |what: &str, e: &dyn std::fmt::Display| Error::Privilege(format!("{what}: {e}"));
    let store = store
        .canonicalize()
        .map_err(|e| Error::io("cannot resolve the store", store, e))?;
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(|e| perr("unshare(CLONE_NEWNS)", &e))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(|e| perr("making / a slave mount", &e))?;
    mount(
        Some(&store),
        &store,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| perr("binding the store", &e))?;
    mount_setattr(Path::new("/"), MOUNT_ATTR_RDONLY, 0)
        .map_err(|e| perr("making / read-only", &e))?;
    mount_setattr(&store, 0, MOUNT_ATTR_RDONLY)
        .map_err(|e| perr("making the store writable", &e))?;
    Ok(())
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// `mount_setattr(2)` with `AT_RECURSIVE` (Linux 5.12+; libc and nix have no wrapper).
fn mount_setattr(path: &Path, set: u64, clr: u64) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let attr = MountAttr {
        attr_set: set,
        attr_clr: clr,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: `c` is a NUL-terminated path and `attr` a mount_attr of the size passed; both live
    // across the call, which only reads them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::AT_RECURSIVE as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
