//! What a request may name: a process of a container. Nothing runs outside a container, so
//! every request about a process or a container must name one; an empty container id is
//! refused before anything is looked up, and an unknown one is "not found".
//!
//! Errors stay typed here (part of `error::Error`); `service` turns them into ttrpc codes.

use std::sync::Arc;

use crate::process::Process;
use crate::state::State;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("container_id is empty: every process runs in a container")]
    EmptyContainerId,
    #[error("no process {exec_id:?} in container {container_id:?}")]
    UnknownProcess {
        container_id: String,
        exec_id: String,
    },
}

/// Refuses an empty container id.
pub fn container_id(id: &str) -> Result<(), RequestError> {
    if id.is_empty() {
        return Err(RequestError::EmptyContainerId);
    }
    Ok(())
}

/// The process `exec_id` of container `container_id` (`""`: its init).
pub fn find(
    state: &State,
    container_id: &str,
    exec_id: &str,
) -> Result<Arc<Process>, RequestError> {
    self::container_id(container_id)?;
    state
        .table()
        .procs
        .get(&(container_id.to_string(), exec_id.to_string()))
        .cloned()
        .ok_or_else(|| RequestError::UnknownProcess {
            container_id: container_id.to_string(),
            exec_id: exec_id.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_or_unknown_containers_are_refused() {
        let state = State::default();
        assert_eq!(container_id(""), Err(RequestError::EmptyContainerId));
        assert_eq!(container_id("c"), Ok(()));
        for exec in ["", "e1"] {
            assert_eq!(
                find(&state, "", exec).err(),
                Some(RequestError::EmptyContainerId)
            );
            assert!(matches!(
                find(&state, "nope", exec),
                Err(RequestError::UnknownProcess { .. })
            ));
        }
    }
}
