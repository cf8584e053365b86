//! `Stats`: the backend's statistics (runc's `events --stats` shape, read from the guest's
//! cgroup for `vm` containers) as containerd's cgroup v2 metrics, which `ctr task metrics`
//! and the CRI plugin decode.

use containerd_shim::protos::cgroups_v2::metrics::{
    CPUStat, MemoryEvents, MemoryStat, Metrics, PidsStat,
};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::{Message, MessageField};

/// The type URL containerd's typeurl registry knows the v2 metrics by.
pub const TYPE_URL: &str = "io.containerd.cgroups.v2.Metrics";

/// `stats` as cgroup v2 metrics.
pub fn from_stats(stats: &serde_json::Value) -> Metrics {
    let n = |p: &str| stats.pointer(p).and_then(|v| v.as_u64()).unwrap_or(0);
    let mut m = Metrics::new();
    let mut cpu = CPUStat::new();
    // runc's shape counts nanoseconds.
    cpu.usage_usec = n("/cpu/usage/total") / 1000;
    cpu.user_usec = n("/cpu/usage/user") / 1000;
    cpu.system_usec = n("/cpu/usage/kernel") / 1000;
    cpu.nr_periods = n("/cpu/throttling/periods");
    cpu.nr_throttled = n("/cpu/throttling/throttledPeriods");
    cpu.throttled_usec = n("/cpu/throttling/throttledTime") / 1000;
    m.cpu = MessageField::some(cpu);
    let mut mem = MemoryStat::new();
    mem.usage = n("/memory/usage/usage");
    mem.usage_limit = n("/memory/usage/limit");
    mem.max_usage = n("/memory/usage/max");
    mem.swap_usage = n("/memory/swap/usage");
    mem.swap_limit = n("/memory/swap/limit");
    m.memory = MessageField::some(mem);
    let mut pids = PidsStat::new();
    pids.current = n("/pids/current");
    pids.limit = n("/pids/limit");
    m.pids = MessageField::some(pids);
    if let Some(oom_kill) = oom_kills(stats) {
        let mut ev = MemoryEvents::new();
        ev.oom_kill = oom_kill;
        m.memory_events = MessageField::some(ev);
    }
    m
}

/// The OOM kills counted so far, when the backend reports them (`memory.oom_kill`).
pub fn oom_kills(stats: &serde_json::Value) -> Option<u64> {
    stats.pointer("/memory/oom_kill").and_then(|v| v.as_u64())
}

pub fn to_any(m: &Metrics) -> Result<Any, String> {
    let mut any = Any::new();
    any.type_url = TYPE_URL.to_string();
    any.value = m
        .write_to_bytes()
        .map_err(|e| format!("encode metrics: {e}"))?;
    Ok(any)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runc_shape_to_v2_metrics() {
        let s = serde_json::json!({
            "cpu": {"usage": {"total": 5_000_000, "user": 3_000_000, "kernel": 2_000_000}},
            "memory": {"usage": {"usage": 1234, "limit": 4096}, "oom_kill": 2},
            "pids": {"current": 3},
        });
        let m = from_stats(&s);
        assert_eq!(m.cpu.usage_usec, 5000);
        assert_eq!(m.cpu.user_usec, 3000);
        assert_eq!(m.memory.usage, 1234);
        assert_eq!(m.memory.usage_limit, 4096);
        assert_eq!(m.pids.current, 3);
        assert_eq!(m.memory_events.oom_kill, 2);
        let any = to_any(&m).unwrap();
        assert_eq!(any.type_url, TYPE_URL);
        assert_eq!(Metrics::parse_from_bytes(&any.value).unwrap(), m);
    }

    #[test]
    fn no_oom_counter_no_memory_events() {
        let m = from_stats(&serde_json::json!({"pids": {"current": 1}}));
        assert!(m.memory_events.is_none());
    }
}
