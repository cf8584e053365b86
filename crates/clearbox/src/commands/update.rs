//! `clearbox update`: new resource limits from `--resources FILE|-` or flags.

use std::io::Read;

use anyhow::{bail, Context, Result};
use clearbox_core::Runtime;
use oci_spec::runtime::{
    LinuxBlockIoBuilder, LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResources,
    LinuxResourcesBuilder,
};

use crate::cli::Update;

pub fn run(rt: &Runtime<'_>, a: Update) -> Result<()> {
    let resources = match &a.resources {
        Some(path) => {
            let mut text = String::new();
            if path.as_os_str() == "-" {
                std::io::stdin().read_to_string(&mut text)?;
            } else {
                text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
            }
            serde_json::from_str::<LinuxResources>(&text)
                .with_context(|| format!("invalid resources in {}", path.display()))?
        }
        None => from_flags(&a)?,
    };
    rt.update(&a.container_id, &resources)?;
    Ok(())
}

fn from_flags(a: &Update) -> Result<LinuxResources> {
    if a.l3_cache_schema.is_some() || a.mem_bw_schema.is_some() {
        bail!("--l3-cache-schema / --mem-bw-schema: Intel RDT is not supported by clearbox");
    }
    let mut cpu = LinuxCpuBuilder::default();
    if let Some(v) = a.cpu_period {
        cpu = cpu.period(v);
    }
    if let Some(v) = a.cpu_quota {
        cpu = cpu.quota(v);
    }
    if let Some(v) = a.cpu_share {
        cpu = cpu.shares(v);
    }
    if let Some(v) = a.cpu_rt_period {
        cpu = cpu.realtime_period(v);
    }
    if let Some(v) = a.cpu_rt_runtime {
        cpu = cpu.realtime_runtime(v);
    }
    if let Some(v) = &a.cpuset_cpus {
        cpu = cpu.cpus(v.clone());
    }
    if let Some(v) = &a.cpuset_mems {
        cpu = cpu.mems(v.clone());
    }
    let mut mem = LinuxMemoryBuilder::default();
    if let Some(v) = a.memory {
        mem = mem.limit(v);
    }
    if let Some(v) = a.memory_reservation {
        mem = mem.reservation(v);
    }
    if let Some(v) = a.memory_swap {
        mem = mem.swap(v);
    }
    if a.kernel_memory.is_some() {
        // As runc 1.1: kernel memory limits are deprecated and not set.
        tracing::warn!("--kernel-memory is deprecated and ignored");
    }
    if let Some(v) = a.kernel_memory_tcp {
        mem = mem.kernel_tcp(v);
    }
    let mut r = LinuxResourcesBuilder::default()
        .cpu(cpu.build()?)
        .memory(mem.build()?);
    if let Some(v) = a.pids_limit {
        r = r.pids(LinuxPidsBuilder::default().limit(v).build()?);
    }
    if let Some(w) = a.blkio_weight {
        r = r.block_io(LinuxBlockIoBuilder::default().weight(w).build()?);
    }
    Ok(r.build()?)
}
