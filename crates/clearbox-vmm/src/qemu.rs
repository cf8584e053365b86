//! QEMU microvm command line.
//!
//! Pure: builds the argument vector from an already-resolved plan, so it is
//! unit-tested without spawning anything.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::accel::Accel;
use crate::config::NetDevice;

/// Where the agent channel device gets its backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum VsockDevice {
    /// Kernel vhost-vsock with this guest CID.
    Kernel { cid: u32 },
    /// vhost-user socket served by vhost-device-vsock.
    VhostUser { socket: PathBuf },
    /// Not vsock: a virtio-serial port ([`clearbox_protocol::mux::PORT_NAME`]) whose chardev
    /// connects to `clearbox-vmux` at `socket`.
    Serial { socket: PathBuf },
}

/// A fully resolved QEMU invocation.
#[derive(Clone, Debug)]
pub(crate) struct QemuPlan {
    pub accel: Accel,
    pub vcpus: u32,
    pub memory_mib: u32,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cmdline: String,
    pub serial_log: PathBuf,
    pub vsock: Option<VsockDevice>,
    /// (tag, vhost-user socket of its virtiofsd)
    pub fs: Vec<(String, PathBuf)>,
    pub sandbox: bool,
    pub tcg_tb_size_mib: Option<u32>,
    /// virtio-net NICs on inherited tap fds.
    pub net: Vec<NetDevice>,
    /// In-kernel virtio-net datapath (`/dev/vhost-net` exists).
    pub vhost_net: bool,
    /// Guest RAM in this file (`memory-backend-file`, shared) instead of a memfd: templates.
    pub mem_file: Option<PathBuf>,
    /// QMP socket (QEMU listens).
    pub qmp: Option<PathBuf>,
    /// Wait for `migrate-incoming` (`-incoming defer`): a restore.
    pub incoming: bool,
    /// NICs on unconnected hub ports with placeholder MACs (a template being built).
    pub placeholder_nics: usize,
}

/// Kernel parameters every guest gets. Rationale for the less obvious ones:
/// `reboot=t` + QEMU `-no-reboot`: with ACPI off, power-off only halts, so the
/// agent reboots and QEMU exits; `tsc_early_khz` (TCG only): a guest that
/// calibrates the TSC itself under TCG hangs in about one boot out of ten;
/// `apic_bus_khz` (TCG only; [`TCG_APIC_BUS_KHZ`]): the local APIC timer's
/// calibration and verification cost ~240 ms under TCG and then fail anyway (measured:
/// boot 0.72 s -> 0.43 s), so the guest kernel is told the timer's clock instead
/// (guest/kernel/patches/0001-x86-apic-apic_bus_khz.patch). It used to get
/// `nolapic_timer`, which left the PIT as the only clock event device: the PIT cannot be
/// programmed more than 27 ms ahead, so an idle guest woke 36 times a second (measured:
/// QEMU's main loop and vCPU thread then cost 1.8% of a host core per idle VM);
/// `fs_guard` (TCG only) adds [`TCG_VHOST_USER_FS_GUARD`].
pub(crate) fn kernel_cmdline(
    accel: Accel,
    tsc_khz: Option<u64>,
    fs_guard: bool,
    extra: &[String],
) -> String {
    let mut words: Vec<String> = [
        "console=ttyS0",
        "quiet",
        "i8042.noaux",
        "i8042.nomux",
        "i8042.nopnp",
        "i8042.dumbkbd",
        "panic=-1",
        "tsc=reliable",
        "no_timer_check",
        "noreplace-smp",
        "8250.nr_uarts=1",
        "pci=off",
        "random.trust_cpu=on",
        "cryptomgr.notests",
        "reboot=t",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if accel == Accel::Tcg {
        if let Some(khz) = tsc_khz {
            words.push(format!("tsc_early_khz={khz}"));
        }
        words.push(format!("apic_bus_khz={TCG_APIC_BUS_KHZ}"));
        if fs_guard {
            words.push(TCG_VHOST_USER_FS_GUARD.into());
        }
    }
    words.extend(extra.iter().cloned());
    words.join(" ")
}

/// The input clock of the local APIC timer that QEMU emulates under TCG, in kHz: its
/// count register advances once per nanosecond of QEMU's virtual clock divided by the
/// programmed divider (hw/intel/apic.c), i.e. a 1 GHz bus.
pub(crate) const TCG_APIC_BUS_KHZ: u64 = 1_000_000;

/// Guest kernel parameter that keeps TCG from running stale translated code on pages a
/// vhost-user backend (virtiofsd) filled.
///
/// virtiofsd writes file data straight into shared guest RAM, so QEMU never sees the write
/// and TCG's self-modifying-code detection (which only traps writes by the emulated CPU or
/// by QEMU's own DMA) does not drop the blocks it translated from that page's previous
/// contents. When the guest frees a page cache page that held executed code (FUSE drops an
/// inode's cache when the file changed, on memory pressure and on `drop_caches`; upstream
/// Linux also on every open with `cache=auto`, which guest kernel patch 0002 stops) and reuses it for
/// another file's data, the next instruction fetch there can hit a translation of the old
/// code: random SIGSEGV/SIGILL/"stack smashing detected" in guest programs run from
/// virtio-fs. Measured with QEMU 10.0.2: 4-19 of 20 execs of a virtio-fs binary crash;
/// QEMU 7.2 did not show it in the same loops (docs/ARCHITECTURE.md, "QEMU under TCG").
/// `init_on_alloc=1` makes the guest zero every page it allocates with the CPU, which TCG
/// does see: the stale translations are invalidated before virtiofsd refills the page
/// (0 crashes in 120 execs on QEMU 10). Not needed under KVM (hardware fetches what is in
/// memory).
pub(crate) const TCG_VHOST_USER_FS_GUARD: &str = "init_on_alloc=1";

/// Whether a QEMU of this major version needs [`TCG_VHOST_USER_FS_GUARD`] under TCG. 7.2
/// (Debian 12's) never showed the crash in the same loops, and the guard costs it ~0.1 s
/// of CPU per boot (zeroing), so it boots as before; anything newer gets the guard (10.0.2
/// measured; 8.x and 9.x not tried).
pub(crate) fn needs_vhost_user_fs_guard(major: u32) -> bool {
    major >= 8
}

/// virtio-balloon on virtio-mmio, used only for free page reporting (never inflated).
pub(crate) const BALLOON_DEVICE: &str = "virtio-balloon-device,free-page-reporting=on";

/// QEMU's option parser treats ',' as a separator; ",," is a literal comma.
fn esc(p: &Path) -> String {
    p.to_string_lossy().replace(',', ",,")
}

pub(crate) fn args(plan: &QemuPlan) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    let mut push = |s: String| a.push(OsString::from(s));
    let mem = plan.memory_mib;
    push("-M".into());
    push("microvm,acpi=off,memory-backend=mem0".into());
    push("-accel".into());
    match (plan.accel, plan.tcg_tb_size_mib) {
        (Accel::Kvm, _) => push("kvm".into()),
        (Accel::Tcg, Some(tb)) => push(format!("tcg,tb-size={tb}")),
        (Accel::Tcg, None) => push("tcg".into()),
    }
    push("-cpu".into());
    push(match plan.accel {
        Accel::Kvm => "host".into(),
        Accel::Tcg => "max".into(),
    });
    push("-smp".into());
    push(plan.vcpus.to_string());
    push("-m".into());
    push(format!("{mem}M"));
    // vhost-user backends map guest memory: it must be shared. A template's is a named
    // file (x-ignore-shared leaves such RAM out of the saved state).
    push("-object".into());
    match &plan.mem_file {
        None => push(format!("memory-backend-memfd,id=mem0,size={mem}M,share=on")),
        Some(p) => push(format!(
            "memory-backend-file,id=mem0,size={mem}M,mem-path={},share=on",
            esc(p)
        )),
    }
    if let Some(q) = &plan.qmp {
        push("-qmp".into());
        push(format!("unix:{},server=on,wait=off", esc(q)));
    }
    if plan.incoming {
        push("-incoming".into());
        push("defer".into());
    }
    // virtiofsd refuses legacy virtio-mmio.
    push("-global".into());
    push("virtio-mmio.force-legacy=false".into());
    for s in [
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ] {
        push(s.into());
    }
    if plan.sandbox {
        push("-sandbox".into());
        push("on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny".into());
    }
    push("-chardev".into());
    push(format!("file,id=ser0,path={}", esc(&plan.serial_log)));
    push("-serial".into());
    push("chardev:ser0".into());
    // A restore runs a guest that booted long ago: its kernel and initramfs are already in the
    // template's memory. Given `-kernel`, QEMU would still read both files (25 MB) and load the
    // kernel's ELF segments at every start, for nothing (QEMU's start-up: 17.9 -> 13.8 ms
    // without them). The boot firmware and the machine's devices are the same either way, so
    // the migrated state still matches.
    if !plan.incoming {
        push("-kernel".into());
        a.push(plan.kernel.clone().into_os_string());
        a.push("-initrd".into());
        a.push(plan.initrd.clone().into_os_string());
        a.push("-append".into());
        a.push(plan.cmdline.clone().into());
    }
    match &plan.vsock {
        Some(VsockDevice::Kernel { cid }) => {
            a.push("-device".into());
            a.push(format!("vhost-vsock-device,guest-cid={cid}").into());
        }
        Some(VsockDevice::VhostUser { socket }) => {
            a.push("-chardev".into());
            a.push(format!("socket,id=vs0,path={}", esc(socket)).into());
            a.push("-device".into());
            a.push("vhost-user-vsock-device,chardev=vs0".into());
        }
        Some(VsockDevice::Serial { socket }) => {
            a.push("-device".into());
            a.push("virtio-serial-device,max_ports=2".into());
            a.push("-chardev".into());
            a.push(format!("socket,id=agent0,path={}", esc(socket)).into());
            a.push("-device".into());
            a.push(
                format!(
                    "virtserialport,chardev=agent0,name={}",
                    clearbox_protocol::mux::PORT_NAME
                )
                .into(),
            );
        }
        None => {}
    }
    for (i, (tag, socket)) in plan.fs.iter().enumerate() {
        a.push("-chardev".into());
        a.push(format!("socket,id=fs{i},path={}", esc(socket)).into());
        a.push("-device".into());
        a.push(format!("vhost-user-fs-device,chardev=fs{i},tag={tag}").into());
    }
    // Free page reporting: the guest kernel (CONFIG_PAGE_REPORTING) hands back free 2 MiB
    // blocks, QEMU punches them out of the memfd, so memory a container freed returns to
    // the host. No inflation target is ever set: the balloon only reports.
    a.push("-device".into());
    a.push(BALLOON_DEVICE.into());
    for i in 0..plan.placeholder_nics {
        a.push("-netdev".into());
        a.push(format!("hubport,id=net{i},hubid={i}").into());
        a.push("-device".into());
        a.push(
            format!(
                "virtio-net-device,netdev=net{i},mac={}",
                crate::template::template_nic_mac(i)
            )
            .into(),
        );
    }
    for (i, n) in plan.net.iter().enumerate() {
        let vhost = if plan.vhost_net { "on" } else { "off" };
        a.push("-netdev".into());
        a.push(format!("tap,id=net{i},fd={},vhost={vhost}", n.fd).into());
        a.push("-device".into());
        let mut dev = format!("virtio-net-device,netdev=net{i},mac={}", n.mac);
        if n.mtu != 0 {
            dev.push_str(&format!(",host_mtu={}", n.mtu));
        }
        a.push(dev.into());
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(accel: Accel) -> QemuPlan {
        QemuPlan {
            accel,
            vcpus: 2,
            memory_mib: 128,
            kernel: "/k/vmlinux".into(),
            initrd: "/k/initrd.img".into(),
            cmdline: "console=ttyS0".into(),
            serial_log: "/run/a,b/console.log".into(),
            vsock: Some(VsockDevice::VhostUser {
                socket: "/run/x/vhost.sock".into(),
            }),
            fs: vec![("root".into(), "/run/x/fs-0.sock".into())],
            sandbox: true,
            tcg_tb_size_mib: Some(32),
            net: vec![NetDevice {
                fd: 9,
                mac: "0a:58:0a:58:00:02".into(),
                mtu: 1400,
            }],
            vhost_net: false,
            mem_file: None,
            qmp: None,
            incoming: false,
            placeholder_nics: 0,
        }
    }

    fn joined(p: &QemuPlan) -> String {
        args(p)
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn tcg_command() {
        let s = joined(&plan(Accel::Tcg));
        assert!(
            s.contains("-accel tcg,tb-size=32 -cpu max -smp 2 -m 128M"),
            "{s}"
        );
        assert!(s.contains("memory-backend-memfd,id=mem0,size=128M,share=on"));
        assert!(s.contains("-global virtio-mmio.force-legacy=false"));
        assert!(s.contains("-no-reboot"));
        assert!(s.contains("-sandbox on,"));
        assert!(
            s.contains("path=/run/a,,b/console.log"),
            "comma escaped: {s}"
        );
        assert!(s.contains("-chardev socket,id=vs0,path=/run/x/vhost.sock -device vhost-user-vsock-device,chardev=vs0"));
        assert!(s.contains("-chardev socket,id=fs0,path=/run/x/fs-0.sock -device vhost-user-fs-device,chardev=fs0,tag=root"));
        assert!(s.contains("-device virtio-balloon-device,free-page-reporting=on"));
        assert!(s.contains("-netdev tap,id=net0,fd=9,vhost=off -device virtio-net-device,netdev=net0,mac=0a:58:0a:58:00:02,host_mtu=1400"), "{s}");
    }

    #[test]
    fn kvm_command() {
        let mut p = plan(Accel::Kvm);
        p.vsock = Some(VsockDevice::Kernel { cid: 77 });
        p.sandbox = false;
        let s = joined(&p);
        assert!(s.contains("-accel kvm -cpu host"), "{s}");
        assert!(s.contains("-device vhost-vsock-device,guest-cid=77"));
        assert!(!s.contains("-sandbox"));
        assert!(!s.contains("vhost-user-vsock"));
    }

    #[test]
    fn serial_agent_channel() {
        let mut p = plan(Accel::Tcg);
        p.vsock = Some(VsockDevice::Serial {
            socket: "/run/x/sock/serial.sock".into(),
        });
        let s = joined(&p);
        assert!(s.contains("-device virtio-serial-device,max_ports=2 -chardev socket,id=agent0,path=/run/x/sock/serial.sock -device virtserialport,chardev=agent0,name=org.clearbox.agent.0"), "{s}");
        assert!(!s.contains("vsock"), "{s}");
    }

    #[test]
    fn template_build_and_restore() {
        let mut p = plan(Accel::Tcg);
        p.mem_file = Some("/t/memory".into());
        p.qmp = Some("/r/qmp/qmp.sock".into());
        p.net.clear();
        p.placeholder_nics = 1;
        let s = joined(&p);
        assert!(
            s.contains("memory-backend-file,id=mem0,size=128M,mem-path=/t/memory,share=on"),
            "{s}"
        );
        assert!(
            s.contains("-qmp unix:/r/qmp/qmp.sock,server=on,wait=off"),
            "{s}"
        );
        assert!(s.contains("-netdev hubport,id=net0,hubid=0 -device virtio-net-device,netdev=net0,mac=02:cb:7e:00:00:00"), "{s}");
        assert!(!s.contains("-incoming"));
        assert!(
            s.contains("-kernel /k/vmlinux -initrd /k/initrd.img -append "),
            "{s}"
        );
        p.incoming = true;
        let r = joined(&p);
        assert!(r.contains("-incoming defer"));
        assert!(
            !r.contains("-kernel") && !r.contains("-initrd") && !r.contains("-append"),
            "a restore loads no kernel: {r}"
        );
    }

    #[test]
    fn cmdline_tsc_only_under_tcg() {
        let extra = vec!["clearbox.debug=1".to_string()];
        let tcg = kernel_cmdline(Accel::Tcg, Some(2_596_096), true, &extra);
        assert!(tcg.contains("tsc_early_khz=2596096"));
        assert!(tcg.contains(" apic_bus_khz=1000000 "), "{tcg}");
        assert!(!tcg.contains("nolapic_timer"));
        assert!(tcg.contains("reboot=t"));
        assert!(tcg.contains(" init_on_alloc=1 "), "{tcg}");
        assert!(tcg.ends_with("clearbox.debug=1"));
        let no_fs = kernel_cmdline(Accel::Tcg, Some(2_596_096), false, &extra);
        assert!(!no_fs.contains("init_on_alloc"));
        let kvm = kernel_cmdline(Accel::Kvm, Some(2_596_096), true, &extra);
        assert!(!kvm.contains("tsc_early_khz"));
        assert!(!kvm.contains("apic_bus_khz"));
        assert!(!kvm.contains("init_on_alloc"));
        assert!(!needs_vhost_user_fs_guard(7));
        assert!(needs_vhost_user_fs_guard(10));
    }
}
