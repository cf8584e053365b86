//! `clearbox start`

use anyhow::Result;
use clearbox_core::Runtime;

pub fn run(rt: &Runtime<'_>, a: liboci_cli::Start) -> Result<()> {
    rt.start(&a.container_id)?;
    Ok(())
}
