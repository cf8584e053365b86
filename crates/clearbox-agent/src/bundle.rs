//! Guest bundles: the CreateContainer spec turned into a `config.json` for
//! `clearbox_container::namespaces`, and exec processes turned into process files.
//!
//! The spec stays a JSON value (unknown fields pass through untouched); the agent only sets
//! what it owns: `root` (the resolved rootfs), `process.terminal` (the stdio it wires) and a
//! default `linux.cgroupsPath`. A spec without `linux`/`mounts` gets the OCI defaults (what
//! `runc spec` writes), so minimal specs keep working.

use std::path::Path;

use clearbox_protocol::guest::{self, ContainerId};
use serde_json::{json, Map, Value};

use crate::spec;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("invalid JSON")]
    Json(#[source] serde_json::Error),
    #[error("the spec is not a JSON object")]
    NotAnObject,
    #[error("the process is not a JSON object")]
    ProcessNotAnObject,
    #[error(transparent)]
    Spec(#[from] spec::SpecError),
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
fn strip_lsm(
    process: Option<&mut Map<String, Value>>,
    linux: Option<&mut Map<String, Value>>,
    lsm: Lsm,
) {
    if let Some(p) = process {
        if !lsm.apparmor && p.remove("apparmorProfile").is_some() {
            crate::debug!("no AppArmor here: process.apparmorProfile ignored");
        }
        if !lsm.selinux && p.remove("selinuxLabel").is_some() {
            crate::debug!("no SELinux here: process.selinuxLabel ignored");
        }
    }
    if let Some(l) = linux {
        if !lsm.selinux && l.remove("mountLabel").is_some() {
            crate::debug!("no SELinux here: linux.mountLabel ignored");
        }
    }
}

/// A spec ready to be written as the bundle's `config.json`.
#[derive(Debug)]
pub struct Prepared {
    pub config: Value,
    pub process: spec::Process,
}

fn object(v: &mut Value) -> Option<&mut Map<String, Value>> {
    v.as_object_mut()
}

fn has_hooks(v: &Value) -> bool {
    match v.get("hooks") {
        None | Some(Value::Null) => false,
        Some(Value::Object(m)) => m
            .values()
            .any(|h| h.as_array().is_some_and(|a| !a.is_empty())),
        Some(_) => true,
    }
}

/// Fills what OCI requires and the agent's wire format lets the host omit: `terminal` (as
/// wired by the agent), `cwd`, `user` (root) and `PATH` in `env` (libcontainer refuses a
/// process without it; the agent adds the conventional one, as for guest processes).
fn complete_process(p: &mut Map<String, Value>, terminal: bool, cwd: &str) {
    p.insert("terminal".into(), Value::Bool(terminal));
    p.entry("cwd").or_insert_with(|| Value::from(cwd));
    p.entry("user")
        .or_insert_with(|| json!({"uid": 0, "gid": 0}));
    let env = p.entry("env").or_insert_with(|| json!([]));
    if let Some(list) = env.as_array_mut() {
        let has_path = list
            .iter()
            .any(|e| e.as_str().is_some_and(|s| s.starts_with("PATH=")));
        if !has_path {
            list.push(Value::from(spec::DEFAULT_PATH));
        }
    }
}

fn oci_defaults() -> Value {
    serde_json::to_value(oci_spec::runtime::Spec::default()).unwrap_or(Value::Null)
}

/// Prepares the spec of container `id` whose rootfs is `rootfs` (absolute guest path).
pub fn prepare(
    spec_json: &[u8],
    id: &ContainerId,
    rootfs: &Path,
    readonly: bool,
    terminal: bool,
    cgroup_parent: &str,
    lsm: Lsm,
) -> Result<Prepared, BundleError> {
    // Validates process.args/cwd and gives the fields the agent itself needs.
    let mut process = spec::Spec::from_json(spec_json)?
        .process
        .ok_or(spec::SpecError::NoProcess)?;
    process.terminal = terminal;
    let mut config: Value = serde_json::from_slice(spec_json).map_err(BundleError::Json)?;
    if has_hooks(&config) {
        return Err(BundleError::Hooks);
    }
    let readonly = readonly
        || config
            .pointer("/root/readonly")
            .and_then(Value::as_bool)
            .unwrap_or(false);
    let defaults = oci_defaults();
    let top = object(&mut config).ok_or(BundleError::NotAnObject)?;
    top.remove("hooks");
    top.insert(
        "root".into(),
        json!({"path": rootfs.to_string_lossy(), "readonly": readonly}),
    );
    for key in ["linux", "mounts"] {
        if !top.contains_key(key) {
            if let Some(d) = defaults.get(key) {
                top.insert(key.into(), d.clone());
            }
        }
    }
    top.entry("ociVersion")
        .or_insert_with(|| Value::from(oci_spec::runtime::VERSION));
    let proc_obj = top
        .get_mut("process")
        .and_then(object)
        .ok_or(BundleError::ProcessNotAnObject)?;
    complete_process(proc_obj, terminal, &process.cwd);
    if let Some(linux) = top.get_mut("linux").and_then(object) {
        linux
            .entry("cgroupsPath")
            .or_insert_with(|| Value::from(guest::cgroup_path(cgroup_parent, id)));
    }
    let (mut proc_obj, mut linux) = (None, None);
    for (k, v) in top.iter_mut() {
        match k.as_str() {
            "process" => proc_obj = v.as_object_mut(),
            "linux" => linux = v.as_object_mut(),
            _ => {}
        }
    }
    strip_lsm(proc_obj, linux, lsm);
    Ok(Prepared { config, process })
}

/// Process fields an exec takes from the container's init when it does not set them (as with
/// `runc exec`), so it never has more privileges or looser limits than the init.
const INHERITED: [&str; 5] = [
    "capabilities",
    "noNewPrivileges",
    "rlimits",
    "apparmorProfile",
    "selinuxLabel",
];

/// The OCI process of an exec, from the request's JSON: `terminal` as wired by the agent,
/// `cwd`/`user`/`PATH` defaulted, and the [`INHERITED`] fields of the container's init.
pub fn exec_process(
    process_json: &[u8],
    terminal: bool,
    container_config: &Value,
    lsm: Lsm,
) -> Result<Value, BundleError> {
    let parsed = spec::Process::from_json(process_json)?;
    let mut v: Value = serde_json::from_slice(process_json).map_err(BundleError::Json)?;
    let p = object(&mut v).ok_or(BundleError::ProcessNotAnObject)?;
    complete_process(p, terminal, &parsed.cwd);
    for key in INHERITED {
        if !p.contains_key(key) {
            if let Some(inherited) = container_config.get("process").and_then(|c| c.get(key)) {
                p.insert(key.into(), inherited.clone());
            }
        }
    }
    strip_lsm(Some(p), None, lsm);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cid(id: &str) -> ContainerId {
        ContainerId::parse(id).expect("id")
    }

    #[test]
    fn minimal_spec_gets_defaults_and_agent_fields() {
        let p = prepare(
            br#"{"process":{"args":["sh"]},"root":{"path":"ignored","readonly":true},"x-extra":1}"#,
            &cid("c1"),
            Path::new("/run/clearbox/shared/rootfs"),
            false,
            true,
            "clearbox",
            Lsm::default(),
        )
        .expect("prepare");
        let c = &p.config;
        assert_eq!(c["root"]["path"], "/run/clearbox/shared/rootfs");
        assert_eq!(c["root"]["readonly"], true, "spec's readonly kept");
        assert_eq!(c["process"]["terminal"], true);
        assert_eq!(c["process"]["cwd"], "/");
        assert_eq!(c["process"]["env"], json!([spec::DEFAULT_PATH]));
        assert_eq!(c["linux"]["cgroupsPath"], "/clearbox/c1");
        assert!(c["linux"]["namespaces"]
            .as_array()
            .is_some_and(|n| !n.is_empty()));
        assert!(c["mounts"].as_array().is_some_and(|m| !m.is_empty()));
        assert_eq!(c["x-extra"], 1, "unknown fields pass through");
        assert!(p.process.terminal);
        // The result is a spec libcontainer's parser accepts.
        let spec: oci_spec::runtime::Spec = serde_json::from_value(p.config).expect("valid OCI");
        assert!(spec.linux().is_some());
    }

    #[test]
    fn given_fields_are_kept() {
        let p = prepare(
            br#"{"process":{"args":["sh"],"cwd":"/w"},"mounts":[],"linux":{"cgroupsPath":"/mine/x"}}"#,
            &cid("c1"),
            Path::new("/r"),
            true,
            false,
            "clearbox",
            Lsm::default(),
        )
        .expect("prepare");
        assert_eq!(p.config["linux"]["cgroupsPath"], "/mine/x");
        assert_eq!(p.config["mounts"], json!([]));
        assert_eq!(p.config["process"]["cwd"], "/w");
        assert_eq!(p.config["root"]["readonly"], true);
    }

    #[test]
    fn bad_specs_are_refused() {
        let r = Path::new("/r");
        let hooks = br#"{"process":{"args":["sh"]},"hooks":{"prestart":[{"path":"/x"}]}}"#;
        assert!(matches!(
            prepare(hooks, &cid("c"), r, false, false, "p", Lsm::default()),
            Err(BundleError::Hooks)
        ));
        let empty_hooks = br#"{"process":{"args":["sh"]},"hooks":{"prestart":[]}}"#;
        assert!(prepare(empty_hooks, &cid("c"), r, false, false, "p", Lsm::default()).is_ok());
        assert!(prepare(b"[]", &cid("c"), r, false, false, "p", Lsm::default()).is_err());
        assert!(prepare(
            br#"{"process":{"args":[]}}"#,
            &cid("c"),
            r,
            false,
            false,
            "p",
            Lsm::default()
        )
        .is_err());
    }

    #[test]
    fn exec_inherits_the_containers_privileges() {
        let container = json!({"process": {
            "capabilities": {"bounding": ["CAP_KILL"]},
            "noNewPrivileges": true,
            "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 10, "hard": 10}]
        }});
        let v =
            exec_process(br#"{"args":["ls"]}"#, false, &container, Lsm::default()).expect("exec");
        assert_eq!(v["capabilities"]["bounding"][0], "CAP_KILL");
        assert_eq!(v["noNewPrivileges"], true);
        assert_eq!(v["rlimits"][0]["soft"], 10);
        assert_eq!(v["cwd"], "/");
        assert_eq!(v["env"][0], spec::DEFAULT_PATH);
        let own = exec_process(
            br#"{"args":["ls"],"capabilities":{},"env":["A=b"]}"#,
            true,
            &container,
            Lsm::default(),
        )
        .expect("exec");
        assert_eq!(own["capabilities"], json!({}));
        assert_eq!(own["env"], json!(["A=b", spec::DEFAULT_PATH]));
        assert_eq!(own["terminal"], true);
        let _: oci_spec::runtime::Process = serde_json::from_value(v).expect("valid OCI");
    }

    #[test]
    fn labels_of_missing_security_modules_are_dropped() {
        let json = br#"{"process":{"args":["sh"],"apparmorProfile":"p","selinuxLabel":"l"},"linux":{"mountLabel":"m"}}"#;
        let r = Path::new("/r");
        let none = prepare(json, &cid("c"), r, false, false, "p", Lsm::default()).expect("prepare");
        assert!(none.config["process"].get("apparmorProfile").is_none());
        assert!(none.config["process"].get("selinuxLabel").is_none());
        assert!(none.config["linux"].get("mountLabel").is_none());
        let all = Lsm {
            apparmor: true,
            selinux: true,
        };
        let kept = prepare(json, &cid("c"), r, false, false, "p", all).expect("prepare");
        assert_eq!(kept.config["process"]["apparmorProfile"], "p");
        assert_eq!(kept.config["linux"]["mountLabel"], "m");
        let e = exec_process(
            br#"{"args":["ls"],"apparmorProfile":"x"}"#,
            false,
            &kept.config,
            Lsm::default(),
        )
        .expect("exec");
        assert!(e.get("apparmorProfile").is_none() && e.get("selinuxLabel").is_none());
    }
}
