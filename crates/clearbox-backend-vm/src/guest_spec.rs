//! The config.json the guest receives: the bundle's, rewritten for the inside of the VM.
//!
//! * `root.path` → the rootfs inside the guest's virtio-fs mount.
//! * bind mount sources → their copies below the share (`mounts/<n>`).
//! * namespace `path`s name host namespaces, which a VM cannot join. The network namespace
//!   becomes the VM's root one (the agent's, PID 1): the agent set up there the NICs that carry
//!   the engine's interfaces (see `net.rs`; the VM is the isolation boundary), and network
//!   sysctls (Docker sets some) stay allowed. An IPC or UTS one (a pod's shared IPC/UTS) is
//!   replaced by a fresh one in the guest, with a warning: nothing is shared with the other
//!   containers. A pid, mount, user, cgroup or time namespace with a path is refused with a
//!   clear error, since the container would silently not see what it asked for.
//! * no pid namespace at all (`--pid host`, a `hostPID` pod) asks for the host's processes,
//!   which a VM cannot show; the nearest thing, the guest's root pid namespace, holds the agent
//!   and its helpers, which a container must not see or signal. Refused with a clear error.
//! * `cgroupsPath` → a guest-local path; hooks are removed (they run on the host).
//!
//! This is the only place the host changes the spec for the guest, and the only place it
//! serialises it: the result crosses to the shim and the agent as those bytes ([`GuestSpec`]),
//! and the agent parses them once (see "What crosses the wire" in docs/ARCHITECTURE.md).

use std::path::PathBuf;

use oci_spec::runtime::{LinuxNamespaceType, Spec};

use clearbox_protocol::{guest, GuestSpec};
use serde::{Deserialize, Serialize};

use crate::layout::Record;
use crate::share::is_bind;
use crate::Error;

/// What the guest gets of a container's spec.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ForGuest {
    /// The rewritten spec, serialised.
    pub spec: GuestSpec,
    /// The spec's bind mounts (their number in `mounts` and their destination), which the
    /// share carries: the shim shows them at the container's pid too.
    pub binds: Vec<Bind>,
}

/// A bind mount of the spec, carried by the share as `mounts/<index>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Bind {
    pub index: usize,
    pub destination: PathBuf,
}

pub(crate) fn rewrite(spec: &Spec, record: &Record) -> Result<ForGuest, Error> {
    // The export itself, or an app container's directory in its pod's export.
    let dir = record.share_dir();
    let member = record.is_member();
    let mut s = spec.clone();
    let mut binds = Vec::new();
    if let Some(root) = s.root().clone() {
        let mut root = root;
        root.set_path(PathBuf::from(dir.guest_rootfs()));
        s.set_root(Some(root));
    }
    if let Some(mounts) = s.mounts().clone() {
        let mounts = mounts
            .into_iter()
            .enumerate()
            .map(|(i, mut m)| {
                if is_bind(&m) {
                    binds.push(Bind {
                        index: i,
                        destination: m.destination().clone(),
                    });
                    m.set_source(Some(PathBuf::from(dir.guest_mount(i))));
                }
                m
            })
            .collect();
        s.set_mounts(Some(mounts));
    }
    if let Some(linux) = s.linux().clone() {
        let mut linux = linux;
        if let Some(path) = linux
            .seccomp()
            .as_ref()
            .and_then(|s| s.listener_path().as_ref())
        {
            return Err(Error::Msg(format!(
                "isolation vm cannot honour linux.seccomp.listenerPath {}: the seccomp notify descriptor belongs to the guest's kernel and cannot be passed to a host process (use isolation namespaces)",
                path.display()
            )));
        }
        if let Some(ns) = linux.namespaces().clone() {
            if !ns.iter().any(|n| n.typ() == LinuxNamespaceType::Pid) {
                return Err(Error::Msg(
                    "isolation vm cannot share the host's pid namespace (the spec has no pid \
                     namespace, e.g. --pid host): use a pid namespace, or isolation namespaces"
                        .into(),
                ));
            }
            let ns = ns
                .into_iter()
                // In a pod, joining the sandbox's IPC or UTS namespace means sharing the VM's
                // (the sandbox runs nothing in the guest: the VM's namespaces are the pod's).
                .filter(|n| {
                    !(member
                        && n.path().is_some()
                        && matches!(n.typ(), LinuxNamespaceType::Ipc | LinuxNamespaceType::Uts))
                })
                .map(|mut n| {
                    if let Some(path) = n.path().clone() {
                        joinable_in_vm(n.typ(), &path)?;
                    }
                    let vm_root = (n.typ() == LinuxNamespaceType::Network)
                        .then(|| PathBuf::from(guest::ROOT_NETNS));
                    n.set_path(vm_root);
                    Ok(n)
                })
                .collect::<Result<_, Error>>()?;
            linux.set_namespaces(Some(ns));
        }
        if linux.cgroups_path().is_some() {
            linux.set_cgroups_path(Some(PathBuf::from(guest::cgroup_path(
                guest::CGROUP_PARENT,
                &record.container_id(),
            ))));
        }
        s.set_linux(Some(linux));
    }
    s.set_hooks(None);
    let spec = GuestSpec::encode(&s)
        .map_err(|e| Error::Msg(format!("cannot encode the guest spec: {e}")))?;
    Ok(ForGuest { spec, binds })
}

/// Whether a namespace the spec asks to join may be replaced by a fresh one in the guest.
fn joinable_in_vm(
    typ: oci_spec::runtime::LinuxNamespaceType,
    path: &std::path::Path,
) -> Result<(), Error> {
    use oci_spec::runtime::LinuxNamespaceType as T;
    match typ {
        T::Network => Ok(()),
        T::Ipc | T::Uts => {
            tracing::warn!(
                namespace = ?typ,
                path = %path.display(),
                "isolation vm: the container gets its own namespace in its VM instead of joining this one"
            );
            Ok(())
        }
        other => Err(Error::Msg(format!(
            "isolation vm cannot join the host's {} namespace {}: the container runs on its own kernel (use isolation namespaces to share it)",
            format!("{other:?}").to_ascii_lowercase(),
            path.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_paths_namespaces_cgroups_and_hooks() {
        let spec: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "/var/lib/containers/x/merged"},
            "process": {"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/data", "type": "bind", "source": "/srv/data", "options": ["rbind"]},
                {"destination": "/etc/hosts", "type": "none", "source": "/x/hosts", "options": ["bind", "ro"]}
            ],
            "hooks": {"prestart": [{"path": "/bin/true"}]},
            "linux": {
                "cgroupsPath": "machine.slice:libpod:abc",
                "namespaces": [{"type": "ipc", "path": "/proc/1/ns/ipc"}, {"type": "network", "path": "/run/netns/cni-1"}, {"type": "pid"}]
            }
        }))
        .unwrap();
        let guest = rewrite(&spec, &record("abc")).unwrap();
        let out: serde_json::Value = serde_json::from_slice(guest.spec.as_bytes()).unwrap();
        let dests: Vec<(usize, &str)> = guest
            .binds
            .iter()
            .map(|b| (b.index, b.destination.to_str().unwrap()))
            .collect();
        assert_eq!(dests, [(1, "/data"), (2, "/etc/hosts")]);
        assert_eq!(out["root"]["path"], format!("{}/rootfs", guest::SHARE));
        assert_eq!(out["mounts"][0]["source"], "proc");
        assert_eq!(
            out["mounts"][1]["source"],
            format!("{}/mounts/1", guest::SHARE)
        );
        assert_eq!(
            out["mounts"][2]["source"],
            format!("{}/mounts/2", guest::SHARE)
        );
        assert!(out.get("hooks").is_none() || out["hooks"].is_null());
        assert_eq!(out["linux"]["cgroupsPath"], "/clearbox/abc");
        assert!(out["linux"]["namespaces"][0].get("path").is_none());
        // The container joins the VM's root network namespace.
        assert_eq!(out["linux"]["namespaces"][1]["type"], "network");
        assert_eq!(out["linux"]["namespaces"][1]["path"], guest::ROOT_NETNS);
        let pid_path: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "linux": {"namespaces": [{"type": "pid", "path": "/proc/1/ns/pid"}]}
        }))
        .unwrap();
        let e = rewrite(&pid_path, &record("c1")).unwrap_err().to_string();
        assert!(e.contains("cannot join the host's pid namespace"), "{e}");
        // No pid namespace: the container would share the guest's with the agent.
        let host_pid: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "linux": {"namespaces": [{"type": "network"}, {"type": "mount"}]}
        }))
        .unwrap();
        let e = rewrite(&host_pid, &record("c1")).unwrap_err().to_string();
        assert!(
            e.contains("cannot share the host's pid namespace") && !e.contains('\n'),
            "{e}"
        );
    }

    fn record(id: &str) -> Record {
        Record::new(std::path::Path::new("/run/clearbox/x"), id)
    }

    #[test]
    fn pod_members_use_their_directory_and_share_the_vm_namespaces() {
        let sandbox = record("pod");
        let member = Record::member(&sandbox, "pod", "app1").unwrap();
        let spec: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "mounts": [{"destination": "/etc/hosts", "type": "bind", "source": "/x/hosts", "options": ["rbind"]}],
            "linux": {
                "namespaces": [
                    {"type": "ipc", "path": "/proc/7/ns/ipc"},
                    {"type": "uts", "path": "/proc/7/ns/uts"},
                    {"type": "mount"},
                    {"type": "network", "path": "/proc/7/ns/net"},
                    {"type": "pid"}
                ]
            }
        }))
        .unwrap();
        let out: serde_json::Value =
            serde_json::from_slice(rewrite(&spec, &member).unwrap().spec.as_bytes()).unwrap();
        assert_eq!(out["root"]["path"], format!("{}/app1/rootfs", guest::SHARE));
        assert_eq!(
            out["mounts"][0]["source"],
            format!("{}/app1/mounts/0", guest::SHARE)
        );
        let ns = out["linux"]["namespaces"].as_array().unwrap();
        let types: Vec<&str> = ns.iter().map(|n| n["type"].as_str().unwrap()).collect();
        assert_eq!(types, ["mount", "network", "pid"]);
        assert_eq!(ns[1]["path"], guest::ROOT_NETNS);
        // Outside a pod the namespaces stay (fresh ones in the guest).
        let single: serde_json::Value =
            serde_json::from_slice(rewrite(&spec, &record("app1")).unwrap().spec.as_bytes())
                .unwrap();
        assert_eq!(single["linux"]["namespaces"].as_array().unwrap().len(), 5);
    }

    #[test]
    fn a_seccomp_listener_is_a_clear_error() {
        let spec: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "linux": {"seccomp": {
                "defaultAction": "SCMP_ACT_ALLOW",
                "listenerPath": "/run/notify.sock",
                "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]
            }}
        }))
        .unwrap();
        let e = rewrite(&spec, &record("c1")).unwrap_err().to_string();
        assert!(e.contains("listenerPath /run/notify.sock"), "{e}");
    }
}
