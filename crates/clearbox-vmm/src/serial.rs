//! Host side of the virtio-serial agent channel: the `clearbox-vmux` daemon (one per VM).
//!
//! QEMU's virtio-serial port for the agent is a Unix-socket chardev that connects to this
//! daemon. Host processes connect to the daemon's other socket and speak the hybrid-vsock
//! handshake (`CONNECT <port>\n` → `OK <n>\n`), so every agent client
//! ([`crate::AgentTransport::HybridVsock`]) works unchanged; each connection becomes one
//! channel of `clearbox_protocol::mux` on the port. Unlike vhost-user vsock, the port migrates
//! with the VM: it is what makes VM templates possible.
//!
//! On QEMU's connection the daemon sends `HELLO` (32 bytes of host entropy and the host's
//! time; the agent reseeds its RNG and sets its clock) and accepts clients once the agent
//! answers `READY`; before that a client's connection is closed at once, as a guest that
//! does not listen yet refuses a vsock connection. When QEMU goes away, the daemon exits.
//!
//! Runs jailed like vhost-device-vsock (the VM's uid, no capabilities, its own root holding
//! its socket directory, an allow-list seccomp filter: [`crate::seccomp::VMUX_SYSCALLS`]).

use std::collections::HashMap;
use std::io::{self, BufReader, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use clearbox_protocol::mux::{self, Hello, Kind};

/// The only guest port served: the agent's.
const AGENT_PORT: u32 = crate::config::AGENT_PORT;

struct Shared {
    qemu: Mutex<UnixStream>,
    ready: AtomicBool,
    next: AtomicU32,
    channels: Mutex<HashMap<u32, Arc<UnixStream>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn send(&self, kind: Kind, channel: u32, payload: &[u8]) -> io::Result<()> {
        lock(&self.qemu).write_all(&mux::encode(kind, channel, payload))
    }

    /// Forgets `channel`; tells the guest when `tell` and it was still open.
    fn close(&self, channel: u32, tell: bool) {
        if let Some(s) = lock(&self.channels).remove(&channel) {
            let _ = s.shutdown(Shutdown::Both);
            if tell {
                let _ = self.send(Kind::Close, channel, &[]);
            }
        }
    }
}

/// Serves until QEMU disconnects, then returns. Binds `listen` (clients) first, then `serial` (QEMU's
/// chardev connects there): once `serial` exists, both are ready.
pub fn serve(listen: &Path, serial: &Path) -> io::Result<()> {
    let clients = listening_at(listen)?;
    let qemu_listener = listening_at(serial)?;
    let (qemu, _) = qemu_listener.accept()?;
    drop(qemu_listener);
    let _ = std::fs::remove_file(serial);
    let reader = qemu.try_clone()?;
    let shared = Arc::new(Shared {
        qemu: Mutex::new(qemu),
        ready: AtomicBool::new(false),
        next: AtomicU32::new(1),
        channels: Mutex::new(HashMap::new()),
    });
    shared.send(Kind::Hello, 0, &hello()?.encode())?;
    let s = Arc::clone(&shared);
    std::thread::Builder::new()
        .name("clients".into())
        .spawn(move || {
            for client in clients.incoming() {
                let Ok(client) = client else { continue };
                let s = Arc::clone(&s);
                let _ = std::thread::Builder::new()
                    .name("client".into())
                    .spawn(move || serve_client(&s, client));
            }
        })?;
    from_guest(&shared, reader);
    // QEMU is gone: so is the VM. The caller returns (the daemon exits with its threads);
    // never `process::exit` here, which also ended a test binary's other tests, unreported.
    Ok(())
}

/// A listener whose path appears only once it listens: bound under a temporary name and renamed
/// into place. A socket file exists from `bind(2)` on, but refuses connections until
/// `listen(2)`; whoever waits for the path (the VM driver, then QEMU's chardev) must not see it
/// in between.
fn listening_at(path: &Path) -> io::Result<UnixListener> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let l = UnixListener::bind(&tmp)?;
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(l)
}

fn hello() -> io::Result<Hello> {
    let mut seed = [0u8; mux::SEED_LEN];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut seed)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| io::Error::other(e.to_string()))?;
    Ok(Hello {
        seed,
        realtime_ns: u64::try_from(now.as_nanos()).unwrap_or(u64::MAX),
    })
}

fn from_guest(s: &Shared, reader: UnixStream) {
    let mut r = BufReader::with_capacity(mux::MAX_PAYLOAD, reader);
    loop {
        let f = match mux::read_frame(&mut r) {
            Ok(Some(f)) => f,
            Ok(None) => return,
            Err(e) => {
                eprintln!("clearbox-vmux: from the guest: {e}");
                return;
            }
        };
        match f.kind {
            Kind::Ready => s.ready.store(true, Ordering::SeqCst),
            Kind::Data => {
                let c = lock(&s.channels).get(&f.channel).cloned();
                if let Some(c) = c {
                    if (&*c).write_all(&f.payload).is_err() {
                        s.close(f.channel, true);
                    }
                }
            }
            Kind::Close => s.close(f.channel, false),
            Kind::Hello | Kind::Open => {}
        }
    }
}

/// Reads `CONNECT <port>\n` byte by byte (what follows belongs to the channel).
fn read_connect(c: &mut UnixStream) -> Option<u32> {
    let mut line = Vec::with_capacity(16);
    let mut b = [0u8; 1];
    while line.len() < 32 {
        match c.read(&mut b) {
            Ok(1) if b[0] == b'\n' => {
                let text = std::str::from_utf8(&line).ok()?;
                return text.strip_prefix("CONNECT ")?.trim().parse().ok();
            }
            Ok(1) => line.push(b[0]),
            _ => return None,
        }
    }
    None
}

fn serve_client(s: &Shared, mut c: UnixStream) {
    let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
    let port = read_connect(&mut c);
    if port != Some(AGENT_PORT) || !s.ready.load(Ordering::SeqCst) {
        // Nobody listens there (yet): refused, as vsock refuses.
        return;
    }
    let _ = c.set_read_timeout(None);
    // A client that stops reading must not stall the other channels for long.
    let _ = c.set_write_timeout(Some(Duration::from_secs(10)));
    let id = s.next.fetch_add(1, Ordering::SeqCst);
    let c = Arc::new(c);
    lock(&s.channels).insert(id, Arc::clone(&c));
    if s.send(Kind::Open, id, &[]).is_err()
        || (&*c).write_all(format!("OK {id}\n").as_bytes()).is_err()
    {
        s.close(id, true);
        return;
    }
    let mut buf = vec![0u8; mux::MAX_PAYLOAD];
    loop {
        match (&*c).read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if s.send(Kind::Data, id, &buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    // Still ours (the guest did not close it first).
    let mine = lock(&s.channels)
        .get(&id)
        .is_some_and(|x| Arc::ptr_eq(x, &c));
    if mine {
        s.close(id, true);
    }
}

/// `clearbox-vmux --listen PATH --serial PATH`: the daemon's command line.
pub fn main_with_args(args: impl Iterator<Item = std::ffi::OsString>) -> i32 {
    let mut listen = None;
    let mut serial = None;
    let mut it = args;
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("--listen") => listen = it.next(),
            Some("--serial") => serial = it.next(),
            _ => {
                eprintln!("clearbox-vmux: unknown argument {a:?}");
                return 2;
            }
        }
    }
    let (Some(listen), Some(serial)) = (listen, serial) else {
        eprintln!("usage: clearbox-vmux --listen PATH --serial PATH");
        return 2;
    };
    match serve(Path::new(&listen), Path::new(&serial)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("clearbox-vmux: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clearbox_protocol::mux::{read_frame, Frame};

    /// A fake guest on QEMU's side of the daemon: answers HELLO with READY, echoes DATA.
    #[test]
    fn channels_are_multiplexed_and_refused_before_ready() {
        let dir = tempfile::tempdir().unwrap();
        let listen = dir.path().join("vmux.sock");
        let serial = dir.path().join("serial.sock");
        let (l, sr) = (listen.clone(), serial.clone());
        std::thread::spawn(move || serve(&l, &sr));
        while !serial.exists() {
            std::thread::sleep(Duration::from_millis(1));
        }
        let guest = UnixStream::connect(&serial).unwrap();
        let mut gr = BufReader::new(guest.try_clone().unwrap());
        let hello = read_frame(&mut gr).unwrap().unwrap();
        assert_eq!(hello.kind, Kind::Hello);
        let h = Hello::decode(&hello.payload).unwrap();
        assert_ne!(h.seed, [0; mux::SEED_LEN]);
        // Not ready yet: refused.
        let mut c = UnixStream::connect(&listen).unwrap();
        c.write_all(b"CONNECT 1024\n").unwrap();
        let mut b = Vec::new();
        assert_eq!(c.read_to_end(&mut b).unwrap(), 0);
        (&guest)
            .write_all(&mux::encode(Kind::Ready, 0, &[]))
            .unwrap();
        std::thread::sleep(Duration::from_millis(50));
        // Wrong port: refused.
        let mut c = UnixStream::connect(&listen).unwrap();
        c.write_all(b"CONNECT 22\n").unwrap();
        assert_eq!(c.read_to_end(&mut b).unwrap(), 0);
        // Two channels.
        let mut one = UnixStream::connect(&listen).unwrap();
        one.write_all(b"CONNECT 1024\nping").unwrap();
        let open = read_frame(&mut gr).unwrap().unwrap();
        assert_eq!(open.kind, Kind::Open);
        let data = read_frame(&mut gr).unwrap().unwrap();
        assert_eq!(data, Frame::new(Kind::Data, open.channel, b"ping".to_vec()));
        let mut ok = [0u8; 5];
        one.read_exact(&mut ok).unwrap();
        assert_eq!(&ok, b"OK 1\n");
        let mut two = UnixStream::connect(&listen).unwrap();
        two.write_all(b"CONNECT 1024\n").unwrap();
        let open2 = read_frame(&mut gr).unwrap().unwrap();
        assert_ne!(open2.channel, open.channel);
        (&guest)
            .write_all(&mux::encode(Kind::Data, open.channel, b"pong"))
            .unwrap();
        let mut got = [0u8; 4];
        one.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"pong");
        // The guest closes channel one; the client sees EOF.
        (&guest)
            .write_all(&mux::encode(Kind::Close, open.channel, &[]))
            .unwrap();
        let mut rest = Vec::new();
        assert_eq!(one.read_to_end(&mut rest).unwrap(), 0);
        // The client closes channel two; the guest gets CLOSE.
        drop(two);
        let mut ok2 = Vec::new();
        let close = loop {
            let f = read_frame(&mut gr).unwrap().unwrap();
            if f.kind == Kind::Close {
                break f;
            }
            ok2.push(f);
        };
        assert_eq!(close.channel, open2.channel);
    }
}
