//! `clearbox list`

use anyhow::{bail, Result};
use clearbox_core::Runtime;

pub fn run(rt: &Runtime<'_>, a: liboci_cli::List) -> Result<()> {
    let states = rt.list()?;
    if a.quiet {
        for s in &states {
            println!("{}", s.id);
        }
        return Ok(());
    }
    match a.format.as_str() {
        "json" => {
            let v: Vec<_> = states.iter().map(|s| s.oci()).collect();
            println!("{}", serde_json::to_string(&v)?);
        }
        "table" => {
            let w = states.iter().map(|s| s.id.len()).max().unwrap_or(2).max(2);
            println!(
                "{:<w$}   {:<8} {:<10} {:<40} {:<31} OWNER",
                "ID", "PID", "STATUS", "BUNDLE", "CREATED"
            );
            for s in &states {
                let o = s.oci();
                println!(
                    "{:<w$}   {:<8} {:<10} {:<40} {:<31} {}",
                    o.id,
                    o.pid,
                    o.status.to_string(),
                    o.bundle.display(),
                    o.created
                        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
                    o.owner
                );
            }
        }
        other => bail!("invalid format {other:?}: expected table or json"),
    }
    Ok(())
}
