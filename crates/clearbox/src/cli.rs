//! Command-line definition: runc's commands and global flags, plus `--isolation` and `check`.
//! The argument structs of the standard commands come from youki's `liboci-cli`, made for exactly
//! this; `kill` is ours because runc's signal argument is optional (SIGTERM).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use clearbox_core::Isolation;

#[derive(Parser, Debug)]
#[command(
    name = "clearbox",
    version = concat!("version ", env!("CARGO_PKG_VERSION"), "\nspec: ", "1.2.0"),
    about = "An OCI runtime that runs each container in its own lightweight VM (runc-compatible CLI)",
    disable_version_flag = true
)]
pub struct Cli {
    /// Print the version (runc's -v / --version)
    #[arg(short = 'v', long = "version", action = clap::ArgAction::Version)]
    version: Option<bool>,
    #[command(flatten)]
    pub global: GlobalOpts,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug)]
pub struct GlobalOpts {
    /// Root directory for container state
    #[arg(long, default_value = "/run/clearbox", global = true)]
    pub root: PathBuf,
    /// Log file (default: stderr)
    #[arg(long, global = true)]
    pub log: Option<PathBuf>,
    /// Log format: text or json
    #[arg(long, default_value = "text", value_parser = ["text", "json"], global = true)]
    pub log_format: String,
    /// Log level (debug, info, warn, error)
    #[arg(long, global = true)]
    pub log_level: Option<String>,
    /// Debug logging
    #[arg(long, global = true)]
    pub debug: bool,
    /// Use systemd to manage cgroups (needs systemd as the host's init)
    #[arg(long, global = true)]
    pub systemd_cgroup: bool,
    /// Isolation for new containers: vm, namespaces or fly (the annotation io.clearbox.isolation wins)
    #[arg(long, env = "CLEARBOX_ISOLATION", global = true, value_parser = parse_isolation)]
    pub isolation: Option<Isolation>,
    /// Accepted for runc compatibility; rootless mode is decided from the spec
    #[arg(long = "rootless", id = "global_rootless", hide = true)]
    pub rootless: Option<String>,
    /// Accepted for runc compatibility (checkpointing is not supported)
    #[arg(long, hide = true)]
    pub criu: Option<String>,
}

fn parse_isolation(s: &str) -> Result<Isolation, String> {
    s.parse().map_err(|e: clearbox_core::Error| e.to_string())
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a container
    Create(liboci_cli::Create),
    /// Start a created container
    Start(liboci_cli::Start),
    /// Print the state of a container
    State(liboci_cli::State),
    /// Send a signal to the container's init (default SIGTERM)
    Kill(Kill),
    /// Delete a container
    Delete(liboci_cli::Delete),
    /// Create and start a container
    Run(liboci_cli::Run),
    /// Run a process in a container
    Exec(liboci_cli::Exec),
    /// List the processes of a container
    Ps(liboci_cli::Ps),
    /// List containers
    List(liboci_cli::List),
    /// Suspend every process of a container
    Pause(liboci_cli::Pause),
    /// Resume a paused container
    Resume(liboci_cli::Resume),
    /// Print container events and resource statistics
    Events(Events),
    /// Change the resource limits of a container
    Update(Update),
    /// Checkpoint a running container (not supported)
    Checkpoint(Unsupported),
    /// Restore a container from a checkpoint (not supported)
    Restore(Unsupported),
    /// Print the features this runtime supports (JSON)
    Features(liboci_cli::Features),
    /// Write a template config.json
    Spec(liboci_cli::Spec),
    /// Tell what this host offers and lacks for VM isolation
    Check(Check),
    /// Pull, import, list, inspect, remove and run OCI images (signatures verified by default)
    Image(Image),
    /// Manage the keys trusted to sign images, per image-name prefix
    Trust(Trust),
    /// VM templates (VMs restored from a saved, booted VM instead of booted)
    Template(Template),
    /// Internal: the unprivileged fetch/verify/unpack worker (started by `image`)
    #[command(name = "__image-worker", hide = true)]
    ImageWorker,
    /// Internal: the host shim of one process of a VM container (started by create/exec)
    #[command(name = "__vm-shim", hide = true)]
    VmShim(VmShim),
}

#[derive(Args, Debug)]
pub struct VmShim {
    /// Request file written by the parent (read and removed by the shim)
    pub request: PathBuf,
    /// Descriptor of the pipe on which the shim reports readiness
    pub ready_fd: i32,
}

#[derive(Args, Debug)]
pub struct Kill {
    pub container_id: String,
    /// Signal name (KILL, SIGKILL) or number
    #[arg(default_value = "SIGTERM")]
    pub signal: String,
    /// Signal every process of the container
    #[arg(short, long)]
    pub all: bool,
}

#[derive(Args, Debug)]
pub struct Template {
    #[command(subcommand)]
    pub command: TemplateCommand,
}

#[derive(Subcommand, Debug)]
pub enum TemplateCommand {
    /// Build the templates of the default VM size now (they are built on first use anyway)
    Build(TemplateBuild),
    /// List the template cache: each template's VM size, memory held, last use and state
    List(TemplateList),
    /// Remove what no VM can use (stale templates, leftovers of failed builds); with --all,
    /// every template not in use right now
    Prune(TemplatePrune),
}

#[derive(Args, Debug)]
pub struct TemplateList {
    /// Output format: table or json
    #[arg(long, default_value = "table", value_parser = ["table", "json"])]
    pub format: String,
}

#[derive(Args, Debug)]
pub struct TemplatePrune {
    /// Remove every template not in use right now, not only the unusable ones (running VMs
    /// keep their own copy; the next VM of each size builds its template again)
    #[arg(long)]
    pub all: bool,
}

#[derive(Args, Debug)]
pub struct TemplateBuild {
    /// Network interfaces of the VMs to build for (one template per count)
    #[arg(long, value_delimiter = ',', default_values_t = [0usize, 1])]
    pub nics: Vec<usize>,
}

#[derive(Args, Debug)]
pub struct Check {
    /// Output format: text or json
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    pub format: String,
}

#[derive(Args, Debug)]
pub struct Image {
    #[command(subcommand)]
    pub command: ImageCommand,
}

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Fetch an image from a registry into the store (as the unprivileged fetch user)
    Pull(ImagePull),
    /// Import an OCI layout directory, an oci-archive or a docker-archive (detected from content)
    Import(ImageImport),
    /// List the images in the store
    #[command(alias = "ls")]
    List(ImageList),
    /// Print an image's record and config (JSON)
    Inspect(ImageInspect),
    /// Remove images; layers no other image uses go too
    Rm(ImageRm),
    /// Run an image in the foreground: bundle from its config, then create, start, wait, delete
    Run(ImageRun),
}

#[derive(Args, Debug)]
pub struct ImagePull {
    /// Image reference, e.g. registry.example.com/app:1.0
    pub reference: String,
    /// Do not check signatures (prints a warning)
    #[arg(long)]
    pub insecure_skip_verify: bool,
}

#[derive(Args, Debug)]
pub struct ImageImport {
    /// OCI layout directory, oci-archive or docker-archive tarball
    pub path: PathBuf,
    /// The image's name (needed when the source does not carry a full one)
    #[arg(long)]
    pub name: Option<String>,
    /// Do not check signatures (prints a warning)
    #[arg(long)]
    pub insecure_skip_verify: bool,
}

#[derive(Args, Debug)]
pub struct ImageList {
    /// Output format: table or json
    #[arg(long, default_value = "table", value_parser = ["table", "json"])]
    pub format: String,
}

#[derive(Args, Debug)]
pub struct ImageInspect {
    pub reference: String,
}

#[derive(Args, Debug)]
pub struct ImageRm {
    /// Image names (or sha256: digests)
    #[arg(required = true)]
    pub references: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ImageRun {
    /// Image reference; pulled (and verified) when not in the store
    pub reference: String,
    /// Arguments after `--` replace the image's cmd (its entrypoint stays)
    #[arg(last = true)]
    pub args: Vec<String>,
    /// Run an image whose signature is missing or untrusted (prints a warning)
    #[arg(long)]
    pub insecure_skip_verify: bool,
    /// Keep the bundle (rootfs and config.json) after the container exits
    #[arg(long)]
    pub keep: bool,
    /// Container id (default: img-<random>)
    #[arg(long)]
    pub name: Option<String>,
    /// Give the container a terminal (stdin must be one)
    #[arg(short, long)]
    pub tty: bool,
}

#[derive(Args, Debug)]
pub struct Trust {
    #[command(subcommand)]
    pub command: TrustCommand,
}

#[derive(Subcommand, Debug)]
pub enum TrustCommand {
    /// Trust a GPG public key (simple signing) or a cosign public key for a prefix
    Add(TrustAdd),
    /// List trusted keys per prefix
    #[command(alias = "ls")]
    List(TrustList),
    /// Stop trusting one key (fingerprint or id prefix, or file) or every key of a prefix
    Rm(TrustRm),
}

#[derive(Args, Debug)]
pub struct TrustAdd {
    /// Registry or registry/repository the key may sign, e.g. 127.0.0.1:5000/app
    #[arg(long)]
    pub prefix: String,
    /// Key type: gpg or cosign (default: detected from the file)
    #[arg(long = "type", value_parser = ["gpg", "cosign"])]
    pub kind: Option<String>,
    /// The public key file (GPG armored/binary, or cosign's PEM cosign.pub)
    pub key: PathBuf,
}

#[derive(Args, Debug)]
pub struct TrustList {
    /// Output format: table or json
    #[arg(long, default_value = "table", value_parser = ["table", "json"])]
    pub format: String,
}

#[derive(Args, Debug)]
pub struct TrustRm {
    #[arg(long)]
    pub prefix: String,
    /// Fingerprint / key id (or a prefix of it) or key file; all keys of the prefix when absent
    pub key: Option<String>,
}

/// `events`: runc's flags; `--interval` is a duration (`5s`, `100ms`; a bare number is seconds).
#[derive(Args, Debug)]
pub struct Events {
    /// Interval between two statistics events
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub interval: std::time::Duration,
    /// Print the statistics once and exit
    #[arg(long)]
    pub stats: bool,
    #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new(), required = true)]
    pub container_id: String,
}

/// `update`: runc's flags; sizes take units (`50M`, `1g`, `-1` for unlimited).
#[derive(Args, Debug)]
pub struct Update {
    /// Read the new resource limits from a JSON file (`-` for stdin); other flags are ignored
    #[arg(short, long)]
    pub resources: Option<PathBuf>,
    /// I/O weight (10-1000)
    #[arg(long)]
    pub blkio_weight: Option<u16>,
    /// CPU CFS period (microseconds)
    #[arg(long)]
    pub cpu_period: Option<u64>,
    /// CPU CFS quota (microseconds; -1 for none)
    #[arg(long, allow_hyphen_values = true)]
    pub cpu_quota: Option<i64>,
    /// CPU real-time period (microseconds)
    #[arg(long)]
    pub cpu_rt_period: Option<u64>,
    /// CPU real-time runtime (microseconds)
    #[arg(long, allow_hyphen_values = true)]
    pub cpu_rt_runtime: Option<i64>,
    /// CPU shares (relative weight)
    #[arg(long)]
    pub cpu_share: Option<u64>,
    /// CPUs to use (0-3,7)
    #[arg(long)]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes to use
    #[arg(long)]
    pub cpuset_mems: Option<String>,
    /// Memory limit (bytes, or with a unit: 50M, 1g; -1 for unlimited)
    #[arg(long, allow_hyphen_values = true, value_parser = parse_size)]
    pub memory: Option<i64>,
    /// Memory reservation (soft limit)
    #[arg(long, allow_hyphen_values = true, value_parser = parse_size)]
    pub memory_reservation: Option<i64>,
    /// Memory plus swap limit (-1 for unlimited swap)
    #[arg(long, allow_hyphen_values = true, value_parser = parse_size)]
    pub memory_swap: Option<i64>,
    /// Kernel memory limit (deprecated, ignored by runc on cgroup v2)
    #[arg(long, allow_hyphen_values = true, value_parser = parse_size)]
    pub kernel_memory: Option<i64>,
    /// Kernel TCP memory limit
    #[arg(long, allow_hyphen_values = true, value_parser = parse_size)]
    pub kernel_memory_tcp: Option<i64>,
    /// Maximum number of processes (-1 for unlimited)
    #[arg(long, allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    /// Intel RDT L3 cache schema
    #[arg(long)]
    pub l3_cache_schema: Option<String>,
    /// Intel RDT memory bandwidth schema
    #[arg(long)]
    pub mem_bw_schema: Option<String>,
    #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new(), required = true)]
    pub container_id: String,
}

/// A command runc has that clearbox answers with a clear error.
#[derive(Args, Debug)]
pub struct Unsupported {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    pub args: Vec<String>,
}

/// Go's `time.ParseDuration` for the units runc's users write (`ns`, `us`, `ms`, `s`, `m`,
/// `h`, combined as `1m30s`); a bare number is seconds (clearbox's old `--interval`).
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("invalid duration {text:?} (examples: 5s, 100ms, 1m30s)");
    let t = text.trim();
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(std::time::Duration::from_secs(secs));
    }
    let mut total = 0f64;
    let mut rest = t;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let value: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "\u{b5}s" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    Ok(std::time::Duration::from_secs_f64(total))
}

/// docker's `units.RAMInBytes` as runc's `update` uses it: `1024`, `50M`, `1.5g`, `2GiB`,
/// binary multiples; `-1` means unlimited.
pub fn parse_size(text: &str) -> Result<i64, String> {
    let bad = || format!("invalid size {text:?} (examples: 1048576, 50M, 1g, -1)");
    let t = text.trim();
    if t == "-1" {
        return Ok(-1);
    }
    let num_len = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    if num_len == 0 {
        return Err(bad());
    }
    let value: f64 = t[..num_len].parse().map_err(|_| bad())?;
    let unit = t[num_len..].trim_start().to_ascii_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        _ => return Err(bad()),
    };
    let bytes = value * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes >= i64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn durations_as_go_writes_them() {
        assert_eq!(parse_duration("1s").unwrap(), Duration::from_secs(1));
        assert_eq!(parse_duration("100ms").unwrap(), Duration::from_millis(100));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("5").unwrap(), Duration::from_secs(5));
        for bad in ["", "s", "5x", "-1s", "1.2.3s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_as_runc_reads_them() {
        assert_eq!(parse_size("50M").unwrap(), 50 << 20);
        assert_eq!(parse_size("1g").unwrap(), 1 << 30);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("512k").unwrap(), 512 << 10);
        assert_eq!(parse_size("1048576").unwrap(), 1 << 20);
        assert_eq!(parse_size("-1").unwrap(), -1);
        for bad in ["", "M", "5X", "-2", "1e3"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
