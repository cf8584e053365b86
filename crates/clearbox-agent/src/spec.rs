//! The subset of the OCI runtime spec the agent reads. Parsed with serde directly (instead
//! of the `oci-spec` crate) to keep the static PID-1 binary small; unknown fields are ignored.

use serde::Deserialize;

pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, Default, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub umask: Option<u32>,
}

#[derive(Debug, Default, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct ConsoleSize {
    pub height: u16,
    pub width: u16,
}

#[derive(Debug, Default, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct Process {
    pub terminal: bool,
    pub console_size: Option<ConsoleSize>,
    pub user: User,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
}

#[derive(Debug, Default, Clone, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Root {
    pub path: String,
    pub readonly: bool,
}

#[derive(Debug, Default, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct Spec {
    pub process: Option<Process>,
    pub root: Option<Root>,
    pub hostname: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("invalid JSON")]
    Json(#[source] serde_json::Error),
    #[error("process.args is empty")]
    NoArgs,
    #[error("spec has no process")]
    NoProcess,
    #[error("process.cwd {0:?} is not absolute")]
    RelativeCwd(String),
}

impl Process {
    pub fn from_json(json: &[u8]) -> Result<Self, SpecError> {
        let mut p: Process = serde_json::from_slice(json).map_err(SpecError::Json)?;
        p.normalize()?;
        Ok(p)
    }

    fn normalize(&mut self) -> Result<(), SpecError> {
        if self.args.is_empty() || self.args[0].is_empty() {
            return Err(SpecError::NoArgs);
        }
        if self.cwd.is_empty() {
            self.cwd = "/".into();
        }
        if !self.cwd.starts_with('/') {
            return Err(SpecError::RelativeCwd(self.cwd.clone()));
        }
        if !self.env.iter().any(|e| e.starts_with("PATH=")) {
            self.env.push(DEFAULT_PATH.into());
        }
        Ok(())
    }
}

impl Spec {
    pub fn from_json(json: &[u8]) -> Result<Self, SpecError> {
        let mut s: Spec = serde_json::from_slice(json).map_err(SpecError::Json)?;
        s.process
            .as_mut()
            .ok_or(SpecError::NoProcess)?
            .normalize()?;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_oci_process_and_defaults() {
        let p = Process::from_json(
            br#"{"args":["sh"],"user":{"uid":1,"gid":2,"additionalGids":[3]},"consoleSize":{"height":24,"width":80},"unknown":1}"#,
        )
        .expect("parse");
        assert_eq!(p.args, vec!["sh"]);
        assert_eq!(p.user.additional_gids, vec![3]);
        assert_eq!(p.cwd, "/");
        assert_eq!(p.env, vec![DEFAULT_PATH.to_string()]);
        assert_eq!(p.console_size.map(|c| c.width), Some(80));
    }

    #[test]
    fn rejects_bad_processes() {
        assert!(matches!(
            Process::from_json(br#"{"args":[]}"#),
            Err(SpecError::NoArgs)
        ));
        assert!(matches!(
            Process::from_json(br#"{"args":["x"],"cwd":"rel"}"#),
            Err(SpecError::RelativeCwd(_))
        ));
        assert!(matches!(Process::from_json(b"{"), Err(SpecError::Json(_))));
    }

    #[test]
    fn parses_full_spec() {
        let s = Spec::from_json(
            br#"{"ociVersion":"1.0.2","process":{"args":["/bin/true"],"env":["PATH=/bin"]},"root":{"path":"rootfs","readonly":true},"hostname":"c1","linux":{}}"#,
        )
        .expect("parse");
        assert_eq!(s.hostname.as_deref(), Some("c1"));
        assert!(s.root.as_ref().is_some_and(|r| r.readonly));
        assert_eq!(
            s.process.map(|p| p.env),
            Some(vec!["PATH=/bin".to_string()])
        );
        assert!(matches!(Spec::from_json(b"{}"), Err(SpecError::NoProcess)));
    }
}
