//! `/etc/clearbox/config.toml`: host-wide defaults.
//!
//! ```toml
//! isolation = "namespaces"   # vm | namespaces | fly
//!
//! [vm]
//! kernel = "/usr/share/clearbox/vmlinux"
//! initrd = "/usr/share/clearbox/initramfs.img"
//! accel = "auto"             # auto | kvm | tcg
//! # A container without CPU or memory limits gets a VM sized from the host, capped:
//! max_vcpus = 2              # default: min(host CPUs, max_vcpus); 1 under TCG emulation
//! max_memory_mib = 2048      # default: min(half the host's memory, max_memory_mib)
//! # or fixed sizes instead (they win over the host-based default):
//! # vcpus = 1
//! # memory_mib = 512
//! # Each VM's QEMU and vsock backend run as a uid/gid leased from this range
//! # (docs/SECURITY.md); keep it clear of login users and subuid ranges.
//! jail_uid_base = 1000000000
//! jail_uid_count = 65536
//! # Restore VMs from a saved template instead of booting them: unset (the default) where
//! # the host supports it (QEMU 10+, the Rust virtiofsd), else a cold boot; true requires
//! # it; false boots every VM cold (docs/ARCHITECTURE.md); kept in template_dir.
//! template = false
//! template_dir = "/dev/shm/clearbox-templates"
//! template_max = 8           # templates kept (one per VM size, NIC count…); LRU beyond
//!
//! [image]                    # clearbox image / trust (all optional)
//! store = "/var/lib/clearbox/images"
//! bundles = "/var/lib/clearbox/bundles"
//! user = "clearbox-fetch"    # the unprivileged user that fetches, verifies and unpacks
//! policy = "/etc/clearbox/policy.json"
//! trust_dir = "/etc/clearbox/trust"
//! lookaside = "file:///var/lib/containers/sigstore"
//! insecure_registries = ["127.0.0.1:5000"]
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::Error;
use crate::isolation::Isolation;

/// Where the configuration lives unless `CLEARBOX_CONFIG` names another file.
pub const DEFAULT_PATH: &str = "/etc/clearbox/config.toml";

/// The parsed configuration file; every field is optional.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Default isolation for containers that do not ask for one.
    pub isolation: Option<Isolation>,
    /// Defaults for the VM backend.
    #[serde(default)]
    pub vm: VmDefaults,
    /// Settings of `clearbox image` and `clearbox trust`.
    #[serde(default)]
    pub image: ImageDefaults,
}

/// `[image]`: where images and trust live and who fetches them. Plain settings: the core does not
/// know the image library, the binary hands these to it.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageDefaults {
    pub store: Option<PathBuf>,
    pub bundles: Option<PathBuf>,
    pub user: Option<String>,
    pub policy: Option<PathBuf>,
    pub trust_dir: Option<PathBuf>,
    pub lookaside: Option<String>,
    #[serde(default)]
    pub insecure_registries: Vec<String>,
}

/// Defaults for `isolation = "vm"`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmDefaults {
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub accel: Option<String>,
    /// Fixed vCPU count of a VM whose spec sets no CPU quota.
    pub vcpus: Option<u32>,
    /// Fixed memory of a VM whose spec sets no memory limit.
    pub memory_mib: Option<u32>,
    /// First uid/gid of the range VMs' host processes run as.
    pub jail_uid_base: Option<u32>,
    /// Size of that range (VMs that can run at once).
    pub jail_uid_count: Option<u32>,
    /// Cap of the host-based vCPU default.
    pub max_vcpus: Option<u32>,
    /// Cap of the host-based memory default.
    pub max_memory_mib: Option<u32>,
    /// VM templates: unset, on where the host supports them; `true` required; `false` off
    /// (every VM boots cold).
    pub template: Option<bool>,
    /// Where VM templates are kept.
    pub template_dir: Option<PathBuf>,
    /// Most templates kept (each holds a booted guest's memory on tmpfs); the least
    /// recently used go first.
    pub template_max: Option<usize>,
}

impl Config {
    /// Reads the configuration from `CLEARBOX_CONFIG` or [`DEFAULT_PATH`]; a missing file is an
    /// empty configuration, an unreadable or malformed one is an error.
    pub fn load_default() -> Result<Self, Error> {
        let path = std::env::var_os("CLEARBOX_CONFIG")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH));
        Self::load(&path)
    }

    pub fn load(path: &Path) -> Result<Self, Error> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text).map_err(|source| Error::Config {
                path: path.to_path_buf(),
                source: Box::new(source),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(Error::Config {
                path: path.to_path_buf(),
                source: Box::new(e),
            }),
        }
    }

    pub fn parse(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_isolation_and_vm() {
        let c = Config::parse("isolation = \"fly\"\n[vm]\nvcpus = 2\n").unwrap();
        assert_eq!(c.isolation, Some(Isolation::Fly));
        assert_eq!(c.vm.vcpus, Some(2));
        let c =
            Config::parse("[image]\nuser = \"f\"\ninsecure_registries = [\"127.0.0.1:5000\"]\n")
                .unwrap();
        assert_eq!(c.image.user.as_deref(), Some("f"));
        assert_eq!(c.image.insecure_registries, ["127.0.0.1:5000"]);
    }

    #[test]
    fn rejects_typos_and_bad_values() {
        assert!(Config::parse("isolaton = \"fly\"").is_err());
        assert!(Config::parse("isolation = \"kvm\"").is_err());
    }

    #[test]
    fn missing_file_is_empty() {
        let c = Config::load(Path::new("/nonexistent/clearbox.toml")).unwrap();
        assert!(c.isolation.is_none());
    }
}
