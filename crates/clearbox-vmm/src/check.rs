//! `clearbox check`: what this host offers and lacks for VM isolation.
//!
//! [`HostFacts::gather`] does the I/O; [`report`] is pure so it is tested with
//! injected facts.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::accel::{Accel, AccelMode, KvmFacts, KvmKind};
use crate::binaries::{self, VirtiofsdFlavor};
use crate::config::{DEFAULT_INITRAMFS, DEFAULT_KERNEL};

const INSTALL: &str = "run scripts/install-deps.sh";

/// What to check against.
#[derive(Clone, Debug)]
pub struct CheckOptions {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub accel: AccelMode,
    /// VM templates: `Some(false)` where supported (the default), `Some(true)` asked for
    /// explicitly (`[vm] template = true`, `CLEARBOX_TEMPLATE=on`: VMs refuse to start
    /// without them), `None` turned off (`[vm] template = false`, `CLEARBOX_TEMPLATE=off`).
    pub templates: Option<bool>,
    /// The template cache (`[vm] template_dir`, `template_max`).
    pub template_dir: PathBuf,
    pub template_max: usize,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            kernel: DEFAULT_KERNEL.into(),
            initramfs: DEFAULT_INITRAMFS.into(),
            accel: AccelMode::Auto,
            templates: Some(false),
            template_dir: crate::template::DEFAULT_TEMPLATE_DIR.into(),
            template_max: crate::template::DEFAULT_TEMPLATE_MAX,
        }
    }
}

/// Raw observations.
#[derive(Clone, Debug)]
pub struct HostFacts {
    pub kvm: KvmFacts,
    pub vhost_vsock: bool,
    pub tun: bool,
    /// Path and first line of `--version`.
    pub qemu: Option<(PathBuf, String)>,
    pub virtiofsd: Option<(PathBuf, VirtiofsdFlavor)>,
    pub vhost_device_vsock: Option<PathBuf>,
    pub kernel: bool,
    pub initramfs: bool,
    /// `clearbox-vmux` (the virtio-serial agent channel).
    pub vmux: Option<PathBuf>,
    pub template_cache: TemplateCacheFacts,
}

/// What the template cache holds (`clearbox template list` shows each entry).
#[derive(Clone, Debug, Default)]
pub struct TemplateCacheFacts {
    pub ready: usize,
    /// Stale templates, leftovers of failed builds, unsupported markers.
    pub unusable: usize,
    /// Memory all entries hold (tmpfs).
    pub bytes: u64,
}

impl TemplateCacheFacts {
    fn gather(dir: &Path) -> Self {
        use crate::template::CacheState;
        let mut f = TemplateCacheFacts::default();
        for t in crate::template::list(dir) {
            f.bytes += t.bytes;
            match t.state {
                CacheState::Ready => f.ready += 1,
                CacheState::Building => {}
                CacheState::Stale | CacheState::Unsupported | CacheState::Partial => {
                    f.unusable += 1
                }
            }
        }
        f
    }
}

impl HostFacts {
    pub fn gather(opts: &CheckOptions) -> Self {
        let qemu = binaries::qemu().map(|p| {
            let version = std::process::Command::new(&p)
                .arg("--version")
                .output()
                .ok()
                .and_then(|o| String::from_utf8(o.stdout).ok())
                .and_then(|s| s.lines().next().map(str::to_string))
                .unwrap_or_else(|| "version unknown".into());
            (p, version)
        });
        HostFacts {
            kvm: KvmFacts::gather(),
            vhost_vsock: Path::new("/dev/vhost-vsock").exists(),
            tun: Path::new("/dev/net/tun").exists(),
            qemu,
            virtiofsd: binaries::virtiofsd(),
            vhost_device_vsock: binaries::vhost_device_vsock(),
            kernel: opts.kernel.is_file(),
            initramfs: opts.initramfs.is_file(),
            vmux: binaries::vmux(),
            template_cache: TemplateCacheFacts::gather(&opts.template_dir),
        }
    }
}

/// Ok, works with a limitation, or a piece VMs cannot start without.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Degraded,
    Missing,
}

#[derive(Clone, Debug, Serialize)]
pub struct CheckItem {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
    /// Exactly one line telling how to fix it; `None` when ok.
    pub remedy: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct HostReport {
    /// Accelerator VMs will use, and why.
    pub accel: Option<Accel>,
    pub accel_reason: String,
    pub kvm: KvmKind,
    pub items: Vec<CheckItem>,
    /// VMs can start (nothing `missing`).
    pub ok: bool,
}

/// Checks this host with default asset paths.
pub fn check() -> HostReport {
    check_with(&CheckOptions::default())
}

pub fn check_with(opts: &CheckOptions) -> HostReport {
    report(&HostFacts::gather(opts), opts)
}

/// Builds the report from facts.
pub fn report(f: &HostFacts, opts: &CheckOptions) -> HostReport {
    let mut items = Vec::new();
    let mut item = |name, status, detail: String, remedy: Option<&str>| {
        items.push(CheckItem {
            name,
            status,
            detail,
            remedy: if status == Status::Ok {
                None
            } else {
                remedy.map(str::to_string)
            },
        })
    };
    let kind = f.kvm.kind();
    let (accel, accel_reason) = match f.kvm.select(opts.accel) {
        Ok((a, why)) => (Some(a), why),
        Err(e) => (None, e.to_string()),
    };
    let accel_status = match (&accel, &kind) {
        (None, _) => Status::Missing,
        (Some(Accel::Kvm), _) => Status::Ok,
        (Some(Accel::Tcg), _) if opts.accel == AccelMode::Tcg => Status::Ok,
        (Some(Accel::Tcg), _) => Status::Degraded,
    };
    let accel_detail = match accel {
        Some(a) => format!("{a} ({accel_reason})"),
        None => accel_reason.clone(),
    };
    let accel_remedy = match kind {
        KvmKind::Real => "set accel = \"auto\" or \"kvm\"",
        KvmKind::Unusable => "give this user read-write access to /dev/kvm (group kvm)",
        _ => "VMs run under TCG (slower); for KVM use a host with VT-x/AMD-V exposed",
    };
    item(
        "accelerator",
        accel_status,
        accel_detail,
        Some(accel_remedy),
    );

    match &f.qemu {
        Some((p, v)) => item("qemu", Status::Ok, format!("{} ({v})", p.display()), None),
        None => item(
            "qemu",
            Status::Missing,
            "qemu-system-x86_64 not found".into(),
            Some(INSTALL),
        ),
    }
    if f.vhost_vsock {
        item(
            "vhost-vsock",
            Status::Ok,
            "/dev/vhost-vsock (kernel vsock)".into(),
            None,
        );
    } else {
        item(
            "vhost-vsock",
            Status::Degraded,
            "no /dev/vhost-vsock: the agent channel goes through vhost-device-vsock".into(),
            Some("modprobe vhost_vsock"),
        );
    }
    match (&f.vhost_device_vsock, f.vhost_vsock) {
        (Some(p), _) => item(
            "vhost-device-vsock",
            Status::Ok,
            p.display().to_string(),
            None,
        ),
        (None, true) => item(
            "vhost-device-vsock",
            Status::Ok,
            "not installed; not needed with /dev/vhost-vsock".into(),
            None,
        ),
        (None, false) => item(
            "vhost-device-vsock",
            Status::Missing,
            "not found, and needed without /dev/vhost-vsock".into(),
            Some(INSTALL),
        ),
    }
    match &f.virtiofsd {
        Some((p, VirtiofsdFlavor::Rust)) => {
            item("virtiofsd", Status::Ok, p.display().to_string(), None)
        }
        Some((p, VirtiofsdFlavor::Legacy)) => item(
            "virtiofsd",
            Status::Ok,
            format!("{} (QEMU's legacy C virtiofsd)", p.display()),
            None,
        ),
        None => item(
            "virtiofsd",
            Status::Missing,
            "virtiofsd not found".into(),
            Some(INSTALL),
        ),
    }
    if f.tun {
        item("tun", Status::Ok, "/dev/net/tun".into(), None);
    } else {
        item(
            "tun",
            Status::Degraded,
            "no /dev/net/tun: VMs get no network".into(),
            Some("modprobe tun"),
        );
    }
    let asset = |ok: bool, path: &Path| match ok {
        true => (Status::Ok, path.display().to_string()),
        false => (Status::Missing, format!("{} not found", path.display())),
    };
    let (s, d) = asset(f.kernel, &opts.kernel);
    item(
        "guest kernel",
        s,
        d,
        Some("run scripts/build-guest-kernel.sh"),
    );
    let (s, d) = asset(f.initramfs, &opts.initramfs);
    item(
        "initramfs",
        s,
        d,
        Some("run scripts/build-initramfs.sh \"$(scripts/build-agent.sh)\""),
    );
    let (s, d, r) = templates(f, opts);
    item("vm templates", s, d, r);
    if let Some((s, d, r)) = template_cache(f, opts) {
        item("template cache", s, d, r);
    }
    let ok = items.iter().all(|i| i.status != Status::Missing);
    HostReport {
        accel,
        accel_reason,
        kvm: kind,
        items,
        ok,
    }
}

/// Whether VMs are restored from templates here, and why not.
fn templates(f: &HostFacts, opts: &CheckOptions) -> (Status, String, Option<&'static str>) {
    let major = f
        .qemu
        .as_ref()
        .and_then(|(_, v)| crate::binaries::parse_qemu_major(v));
    let Some(required) = opts.templates else {
        return (
            Status::Ok,
            "off ([vm] template = false or CLEARBOX_TEMPLATE=off): VMs boot cold".into(),
            None,
        );
    };
    let off = |why: String| {
        const HOW: &str = "install QEMU 10 (bookworm-backports) and the Rust virtiofsd (cargo install virtiofsd) first on PATH, and clearbox-vmux beside clearbox";
        if required {
            (
                Status::Missing,
                format!("asked for ([vm] template = true or CLEARBOX_TEMPLATE=on) but unsupported: {why}; VMs refuse to start"),
                Some(HOW),
            )
        } else {
            (
                Status::Degraded,
                format!("off: {why}; VMs boot cold"),
                Some(HOW),
            )
        }
    };
    match major {
        Some(m) if m >= crate::template::MIN_QEMU_MAJOR => {}
        Some(m) => {
            return off(format!(
                "QEMU {m} cannot migrate vhost-user-fs (templates need QEMU {}+)",
                crate::template::MIN_QEMU_MAJOR
            ))
        }
        None => return off("no QEMU version".into()),
    }
    if f.vmux.is_none() {
        return off("clearbox-vmux (the virtio-serial agent channel) not found".into());
    }
    if !matches!(f.virtiofsd, Some((_, VirtiofsdFlavor::Rust))) {
        return off("virtio-fs migrates only with the Rust virtiofsd".into());
    }
    (
        Status::Ok,
        format!(
            "on: VMs are restored from saved templates ({}; see docs/ARCHITECTURE.md)",
            opts.template_dir.display()
        ),
        None,
    )
}

/// What the template cache holds; `None` when templates are off and the cache is empty.
fn template_cache(
    f: &HostFacts,
    opts: &CheckOptions,
) -> Option<(Status, String, Option<&'static str>)> {
    let c = &f.template_cache;
    if opts.templates.is_none() && c.ready + c.unusable == 0 {
        return None;
    }
    let mut detail = format!(
        "{} ready of at most {} kept, {:.1} MiB of RAM in {}",
        c.ready,
        opts.template_max,
        c.bytes as f64 / f64::from(1u32 << 20),
        opts.template_dir.display()
    );
    if c.unusable > 0 {
        detail.push_str(&format!(
            "; {} no VM can use (stale, failed builds, unsupported)",
            c.unusable
        ));
        return Some((Status::Degraded, detail, Some("clearbox template prune")));
    }
    if opts.templates.is_none() && c.ready > 0 {
        detail.push_str("; templates are off");
        return Some((
            Status::Degraded,
            detail,
            Some("clearbox template prune --all"),
        ));
    }
    Some((Status::Ok, detail, None))
}

impl fmt::Display for HostReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for i in &self.items {
            let tag = match i.status {
                Status::Ok => "ok",
                Status::Degraded => "degraded",
                Status::Missing => "MISSING",
            };
            writeln!(f, "{tag:<9}{:<19}{}", i.name, i.detail)?;
            if let Some(r) = &i.remedy {
                writeln!(f, "{:<28}-> {r}", "")?;
            }
        }
        match self.ok {
            true => write!(f, "VM isolation: available"),
            false => write!(f, "VM isolation: unavailable (fix the MISSING items)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accel::DevKvm;

    fn pvm_host() -> HostFacts {
        HostFacts {
            kvm: KvmFacts {
                dev_kvm: DevKvm::Usable { api_version: 12 },
                cpu_virt: false,
                pvm: true,
            },
            vhost_vsock: false,
            tun: true,
            qemu: Some((
                "/usr/bin/qemu-system-x86_64".into(),
                "QEMU emulator version 7.2.22".into(),
            )),
            virtiofsd: Some(("/usr/lib/qemu/virtiofsd".into(), VirtiofsdFlavor::Legacy)),
            vhost_device_vsock: Some("/root/.cargo/bin/vhost-device-vsock".into()),
            kernel: true,
            initramfs: true,
            vmux: Some("/usr/local/bin/clearbox-vmux".into()),
            template_cache: TemplateCacheFacts::default(),
        }
    }

    fn get<'a>(r: &'a HostReport, name: &str) -> &'a CheckItem {
        r.items.iter().find(|i| i.name == name).unwrap()
    }

    #[test]
    fn pvm_host_uses_tcg_and_is_usable() {
        let r = report(&pvm_host(), &CheckOptions::default());
        assert_eq!(r.accel, Some(Accel::Tcg));
        assert_eq!(r.kvm, KvmKind::Pvm);
        assert!(r.ok);
        let a = get(&r, "accelerator");
        assert_eq!(a.status, Status::Degraded);
        assert!(a.detail.contains("PVM"), "{}", a.detail);
        let text = r.to_string();
        assert!(text.contains("tcg"), "{text}");
        assert!(text.ends_with("available"));
    }

    #[test]
    fn missing_pieces_get_one_remedy_each() {
        let mut f = pvm_host();
        f.vhost_device_vsock = None;
        f.kernel = false;
        f.initramfs = false;
        f.qemu = None;
        f.virtiofsd = None;
        f.tun = false;
        let r = report(&f, &CheckOptions::default());
        assert!(!r.ok);
        for name in [
            "vhost-device-vsock",
            "guest kernel",
            "initramfs",
            "qemu",
            "virtiofsd",
        ] {
            let i = get(&r, name);
            assert_eq!(i.status, Status::Missing, "{name}");
            let remedy = i.remedy.as_deref().unwrap();
            assert_eq!(remedy.lines().count(), 1);
        }
        assert!(get(&r, "guest kernel")
            .remedy
            .as_deref()
            .unwrap()
            .contains("build-guest-kernel.sh"));
        assert_eq!(get(&r, "tun").status, Status::Degraded);
        for i in r.items.iter().filter(|i| i.status == Status::Ok) {
            assert!(i.remedy.is_none());
        }
        assert!(r.to_string().contains("unavailable"));
    }

    #[test]
    fn real_kvm_and_kernel_vsock() {
        let mut f = pvm_host();
        f.kvm = KvmFacts {
            dev_kvm: DevKvm::Usable { api_version: 12 },
            cpu_virt: true,
            pvm: false,
        };
        f.vhost_vsock = true;
        f.vhost_device_vsock = None;
        let r = report(&f, &CheckOptions::default());
        assert_eq!(r.accel, Some(Accel::Kvm));
        assert_eq!(get(&r, "accelerator").status, Status::Ok);
        assert_eq!(get(&r, "vhost-vsock").status, Status::Ok);
        assert_eq!(get(&r, "vhost-device-vsock").status, Status::Ok);
        assert!(r.ok);
    }

    #[test]
    fn templates_need_qemu_10_the_rust_virtiofsd_and_vmux() {
        let f = pvm_host();
        let t = |f: &HostFacts, on: bool| {
            // The default: on where supported.
            let opts = CheckOptions {
                templates: on.then_some(false),
                ..CheckOptions::default()
            };
            assert_eq!(CheckOptions::default().templates, Some(false));
            get(&report(f, &opts), "vm templates").clone()
        };
        // QEMU 7.2: off, with one remedy, and VMs still start.
        let i = t(&f, true);
        assert_eq!(i.status, Status::Degraded);
        assert!(
            i.detail.contains("QEMU 7") && i.detail.contains("boot cold"),
            "{}",
            i.detail
        );
        assert!(report(&f, &CheckOptions::default()).ok);
        let mut f10 = f.clone();
        f10.qemu = Some((
            "/usr/bin/qemu-system-x86_64".into(),
            "QEMU emulator version 10.0.2 (Debian)".into(),
        ));
        assert_eq!(t(&f10, true).status, Status::Degraded, "C virtiofsd");
        f10.virtiofsd = Some(("/usr/local/bin/virtiofsd".into(), VirtiofsdFlavor::Rust));
        let on = t(&f10, true);
        assert_eq!(on.status, Status::Ok);
        assert!(on.detail.starts_with("on"), "{}", on.detail);
        let off = t(&f10, false);
        assert!(off.detail.contains("template = false"), "{}", off.detail);
        f10.vmux = None;
        assert!(t(&f10, true).detail.contains("clearbox-vmux"));
        // Asked for explicitly on a host without support: VMs refuse to start.
        let required = CheckOptions {
            templates: Some(true),
            ..CheckOptions::default()
        };
        let i = get(&report(&f, &required), "vm templates").clone();
        assert_eq!(i.status, Status::Missing);
        assert!(i.detail.contains("refuse"), "{}", i.detail);
    }

    #[test]
    fn forced_kvm_without_device_is_missing() {
        let mut f = pvm_host();
        f.kvm.dev_kvm = DevKvm::Absent;
        let opts = CheckOptions {
            accel: AccelMode::Kvm,
            ..CheckOptions::default()
        };
        let r = report(&f, &opts);
        assert_eq!(r.accel, None);
        assert!(!r.ok);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["items"][0]["status"], "missing");
    }

    #[test]
    fn the_template_cache_is_shown_and_unusable_entries_have_a_remedy() {
        let mut f = pvm_host();
        let opts = CheckOptions::default();
        let r = report(&f, &opts);
        let c = get(&r, "template cache").clone();
        assert_eq!(c.status, Status::Ok);
        assert!(
            c.detail.starts_with("0 ready of at most 8 kept"),
            "{}",
            c.detail
        );
        f.template_cache = TemplateCacheFacts {
            ready: 2,
            unusable: 1,
            bytes: 150 << 20,
        };
        let c = get(&report(&f, &opts), "template cache").clone();
        assert_eq!(c.status, Status::Degraded);
        assert!(c.detail.contains("150.0 MiB") && c.detail.contains("1 no VM can use"));
        assert_eq!(c.remedy.as_deref(), Some("clearbox template prune"));
        // Off: shown only while the cache holds something, with the way to empty it.
        let off = CheckOptions {
            templates: None,
            ..CheckOptions::default()
        };
        f.template_cache.unusable = 0;
        let c = get(&report(&f, &off), "template cache").clone();
        assert_eq!(c.remedy.as_deref(), Some("clearbox template prune --all"));
        f.template_cache = TemplateCacheFacts::default();
        assert!(report(&f, &off)
            .items
            .iter()
            .all(|i| i.name != "template cache"));
    }
}
