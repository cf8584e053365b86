//! Pods: one VM per pod sandbox (Kata's model), on the plain OCI (runc) command line.
//!
//! A CRI runtime (containerd's CRI plugin, CRI-O) creates a pod as a *sandbox* container (the
//! pause container) followed by *app* containers that name the sandbox in their annotations:
//!
//! * the sandbox boots the VM, wires the pod network (the CNI-configured network namespace of
//!   the sandbox, through the tap path of `net.rs`) and runs no process in the guest beyond
//!   the agent. Its pid is its shim, a host process that lives until it is killed or deleted,
//!   as the pause process would (SIGTERM/SIGINT end it with status 0, like pause).
//! * an app container joins that VM: it is found through the sandbox's state under the same
//!   `--root`. Its rootfs and bind sources are attached below the sandbox's virtio-fs export
//!   (`shared/<guest id>/`) at run time; the export is a shared mount, so virtiofsd's mount
//!   namespace (a slave of it) sees them (no device hotplug). Then the agent creates it in the
//!   same guest. It shares the VM's network namespace (the pod's), and the VM's IPC and UTS
//!   namespaces when its spec joins the sandbox's; namespaces it asks to be new stay new.
//! * deleting an app container removes it from the guest and detaches its mounts from the
//!   export; deleting the sandbox tears down the VM (and everything below its export).
//!
//! The VM is sized from the sandbox's annotations (containerd 1.7+ sets them from the pod's
//! resources; containerd 1.6 passes them through `pod_annotations`) plus [`OVERHEAD_MIB`];
//! without them it gets the default size of a container without limits. Each container's own
//! limits become its guest cgroup (`/clearbox/<id>` in the guest).
//!
//! [`OVERHEAD_MIB`]: crate::sizing::OVERHEAD_MIB

use std::collections::HashMap;

use crate::Error;

/// What a container is in a pod, from its spec's annotations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Role {
    /// Not part of a pod (or a runtime that does not say): a VM of its own.
    Single,
    /// The pod's sandbox (pause) container: owns the VM, runs nothing in it.
    Sandbox,
    /// An app container of the pod whose sandbox has this id.
    Member { sandbox_id: String },
}

/// (container-type key, sandbox value, app value, sandbox-id key) of the CRI runtimes:
/// containerd's CRI plugin, CRI-O, and dockershim/cri-dockerd.
const FLAVOURS: [(&str, &str, &str, &str); 3] = [
    (
        "io.kubernetes.cri.container-type",
        "sandbox",
        "container",
        "io.kubernetes.cri.sandbox-id",
    ),
    (
        "io.kubernetes.cri-o.ContainerType",
        "sandbox",
        "container",
        "io.kubernetes.cri-o.SandboxID",
    ),
    (
        "io.kubernetes.docker.type",
        "podsandbox",
        "container",
        "io.kubernetes.sandbox.id",
    ),
];

/// Sizing annotations of the sandbox (containerd's names).
pub(crate) const CPU_QUOTA: &str = "io.kubernetes.cri.sandbox-cpu-quota";
pub(crate) const CPU_PERIOD: &str = "io.kubernetes.cri.sandbox-cpu-period";
pub(crate) const CPU_SHARES: &str = "io.kubernetes.cri.sandbox-cpu-shares";
pub(crate) const MEMORY: &str = "io.kubernetes.cri.sandbox-memory";

pub(crate) fn role(annotations: Option<&HashMap<String, String>>) -> Result<Role, Error> {
    let Some(a) = annotations else {
        return Ok(Role::Single);
    };
    for (type_key, sandbox, app, id_key) in FLAVOURS {
        let Some(kind) = a.get(type_key) else {
            continue;
        };
        if kind == sandbox {
            return Ok(Role::Sandbox);
        }
        if kind == app {
            let id = a.get(id_key).filter(|s| !s.is_empty()).ok_or_else(|| {
                Error::Msg(format!(
                    "annotation {type_key}={app} needs {id_key} (the pod sandbox to join)"
                ))
            })?;
            clearbox_core::id::validate(id)
                .map_err(|e| Error::Msg(format!("annotation {id_key}: {e}")))?;
            return Ok(Role::Member {
                sandbox_id: id.clone(),
            });
        }
        return Err(Error::Msg(format!(
            "annotation {type_key}={kind:?}: expected {sandbox:?} or {app:?}"
        )));
    }
    Ok(Role::Single)
}

/// The pod's size from the sandbox's annotations: (vCPUs, memory in MiB before the overhead),
/// each `None` when not given. A CPU quota without a period uses the CFS default (100 ms).
pub(crate) fn requested(
    a: Option<&HashMap<String, String>>,
) -> Result<(Option<u32>, Option<u64>), Error> {
    let Some(a) = a else {
        return Ok((None, None));
    };
    let num = |key: &str| -> Result<Option<i64>, Error> {
        a.get(key)
            .filter(|v| !v.is_empty())
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| Error::Msg(format!("annotation {key}={v:?} is not a number")))
            })
            .transpose()
    };
    let _shares = num(CPU_SHARES)?;
    let quota = num(CPU_QUOTA)?;
    let period = num(CPU_PERIOD)?.filter(|p| *p > 0).unwrap_or(100_000);
    let vcpus = quota.filter(|q| *q > 0).map(|q| {
        let n = (q as u64).div_ceil(period as u64);
        u32::try_from(n).unwrap_or(u32::MAX).clamp(1, 255)
    });
    let memory = num(MEMORY)?
        .filter(|m| *m > 0)
        .map(|m| (m as u64).div_ceil(1024 * 1024));
    Ok((vcpus, memory))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn roles_from_each_cri_runtime() {
        assert_eq!(role(None).unwrap(), Role::Single);
        assert_eq!(role(Some(&a(&[]))).unwrap(), Role::Single);
        assert_eq!(
            role(Some(&a(&[("io.kubernetes.cri.container-type", "sandbox")]))).unwrap(),
            Role::Sandbox
        );
        assert_eq!(
            role(Some(&a(&[
                ("io.kubernetes.cri.container-type", "container"),
                ("io.kubernetes.cri.sandbox-id", "abc123"),
            ])))
            .unwrap(),
            Role::Member {
                sandbox_id: "abc123".into()
            }
        );
        assert_eq!(
            role(Some(&a(&[
                ("io.kubernetes.cri-o.ContainerType", "container"),
                ("io.kubernetes.cri-o.SandboxID", "p1"),
            ])))
            .unwrap(),
            Role::Member {
                sandbox_id: "p1".into()
            }
        );
        assert_eq!(
            role(Some(&a(&[("io.kubernetes.docker.type", "podsandbox")]))).unwrap(),
            Role::Sandbox
        );
        let e = role(Some(&a(&[(
            "io.kubernetes.cri.container-type",
            "container",
        )])))
        .unwrap_err()
        .to_string();
        assert!(e.contains("io.kubernetes.cri.sandbox-id"), "{e}");
        let e = role(Some(&a(&[
            ("io.kubernetes.cri.container-type", "container"),
            ("io.kubernetes.cri.sandbox-id", "../x"),
        ])))
        .unwrap_err()
        .to_string();
        assert!(e.contains("sandbox-id"), "{e}");
        assert!(role(Some(&a(&[("io.kubernetes.cri.container-type", "weird")]))).is_err());
    }

    #[test]
    fn size_from_annotations() {
        assert_eq!(requested(None).unwrap(), (None, None));
        assert_eq!(
            requested(Some(&a(&[
                (CPU_QUOTA, "150000"),
                (CPU_PERIOD, "100000"),
                (MEMORY, "268435456"),
            ])))
            .unwrap(),
            (Some(2), Some(256))
        );
        assert_eq!(
            requested(Some(&a(&[(CPU_QUOTA, "-1"), (MEMORY, "0")]))).unwrap(),
            (None, None)
        );
        assert!(requested(Some(&a(&[(MEMORY, "lots")]))).is_err());
    }
}
