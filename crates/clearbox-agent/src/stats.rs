//! Whole-guest resource usage from /proc (containers: `clearbox_container::namespaces::usage`).

use clearbox_protocol::pb::agent::StatsResponse;

/// All numeric entries of /proc.
pub fn all_pids() -> Vec<i32> {
    let mut pids: Vec<i32> = std::fs::read_dir("/proc")
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    pids.sort_unstable();
    pids
}

/// USER_HZ is 100 on every Linux architecture clearbox targets.
const USER_HZ: u64 = 100;

fn parse_proc_stat_cpu(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let user = f.first()? + f.get(1)?;
    let system = f.get(2)? + f.get(5).unwrap_or(&0) + f.get(6).unwrap_or(&0);
    let to_usec = 1_000_000 / USER_HZ;
    Some((user * to_usec, system * to_usec))
}

fn meminfo_kb(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Whole-guest numbers from /proc.
pub fn guest() -> std::io::Result<StatsResponse> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let mem = std::fs::read_to_string("/proc/meminfo")?;
    let mut r = StatsResponse::new();
    if let Some((user, system)) = parse_proc_stat_cpu(&stat) {
        r.cpu_user_usec = user;
        r.cpu_system_usec = system;
        r.cpu_usage_usec = user + system;
    }
    let total = meminfo_kb(&mem, "MemTotal:").unwrap_or(0);
    let avail = meminfo_kb(&mem, "MemAvailable:").unwrap_or(total);
    r.memory_usage_bytes = total.saturating_sub(avail) * 1024;
    r.memory_limit_bytes = total * 1024;
    r.pids_current = all_pids().len() as u64;
    r.source = "proc".into();
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat() {
        let s = "cpu  100 5 50 1000 0 2 3 0 0 0\ncpu0 1 2 3 4\n";
        assert_eq!(parse_proc_stat_cpu(s), Some((1_050_000, 550_000)));
    }

    #[test]
    fn guest_stats_are_nonzero_here() {
        let r = guest().expect("stats");
        assert!(r.memory_limit_bytes > 0 && r.pids_current > 0);
    }
}
