//! `clearbox state`: the OCI state as JSON.

use anyhow::Result;
use clearbox_core::Runtime;

pub fn run(rt: &Runtime<'_>, a: liboci_cli::State) -> Result<()> {
    let s = rt.state(&a.container_id)?;
    println!("{}", serde_json::to_string_pretty(&s.oci())?);
    Ok(())
}
