//! `clearbox delete [--force] ID`

use anyhow::Result;
use clearbox_core::{Error, Runtime};

pub fn run(rt: &Runtime<'_>, a: liboci_cli::Delete) -> Result<()> {
    match rt.delete(&a.container_id, a.force) {
        // As runc: forcing the deletion of a container that is already gone succeeds.
        Err(Error::NotFound(_)) if a.force => Ok(()),
        other => Ok(other?),
    }
}
