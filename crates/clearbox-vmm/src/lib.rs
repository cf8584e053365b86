//! Hypervisor driver: runs a QEMU microvm with a guest kernel and initramfs,
//! picks the accelerator at run time (real KVM or TCG), wires the agent
//! channel (kernel vhost-vsock or hybrid vsock through vhost-device-vsock)
//! and virtio-fs shares (one sandboxed virtiofsd each), and hands the caller
//! a connected byte stream to the guest agent. It knows nothing of the agent
//! protocol.
//!
//! ```no_run
//! # fn main() -> Result<(), clearbox_vmm::Error> {
//! use clearbox_vmm::{Vm, VmConfig, AGENT_PORT};
//! use std::time::Duration;
//! let vm = Vm::start(VmConfig::new(
//!     clearbox_vmm::DEFAULT_KERNEL,
//!     clearbox_vmm::DEFAULT_INITRAMFS,
//!     "/run/clearbox/vm0",
//! ))?;
//! let stream = vm.connect_agent(AGENT_PORT, Duration::from_secs(30))?;
//! // ... speak the agent protocol on `stream`, ask the guest to power off ...
//! # drop(stream);
//! vm.shutdown(Duration::from_secs(5))?;
//! # Ok(()) }
//! ```

// Tests may unwrap: a panic is the failure report there.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod accel;
mod binaries;
pub mod check;
mod config;
mod error;
mod handle;
mod helpers;
mod jail;
mod proc;
mod qemu;
mod qmp;
mod seccomp;
pub mod serial;
pub mod template;
mod vm;
mod vsock;

pub use accel::{
    cpuinfo_has_virt, host_tsc_khz, tsc_khz_from_cpuinfo, Accel, AccelMode, DevKvm, KvmFacts,
    KvmKind,
};
pub use binaries::{find_program, VirtiofsdFlavor};
pub use check::{check, HostReport};
pub use config::{
    AgentChannel, FsShare, Hypervisor, NetDevice, QemuOptions, VmConfig, VsockMode, AGENT_PORT,
    DEFAULT_INITRAMFS, DEFAULT_KERNEL,
};
pub use error::{Error, Result};
pub use handle::{ProcRecord, VmHandle};
pub use jail::{
    drop_privileges, JailIds, JailOptions, DEFAULT_LOCK_DIR, DEFAULT_UID_BASE, DEFAULT_UID_COUNT,
};
pub use template::{template_nic_mac, TemplateOptions, DEFAULT_TEMPLATE_DIR};
pub use vm::Vm;

pub use vsock::AgentTransport;
