//! The shim's watchers: process exits from the reaper (matched to a container's init or exec,
//! or kept until the process is known) and the guest's or host's OOM counter of a container.

use super::*;

impl Service {
    /// The reaper's exits: matched to a process, or kept to be claimed.
    pub(super) fn watch_exits(&self) {
        let Ok(sub) = monitor_subscribe(Topic::Pid) else {
            log::error!("cannot subscribe to process exits");
            return;
        };
        let me = self.clone();
        std::thread::spawn(move || {
            while let Ok(ExitEvent { subject, exit_code }) = sub.rx.recv() {
                if let Subject::Pid(pid) = subject {
                    // Its own thread: recording an exit waits for the process's output.
                    let me = me.clone();
                    std::thread::spawn(move || me.exited(pid, exit_code));
                }
            }
        });
    }

    /// Records the exit of `pid` if it is one of ours, else keeps it to be claimed (under the
    /// table's lock, so a handler that records the pid next finds it).
    pub(super) fn exited(&self, pid: i32, code: i32) {
        if pid <= 0 {
            return;
        }
        let Ok(mut t) = self.inner.table.lock() else {
            return;
        };
        let mut found = None;
        for (cid, c) in t.containers.iter() {
            if c.init.pid == pid && c.init.exit.is_none() {
                found = Some((cid.clone(), None));
                break;
            }
            if let Some((eid, _)) = c
                .execs
                .iter()
                .find(|(_, p)| p.pid == pid && p.exit.is_none())
            {
                found = Some((cid.clone(), Some(eid.clone())));
                break;
            }
        }
        let Some((cid, eid)) = found else {
            self.inner.unclaimed.put(pid, code);
            return;
        };
        // Wait for the output without holding the table.
        let mut io = t.containers.get_mut(&cid).and_then(|c| match &eid {
            None => c.init.io.take(),
            Some(e) => c.execs.get_mut(e).and_then(|p| p.io.take()),
        });
        drop(t);
        if eid.is_none() {
            // An OOM kill that ended the init is told before its exit, as runc's shim does
            // (the CRI then reports the container as OOMKilled).
            if let Ok(rt) = self.runtime() {
                self.check_oom(&rt, &cid);
            }
        }
        if let Some(io) = io.as_mut() {
            io.drain(DRAIN);
        }
        let at = now();
        let Ok(mut t) = self.inner.table.lock() else {
            return;
        };
        let Some(c) = t.containers.get_mut(&cid) else {
            return;
        };
        let proc_ = match &eid {
            None => &mut c.init,
            Some(e) => match c.execs.get_mut(e) {
                Some(p) => p,
                None => return,
            },
        };
        proc_.io = io;
        if let Some(io) = proc_.io.as_mut() {
            io.close();
        }
        proc_.phase = Phase::Stopped;
        proc_.exit = Some((code as u32, at.clone()));
        self.inner.events.send(TaskExit {
            container_id: cid.clone(),
            id: eid.clone().unwrap_or_else(|| cid.clone()),
            pid: pid as u32,
            exit_status: code as u32,
            exited_at: MessageField::some(at),
            ..Default::default()
        });
        drop(t);
        self.inner.changed.notify_all();
    }

    /// Claims an exit reaped before the pid was recorded.
    pub(super) fn claim_early_exit(&self, pid: i32) {
        if let Some(code) = self.inner.unclaimed.take(pid) {
            self.exited(pid, code);
        }
    }

    /// Polls the container's OOM counter (`memory.events`' oom_kill of its cgroup: the guest's
    /// for `vm`) while it runs, when its backend reports one; [`Self::check_oom`] sends
    /// TaskOOM when it grows. The init's exit looks once more (see [`Self::exited`]).
    pub(super) fn watch_oom(&self, id: String) {
        let me = self.clone();
        std::thread::spawn(move || {
            let Ok(rt) = me.runtime() else {
                return;
            };
            loop {
                let stopped = me
                    .table()
                    .map(|t| {
                        t.containers
                            .get(&id)
                            .is_none_or(|c| c.init.phase == Phase::Stopped)
                    })
                    .unwrap_or(true);
                if stopped || !me.check_oom(&rt, &id) {
                    return;
                }
                std::thread::sleep(OOM_POLL);
            }
        });
    }

    /// Sends TaskOOM when the container's OOM kill counter grew since the last look (its cgroup
    /// is new: the count starts at zero). A stopped container's last statistics are what the
    /// backend kept (the guest's, written as the VM went). False when the backend counts no
    /// OOM kills.
    pub(super) fn check_oom(&self, rt: &Runtime<'static>, id: &str) -> bool {
        let stats = match rt.stats(id) {
            Ok(s) => Some(s),
            Err(_) => rt.last_stats(id),
        };
        let now = match &stats {
            Some(s) => match metrics::oom_kills(s) {
                Some(n) => n,
                None => return false,
            },
            // No statistics this time (a busy guest, or already gone).
            None => return true,
        };
        let Ok(mut t) = self.inner.table.lock() else {
            return false;
        };
        let Some(c) = t.containers.get_mut(id) else {
            return false;
        };
        if now > c.oom_kills {
            c.oom_kills = now;
            self.inner.events.send(TaskOOM {
                container_id: id.to_string(),
                ..Default::default()
            });
        }
        true
    }
}
