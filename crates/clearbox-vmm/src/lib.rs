//! hypervisor driver: QEMU microvm, accelerator detection, vsock transport
