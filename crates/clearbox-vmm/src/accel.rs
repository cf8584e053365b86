//! Accelerator choice: real KVM when the host offers it, TCG otherwise.
//!
//! `/dev/kvm` alone proves little: under PVM (paravirtualised KVM, `kvm_pvm`
//! module) the device exists but an unmodified guest kernel does not boot, and
//! a CPU without vmx/svm cannot run hardware-assisted guests at all. The
//! detection is a pure function of [`KvmFacts`] so it can be tested with
//! injected inputs.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What the configuration asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccelMode {
    /// KVM when real hardware virtualisation is usable, TCG otherwise.
    #[default]
    Auto,
    Kvm,
    Tcg,
}

impl FromStr for AccelMode {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "kvm" => Ok(Self::Kvm),
            "tcg" => Ok(Self::Tcg),
            other => Err(crate::Error::InvalidConfig(format!(
                "accel must be auto, kvm or tcg, not {other:?}"
            ))),
        }
    }
}

/// The accelerator a VM actually runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

/// State of `/dev/kvm`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "detail")]
pub enum DevKvm {
    Absent,
    /// Present but opening it or `KVM_GET_API_VERSION` failed.
    Unusable(String),
    Usable {
        api_version: i32,
    },
}

/// The raw observations accelerator detection is based on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvmFacts {
    pub dev_kvm: DevKvm,
    /// `/proc/cpuinfo` advertises vmx or svm.
    pub cpu_virt: bool,
    /// `/sys/module/kvm_pvm` exists.
    pub pvm: bool,
}

/// What kind of KVM the host has.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KvmKind {
    /// Hardware-assisted KVM: usable.
    Real,
    /// Paravirtualised KVM: present, but unmodified guests do not boot.
    Pvm,
    /// `/dev/kvm` usable but the CPU advertises neither vmx nor svm.
    NoCpuSupport,
    /// `/dev/kvm` present but unusable.
    Unusable,
    /// No `/dev/kvm`.
    Absent,
}

impl KvmFacts {
    /// Reads the facts from this host.
    /// This host's facts, gathered once per process (they cannot change while it runs): a
    /// VM start asks for them while sizing the VM, for its template key and to start QEMU.
    pub fn host() -> &'static KvmFacts {
        static FACTS: std::sync::OnceLock<KvmFacts> = std::sync::OnceLock::new();
        FACTS.get_or_init(KvmFacts::gather)
    }

    pub fn gather() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        KvmFacts {
            dev_kvm: probe_dev_kvm(Path::new("/dev/kvm")),
            cpu_virt: cpuinfo_has_virt(&cpuinfo),
            pvm: Path::new("/sys/module/kvm_pvm").exists(),
        }
    }

    pub fn kind(&self) -> KvmKind {
        match &self.dev_kvm {
            DevKvm::Absent => KvmKind::Absent,
            DevKvm::Unusable(_) => KvmKind::Unusable,
            DevKvm::Usable { .. } if self.pvm => KvmKind::Pvm,
            DevKvm::Usable { .. } if !self.cpu_virt => KvmKind::NoCpuSupport,
            DevKvm::Usable { .. } => KvmKind::Real,
        }
    }

    /// One-line explanation of [`Self::kind`].
    pub fn describe(&self) -> String {
        match (&self.dev_kvm, self.kind()) {
            (_, KvmKind::Real) => "hardware KVM (vmx/svm) usable".into(),
            (_, KvmKind::Pvm) => {
                "/dev/kvm is PVM (kvm_pvm loaded): unmodified guests do not boot".into()
            }
            (_, KvmKind::NoCpuSupport) => {
                "/dev/kvm usable but the CPU has no vmx/svm (nested virtualisation off)".into()
            }
            (DevKvm::Unusable(why), _) => format!("/dev/kvm unusable: {why}"),
            _ => "no /dev/kvm".into(),
        }
    }

    /// Resolves `mode` to an accelerator, with the reason for the choice.
    pub fn select(&self, mode: AccelMode) -> crate::Result<(Accel, String)> {
        match (mode, self.kind()) {
            (AccelMode::Tcg, _) => Ok((Accel::Tcg, "tcg requested by config".into())),
            (AccelMode::Auto, KvmKind::Real) => Ok((Accel::Kvm, self.describe())),
            (AccelMode::Auto, _) => Ok((Accel::Tcg, self.describe())),
            (AccelMode::Kvm, KvmKind::Absent | KvmKind::Unusable) => {
                Err(crate::Error::KvmUnusable(self.describe()))
            }
            (AccelMode::Kvm, KvmKind::Real) => Ok((Accel::Kvm, "kvm requested by config".into())),
            (AccelMode::Kvm, _) => Ok((
                Accel::Kvm,
                format!("kvm forced by config although {}", self.describe()),
            )),
        }
    }
}

/// True when the first `flags` line of a `/proc/cpuinfo` text lists vmx or svm.
pub fn cpuinfo_has_virt(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .and_then(|l| l.split_once(':'))
        .is_some_and(|(_, flags)| flags.split_whitespace().any(|f| f == "vmx" || f == "svm"))
}

/// Host TSC frequency in kHz: sysfs `tsc_freq_khz` when present, otherwise the
/// first `cpu MHz` of `/proc/cpuinfo` (under TCG the guest TSC follows the
/// host's, and a guest that calibrates it itself hangs now and then).
pub fn host_tsc_khz() -> Option<u64> {
    let sysfs = std::fs::read_to_string("/sys/devices/system/cpu/cpu0/tsc_freq_khz").ok();
    if let Some(khz) = sysfs.and_then(|s| s.trim().parse::<u64>().ok()) {
        return Some(khz);
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    tsc_khz_from_cpuinfo(&cpuinfo)
}

/// Parses the first `cpu MHz : 2596.096` line into kHz (2596096).
pub fn tsc_khz_from_cpuinfo(cpuinfo: &str) -> Option<u64> {
    let line = cpuinfo.lines().find(|l| l.starts_with("cpu MHz"))?;
    let (_, value) = line.split_once(':')?;
    let mhz: f64 = value.trim().parse().ok()?;
    if !(mhz.is_finite() && mhz > 0.0) {
        return None;
    }
    // Rounding to whole kHz is what the kernel parameter takes.
    Some((mhz * 1000.0).round() as u64)
}

fn probe_dev_kvm(path: &Path) -> DevKvm {
    use std::os::fd::AsRawFd;
    const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;
    if !path.exists() {
        return DevKvm::Absent;
    }
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
    {
        Ok(f) => f,
        Err(e) => return DevKvm::Unusable(format!("open: {e}")),
    };
    // SAFETY: KVM_GET_API_VERSION takes no argument and only returns an int;
    // the fd is valid for the duration of the call because `file` is alive.
    let version = unsafe { libc::ioctl(file.as_raw_fd(), KVM_GET_API_VERSION, 0) };
    if version < 0 {
        let err = std::io::Error::last_os_error();
        return DevKvm::Unusable(format!("KVM_GET_API_VERSION: {err}"));
    }
    DevKvm::Usable {
        api_version: version,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTEL: &str = "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu MHz\t\t: 2596.096\nflags\t\t: fpu vme de pse tsc msr vmx ept\n";
    const AMD: &str = "processor\t: 0\nflags\t\t: fpu svm npt\n";
    const NONE: &str = "processor\t: 0\ncpu MHz\t\t: 3000.000\nflags\t\t: fpu vme hypervisor\n";

    fn facts(dev: DevKvm, cpuinfo: &str, pvm: bool) -> KvmFacts {
        KvmFacts {
            dev_kvm: dev,
            cpu_virt: cpuinfo_has_virt(cpuinfo),
            pvm,
        }
    }
    fn usable() -> DevKvm {
        DevKvm::Usable { api_version: 12 }
    }

    #[test]
    fn cpu_flags() {
        assert!(cpuinfo_has_virt(INTEL));
        assert!(cpuinfo_has_virt(AMD));
        assert!(!cpuinfo_has_virt(NONE));
        assert!(!cpuinfo_has_virt(""));
        // "vmx" as part of another flag does not count.
        assert!(!cpuinfo_has_virt("flags : vmxfoo svmbar\n"));
    }

    #[test]
    fn tsc_parse() {
        assert_eq!(tsc_khz_from_cpuinfo(INTEL), Some(2_596_096));
        assert_eq!(tsc_khz_from_cpuinfo(NONE), Some(3_000_000));
        assert_eq!(tsc_khz_from_cpuinfo(AMD), None);
        assert_eq!(tsc_khz_from_cpuinfo("cpu MHz : junk\n"), None);
    }

    #[test]
    fn real_kvm_selected_on_auto() {
        let f = facts(usable(), INTEL, false);
        assert_eq!(f.kind(), KvmKind::Real);
        assert_eq!(f.select(AccelMode::Auto).unwrap().0, Accel::Kvm);
        assert_eq!(f.select(AccelMode::Tcg).unwrap().0, Accel::Tcg);
    }

    #[test]
    fn pvm_falls_back_to_tcg() {
        // PVM hosts show no vmx/svm, but PVM wins even if they did.
        for cpu in [NONE, INTEL] {
            let f = facts(usable(), cpu, true);
            assert_eq!(f.kind(), KvmKind::Pvm);
            let (accel, why) = f.select(AccelMode::Auto).unwrap();
            assert_eq!(accel, Accel::Tcg);
            assert!(why.contains("PVM"), "{why}");
            // Forcing is honoured, with the reason recorded.
            let (accel, why) = f.select(AccelMode::Kvm).unwrap();
            assert_eq!(accel, Accel::Kvm);
            assert!(why.contains("forced"), "{why}");
        }
    }

    #[test]
    fn no_cpu_flags_means_tcg() {
        let f = facts(usable(), NONE, false);
        assert_eq!(f.kind(), KvmKind::NoCpuSupport);
        assert_eq!(f.select(AccelMode::Auto).unwrap().0, Accel::Tcg);
    }

    #[test]
    fn absent_or_unusable_kvm() {
        let f = facts(DevKvm::Absent, INTEL, false);
        assert_eq!(f.kind(), KvmKind::Absent);
        assert_eq!(f.select(AccelMode::Auto).unwrap().0, Accel::Tcg);
        assert!(f.select(AccelMode::Kvm).is_err());
        let f = facts(DevKvm::Unusable("open: EACCES".into()), INTEL, false);
        assert_eq!(f.kind(), KvmKind::Unusable);
        assert!(f.describe().contains("EACCES"));
        assert!(f.select(AccelMode::Kvm).is_err());
    }

    #[test]
    fn mode_parse() {
        assert_eq!("auto".parse::<AccelMode>().unwrap(), AccelMode::Auto);
        assert_eq!("kvm".parse::<AccelMode>().unwrap(), AccelMode::Kvm);
        assert_eq!("tcg".parse::<AccelMode>().unwrap(), AccelMode::Tcg);
        assert!("hvf".parse::<AccelMode>().is_err());
    }
}
