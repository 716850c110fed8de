//! `runner run`: submit, start workers, wait for them, summarize, in one
//! command, written once for every launcher. Exits 0 iff every item
//! succeeded. On a queue that lives in this process the workers are tasks
//! here (`in_process`); otherwise `--cluster` starts them.

use std::sync::Arc;

use forloop_core::cluster::{Cluster, LaunchOutcome};
use forloop_core::worker::Shutdown;
use forloop_core::{Backend, Driver, QueueAddress};

use super::cluster::{cluster_flags, worker_request};
use super::context::Context;
use super::in_process;
use super::launch::follow;
use super::submit::{Submitted, submit_input};
use super::summary::{job_status, summarize};
use super::worker_settings::check_worker_opts;
use crate::Failure;
use crate::choice::Chosen;
use crate::cli::RunArgs;
use crate::progress::Progress;

pub(crate) async fn run(context: &Context<'_>, args: RunArgs) -> Result<u8, Failure> {
    let plug = context.launcher()?;
    // Only workers on this machine can share a queue in this process.
    let default = plug.runs_here().then_some("memory");
    let (driver, address) = context.driver("run", default)?;
    if driver.in_process() {
        if !plug.runs_here() {
            return Err(Failure::new(format!(
                "the `{}` queue lives inside this process, so workers started by --cluster {} \
                 cannot reach it: pass --queue with a shared queue (redis, sqs, pubsub)",
                driver.name(),
                context.cluster
            )));
        }
        return in_process::run(context, args, (driver, address)).await;
    }
    if let Some(addr) = args.metrics.metrics_addr {
        return Err(Failure::new(format!(
            "--metrics-addr {addr} serves the metrics of workers in this process, and on the \
             `{}` queue `run` starts them as processes of their own: give them --metrics-port \
             PORT with --cluster gke|k8s, or start each with `runner work --metrics-addr ADDR`",
            driver.name()
        ))
        .with_code(2));
    }
    launched(context, args, &*plug, (driver, address)).await
}

/// `run` on a shared queue: check everything that can be checked first
/// (the command, the launch, the launcher, the queue), then submit,
/// launch, follow the queue and the workers until they end, tear down, so
/// nothing is left running, and summarize.
async fn launched(
    context: &Context<'_>,
    args: RunArgs,
    plug: &dyn Cluster,
    (driver, address): (Arc<dyn Driver>, QueueAddress),
) -> Result<u8, Failure> {
    if plug.runs_here() {
        Chosen::choose(context.builtin.as_ref(), &args.worker, &args.command)?;
    }
    let flags = cluster_flags(&args.cluster);
    let request = worker_request(
        context,
        (&*driver, &address),
        &args.worker,
        (args.workers, args.max_restarts),
        &args.command,
        None,
        true,
    );
    // Checked before anything is sent; made again for the job once it has
    // its name (the workers are for it).
    let spec = plug.spec(&request, &flags)?;
    let launcher = plug.connect(&flags).await?;
    launcher.check(&spec).await?;
    // The workers write there: checked from here before anything is sent.
    let outputs = crate::outputs::open(&args.worker).await?;
    let config = context.queue_config(Some(&args.worker));
    if !plug.runs_here() && driver.create(&address, &config).await? {
        tracing::info!("queue {} is ready", driver.redact(&address));
    }
    let backend = context.open(&*driver, &address, config).await?;
    check_worker_opts(
        &args.worker,
        &backend.queue.capabilities(),
        &driver.redact(&address),
    )?;

    let submitted = submit_input(context, &backend, &args).await?;
    let request = worker_request(
        context,
        (&*driver, &address),
        &args.worker,
        (args.workers, args.max_restarts),
        &args.command,
        submitted.sent.job.as_deref(),
        true,
    );
    let spec = plug.spec(&request, &flags)?;
    let cluster = context.cluster.to_string();
    let handle = launcher.launch(&spec).await.map_err(|e| {
        Failure::new(format!(
            "{e}. The {} items are in the queue: fix that and start the workers with \
             `runner --cluster {cluster} launch` and the same flags",
            submitted.total
        ))
    })?;
    if let Some(line) = launcher.launched(&handle, &spec, &cluster) {
        eprintln!("runner: {line}");
    }
    let progress = Progress::start("done", submitted.total);
    let (tick, reader) = follow_backlog(&backend, &progress, &submitted);
    let stop = Shutdown::new();
    let received = crate::signals::listen(stop.clone(), args.worker.grace);
    let followed = follow(
        &*launcher,
        (&handle, &cluster),
        &stop,
        || {
            let _ = tick.send(());
        },
        &mut |_| {},
    )
    .await;
    drop(tick);
    let _ = reader.await;
    progress.finish();
    let followed = followed?;
    if !followed.torn_down {
        // Leave nothing behind: the workers have ended; their launch goes too.
        launcher.teardown(&handle).await?;
    }
    let ok = followed.state.outcome == Some(LaunchOutcome::Complete);
    if ok {
        crate::outputs::finish(outputs.as_ref(), submitted.sent.job.as_deref()).await;
    }
    let workers = launcher.describe(&followed.state);
    summarize(&backend, &submitted, &workers, ok, received.exit_code()).await
}

/// A task that moves `progress` to the items no longer in the queue each
/// time the sender ticks; drop the sender and await the task to end it.
/// With a job, the progress is its settled items, from the ledger.
pub(crate) fn follow_backlog(
    backend: &Backend,
    progress: &Progress,
    submitted: &Submitted,
) -> (tokio::sync::watch::Sender<()>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = tokio::sync::watch::channel(());
    let backend = backend.clone();
    let progress = progress.clone();
    let total = submitted.total;
    let job = submitted.sent.job.clone();
    let reader = tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            if job.is_some() {
                if let Some(status) = job_status(&backend, job.as_deref()).await {
                    progress.set(status.settled());
                }
                continue;
            }
            if let Ok(backlog) = backend.queue.backlog().await {
                let left =
                    backlog.ready.value().unwrap_or(0) + backlog.in_flight.value().unwrap_or(0);
                progress.set(total.saturating_sub(left));
            }
        }
    });
    (tx, reader)
}
