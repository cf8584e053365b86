//! Isolation backends on the host kernel: [`namespaces::NamespacesBackend`] (runc-style) and
//! [`fly::FlyBackend`] (chroot only). Thin adapters from the core's [`clearbox_core::Backend`]
//! to the `clearbox-container` setup library.

pub mod fly;
pub mod namespaces;

use clearbox_core::BackendError;

/// A setup error as one line.
pub(crate) fn err(e: clearbox_container::Error) -> BackendError {
    BackendError::flatten(&e)
}
