//! runc-style containers on the host kernel, through youki's `libcontainer`.
//!
//! libcontainer keeps its own bookkeeping under `<state_root>/<id>` (the caller gives each
//! container a private `state_root`); everything here is addressed by that root and the id.

use std::path::{Path, PathBuf};

use libcgroups::common::{CgroupConfig, CgroupManager, ControllerOpt};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::{Container, ContainerStatus};
use libcontainer::signal::Signal;
use libcontainer::syscall::syscall::SyscallType;
use oci_spec::runtime::LinuxResources;

use crate::{Error, Status};

/// Parameters of [`create`].
#[derive(Debug)]
pub struct CreateParams<'a> {
    pub id: &'a str,
    pub bundle: &'a Path,
    /// A directory private to this container; libcontainer's files go below it.
    pub state_root: &'a Path,
    pub console_socket: Option<&'a Path>,
    pub preserve_fds: i32,
    pub no_pivot: bool,
    pub systemd: bool,
    /// Keep the init a child of the caller (foreground `run`).
    pub foreground: bool,
}

/// Creates the container; its init waits on libcontainer's notify socket for [`start`].
/// Returns the init's pid.
pub fn create(p: &CreateParams<'_>) -> Result<i32, Error> {
    std::fs::create_dir_all(p.state_root)
        .map_err(|e| Error::io(format!("create {}", p.state_root.display()), e))?;
    let container = ContainerBuilder::new(p.id.to_string(), SyscallType::default())
        .with_root_path(p.state_root)?
        .with_console_socket(p.console_socket)
        .with_preserved_fds(p.preserve_fds)
        .validate_id()?
        .as_init(p.bundle)
        .with_systemd(p.systemd)
        .with_detach(!p.foreground)
        .with_no_pivot(p.no_pivot)
        .build()?;
    container
        .pid()
        .map(|pid| pid.as_raw())
        .ok_or_else(|| Error::Setup("libcontainer reported no init pid".into()))
}

fn load(state_root: &Path, id: &str) -> Result<Container, Error> {
    let mut c = Container::load(state_root.join(id))?;
    c.refresh_status()?;
    Ok(c)
}

pub fn start(state_root: &Path, id: &str) -> Result<(), Error> {
    Ok(load(state_root, id)?.start()?)
}

pub fn status(state_root: &Path, id: &str) -> Result<Status, Error> {
    Ok(match load(state_root, id)?.status() {
        ContainerStatus::Creating => Status::Creating,
        ContainerStatus::Created => Status::Created,
        ContainerStatus::Running => Status::Running,
        ContainerStatus::Paused => Status::Paused,
        ContainerStatus::Stopped => Status::Stopped,
    })
}

pub fn kill(state_root: &Path, id: &str, signal: i32, all: bool) -> Result<(), Error> {
    let sig =
        Signal::try_from(signal).map_err(|_| Error::Setup(format!("unknown signal {signal}")))?;
    Ok(load(state_root, id)?.kill(sig, all)?)
}

pub fn pause(state_root: &Path, id: &str) -> Result<(), Error> {
    Ok(load(state_root, id)?.pause()?)
}

pub fn resume(state_root: &Path, id: &str) -> Result<(), Error> {
    Ok(load(state_root, id)?.resume()?)
}

/// Deletes the container: kills it when `force`, removes its cgroups and runs poststop hooks.
/// A container whose libcontainer state never got written (failed create) is a no-op.
pub fn delete(state_root: &Path, id: &str, force: bool) -> Result<(), Error> {
    let dir = state_root.join(id);
    if !dir.join("state.json").exists() {
        return Ok(());
    }
    let mut c = load(state_root, id)?;
    c.delete(force)?;
    Ok(())
}

/// Parameters of [`exec`].
#[derive(Debug)]
pub struct ExecParams<'a> {
    pub id: &'a str,
    pub state_root: &'a Path,
    /// A JSON file holding the complete OCI process to run.
    pub process_file: &'a Path,
    pub console_socket: Option<&'a Path>,
    pub detach: bool,
    pub preserve_fds: i32,
    pub ignore_paused: bool,
    pub sub_cgroup: Option<&'a str>,
}

/// Runs a process in the container's namespaces and cgroup; returns its pid (a child of the
/// caller unless `detach`).
pub fn exec(p: &ExecParams<'_>) -> Result<i32, Error> {
    let pid = ContainerBuilder::new(p.id.to_string(), SyscallType::default())
        .with_root_path(p.state_root)?
        .with_console_socket(p.console_socket)
        .with_preserved_fds(p.preserve_fds)
        .validate_id()?
        .as_tenant()
        .with_detach(p.detach)
        .with_process(Some(p.process_file))
        .with_ignore_paused(p.ignore_paused)
        .with_sub_cgroup(p.sub_cgroup.map(str::to_string))
        .build()?;
    Ok(pid.as_raw())
}

fn cgroup_manager(
    state_root: &Path,
    id: &str,
) -> Result<Box<dyn CgroupManager<Error = libcgroups::common::AnyManagerError>>, Error> {
    let c = load(state_root, id)?;
    let config = c.spec()?;
    let manager = libcgroups::common::create_cgroup_manager(CgroupConfig {
        cgroup_path: config.cgroup_path,
        systemd_cgroup: c.systemd(),
        container_name: id.to_string(),
    })
    .map_err(|e| Error::Cgroups(Box::new(e)))?;
    Ok(Box::new(manager))
}

/// Every pid in the container's cgroup.
pub fn pids(state_root: &Path, id: &str) -> Result<Vec<i32>, Error> {
    let m = cgroup_manager(state_root, id)?;
    let pids = m.get_all_pids().map_err(|e| Error::Cgroups(Box::new(e)))?;
    Ok(pids.into_iter().map(|p| p.as_raw()).collect())
}

/// Resource usage read from the container's cgroup.
pub fn stats(state_root: &Path, id: &str) -> Result<serde_json::Value, Error> {
    let m = cgroup_manager(state_root, id)?;
    let stats = m.stats().map_err(|e| Error::Cgroups(Box::new(e)))?;
    serde_json::to_value(stats).map_err(|e| Error::Cgroups(Box::new(e)))
}

/// Applies new resource limits to the container's cgroup.
pub fn update(state_root: &Path, id: &str, resources: &LinuxResources) -> Result<(), Error> {
    let m = cgroup_manager(state_root, id)?;
    m.apply(&ControllerOpt {
        resources,
        disable_oom_killer: resources
            .memory()
            .as_ref()
            .and_then(|m| m.disable_oom_killer())
            .unwrap_or(false),
        oom_score_adj: None,
        freezer_state: None,
    })
    .map_err(|e| Error::Cgroups(Box::new(e)))
}

/// Where libcontainer keeps the state of `id` below `state_root`.
pub fn container_dir(state_root: &Path, id: &str) -> PathBuf {
    state_root.join(id)
}
