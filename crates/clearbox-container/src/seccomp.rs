//! runc's `-ENOSYS` for syscalls newer than a seccomp profile.
//!
//! A profile written before a syscall existed cannot mention it, so under a restrictive
//! default action (`SCMP_ACT_ERRNO` = EPERM, `SCMP_ACT_KILL`…) the new syscall fails with the
//! default instead of ENOSYS, and programs that would fall back to an older syscall on ENOSYS
//! break: glibc 2.34+ tries `clone3` for `pthread_create`/`posix_spawn` and falls back to
//! `clone` only on ENOSYS. runc (libcontainer/seccomp/patchbpf) therefore prepends a stub to
//! the compiled filter: a syscall whose number is above the highest one the profile names
//! returns ENOSYS. It does so only when the default action is not permissive (`SCMP_ACT_ALLOW`
//! / `SCMP_ACT_LOG`) and the default errno is not ENOSYS already.
//!
//! youki's libcontainer compiles and loads the spec's filter itself, with no hook for a BPF
//! patch, so clearbox gets the same answer one level up: the spec handed to libcontainer gains
//! one rule, `SCMP_ACT_ERRNO` with ENOSYS for every syscall of the native architecture whose
//! number is above the profile's highest and that the profile does not name. The result is
//! runc's for every syscall libseccomp can name (Debian 12's 2.5.4: up to number 456 on
//! x86_64; the guest kernel, 6.1, has none beyond). A syscall newer than libseccomp (the
//! host's kernel may have some) still gets the profile's default action, where runc's stub
//! answers ENOSYS.

use std::collections::HashSet;

use libseccomp::ScmpSyscall;

/// Syscall numbers probed above the profile's highest (x86_64 has ~460; x32's start at
/// 0x40000000 and are not native).
const MAX_NR: i32 = 1024;

/// Adds the ENOSYS rule to `spec.linux.seccomp` where runc's stub would apply; true when the
/// spec changed.
pub(crate) fn add_enosys_rule(spec: &mut serde_json::Value) -> bool {
    let Some(seccomp) = spec
        .pointer_mut("/linux/seccomp")
        .and_then(|s| s.as_object_mut())
    else {
        return false;
    };
    let default = seccomp
        .get("defaultAction")
        .and_then(|a| a.as_str())
        .unwrap_or_default();
    if matches!(default, "SCMP_ACT_ALLOW" | "SCMP_ACT_LOG" | "") {
        return false;
    }
    let default_errno = seccomp.get("defaultErrnoRet").and_then(|e| e.as_u64());
    if default_errno == Some(libc::ENOSYS as u64) {
        return false;
    }
    let Some(rules) = seccomp.get_mut("syscalls").and_then(|s| s.as_array_mut()) else {
        return false;
    };
    let named: HashSet<String> = rules
        .iter()
        .filter_map(|r| r.get("names").and_then(|n| n.as_array()))
        .flatten()
        .filter_map(|n| n.as_str().map(str::to_string))
        .collect();
    let newer = newer_syscalls(&named);
    if newer.is_empty() {
        return false;
    }
    rules.push(serde_json::json!({
        "names": newer,
        "action": "SCMP_ACT_ERRNO",
        "errnoRet": libc::ENOSYS,
    }));
    true
}

/// Native syscalls above the highest one in `named` that `named` does not hold; empty when
/// `named` holds no syscall libseccomp knows (runc adds no stub for such an architecture).
fn newer_syscalls(named: &HashSet<String>) -> Vec<String> {
    let Some(last) = named
        .iter()
        .filter_map(|n| ScmpSyscall::from_name(n).ok())
        .map(i32::from)
        .max()
    else {
        return Vec::new();
    };
    ((last + 1)..MAX_NR)
        .filter_map(|nr| ScmpSyscall::from(nr).get_name().ok())
        .filter(|name| !named.contains(name))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(default: &str, names: &[&str]) -> serde_json::Value {
        serde_json::json!({"linux": {"seccomp": {
            "defaultAction": default,
            "syscalls": [{"names": names, "action": "SCMP_ACT_ALLOW"}],
        }}})
    }

    fn enosys_names(v: &serde_json::Value) -> Vec<String> {
        let rules = v["linux"]["seccomp"]["syscalls"].as_array().expect("rules");
        let last = rules.last().expect("a rule");
        assert_eq!(last["errnoRet"], libc::ENOSYS);
        serde_json::from_value(last["names"].clone()).expect("names")
    }

    #[test]
    fn syscalls_newer_than_the_profile_get_enosys() {
        // The newest syscall here is openat2 (437); clone3 (435) is older, hence left to
        // the default action, as runc's stub leaves it.
        let mut v = spec("SCMP_ACT_ERRNO", &["read", "openat2"]);
        assert!(add_enosys_rule(&mut v));
        let names = enosys_names(&v);
        assert!(names.contains(&"faccessat2".to_string()), "{names:?}");
        assert!(!names.contains(&"clone3".to_string()));
        assert!(!names.contains(&"openat2".to_string()));

        let mut v = spec("SCMP_ACT_KILL", &["read", "write", "clone", "rseq"]);
        assert!(add_enosys_rule(&mut v));
        let names = enosys_names(&v);
        assert!(names.contains(&"clone3".to_string()), "{names:?}");
        assert!(!names.contains(&"rseq".to_string()));
    }

    #[test]
    fn permissive_or_enosys_defaults_get_no_rule() {
        for d in ["SCMP_ACT_ALLOW", "SCMP_ACT_LOG"] {
            let mut v = spec(d, &["read"]);
            assert!(!add_enosys_rule(&mut v));
        }
        let mut v = spec("SCMP_ACT_ERRNO", &["read"]);
        v["linux"]["seccomp"]["defaultErrnoRet"] = libc::ENOSYS.into();
        assert!(!add_enosys_rule(&mut v));
        let mut v = spec("SCMP_ACT_ERRNO", &["no_such_syscall"]);
        assert!(!add_enosys_rule(&mut v));
        let mut none = serde_json::json!({"linux": {}});
        assert!(!add_enosys_rule(&mut none));
    }
}
