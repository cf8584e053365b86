//! OCI hooks that belong on the host: `createRuntime` and `prestart` at create, `poststart`
//! after start, `poststop` at delete. `createContainer` and `startContainer` would have to run in
//! the container's namespaces, which live in the guest; they are not run (the guest has no copy
//! of the host's hook binaries).

use std::path::{Path, PathBuf};

use libcontainer::container::{ContainerStatus, State as HookState};
use oci_spec::runtime::{Hook, Spec};

use crate::Error;

#[derive(Debug, Clone, Copy)]
pub(crate) enum Phase {
    CreateRuntime,
    Poststart,
    Poststop,
}

pub(crate) fn run(
    spec: &Spec,
    phase: Phase,
    id: &str,
    pid: i32,
    bundle: &Path,
) -> Result<(), Error> {
    let Some(hooks) = spec.hooks() else {
        return Ok(());
    };
    let (list, status): (Vec<Hook>, ContainerStatus) = match phase {
        Phase::CreateRuntime => {
            // prestart is deprecated but still used; runc runs it right after createRuntime.
            #[allow(deprecated)]
            let pre = hooks.prestart().clone().unwrap_or_default();
            let mut l = hooks.create_runtime().clone().unwrap_or_default();
            l.extend(pre);
            (l, ContainerStatus::Created)
        }
        Phase::Poststart => (
            hooks.poststart().clone().unwrap_or_default(),
            ContainerStatus::Running,
        ),
        Phase::Poststop => (
            hooks.poststop().clone().unwrap_or_default(),
            ContainerStatus::Stopped,
        ),
    };
    if list.is_empty() {
        return Ok(());
    }
    let state = HookState::new(id, status, Some(pid), PathBuf::from(bundle));
    libcontainer::hooks::run_hooks(Some(&list), Some(&state), None, None, None).map_err(Error::Hook)
}
