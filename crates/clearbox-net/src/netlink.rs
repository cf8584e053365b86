//! A synchronous rtnetlink socket: one request at a time, answered by an ACK or a dump.
//! Written here because `rtnetlink` needs an async runtime, which neither the host shim nor
//! the guest agent has; the message types are `netlink-packet-route`'s.

use std::io;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::Error;

/// An rtnetlink socket in the network namespace of the thread that opened it.
pub(crate) struct Netlink {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Netlink {
    pub(crate) fn open() -> Result<Self, Error> {
        let err = |source| Error::Netlink {
            op: "open a netlink socket".into(),
            source,
        };
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(err)?;
        sock.bind_auto().map_err(err)?;
        sock.connect(&SocketAddr::new(0, 0)).map_err(err)?;
        // Extended ACKs are nice to have; old kernels refuse the option.
        let _ = sock.set_ext_ack(true);
        Ok(Netlink {
            sock,
            seq: 0,
            buf: vec![0; 1 << 16],
        })
    }

    fn send(&mut self, msg: RouteNetlinkMessage, flags: u16, op: &str) -> Result<u32, Error> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        packet.finalize();
        let mut bytes = vec![0; packet.buffer_len()];
        packet.serialize(&mut bytes);
        self.sock.send(&bytes, 0).map_err(|source| Error::Netlink {
            op: op.to_string(),
            source,
        })?;
        Ok(self.seq)
    }

    /// Receives until `done` says so; calls `each` for every data message of our sequence.
    fn receive(
        &mut self,
        seq: u32,
        op: &str,
        mut each: impl FnMut(RouteNetlinkMessage),
    ) -> Result<(), Error> {
        loop {
            let n = self
                .sock
                .recv(&mut &mut self.buf[..], 0)
                .map_err(|source| Error::Netlink {
                    op: op.to_string(),
                    source,
                })?;
            let mut off = 0;
            while off < n {
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[off..n])
                    .map_err(|e| Error::Decode(format!("{op}: {e}")))?;
                let len = msg.header.length as usize;
                let mine = msg.header.sequence_number == seq;
                match msg.payload {
                    NetlinkPayload::Error(e) if mine => {
                        return match e.code {
                            None => Ok(()),
                            Some(code) => Err(Error::Netlink {
                                op: op.to_string(),
                                source: io::Error::from_raw_os_error(-code.get()),
                            }),
                        };
                    }
                    NetlinkPayload::Done(_) if mine => return Ok(()),
                    NetlinkPayload::InnerMessage(m) if mine => each(m),
                    _ => {}
                }
                if len == 0 {
                    break;
                }
                off += (len + 3) & !3;
            }
        }
    }

    /// A request the kernel answers with an ACK (or an error).
    pub(crate) fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        op: &str,
    ) -> Result<(), Error> {
        let seq = self.send(msg, flags | NLM_F_ACK, op)?;
        self.receive(seq, op, |_| {})
    }

    /// A dump request: every answer message.
    pub(crate) fn dump(
        &mut self,
        msg: RouteNetlinkMessage,
        op: &str,
    ) -> Result<Vec<RouteNetlinkMessage>, Error> {
        let seq = self.send(msg, NLM_F_DUMP, op)?;
        let mut out = Vec::new();
        self.receive(seq, op, |m| out.push(m))?;
        Ok(out)
    }
}

/// Whether a failed request failed with one of `errnos`.
pub(crate) fn is_errno(r: &Result<(), Error>, errnos: &[i32]) -> bool {
    matches!(r, Err(e) if e.errno().is_some_and(|n| errnos.contains(&n)))
}
