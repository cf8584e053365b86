//! `clearbox features`: what this runtime supports, in the runtime-spec "features" JSON shape.

use anyhow::Result;
use clearbox_core::OCI_VERSION;

pub fn run() -> Result<()> {
    let caps: Vec<String> = caps_list();
    let v = serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": OCI_VERSION,
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": [
            "async", "atime", "bind", "defaults", "dev", "diratime", "dirsync", "exec",
            "iversion", "lazytime", "loud", "mand", "noatime", "nodev", "nodiratime", "noexec",
            "noiversion", "nolazytime", "nomand", "norelatime", "nostrictatime", "nosuid",
            "nosymfollow", "private", "rbind", "relatime", "remount", "ro", "rprivate", "rshared",
            "rslave", "runbindable", "rw", "shared", "silent", "slave", "strictatime", "suid",
            "symfollow", "sync", "unbindable"
        ],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"],
            "capabilities": caps,
            "cgroup": {"v1": true, "v2": true, "systemd": false, "systemdUser": false},
            "seccomp": {
                "enabled": true,
                "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS",
                            "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_NOTIFY", "SCMP_ACT_TRACE",
                            "SCMP_ACT_TRAP"],
                "operators": ["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT",
                              "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"],
                "archs": ["SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32"]
            },
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false}
        },
        "annotations": {
            "io.clearbox.isolation": "vm, namespaces or fly"
        }
    });
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

fn caps_list() -> Vec<String> {
    use oci_spec::runtime::Capability as C;
    [
        C::AuditControl,
        C::AuditRead,
        C::AuditWrite,
        C::BlockSuspend,
        C::Bpf,
        C::CheckpointRestore,
        C::Chown,
        C::DacOverride,
        C::DacReadSearch,
        C::Fowner,
        C::Fsetid,
        C::IpcLock,
        C::IpcOwner,
        C::Kill,
        C::Lease,
        C::LinuxImmutable,
        C::MacAdmin,
        C::MacOverride,
        C::Mknod,
        C::NetAdmin,
        C::NetBindService,
        C::NetBroadcast,
        C::NetRaw,
        C::Perfmon,
        C::Setfcap,
        C::Setgid,
        C::Setpcap,
        C::Setuid,
        C::SysAdmin,
        C::SysBoot,
        C::SysChroot,
        C::SysModule,
        C::SysNice,
        C::SysPacct,
        C::SysPtrace,
        C::SysRawio,
        C::SysResource,
        C::SysTime,
        C::SysTtyConfig,
        C::Syslog,
        C::WakeAlarm,
    ]
    .iter()
    .map(|c| format!("CAP_{c}"))
    .collect()
}
