//! `clearbox spec`: write runc's template config.json into the bundle: the very defaults of
//! `runc spec` (`process.terminal: true`, `args: ["sh"]`, a read-only rootfs, ...), so tooling
//! and tests written against runc's template work unchanged. `--rootless` maps the caller's
//! uid/gid to root in a user namespace, as runc's does.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

const TEMPLATE: &str = include_str!("spec-template.json");
const TEMPLATE_ROOTLESS: &str = include_str!("spec-template-rootless.json");

/// The template, with the caller's ids in a rootless one.
pub fn template(rootless: bool) -> Result<serde_json::Value> {
    if !rootless {
        return Ok(serde_json::from_str(TEMPLATE)?);
    }
    let mut spec: serde_json::Value = serde_json::from_str(TEMPLATE_ROOTLESS)?;
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    spec["linux"]["uidMappings"][0]["hostID"] = uid.into();
    spec["linux"]["gidMappings"][0]["hostID"] = gid.into();
    Ok(spec)
}

pub fn run(a: liboci_cli::Spec) -> Result<()> {
    let dir = a.bundle.unwrap_or_else(|| PathBuf::from("."));
    let path = dir.join("config.json");
    if path.exists() {
        bail!("File {} exists. Remove it first", path.display());
    }
    let json = serde_json::to_string_pretty(&template(a.rootless)?)?;
    std::fs::write(&path, json + "\n")
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_runcs_and_valid_specs() {
        for rootless in [false, true] {
            let v = template(rootless).unwrap();
            assert_eq!(v["process"]["terminal"], true);
            assert_eq!(v["process"]["args"], serde_json::json!(["sh"]));
            assert_eq!(v["root"]["readonly"], true);
            let spec: oci_spec::runtime::Spec = serde_json::from_value(v).unwrap();
            assert!(spec.process().is_some());
        }
        let v = template(true).unwrap();
        assert_eq!(
            v["linux"]["uidMappings"][0]["hostID"],
            nix::unistd::getuid().as_raw()
        );
    }
}
