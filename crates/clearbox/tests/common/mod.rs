//! Shared helpers: busybox bundles in temp dirs and a clearbox invocation with a private --root.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub struct Env {
    pub tmp: tempfile::TempDir,
    pub root: PathBuf,
}

impl Env {
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("state");
        Self { tmp, root }
    }

    /// A bundle whose rootfs holds busybox-static and its applets; `args` is the process.
    pub fn bundle(
        &self,
        name: &str,
        args: &[&str],
        tweak: impl FnOnce(&mut serde_json::Value),
    ) -> PathBuf {
        let b = self.tmp.path().join(name);
        let bin = b.join("rootfs/bin");
        std::fs::create_dir_all(&bin).expect("mkdir");
        for d in ["proc", "sys", "dev", "tmp", "etc"] {
            std::fs::create_dir_all(b.join("rootfs").join(d)).expect("mkdir");
        }
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("busybox-static must be installed (scripts/install-deps.sh)");
        std::fs::copy(busybox, bin.join("busybox")).expect("copy busybox");
        for applet in [
            "sh", "echo", "sleep", "true", "cat", "id", "hostname", "ls", "kill", "pwd",
        ] {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("symlink");
        }
        let out = Command::new(bin_path())
            .args(["spec", "--bundle"])
            .arg(&b)
            .output()
            .expect("clearbox spec");
        assert!(
            out.status.success(),
            "spec: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = b.join("config.json");
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
        v["process"]["terminal"] = false.into();
        v["process"]["args"] = args
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .into();
        tweak(&mut v);
        std::fs::write(&path, serde_json::to_vec_pretty(&v).expect("encode")).expect("write");
        b
    }

    pub fn cb(&self) -> Command {
        let mut c = Command::new(bin_path());
        c.arg("--root").arg(&self.root);
        c.env_remove("CLEARBOX_ISOLATION");
        c.env("CLEARBOX_CONFIG", self.tmp.path().join("no-config.toml"));
        c
    }

    /// Runs clearbox with stdout/stderr sent to files, not pipes: a container's init inherits
    /// them (as with runc) and would hold a pipe open for as long as it lives.
    pub fn run(&self, args: &[&str]) -> Output {
        let out = tempfile::tempfile().expect("tempfile");
        let err = tempfile::tempfile().expect("tempfile");
        let status = self
            .cb()
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(err.try_clone().expect("dup"))
            .status()
            .expect("spawn clearbox");
        let read = |mut f: std::fs::File| {
            use std::io::{Read, Seek};
            let mut v = Vec::new();
            f.rewind().expect("rewind");
            f.read_to_end(&mut v).expect("read");
            v
        };
        Output {
            status,
            stdout: read(out),
            stderr: read(err),
        }
    }

    /// Container ids that still have a state directory.
    pub fn leftover_ids(&self) -> Vec<String> {
        match std::fs::read_dir(&self.root) {
            Ok(d) => d
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

pub fn bin_path() -> &'static str {
    env!("CARGO_BIN_EXE_clearbox")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Processes whose root directory is inside `dir` (a container left running).
pub fn processes_rooted_in(dir: &Path) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("proc").flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Ok(root) = std::fs::read_link(format!("/proc/{pid}/root")) {
            if root.starts_with(dir) {
                out.push(pid);
            }
        }
    }
    out
}

/// Mount points below `dir`.
pub fn mounts_below(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let d = dir.to_string_lossy();
    text.lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(4)
                .is_some_and(|m| m.starts_with(d.as_ref()))
        })
        .map(str::to_string)
        .collect()
}

pub fn require_assets() {
    for (path, script) in [
        (
            "/usr/share/clearbox/vmlinux",
            "scripts/build-guest-kernel.sh",
        ),
        (
            "/usr/share/clearbox/initramfs.img",
            "scripts/build-initramfs.sh \"$(scripts/build-agent.sh)\"",
        ),
    ] {
        assert!(
            Path::new(path).is_file(),
            "{path} is missing: build it with {script}"
        );
    }
}

/// A VM test environment with the assets checked. `CLEARBOX_TEST_VM_CONFIG` names a
/// config.toml to use instead of the defaults (e.g. `[vm] initrd = ...` to try a new agent).
pub fn vm_env() -> Env {
    let env = Env::new();
    match std::env::var_os("CLEARBOX_TEST_VM_CONFIG") {
        // `Env::cb` points CLEARBOX_CONFIG at this (otherwise absent) file.
        Some(cfg) => {
            std::fs::copy(&cfg, env.tmp.path().join("no-config.toml")).expect("copy VM config");
        }
        None => require_assets(),
    }
    env
}

/// The attack probe (crates/clearbox-attack-probe), linked statically so that it runs in a
/// busybox rootfs, built once per test run into its own target directory.
pub fn probe() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let ws = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let target_dir = ws.join("target/attack-probe");
        let triple = "x86_64-unknown-linux-gnu";
        let out = Command::new(env!("CARGO"))
            .current_dir(&ws)
            .args([
                "build",
                "-q",
                "-p",
                "clearbox-attack-probe",
                "--target",
                triple,
            ])
            .env("CARGO_TARGET_DIR", &target_dir)
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .output()
            .expect("run cargo");
        assert!(
            out.status.success(),
            "building the attack probe failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        target_dir.join(triple).join("debug/clearbox-attack-probe")
    })
}
