//! Runs one command through an agent and prints its output, for manual smoke tests.
//!
//! ```text
//! agent_run unix PATH -- CMD ARGS...        # host-mode agent (--no-init --listen-unix PATH)
//! agent_run hybrid-vsock PATH -- CMD ARGS... # VM: vhost-device-vsock --uds-path PATH
//! ```
//! Prints the agent version/milestones, the command's stdout/stderr, and exits with its code.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use clearbox_protocol::{AgentClient, ProcessId, ProcessSpec, AGENT_VSOCK_PORT};

fn connect(kind: &str, path: &str) -> Result<UnixStream, String> {
    let mut s = UnixStream::connect(path).map_err(|e| format!("connect {path}: {e}"))?;
    if kind == "hybrid-vsock" {
        s.write_all(format!("CONNECT {AGENT_VSOCK_PORT}\n").as_bytes())
            .map_err(|e| format!("handshake: {e}"))?;
        // Read the reply byte by byte so no ttrpc bytes are swallowed by a buffer.
        let mut line = Vec::new();
        let mut reader = BufReader::with_capacity(1, &s);
        reader
            .read_until(b'\n', &mut line)
            .map_err(|e| format!("handshake reply: {e}"))?;
        if !line.starts_with(b"OK ") {
            return Err(format!(
                "handshake refused: {:?}",
                String::from_utf8_lossy(&line)
            ));
        }
    }
    Ok(s)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (kind, path, cmd) = match args.as_slice() {
        [kind, path, sep, cmd @ ..] if sep == "--" && !cmd.is_empty() => (kind, path, cmd),
        _ => {
            eprintln!("usage: agent_run unix|hybrid-vsock PATH -- CMD [ARGS...]");
            std::process::exit(2);
        }
    };
    let t0 = Instant::now();
    let run = || -> Result<i32, String> {
        let client = AgentClient::from_unix_stream(connect(kind, path)?)
            .map_err(|e| format!("client: {e}"))?;
        let v = client.version().map_err(|e| format!("version: {e}"))?;
        let m = v.milestones.clone().unwrap_or_default();
        eprintln!(
            "agent {} api {} kernel {} init={} milestones(ms): start {:.1} mounts {:.1} listening {:.1} first-request {:.1}",
            v.agent_version,
            v.api_version,
            v.kernel_release,
            v.is_init,
            m.agent_start_ns as f64 / 1e6,
            m.mounts_done_ns as f64 / 1e6,
            m.listening_ns as f64 / 1e6,
            m.first_request_ns as f64 / 1e6
        );
        let out = client
            .run(
                &ProcessId::guest(format!("agent-run-{}", std::process::id())),
                &ProcessSpec::new(cmd.iter().cloned()),
            )
            .map_err(|e| format!("run: {e}"))?;
        std::io::stdout()
            .write_all(&out.stdout)
            .map_err(|e| e.to_string())?;
        std::io::stderr()
            .write_all(&out.stderr)
            .map_err(|e| e.to_string())?;
        eprintln!("exit {:?} in {:?}", out.status, t0.elapsed());
        Ok(out.status.code)
    };
    match run() {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("agent_run: {e}");
            std::process::exit(1);
        }
    }
}
