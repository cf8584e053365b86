//! `clearbox events`: resource statistics as runc's event JSON, once (`--stats`) or every
//! `--interval` seconds until the container stops.

use std::time::Duration;

use anyhow::Result;
use clearbox_core::{Error, Runtime};

pub fn run(rt: &Runtime<'_>, a: liboci_cli::Events) -> Result<()> {
    loop {
        let data = match rt.stats(&a.container_id) {
            Ok(d) => d,
            // The container ended while we were watching: that ends the stream.
            Err(Error::NotRunning) if !a.stats => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let ev = serde_json::json!({"type": "stats", "id": a.container_id, "data": data});
        println!("{ev}");
        if a.stats {
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs(u64::from(a.interval.max(1))));
    }
}
