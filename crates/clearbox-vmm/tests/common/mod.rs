//! Shared setup of the VM integration tests: asset lookup (failing with the
//! script to run when missing), a test initramfs with busybox added, and VM
//! boot helpers.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use clearbox_protocol::AgentClient;
use clearbox_vmm::{Vm, VmConfig, AGENT_PORT};

pub const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

fn asset(var: &str, default: &str, script: &str) -> PathBuf {
    let p = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| default.into());
    assert!(
        p.is_file(),
        "{} is missing: run {script} (or point {var} at it)",
        p.display()
    );
    p
}

pub fn kernel() -> PathBuf {
    asset(
        "CLEARBOX_KERNEL",
        clearbox_vmm::DEFAULT_KERNEL,
        "scripts/build-guest-kernel.sh",
    )
}

pub fn agent_initramfs() -> PathBuf {
    asset(
        "CLEARBOX_INITRAMFS",
        clearbox_vmm::DEFAULT_INITRAMFS,
        "scripts/build-initramfs.sh \"$(scripts/build-agent.sh)\"",
    )
}

/// Busybox applets the tests exec in the guest.
const APPLETS: &[&str] = &[
    "sh", "cat", "echo", "sleep", "uname", "mount", "ls", "true", "mkdir",
];

/// Guest path of the test container's rootfs (in the test initramfs).
pub const GUEST_ROOTFS: &str = "/rootfs";
/// The test container's id.
pub const CONTAINER: &str = "c";

/// The agent initramfs with a second cpio archive appended (the kernel
/// unpacks concatenated archives in order) holding a busybox rootfs in
/// /rootfs, for the container the tests exec in (the agent runs nothing
/// outside a container). Built once per test run.
pub fn test_initramfs() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let base = agent_initramfs();
        let busybox = Path::new("/bin/busybox");
        assert!(busybox.is_file(), "/bin/busybox is missing: run scripts/install-deps.sh (busybox-static)");
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("vmm-initrd-{}", std::process::id()));
        let stage = dir.join("stage");
        let root = stage.join(GUEST_ROOTFS.trim_start_matches('/'));
        for d in ["bin", "mnt", "proc", "sys", "dev", "tmp"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
        for a in APPLETS {
            let link = root.join("bin").join(a);
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink("busybox", link).unwrap();
        }
        let extra = dir.join("busybox.cpio");
        let st = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "cd '{}' && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 > '{}'",
                stage.display(),
                extra.display()
            ))
            .status()
            .unwrap();
        assert!(st.success(), "cpio failed (install cpio: scripts/install-deps.sh)");
        let out = dir.join("initrd.img");
        let mut bytes = std::fs::read(&base).unwrap();
        // newc archives are 4-byte aligned; pad so the second header is too.
        while bytes.len() % 4 != 0 {
            bytes.push(0);
        }
        bytes.extend(std::fs::read(&extra).unwrap());
        std::fs::write(&out, bytes).unwrap();
        out
    })
    .clone()
}

/// A fresh run_dir path (not created: the driver creates and removes it).
pub fn run_dir(tmp: &tempfile::TempDir) -> PathBuf {
    tmp.path().join("vm")
}

pub fn config(tmp: &tempfile::TempDir) -> VmConfig {
    let mut c = VmConfig::new(kernel(), test_initramfs(), run_dir(tmp));
    c.memory_mib = 256;
    c
}

/// Starts `cfg` and connects a client to the agent.
pub fn boot(cfg: VmConfig) -> (Vm, AgentClient) {
    let vm = Vm::start(cfg).unwrap();
    let fd = match vm.connect_agent(AGENT_PORT, BOOT_TIMEOUT) {
        Ok(fd) => fd,
        Err(e) => panic!(
            "agent did not answer: {e}\nconsole/qemu: {}",
            vm.last_words()
        ),
    };
    (vm, AgentClient::new(fd).unwrap())
}

/// Creates and starts the test container [`CONTAINER`] (rootfs [`GUEST_ROOTFS`], init
/// sleeping, CAP_SYS_ADMIN so that tests can mount virtio-fs tags in it).
pub fn start_container(client: &AgentClient) {
    let caps = serde_json::json!([
        "CAP_SYS_ADMIN",
        "CAP_KILL",
        "CAP_AUDIT_WRITE",
        "CAP_NET_BIND_SERVICE",
        "CAP_DAC_OVERRIDE",
        "CAP_CHOWN",
        "CAP_FOWNER"
    ]);
    let spec = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "args": ["/bin/sleep", "1000000"],
            "env": ["PATH=/bin"],
            "cwd": "/",
            "user": {"uid": 0, "gid": 0},
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps
            }
        },
        "root": {"path": "rootfs", "readonly": false},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}
        ],
        "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"}]}
    });
    client
        .create_container(
            CONTAINER,
            &clearbox_protocol::GuestSpec::from_json_text(spec.to_string()).expect("spec JSON"),
            &clearbox_protocol::RootfsLocation::GuestPath(GUEST_ROOTFS.into()),
            false,
            false,
        )
        .unwrap();
    client.start_container(CONTAINER).unwrap();
}

/// A process exec'd into the test container.
pub fn in_container(exec_id: &str) -> clearbox_protocol::ProcessId {
    clearbox_protocol::ProcessId::container_exec(CONTAINER, exec_id)
}

/// True when `pid` still exists (zombies count as gone: they hold nothing).
pub fn alive(pid: u32) -> bool {
    i32::try_from(pid).is_ok_and(|pid| clearbox_util::proc::is_alive(pid, None))
}

/// Pids of live processes whose command line mentions `needle`.
pub fn processes_mentioning(needle: &Path) -> Vec<(u32, String)> {
    let needle = needle.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(&needle) && alive(pid) {
            found.push((pid, cmd));
        }
    }
    found
}

/// Asserts the VM left nothing behind: no process, no run_dir.
pub fn assert_nothing_left(pids: &[(String, u32)], run_dir: &Path) {
    for (role, pid) in pids {
        assert!(!alive(*pid), "{role} (pid {pid}) still alive");
    }
    let left = processes_mentioning(run_dir);
    assert!(
        left.is_empty(),
        "processes still use {}: {left:?}",
        run_dir.display()
    );
    assert!(
        !run_dir.exists(),
        "{} still exists: {:?}",
        run_dir.display(),
        std::fs::read_dir(run_dir).map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
    );
}

pub fn host_kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap()
        .trim()
        .to_string()
}
