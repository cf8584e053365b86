//! Command-line definition: runc's commands and global flags, plus `--isolation` and `check`.
//! The argument structs of the standard commands come from youki's `liboci-cli`, made for exactly
//! this; `kill` is ours because runc's signal argument is optional (SIGTERM).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use clearbox_core::Isolation;

#[derive(Parser, Debug)]
#[command(
    name = "clearbox",
    version = concat!(env!("CARGO_PKG_VERSION"), "\nspec: ", "1.2.0"),
    about = "An OCI runtime that runs each container in its own lightweight VM (runc-compatible CLI)"
)]
pub struct Cli {
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
    Events(liboci_cli::Events),
    /// Change the resource limits of a container
    Update(liboci_cli::Update),
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
