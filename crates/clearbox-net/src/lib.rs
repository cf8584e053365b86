//! Networking for containers in VMs, spoken over rtnetlink.
//!
//! * [`netns`]: enter a network namespace (by path, or a new one) and run code in another one.
//! * [`scan`]: what an engine (podman/netavark, CNI, Docker) put into a network namespace: its
//!   Ethernet interfaces with MAC, MTU and addresses, and the routes of the main table.
//! * [`tap`]: per interface, a tap in the same namespace, joined to the interface by tc ingress
//!   qdiscs and `mirred` redirects both ways (the model Kata calls tc-filter), and its removal.
//! * [`apply`]: the guest side: give the VM's NICs the interfaces' names, MTUs and addresses, and
//!   add the routes.
//!
//! Messages come from `netlink-packet-route` (the message layer of `rtnetlink`), sent over a
//! plain synchronous `netlink-sys` socket: the host shim and the guest agent are synchronous
//! programs, and `rtnetlink` itself would bring an async runtime into both.

// Tests may unwrap: a panic is the failure report there.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod apply;
mod error;
mod netlink;
pub mod netns;
pub mod scan;
pub mod tap;
mod types;

pub use error::Error;
pub use types::{Interface, IpNet, MacAddr, Network, Route};

/// Name prefix of the taps clearbox creates (`cbtap0`, `cbtap1`, …).
pub const TAP_PREFIX: &str = "cbtap";
