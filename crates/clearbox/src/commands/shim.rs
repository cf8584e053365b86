//! `clearbox __vm-shim` (hidden): the host shim of one process of a VM container. `create` and
//! `exec` start it; it is not meant to be run by hand.

use crate::cli::VmShim;

use super::exit_byte;

pub fn run(a: VmShim) -> u8 {
    exit_byte(clearbox_backends::vm_shim_main(&a.request, a.ready_fd))
}
