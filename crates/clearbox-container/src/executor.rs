//! The last step of a libcontainer process: runc's program lookup and exec.
//!
//! libcontainer's default executor words its errors its own way ("executable 'x' not found in
//! $PATH"), which engines do not recognise: podman turns runc's "no such file or directory" /
//! "executable file not found" into 127 and "permission denied" into 126. This one checks the
//! program and the size of the argument list before the container is reported created (as runc
//! does), with runc's messages, and restores SIGPIPE's default disposition right before exec.

use std::ffi::CString;

use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use oci_spec::runtime::Spec;

use crate::process::{check_program, default_sigpipe, errno_text};

/// Marks the start of an executor message inside libcontainer's error chain.
pub(crate) const MARK: &str = "exec: \"";

#[derive(Debug, Clone, Default)]
pub struct RuncExecutor;

fn args_env(spec: &Spec) -> (&[String], &[String]) {
    let p = spec.process().as_ref();
    (
        p.and_then(|p| p.args().as_deref()).unwrap_or_default(),
        p.and_then(|p| p.env().as_deref()).unwrap_or_default(),
    )
}

impl Executor for RuncExecutor {
    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        let (args, env) = args_env(spec);
        check_program(args, env)
            .map(|_| ())
            .map_err(ExecutorValidationError::ArgValidationError)
    }

    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        let (args, env) = args_env(spec);
        let program = check_program(args, env).map_err(ExecutorError::Other)?;
        let arg0 = args.first().cloned().unwrap_or_default();
        let cstr = |s: &str| {
            CString::new(s).map_err(|_| ExecutorError::Other(format!("exec: {arg0:?}: NUL byte")))
        };
        let path = cstr(&program.to_string_lossy())?;
        let argv = args
            .iter()
            .map(|a| cstr(a))
            .collect::<Result<Vec<_>, _>>()?;
        default_sigpipe();
        // The environment is the process's own (libcontainer's setup_envs set it).
        let err = match nix::unistd::execv(&path, &argv) {
            Err(e) => e,
            Ok(never) => match never {},
        };
        Err(ExecutorError::Other(format!(
            "exec: {arg0:?}: {}",
            errno_text(err as i32)
        )))
    }
}

/// libcontainer's error chain for a failed create or exec, as one line; a failure of the
/// program itself becomes runc's "unable to start container process: exec: ..." instead of
/// libcontainer's nesting of it.
pub(crate) fn describe(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut text = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        text.push_str(": ");
        text.push_str(&s.to_string());
        src = s.source();
    }
    let at = text.find(MARK)?;
    Some(format!(
        "unable to start container process: {}",
        &text[at..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_errors_read_as_runc_words_them() {
        #[derive(Debug, thiserror::Error)]
        #[error("failed to create container")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other(
            "exec process failed with error error in executing process : exec: \"/x\": stat /x: no such file or directory",
        ));
        assert_eq!(
            describe(&e).unwrap(),
            "unable to start container process: exec: \"/x\": stat /x: no such file or directory"
        );
        assert!(describe(&std::io::Error::other("other")).is_none());
    }
}
