//! OCI hooks of a VM container, all run on the host, in runc's order and with the full state
//! (annotations included) on stdin:
//!
//! * `prestart` (status `created`) then `createRuntime` (status `creating`): after the shim
//!   entered the container's network namespace and before it looks at it and boots the VM,
//!   with the shim's pid (so `/proc/<pid>/ns/net` is the container's namespace: Docker's
//!   `libnetwork-setkey` moves the veth in from here).
//! * `poststart` (`running`) after start, `poststop` (`stopped`) at delete: failures are
//!   warnings, as in runc.
//! * `createContainer` and `startContainer` would have to run inside the container, that is in
//!   the guest, which has no copy of the host's hook binaries: such a spec is refused with a
//!   clear error instead of skipping them silently.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use oci_spec::runtime::{Hook, Spec};

use crate::Error;

#[derive(Debug, Clone, Copy)]
pub(crate) enum Phase {
    Prestart,
    CreateRuntime,
    Poststart,
    Poststop,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Prestart => "prestart",
            Phase::CreateRuntime => "createRuntime",
            Phase::Poststart => "poststart",
            Phase::Poststop => "poststop",
        }
    }

    fn status(self) -> &'static str {
        match self {
            Phase::Prestart => "created",
            Phase::CreateRuntime => "creating",
            Phase::Poststart => "running",
            Phase::Poststop => "stopped",
        }
    }
}

/// Refuses hooks that would have to run inside the guest.
pub(crate) fn check_supported(spec: &Spec) -> Result<(), Error> {
    let Some(h) = spec.hooks() else {
        return Ok(());
    };
    for (name, list) in [
        ("createContainer", h.create_container()),
        ("startContainer", h.start_container()),
    ] {
        if list.as_ref().is_some_and(|l| !l.is_empty()) {
            return Err(Error::Msg(format!(
                "{name} hooks are not supported with isolation vm (they would run inside the \
                 VM, which has no copy of the host's hook binaries)"
            )));
        }
    }
    Ok(())
}

fn hooks_of(spec: &Spec, phase: Phase) -> Vec<Hook> {
    let Some(h) = spec.hooks() else {
        return Vec::new();
    };
    #[allow(deprecated)] // prestart is deprecated but still what Docker 20.10 uses
    let list = match phase {
        Phase::Prestart => h.prestart(),
        Phase::CreateRuntime => h.create_runtime(),
        Phase::Poststart => h.poststart(),
        Phase::Poststop => h.poststop(),
    };
    list.clone().unwrap_or_default()
}

/// The OCI state a hook reads on stdin.
fn state_json(spec: &Spec, phase: Phase, id: &str, pid: i32, bundle: &Path) -> Vec<u8> {
    let mut state = serde_json::json!({
        "ociVersion": spec.version(),
        "id": id,
        "status": phase.status(),
        "pid": pid,
        "bundle": bundle,
    });
    if let Some(a) = spec.annotations() {
        state["annotations"] = serde_json::json!(a);
    }
    serde_json::to_vec(&state).unwrap_or_default()
}

/// Runs the hooks of `phase` in order; the first failure stops them.
pub(crate) fn run(
    spec: &Spec,
    phase: Phase,
    id: &str,
    pid: i32,
    bundle: &Path,
) -> Result<(), Error> {
    let list = hooks_of(spec, phase);
    if list.is_empty() {
        return Ok(());
    }
    let state = state_json(spec, phase, id, pid, bundle);
    for h in &list {
        run_one(h, &state).map_err(|e| Error::Msg(format!("{} hook {e}", phase.name())))?;
    }
    Ok(())
}

fn run_one(hook: &Hook, state: &[u8]) -> Result<(), String> {
    let path = hook.path();
    let mut cmd = Command::new(path);
    if let Some((arg0, rest)) = hook.args().as_deref().and_then(|a| a.split_first()) {
        cmd.arg0(arg0).args(rest);
    }
    cmd.env_clear();
    for kv in hook.env().as_deref().unwrap_or_default() {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let what = path.display().to_string();
    let mut child = cmd.spawn().map_err(|e| format!("{what}: {e}"))?;
    let pid = child.id() as i32;
    let stdin = child.stdin.take();
    let state = state.to_vec();
    // A hook need not read its stdin (nor read all of it): a closed pipe must not SIGPIPE
    // `create`. Written while the hook runs, so a large state cannot block us.
    let writer = std::thread::spawn(move || {
        if let Some(s) = stdin {
            crate::spawn::write_without_sigpipe(s, state);
        }
    });
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let out = child.wait_with_output();
        let _ = tx.send(());
        out
    });
    let timeout = hook
        .timeout()
        .filter(|t| *t > 0)
        .map(|t| Duration::from_secs(t.unsigned_abs()));
    // Waited for in slices: a termination signal caught meanwhile (a create being undone,
    // see `clearbox_util::interrupt`) ends the hook too, whatever its timeout.
    let deadline = timeout.map(|t| std::time::Instant::now() + t);
    let (timed_out, interrupted) = loop {
        let slice = Duration::from_millis(50);
        let slice = match deadline {
            Some(d) => slice.min(d.saturating_duration_since(std::time::Instant::now())),
            None => slice,
        };
        match rx.recv_timeout(slice) {
            Ok(()) => break (false, false),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break (true, false),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        if clearbox_util::interrupt::caught().is_some() {
            break (true, true);
        }
        if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
            break (true, false);
        }
    };
    if timed_out {
        // Not reaped yet (the waiter still holds it), so the pid is still the hook's.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let out = waiter
        .join()
        .map_err(|_| format!("{what}: waiter panicked"))?
        .map_err(|e| format!("{what}: {e}"))?;
    let _ = writer.join();
    if interrupted {
        return Err(format!("{what} killed: create interrupted"));
    }
    if timed_out {
        return Err(format!(
            "{what} timed out after {}s",
            timeout.map(|t| t.as_secs()).unwrap_or_default()
        ));
    }
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let err: Vec<&str> = err
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        return Err(match err.is_empty() {
            true => format!("{what} failed ({})", out.status),
            false => format!("{what} failed ({}): {}", out.status, err.join("; ")),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(hooks: serde_json::Value) -> Spec {
        serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "process": {"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
            "annotations": {"org.example/a": "b"},
            "hooks": hooks
        }))
        .unwrap()
    }

    #[test]
    fn state_on_stdin_in_order_and_failures() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let rec = |tag: &str| {
            serde_json::json!({"path": "/bin/sh", "args": ["sh", "-c",
                format!("cat >> {}; echo ' {tag}' >> {}", log.display(), log.display())]})
        };
        let s = spec(serde_json::json!({
            "prestart": [rec("pre")],
            "createRuntime": [rec("cr")],
        }));
        run(&s, Phase::Prestart, "c1", 42, Path::new("/b")).unwrap();
        run(&s, Phase::CreateRuntime, "c1", 42, Path::new("/b")).unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].ends_with(" pre") && lines[1].ends_with(" cr"));
        let st: serde_json::Value =
            serde_json::from_str(lines[0].trim_end_matches(" pre")).unwrap();
        assert_eq!(st["status"], "created");
        assert_eq!(st["pid"], 42);
        assert_eq!(st["annotations"]["org.example/a"], "b");
        let st: serde_json::Value = serde_json::from_str(lines[1].trim_end_matches(" cr")).unwrap();
        assert_eq!(st["status"], "creating");

        // A hook that ignores stdin and fails: one line naming it.
        let s = spec(serde_json::json!({"prestart": [
            {"path": "/bin/sh", "args": ["sh", "-c", "echo boom >&2; exit 3"]}]}));
        let e = run(&s, Phase::Prestart, "c1", 1, Path::new("/b"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("prestart hook /bin/sh failed") && e.contains("boom"),
            "{e}"
        );
        // Timeout.
        let s = spec(serde_json::json!({"createRuntime": [
            {"path": "/bin/sleep", "args": ["sleep", "5"], "timeout": 1}]}));
        let e = run(&s, Phase::CreateRuntime, "c1", 1, Path::new("/b"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("timed out"), "{e}");
    }

    #[test]
    fn guest_side_hooks_are_refused() {
        let s = spec(serde_json::json!({"createContainer": [{"path": "/bin/true"}]}));
        let e = check_supported(&s).unwrap_err().to_string();
        assert!(e.contains("createContainer hooks are not supported"), "{e}");
        let s = spec(serde_json::json!({"prestart": [{"path": "/bin/true"}]}));
        check_supported(&s).unwrap();
    }
}
