//! `clearbox trust add|list|rm`: keys trusted to sign images, per image-name prefix (rkt's
//! `trust`), kept in the containers-compatible policy.json that `clearbox image` enforces.

use anyhow::Result;
use clearbox_image::trust::{self, KeyKind};

use super::image::ImageEnv;
use crate::cli::{Trust, TrustCommand};

pub fn run(a: Trust) -> Result<()> {
    let env = ImageEnv::load()?;
    match a.command {
        TrustCommand::Add(t) => {
            let kind = t.kind.as_deref().map(|k| match k {
                "cosign" => KeyKind::Cosign,
                _ => KeyKind::Gpg,
            });
            let id = trust::add(&env.policy, &env.trust_dir, &t.prefix, &t.key, kind)?;
            eprintln!(
                "clearbox: images under {} must now be signed by key {id} ({})",
                t.prefix,
                env.policy.display()
            );
        }
        TrustCommand::List(l) => {
            let keys = trust::list(&env.policy)?;
            if l.format == "json" {
                println!("{}", serde_json::to_string_pretty(&keys)?);
            } else {
                println!("{:<36} {:<24} {:<42} FILE", "PREFIX", "TYPE", "KEY");
                for k in keys {
                    println!("{:<36} {:<24} {:<42} {}", k.prefix, k.kind, k.key, k.file);
                }
            }
        }
        TrustCommand::Rm(r) => {
            let removed = trust::remove(&env.policy, &env.trust_dir, &r.prefix, r.key.as_deref())?;
            for p in removed {
                eprintln!("clearbox: removed {}", p.display());
            }
        }
    }
    Ok(())
}
