//! `pod-start`: the measurement of bench/pod-start.sh. N pods are started at once, as a kubelet
//! starts the pods scheduled to its node: each RunPodSandbox, then CreateContainer and
//! StartContainer of its one container. Every phase of every pod is timed on the client (what
//! a kubelet waits for), and the wall time from the first request to the last StartContainer
//! answer. The pods are stopped and removed afterwards (timed apart), also when one failed, so
//! a benchmark run leaves nothing behind; `--keep` leaves them running (the overhead
//! measurement idles them) and prints their ids.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use serde::Serialize;
use tonic::transport::Channel;

use crate::{pairs, ContainerOpts, PodOpts};

#[derive(clap::Args)]
pub struct Args {
    /// RuntimeHandler of the pods (the containerd runtime name).
    #[arg(long, default_value = "")]
    runtime_handler: String,
    /// The container's image (already in the CRI plugin's image store).
    #[arg(long)]
    image: String,
    /// Pods started at once.
    #[arg(long, default_value_t = 1)]
    parallel: usize,
    /// Pod names are PREFIX-1 .. PREFIX-N (unique per call: pods of one name clash).
    #[arg(long, default_value = "podstart")]
    name_prefix: String,
    /// Directory of the containers' log files.
    #[arg(long)]
    log_dir: Option<String>,
    /// linux.cgroup_parent of every pod.
    #[arg(long)]
    cgroup_parent: Option<String>,
    /// Annotations of every pod (KEY=VALUE, repeatable).
    #[arg(long = "annotation")]
    annotations: Vec<String>,
    /// Leave the pods running (their ids are in the JSON); the caller removes them.
    #[arg(long)]
    keep: bool,
    /// The container's command and arguments.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

/// One pod's phases, in milliseconds from the client's view.
#[derive(Serialize, Default)]
struct Pod {
    name: String,
    pod_id: String,
    container_id: String,
    run_pod_sandbox_ms: f64,
    create_container_ms: f64,
    start_container_ms: f64,
    /// RunPodSandbox sent → StartContainer answered.
    total_ms: f64,
    /// Set when a phase failed (the pod is still removed).
    error: Option<String>,
}

#[derive(Serialize)]
struct Report {
    runtime_handler: String,
    parallel: usize,
    /// First RunPodSandbox sent → last StartContainer answered.
    wall_ms: f64,
    /// StopPodSandbox + RemovePodSandbox of every pod (not part of the start).
    cleanup_ms: Option<f64>,
    pods: Vec<Pod>,
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

/// What every pod of a call shares.
struct Common {
    runtime_handler: String,
    image: String,
    log_dir: Option<String>,
    cgroup_parent: Option<String>,
    annotations: HashMap<String, String>,
    command: Vec<String>,
}

async fn start_one(mut c: RuntimeServiceClient<Channel>, name: String, args: Arc<Common>) -> Pod {
    let mut pod = Pod {
        name: name.clone(),
        ..Default::default()
    };
    let sandbox = PodOpts {
        name: name.clone(),
        namespace: "bench".into(),
        uid: None,
        log_dir: args.log_dir.clone(),
        hostname: None,
        cgroup_parent: args.cgroup_parent.clone(),
        annotations: args.annotations.clone(),
    }
    .config();
    let container = ContainerOpts {
        name: "app".into(),
        image: args.image.clone(),
        log_path: Some(format!("{name}-app.log")),
        env: Default::default(),
        memory: None,
        cpu_quota: None,
        cpu_period: 0,
        command: args.command.clone(),
    }
    .config();
    let t0 = Instant::now();
    let r = c
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(sandbox.clone()),
            runtime_handler: args.runtime_handler.clone(),
        })
        .await;
    pod.run_pod_sandbox_ms = ms(t0);
    match r {
        Ok(r) => pod.pod_id = r.into_inner().pod_sandbox_id,
        Err(e) => {
            pod.error = Some(format!("RunPodSandbox: {}", e.message()));
            return pod;
        }
    }
    let t1 = Instant::now();
    let r = c
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.pod_id.clone(),
            config: Some(container),
            sandbox_config: Some(sandbox),
        })
        .await;
    pod.create_container_ms = ms(t1);
    match r {
        Ok(r) => pod.container_id = r.into_inner().container_id,
        Err(e) => {
            pod.error = Some(format!("CreateContainer: {}", e.message()));
            return pod;
        }
    }
    let t2 = Instant::now();
    let r = c
        .start_container(cri::StartContainerRequest {
            container_id: pod.container_id.clone(),
        })
        .await;
    pod.start_container_ms = ms(t2);
    pod.total_ms = ms(t0);
    if let Err(e) = r {
        pod.error = Some(format!("StartContainer: {}", e.message()));
    }
    pod
}

async fn remove(mut c: RuntimeServiceClient<Channel>, id: String) -> Result<()> {
    c.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: id.clone(),
    })
    .await
    .with_context(|| format!("StopPodSandbox {id}"))?;
    c.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: id.clone(),
    })
    .await
    .with_context(|| format!("RemovePodSandbox {id}"))?;
    Ok(())
}

pub async fn run(c: RuntimeServiceClient<Channel>, args: Args) -> Result<()> {
    if args.parallel == 0 {
        bail!("--parallel must be at least 1");
    }
    let common = Arc::new(Common {
        runtime_handler: args.runtime_handler.clone(),
        image: args.image.clone(),
        log_dir: args.log_dir.clone(),
        cgroup_parent: args.cgroup_parent.clone(),
        annotations: pairs(&args.annotations)?,
        command: args.command.clone(),
    });
    // One connection, as a kubelet has; the requests of the N pods are multiplexed on it.
    let starts = (1..=args.parallel).map(|i| {
        let name = format!("{}-{i}", args.name_prefix);
        start_one(c.clone(), name, common.clone())
    });
    let t0 = Instant::now();
    let pods = join_all(starts).await?;
    let wall_ms = ms(t0);
    let mut report = Report {
        runtime_handler: args.runtime_handler.clone(),
        parallel: args.parallel,
        wall_ms,
        cleanup_ms: None,
        pods,
    };
    let failed: Vec<String> = report
        .pods
        .iter()
        .filter_map(|p| p.error.as_ref().map(|e| format!("{}: {e}", p.name)))
        .collect();
    let mut cleanup_errors = Vec::new();
    if !args.keep || !failed.is_empty() {
        let t = Instant::now();
        let ids = report
            .pods
            .iter()
            .filter(|p| !p.pod_id.is_empty())
            .map(|p| remove(c.clone(), p.pod_id.clone()));
        for r in join_all(ids).await? {
            if let Err(e) = r {
                cleanup_errors.push(format!("{e:#}"));
            }
        }
        report.cleanup_ms = Some(ms(t));
    }
    println!("{}", serde_json::to_string_pretty(&report)?);
    if !failed.is_empty() {
        bail!(
            "{} of {} pods failed to start: {}",
            failed.len(),
            args.parallel,
            failed.join("; ")
        );
    }
    if !cleanup_errors.is_empty() {
        bail!("pods not removed: {}", cleanup_errors.join("; "));
    }
    Ok(())
}

/// Runs the futures as tasks of the client's runtime, all at once, and returns their outputs
/// in order.
async fn join_all<T: Send + 'static>(
    futs: impl Iterator<Item = impl std::future::Future<Output = T> + Send + 'static>,
) -> Result<Vec<T>> {
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut outs = Vec::with_capacity(handles.len());
    for h in handles {
        outs.push(h.await.context("a pod's task failed")?);
    }
    Ok(outs)
}
