//! Who may talk to the agent: only the host.
//!
//! The agent's API runs anything in any container, so a connection is served only when it
//! comes from the host. On vsock the host is `VMADDR_CID_HOST` (2), also behind
//! vhost-user-vsock (`vhost-device-vsock` presents the host side as CID 2). Everything else
//! is refused before ttrpc reads a byte: `VMADDR_CID_LOCAL` (1, the guest's loopback
//! transport), the guest's own CID (loopback to itself), the hypervisor (0) and any other
//! guest. A container cannot even open an `AF_VSOCK` socket (see `guard`); this check is the
//! second, independent layer.
//!
//! The decision ([`check`]) is a pure function of the channel kind and the peer address.
//! Behind a virtio-serial port (the template-capable channel, see `serial`) the agent's own
//! demultiplexer connects each host channel to the ttrpc server's Unix socket: there only a
//! peer that is this very process (`SO_PEERCRED`) is served; the port itself is reachable
//! from the host only and held open exclusively by the agent.
//! The Unix socket of host test mode (`--listen-unix`) is guarded by its file permissions.

use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

/// `VMADDR_CID_HOST`: the host, as seen from a guest.
pub const HOST_CID: u32 = 2;

/// The transport a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// AF_VSOCK: only the host's CID is served.
    Vsock,
    /// A virtio-serial port, demultiplexed by the agent itself onto a Unix socket: only the
    /// agent's own process is served there.
    VirtioSerial,
    /// Host test mode's Unix socket (0700 directory, the test's own).
    Unix,
}

/// What `getpeername` said about an accepted connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Vsock {
        cid: u32,
        port: u32,
    },
    Unix,
    /// A Unix socket whose peer is this process (`SO_PEERCRED`).
    SameProcess,
    /// Any other address family, or no address.
    Other,
}

/// Why a connection was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("vsock peer CID {cid} (port {port}) is not the host (CID {HOST_CID})")]
    NotHost { cid: u32, port: u32 },
    #[error("peer {peer:?} does not belong on a {channel:?} channel")]
    WrongFamily { channel: Channel, peer: Peer },
    #[error("cannot read the peer address")]
    Unknown(#[source] nix::Error),
}

/// The decision, without side effects.
pub fn check(channel: Channel, peer: Peer) -> Result<(), Refused> {
    match (channel, peer) {
        (Channel::Vsock, Peer::Vsock { cid, .. }) if cid == HOST_CID => Ok(()),
        (Channel::Vsock, Peer::Vsock { cid, port }) => Err(Refused::NotHost { cid, port }),
        (Channel::Unix, Peer::Unix | Peer::SameProcess) => Ok(()),
        (Channel::VirtioSerial, Peer::SameProcess) => Ok(()),
        (channel, peer) => Err(Refused::WrongFamily { channel, peer }),
    }
}

/// The peer of a connected socket.
pub fn peer_of(fd: RawFd) -> Result<Peer, Refused> {
    use nix::sys::socket::{getpeername, SockaddrLike, SockaddrStorage};
    let addr = getpeername::<SockaddrStorage>(fd).map_err(Refused::Unknown)?;
    if let Some(v) = addr.as_vsock_addr() {
        return Ok(Peer::Vsock {
            cid: v.cid(),
            port: v.port(),
        });
    }
    if addr.family() == Some(nix::sys::socket::AddressFamily::Unix) {
        // SAFETY: the hook owns no descriptor; `fd` stays open for the call.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let cred = nix::sys::socket::getsockopt(&fd, nix::sys::socket::sockopt::PeerCredentials)
            .map_err(Refused::Unknown)?;
        if cred.pid() == std::process::id() as i32 {
            return Ok(Peer::SameProcess);
        }
        return Ok(Peer::Unix);
    }
    Ok(Peer::Other)
}

/// The accept hook of the agent's server for one channel.
#[derive(Debug)]
pub struct Guard(pub Channel);

impl Guard {
    /// The server's accept hook: refused connections are closed before any request is read.
    pub fn check_fd(&self, fd: BorrowedFd<'_>) -> Result<(), String> {
        let decision = peer_of(fd.as_raw_fd()).and_then(|p| check(self.0, p));
        if decision.is_ok() {
            crate::debug!("connection accepted");
        }
        decision.map_err(|e| {
            // Debug only: a guest process must not be able to flood the console.
            crate::debug!("connection refused: {e}");
            e.to_string()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn vsock(cid: u32) -> Peer {
        Peer::Vsock { cid, port: 1234 }
    }

    #[test]
    fn only_the_host_cid_is_served_on_vsock() {
        assert_eq!(check(Channel::Vsock, vsock(HOST_CID)), Ok(()));
        // Hypervisor, local loopback, the guest's own CID (3 is the first guest CID; any
        // other value too), another guest, VMADDR_CID_ANY.
        for cid in [0, 1, 3, 4, 1000, u32::MAX] {
            assert_eq!(
                check(Channel::Vsock, vsock(cid)),
                Err(Refused::NotHost { cid, port: 1234 }),
                "cid {cid}"
            );
        }
        assert!(check(Channel::Vsock, Peer::Unix).is_err());
        assert!(check(Channel::Vsock, Peer::Other).is_err());
    }

    #[test]
    fn other_channels() {
        assert_eq!(check(Channel::Unix, Peer::Unix), Ok(()));
        assert!(check(Channel::Unix, vsock(HOST_CID)).is_err());
        assert_eq!(check(Channel::VirtioSerial, Peer::SameProcess), Ok(()));
        assert!(check(Channel::VirtioSerial, Peer::Unix).is_err());
        assert!(check(Channel::VirtioSerial, Peer::Other).is_err());
        assert!(check(Channel::VirtioSerial, vsock(HOST_CID)).is_err());
    }

    #[test]
    fn hook_reads_the_real_peer() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().expect("pair");
        // A socket pair in one process: its peer is this process.
        assert_eq!(peer_of(a.as_raw_fd()), Ok(Peer::SameProcess));
        assert!(Guard(Channel::VirtioSerial).check_fd(a.as_fd()).is_ok());
        // A Unix peer on a vsock listener is refused by the hook itself.
        assert!(Guard(Channel::Vsock).check_fd(a.as_fd()).is_err());
        assert!(Guard(Channel::Unix).check_fd(a.as_fd()).is_ok());
        // Not a socket at all.
        let f = std::fs::File::open("/dev/null").expect("open");
        assert!(matches!(peer_of(f.as_raw_fd()), Err(Refused::Unknown(_))));
    }
}
