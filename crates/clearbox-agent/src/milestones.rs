//! Boot milestones in CLOCK_BOOTTIME nanoseconds (time since the kernel booted).

use std::sync::atomic::{AtomicU64, Ordering};

use clearbox_protocol::pb::agent::BootMilestones;
use nix::time::{clock_gettime, ClockId};

static AGENT_START: AtomicU64 = AtomicU64::new(0);
static MOUNTS_DONE: AtomicU64 = AtomicU64::new(0);
static LISTENING: AtomicU64 = AtomicU64::new(0);
static FIRST_REQUEST: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Clone, Copy)]
pub enum Milestone {
    AgentStart,
    MountsDone,
    Listening,
    FirstRequest,
}

pub fn boottime_ns() -> u64 {
    match clock_gettime(ClockId::CLOCK_BOOTTIME) {
        Ok(ts) => {
            let secs = u64::try_from(ts.tv_sec()).unwrap_or(0);
            let nsec = u64::try_from(ts.tv_nsec()).unwrap_or(0);
            secs.saturating_mul(1_000_000_000).saturating_add(nsec)
        }
        Err(_) => 0,
    }
}

fn slot(m: Milestone) -> &'static AtomicU64 {
    match m {
        Milestone::AgentStart => &AGENT_START,
        Milestone::MountsDone => &MOUNTS_DONE,
        Milestone::Listening => &LISTENING,
        Milestone::FirstRequest => &FIRST_REQUEST,
    }
}

/// Records `m` now, unless it was recorded before (first time wins).
pub fn mark(m: Milestone) {
    let now = boottime_ns().max(1);
    let _ = slot(m).compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
}

pub fn snapshot() -> BootMilestones {
    let mut b = BootMilestones::new();
    b.agent_start_ns = AGENT_START.load(Ordering::Relaxed);
    b.mounts_done_ns = MOUNTS_DONE.load(Ordering::Relaxed);
    b.listening_ns = LISTENING.load(Ordering::Relaxed);
    b.first_request_ns = FIRST_REQUEST.load(Ordering::Relaxed);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_mark_wins() {
        mark(Milestone::FirstRequest);
        let first = snapshot().first_request_ns;
        assert!(first > 0);
        std::thread::sleep(std::time::Duration::from_millis(2));
        mark(Milestone::FirstRequest);
        assert_eq!(snapshot().first_request_ns, first);
    }
}
