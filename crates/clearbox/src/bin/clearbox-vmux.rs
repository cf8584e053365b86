//! `clearbox-vmux --listen PATH --serial PATH`: the host end of a VM's virtio-serial agent
//! channel (see `clearbox_vmm::serial`). Started, jailed, by the VM driver; not for users.

fn main() {
    std::process::exit(clearbox_vmm::serial::main_with_args(
        std::env::args_os().skip(1),
    ));
}
