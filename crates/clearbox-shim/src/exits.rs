//! Exits of the shim's children, from containerd-shim's reaper (the shim is a child subreaper:
//! the processes its helpers leave behind are re-parented to it).
//!
//! An exit can be reaped before the handler that started the process has recorded its pid;
//! such exits wait here, briefly, to be claimed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an exit nobody claimed is kept (helpers' own exits end here too).
const KEEP: Duration = Duration::from_secs(30);

#[derive(Default)]
pub struct Unclaimed {
    exits: Mutex<HashMap<i32, (i32, Instant)>>,
}

impl Unclaimed {
    pub fn put(&self, pid: i32, code: i32) {
        if let Ok(mut m) = self.exits.lock() {
            m.retain(|_, (_, at)| at.elapsed() < KEEP);
            m.insert(pid, (code, Instant::now()));
        }
    }

    pub fn take(&self, pid: i32) -> Option<i32> {
        self.exits
            .lock()
            .ok()
            .and_then(|mut m| m.remove(&pid))
            .map(|(code, _)| code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_then_take_once() {
        let u = Unclaimed::default();
        u.put(42, 3);
        assert_eq!(u.take(42), Some(3));
        assert_eq!(u.take(42), None);
    }
}
