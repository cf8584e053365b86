//! `clearbox template build`: builds the VM templates of the default VM size now, so the
//! first container does not pay for it (see clearbox-vmm's `template.rs`).

use anyhow::{bail, Result};
use clearbox_core::Config;

use crate::cli::{Template, TemplateCommand};

pub fn run(a: Template) -> Result<()> {
    let TemplateCommand::Build(b) = a.command;
    let config = Config::load_default()?;
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
