//! Guest bundles: the CreateContainer spec (parsed once, into the typed request) completed
//! into the `config.json` libcontainer reads, and exec processes completed the same way.
//!
//! The agent only sets what it owns: `root` (the resolved rootfs), `process.terminal` (the
//! stdio it wires), `PATH` when the process has none, and a default `linux.cgroupsPath`. A spec
//! without `linux`/`mounts` gets the OCI defaults (what `runc spec` writes).

use std::path::{Path, PathBuf};

use clearbox_protocol::guest::{self, ContainerId};
use oci_spec::runtime::{Hooks, Linux, Process, Root, Spec};

/// `PATH` of processes whose environment has none (libcontainer refuses a process without).
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("spec has no process")]
    NoProcess,
    #[error("process.args is empty")]
    NoArgs,
    #[error("process.cwd {0:?} is not absolute")]
    RelativeCwd(PathBuf),
    #[error("hooks are run by the host runtime, not inside the guest: remove spec.hooks")]
    Hooks,
}

/// Linux security modules active in the kernel the containers run on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lsm {
    pub apparmor: bool,
    pub selinux: bool,
}

impl Lsm {
    pub fn detect() -> Self {
        let apparmor = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
            .is_ok_and(|s| s.starts_with('Y'));
        Self {
            apparmor,
            selinux: Path::new("/sys/fs/selinux/enforce").exists(),
        }
    }
}

/// Drops labels for security modules the kernel does not have (the guest kernel has neither
/// AppArmor nor SELinux), as runc ignores them there; libcontainer would refuse the spec
/// (AppArmor) or fail mounts with a `context=` option (SELinux).
fn strip_lsm(process: &mut Process, linux: Option<&mut Linux>, lsm: Lsm) {
    if !lsm.apparmor && process.apparmor_profile().is_some() {
        process.set_apparmor_profile(None);
        crate::debug!("no AppArmor here: process.apparmorProfile ignored");
    }
    if !lsm.selinux && process.selinux_label().is_some() {
        process.set_selinux_label(None);
        crate::debug!("no SELinux here: process.selinuxLabel ignored");
    }
    if let Some(l) = linux {
        if !lsm.selinux && l.mount_label().is_some() {
            l.set_mount_label(None);
            crate::debug!("no SELinux here: linux.mountLabel ignored");
        }
    }
}

fn has_hooks(h: &Hooks) -> bool {
    [
        h.prestart(),
        h.create_runtime(),
        h.create_container(),
        h.start_container(),
        h.poststart(),
        h.poststop(),
    ]
    .iter()
    .any(|l| l.as_ref().is_some_and(|l| !l.is_empty()))
}

/// Checks the process and fills what the agent owns: `terminal` (as wired by the agent), a
/// `cwd` of `/` when empty, and `PATH` in `env`.
fn complete_process(p: &mut Process, terminal: bool) -> Result<(), BundleError> {
    let arg0 = p.args().as_ref().and_then(|a| a.first());
    if arg0.is_none_or(|a| a.is_empty()) {
        return Err(BundleError::NoArgs);
    }
    if p.cwd().as_os_str().is_empty() {
        p.set_cwd(PathBuf::from("/"));
    }
    if !p.cwd().is_absolute() {
        return Err(BundleError::RelativeCwd(p.cwd().clone()));
    }
    p.set_terminal(Some(terminal));
    let mut env = p.env().clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(DEFAULT_PATH.into());
    }
    p.set_env(Some(env));
    Ok(())
}

/// Prepares the spec of container `id` whose rootfs is `rootfs` (absolute guest path): the
/// result is what the bundle's `config.json` holds.
pub fn prepare(
    mut spec: Spec,
    id: &ContainerId,
    rootfs: &Path,
    readonly: bool,
    terminal: bool,
    cgroup_parent: &str,
    lsm: Lsm,
) -> Result<Spec, BundleError> {
    if spec.hooks().as_ref().is_some_and(has_hooks) {
        return Err(BundleError::Hooks);
    }
    spec.set_hooks(None);
    let mut process = spec.process().clone().ok_or(BundleError::NoProcess)?;
    complete_process(&mut process, terminal)?;
    let readonly = readonly || spec.root().as_ref().and_then(|r| r.readonly()) == Some(true);
    let mut root = Root::default();
    root.set_path(rootfs.to_path_buf());
    root.set_readonly(Some(readonly));
    spec.set_root(Some(root));
    let defaults = Spec::default();
    let mut linux = spec.linux().clone().or_else(|| defaults.linux().clone());
    if spec.mounts().is_none() {
        spec.set_mounts(defaults.mounts().clone());
    }
    if spec.version().is_empty() {
        spec.set_version(oci_spec::runtime::VERSION.to_string());
    }
    if let Some(l) = linux.as_mut() {
        if l.cgroups_path().is_none() {
            l.set_cgroups_path(Some(PathBuf::from(guest::cgroup_path(cgroup_parent, id))));
        }
    }
    strip_lsm(&mut process, linux.as_mut(), lsm);
    spec.set_process(Some(process));
    spec.set_linux(linux);
    Ok(spec)
}

/// The OCI process of an exec: completed as the init's (see [`prepare`]), and the fields it
/// does not set taken from the container's init (as with `runc exec`: capabilities,
/// noNewPrivileges, rlimits, apparmorProfile, selinuxLabel), so it never has more privileges
/// or looser limits than the init.
pub fn exec_process(
    mut p: Process,
    terminal: bool,
    container: &Spec,
    lsm: Lsm,
) -> Result<Process, BundleError> {
    complete_process(&mut p, terminal)?;
    if let Some(init) = container.process() {
        if p.capabilities().is_none() {
            p.set_capabilities(init.capabilities().clone());
        }
        if p.no_new_privileges().is_none() {
            p.set_no_new_privileges(init.no_new_privileges());
        }
        if p.rlimits().is_none() {
            p.set_rlimits(init.rlimits().clone());
        }
        if p.apparmor_profile().is_none() {
            p.set_apparmor_profile(init.apparmor_profile().clone());
        }
        if p.selinux_label().is_none() {
            p.set_selinux_label(init.selinux_label().clone());
        }
    }
    strip_lsm(&mut p, None, lsm);
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn cid(id: &str) -> ContainerId {
        ContainerId::parse(id).expect("id")
    }

    fn spec(v: Value) -> Spec {
        serde_json::from_value(v).expect("spec")
    }

    fn process(v: Value) -> Process {
        serde_json::from_value(v).expect("process")
    }

    fn json_of<T: serde::Serialize>(t: &T) -> Value {
        serde_json::to_value(t).expect("encode")
    }

    const USER: fn() -> Value = || json!({"uid": 0, "gid": 0});

    #[test]
    fn minimal_spec_gets_defaults_and_agent_fields() {
        let p = prepare(
            spec(json!({"process":{"args":["sh"],"cwd":"","user":USER()},"root":{"path":"ignored","readonly":true}})),
            &cid("c1"),
            Path::new("/run/clearbox/shared/rootfs"),
            false,
            true,
            "clearbox",
            Lsm::default(),
        )
        .expect("prepare");
        let c = json_of(&p);
        assert_eq!(c["root"]["path"], "/run/clearbox/shared/rootfs");
        assert_eq!(c["root"]["readonly"], true, "spec's readonly kept");
        assert_eq!(c["process"]["terminal"], true);
        assert_eq!(c["process"]["cwd"], "/");
        assert_eq!(c["process"]["env"], json!([DEFAULT_PATH]));
        assert_eq!(c["linux"]["cgroupsPath"], "/clearbox/c1");
        assert!(c["linux"]["namespaces"]
            .as_array()
            .is_some_and(|n| !n.is_empty()));
        assert!(c["mounts"].as_array().is_some_and(|m| !m.is_empty()));
        assert_eq!(c["ociVersion"], oci_spec::runtime::VERSION);
    }

    #[test]
    fn given_fields_are_kept() {
        let p = prepare(
            spec(json!({"process":{"args":["sh"],"cwd":"/w","user":USER()},"mounts":[],"linux":{"cgroupsPath":"/mine/x"}})),
            &cid("c1"),
            Path::new("/r"),
            true,
            false,
            "clearbox",
            Lsm::default(),
        )
        .expect("prepare");
        let c = json_of(&p);
        assert_eq!(c["linux"]["cgroupsPath"], "/mine/x");
        assert_eq!(c["mounts"], json!([]));
        assert_eq!(c["process"]["cwd"], "/w");
        assert_eq!(c["root"]["readonly"], true);
    }

    #[test]
    fn bad_specs_are_refused() {
        let r = Path::new("/r");
        let prep = |v: Value| prepare(spec(v), &cid("c"), r, false, false, "p", Lsm::default());
        let hooks = json!({"process":{"args":["sh"],"cwd":"/","user":USER()},"hooks":{"prestart":[{"path":"/x"}]}});
        assert!(matches!(prep(hooks), Err(BundleError::Hooks)));
        let empty_hooks =
            json!({"process":{"args":["sh"],"cwd":"/","user":USER()},"hooks":{"prestart":[]}});
        assert!(prep(empty_hooks).is_ok());
        assert!(matches!(prep(json!({})), Err(BundleError::NoProcess)));
        assert!(matches!(
            prep(json!({"process":{"args":[],"cwd":"/","user":USER()}})),
            Err(BundleError::NoArgs)
        ));
        assert!(matches!(
            prep(json!({"process":{"args":["x"],"cwd":"rel","user":USER()}})),
            Err(BundleError::RelativeCwd(_))
        ));
    }

    #[test]
    fn exec_inherits_the_containers_privileges() {
        let container = spec(json!({"process": {
            "args": ["sh"], "cwd": "/", "user": USER(),
            "capabilities": {"bounding": ["CAP_KILL"]},
            "noNewPrivileges": true,
            "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 10, "hard": 10}]
        }}));
        let v = exec_process(
            process(json!({"args":["ls"],"cwd":"","user":USER()})),
            false,
            &container,
            Lsm::default(),
        )
        .expect("exec");
        let v = json_of(&v);
        assert_eq!(v["capabilities"]["bounding"][0], "CAP_KILL");
        assert_eq!(v["noNewPrivileges"], true);
        assert_eq!(v["rlimits"][0]["soft"], 10);
        assert_eq!(v["cwd"], "/");
        assert_eq!(v["env"][0], DEFAULT_PATH);
        let own = exec_process(
            process(json!({"args":["ls"],"cwd":"/","user":USER(),"capabilities":{},"env":["A=b"]})),
            true,
            &container,
            Lsm::default(),
        )
        .expect("exec");
        let own = json_of(&own);
        assert_eq!(own["capabilities"], json!({}));
        assert_eq!(own["env"], json!(["A=b", DEFAULT_PATH]));
        assert_eq!(own["terminal"], true);
        assert!(matches!(
            exec_process(
                process(json!({"args":[],"cwd":"/","user":USER()})),
                false,
                &container,
                Lsm::default()
            ),
            Err(BundleError::NoArgs)
        ));
    }

    #[test]
    fn labels_of_missing_security_modules_are_dropped() {
        let v = json!({"process":{"args":["sh"],"cwd":"/","user":USER(),"apparmorProfile":"p","selinuxLabel":"l"},"linux":{"mountLabel":"m"}});
        let r = Path::new("/r");
        let none = prepare(
            spec(v.clone()),
            &cid("c"),
            r,
            false,
            false,
            "p",
            Lsm::default(),
        )
        .expect("prepare");
        let n = json_of(&none);
        assert!(n["process"].get("apparmorProfile").is_none());
        assert!(n["process"].get("selinuxLabel").is_none());
        assert!(n["linux"].get("mountLabel").is_none());
        let all = Lsm {
            apparmor: true,
            selinux: true,
        };
        let kept = prepare(spec(v), &cid("c"), r, false, false, "p", all).expect("prepare");
        let k = json_of(&kept);
        assert_eq!(k["process"]["apparmorProfile"], "p");
        assert_eq!(k["linux"]["mountLabel"], "m");
        let e = exec_process(
            process(json!({"args":["ls"],"cwd":"/","user":USER(),"apparmorProfile":"x"})),
            false,
            &kept,
            Lsm::default(),
        )
        .expect("exec");
        let e = json_of(&e);
        assert!(e.get("apparmorProfile").is_none() && e.get("selinuxLabel").is_none());
    }
}
