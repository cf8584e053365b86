//! clearbox guest agent, PID 1 inside the VM
fn main() {}
