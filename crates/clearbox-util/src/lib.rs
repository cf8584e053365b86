//! The small utilities every clearbox crate shares, written once: an error and its causes on
//! one line ([`error`]), a process's `/proc/<pid>/stat` fields, its start-time identity and its
//! pidfd ([`proc`]), termination signals caught while a create is undone ([`interrupt`]). It
//! depends on nothing of clearbox and on `libc` only, so that every crate, the guest agent
//! included, can use it (docs/ARCHITECTURE.md, "Crates").

pub mod error;
pub mod interrupt;
pub mod proc;
