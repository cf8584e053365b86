//! The isolation kinds and how one is chosen for a container.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// OCI annotation that picks the isolation of one container; it wins over every other setting.
pub const ANNOTATION: &str = "io.clearbox.isolation";

/// How a container is isolated from the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// Hardware isolation: the container runs in its own lightweight VM.
    Vm,
    /// Software isolation on the host kernel: namespaces, cgroups, seccomp (runc-style).
    Namespaces,
    /// Host-level: chroot only, for privileged host agents (rkt's "fly").
    Fly,
}

impl Isolation {
    pub const ALL: [Isolation; 3] = [Isolation::Vm, Isolation::Namespaces, Isolation::Fly];

    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::Vm => "vm",
            Isolation::Namespaces => "namespaces",
            Isolation::Fly => "fly",
        }
    }
}

impl fmt::Display for Isolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Isolation {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s.trim() {
            "vm" => Ok(Isolation::Vm),
            "namespaces" => Ok(Isolation::Namespaces),
            "fly" => Ok(Isolation::Fly),
            other => Err(Error::InvalidIsolation(other.to_string())),
        }
    }
}

/// Picks the isolation: annotation `io.clearbox.isolation` > `--isolation` (or
/// `CLEARBOX_ISOLATION`) > `isolation` in the configuration file > `default`.
pub fn select(
    annotations: Option<&HashMap<String, String>>,
    flag: Option<Isolation>,
    config: Option<Isolation>,
    default: Isolation,
) -> Result<Isolation, Error> {
    if let Some(value) = annotations.and_then(|a| a.get(ANNOTATION)) {
        return value.parse();
    }
    Ok(flag.or(config).unwrap_or(default))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence() {
        let mut ann = HashMap::new();
        let d = Isolation::Namespaces;
        assert_eq!(select(None, None, None, d).unwrap(), d);
        assert_eq!(
            select(None, None, Some(Isolation::Fly), d).unwrap(),
            Isolation::Fly
        );
        assert_eq!(
            select(None, Some(Isolation::Vm), Some(Isolation::Fly), d).unwrap(),
            Isolation::Vm
        );
        ann.insert(ANNOTATION.to_string(), "fly".to_string());
        assert_eq!(
            select(Some(&ann), Some(Isolation::Vm), None, d).unwrap(),
            Isolation::Fly
        );
        ann.insert(ANNOTATION.to_string(), "kvm".to_string());
        assert!(select(Some(&ann), None, None, d).is_err());
    }
}
