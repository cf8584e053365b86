//! The isolation backends linked into clearbox's binaries, as one [`BackendRegistry`].
//!
//! The core never imports a backend; each binary hands it this registry. Both the CLI
//! (`clearbox`) and the containerd shim (`containerd-shim-clearbox-v2`) use it, so a container
//! runs on the same backend code whichever of them drives it.

use std::path::PathBuf;

use clearbox_backend_linux::{fly::FlyBackend, namespaces::NamespacesBackend};
use clearbox_backend_vm::VmBackend;
use clearbox_core::{Backend, BackendRegistry, Config, Error, Isolation, Runtime};

/// The hidden subcommand every binary linking the VM backend must serve: the VM backend
/// re-executes `/proc/self/exe` as `[--log FILE] [--debug] __vm-shim REQUEST READY_FD`.
pub use clearbox_backend_vm::SHIM_SUBCOMMAND as VM_SHIM_SUBCOMMAND;

/// The backends linked into this binary.
struct Backends {
    namespaces: NamespacesBackend,
    fly: FlyBackend,
    vm: VmBackend,
}

impl BackendRegistry for Backends {
    fn get(&self, isolation: Isolation) -> Result<&dyn Backend, Error> {
        match isolation {
            Isolation::Namespaces => Ok(&self.namespaces),
            Isolation::Fly => Ok(&self.fly),
            Isolation::Vm => Ok(&self.vm),
        }
    }
}

static BACKENDS: Backends = Backends {
    namespaces: NamespacesBackend,
    fly: FlyBackend,
    vm: VmBackend,
};

/// Every backend of this build.
pub fn registry() -> &'static dyn BackendRegistry {
    &BACKENDS
}

/// A runtime over every backend of this build, with its state under `root`.
pub fn runtime(
    root: impl Into<PathBuf>,
    config: Config,
    isolation: Option<Isolation>,
    systemd_cgroup: bool,
) -> Result<Runtime<'static>, Error> {
    Runtime::new(root, config, registry(), isolation, systemd_cgroup)
}

/// Runs the VM backend's per-process host shim (`__vm-shim REQUEST READY_FD`); returns its
/// exit code (or does not return when the guest process died of a signal).
pub fn vm_shim_main(request: &std::path::Path, ready_fd: i32) -> i32 {
    clearbox_backend_vm::shim::main(request, ready_fd)
}

/// VM templates of the VM backend: whether the configuration turns them on, `clearbox
/// template build`, and where the cache is (`clearbox template list|prune`).
pub use clearbox_backend_vm::{build_template, template_cache, templates_enabled};
