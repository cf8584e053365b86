//! clearbox: an OCI runtime, runc drop-in, with VM isolation
fn main() {}
