//! `clearbox kill ID [SIGNAL]`

use anyhow::Result;
use clearbox_core::{signal, Runtime};

use crate::cli::Kill;

pub fn run(rt: &Runtime<'_>, a: Kill) -> Result<()> {
    let sig = signal::parse(&a.signal)?;
    rt.kill(&a.container_id, sig, a.all)?;
    Ok(())
}
