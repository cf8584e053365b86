//! A container's cgroup statistics: the counters libcgroups reads, in runc's JSON shape, and
//! the short usage summary (`Usage`) the CLI and the shim report.

use std::path::Path;

use crate::Error;

/// The `oom_kill` counter of a cgroup (v2 `memory.events`, v1 `memory.oom_control`).
pub fn oom_kills(cgroup_path: &Path) -> Option<u64> {
    let rel = cgroup_path.strip_prefix("/").unwrap_or(cgroup_path);
    let file = match libcgroups::common::get_cgroup_setup().ok()? {
        libcgroups::common::CgroupSetup::Unified => {
            Path::new(libcgroups::common::DEFAULT_CGROUP_ROOT)
                .join(rel)
                .join("memory.events")
        }
        _ => {
            libcgroups::v1::util::get_subsystem_mount_point(&libcgroups::v1::ControllerType::Memory)
                .ok()?
                .join(rel)
                .join("memory.oom_control")
        }
    };
    flat_keyed(&std::fs::read_to_string(file).ok()?, "oom_kill")
}

/// libcgroups' statistics in runc's JSON shape (runc's `types.Stats`).
pub fn runc_stats(s: &libcgroups::stats::Stats, oom_kill: Option<u64>) -> serde_json::Value {
    use serde_json::json;
    let mem = |d: &libcgroups::stats::MemoryData| json!({"limit": d.limit, "usage": d.usage, "max": d.max_usage, "failcnt": d.fail_count});
    let blkio = |list: &[libcgroups::stats::BlkioDeviceStat]| {
        list.iter()
            .map(|e| {
                json!({"major": e.major, "minor": e.minor,
                       "op": e.op_type.clone().unwrap_or_default(), "value": e.value})
            })
            .collect::<Vec<_>>()
    };
    let u = &s.cpu.usage;
    let mut memory = json!({
        "cache": s.memory.cache,
        "usage": mem(&s.memory.memory),
        "swap": mem(&s.memory.memswap),
        "kernel": mem(&s.memory.kernel),
        "kernelTCP": mem(&s.memory.kernel_tcp),
        "raw": s.memory.stats,
    });
    if let (Some(n), Some(m)) = (oom_kill, memory.as_object_mut()) {
        m.insert("oom_kill".into(), json!(n));
    }
    let hugetlb: serde_json::Map<String, serde_json::Value> = s
        .hugetlb
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                json!({"usage": v.usage, "max": v.max_usage, "failcnt": v.fail_count}),
            )
        })
        .collect();
    json!({
        "cpu": {
            "usage": {
                "total": u.usage_total,
                "percpu": u.per_core_usage_total,
                "percpu_kernel": u.per_core_usage_kernel,
                "percpu_user": u.per_core_usage_user,
                "kernel": u.usage_kernel,
                "user": u.usage_user,
            },
            "throttling": {
                "periods": s.cpu.throttling.periods,
                "throttledPeriods": s.cpu.throttling.throttled_periods,
                "throttledTime": s.cpu.throttling.throttled_time,
            },
        },
        "memory": memory,
        "pids": {"current": s.pids.current, "limit": s.pids.limit},
        "blkio": {
            "ioServiceBytesRecursive": blkio(&s.blkio.service_bytes),
            "ioServicedRecursive": blkio(&s.blkio.serviced),
            "ioQueueRecursive": blkio(&s.blkio.queued),
            "ioServiceTimeRecursive": blkio(&s.blkio.service_time),
            "ioWaitTimeRecursive": blkio(&s.blkio.wait_time),
            "ioMergedRecursive": blkio(&s.blkio.merged),
            "ioTimeRecursive": blkio(&s.blkio.time),
            "sectorsRecursive": blkio(&s.blkio.sectors),
        },
        "hugetlb": hugetlb,
    })
}

/// Resource usage of a container's cgroup in fixed units, whatever the cgroup version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub cpu_usage_usec: u64,
    pub cpu_user_usec: u64,
    pub cpu_system_usec: u64,
    pub memory_usage_bytes: u64,
    /// 0 = unlimited.
    pub memory_limit_bytes: u64,
    pub pids_current: u64,
    /// Processes of the cgroup killed by the OOM killer so far (`oom_kill`).
    pub oom_kill: u64,
}

/// Any limit from here up means "no limit" (v2 `max` parses as u64::MAX, v1 reports the
/// largest page-aligned i64).
const UNLIMITED_FROM: u64 = 1 << 62;
/// cgroup v1 `cpuacct.stat` counts USER_HZ (100 on every Linux architecture) ticks.
const USEC_PER_TICK: u64 = 10_000;

pub(crate) fn usage_from(stats: &libcgroups::stats::Stats, unified: bool) -> Usage {
    let cpu = &stats.cpu.usage;
    let (total, user, system) = if unified {
        // cpu.stat: microseconds.
        (cpu.usage_total, cpu.usage_user, cpu.usage_kernel)
    } else {
        // cpuacct.usage: nanoseconds; cpuacct.stat: ticks.
        (
            cpu.usage_total / 1000,
            cpu.usage_user.saturating_mul(USEC_PER_TICK),
            cpu.usage_kernel.saturating_mul(USEC_PER_TICK),
        )
    };
    let limit = stats.memory.memory.limit;
    Usage {
        cpu_usage_usec: total,
        cpu_user_usec: user,
        cpu_system_usec: system,
        memory_usage_bytes: stats.memory.memory.usage,
        memory_limit_bytes: if limit >= UNLIMITED_FROM { 0 } else { limit },
        pids_current: stats.pids.current,
        oom_kill: 0,
    }
}

pub(crate) fn flat_keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// The numbers of a cgroup v2 directory, read directly: libcgroups' v2 stats fail as a whole
/// when a file they also read is missing (e.g. `cpu.pressure` on kernels without PSI, such
/// as the clearbox guest kernel).
pub(crate) fn usage_v2(dir: &Path) -> Result<Usage, Error> {
    let cpu = std::fs::read_to_string(dir.join("cpu.stat"))
        .map_err(|e| Error::io(format!("read {}", dir.join("cpu.stat").display()), e))?;
    Ok(Usage {
        cpu_usage_usec: flat_keyed(&cpu, "usage_usec").unwrap_or(0),
        cpu_user_usec: flat_keyed(&cpu, "user_usec").unwrap_or(0),
        cpu_system_usec: flat_keyed(&cpu, "system_usec").unwrap_or(0),
        memory_usage_bytes: read_u64(&dir.join("memory.current")).unwrap_or(0),
        // "max" does not parse: unlimited = 0.
        memory_limit_bytes: read_u64(&dir.join("memory.max")).unwrap_or(0),
        pids_current: read_u64(&dir.join("pids.current")).unwrap_or_else(|| {
            std::fs::read_to_string(dir.join("cgroup.procs"))
                .map(|s| s.lines().count() as u64)
                .unwrap_or(0)
        }),
        oom_kill: std::fs::read_to_string(dir.join("memory.events"))
            .ok()
            .and_then(|t| flat_keyed(&t, "oom_kill"))
            .unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_units_follow_the_cgroup_version() {
        let mut s = libcgroups::stats::Stats::default();
        s.cpu.usage.usage_total = 5_000_000;
        s.cpu.usage.usage_user = 3;
        s.cpu.usage.usage_kernel = 1;
        s.memory.memory.usage = 4096;
        s.memory.memory.limit = u64::MAX;
        s.pids.current = 2;
        let v2 = usage_from(&s, true);
        assert_eq!(
            (v2.cpu_usage_usec, v2.cpu_user_usec, v2.memory_limit_bytes),
            (5_000_000, 3, 0)
        );
        let v1 = usage_from(&s, false);
        assert_eq!(
            (v1.cpu_usage_usec, v1.cpu_user_usec, v1.cpu_system_usec),
            (5_000, 30_000, 10_000)
        );
        s.memory.memory.limit = 1 << 20;
        assert_eq!(
            flat_keyed("usage_usec 42\nuser_usec 40\n", "user_usec"),
            Some(40)
        );
        assert_eq!(flat_keyed("usage_usec 42\n", "nr_periods"), None);
        assert_eq!(usage_from(&s, true).memory_limit_bytes, 1 << 20);
        assert_eq!(usage_from(&s, true).pids_current, 2);
    }
    #[test]
    fn stats_have_runc_shape() {
        let mut s = libcgroups::stats::Stats::default();
        s.cpu.usage.usage_total = 7;
        s.memory.memory.limit = 1 << 20;
        s.pids.current = 3;
        let v = runc_stats(&s, Some(2));
        assert_eq!(v["cpu"]["usage"]["total"], 7);
        assert_eq!(v["memory"]["usage"]["limit"], 1 << 20);
        assert_eq!(v["memory"]["oom_kill"], 2);
        assert_eq!(v["pids"]["current"], 3);
        assert!(v["cpu"]["throttling"].get("throttledPeriods").is_some());
    }
    #[test]
    fn v2_files_are_read_without_psi() {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            d.path().join("cpu.stat"),
            "usage_usec 900\nuser_usec 600\nsystem_usec 300\n",
        )
        .expect("write");
        std::fs::write(d.path().join("memory.current"), "8192\n").expect("write");
        std::fs::write(d.path().join("memory.max"), "max\n").expect("write");
        std::fs::write(d.path().join("cgroup.procs"), "1\n2\n").expect("write");
        std::fs::write(
            d.path().join("memory.events"),
            "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\noom_group_kill 0\n",
        )
        .expect("write");
        let u = usage_v2(d.path()).expect("usage");
        assert_eq!(
            u,
            Usage {
                cpu_usage_usec: 900,
                cpu_user_usec: 600,
                cpu_system_usec: 300,
                memory_usage_bytes: 8192,
                memory_limit_bytes: 0,
                pids_current: 2,
                oom_kill: 1,
            }
        );
        assert!(usage_v2(&d.path().join("missing")).is_err());
    }
}
