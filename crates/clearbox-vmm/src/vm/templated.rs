//! The template path of [`Vm`]: restore from a template (built first when missing), and the
//! template build itself (see `crate::template` for the cache).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{Mode, Vm};
use crate::accel::{host_tsc_khz, KvmFacts};
use crate::binaries;
use crate::config::{AgentChannel, Hypervisor, VmConfig};
use crate::error::{Error, Result};
use crate::jail;
use crate::qemu;
use crate::template::{self, KeyInputs, TemplateOptions};

impl Vm {
    /// Restored from the template of `config`'s inputs (built now when missing); `Ok(Err(why))`
    /// when this host or VM cannot use templates (see `template.rs`).
    pub(super) fn from_template(
        config: &VmConfig,
        opts: &TemplateOptions,
    ) -> Result<std::result::Result<Vm, String>> {
        let inputs = match template_inputs(config)? {
            Ok(i) => i,
            Err(why) => return Ok(Err(why)),
        };
        let key = inputs.key();
        let dir = match template::lookup(opts, &key) {
            template::Cached::Ready(d) => d,
            template::Cached::Unsupported(why) => return Ok(Err(why)),
            template::Cached::Missing => match build_locked(config, opts, &key, &inputs)? {
                Ok(d) => d,
                Err(why) => return Ok(Err(why)),
            },
        };
        let t0 = Instant::now();
        let mut held = template::use_template(opts, &key, &dir);
        let mut dir = dir;
        if !template::is_committed(&dir) {
            // Pruned (`clearbox template prune`) while this restore waited for its lock.
            drop(held);
            dir = match build_locked(config, opts, &key, &inputs)? {
                Ok(d) => d,
                Err(why) => return Ok(Err(why)),
            };
            held = template::use_template(opts, &key, &dir);
        }
        let vm = Self::start_mode(config.clone(), Mode::Restore { dir })?;
        drop(held);
        tracing::debug!(elapsed = ?t0.elapsed(), "restored from the template");
        Ok(Ok(vm))
    }

    /// Builds (or finds) the template of `config`'s inputs: `clearbox template build`.
    /// A host or VM that cannot use templates is [`Error::Template`] with the reason.
    pub fn ensure_template(config: &VmConfig) -> Result<PathBuf> {
        let opts = config.template.clone().unwrap_or_default();
        let inputs = template_inputs(config)?.map_err(Error::Template)?;
        let key = inputs.key();
        match template::lookup(&opts, &key) {
            template::Cached::Ready(d) => Ok(d),
            template::Cached::Unsupported(why) => Err(Error::Template(why)),
            template::Cached::Missing => {
                build_locked(config, &opts, &key, &inputs)?.map_err(Error::Template)
            }
        }
    }
}

/// The template key inputs of `config`, or why it cannot use one (one line).
fn template_inputs(config: &VmConfig) -> Result<std::result::Result<KeyInputs, String>> {
    let unsupported = |why: String| {
        tracing::debug!(%why, "no VM template");
        Ok(Err(why))
    };
    if config.channel == AgentChannel::Vsock {
        return unsupported("templates need the virtio-serial agent channel, not vsock".into());
    }
    if binaries::vmux().is_none() {
        return unsupported(
            "templates need clearbox-vmux (the virtio-serial channel's host end), not found next to clearbox or on PATH".into(),
        );
    }
    if !config.shares.is_empty()
        && !matches!(
            binaries::virtiofsd(),
            Some((_, binaries::VirtiofsdFlavor::Rust))
        )
    {
        return unsupported(
            "templates need the Rust virtiofsd on PATH (the C one cannot migrate virtio-fs)".into(),
        );
    }
    let Hypervisor::Qemu(qopts) = &config.hypervisor;
    let Some(qemu_bin) = qopts.binary.clone().or_else(binaries::qemu) else {
        return unsupported("templates need QEMU: none found".into());
    };
    let (accel, _) = KvmFacts::host().select(config.accel)?;
    KeyInputs::new(
        &qemu_bin,
        &config.kernel,
        &config.initrd,
        config.vcpus,
        config.memory_mib,
        accel,
        qopts.tcg_tb_size_mib,
        // Templates need QEMU 10 (`template::MIN_QEMU_MAJOR`), which gets the TCG virtio-fs
        // guard whenever the VM has a share (see `qemu::needs_vhost_user_fs_guard`).
        &qemu::kernel_cmdline(
            accel,
            host_tsc_khz(),
            !config.shares.is_empty(),
            &serial_cmdline(config),
        ),
        config.shares.iter().map(|s| s.tag.clone()).collect(),
        config.net.len(),
    )
    .map(Ok)
}

/// The extra kernel words of a VM on the serial channel, in the order `Vm::start_mode` adds
/// them (the caller's, the channel's, the shares').
fn serial_cmdline(config: &VmConfig) -> Vec<String> {
    let mut v = config.cmdline_extra.clone();
    v.push("clearbox.channel=serial".into());
    v.extend(super::attach::shares_word(config));
    v
}

/// Builds the template under its lock (a concurrent first use waits here, then finds it).
fn build_locked(
    config: &VmConfig,
    opts: &TemplateOptions,
    key: &str,
    inputs: &KeyInputs,
) -> Result<std::result::Result<PathBuf, String>> {
    let _lock = template::lock(opts, key)?;
    match template::lookup(opts, key) {
        template::Cached::Ready(d) => return Ok(Ok(d)),
        template::Cached::Unsupported(why) => return Ok(Err(why)),
        template::Cached::Missing => {}
    }
    let Hypervisor::Qemu(qopts) = &config.hypervisor;
    let qemu_bin = qopts
        .binary
        .clone()
        .or_else(binaries::qemu)
        .ok_or(Error::MissingBinary("qemu-system-x86_64"))?;
    match template::qemu_major(&qemu_bin) {
        Some(v) if v >= template::MIN_QEMU_MAJOR => {}
        v => {
            let why = format!(
                "QEMU {} at {} cannot migrate vhost-user-fs; templates need QEMU {}+",
                v.map_or("of unknown version".to_string(), |v| v.to_string()),
                qemu_bin.display(),
                template::MIN_QEMU_MAJOR
            );
            template::mark_unsupported(opts, key, &why);
            tracing::info!(%why, "no VM templates");
            return Ok(Err(why));
        }
    }
    let t0 = Instant::now();
    let build = template::build_dir(opts, key)?;
    match build_in(config, &build) {
        Ok(()) => {
            let dir = template::commit(opts, key, &build, inputs)?;
            // A new template usually means rebuilt assets: the old ones' memory goes; and
            // at most `opts.max` are kept.
            template::prune_stale(opts, key);
            template::prune_lru(opts, key);
            tracing::info!(elapsed = ?t0.elapsed(), dir = %dir.display(), "VM template built");
            Ok(Ok(dir))
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&build);
            Err(e)
        }
    }
}

/// Boots the template VM, waits for the agent, saves it into `dir`.
fn build_in(config: &VmConfig, dir: &Path) -> Result<()> {
    let mut c = config.clone();
    c.template = None;
    c.net = Vec::new();
    c.channel = AgentChannel::Serial;
    c.serial_log = None;
    c.die_with_parent = true;
    let parent = config
        .run_dir
        .parent()
        .map_or_else(|| PathBuf::from("/run"), Path::to_path_buf);
    c.run_dir = parent.join(format!("tpl-{}", std::process::id()));
    c.shares = Vec::new();
    for (i, s) in config.shares.iter().enumerate() {
        let d = dir.join(format!("share-{i}"));
        jail::mkdir(&d, 0o755)?;
        c.shares.push(crate::config::FsShare {
            tag: s.tag.clone(),
            host_dir: d,
            read_only: false,
        });
    }
    let vm = Vm::start_mode(
        c,
        Mode::Build {
            dir: dir.to_path_buf(),
            nics: config.net.len(),
        },
    )?;
    let agent = vm.connect_agent(crate::AGENT_PORT, Duration::from_secs(120))?;
    drop(agent);
    // Let the guest see the channel close before it stops.
    std::thread::sleep(Duration::from_millis(50));
    let mut q = vm.monitor()?;
    let saved = (|| {
        q.execute("stop", serde_json::json!({}))?;
        q.ignore_shared()?;
        let uri = format!("file:{}", dir.join(template::STATE).display());
        q.execute("migrate", serde_json::json!({ "uri": uri }))?;
        q.wait_migration(Duration::from_secs(60))
    })()
    .map_err(|e| vm.explain(e));
    drop(q);
    vm.kill()?;
    saved?;
    // Every restore copies this file: zero pages need not be in it (holes read as zeros).
    let memory = dir.join(template::MEMORY);
    let freed = template::punch_zero_pages(&memory)?;
    tracing::debug!(
        mib = freed >> 20,
        "zero pages left out of the template's memory"
    );
    for i in 0..config.shares.len() {
        let _ = std::fs::remove_dir(dir.join(format!("share-{i}")));
    }
    Ok(())
}

/// The files a template build or restore gives QEMU (none on a cold boot).
#[derive(Default)]
pub(super) struct TemplateFiles {
    /// Guest RAM in a file (`share=on`).
    pub(super) mem_file: Option<PathBuf>,
    /// The saved device state.
    pub(super) state_file: Option<PathBuf>,
    /// NICs of a template build: unconnected, placeholder MACs.
    pub(super) placeholder_nics: usize,
    /// A restore's memory copy, prepared: finished while QEMU starts, before the state loads.
    pub(super) mem_copy: Option<template::PendingCopy>,
}

impl Vm {
    /// Prepares a template build's or restore's files (and the QMP socket directory); `net`
    /// takes the template's placeholder MACs on a restore.
    pub(super) fn template_files(
        &mut self,
        mode: &Mode,
        run_dir: &Path,
        net: &mut [crate::config::NetDevice],
    ) -> Result<TemplateFiles> {
        let mut out = TemplateFiles::default();
        if matches!(mode, Mode::Cold) {
            return Ok(out);
        }
        let qmp_dir = run_dir.join("qmp");
        jail::mkdir(&qmp_dir, 0o700)?;
        self.state.dirs.push(qmp_dir.clone());
        if let Some(j) = &self.jail {
            j.give(&qmp_dir)?;
        }
        self.qmp = Some(qmp_dir.join("qmp.sock"));
        match mode {
            Mode::Cold => {}
            Mode::Build { dir, nics } => {
                let (m, st) = (dir.join(template::MEMORY), dir.join(template::STATE));
                for f in [&m, &st] {
                    File::create(f).map_err(|e| Error::Path {
                        op: "create",
                        path: f.clone(),
                        source: e,
                    })?;
                    if let Some(j) = &self.jail {
                        j.give(f)?;
                    }
                }
                out.mem_file = Some(m);
                out.state_file = Some(st);
                out.placeholder_nics = *nics;
            }
            Mode::Restore { dir } => {
                // The copy on tmpfs (guest RAM must not be a disk file), named after run_dir.
                let shm = Path::new(template::CLONE_MEMORY_DIR);
                template::private_dir(shm)?;
                let tag: String =
                    <sha2::Sha256 as sha2::Digest>::digest(run_dir.as_os_str().as_encoded_bytes())
                        .iter()
                        .take(8)
                        .map(|b| format!("{b:02x}"))
                        .collect();
                let m = shm.join(format!("{tag}-{}", template::MEMORY));
                let st = run_dir.join(template::STATE);
                let _ = std::fs::remove_file(&m);
                self.track_files([m.clone(), st.clone()]);
                // Recorded before they exist: a shim killed from here on leaves a record that
                // names them (the memory copy is tens of MB of tmpfs).
                self.state.save(run_dir)?;
                // The memory's data is copied once QEMU is starting (see `PendingCopy`); the
                // device state (small) now.
                out.mem_copy = Some(template::PendingCopy::prepare(
                    &dir.join(template::MEMORY),
                    &m,
                )?);
                template::copy_sparse(&dir.join(template::STATE), &st)?;
                if let Some(j) = &self.jail {
                    j.give(&m)?;
                    j.give(&st)?;
                }
                for (i, n) in net.iter_mut().enumerate() {
                    n.mac = template::template_nic_mac(i);
                }
                out.mem_file = Some(m);
                out.state_file = Some(st);
            }
        }
        Ok(out)
    }

    /// Loads a restored VM's device state from `state` (QEMU started with `-incoming
    /// defer`) and lets it run.
    pub(super) fn load_state(
        &self,
        state: &Path,
        mem_copy: Option<template::PendingCopy>,
    ) -> Result<()> {
        // Once the guest runs, QEMU holds the copy mapped (and open, for vhost-user): its name
        // goes, so that its memory is freed when QEMU exits (a stopped container that is not
        // deleted yet holds none) instead of at `delete`.
        let copy_path = mem_copy.as_ref().map(|c| c.dst().to_path_buf());
        // QEMU was just started: the copy runs while it starts up.
        if let Some(c) = mem_copy {
            let t0 = Instant::now();
            c.finish()?;
            tracing::debug!(elapsed = ?t0.elapsed(), "template memory copied");
        }
        let mut q = self.monitor()?;
        q.ignore_shared()?;
        q.execute(
            "migrate-incoming",
            serde_json::json!({ "uri": format!("file:{}", state.display()) }),
        )?;
        // The template was saved stopped: the state loads paused.
        q.wait_migration(Duration::from_secs(30))
            .map_err(|e| self.explain(e))?;
        q.execute("cont", serde_json::json!({}))?;
        q.wait_running(Duration::from_secs(10))?;
        if let Some(p) = copy_path {
            if let Err(e) = std::fs::remove_file(&p) {
                tracing::warn!(path = %p.display(), error = %e, "cannot unlink the memory copy");
            }
        }
        Ok(())
    }
}
