//! `clearbox create`

use anyhow::Result;
use clearbox_core::runtime::CreateArgs;
use clearbox_core::Runtime;

pub fn args(a: &liboci_cli::Create) -> CreateArgs {
    CreateArgs {
        id: a.container_id.clone(),
        bundle: a.bundle.clone(),
        console_socket: a.console_socket.clone(),
        pid_file: a.pid_file.clone(),
        preserve_fds: a.preserve_fds,
        no_pivot: a.no_pivot,
        no_new_keyring: a.no_new_keyring,
    }
}

pub fn run(rt: &Runtime<'_>, a: liboci_cli::Create) -> Result<()> {
    rt.create(&args(&a), false)?;
    Ok(())
}
