//! The container's network, carried into its VM.
//!
//! The engine (podman/netavark, CNI, Docker) prepares a network namespace; the shim enters it
//! (or creates one when the spec asks for a new namespace without a path, as runc does) before
//! it starts QEMU and the daemons, so they all run there and `/proc/<shim pid>/ns/net` is the
//! container's namespace. After the create hooks ran (Docker moves its veth in from a prestart
//! hook), the shim scans the namespace and, per Ethernet interface, creates a tap joined to it
//! with tc mirred redirects ([`clearbox_net::tap`]); QEMU gets the tap fds as virtio-net NICs
//! with the interfaces' MACs, and the agent gives them the interfaces' names, MTUs, addresses
//! and routes. The container shares the VM's root network namespace: the VM is the boundary.
//!
//! What was wired is recorded in the VM record ([`NetRecord`]), so `delete` can remove the
//! qdiscs (and a tap, should one outlive QEMU) even after the shim was killed. The veth and
//! the namespace belong to the engine and stay.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use clearbox_net::tap::Tap;
use clearbox_net::{Network, TAP_PREFIX};
use clearbox_vmm::NetDevice;
use oci_spec::runtime::{LinuxNamespaceType, Spec};
use serde::{Deserialize, Serialize};

use crate::layout::Record;
use crate::Error;

/// Where the shim gets its network namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum NetNs {
    /// The engine's namespace at this path.
    Join(PathBuf),
    /// A new one (the spec names the type without a path); hooks may fill it.
    New,
}

/// One interface joined to one tap.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Wired {
    pub veth: String,
    pub tap: String,
}

/// What the shim wired, for teardown by any later process.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct NetRecord {
    /// The engine's namespace path; `None`: the shim's own (reachable through its pid only).
    pub netns: Option<PathBuf>,
    pub links: Vec<Wired>,
}

/// The network namespace a VM container gets, or a clear refusal for host networking.
pub(crate) fn netns_of(spec: &Spec) -> Result<NetNs, Error> {
    let ns = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .and_then(|n| {
            n.iter()
                .find(|n| n.typ() == LinuxNamespaceType::Network)
                .cloned()
        });
    match ns {
        None => Err(Error::Msg(
            "isolation vm cannot share the host's network (the spec has no network namespace, \
             e.g. --network host): use a network namespace, or isolation namespaces"
                .into(),
        )),
        Some(n) => match n.path() {
            Some(p) => Ok(NetNs::Join(p.clone())),
            None => Ok(NetNs::New),
        },
    }
}

/// Shim: moves this thread (the shim's main thread, whose children QEMU and the daemons will
/// be) into the container's network namespace. Refuses a namespace another VM already uses.
pub(crate) fn enter(ns: &NetNs) -> Result<(), Error> {
    let fail = |e: clearbox_net::Error| Error::Msg(clearbox_util::error::chain(&e));
    match ns {
        NetNs::Join(p) => clearbox_net::netns::enter_path(p).map_err(|e| {
            Error::Msg(format!(
                "cannot join network namespace {}: {}",
                p.display(),
                clearbox_util::error::chain(&e)
            ))
        })?,
        NetNs::New => clearbox_net::netns::enter_new().map_err(fail)?,
    }
    let taps = clearbox_net::scan::clearbox_taps().map_err(fail)?;
    if let (Some(tap), NetNs::Join(p)) = (taps.first(), ns) {
        return Err(Error::Msg(format!(
            "network namespace {} belongs to another VM container ({tap} is its NIC): a VM \
             container cannot share another one's network (--network container:X); pods come \
             with the shim v2",
            p.display()
        )));
    }
    Ok(())
}

/// Shim: the taps of a wired namespace; unwires on drop (error paths and the end of the
/// container), so a failing shim leaves no qdisc behind.
pub(crate) struct Wiring {
    pub links: Vec<Wired>,
    pub taps: Vec<Tap>,
}

impl Wiring {
    /// NICs for the VM, in the order of the scanned interfaces.
    pub(crate) fn devices(&self, net: &Network) -> Vec<NetDevice> {
        self.taps
            .iter()
            .zip(&net.interfaces)
            .map(|(t, i)| NetDevice {
                fd: t.fd.as_raw_fd(),
                mac: i.mac.to_string(),
                mtu: i.mtu,
            })
            .collect()
    }

    /// QEMU holds the taps now: closing ours lets a tap vanish with QEMU.
    pub(crate) fn close_taps(&mut self) {
        self.taps.clear();
    }

    /// The shim is giving up its privileges: it could no longer remove the qdiscs (every
    /// attempt would fail with EPERM, a warning at each container's end). `delete` removes
    /// them, from the wiring recorded in the VM record by [`wire`].
    pub(crate) fn leave_to_delete(&mut self) {
        self.links.clear();
    }
}

impl Drop for Wiring {
    fn drop(&mut self) {
        self.taps.clear();
        unwire_here(&self.links);
    }
}

/// Shim: wires every interface of `net` to a new tap, recording the plan in the VM record
/// first (so even a shim killed half-way is cleaned up by `delete`).
pub(crate) fn wire(net: &Network, ns: &NetNs, dir: &Path, rec: &Record) -> Result<Wiring, Error> {
    let links: Vec<Wired> = net
        .interfaces
        .iter()
        .enumerate()
        .map(|(i, iface)| Wired {
            veth: iface.name.clone(),
            tap: format!("{TAP_PREFIX}{i}"),
        })
        .collect();
    let mut rec = rec.clone();
    rec.net = Some(NetRecord {
        netns: match ns {
            NetNs::Join(p) => Some(p.clone()),
            NetNs::New => None,
        },
        links: links.clone(),
    });
    rec.save(dir)?;
    let mut w = Wiring {
        links: Vec::new(),
        taps: Vec::new(),
    };
    for (iface, l) in net.interfaces.iter().zip(links) {
        match clearbox_net::tap::wire(iface, &l.tap) {
            Ok(tap) => {
                w.links.push(l);
                w.taps.push(tap);
            }
            Err(e) => {
                // Only what was wired is ours to remove (`wire` undid its own part).
                if let Some(n) = rec.net.as_mut() {
                    n.links = w.links.clone();
                }
                let _ = rec.save(dir);
                return Err(Error::Msg(format!(
                    "cannot connect interface {} to the VM: {}",
                    iface.name,
                    clearbox_util::error::chain(&e)
                )));
            }
        }
    }
    Ok(w)
}

/// Removes the qdiscs (and taps) of `links` in the current network namespace.
fn unwire_here(links: &[Wired]) {
    for l in links {
        if let Err(e) = clearbox_net::tap::unwire(&l.veth, &l.tap) {
            tracing::warn!(veth = %l.veth, error = %clearbox_util::error::chain(&e), "network teardown");
        }
    }
}

/// Any process: opens the namespace of a recorded wiring, before its shim is killed (a
/// namespace the shim created is reachable only through a live pid).
pub(crate) fn open_netns(rec: &NetRecord, shim: Option<(i32, Option<u64>)>) -> Option<File> {
    if rec.links.is_empty() {
        return None;
    }
    if let Some(p) = &rec.netns {
        return File::open(p).ok();
    }
    let (pid, start) = shim?;
    let f = File::open(format!("/proc/{pid}/ns/net")).ok()?;
    // Opened first, verified second: the fd pins the namespace of the process we checked.
    clearbox_core::process::is_alive(pid, start).then_some(f)
}

/// Any process: removes what the shim wired, inside `ns`.
pub(crate) fn unwire_in(ns: &File, rec: &NetRecord) {
    let links = rec.links.clone();
    let r = clearbox_net::netns::run_in(ns, move || {
        unwire_here(&links);
        Ok(())
    });
    if let Err(e) = r {
        tracing::warn!(error = %clearbox_util::error::chain(&e), "network teardown");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(namespaces: serde_json::Value) -> Spec {
        serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "process": {"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
            "linux": {"namespaces": namespaces}
        }))
        .unwrap()
    }

    #[test]
    fn network_namespace_choice() {
        let s = spec(serde_json::json!([{"type": "network", "path": "/run/netns/x"}]));
        assert_eq!(netns_of(&s).unwrap(), NetNs::Join("/run/netns/x".into()));
        let s = spec(serde_json::json!([{"type": "pid"}, {"type": "network"}]));
        assert_eq!(netns_of(&s).unwrap(), NetNs::New);
        let s = spec(serde_json::json!([{"type": "pid"}]));
        let e = netns_of(&s).unwrap_err().to_string();
        assert!(e.contains("host's network") && !e.contains('\n'), "{e}");
    }
}
