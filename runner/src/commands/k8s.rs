//! `--cluster gke|k8s`: the workers as a Kubernetes Job (forloop-cluster-k8s).
//!
//! `run` checks everything first (queue, input, manifests, the cluster's
//! config), then creates the queue if missing, submits, creates the Job,
//! follows the queue and the Job until the Job ends, re-checks the queue, and
//! deletes the Job, so nothing is left running.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use forloop_cluster_k8s::{
    JobOutcome, JobState, K8sLauncher, K8sOptions, Nodes, ScaleTrigger, has_url_secret,
};
use forloop_core::cluster::{ClusterLauncher, LaunchHandle, LaunchSpec, WorkerCounts};
use forloop_core::worker::Shutdown;
use forloop_core::{Driver, QueueAddress, WorkQueue};

use super::shared::{follow_backlog, submit_input, summarize, worker_settings};
use super::{Context, check_worker_opts};
use crate::cli::{
    Cluster, ClusterCommand, ClusterOpts, LaunchArgs, LogFormat, RunArgs, WorkerOpts,
};
use crate::progress::Progress;
use crate::{Failure, signals};

/// GKE gives a spot or preemptible node's pods about this long after SIGTERM.
const SPOT_NOTICE: Duration = Duration::from_secs(15);
/// Time past the worker's own grace for it to hand items back and exit.
const EXIT_MARGIN: Duration = Duration::from_secs(5);
/// How often `run` and `launch` read the queue and the Job.
const POLL: Duration = Duration::from_secs(2);

/// Environment the workers inherit from this process when it is set here,
/// besides what the queue's driver names ([`Driver::environment`]).
const PASSED_ENV: [&str; 1] = ["RUST_LOG"];

/// Put `key=value` into the workers' environment, unless the value carries a
/// credential (a URL password or query token): then a Secret (`--env-secret`)
/// must provide it instead.
fn carry(
    env: &mut BTreeMap<String, String>,
    key: &str,
    value: &str,
    secrets: &[String],
) -> Result<(), Failure> {
    if !has_url_secret(value) {
        env.insert(key.to_string(), value.to_string());
        return Ok(());
    }
    if secrets.is_empty() {
        return Err(Failure::new(format!(
            "{key} carries a credential (a password or token), which never goes into a Kubernetes manifest. Put it in a \
             Secret (`kubectl create secret generic forloop-queue --from-literal={key}=...`) and \
             pass --env-secret forloop-queue"
        )));
    }
    // The Secret provides it.
    Ok(())
}

fn options(cluster: Cluster, opts: &ClusterOpts, keda: Option<ScaleTrigger>) -> K8sOptions {
    let nodes = match (cluster, opts.preemptible) {
        (_, true) => Nodes::Preemptible,
        (Cluster::Gke, false) => Nodes::Spot,
        _ => Nodes::Any,
    };
    let mut options = K8sOptions::new(opts.namespace.clone())
        .with_nodes(nodes)
        .with_resources(opts.cpu.clone(), opts.memory.clone())
        .with_backoff_limit(opts.backoff_limit)
        .with_ttl(opts.ttl)
        .with_active_deadline(opts.active_deadline)
        .with_keda(keda);
    if let Some(account) = &opts.service_account {
        options = options.with_service_account(account.clone());
    }
    for secret in &opts.env_secrets {
        options = options.with_env_from_secret(secret.clone());
    }
    options
}

/// The launch: `runner work -- CMD` in the image, settings as `FORLOOP_*`.
fn spec(
    context: &Context<'_>,
    (driver, address): (&dyn Driver, &QueueAddress),
    workers: u32,
    opts: &WorkerOpts,
    cluster: &ClusterOpts,
    command: &[String],
) -> Result<LaunchSpec, Failure> {
    if opts.joblog.is_some() {
        return Err(Failure::new(
            "--joblog writes a file on one machine, which a Kubernetes pod loses; leave it out \
             (workers log every attempt as JSON on stderr: read them in your cluster's logs)",
        ));
    }
    let image = cluster.image.clone().ok_or_else(|| {
        Failure::new(
            "--cluster gke|k8s needs --image REGISTRY/IMAGE:TAG: the worker image with runner and \
             your command in it (README: \"Deploy to GKE\")",
        )
    })?;
    let mut env = BTreeMap::new();
    carry(
        &mut env,
        "FORLOOP_QUEUE",
        &address.spec,
        &cluster.env_secrets,
    )?;
    env.insert("FORLOOP_NAME".to_string(), context.name.clone());
    for (flag, value) in worker_settings(opts) {
        let key = format!("FORLOOP_{}", flag.to_ascii_uppercase().replace('-', "_"));
        env.insert(key, value);
    }
    // Cloud logging reads one JSON object per line.
    env.insert(
        "FORLOOP_LOG_FORMAT".to_string(),
        match context.log_format {
            LogFormat::Text if std::env::var_os("FORLOOP_LOG_FORMAT").is_some() => "text",
            _ => "json",
        }
        .to_string(),
    );
    // The root filesystem is read-only; /tmp is the pod's scratch volume.
    env.insert("HOME".to_string(), "/tmp".to_string());
    for key in PASSED_ENV.iter().chain(driver.environment()) {
        if let Ok(value) = std::env::var(key) {
            carry(&mut env, key, &value, &cluster.env_secrets)?;
        }
    }
    // The image runs this program by the same name: `runner`, or a user's
    // own binary with its Rust function built in (then with no command).
    let program = std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.file_name()
                .map(|name| name.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "runner".to_string());
    let mut argv = vec![program, "work".to_string()];
    if !command.is_empty() {
        argv.push("--".to_string());
        argv.extend(command.iter().cloned());
    }
    let mut spec = LaunchSpec::new(context.name.clone(), workers, argv)
        .with_image(image)
        .with_grace(opts.grace + EXIT_MARGIN);
    spec.env = env;
    Ok(spec)
}

/// The launch and its Kubernetes options, with the manifests checked (no
/// side effects yet).
fn checked_launch(
    context: &Context<'_>,
    queue: (&dyn Driver, &QueueAddress),
    (workers, opts): (u32, &WorkerOpts),
    cluster: &ClusterOpts,
    keda: Option<ScaleTrigger>,
    command: &[String],
) -> Result<(LaunchSpec, K8sOptions), Failure> {
    let spec = spec(context, queue, workers, opts, cluster, command)?;
    let options = options(context.cluster, cluster, keda);
    options.render(&spec)?;
    Ok((spec, options))
}

fn warn_about_spot_notice(options: &K8sOptions, spec: &LaunchSpec) {
    if options.nodes != Nodes::Any && spec.grace > SPOT_NOTICE {
        tracing::warn!(
            "--grace plus {}s to exit is {}, but a preempted spot node gives pods about {}: \
             items still running then come back when their lease runs out",
            EXIT_MARGIN.as_secs(),
            humantime::format_duration(spec.grace),
            humantime::format_duration(SPOT_NOTICE)
        );
    }
}

fn describe(counts: &WorkerCounts) -> String {
    format!(
        "workers: {} running, {} exited 0, {} failed, {} preempted or evicted",
        counts.running, counts.succeeded, counts.failed, counts.disrupted
    )
}

fn describe_outcome(outcome: &JobOutcome) -> String {
    match outcome {
        JobOutcome::Complete => "the Job completed".to_string(),
        JobOutcome::Failed { reason, message } => {
            format!("the Job failed: {reason}: {message}")
        }
    }
}

/// Follow the Job until it ends, calling `on_tick` each poll; on SIGTERM or
/// SIGINT delete it (its workers hand their items back) and return the
/// signal's exit code.
async fn follow_job(
    launcher: &K8sLauncher,
    handle: &LaunchHandle,
    grace: Duration,
    mut on_tick: impl FnMut(&JobState),
) -> Result<(JobState, Option<u8>), Failure> {
    let shutdown = Shutdown::new();
    let received = signals::listen(shutdown.clone(), grace);
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.stopping() => {
                let state = launcher.job_state(handle).await;
                launcher.teardown(handle).await?;
                eprintln!("runner: deleted Job {handle}; its workers get SIGTERM and hand their items back");
                let state = state.unwrap_or(JobState { counts: WorkerCounts::default(), outcome: None });
                return Ok((state, received.exit_code()));
            }
        }
        match launcher.job_state(handle).await {
            Ok(state) => {
                failures = 0;
                on_tick(&state);
                if state.outcome.is_some() {
                    return Ok((state, None));
                }
            }
            // A blip of the API server is not the end of the run.
            Err(error) if failures < 5 => {
                failures += 1;
                tracing::warn!("reading the Job failed ({failures} in a row): {error}");
            }
            Err(error) => {
                return Err(Failure::new(format!(
                    "{error}. The Job may still be running: `runner --name {handle} --cluster gke \
                     cluster status` shows it, `... cluster teardown` stops it"
                )));
            }
        }
    }
}

/// Connect to the cluster, with the options of this launch.
async fn connect(cluster: &ClusterOpts, options: K8sOptions) -> Result<K8sLauncher, Failure> {
    Ok(K8sLauncher::connect(cluster.kubeconfig.as_deref(), options).await?)
}

/// `runner --cluster gke run`.
pub(crate) async fn run(context: &Context<'_>, args: RunArgs) -> Result<u8, Failure> {
    let (driver, address) = context.driver("run", None)?;
    let config = context.queue_config(Some(&args.worker));
    if args.cluster.keda {
        return Err(Failure::new(
            "--keda hands the workers to KEDA, which keeps scaling them as items arrive, so \
             there is no end for `run` to wait for: `runner launch --keda` once, then \
             `runner submit` as often as you like",
        ));
    }
    // Everything that can be checked without side effects, first.
    let (spec, options) = checked_launch(
        context,
        (&*driver, &address),
        (args.workers, &args.worker),
        &args.cluster,
        None,
        &args.command,
    )?;
    warn_about_spot_notice(&options, &spec);
    let launcher = connect(&args.cluster, options).await?;
    let handle = K8sLauncher::handle(&spec.name);
    launcher.ensure_free(&handle).await?;
    if driver.create(&address, &config).await? {
        tracing::info!("queue {} is ready", driver.redact(&address));
    }
    let queue: Arc<dyn WorkQueue> = context.open(&*driver, &address, config).await?;
    check_worker_opts(
        &args.worker,
        &queue.capabilities(),
        &driver.redact(&address),
    )?;

    let submitted = submit_input(context, &*queue, &args).await?;
    let handle = launcher.launch(&spec).await.map_err(|e| {
        Failure::new(format!(
            "{e}. The {} items are in the queue: fix that and start the workers with \
             `runner --cluster {} launch` and the same flags",
            submitted.total, context.cluster
        ))
    })?;
    eprintln!(
        "runner: created Job {handle} in namespace {} with {} workers",
        launcher.options().namespace,
        args.workers
    );
    let progress = Progress::start("done", submitted.total);
    let (tick, reader) = follow_backlog(&queue, &progress, &submitted);
    let (state, signal) = follow_job(&launcher, &handle, args.worker.grace, |_| {
        let _ = tick.send(());
    })
    .await?;
    drop(tick);
    let _ = reader.await;
    progress.finish();
    if signal.is_none() {
        // Leave nothing behind: the Job's pods have ended; the Job goes too.
        launcher.teardown(&handle).await?;
    }
    let mut workers = describe(&state.counts);
    if let Some(outcome) = &state.outcome {
        workers = format!("{}; {workers}", describe_outcome(outcome));
    }
    let ok = state.outcome == Some(JobOutcome::Complete);
    summarize(&*queue, &submitted, &workers, ok, signal).await
}

/// `runner --cluster gke launch`.
pub(crate) async fn launch(context: &Context<'_>, args: LaunchArgs) -> Result<u8, Failure> {
    let (driver, address) = context.driver("launch", None)?;
    let keda = if args.cluster.keda {
        let config = context.queue_config(Some(&args.worker));
        Some(driver.scale_trigger(&address, &config).await?)
    } else {
        None
    };
    let (spec, options) = checked_launch(
        context,
        (&*driver, &address),
        (args.workers, &args.worker),
        &args.cluster,
        keda,
        &args.command,
    )?;
    if args.dry_run {
        print!("{}", options.render(&spec)?);
        return Ok(0);
    }
    warn_about_spot_notice(&options, &spec);
    let queue = context
        .open(&*driver, &address, context.queue_config(Some(&args.worker)))
        .await?;
    check_worker_opts(
        &args.worker,
        &queue.capabilities(),
        &driver.redact(&address),
    )?;
    let keda = options.keda.is_some();
    let launcher = connect(&args.cluster, options).await?;
    let handle = K8sLauncher::handle(&spec.name);
    if keda {
        launcher.launch(&spec).await?;
        eprintln!(
            "runner: created KEDA ScaledJob {handle} in namespace {}: KEDA starts up to {} \
             one-worker Jobs while the queue has items. Submit with `runner submit`; remove \
             it with `runner --cluster {} --name {handle} cluster teardown`",
            launcher.options().namespace,
            args.workers,
            context.cluster
        );
        return Ok(0);
    }
    launcher.ensure_free(&handle).await?;
    let handle = launcher.launch(&spec).await?;
    let namespace = &launcher.options().namespace;
    eprintln!(
        "runner: created Job {handle} in namespace {namespace} with {} workers",
        args.workers
    );
    if args.detach {
        eprintln!(
            "runner: follow it with `runner --cluster {} --name {handle} cluster status --namespace {namespace}`",
            context.cluster
        );
        return Ok(0);
    }
    let mut last = String::new();
    let (state, signal) = follow_job(&launcher, &handle, args.worker.grace, |state| {
        let now = describe(&state.counts);
        if now != last {
            tracing::info!("{now}");
            last = now;
        }
    })
    .await?;
    if let Some(code) = signal {
        return Ok(code);
    }
    eprintln!(
        "runner: {}; {}",
        state
            .outcome
            .as_ref()
            .map_or_else(String::new, describe_outcome),
        describe(&state.counts)
    );
    // The Job ended: say so if the queue still holds items.
    let backlog = queue.backlog().await?;
    if backlog.is_empty() == Some(false) {
        eprintln!(
            "runner: {} items are still in the queue (`runner status`); launch again to finish them",
            backlog.ready.value().unwrap_or(0) + backlog.in_flight.value().unwrap_or(0)
        );
        return Ok(1);
    }
    Ok(u8::from(state.outcome != Some(JobOutcome::Complete)))
}

/// `runner cluster status | scale | teardown`.
pub(crate) async fn cluster(context: &Context<'_>, command: ClusterCommand) -> Result<u8, Failure> {
    let (ClusterCommand::Status { target, .. }
    | ClusterCommand::Scale { target, .. }
    | ClusterCommand::Teardown { target }) = &command;
    let launcher = K8sLauncher::connect(
        target.kubeconfig.as_deref(),
        K8sOptions::new(target.namespace.clone()),
    )
    .await?;
    let handle = K8sLauncher::handle(&context.name);
    match command {
        ClusterCommand::Status { json, .. } => {
            let state = launcher.job_state(&handle).await?;
            let c = state.counts;
            if json {
                let (outcome, reason) = match &state.outcome {
                    None => ("running", String::new()),
                    Some(JobOutcome::Complete) => ("complete", String::new()),
                    Some(JobOutcome::Failed { reason, .. }) => ("failed", reason.clone()),
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
                    "Job {handle}: {} workers wanted; {}{}",
                    c.desired,
                    describe(&c),
                    state
                        .outcome
                        .as_ref()
                        .map_or_else(String::new, |o| format!("; {}", describe_outcome(o)))
                );
            }
        }
        ClusterCommand::Scale { workers, .. } => {
            launcher.scale(&handle, workers).await?;
            eprintln!("runner: Job {handle} now runs {workers} workers");
        }
        ClusterCommand::Teardown { .. } => {
            launcher.teardown(&handle).await?;
            eprintln!("runner: deleted Job {handle}; its workers hand their items back");
        }
    }
    Ok(0)
}
