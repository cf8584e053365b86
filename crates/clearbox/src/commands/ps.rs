//! `clearbox ps`: the container's processes, as a JSON list of pids or as `ps` output filtered to
//! them. A VM's processes are not the host's: their table comes from the guest, in `ps -ef`'s
//! form.

use std::collections::HashSet;
use std::process::Command;

use anyhow::{bail, Context, Result};
use clearbox_core::{ProcessRow, Runtime};

pub fn run(rt: &Runtime<'_>, a: liboci_cli::Ps) -> Result<()> {
    match a.format.as_str() {
        "json" => println!("{}", serde_json::to_string(&rt.pids(&a.container_id)?)?),
        "table" => {
            if let Some(rows) = rt.process_table(&a.container_id)? {
                if !means_ef(&a.ps_options) {
                    bail!(
                        "ps options {:?} are not supported for this container: its processes run in a VM, and clearbox lists them in `ps -ef` form only",
                        a.ps_options.join(" ")
                    );
                }
                print!("{}", ef_table(&rows, chrono::Local::now()));
                return Ok(());
            }
            host_ps(&rt.pids(&a.container_id)?, &a.ps_options)?;
        }
        other => bail!("invalid format {other:?}: expected table or json"),
    }
    Ok(())
}

/// Whether `ps` options ask for `ps -ef` (no options is runc's default, `-ef`).
fn means_ef(opts: &[String]) -> bool {
    let mut letters: Vec<char> = Vec::new();
    for o in opts {
        let Some(flags) = o.strip_prefix('-') else {
            return false;
        };
        letters.extend(flags.chars().map(|c| if c == 'A' { 'e' } else { c }));
    }
    letters.sort_unstable();
    letters.dedup();
    letters.is_empty() || letters == ['e', 'f']
}

/// `ps -ef` of the host's processes, filtered to `pids`.
fn host_ps(pids: &[i32], ps_options: &[String]) -> Result<()> {
    let opts = if ps_options.is_empty() {
        vec!["-ef".to_string()]
    } else {
        ps_options.to_vec()
    };
    let out = Command::new("ps")
        .args(&opts)
        .output()
        .context("cannot run ps")?;
    if !out.status.success() {
        bail!(
            "ps {}: {}",
            opts.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let col = header
        .split_whitespace()
        .position(|h| h == "PID")
        .context("ps output has no PID column")?;
    let wanted: HashSet<i32> = pids.iter().copied().collect();
    println!("{header}");
    for line in lines {
        let pid = line
            .split_whitespace()
            .nth(col)
            .and_then(|p| p.parse().ok());
        if pid.is_some_and(|p| wanted.contains(&p)) {
            println!("{line}");
        }
    }
    Ok(())
}

/// The rows in procps' `ps -ef` layout (columns UID PID PPID C STIME TTY TIME CMD).
fn ef_table<Tz: chrono::TimeZone>(rows: &[ProcessRow], now: chrono::DateTime<Tz>) -> String
where
    Tz::Offset: std::fmt::Display,
{
    let mut out = format!(
        "{:<8} {:>7} {:>7} {:>2} {:>5} {:<8} {:>8} CMD\n",
        "UID", "PID", "PPID", "C", "STIME", "TTY", "TIME"
    );
    for r in rows {
        let user = r.user.clone().unwrap_or_else(|| r.uid.to_string());
        let c = (r.cpu_time_ms / 10)
            .checked_div(r.elapsed_secs)
            .unwrap_or(0)
            .min(99);
        let tty = if r.tty.is_empty() { "?" } else { &r.tty };
        out.push_str(&format!(
            "{:<8} {:>7} {:>7} {:>2} {:>5} {:<8} {:>8} {}\n",
            user,
            r.pid,
            r.ppid,
            c,
            stime(r.start_time, &now),
            tty,
            cpu_time(r.cpu_time_ms / 1000),
            r.cmd
        ));
    }
    out
}

/// procps' STIME: "HH:MM" today, "MonDD" this year, else the year.
fn stime<Tz: chrono::TimeZone>(start: u64, now: &chrono::DateTime<Tz>) -> String
where
    Tz::Offset: std::fmt::Display,
{
    let Some(t) = i64::try_from(start)
        .ok()
        .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
        .map(|t| t.with_timezone(&now.timezone()))
    else {
        return "?".into();
    };
    if t.date_naive() == now.date_naive() {
        t.format("%H:%M").to_string()
    } else if t.format("%Y").to_string() == now.format("%Y").to_string() {
        t.format("%b%d").to_string()
    } else {
        t.format("%Y").to_string()
    }
}

/// procps' TIME: "[D-]HH:MM:SS".
fn cpu_time(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}-{h:02}:{m:02}:{s:02}")
    } else {
        format!("{h:02}:{m:02}:{s:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ef_options() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(means_ef(&s(&[])));
        assert!(means_ef(&s(&["-ef"])));
        assert!(means_ef(&s(&["-e", "-f"])));
        assert!(means_ef(&s(&["-fA"])));
        assert!(!means_ef(&s(&["aux"])));
        assert!(!means_ef(&s(&["-o", "pid"])));
        assert!(!means_ef(&s(&["-e"])));
    }

    #[test]
    fn table_in_procps_layout() {
        use chrono::TimeZone;
        let now = chrono::Utc.with_ymd_and_hms(2026, 12, 2, 16, 0, 0).unwrap();
        let row = |pid, start: chrono::DateTime<chrono::Utc>, cmd: &str| ProcessRow {
            pid,
            ppid: 0,
            uid: 0,
            user: Some("root".into()),
            start_time: start.timestamp() as u64,
            cpu_time_ms: 3_723_000,
            elapsed_secs: 7446,
            tty: String::new(),
            cmd: cmd.into(),
        };
        let t = ef_table(
            &[
                row(
                    1,
                    chrono::Utc.with_ymd_and_hms(2026, 12, 2, 9, 5, 0).unwrap(),
                    "sleep 300",
                ),
                row(
                    12,
                    chrono::Utc.with_ymd_and_hms(2026, 11, 30, 9, 5, 0).unwrap(),
                    "sh",
                ),
            ],
            now,
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "UID          PID    PPID  C STIME TTY          TIME CMD"
        );
        assert_eq!(
            lines[1],
            "root           1       0 50 09:05 ?        01:02:03 sleep 300"
        );
        assert!(lines[2].contains(" Nov30 "), "{}", lines[2]);
        assert_eq!(cpu_time(90061), "1-01:01:01");
    }
}
