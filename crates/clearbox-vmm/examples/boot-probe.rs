//! Boot benchmark probe (used by bench/vm-boot.sh).
//!
//! `boot-probe agent ROUNDS` — per round: start a VM, connect to the agent,
//! call Version, power off; prints the ns from "start" to "Version answered".
//! `boot-probe floor ROUNDS` — same VM (command, kernel, devices) with the
//! floor initramfs whose init powers off at once; prints ns to QEMU exit.
//! `boot-probe accel` — prints the accelerator VMs get here, and why.
//! `boot-probe pss` — starts one idle VM (with a read-only virtio-fs share,
//! so virtiofsd is counted), prints the summed PSS in KiB of QEMU and its
//! helper daemons (and their children), then shuts it down.
//!
//! Environment: CLEARBOX_KERNEL, CLEARBOX_INITRAMFS, CLEARBOX_FLOOR_INITRAMFS,
//! CLEARBOX_MEM_MIB (default 256; pss uses 128), CLEARBOX_ACCEL,
//! CLEARBOX_CONSOLE_LOG (keep the guest console there), CLEARBOX_CMDLINE_EXTRA,
//! CLEARBOX_TCG_TB_MIB (TCG translation cache size).
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clearbox_protocol::AgentClient;
use clearbox_vmm::{FsShare, Vm, VmConfig, AGENT_PORT};

fn env_path(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| default.into())
}

fn config(initrd: PathBuf, mem: u32) -> VmConfig {
    let run_dir = std::env::temp_dir().join(format!("cb-probe-{}", std::process::id()));
    let mut c = VmConfig::new(
        env_path("CLEARBOX_KERNEL", clearbox_vmm::DEFAULT_KERNEL),
        initrd,
        run_dir,
    );
    c.memory_mib = mem;
    if let Some(log) = std::env::var_os("CLEARBOX_CONSOLE_LOG") {
        c.serial_log = Some(log.into());
    }
    if let Ok(extra) = std::env::var("CLEARBOX_CMDLINE_EXTRA") {
        c.cmdline_extra = extra.split_whitespace().map(str::to_string).collect();
    }
    if let Some(tb) = std::env::var("CLEARBOX_TCG_TB_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        let clearbox_vmm::Hypervisor::Qemu(q) = &mut c.hypervisor;
        q.tcg_tb_size_mib = Some(tb);
    }
    if let Ok(a) = std::env::var("CLEARBOX_ACCEL") {
        c.accel = a.parse().unwrap();
    }
    c
}

fn mem(default: u32) -> u32 {
    std::env::var("CLEARBOX_MEM_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn agent_round() -> anyhow_free::Result<u128> {
    let cfg = config(
        env_path("CLEARBOX_INITRAMFS", clearbox_vmm::DEFAULT_INITRAMFS),
        mem(256),
    );
    let t0 = Instant::now();
    let vm = Vm::start(cfg)?;
    let timeout = std::env::var("CLEARBOX_BOOT_TIMEOUT_S")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let fd = vm.connect_agent(AGENT_PORT, Duration::from_secs(timeout))?;
    let client = AgentClient::new(fd)?;
    let v = client.version()?;
    let ns = t0.elapsed().as_nanos();
    if v.api_version == 0 {
        return Err("agent answered api_version 0".into());
    }
    if let Some(m) = v.milestones.as_ref() {
        // Guest-side view: when the agent listened vs. saw the first request.
        eprintln!(
            "guest ms: agent_start {:.1} listening {:.1} first_request {:.1}",
            m.agent_start_ns as f64 / 1e6,
            m.listening_ns as f64 / 1e6,
            m.first_request_ns as f64 / 1e6
        );
    }
    client.shutdown()?;
    drop(client);
    vm.shutdown(Duration::from_secs(10))?;
    Ok(ns)
}

fn floor_round() -> anyhow_free::Result<u128> {
    let cfg = config(
        env_path(
            "CLEARBOX_FLOOR_INITRAMFS",
            "/usr/share/clearbox/floor-initramfs.img",
        ),
        mem(256),
    );
    let t0 = Instant::now();
    let mut vm = Vm::start(cfg)?;
    let status = vm.wait_timeout(Some(Duration::from_secs(60)))?;
    let ns = t0.elapsed().as_nanos();
    match status {
        Some(_) => Ok(ns),
        None => Err(format!("floor VM did not exit: {}", vm.last_words()).into()),
    }
}

/// PSS (KiB) of `pid` and all its descendants.
fn pss_tree(pids: &[u32]) -> (u64, Vec<(u32, String, u64)>) {
    let mut all: Vec<u32> = pids.to_vec();
    // Descendants (a sandboxed virtiofsd forks its worker).
    let mut changed = true;
    while changed {
        changed = false;
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if all.contains(&pid) {
                continue;
            }
            let Some(stat) = i32::try_from(pid).ok().and_then(clearbox_util::proc::stat) else {
                continue;
            };
            if u32::try_from(stat.ppid).is_ok_and(|ppid| all.contains(&ppid)) {
                all.push(pid);
                changed = true;
            }
        }
    }
    let mut total = 0;
    let mut rows = Vec::new();
    for pid in all {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let rollup =
            std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
        let pss: u64 = rollup
            .lines()
            .find(|l| l.starts_with("Pss:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        total += pss;
        rows.push((pid, comm.trim().to_string(), pss));
    }
    (total, rows)
}

fn pss() -> anyhow_free::Result<()> {
    let share = tempfile::tempdir()?;
    std::fs::write(share.path().join("hello"), "hi")?;
    let mut cfg = config(
        env_path("CLEARBOX_INITRAMFS", clearbox_vmm::DEFAULT_INITRAMFS),
        mem(128),
    );
    cfg.shares.push(FsShare {
        tag: "probe".into(),
        host_dir: share.path().to_path_buf(),
        read_only: true,
    });
    let vm = Vm::start(cfg)?;
    let client = AgentClient::new(vm.connect_agent(AGENT_PORT, Duration::from_secs(60))?)?;
    client.version()?;
    // Let the guest settle into idle.
    std::thread::sleep(Duration::from_secs(2));
    let pids: Vec<u32> = vm.processes().iter().map(|(_, p)| *p).collect();
    let (total, rows) = pss_tree(&pids);
    for (pid, comm, kib) in rows {
        println!("proc {pid} {comm} {kib}");
    }
    println!("pss_kib {total}");
    client.shutdown()?;
    drop(client);
    vm.shutdown(Duration::from_secs(10))?;
    Ok(())
}

/// Tiny boxed-error alias: examples may not pull anyhow into the library's deps.
mod anyhow_free {
    pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;
}

fn main() -> anyhow_free::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rounds: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1);
    match args.first().map(String::as_str) {
        Some("agent") => {
            for _ in 0..rounds {
                println!("{}", agent_round()?);
            }
        }
        Some("floor") => {
            for _ in 0..rounds {
                println!("{}", floor_round()?);
            }
        }
        Some("pss") => pss()?,
        Some("accel") => {
            let mode = std::env::var("CLEARBOX_ACCEL")
                .unwrap_or_else(|_| "auto".into())
                .parse()?;
            let (accel, why) = clearbox_vmm::KvmFacts::gather().select(mode)?;
            println!("accelerator: {accel} ({why})");
        }
        _ => return Err("usage: boot-probe agent|floor ROUNDS | boot-probe pss".into()),
    }
    Ok(())
}
