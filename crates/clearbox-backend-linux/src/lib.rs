//! isolation backends that run on the host kernel: namespaces and fly
