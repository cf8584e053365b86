//! The agent channel over one virtio-serial port: many host connections multiplexed on one
//! byte stream.
//!
//! A virtio-serial port is a single stream that migrates with the VM (vsock over vhost-user
//! does not), so VM templates use it for the agent. The host side is `clearbox-vmux` (one per
//! VM, in `clearbox-vmm`): it serves the same `CONNECT <port>\n` → `OK <n>\n` handshake as a
//! hybrid vsock socket, so every agent client is unchanged. The guest side is the agent's
//! `serial` module, which hands each channel to its ttrpc server.
//!
//! Frames, both ways: `kind: u8 | channel: u32 LE | len: u32 LE | payload[len]`.
//!
//! * `HELLO` (host → guest, channel 0): a new host session. Payload: 32 bytes of host
//!   entropy, then the host's `CLOCK_REALTIME` as `u64` LE nanoseconds. The guest mixes the
//!   bytes into its RNG and reseeds it, sets its clock, forgets every channel and answers
//!   `READY`. Sent once per VM process: after a cold boot and after a restore from a
//!   template, so every clone gets its own RNG state and the right time.
//! * `READY` (guest → host, channel 0): the agent serves; the host accepts connections.
//! * `OPEN` (host → guest): a new channel; the guest connects it to its ttrpc server, or
//!   answers `CLOSE`.
//! * `DATA` (both): bytes of one channel, at most [`MAX_PAYLOAD`].
//! * `CLOSE` (both): the sender is done with the channel (no half-close: ttrpc does not use
//!   it). Frames for unknown channels are dropped.

use std::io::{self, Read, Write};

/// Name of the agent's virtio-serial port (`/sys/class/virtio-ports/*/name`).
pub const PORT_NAME: &str = "org.clearbox.agent.0";
/// Largest payload of one frame.
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// Bytes of host entropy in a `HELLO`.
pub const SEED_LEN: usize = 32;
const HEADER: usize = 9;

/// What a frame says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Hello = 1,
    Ready = 2,
    Open = 3,
    Data = 4,
    Close = 5,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Hello,
            2 => Kind::Ready,
            3 => Kind::Open,
            4 => Kind::Data,
            5 => Kind::Close,
            _ => return None,
        })
    }
}

/// The placeholder MAC of NIC `i` of a VM template (locally administered). A VM restored
/// from a template starts with these; the agent gives NIC `i` the MAC of the `i`-th interface
/// of `UpdateInterfaces` (the host wires NICs in that order).
pub fn template_nic_mac(i: usize) -> [u8; 6] {
    [0x02, 0xcb, 0x7e, 0, 0, (i & 0xff) as u8]
}

/// One frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub kind: Kind,
    pub channel: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn new(kind: Kind, channel: u32, payload: Vec<u8>) -> Frame {
        Frame {
            kind,
            channel,
            payload,
        }
    }

    /// The wire form (header + payload), written with one `write_all`.
    pub fn encode(&self) -> Vec<u8> {
        encode(self.kind, self.channel, &self.payload)
    }
}

/// The wire form of a frame. Payloads longer than [`MAX_PAYLOAD`] are the caller's bug; they
/// are refused by the reader.
pub fn encode(kind: Kind, channel: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEADER + payload.len());
    v.push(kind as u8);
    v.extend_from_slice(&channel.to_le_bytes());
    v.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    v.extend_from_slice(payload);
    v
}

/// Reads one frame; `Ok(None)` at a clean end of stream (before a header).
pub fn read_frame(r: &mut impl Read) -> io::Result<Option<Frame>> {
    let mut h = [0u8; HEADER];
    let mut got = 0;
    while got < HEADER {
        match r.read(&mut h[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let bad = |m: String| io::Error::new(io::ErrorKind::InvalidData, m);
    let kind = Kind::from_u8(h[0]).ok_or_else(|| bad(format!("frame kind {}", h[0])))?;
    let channel = u32::from_le_bytes([h[1], h[2], h[3], h[4]]);
    let len = u32::from_le_bytes([h[5], h[6], h[7], h[8]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(bad(format!("frame payload of {len} bytes")));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    Ok(Some(Frame {
        kind,
        channel,
        payload,
    }))
}

/// Writes `data` as `DATA` frames of at most [`MAX_PAYLOAD`] bytes, each with one call of
/// `write` (which must write the whole frame atomically with respect to other writers).
pub fn write_data(
    channel: u32,
    data: &[u8],
    mut write: impl FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<()> {
    for chunk in data.chunks(MAX_PAYLOAD) {
        write(&encode(Kind::Data, channel, chunk))?;
    }
    Ok(())
}

/// The payload of a `HELLO`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    pub seed: [u8; SEED_LEN],
    pub realtime_ns: u64,
}

impl Hello {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = self.seed.to_vec();
        v.extend_from_slice(&self.realtime_ns.to_le_bytes());
        v
    }

    pub fn decode(p: &[u8]) -> Option<Hello> {
        if p.len() != SEED_LEN + 8 {
            return None;
        }
        let mut seed = [0u8; SEED_LEN];
        seed.copy_from_slice(&p[..SEED_LEN]);
        let mut t = [0u8; 8];
        t.copy_from_slice(&p[SEED_LEN..]);
        Some(Hello {
            seed,
            realtime_ns: u64::from_le_bytes(t),
        })
    }
}

/// Writes a whole frame to a shared writer.
pub fn write_frame(w: &mut impl Write, f: &Frame) -> io::Result<()> {
    w.write_all(&f.encode())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &Frame::new(Kind::Open, 7, vec![])).unwrap();
        write_data(7, &vec![0xab; MAX_PAYLOAD + 3], |b| {
            buf.extend_from_slice(b);
            Ok(())
        })
        .unwrap();
        let mut r = &buf[..];
        assert_eq!(
            read_frame(&mut r).unwrap(),
            Some(Frame::new(Kind::Open, 7, vec![]))
        );
        let a = read_frame(&mut r).unwrap().unwrap();
        assert_eq!(
            (a.kind, a.channel, a.payload.len()),
            (Kind::Data, 7, MAX_PAYLOAD)
        );
        let b = read_frame(&mut r).unwrap().unwrap();
        assert_eq!(b.payload, vec![0xab; 3]);
        assert_eq!(read_frame(&mut r).unwrap(), None);
    }

    #[test]
    fn bad_frames_are_errors() {
        assert!(read_frame(&mut &[9u8, 0, 0, 0, 0, 0, 0, 0, 0][..]).is_err());
        let mut big = encode(Kind::Data, 1, &[]);
        big[5..9].copy_from_slice(&((MAX_PAYLOAD as u32) + 1).to_le_bytes());
        assert!(read_frame(&mut &big[..]).is_err());
        // Truncated header and payload.
        assert!(read_frame(&mut &[4u8, 1, 0][..]).is_err());
        let mut short = encode(Kind::Data, 1, b"abc");
        short.pop();
        assert!(read_frame(&mut &short[..]).is_err());
    }

    #[test]
    fn hello_round_trip() {
        let h = Hello {
            seed: [5; SEED_LEN],
            realtime_ns: 1_700_000_000_123_456_789,
        };
        assert_eq!(Hello::decode(&h.encode()), Some(h));
        assert_eq!(Hello::decode(&[0; 3]), None);
    }
}
