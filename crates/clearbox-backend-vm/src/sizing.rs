//! VM size and machine settings from the spec and `[vm]` of the configuration file.
//!
//! * vCPUs: `ceil(cpu.quota / cpu.period)` (at least 1) when the spec sets a quota, else
//!   `[vm] vcpus` if set, else the host's CPU count capped at `[vm] max_vcpus`
//!   (default [`DEFAULT_MAX_VCPUS`]) with hardware virtualisation; under TCG emulation every
//!   vCPU is an emulating thread on the host's cores and SMP bring-up slows the boot, so the
//!   default there is 1 (`max_vcpus`/`vcpus` still raise it). CPU shares say nothing about a
//!   count and are ignored.
//! * Memory: the spec's memory limit plus [`OVERHEAD_MIB`] for the guest kernel and agent,
//!   else `[vm] memory_mib` if set, else half the host's memory capped at
//!   `[vm] max_memory_mib` (default [`DEFAULT_MAX_MEMORY_MIB`]), never below
//!   [`DEFAULT_MEMORY_MIB`]. A container without limits must not be OOM-killed where runc would
//!   run it; guest RAM is only backed by host memory once the guest touches it.

use std::path::PathBuf;

use clearbox_core::config::VmDefaults;
use clearbox_vmm::{AccelMode, VmConfig};
use oci_spec::runtime::Spec;

use crate::Error;

/// Guest kernel + agent + page cache headroom on top of the container's own limit.
pub const OVERHEAD_MIB: u64 = 64;
/// The smallest VM clearbox sizes for a container without a memory limit.
pub const DEFAULT_MEMORY_MIB: u32 = 128;
/// Cap of the host-based default vCPU count.
pub const DEFAULT_MAX_VCPUS: u32 = 2;
/// Cap of the host-based default memory.
pub const DEFAULT_MAX_MEMORY_MIB: u32 = 2048;

/// Online CPUs of the host.
fn host_cpus() -> u32 {
    std::thread::available_parallelism()
        .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
        .unwrap_or(1)
}

/// The host's memory in MiB (`MemTotal`).
fn host_memory_mib() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib / 1024)
}

fn default_vcpus(defaults: &VmDefaults, host: u32, emulated: bool) -> u32 {
    let cap = match (defaults.max_vcpus, emulated) {
        (Some(c), _) => c,
        (None, true) => 1,
        (None, false) => DEFAULT_MAX_VCPUS,
    };
    defaults.vcpus.unwrap_or_else(|| host.min(cap)).max(1)
}

/// Whether the VM will run under TCG emulation (decided as the driver decides it).
fn emulated(defaults: &VmDefaults) -> bool {
    let mode = defaults
        .accel
        .as_deref()
        .and_then(|a| a.parse::<AccelMode>().ok())
        .unwrap_or(AccelMode::Auto);
    !matches!(
        clearbox_vmm::KvmFacts::host().select(mode),
        Ok((clearbox_vmm::Accel::Kvm, _))
    )
}

fn default_memory_mib(defaults: &VmDefaults, host_mib: Option<u64>) -> u32 {
    if let Some(m) = defaults.memory_mib {
        return m;
    }
    let cap = defaults.max_memory_mib.unwrap_or(DEFAULT_MAX_MEMORY_MIB);
    let half = host_mib.map_or(u64::from(DEFAULT_MEMORY_MIB), |m| m / 2);
    u32::try_from(half.min(u64::from(cap)))
        .unwrap_or(cap)
        .max(DEFAULT_MEMORY_MIB)
}
/// Longest a VM may take to boot to a listening agent (TCG on a busy host is slow).
pub const BOOT_TIMEOUT_SECS: u64 = 60;

pub(crate) fn vcpus(spec: &Spec, defaults: &VmDefaults) -> u32 {
    let cpu = spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.cpu().as_ref());
    let from_quota = cpu.and_then(|c| match (c.quota(), c.period()) {
        (Some(q), Some(p)) if q > 0 && p > 0 => {
            let n = (q as u64).div_ceil(p);
            Some(u32::try_from(n).unwrap_or(u32::MAX).clamp(1, 255))
        }
        _ => None,
    });
    from_quota.unwrap_or_else(|| default_vcpus(defaults, host_cpus(), emulated(defaults)))
}

pub(crate) fn memory_mib(spec: &Spec, defaults: &VmDefaults) -> u32 {
    let limit = spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.memory().as_ref())
        .and_then(|m| m.limit())
        .filter(|l| *l > 0);
    match limit {
        Some(bytes) => {
            let mib = (bytes as u64).div_ceil(1024 * 1024) + OVERHEAD_MIB;
            u32::try_from(mib).unwrap_or(u32::MAX)
        }
        None => default_memory_mib(defaults, host_memory_mib()),
    }
}

/// Environment overrides of `[vm] template` / `template_dir` (they reach the runtime under
/// every engine; the e2e suites' `TEMPLATES=off` uses the first).
pub const TEMPLATE_ENV: &str = "CLEARBOX_TEMPLATE";
pub const TEMPLATE_DIR_ENV: &str = "CLEARBOX_TEMPLATE_DIR";

/// VM templates: on by default where the host supports them (QEMU 10+, the Rust virtiofsd,
/// clearbox-vmux), with a cold boot elsewhere; `[vm] template = true` or
/// `CLEARBOX_TEMPLATE=on` requires them (a host that cannot use them is an error, never a
/// silent cold boot); `[vm] template = false` or `CLEARBOX_TEMPLATE=off` turns them off;
/// `CLEARBOX_TEMPLATE=auto` is the default behaviour whatever the configuration says. Root
/// only (the template cache is root's).
pub fn template_options(
    defaults: &VmDefaults,
    root: bool,
) -> Result<Option<clearbox_vmm::TemplateOptions>, Error> {
    let env = std::env::var(TEMPLATE_ENV).ok();
    let env_is = |words: &[&str]| env.as_deref().is_some_and(|v| words.contains(&v));
    let required = if env_is(&["off", "0", "false", "no"]) {
        return Ok(None);
    } else if env_is(&["on", "1", "true", "yes"]) {
        true
    } else if env_is(&["auto"]) {
        false
    } else {
        match defaults.template {
            Some(false) => return Ok(None),
            Some(true) => true,
            None => false,
        }
    };
    if !root && required {
        return Err(Error::Msg(
            "VM templates were asked for ([vm] template = true or CLEARBOX_TEMPLATE=on) but need root (the template cache is root's)".into(),
        ));
    }
    if !root {
        return Ok(None);
    }
    Ok(Some(clearbox_vmm::TemplateOptions {
        required,
        ..template_cache(defaults)?
    }))
}

/// Where the template cache is and how many templates it keeps (`[vm] template_dir`,
/// `CLEARBOX_TEMPLATE_DIR`, `[vm] template_max`), whether templates are on or not: `clearbox
/// template list|prune` work on a cache left from when they were on.
pub fn template_cache(defaults: &VmDefaults) -> Result<clearbox_vmm::TemplateOptions, Error> {
    let mut t = clearbox_vmm::TemplateOptions::default();
    if let Some(d) = &defaults.template_dir {
        t.dir = d.clone();
    }
    if let Some(n) = defaults.template_max {
        if n == 0 {
            return Err(Error::Msg(
                "[vm] template_max must be at least 1 (template = false turns templates off)"
                    .into(),
            ));
        }
        t.max = n;
    }
    if let Some(d) = std::env::var_os(TEMPLATE_DIR_ENV).filter(|d| !d.is_empty()) {
        t.dir = PathBuf::from(d);
    }
    Ok(t)
}

/// The VM of one container; `run_dir` is its VMM run directory.
pub(crate) fn vm_config(
    spec: &Spec,
    defaults: &VmDefaults,
    run_dir: PathBuf,
) -> Result<VmConfig, Error> {
    let kernel = defaults
        .kernel
        .clone()
        .unwrap_or_else(|| PathBuf::from(clearbox_vmm::DEFAULT_KERNEL));
    let initrd = defaults
        .initrd
        .clone()
        .unwrap_or_else(|| PathBuf::from(clearbox_vmm::DEFAULT_INITRAMFS));
    for (what, path, script) in [
        ("guest kernel", &kernel, "scripts/build-guest-kernel.sh"),
        (
            "initramfs",
            &initrd,
            "scripts/build-initramfs.sh \"$(scripts/build-agent.sh)\"",
        ),
    ] {
        if !path.is_file() {
            return Err(Error::Msg(format!(
                "{what} {} not found (build it with {script})",
                path.display()
            )));
        }
    }
    let mode: AccelMode = match defaults.accel.as_deref() {
        Some(a) => a.parse()?,
        None => AccelMode::Auto,
    };
    // The driver decides the accelerator at start (and tunes the kernel command line for it).
    let mut c = VmConfig::new(kernel, initrd, run_dir);
    c.vcpus = vcpus(spec, defaults);
    c.memory_mib = memory_mib(spec, defaults);
    c.accel = mode;
    // The shim outlives nothing it starts: QEMU and the daemons die with it.
    c.die_with_parent = true;
    let mut jail = clearbox_vmm::JailOptions::default();
    if let Some(b) = defaults.jail_uid_base {
        jail.uid_base = b;
    }
    if let Some(n) = defaults.jail_uid_count {
        jail.uid_count = n;
    }
    // Only root can hand processes another uid; a rootless clearbox runs them as the caller.
    let root = nix::unistd::geteuid().is_root();
    c.jail = root.then_some(jail);
    c.template = template_options(defaults, root)?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(resources: serde_json::Value) -> Spec {
        serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "linux": {"resources": resources}
        }))
        .unwrap()
    }

    #[test]
    fn templates_default_auto_required_needs_root() {
        assert!(
            std::env::var_os(TEMPLATE_ENV).is_none(),
            "run without CLEARBOX_TEMPLATE set"
        );
        let d = |t: Option<bool>| VmDefaults {
            template: t,
            ..Default::default()
        };
        let auto = template_options(&d(None), true).unwrap().unwrap();
        assert!(!auto.required);
        assert!(
            template_options(&d(Some(true)), true)
                .unwrap()
                .unwrap()
                .required
        );
        assert!(template_options(&d(Some(false)), true).unwrap().is_none());
        // Rootless: cold boots where templates are optional, a clear error where required.
        assert!(template_options(&d(None), false).unwrap().is_none());
        let e = template_options(&d(Some(true)), false).unwrap_err();
        assert!(e.to_string().contains("need root"), "{e}");
    }

    #[test]
    fn defaults_come_from_the_host_capped() {
        let d = VmDefaults::default();
        assert_eq!(default_vcpus(&d, 1, false), 1);
        assert_eq!(default_vcpus(&d, 2, false), 2);
        assert_eq!(default_vcpus(&d, 64, false), DEFAULT_MAX_VCPUS);
        assert_eq!(default_vcpus(&d, 64, true), 1);
        let capped = VmDefaults {
            max_vcpus: Some(4),
            max_memory_mib: Some(1024),
            ..Default::default()
        };
        assert_eq!(default_vcpus(&capped, 64, false), 4);
        assert_eq!(default_vcpus(&capped, 64, true), 4);
        assert_eq!(
            default_memory_mib(&d, Some(24 * 1024)),
            DEFAULT_MAX_MEMORY_MIB
        );
        assert_eq!(default_memory_mib(&d, Some(1024)), 512);
        assert_eq!(default_memory_mib(&d, Some(100)), DEFAULT_MEMORY_MIB);
        assert_eq!(default_memory_mib(&capped, Some(24 * 1024)), 1024);
        assert!(memory_mib(&spec(serde_json::json!({})), &d) >= DEFAULT_MEMORY_MIB);
    }

    #[test]
    fn vcpus_from_quota_else_config() {
        let d = VmDefaults {
            vcpus: Some(1),
            ..Default::default()
        };
        assert_eq!(vcpus(&spec(serde_json::json!({})), &d), 1);
        let s = spec(serde_json::json!({"cpu": {"quota": 150000, "period": 100000}}));
        assert_eq!(vcpus(&s, &d), 2);
        let s = spec(serde_json::json!({"cpu": {"shares": 2048}}));
        let d2 = VmDefaults {
            vcpus: Some(3),
            ..Default::default()
        };
        assert_eq!(vcpus(&s, &d2), 3);
    }

    #[test]
    fn memory_from_limit_plus_overhead_else_config() {
        let d = VmDefaults {
            memory_mib: Some(128),
            ..Default::default()
        };
        assert_eq!(memory_mib(&spec(serde_json::json!({})), &d), 128);
        let s = spec(serde_json::json!({"memory": {"limit": 100 * 1024 * 1024}}));
        assert_eq!(memory_mib(&s, &d), 164);
        let d2 = VmDefaults {
            memory_mib: Some(256),
            ..Default::default()
        };
        assert_eq!(memory_mib(&spec(serde_json::json!({})), &d2), 256);
    }
}
