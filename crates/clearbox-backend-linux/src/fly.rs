//! `isolation = "fly"`: chroot only — no new namespaces, no cgroups (rkt's fly stage1).

use clearbox_container::fly;
use clearbox_core::backend::Created;
use clearbox_core::runtime::SPEC_COPY;
use clearbox_core::{Backend, BackendError, ContainerCtx, CreateOpts, ExecOpts, Isolation};
use oci_spec::runtime::{Hook, Hooks, LinuxResources, Spec};

use crate::err;

/// Host-level isolation for privileged agents.
#[derive(Debug, Default)]
pub struct FlyBackend;

fn hooks(spec: &Spec, pick: impl Fn(&Hooks) -> &Option<Vec<Hook>>) -> Vec<Hook> {
    spec.hooks()
        .as_ref()
        .and_then(|h| pick(h).clone())
        .unwrap_or_default()
}

fn spec_of(c: &ContainerCtx<'_>) -> Result<Spec, BackendError> {
    Spec::load(c.dir.join(SPEC_COPY))
        .map_err(|e| BackendError::with("cannot read config.json copy", e))
}

fn pid_of(c: &ContainerCtx<'_>) -> Result<i32, BackendError> {
    c.state
        .pid
        .ok_or_else(|| BackendError::msg("container has no init process"))
}

/// A Kubernetes pod's containers share the pod's network (and IPC, UTS) namespaces, which
/// they join by path, and each has its own PID namespace. fly creates and joins no namespace:
/// a pod's containers would run in the host's network with the host's PID 1 as theirs, so a
/// pod container (one that carries CRI's `io.kubernetes.cri.container-type`) is refused.
fn refuse_pod(spec: &Spec) -> Result<(), BackendError> {
    const CRI_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
    if spec
        .annotations()
        .as_ref()
        .is_some_and(|a| a.contains_key(CRI_CONTAINER_TYPE))
    {
        return Err(BackendError::msg(
            "isolation fly cannot run Kubernetes pods (their containers must share the pod's \
             namespaces; fly runs on the host's): use isolation vm or namespaces",
        ));
    }
    Ok(())
}

impl Backend for FlyBackend {
    fn isolation(&self) -> Isolation {
        Isolation::Fly
    }

    fn create(&self, o: &CreateOpts<'_>) -> Result<Created, BackendError> {
        let process = o
            .spec
            .process()
            .as_ref()
            .ok_or_else(|| BackendError::msg("config.json has no process"))?;
        // fly loads no seccomp filter (rkt's fly: the process is the host's), so a notify
        // listener it was asked to serve could never hear from it: say so rather than run.
        if let Some(path) = o
            .spec
            .linux()
            .as_ref()
            .and_then(|l| l.seccomp().as_ref())
            .and_then(|s| s.listener_path().as_ref())
        {
            return Err(BackendError::msg(format!(
                "seccomp listenerPath {} cannot be honoured: isolation fly applies no seccomp filter",
                path.display()
            )));
        }
        refuse_pod(o.spec)?;
        // fly performs no mounts (no mount namespace to keep them in), but a bind source that
        // does not exist is still an error in the spec, as with every other isolation.
        for m in o.spec.mounts().iter().flatten() {
            let bind = m.typ().as_deref() == Some("bind")
                || m.options()
                    .iter()
                    .flatten()
                    .any(|opt| opt == "bind" || opt == "rbind");
            if let (true, Some(src)) = (bind, m.source()) {
                if !src.exists() {
                    return Err(BackendError::msg(format!(
                        "mount source {} does not exist",
                        src.display()
                    )));
                }
            }
        }
        // runc's order: prestart (deprecated), then createRuntime, then createContainer.
        #[allow(deprecated)]
        let mut create_hooks = hooks(o.spec, |h| h.prestart());
        create_hooks.extend(hooks(o.spec, |h| h.create_runtime()));
        create_hooks.extend(hooks(o.spec, |h| h.create_container()));
        let annotations = o.spec.annotations().clone().unwrap_or_default();
        let pid = fly::create(&fly::CreateParams {
            id: o.id,
            bundle: o.bundle,
            rootfs: o.rootfs,
            dir: o.dir,
            process,
            mounts: o.spec.mounts().as_deref().unwrap_or_default(),
            console_socket: o.console_socket,
            preserve_fds: o.preserve_fds,
            oom_score_adj: process.oom_score_adj(),
            create_hooks,
            annotations: &annotations,
        })
        .map_err(err)?;
        Ok(Created { pid })
    }

    fn start(&self, c: &ContainerCtx<'_>) -> Result<(), BackendError> {
        let spec = spec_of(c)?;
        fly::start(
            c.id,
            &c.state.bundle,
            c.dir,
            pid_of(c)?,
            &hooks(&spec, |h| h.poststart()),
            &spec.annotations().clone().unwrap_or_default(),
        )
        .map_err(err)
    }

    fn kill(&self, c: &ContainerCtx<'_>, signal: i32, all: bool) -> Result<(), BackendError> {
        fly::signal(pid_of(c)?, &c.state.rootfs, signal, all).map_err(err)
    }

    fn pause(&self, c: &ContainerCtx<'_>) -> Result<(), BackendError> {
        fly::signal(pid_of(c)?, &c.state.rootfs, libc::SIGSTOP, true).map_err(err)
    }

    fn resume(&self, c: &ContainerCtx<'_>) -> Result<(), BackendError> {
        fly::signal(pid_of(c)?, &c.state.rootfs, libc::SIGCONT, true).map_err(err)
    }

    fn delete(&self, c: &ContainerCtx<'_>, _force: bool) -> Result<(), BackendError> {
        let spec = spec_of(c)?;
        let Some(pid) = c.state.pid else {
            return Ok(());
        };
        // A recycled pid must not be killed: only touch the init we recorded.
        let ours = clearbox_core::process::is_alive(pid, c.state.pid_start_time);
        let poststop = hooks(&spec, |h| h.poststop());
        let annotations = spec.annotations().clone().unwrap_or_default();
        fly::delete(
            &fly::Identity {
                id: c.id,
                bundle: &c.state.bundle,
                annotations: &annotations,
            },
            &c.state.rootfs,
            c.dir,
            ours.then_some(pid),
            pid,
            &poststop,
        )
        .map_err(err)
    }

    fn exec(&self, c: &ContainerCtx<'_>, o: &ExecOpts<'_>) -> Result<i32, BackendError> {
        if let Some(sub) = o.sub_cgroup {
            return Err(BackendError::msg(format!(
                "exec --cgroup {sub}: isolation fly has no cgroups"
            )));
        }
        fly::exec(
            o.process,
            &c.state.rootfs,
            pid_of(c)?,
            o.console_socket,
            o.preserve_fds,
        )
        .map_err(err)
    }

    fn pids(&self, c: &ContainerCtx<'_>) -> Result<Vec<i32>, BackendError> {
        Ok(fly::processes(pid_of(c)?, &c.state.rootfs))
    }

    fn stats(&self, _c: &ContainerCtx<'_>) -> Result<serde_json::Value, BackendError> {
        Err(err(clearbox_container::Error::Unsupported("stats")))
    }

    fn update(&self, _c: &ContainerCtx<'_>, _r: &LinuxResources) -> Result<(), BackendError> {
        Err(err(clearbox_container::Error::Unsupported("update")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(annotations: &[(&str, &str)]) -> Spec {
        let mut s = Spec::default();
        s.set_annotations(Some(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ));
        s
    }

    #[test]
    fn pod_containers_are_refused_with_the_reason() {
        for kind in ["sandbox", "container"] {
            let e = refuse_pod(&spec(&[("io.kubernetes.cri.container-type", kind)])).unwrap_err();
            assert!(
                e.message.contains("cannot run Kubernetes pods"),
                "{}",
                e.message
            );
            assert!(
                e.message.contains("isolation vm or namespaces"),
                "{}",
                e.message
            );
        }
        assert!(refuse_pod(&spec(&[("org.example", "x")])).is_ok());
        assert!(refuse_pod(&Spec::default()).is_ok());
    }
}
