//! `clearbox check`: what this host offers and lacks for isolation=vm, one remedy per missing
//! piece. Exit status 0 when VMs can start, 1 otherwise.

use anyhow::Result;
use clearbox_core::Config;
use clearbox_vmm::check::{check_with, CheckOptions};

use crate::cli::Check;

pub fn run(a: Check) -> Result<u8> {
    let config = Config::load_default()?;
    let cache = clearbox_backends::template_cache(&config.vm)?;
    let mut opts = CheckOptions {
        templates: clearbox_backends::templates_enabled(&config.vm),
        template_dir: cache.dir,
        template_max: cache.max,
        ..CheckOptions::default()
    };
    if let Some(k) = config.vm.kernel {
        opts.kernel = k;
    }
    if let Some(i) = config.vm.initrd {
        opts.initramfs = i;
    }
    if let Some(mode) = config.vm.accel {
        opts.accel = mode.parse()?;
    }
    let report = check_with(&opts);
    if a.format == "json" {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", report.to_string().trim_end());
    }
    Ok(if report.ok { 0 } else { 1 })
}
