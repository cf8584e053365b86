//! What `ps -ef` shows of a container's processes, read from the guest's /proc: the host has no
//! view of guest processes, so `clearbox ps` prints the table from these.

use clearbox_protocol::pb::agent as pb;

/// Clock ticks per second of /proc's times (USER_HZ).
fn ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).ok().filter(|t| *t > 0).unwrap_or(100)
}

fn boot_time() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

fn uptime_secs() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/uptime").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// "pts/N" for a pseudo-terminal, "" for none, else "major:minor".
fn tty_name(tty_nr: u64) -> String {
    if tty_nr == 0 {
        return String::new();
    }
    let major = (tty_nr >> 8) & 0xfff;
    let minor = (tty_nr & 0xff) | ((tty_nr >> 12) & 0xfff00);
    match major {
        136..=143 => format!("pts/{}", (major - 136) * 256 + minor),
        4 if minor < 64 => format!("tty{minor}"),
        4 => format!("ttyS{}", minor - 64),
        5 if minor == 1 => "console".into(),
        _ => format!("{major}:{minor}"),
    }
}

/// `uid`'s name in the /etc/passwd the process sees (its root), as `ps` inside it would print.
fn user_name(pid: i32, uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string(format!("/proc/{pid}/root/etc/passwd")).ok()?;
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        (f.nth(1)?.parse::<u32>().ok()? == uid).then(|| name.to_string())
    })
}

/// One process, or None when it is gone.
fn info(pid: i32, ticks: u64, boot: u64, uptime: f64) -> Option<pb::ProcessInfo> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?;
    // Fields from the 3rd (state) on.
    let f: Vec<&str> = stat.get(close + 2..)?.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let user = user_name(pid, uid).unwrap_or_default();
    let start_ticks = num(19);
    let mut p = pb::ProcessInfo::new();
    p.pid = pid;
    p.ppid = i32::try_from(num(1)).unwrap_or(0);
    p.uid = uid;
    p.user = user;
    p.start_time = boot + start_ticks / ticks;
    p.cpu_time_ms = (num(11) + num(12)) * 1000 / ticks;
    p.tty = tty_name(num(4));
    p.cmd = if args.is_empty() {
        format!("[{comm}]")
    } else {
        args.join(" ")
    };
    let started = start_ticks as f64 / ticks as f64;
    p.elapsed_secs = (uptime - started).max(0.0) as u64;
    Some(p)
}

/// The processes of `pids` that still exist, in pid order.
pub fn table(pids: &[i32]) -> Vec<pb::ProcessInfo> {
    let ticks = ticks_per_sec();
    let boot = boot_time().unwrap_or(0);
    let uptime = uptime_secs().unwrap_or(0.0);
    let mut sorted = pids.to_vec();
    sorted.sort_unstable();
    sorted
        .into_iter()
        .filter_map(|pid| info(pid, ticks, boot, uptime))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_and_terminals() {
        let me = std::process::id() as i32;
        let t = table(&[me, i32::MAX]);
        assert_eq!(t.len(), 1, "a missing pid is left out");
        assert_eq!(t[0].pid, me);
        assert!(t[0].cmd.contains("clearbox_agent"), "{}", t[0].cmd);
        assert!(t[0].start_time > 1_600_000_000);
        assert_eq!(tty_name(0), "");
        assert_eq!(tty_name((136 << 8) | 3), "pts/3");
        assert_eq!(tty_name((4 << 8) | 65), "ttyS1");
    }
}
