//! The agent channel over a virtio-serial port (`clearbox_protocol::mux`).
//!
//! The host asks for it with `clearbox.channel=serial` on the kernel command line and gives
//! the VM one virtio-serial port named [`PORT_NAME`]. The agent opens the port once and keeps
//! it open: the kernel lets one opener at a time have a port (`EBUSY` for every other, a
//! privileged container that makes its own device node included), and the agent removes the
//! port's node from its `/dev` (containers get their own `/dev` anyway). A demultiplexer
//! thread reads frames from the port; each channel the host opens becomes a connection to the
//! agent's ttrpc server on a Unix socket in the agent's run directory, which only this
//! process may use (the accept hook checks `SO_PEERCRED`, see `peer`).
//!
//! `HELLO` from the host (once per VM process: cold boot or restore from a template) mixes
//! host entropy into the guest's RNG, reseeds it and sets the clock, so clones of one template
//! never share RNG output or the template's time.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clearbox_protocol::mux::{self, Frame, Hello, Kind, PORT_NAME};

/// `clearbox.channel=serial` on the kernel command line.
pub fn requested(cmdline: &str) -> bool {
    cmdline
        .split_whitespace()
        .any(|w| w == "clearbox.channel=serial")
}

/// The device node of the agent's port, waiting up to `timeout` for the kernel to add it
/// (ports appear once the host answered the driver's handshake).
pub fn find_port(timeout: Duration) -> Option<PathBuf> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(dir) = std::fs::read_dir("/sys/class/virtio-ports") {
            for e in dir.flatten() {
                let name = std::fs::read_to_string(e.path().join("name")).unwrap_or_default();
                let dev = Path::new("/dev").join(e.file_name());
                if name.trim() == PORT_NAME && dev.exists() {
                    return Some(dev);
                }
            }
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

type Channels = Arc<Mutex<HashMap<u32, Arc<UnixStream>>>>;

struct Demux {
    port: Arc<Mutex<File>>,
    channels: Channels,
    server: PathBuf,
}

/// Opens `port` for good, removes its node and starts the demultiplexer, which connects each
/// channel to the ttrpc server listening on `server`.
pub fn start(port: &Path, server: PathBuf) -> anyhow::Result<()> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(port)
        .with_context(|| format!("open {}", port.display()))?;
    if let Err(e) = std::fs::remove_file(port) {
        crate::error!("removing {}: {e}", port.display());
    }
    let reader = file.try_clone().context("dup the serial port")?;
    let d = Demux {
        port: Arc::new(Mutex::new(file)),
        channels: Arc::default(),
        server,
    };
    std::thread::Builder::new()
        .name("serial-demux".into())
        .spawn(move || d.run(reader))
        .context("starting the serial demultiplexer")?;
    Ok(())
}

impl Demux {
    fn send(port: &Mutex<File>, kind: Kind, channel: u32, payload: &[u8]) {
        let frame = mux::encode(kind, channel, payload);
        if let Err(e) = crate::process::lock(port).write_all(&frame) {
            crate::error!("serial port write: {e}");
        }
    }

    fn close_all(&self) {
        for (_, s) in crate::process::lock(&self.channels).drain() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    fn run(self, reader: File) {
        let mut r = BufReader::with_capacity(mux::MAX_PAYLOAD, reader);
        loop {
            match mux::read_frame(&mut r) {
                Ok(Some(f)) => self.handle(f),
                // The host side is not connected (reads return 0 then): every channel is
                // gone with it. Wait for the next host session.
                Ok(None) => {
                    self.close_all();
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => {
                    crate::error!("serial port: {e}");
                    self.close_all();
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }

    fn handle(&self, f: Frame) {
        match f.kind {
            Kind::Hello => {
                self.close_all();
                match Hello::decode(&f.payload) {
                    Some(h) => new_session(&h),
                    None => crate::error!("serial port: bad HELLO"),
                }
                Self::send(&self.port, Kind::Ready, 0, &[]);
            }
            Kind::Open => {
                crate::debug!("serial channel {}: open", f.channel);
                self.open(f.channel)
            }
            Kind::Data => {
                let s = crate::process::lock(&self.channels)
                    .get(&f.channel)
                    .cloned();
                if let Some(s) = s {
                    if (&*s).write_all(&f.payload).is_err() {
                        self.drop_channel(f.channel);
                    }
                }
            }
            Kind::Close => {
                if let Some(s) = crate::process::lock(&self.channels).remove(&f.channel) {
                    let _ = s.shutdown(Shutdown::Both);
                }
            }
            Kind::Ready => {}
        }
    }

    fn drop_channel(&self, channel: u32) {
        if let Some(s) = crate::process::lock(&self.channels).remove(&channel) {
            let _ = s.shutdown(Shutdown::Both);
            Self::send(&self.port, Kind::Close, channel, &[]);
        }
    }

    fn open(&self, channel: u32) {
        let stream = match UnixStream::connect(&self.server) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                crate::error!("serial channel {channel}: {e}");
                Self::send(&self.port, Kind::Close, channel, &[]);
                return;
            }
        };
        crate::process::lock(&self.channels).insert(channel, Arc::clone(&stream));
        let port = Arc::clone(&self.port);
        let channels = Arc::clone(&self.channels);
        let spawned = std::thread::Builder::new()
            .name(format!("serial-{channel}"))
            .spawn(move || {
                let mut buf = vec![0u8; mux::MAX_PAYLOAD];
                loop {
                    match (&*stream).read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => Self::send(&port, Kind::Data, channel, &buf[..n]),
                    }
                }
                // Still ours (not closed by the host): tell the host.
                let mine = crate::process::lock(&channels)
                    .get(&channel)
                    .is_some_and(|s| Arc::ptr_eq(s, &stream));
                if mine {
                    crate::process::lock(&channels).remove(&channel);
                    Self::send(&port, Kind::Close, channel, &[]);
                }
            });
        if let Err(e) = spawned {
            crate::error!("serial channel {channel}: {e}");
            self.drop_channel(channel);
        }
    }
}

/// A new host session: host entropy into the RNG, reseed, the host's time.
fn new_session(h: &Hello) {
    if let Err(e) = reseed(&h.seed) {
        crate::error!("reseeding the RNG: {e}");
    }
    let ts = nix::sys::time::TimeSpec::new(
        (h.realtime_ns / 1_000_000_000) as libc::time_t,
        (h.realtime_ns % 1_000_000_000) as libc::c_long,
    );
    if let Err(e) = nix::time::clock_settime(nix::time::ClockId::CLOCK_REALTIME, ts) {
        crate::error!("setting the clock: {e}");
    }
    crate::debug!("new host session: RNG reseeded, clock set");
}

/// `RNDADDENTROPY` (`_IOW('R', 0x03, int[2])`) and `RNDRESEEDCRNG` (`_IO('R', 0x07)`).
const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
const RNDRESEEDCRNG: libc::c_ulong = 0x5207;

fn reseed(seed: &[u8; mux::SEED_LEN]) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
    #[repr(C)]
    struct PoolInfo {
        entropy_count: libc::c_int,
        buf_size: libc::c_int,
        buf: [u8; mux::SEED_LEN],
    }
    let info = PoolInfo {
        entropy_count: (mux::SEED_LEN * 8) as libc::c_int,
        buf_size: mux::SEED_LEN as libc::c_int,
        buf: *seed,
    };
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/urandom")?;
    // SAFETY: RNDADDENTROPY reads a rand_pool_info whose buf_size bytes follow the header;
    // `info` is such a struct, alive for the call.
    if unsafe { libc::ioctl(f.as_raw_fd(), RNDADDENTROPY as _, &info) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: RNDRESEEDCRNG takes no argument.
    if unsafe { libc::ioctl(f.as_raw_fd(), RNDRESEEDCRNG as _) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_from_cmdline() {
        assert!(requested("console=ttyS0 clearbox.channel=serial quiet"));
        assert!(!requested("console=ttyS0 clearbox.channel=vsock"));
        assert!(!requested(""));
    }
}
