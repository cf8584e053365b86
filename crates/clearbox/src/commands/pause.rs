//! `clearbox pause` and `clearbox resume`

use anyhow::Result;
use clearbox_core::Runtime;

pub fn pause(rt: &Runtime<'_>, a: liboci_cli::Pause) -> Result<()> {
    Ok(rt.pause(&a.container_id)?)
}

pub fn resume(rt: &Runtime<'_>, a: liboci_cli::Resume) -> Result<()> {
    Ok(rt.resume(&a.container_id)?)
}
