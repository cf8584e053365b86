//! A minimal QMP client (QEMU's JSON monitor on a Unix socket): what saving and restoring a
//! VM template needs (`migrate-set-capabilities`, `migrate`, `migrate-incoming`, status
//! polls). Events are skipped.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::BorrowedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::error::{Error, Result};

pub(crate) struct Qmp {
    r: BufReader<UnixStream>,
    w: UnixStream,
}

fn io(what: &'static str) -> impl Fn(std::io::Error) -> Error {
    move |e| Error::Io(what, e)
}

impl Qmp {
    /// Connects (QEMU creates the socket a moment after it starts), reads the greeting and
    /// leaves capabilities negotiation. Fails at once when `dead` (QEMU's pidfd) fires.
    pub(crate) fn connect(path: &Path, timeout: Duration, dead: BorrowedFd<'_>) -> Result<Qmp> {
        let deadline = Instant::now() + timeout;
        let s = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => {
                    return Err(Error::Timeout(timeout, format!("QMP socket ({e})")))
                }
                Err(_) => {
                    if crate::proc::wait_readable(dead, Some(Duration::from_millis(1)))
                        .map_err(io("poll QEMU"))?
                    {
                        return Err(Error::VmExited {
                            status: "exited before its monitor was up".into(),
                            console_tail: String::new(),
                        });
                    }
                }
            }
        };
        s.set_read_timeout(Some(timeout))
            .map_err(io("QMP timeout"))?;
        let w = s.try_clone().map_err(io("dup QMP socket"))?;
        let mut q = Qmp {
            r: BufReader::new(s),
            w,
        };
        let greeting = q.read()?;
        if greeting.get("QMP").is_none() {
            return Err(Error::Qmp(format!("unexpected greeting {greeting}")));
        }
        q.execute("qmp_capabilities", json!({}))?;
        Ok(q)
    }

    fn read(&mut self) -> Result<Value> {
        let mut line = String::new();
        let n = self.r.read_line(&mut line).map_err(io("read QMP"))?;
        if n == 0 {
            return Err(Error::Qmp("QEMU closed its monitor".into()));
        }
        serde_json::from_str(&line).map_err(|e| Error::Qmp(format!("bad reply {line:?}: {e}")))
    }

    /// Runs a command and returns its `return` value.
    pub(crate) fn execute(&mut self, command: &str, arguments: Value) -> Result<Value> {
        let mut req = json!({ "execute": command });
        if arguments.as_object().is_some_and(|o| !o.is_empty()) {
            req["arguments"] = arguments;
        }
        let mut text = req.to_string();
        text.push('\n');
        self.w.write_all(text.as_bytes()).map_err(io("write QMP"))?;
        loop {
            let v = self.read()?;
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                return Err(Error::Qmp(format!(
                    "{command}: {}",
                    e.get("desc").and_then(Value::as_str).unwrap_or("error")
                )));
            }
            // An event: skip.
        }
    }

    /// x-ignore-shared: RAM in a shared, named memory file is not copied into the state.
    pub(crate) fn ignore_shared(&mut self) -> Result<()> {
        self.execute(
            "migrate-set-capabilities",
            json!({ "capabilities": [ { "capability": "x-ignore-shared", "state": true } ] }),
        )
        .map(drop)
    }

    /// Polls `query-migrate` until it completes (or fails); on a destination too.
    pub(crate) fn wait_migration(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.execute("query-migrate", json!({}))?;
            match v.get("status").and_then(Value::as_str) {
                Some("completed") => return Ok(()),
                Some(s @ ("failed" | "cancelled")) => {
                    let why = v.get("error-desc").and_then(Value::as_str).unwrap_or("");
                    return Err(Error::Qmp(format!("migration {s}: {why}")));
                }
                _ => {}
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout(timeout, "the migration".into()));
            }
            std::thread::sleep(Duration::from_micros(500));
        }
    }

    /// Polls `query-status` until the guest runs.
    pub(crate) fn wait_running(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.execute("query-status", json!({}))?;
            if v.get("running").and_then(Value::as_bool) == Some(true) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout(timeout, "the restored guest to run".into()));
            }
            std::thread::sleep(Duration::from_micros(500));
        }
    }
}
