//! The config.json the guest receives: the bundle's, rewritten for the inside of the VM.
//!
//! * `root.path` → the rootfs inside the guest's virtio-fs mount.
//! * bind mount sources → their copies below the share (`mounts/<n>`).
//! * namespace `path`s are dropped: they name host namespaces; the guest creates fresh ones of
//!   the same types. The network namespace becomes the VM's root one (the agent's, PID 1):
//!   the agent set up there the NICs that carry the engine's interfaces (see `net.rs`; the VM
//!   is the isolation boundary), and network sysctls (Docker sets some) stay allowed.
//! * `cgroupsPath` → a guest-local path; hooks are removed (they run on the host).

use std::path::PathBuf;

use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::layout::GUEST_SHARE;
use crate::share::is_bind;
use crate::Error;

/// The VM's root network namespace, seen from the guest: the agent's, which is PID 1.
const GUEST_ROOT_NETNS: &str = "/proc/1/ns/net";

pub(crate) fn rewrite(spec: &Spec, guest_id: &str) -> Result<Vec<u8>, Error> {
    let mut s = spec.clone();
    if let Some(root) = s.root().clone() {
        let mut root = root;
        root.set_path(PathBuf::from(format!("{GUEST_SHARE}/rootfs")));
        s.set_root(Some(root));
    }
    if let Some(mounts) = s.mounts().clone() {
        let mounts = mounts
            .into_iter()
            .enumerate()
            .map(|(i, mut m)| {
                if is_bind(&m) {
                    m.set_source(Some(PathBuf::from(format!("{GUEST_SHARE}/mounts/{i}"))));
                }
                m
            })
            .collect();
        s.set_mounts(Some(mounts));
    }
    if let Some(linux) = s.linux().clone() {
        let mut linux = linux;
        if let Some(ns) = linux.namespaces().clone() {
            let ns = ns
                .into_iter()
                .map(|mut n| {
                    let vm_root = (n.typ() == LinuxNamespaceType::Network)
                        .then(|| PathBuf::from(GUEST_ROOT_NETNS));
                    n.set_path(vm_root);
                    n
                })
                .collect();
            linux.set_namespaces(Some(ns));
        }
        if linux.cgroups_path().is_some() {
            linux.set_cgroups_path(Some(PathBuf::from(format!("/clearbox/{guest_id}"))));
        }
        s.set_linux(Some(linux));
    }
    s.set_hooks(None);
    serde_json::to_vec(&s).map_err(|e| Error::Msg(format!("cannot encode the guest spec: {e}")))
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
                "namespaces": [{"type": "pid", "path": "/proc/1/ns/pid"}, {"type": "network", "path": "/run/netns/cni-1"}]
            }
        }))
        .unwrap();
        let out: serde_json::Value =
            serde_json::from_slice(&rewrite(&spec, "abc").unwrap()).unwrap();
        assert_eq!(out["root"]["path"], format!("{GUEST_SHARE}/rootfs"));
        assert_eq!(out["mounts"][0]["source"], "proc");
        assert_eq!(
            out["mounts"][1]["source"],
            format!("{GUEST_SHARE}/mounts/1")
        );
        assert_eq!(
            out["mounts"][2]["source"],
            format!("{GUEST_SHARE}/mounts/2")
        );
        assert!(out.get("hooks").is_none() || out["hooks"].is_null());
        assert_eq!(out["linux"]["cgroupsPath"], "/clearbox/abc");
        assert!(out["linux"]["namespaces"][0].get("path").is_none());
        // The container joins the VM's root network namespace.
        assert_eq!(out["linux"]["namespaces"][1]["type"], "network");
        assert_eq!(out["linux"]["namespaces"][1]["path"], GUEST_ROOT_NETNS);
    }
}
