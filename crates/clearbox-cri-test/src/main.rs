//! `cri-client`: a small Kubernetes CRI client (runtime.v1) for clearbox's tests, since Debian
//! 12 packages neither crictl nor a kubelet. It speaks to a CRI endpoint (containerd's CRI
//! plugin) over its Unix socket, one call per invocation, so a shell test can drive a pod:
//!
//! ```text
//! cri-client --socket S runp --name p --save pod.json      # prints the pod sandbox id
//! cri-client --socket S create --pod ID --pod-config pod.json --name c --image I -- sh -c ...
//! cri-client --socket S start|stop|rm|status|stats ID
//! cri-client --socket S update ID [--memory BYTES] [--cpu-quota US [--cpu-period US]]
//! cri-client --socket S exec ID -- CMD...                  # its stdout/stderr, its exit code
//! cri-client --socket S stopp|rmp|pod-status ID
//! cri-client --socket S pod-start --runtime-handler H --image I --parallel 10 -- sleep 1000
//! ```
//!
//! `pod-start` is the pod start benchmark's measurement (bench/pod-start.sh): it times
//! RunPodSandbox, CreateContainer and StartContainer of one container per pod, for N pods
//! started at once, prints the phases as JSON and removes the pods again.
//!
//! Answers are printed as JSON (the CRI messages' serde form: snake_case fields, enums as
//! numbers), so tests read them with `jq`.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};

mod pod_start;

#[derive(Parser)]
#[command(
    name = "cri-client",
    about = "A small CRI (runtime.v1) client for tests"
)]
struct Cli {
    /// The CRI endpoint's Unix socket.
    #[arg(long, env = "CRI_SOCKET")]
    socket: PathBuf,
    /// Seconds to wait for any one call.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The runtime's name and version.
    Version,
    /// RunPodSandbox: prints the pod sandbox id.
    Runp {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "default")]
        namespace: String,
        #[arg(long)]
        uid: Option<String>,
        /// RuntimeHandler (the containerd runtime name).
        #[arg(long, default_value = "")]
        runtime_handler: String,
        /// Directory of the containers' log files.
        #[arg(long)]
        log_dir: Option<String>,
        #[arg(long)]
        hostname: Option<String>,
        /// linux.cgroup_parent of the pod.
        #[arg(long)]
        cgroup_parent: Option<String>,
        /// Annotations of the pod (KEY=VALUE, repeatable).
        #[arg(long = "annotation")]
        annotations: Vec<String>,
        /// Writes the PodSandboxConfig here (CreateContainer needs it again).
        #[arg(long)]
        save: PathBuf,
    },
    /// PodSandboxStatus (JSON).
    PodStatus { id: String },
    /// StopPodSandbox.
    Stopp { id: String },
    /// RemovePodSandbox.
    Rmp { id: String },
    /// ListPodSandbox (JSON).
    Pods,
    /// CreateContainer in a pod: prints the container id.
    Create {
        #[arg(long)]
        pod: String,
        /// The PodSandboxConfig `runp --save` wrote.
        #[arg(long)]
        pod_config: PathBuf,
        #[arg(long)]
        name: String,
        #[arg(long)]
        image: String,
        /// Log file, relative to the pod's log directory.
        #[arg(long)]
        log_path: Option<String>,
        /// Environment (KEY=VALUE, repeatable).
        #[arg(long = "env")]
        env: Vec<String>,
        /// Memory limit in bytes.
        #[arg(long)]
        memory: Option<i64>,
        /// CPU quota and period (CFS, microseconds).
        #[arg(long)]
        cpu_quota: Option<i64>,
        #[arg(long, default_value_t = 100_000)]
        cpu_period: i64,
        /// The command (entrypoint) and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// StartContainer.
    Start { id: String },
    /// StopContainer (SIGTERM, then SIGKILL after the timeout).
    Stop {
        id: String,
        #[arg(long, default_value_t = 10)]
        grace: i64,
    },
    /// RemoveContainer.
    Rm { id: String },
    /// ContainerStatus (JSON).
    Status { id: String },
    /// ContainerStats (JSON).
    Stats { id: String },
    /// UpdateContainerResources: new memory limit (bytes) and/or CPU quota/period.
    Update {
        id: String,
        #[arg(long)]
        memory: Option<i64>,
        #[arg(long)]
        cpu_quota: Option<i64>,
        #[arg(long, default_value_t = 100_000)]
        cpu_period: i64,
    },
    /// ListContainers (JSON), of one pod if given.
    Ps {
        #[arg(long)]
        pod: Option<String>,
    },
    /// Pod start, timed: N pods at once, each RunPodSandbox then CreateContainer + StartContainer
    /// of one container; prints the phases (JSON), then stops and removes the pods.
    PodStart(pod_start::Args),
    /// ExecSync: prints the command's stdout and stderr and exits with its exit code.
    Exec {
        id: String,
        #[arg(long, default_value_t = 60)]
        exec_timeout: i64,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

pub(crate) fn pairs(list: &[String]) -> Result<HashMap<String, String>> {
    list.iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| format!("{kv:?} is not KEY=VALUE"))
        })
        .collect()
}

/// What a test says about a pod; the rest of its PodSandboxConfig is what a kubelet sends for
/// a plain pod (pod network, IPC shared in the pod, a PID namespace per container).
pub(crate) struct PodOpts {
    pub name: String,
    pub namespace: String,
    pub uid: Option<String>,
    pub log_dir: Option<String>,
    pub hostname: Option<String>,
    pub cgroup_parent: Option<String>,
    pub annotations: HashMap<String, String>,
}

impl PodOpts {
    pub fn config(self) -> cri::PodSandboxConfig {
        cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                uid: self.uid.unwrap_or_else(|| format!("uid-{}", self.name)),
                name: self.name.clone(),
                namespace: self.namespace,
                attempt: 0,
            }),
            hostname: self.hostname.unwrap_or(self.name),
            log_directory: self.log_dir.unwrap_or_default(),
            annotations: self.annotations,
            linux: Some(cri::LinuxPodSandboxConfig {
                cgroup_parent: self.cgroup_parent.unwrap_or_default(),
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(namespace_options()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

fn namespace_options() -> cri::NamespaceOption {
    cri::NamespaceOption {
        network: cri::NamespaceMode::Pod as i32,
        pid: cri::NamespaceMode::Container as i32,
        ipc: cri::NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

/// What a test says about a container of a pod.
pub(crate) struct ContainerOpts {
    pub name: String,
    pub image: String,
    pub log_path: Option<String>,
    pub env: HashMap<String, String>,
    pub memory: Option<i64>,
    pub cpu_quota: Option<i64>,
    pub cpu_period: i64,
    pub command: Vec<String>,
}

impl ContainerOpts {
    pub fn config(self) -> cri::ContainerConfig {
        let resources = cri::LinuxContainerResources {
            memory_limit_in_bytes: self.memory.unwrap_or(0),
            cpu_quota: self.cpu_quota.unwrap_or(0),
            cpu_period: if self.cpu_quota.is_some() {
                self.cpu_period
            } else {
                0
            },
            ..Default::default()
        };
        cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: self.name.clone(),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: self.image,
                ..Default::default()
            }),
            command: self.command,
            envs: self
                .env
                .into_iter()
                .map(|(key, value)| cri::KeyValue { key, value })
                .collect(),
            log_path: self
                .log_path
                .unwrap_or_else(|| format!("{}.log", self.name)),
            linux: Some(cri::LinuxContainerConfig {
                resources: Some(resources),
                security_context: Some(cri::LinuxContainerSecurityContext {
                    namespace_options: Some(namespace_options()),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }
    }
}

async fn connect(socket: &Path) -> Result<RuntimeServiceClient<Channel>> {
    let path = socket.to_path_buf();
    // The URI is not used: every connection goes to the Unix socket.
    let channel = Endpoint::try_from("http://[::]:50051")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
        .with_context(|| format!("connect to {}", socket.display()))?;
    Ok(RuntimeServiceClient::new(channel))
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let limit = std::time::Duration::from_secs(cli.timeout);
    match tokio::time::timeout(limit, run(cli)).await {
        Ok(r) => r,
        Err(_) => bail!("no answer within {}s", limit.as_secs()),
    }
}

async fn run(cli: Cli) -> Result<()> {
    let mut c = connect(&cli.socket).await?;
    match cli.cmd {
        Cmd::Version => {
            let v = c
                .version(cri::VersionRequest::default())
                .await?
                .into_inner();
            print_json(&v)?;
        }
        Cmd::Runp {
            name,
            namespace,
            uid,
            runtime_handler,
            log_dir,
            hostname,
            cgroup_parent,
            annotations,
            save,
        } => {
            let config = PodOpts {
                name,
                namespace,
                uid,
                log_dir,
                hostname,
                cgroup_parent,
                annotations: pairs(&annotations)?,
            }
            .config();
            std::fs::write(&save, serde_json::to_vec(&config)?)
                .with_context(|| format!("write {}", save.display()))?;
            let r = c
                .run_pod_sandbox(cri::RunPodSandboxRequest {
                    config: Some(config),
                    runtime_handler,
                })
                .await?
                .into_inner();
            println!("{}", r.pod_sandbox_id);
        }
        Cmd::PodStatus { id } => {
            let r = c
                .pod_sandbox_status(cri::PodSandboxStatusRequest {
                    pod_sandbox_id: id,
                    verbose: false,
                })
                .await?
                .into_inner();
            print_json(&r.status)?;
        }
        Cmd::Stopp { id } => {
            c.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: id })
                .await?;
        }
        Cmd::Rmp { id } => {
            c.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: id })
                .await?;
        }
        Cmd::Pods => {
            let r = c
                .list_pod_sandbox(cri::ListPodSandboxRequest::default())
                .await?
                .into_inner();
            print_json(&r.items)?;
        }
        Cmd::Create {
            pod,
            pod_config,
            name,
            image,
            log_path,
            env,
            memory,
            cpu_quota,
            cpu_period,
            command,
        } => {
            let text = std::fs::read(&pod_config)
                .with_context(|| format!("read {}", pod_config.display()))?;
            let sandbox_config: cri::PodSandboxConfig = serde_json::from_slice(&text)
                .with_context(|| format!("parse {}", pod_config.display()))?;
            let config = ContainerOpts {
                name,
                image,
                log_path,
                env: pairs(&env)?,
                memory,
                cpu_quota,
                cpu_period,
                command,
            }
            .config();
            let r = c
                .create_container(cri::CreateContainerRequest {
                    pod_sandbox_id: pod,
                    config: Some(config),
                    sandbox_config: Some(sandbox_config),
                })
                .await?
                .into_inner();
            println!("{}", r.container_id);
        }
        Cmd::Start { id } => {
            c.start_container(cri::StartContainerRequest { container_id: id })
                .await?;
        }
        Cmd::Stop { id, grace } => {
            c.stop_container(cri::StopContainerRequest {
                container_id: id,
                timeout: grace,
            })
            .await?;
        }
        Cmd::Rm { id } => {
            c.remove_container(cri::RemoveContainerRequest { container_id: id })
                .await?;
        }
        Cmd::Status { id } => {
            let r = c
                .container_status(cri::ContainerStatusRequest {
                    container_id: id,
                    verbose: false,
                })
                .await?
                .into_inner();
            print_json(&r.status)?;
        }
        Cmd::Stats { id } => {
            let r = c
                .container_stats(cri::ContainerStatsRequest { container_id: id })
                .await?
                .into_inner();
            print_json(&r.stats)?;
        }
        Cmd::Update {
            id,
            memory,
            cpu_quota,
            cpu_period,
        } => {
            let linux = cri::LinuxContainerResources {
                memory_limit_in_bytes: memory.unwrap_or(0),
                cpu_quota: cpu_quota.unwrap_or(0),
                cpu_period: if cpu_quota.is_some() { cpu_period } else { 0 },
                ..Default::default()
            };
            c.update_container_resources(cri::UpdateContainerResourcesRequest {
                container_id: id,
                linux: Some(linux),
                ..Default::default()
            })
            .await?;
        }
        Cmd::Ps { pod } => {
            let filter = pod.map(|p| cri::ContainerFilter {
                pod_sandbox_id: p,
                ..Default::default()
            });
            let r = c
                .list_containers(cri::ListContainersRequest { filter })
                .await?
                .into_inner();
            print_json(&r.containers)?;
        }
        Cmd::PodStart(args) => pod_start::run(c, args).await?,
        Cmd::Exec {
            id,
            exec_timeout,
            command,
        } => {
            let r = c
                .exec_sync(cri::ExecSyncRequest {
                    container_id: id,
                    cmd: command,
                    timeout: exec_timeout,
                })
                .await?
                .into_inner();
            std::io::stdout().write_all(&r.stdout)?;
            std::io::stderr().write_all(&r.stderr)?;
            std::io::stdout().flush()?;
            std::process::exit(r.exit_code);
        }
    }
    Ok(())
}
