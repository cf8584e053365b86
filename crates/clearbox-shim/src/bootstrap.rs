//! containerd's runtime v2 bootstrap: `start` (launch or reuse the shim, print its address),
//! `delete` (clean up after a shim containerd lost), and the long-running shim itself.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use containerd_shim::api::DeleteResponse;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::util::write_address;
use containerd_shim::{spawn, Config, ExitSignal, Flags, Shim, StartOpts};

use crate::events::Events;
use crate::helper::{self, Op};
use crate::service::{state_root, Service};

/// Annotation naming the pod (sandbox) a CRI container belongs to.
pub const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
/// Annotation telling the sandbox (pause) container from the pod's app containers.
pub const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";

pub struct ClearboxShim {
    namespace: String,
    id: String,
    bundle: PathBuf,
    /// This shim's socket (`unix://…`), removed when the shim ends.
    socket: String,
    exit: Arc<ExitSignal>,
}

impl Shim for ClearboxShim {
    type T = Service;

    fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        let bundle = if args.bundle.is_empty() {
            std::env::current_dir().unwrap_or_default()
        } else {
            PathBuf::from(&args.bundle)
        };
        Self {
            namespace: args.namespace.clone(),
            id: args.id.clone(),
            bundle,
            socket: args.socket.clone(),
            exit: Arc::new(ExitSignal::default()),
        }
    }

    /// One shim per pod: a CRI app container joins the shim of its sandbox (the socket address
    /// is derived from the grouping id; a second `start` finds it in use and answers with it).
    fn start_shim(&mut self, opts: StartOpts) -> containerd_shim::Result<String> {
        let grouping = grouping(&self.bundle).unwrap_or_else(|| opts.id.clone());
        if grouping != opts.id {
            // The pod's shim is normally up already: answer with its address without starting
            // a second process that would only find the socket taken (as runc's and Kata's
            // Go shims do).
            let address =
                containerd_shim::socket_address(&opts.address, &opts.namespace, &grouping);
            let path = address.strip_prefix("unix://").unwrap_or(&address);
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                write_address(&address)?;
                return Ok(address);
            }
        }
        let (_pid, address) = spawn(opts, &grouping, Vec::new())?;
        write_address(&address)?;
        Ok(address)
    }

    /// containerd lost the shim (it died or was killed): remove whatever of the container is
    /// left — processes, VM, mounts, state — from the shim's state root.
    fn delete_shim(&mut self) -> containerd_shim::Result<DeleteResponse> {
        let root = state_root(&self.namespace);
        let rootfs = self.bundle.join("rootfs");
        let op = Op::Delete {
            id: self.id.clone(),
            unmount: Some(rootfs),
        };
        if let Err(e) = helper::run(&root, &op, Default::default()) {
            log::warn!("cleanup of {}: {e}", self.id);
        }
        let _ = std::fs::remove_dir(&root);
        Ok(DeleteResponse {
            pid: 0,
            exit_status: 137,
            exited_at: MessageField::some(Timestamp::now()),
            ..Default::default()
        })
    }

    fn wait(&mut self) {
        self.exit.wait();
        // containerd may remove the bundle (and with it the `address` file the crate reads
        // to find the socket) as soon as Shutdown returned: remove the socket here.
        if let Some(path) = self.socket.strip_prefix("unix://") {
            let _ = std::fs::remove_file(path);
        }
    }

    fn create_task_service(&self, publisher: RemotePublisher) -> Self::T {
        Service::new(
            &self.namespace,
            Events::new(publisher, self.namespace.clone()),
            Arc::clone(&self.exit),
        )
    }
}

/// The pod a CRI app container belongs to, from its bundle's annotations; `None` for the
/// sandbox container itself (its id is the grouping) and for containers outside a pod.
fn grouping(bundle: &Path) -> Option<String> {
    let text = std::fs::read(bundle.join("config.json")).ok()?;
    let spec: serde_json::Value = serde_json::from_slice(&text).ok()?;
    let ann = spec.get("annotations")?;
    if ann.get(CONTAINER_TYPE).and_then(|v| v.as_str()) != Some("container") {
        return None;
    }
    ann.get(SANDBOX_ID)
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_containers_group_by_sandbox() {
        let dir = tempfile::tempdir().unwrap();
        let write = |ann: serde_json::Value| {
            std::fs::write(
                dir.path().join("config.json"),
                serde_json::to_vec(&serde_json::json!({"annotations": ann})).unwrap(),
            )
            .unwrap();
        };
        write(serde_json::json!({CONTAINER_TYPE: "container", SANDBOX_ID: "pod1"}));
        assert_eq!(grouping(dir.path()).as_deref(), Some("pod1"));
        write(serde_json::json!({CONTAINER_TYPE: "sandbox", SANDBOX_ID: "pod1"}));
        assert_eq!(grouping(dir.path()), None);
        write(serde_json::json!({}));
        assert_eq!(grouping(dir.path()), None);
    }
}
