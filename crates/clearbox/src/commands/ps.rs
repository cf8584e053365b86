//! `clearbox ps`: the container's processes, as a JSON list of pids or as `ps` output filtered to
//! them.

use std::collections::HashSet;
use std::process::Command;

use anyhow::{bail, Context, Result};
use clearbox_core::Runtime;

pub fn run(rt: &Runtime<'_>, a: liboci_cli::Ps) -> Result<()> {
    let pids = rt.pids(&a.container_id)?;
    match a.format.as_str() {
        "json" => println!("{}", serde_json::to_string(&pids)?),
        "table" => {
            let opts = if a.ps_options.is_empty() {
                vec!["-ef".to_string()]
            } else {
                a.ps_options.clone()
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
            let wanted: HashSet<i32> = pids.into_iter().collect();
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
        }
        other => bail!("invalid format {other:?}: expected table or json"),
    }
    Ok(())
}
