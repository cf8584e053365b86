//! Isolation backends on the host kernel: [`namespaces::NamespacesBackend`] (runc-style) and
//! [`fly::FlyBackend`] (chroot only). Thin adapters from the core's [`clearbox_core::Backend`]
//! to the `clearbox-container` setup library.

pub mod fly;
pub mod namespaces;

use clearbox_core::BackendError;

/// Flattens a setup error into one line. libcontainer's messages often repeat their source's
/// text, so a cause already contained in the message is not appended again.
pub(crate) fn err(e: clearbox_container::Error) -> BackendError {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        src = s.source();
    }
    BackendError::msg(msg)
}
