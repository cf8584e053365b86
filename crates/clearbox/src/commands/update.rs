//! `clearbox update`: new resource limits from `--resources FILE|-` or flags.

use std::io::Read;

use anyhow::{Context, Result};
use clearbox_core::Runtime;
use oci_spec::runtime::{
    LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResources, LinuxResourcesBuilder,
};

pub fn run(rt: &Runtime<'_>, a: liboci_cli::Update) -> Result<()> {
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

fn from_flags(a: &liboci_cli::Update) -> Result<LinuxResources> {
    let mut cpu = LinuxCpuBuilder::default();
    if let Some(v) = a.cpu_period {
        cpu = cpu.period(v);
    }
    if let Some(v) = a.cpu_quota {
        cpu = cpu.quota(i64::try_from(v).context("--cpu-quota too large")?);
    }
    if let Some(v) = a.cpu_share {
        cpu = cpu.shares(v);
    }
    if let Some(v) = a.cpu_rt_period {
        cpu = cpu.realtime_period(v);
    }
    if let Some(v) = a.cpu_rt_runtime {
        cpu = cpu.realtime_runtime(i64::try_from(v).context("--cpu-rt-runtime too large")?);
    }
    if let Some(v) = &a.cpuset_cpus {
        cpu = cpu.cpus(v.clone());
    }
    if let Some(v) = &a.cpuset_mems {
        cpu = cpu.mems(v.clone());
    }
    let mut mem = LinuxMemoryBuilder::default();
    if let Some(v) = a.memory {
        mem = mem.limit(i64::try_from(v).context("--memory too large")?);
    }
    if let Some(v) = a.memory_reservation {
        mem = mem.reservation(i64::try_from(v).context("--memory-reservation too large")?);
    }
    if let Some(v) = a.memory_swap {
        mem = mem.swap(v);
    }
    let mut r = LinuxResourcesBuilder::default()
        .cpu(cpu.build()?)
        .memory(mem.build()?);
    if let Some(v) = a.pids_limit {
        r = r.pids(LinuxPidsBuilder::default().limit(v).build()?);
    }
    Ok(r.build()?)
}
