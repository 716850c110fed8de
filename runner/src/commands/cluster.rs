//! What the runner asks of `--cluster`: the cluster flags as data for the
//! launcher plug, the workers it wants started, and `runner cluster status |
//! scale | teardown` on a launch that outlives its command. Which platform
//! that is, and its rules, are the plug's business.

use forloop_core::cluster::{ClusterFlags, LaunchOutcome, WorkerRequest};
use forloop_core::{Driver, LaunchHandle, QueueAddress};

use super::context::Context;
use super::worker_settings::worker_settings;
use crate::Failure;
use crate::cli::{ClusterCommand, ClusterOpts, LogFormat, WorkerOpts};

/// The cluster flags of `run` and `launch`, as the plug reads them.
pub(crate) fn cluster_flags(opts: &ClusterOpts) -> ClusterFlags {
    let mut flags = ClusterFlags::new(opts.namespace.clone());
    flags.image.clone_from(&opts.image);
    flags.service_account.clone_from(&opts.service_account);
    flags.cpu.clone_from(&opts.cpu);
    flags.memory.clone_from(&opts.memory);
    flags.preemptible = opts.preemptible;
    flags.backoff_limit = opts.backoff_limit;
    flags.ttl = opts.ttl;
    flags.active_deadline = opts.active_deadline;
    flags.env_secrets.clone_from(&opts.env_secrets);
    flags.keda = opts.keda;
    flags.kubeconfig.clone_from(&opts.kubeconfig);
    flags.metrics_port = opts.metrics_port;
    flags
}

/// The workers `run` (`until_drained`) or `launch` asks for: this
/// program's `work` on the queue, with the worker flags as settings, for
/// `job` where they are started for one.
pub(crate) fn worker_request(
    context: &Context<'_>,
    (driver, address): (&dyn Driver, &QueueAddress),
    opts: &WorkerOpts,
    (workers, max_restarts): (u32, u32),
    command: &[String],
    job: Option<&str>,
    until_drained: bool,
) -> WorkerRequest {
    let mut request = WorkerRequest::new(
        context.name.clone(),
        workers,
        command.to_vec(),
        address.spec.clone(),
    );
    request.max_restarts = max_restarts;
    request.log_format = match context.log_format {
        LogFormat::Text => "text",
        LogFormat::Json => "json",
    }
    .to_string();
    request.settings = worker_settings(opts)
        .into_iter()
        .map(|(flag, value)| (flag.to_string(), value))
        .collect();
    if let Some(job) = job {
        request.settings.push(("job".to_string(), job.to_string()));
    }
    request.joblog.clone_from(&opts.joblog);
    request.queue_environment = driver
        .environment()
        .iter()
        .map(|key| key.to_string())
        .collect();
    request.grace = opts.grace;
    request.until_drained = until_drained;
    request
}

/// `runner cluster status | scale | teardown`.
pub(crate) async fn cluster(context: &Context<'_>, command: ClusterCommand) -> Result<u8, Failure> {
    let plug = context.launcher()?;
    let (ClusterCommand::Status { target, .. }
    | ClusterCommand::Scale { target, .. }
    | ClusterCommand::Teardown { target }) = &command;
    let mut flags = ClusterFlags::new(target.namespace.clone());
    flags.kubeconfig.clone_from(&target.kubeconfig);
    let launcher = plug.connect(&flags).await?;
    if !launcher.persists() {
        return Err(Failure::new(
            "`runner cluster` acts on a Kubernetes Job: pass --cluster gke or --cluster k8s",
        ));
    }
    let handle = LaunchHandle(context.name.clone());
    let name = launcher.name_of(&handle);
    match command {
        ClusterCommand::Status { json, .. } => {
            let state = launcher.state(&handle).await?;
            let c = state.counts;
            if json {
                let (outcome, reason) = match &state.outcome {
                    None => ("running", String::new()),
                    Some(LaunchOutcome::Complete) => ("complete", String::new()),
                    Some(LaunchOutcome::Failed { reason, .. }) => ("failed", reason.clone()),
                };
                println!(
                    "{}",
                    serde_json::json!({
                        "job": handle.0, "desired": c.desired, "running": c.running,
                        "succeeded": c.succeeded, "failed": c.failed, "disrupted": c.disrupted,
                        "state": outcome, "reason": reason,
                    })
                );
            } else {
                println!(
                    "{name}: {} workers wanted; {}{}",
                    c.desired,
                    launcher.describe_workers(&c),
                    state.outcome.as_ref().map_or_else(String::new, |o| format!(
                        "; {}",
                        launcher.describe_outcome(o)
                    ))
                );
            }
        }
        ClusterCommand::Scale { workers, .. } => {
            launcher.scale(&handle, workers).await?;
            eprintln!("runner: {name} now runs {workers} workers");
        }
        ClusterCommand::Teardown { .. } => {
            launcher.teardown(&handle).await?;
            eprintln!("runner: deleted {name}; its workers hand their items back");
        }
    }
    Ok(0)
}
