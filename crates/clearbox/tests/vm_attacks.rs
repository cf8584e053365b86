//! Attacks from inside isolation=vm containers (issue #10), through the real binary and real
//! VMs, as an unprivileged container (uid 1000, no capabilities) and as a privileged one (every
//! capability, no seccomp): the agent's vsock port, every agent RPC, io_uring, and every way to
//! write a read-only volume or a read-only rootfs (direct write, remount, a second mount of the
//! virtio-fs tag, `..` and symlink traversal, hard links). Each attack must fail, and the host
//! files must be unchanged. Needs root and the guest assets, like `vm.rs`.

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// Every capability (what `--privileged` grants).
const ALL_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// A change to a bundle's config.json.
type Tweak = fn(&mut serde_json::Value);

/// The same capability list in every set.
fn set_capabilities(v: &mut serde_json::Value, caps: serde_json::Value) {
    for set in [
        "bounding",
        "effective",
        "permitted",
        "inheritable",
        "ambient",
    ] {
        v["process"]["capabilities"][set] = caps.clone();
    }
}

/// Privileged: every capability, no seccomp, nothing masked or read-only in /proc and /sys.
fn privileged(v: &mut serde_json::Value) {
    let caps: serde_json::Value = ALL_CAPS.iter().map(|c| c.to_string()).collect();
    set_capabilities(v, caps);
    v["process"]["noNewPrivileges"] = false.into();
    let linux = v["linux"].as_object_mut().expect("linux");
    for k in ["seccomp", "maskedPaths", "readonlyPaths"] {
        linux.remove(k);
    }
}

/// Unprivileged: uid/gid 1000, no capability at all, no_new_privs.
fn unprivileged(v: &mut serde_json::Value) {
    v["process"]["user"] = serde_json::json!({"uid": 1000, "gid": 1000});
    set_capabilities(v, serde_json::json!([]));
    v["process"]["noNewPrivileges"] = true.into();
}

/// A bundle with the probe at /bin/probe.
fn probe_bundle(
    env: &Env,
    name: &str,
    script: &str,
    tweak: impl FnOnce(&mut serde_json::Value),
) -> PathBuf {
    let b = env.bundle(name, &["sh", "-c", script], tweak);
    std::fs::copy(probe(), b.join("rootfs/bin/probe")).expect("copy probe");
    b
}

fn run_in_vm(env: &Env, bundle: &Path, id: &str) -> String {
    let o = env.run(&[
        "--isolation",
        "vm",
        "run",
        "--bundle",
        bundle.to_str().expect("utf-8 bundle path"),
        id,
    ]);
    let out = stdout(&o);
    assert!(
        o.status.success(),
        "container {id} failed: {:?}\nstdout:\n{out}\nstderr:\n{}",
        o.status,
        stderr(&o)
    );
    assert!(env.leftover_ids().is_empty(), "run left state");
    out
}

/// Every vsock attempt was refused at socket(): no socket, no connection, no RPC answered.
fn assert_vsock_refused(out: &str, who: &str) {
    let vsock: Vec<&str> = out.lines().filter(|l| l.starts_with("vsock ")).collect();
    // 3 socket types x 6 CIDs x 9 ports.
    assert_eq!(vsock.len(), 162, "{who}: probe output:\n{out}");
    for l in &vsock {
        assert!(
            l.ends_with(" socket=EACCES") && !l.contains("OPEN"),
            "{who}: vsock not refused: {l}"
        );
    }
    let rpc: Vec<&str> = out.lines().filter(|l| l.starts_with("rpc ")).collect();
    assert_eq!(rpc.len(), 3, "{who}: probe output:\n{out}");
    for l in &rpc {
        assert!(
            l.contains("all-refused socket=EACCES")
                && !l.contains("CONNECTED")
                && !l.contains("ANSWERED"),
            "{who}: agent RPC not refused: {l}"
        );
    }
    assert!(
        out.lines().any(|l| l == "io_uring_setup=EPERM"),
        "{who}: io_uring not refused:\n{out}"
    );
}

#[test]
fn containers_cannot_reach_the_agent_or_any_vsock_peer() {
    let env = vm_env();
    let script = "probe vsock; probe rpc; probe io_uring; grep -E '^(Uid|CapEff|Seccomp):' /proc/self/status";
    // The privileged one has no seccomp in its spec and is still filtered: the agent's guard.
    let cases: [(&str, Tweak, [&str; 3]); 2] = [
        (
            "unpriv",
            unprivileged,
            ["Uid:\t1000", "CapEff:\t0000000000000000", "Seccomp:\t2"],
        ),
        (
            "priv",
            privileged,
            ["Uid:\t0", "CapEff:\t000001ffffffffff", "Seccomp:\t2"],
        ),
    ];
    for (name, tweak, expected) in cases {
        let b = probe_bundle(&env, name, script, |v| {
            v["root"]["readonly"] = false.into();
            tweak(v);
        });
        let out = run_in_vm(&env, &b, &format!("attack-{name}"));
        for line in expected {
            assert!(out.contains(line), "{name}: no {line:?} in:\n{out}");
        }
        assert_vsock_refused(&out, name);
    }
}

/// The attack script: every route to a write, each printing `WROTE <route>` if it worked and
/// `SECRET <route>` if a file outside the share was read.
const WRITE_ATTACKS: &str = r#"
w() { route=$1; shift; if "$@" 2>/dev/null; then echo "WROTE $route"; fi; }
r() { route=$1; shift; if cat "$@" 2>/dev/null | grep -q host-only-secret; then echo "SECRET $route"; fi; }
w direct-volume sh -c 'echo x > /data/f'
w direct-volume-new sh -c 'echo x > /data/new'
w direct-rootfs sh -c 'echo x > /bin/victim'
w rm-volume rm -f /data/f
w remount-volume sh -c 'mount -o remount,rw /data && echo x > /data/f'
w remount-volume-new sh -c 'mount -o remount,rw,bind /data && echo x > /data/new2'
w remount-rootfs sh -c 'mount -o remount,rw / && echo x > /bin/victim2'
mkdir -p /mnt/tag
if mount -t virtiofs clearbox /mnt/tag; then echo "TAG mounted"; else echo "TAG refused"; fi
w tag-volume sh -c 'echo x > /mnt/tag/mounts/VOL/f'
w tag-volume-new sh -c 'echo x > /mnt/tag/mounts/VOL/new3'
w tag-rootfs sh -c 'echo x > /mnt/tag/rootfs/bin/victim3'
w tag-remount sh -c 'mount -o remount,rw /mnt/tag && echo x > /mnt/tag/mounts/VOL/f'
w tag-mkdir mkdir /mnt/tag/mounts/VOL/dir
w tag-chmod chmod 777 /mnt/tag/mounts/VOL/f
w tag-rename mv /mnt/tag/mounts/VOL/f /mnt/tag/mounts/VOL/g
w hardlink-out-of-volume ln /data/f /rw/link
w hardlink-via-tag ln /mnt/tag/mounts/VOL/f /mnt/tag/mounts/RW/link2
w hardlink-rootfs ln /mnt/tag/rootfs/bin/busybox /mnt/tag/mounts/RW/link3
w symlink-into-volume sh -c 'ln -s /mnt/tag/mounts/VOL/f /rw/sym && echo x > /rw/sym'
w dotdot-volume sh -c 'echo x > /mnt/tag/mounts/RW/../VOL/f'
ln -s ../../../../../../../.. /rw/up 2>/dev/null
r symlink-up /rw/up/SECRET_PATH
r dotdot-tag /mnt/tag/../SECRET_NAME /mnt/tag/../../SECRET_NAME /mnt/tag/mounts/../../SECRET_NAME
r dotdot-host /mnt/tag/rootfs/../../../../../../../..SECRET_PATH
if grep -rqs host-only-secret /mnt/tag; then echo "SECRET whole-share"; fi
echo DONE
"#;

#[test]
fn read_only_volumes_and_rootfs_cannot_be_written_from_a_privileged_guest() {
    let env = vm_env();
    let ro = env.tmp.path().join("ro-volume");
    let rw = env.tmp.path().join("rw-volume");
    std::fs::create_dir_all(&ro).unwrap();
    std::fs::create_dir_all(&rw).unwrap();
    std::fs::write(ro.join("f"), "original\n").unwrap();
    // Outside the export (next to the bundle): must never be read from the guest.
    let secret = env.tmp.path().join("secret.txt");
    std::fs::write(&secret, "host-only-secret\n").unwrap();
    let script = WRITE_ATTACKS
        .replace("SECRET_PATH", secret.to_str().unwrap())
        .replace("SECRET_NAME", "secret.txt");
    let b = env.bundle("ro", &["sh", "-c", "true"], |v| {
        privileged(v);
        v["root"]["readonly"] = true.into();
        let m = v["mounts"].as_array_mut().unwrap();
        m.push(serde_json::json!({"destination": "/mnt", "type": "tmpfs", "source": "tmpfs"}));
        m.push(serde_json::json!({"destination": "/data", "type": "bind",
            "source": ro, "options": ["rbind", "ro"]}));
        m.push(serde_json::json!({"destination": "/rw", "type": "bind",
            "source": rw, "options": ["rbind", "rw"]}));
    });
    // The share numbers mounts by their index in the spec.
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.join("config.json")).unwrap()).unwrap();
    let mounts = cfg["mounts"].as_array().unwrap();
    let index = |dst: &str| {
        mounts
            .iter()
            .position(|m| m["destination"] == dst)
            .unwrap()
            .to_string()
    };
    let script = script
        .replace("VOL", &index("/data"))
        .replace("RW", &index("/rw"));
    let mut cfg = cfg;
    cfg["process"]["args"] = serde_json::json!(["sh", "-c", script]);
    std::fs::write(b.join("config.json"), serde_json::to_vec(&cfg).unwrap()).unwrap();
    // Mount points made here, so the rootfs must come out exactly as it went in.
    for d in ["mnt", "data", "rw"] {
        std::fs::create_dir_all(b.join("rootfs").join(d)).unwrap();
    }
    let rootfs_before = listing(&b.join("rootfs"));

    let out = run_in_vm(&env, &b, "attack-ro");
    assert!(out.contains("DONE"), "{out}");
    // The tag can be mounted again (a privileged guest can): the host must still refuse.
    assert!(out.contains("TAG mounted"), "{out}");
    let broke: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("WROTE") || l.starts_with("SECRET"))
        .collect();
    assert!(broke.is_empty(), "attacks that worked: {broke:#?}\n{out}");
    // And on the host: nothing changed.
    assert_eq!(std::fs::read_to_string(ro.join("f")).unwrap(), "original\n");
    assert_eq!(listing(&ro), vec!["f".to_string()]);
    assert_eq!(
        std::fs::metadata(ro.join("f"))
            .map(|m| std::os::unix::fs::MetadataExt::nlink(&m))
            .unwrap(),
        1,
        "a hard link to the read-only file was made"
    );
    assert_eq!(listing(&b.join("rootfs")), rootfs_before, "rootfs changed");
    assert!(!rw.join("link").exists() && !rw.join("link2").exists() && !rw.join("link3").exists());
}

/// Relative paths of everything below `dir`, sorted (symlinks not followed).
fn listing(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).expect("read dir").flatten() {
            let p = e.path();
            out.push(
                p.strip_prefix(base)
                    .expect("below base")
                    .to_string_lossy()
                    .into_owned(),
            );
            if e.file_type().expect("file type").is_dir() {
                walk(base, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// The "shocker" escape on virtio-fs (found by a red-team run): a container granted
/// CAP_DAC_READ_SEARCH takes the FUSE handle of a file on the share, rewrites its node id to
/// the FUSE root (the export's root, which holds every container's mounts of the VM) and opens
/// it with open_by_handle_at. The agent's guard refuses the call in every container.
#[test]
fn the_export_root_cannot_be_opened_by_a_forged_handle() {
    let env = vm_env();
    let vol = env.tmp.path().join("handle-volume");
    std::fs::create_dir_all(&vol).unwrap();
    std::fs::write(vol.join("f"), "original\n").unwrap();
    let b = probe_bundle(&env, "handle", "probe handle-root /v/f", |v| {
        set_capabilities(v, serde_json::json!(["CAP_DAC_READ_SEARCH"]));
        v["mounts"].as_array_mut().unwrap().push(serde_json::json!({
            "destination": "/v", "type": "bind", "source": vol, "options": ["rbind", "rw"]}));
    });
    std::fs::create_dir_all(b.join("rootfs/v")).unwrap();
    let out = run_in_vm(&env, &b, "attack-handle");
    assert!(out.contains("handle type="), "no FUSE handle taken:\n{out}");
    assert!(
        out.contains("open_by_handle_at=EPERM"),
        "not refused:\n{out}"
    );
    assert!(!out.contains("OPENED") && !out.contains("WROTE"), "{out}");
}

/// What a guest could still plant in its export (a privileged guest drives virtio-fs as it
/// likes) must never lead the host: symlinks left in a container's share where the next
/// container with the same id gets its bind mounts. The create clears the leftover; the
/// victim outside is neither truncated nor mounted over, and nothing is left after the run.
#[test]
fn a_planted_share_is_cleared_never_followed() {
    let env = vm_env();
    let src = env.tmp.path().join("bind-source");
    std::fs::write(&src, "volume\n").unwrap();
    let victim = env.tmp.path().join("victim");
    std::fs::write(&victim, "host data\n").unwrap();
    let victim_dir = env.tmp.path().join("victim-dir");
    std::fs::create_dir_all(&victim_dir).unwrap();
    let b = env.bundle("planted", &["true"], |v| {
        v["mounts"].as_array_mut().unwrap().push(serde_json::json!({
            "destination": "/etc/planted", "type": "bind", "source": src,
            "options": ["rbind", "rw"]}));
    });
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.join("config.json")).unwrap()).unwrap();
    let index = cfg["mounts"].as_array().unwrap().len() - 1;
    // Where this id's share lives: from a first container's record.
    let id = "planted";
    let o = env.run(&[
        "--isolation",
        "vm",
        "create",
        "--bundle",
        b.to_str().unwrap(),
        id,
    ]);
    assert!(o.status.success(), "create: {}", stderr(&o));
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(env.root.join(id).join("vm-box.json")).expect("record"),
    )
    .unwrap();
    let base = PathBuf::from(record["base"].as_str().unwrap());
    let shared = PathBuf::from(record["shared"].as_str().unwrap());
    let o = env.run(&["delete", "--force", id]);
    assert!(o.status.success(), "delete: {}", stderr(&o));
    assert!(!base.exists(), "the share outlived its container");
    // The plant: the file bind's mount point, and a directory, pointing outside.
    std::fs::create_dir_all(shared.join("mounts")).unwrap();
    std::os::unix::fs::symlink(&victim, shared.join("mounts").join(index.to_string())).unwrap();
    std::os::unix::fs::symlink(&victim_dir, shared.join("rootfs")).unwrap();
    std::fs::write(shared.join("PLANTED"), "x").unwrap();

    run_in_vm(&env, &b, id);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "host data\n");
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let tmp = env.tmp.path().to_str().unwrap();
    assert!(
        !mountinfo.lines().any(|l| l.contains(tmp)),
        "a mount was made outside the share:\n{mountinfo}"
    );
    assert!(
        listing(&victim_dir).is_empty(),
        "the victim directory got entries"
    );
    assert!(!base.exists(), "the share outlived its container");
}
