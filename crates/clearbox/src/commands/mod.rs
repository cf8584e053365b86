//! One module per command. `dispatch` builds the runtime and hands it to the command.

mod check;
mod create;
mod delete;
mod events;
mod exec;
mod features;
mod image;
mod kill;
mod list;
mod pause;
mod ps;
mod run;
mod shim;
mod spec;
mod start;
mod state;
mod template;
mod trust;
mod update;

use anyhow::{bail, Result};
use clearbox_core::{Config, Runtime};

use crate::cli::{Cli, Command, GlobalOpts};

pub(crate) fn runtime(g: &GlobalOpts) -> Result<Runtime<'static>> {
    if g.systemd_cgroup {
        if !std::path::Path::new("/run/systemd/system").exists() {
            bail!("--systemd-cgroup: systemd is not running on this host (no /run/systemd/system); use the default cgroupfs driver");
        }
        bail!("--systemd-cgroup: the systemd cgroup driver is not supported by this build; use the default cgroupfs driver");
    }
    let config = Config::load_default()?;
    Ok(clearbox_backends::runtime(
        &g.root,
        config,
        g.isolation,
        g.systemd_cgroup,
    )?)
}

/// Runs the command; returns the process exit code.
pub fn dispatch(cli: Cli) -> Result<u8> {
    let g = &cli.global;
    match cli.command {
        Command::Spec(a) => spec::run(a).map(|_| 0),
        Command::Features(_) => features::run().map(|_| 0),
        Command::Check(a) => check::run(a),
        Command::Create(a) => create::run(&runtime(g)?, a).map(|_| 0),
        Command::Start(a) => start::run(&runtime(g)?, a).map(|_| 0),
        Command::State(a) => state::run(&runtime(g)?, a).map(|_| 0),
        Command::Kill(a) => kill::run(&runtime(g)?, a).map(|_| 0),
        Command::Delete(a) => delete::run(&runtime(g)?, a).map(|_| 0),
        Command::Run(a) => run::run(&runtime(g)?, a),
        Command::Exec(a) => exec::run(&runtime(g)?, a),
        Command::Ps(a) => ps::run(&runtime(g)?, a).map(|_| 0),
        Command::List(a) => list::run(&runtime(g)?, a).map(|_| 0),
        Command::Pause(a) => pause::pause(&runtime(g)?, a).map(|_| 0),
        Command::Resume(a) => pause::resume(&runtime(g)?, a).map(|_| 0),
        Command::Events(a) => events::run(&runtime(g)?, a).map(|_| 0),
        Command::Update(a) => update::run(&runtime(g)?, a).map(|_| 0),
        Command::Image(a) => image::run(g, a),
        Command::Trust(a) => trust::run(a).map(|_| 0),
        Command::Template(a) => template::run(a).map(|_| 0),
        Command::ImageWorker => Ok(exit_byte(clearbox_image::worker::main())),
        Command::VmShim(a) => Ok(shim::run(a)),
        Command::Checkpoint(_) => bail!(
            "checkpoint is not supported by clearbox (no CRIU support; a VM snapshot checkpoint is not implemented yet)"
        ),
        Command::Restore(_) => bail!(
            "restore is not supported by clearbox (no CRIU support; a VM snapshot restore is not implemented yet)"
        ),
    }
}

/// Exit code of a foreground process as a shell reports it, clamped to a byte.
pub(crate) fn exit_byte(code: i32) -> u8 {
    u8::try_from(code.clamp(0, 255)).unwrap_or(255)
}
