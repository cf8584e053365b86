//! `clearbox template build|list|prune`: the VM template cache (see clearbox-vmm's
//! `template` module). `build` makes the templates of the default VM size now, so the first
//! container does not pay for it; `list` shows what the cache holds (RAM, on tmpfs); `prune`
//! removes what no VM can use, or with `--all` everything not in use right now.

use anyhow::{bail, Result};
use clearbox_core::Config;
use clearbox_vmm::template::{self, CacheState, CachedTemplate};

use crate::cli::{Template, TemplateBuild, TemplateCommand, TemplateList, TemplatePrune};

pub fn run(a: Template) -> Result<()> {
    let config = Config::load_default()?;
    match a.command {
        TemplateCommand::Build(b) => build(&config, b),
        TemplateCommand::List(l) => list(&config, &l),
        TemplateCommand::Prune(p) => prune(&config, &p),
    }
}

fn build(config: &Config, b: TemplateBuild) -> Result<()> {
    if config.vm.template == Some(false) {
        bail!("VM templates are off ([vm] template = false in the configuration)");
    }
    for nics in b.nics {
        if nics > 8 {
            bail!("--nics {nics}: at most 8 network interfaces");
        }
        let dir = clearbox_backends::build_template(&config.vm, nics)?;
        println!("{nics} nic(s): {}", dir.display());
    }
    Ok(())
}

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / f64::from(1u32 << 20))
}

fn state_name(s: CacheState) -> &'static str {
    match s {
        CacheState::Ready => "ready",
        CacheState::Stale => "stale",
        CacheState::Unsupported => "unsupported",
        CacheState::Building => "building",
        CacheState::Partial => "partial",
    }
}

/// Seconds since a last use, as "12s", "5m", "3h", "2d" ago.
fn ago(last_used: Option<u64>) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let Some(t) = last_used else {
        return "-".into();
    };
    let s = now.saturating_sub(t);
    match s {
        0..=119 => format!("{s}s ago"),
        120..=7199 => format!("{}m ago", s / 60),
        7200..=172_799 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}

fn row(t: &CachedTemplate) -> String {
    let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    let short = t.key.get(..12).unwrap_or(&t.key);
    let mut line = format!(
        "{short:<14}{:<13}{:>6}{:>12}{:>6}{:>11}  {}",
        state_name(t.state),
        opt(t.vcpus),
        opt(t.memory_mib),
        opt(t.nics),
        mib(t.bytes),
        ago(t.last_used)
    );
    if let Some(d) = &t.detail {
        line.push_str(&format!("  ({})", d.trim()));
    }
    line
}

fn list(config: &Config, l: &TemplateList) -> Result<()> {
    let opts = clearbox_backends::template_cache(&config.vm)?;
    // A missing cache is empty; one this user cannot read (root's, 0700) is not.
    if let Err(e) = std::fs::read_dir(&opts.dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            bail!("cannot read the template cache {}: {e}", opts.dir.display());
        }
    } else {
        // Another user's directory: what it holds is not ours to show.
        template::check_private(&opts.dir)?;
    }
    let all = template::list(&opts.dir);
    if l.format == "json" {
        let out = serde_json::json!({
            "dir": opts.dir,
            "max": opts.max,
            "bytes": all.iter().map(|t| t.bytes).sum::<u64>(),
            "templates": all,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "{:<14}{:<13}{:>6}{:>12}{:>6}{:>11}  LAST USED",
        "KEY", "STATE", "VCPUS", "MEMORY MIB", "NICS", "HELD MIB"
    );
    for t in &all {
        println!("{}", row(t));
    }
    let ready = all.iter().filter(|t| t.state == CacheState::Ready).count();
    println!(
        "{} ready of at most {} kept, {} MiB held in {}",
        ready,
        opts.max,
        mib(all.iter().map(|t| t.bytes).sum()),
        opts.dir.display()
    );
    Ok(())
}

fn prune(config: &Config, p: &TemplatePrune) -> Result<()> {
    let opts = clearbox_backends::template_cache(&config.vm)?;
    let out = template::prune(&opts, p.all)?;
    for t in &out.removed {
        println!(
            "removed {} ({}, {} MiB)",
            t.key,
            state_name(t.state),
            mib(t.bytes)
        );
    }
    for t in &out.busy {
        eprintln!(
            "kept {} ({}): in use right now (being built or restored from)",
            t.key,
            state_name(t.state)
        );
    }
    println!(
        "{} removed, {} MiB freed",
        out.removed.len(),
        mib(out.removed.iter().map(|t| t.bytes).sum())
    );
    Ok(())
}
