//! `clearbox spec`: write a template config.json (runc's defaults) into the bundle.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use oci_spec::runtime::Spec;

pub fn run(a: liboci_cli::Spec) -> Result<()> {
    let dir = a.bundle.unwrap_or_else(|| PathBuf::from("."));
    let path = dir.join("config.json");
    if path.exists() {
        bail!("file {} exists; remove it first", path.display());
    }
    let spec = if a.rootless {
        Spec::rootless(
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        )
    } else {
        Spec::default()
    };
    let mut spec = spec;
    spec.set_hostname(Some("clearbox".to_string()));
    let json = serde_json::to_string_pretty(&spec)?;
    std::fs::write(&path, json + "\n")
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
