//! `clearbox events`: runc's event stream. `--stats` prints one statistics event; otherwise a
//! statistics event every `--interval` and an `oom` event as soon as the container's OOM
//! counter grows, until the container stops.

use std::time::{Duration, Instant};

use anyhow::Result;
use clearbox_core::{Error, Runtime};

use crate::cli::Events;

/// How often the OOM counter is looked at between two statistics events.
const OOM_POLL: Duration = Duration::from_millis(200);

pub fn run(rt: &Runtime<'_>, a: Events) -> Result<()> {
    let mut ooms: Option<u64> = None;
    let mut next_stats = Instant::now();
    loop {
        let data = match rt.stats(&a.container_id) {
            Ok(d) => d,
            // The container ended while we were watching: that ends the stream, after the OOM
            // kill that may have ended it.
            Err(Error::NotRunning) if !a.stats => {
                let last = rt.last_stats(&a.container_id);
                if let (Some(before), Some(now)) = (ooms, last.as_ref().and_then(oom_count)) {
                    for _ in before..now {
                        print_event("oom", &a.container_id, None);
                    }
                }
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        if a.stats {
            print_event("stats", &a.container_id, Some(data));
            return Ok(());
        }
        let now_ooms = oom_count(&data);
        if let (Some(before), Some(now)) = (ooms, now_ooms) {
            for _ in before..now {
                print_event("oom", &a.container_id, None);
            }
        }
        ooms = now_ooms.or(ooms);
        if Instant::now() >= next_stats {
            print_event("stats", &a.container_id, Some(data));
            next_stats = Instant::now() + a.interval;
        }
        let wait = next_stats
            .saturating_duration_since(Instant::now())
            .min(OOM_POLL);
        std::thread::sleep(wait);
    }
}

/// The OOM kills counted so far, from the statistics (`memory.oom_kill`), when the backend
/// reports them.
fn oom_count(data: &serde_json::Value) -> Option<u64> {
    data.pointer("/memory/oom_kill").and_then(|v| v.as_u64())
}

fn print_event(kind: &str, id: &str, data: Option<serde_json::Value>) {
    use std::io::Write;
    let ev = match data {
        Some(mut d) => {
            // clearbox's own bookkeeping field is not part of runc's shape.
            if let Some(m) = d.get_mut("memory").and_then(|m| m.as_object_mut()) {
                m.remove("oom_kill");
            }
            serde_json::json!({"type": kind, "id": id, "data": d})
        }
        None => serde_json::json!({"type": kind, "id": id}),
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{ev}");
    let _ = out.flush();
}
