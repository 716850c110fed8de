//! `runner launch` and `runner run` on a shared queue: worker processes
//! (`runner work`) started here by the [`LocalLauncher`].

use std::sync::Arc;
use std::time::Duration;

use forloop_core::WorkQueue;
use forloop_core::cluster::{ClusterLauncher, LaunchSpec, LocalLauncher, WorkerCounts};
use forloop_core::worker::Shutdown;
use tokio::time::Instant;

use super::{Context, publish_all};
use crate::cli::{LaunchArgs, LogFormat, RunArgs, WorkerOpts};
use crate::input::read_items;
use crate::progress::Progress;
use crate::{Failure, signals};

/// The worker settings of `opts` as (flag, value) pairs: `runner work`
/// reads each as `--FLAG=VALUE` or as the variable `FORLOOP_FLAG` (upper
/// case, `-` → `_`), so local launches pass flags and Kubernetes passes env.
/// The joblog is not here: it names a file on one machine.
pub(crate) fn worker_settings(opts: &WorkerOpts) -> Vec<(&'static str, String)> {
    let duration = |d: Duration| humantime::format_duration(d).to_string();
    let mut settings = vec![
        ("lease", duration(opts.lease)),
        ("max-attempts", opts.max_attempts.to_string()),
        ("grace", duration(opts.grace)),
        ("max-lease-age", duration(opts.max_lease_age)),
        ("backoff", duration(opts.backoff)),
        ("max-backoff", duration(opts.max_backoff)),
        ("idle-window", duration(opts.idle_window)),
    ];
    if let Some(c) = opts.concurrency {
        settings.push(("concurrency", c.to_string()));
    }
    if let Some(t) = opts.task_timeout {
        settings.push(("task-timeout", duration(t)));
    }
    if let Some(mode) = opts.serve {
        let mode = clap::ValueEnum::to_possible_value(&mode).expect("no hidden values");
        settings.push(("serve", mode.get_name().to_string()));
    }
    settings
}

/// The `runner work` flags that reproduce `opts` in a child process.
fn worker_flags(opts: &WorkerOpts) -> Vec<String> {
    let mut flags: Vec<String> = worker_settings(opts)
        .into_iter()
        .map(|(flag, value)| format!("--{flag}={value}"))
        .collect();
    if let Some(path) = &opts.joblog {
        flags.push(format!("--joblog={}", path.display()));
    }
    flags
}

/// The launch of `workers` × `runner work` (restarted up to `max_restarts`).
fn spec(
    context: &Context<'_>,
    queue: &str,
    opts: &WorkerOpts,
    (workers, max_restarts): (u32, u32),
    command: &[String],
) -> Result<LaunchSpec, Failure> {
    let exe = std::env::current_exe().map_err(|e| {
        Failure::new(format!(
            "cannot find this runner's own path to start workers: {e}"
        ))
    })?;
    let mut argv = vec![
        exe.to_string_lossy().into_owned(),
        format!("--queue={queue}"),
        format!("--name={}", context.name),
        format!(
            "--log-format={}",
            match context.log_format {
                LogFormat::Text => "text",
                LogFormat::Json => "json",
            }
        ),
        "work".to_string(),
    ];
    argv.extend(worker_flags(opts));
    // No command: the binary's own Rust function.
    if !command.is_empty() {
        argv.push("--".to_string());
        argv.extend(command.iter().cloned());
    }
    // The launcher waits a little longer than the worker's own grace, so a
    // worker gets to give its items back before it is killed.
    Ok(LaunchSpec::new(context.name.clone(), workers, argv)
        .with_grace(opts.grace + Duration::from_secs(5))
        .with_max_restarts(max_restarts))
}

/// Wait for every worker to end, tearing down on SIGTERM/SIGINT. Returns
/// the final counts and the signal's exit code, if one came.
async fn supervise(
    launcher: &LocalLauncher,
    handle: &forloop_core::LaunchHandle,
    grace: Duration,
    mut on_tick: impl FnMut(),
) -> Result<(WorkerCounts, Option<u8>), Failure> {
    let shutdown = Shutdown::new();
    let received = signals::listen(shutdown.clone(), grace);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            counts = launcher.wait(handle) => {
                let counts = counts?;
                launcher.teardown(handle).await?;
                return Ok((counts, received.exit_code()));
            }
            _ = tick.tick() => on_tick(),
            _ = shutdown.stopping() => {
                // Workers got the same signal from the terminal, or get it now.
                let counts = launcher.status(handle).await?;
                launcher.teardown(handle).await?;
                return Ok((counts, received.exit_code()));
            }
        }
    }
}

fn describe(counts: &WorkerCounts) -> String {
    format!(
        "workers: {} exited 0, {} failed, {} killed from outside",
        counts.succeeded, counts.failed, counts.disrupted
    )
}

pub(crate) async fn launch(context: &Context<'_>, args: LaunchArgs) -> Result<u8, Failure> {
    if context.kubernetes()? {
        #[cfg(feature = "k8s")]
        return super::k8s::launch(context, args).await;
    }
    let launcher = LocalLauncher::new();
    if args.dry_run {
        let (_, address) = context.driver("launch", None)?;
        let spec = spec(
            context,
            &address.spec,
            &args.worker,
            (args.workers, args.max_restarts),
            &args.command,
        )?;
        print!("{}", launcher.render(&spec)?);
        return Ok(0);
    }
    let prepared = context
        .prepare("launch", None, &args.worker, &args.command)
        .await?;
    let spec = spec(
        context,
        &prepared.address.spec,
        &args.worker,
        (args.workers, args.max_restarts),
        &args.command,
    )?;
    let handle = launcher.launch(&spec).await?;
    tracing::info!(
        workers = args.workers,
        "launched {} local workers",
        args.workers
    );
    let (counts, signal) = supervise(&launcher, &handle, args.worker.grace, || {}).await?;
    eprintln!("runner: {}", describe(&counts));
    if let Some(code) = signal {
        return Ok(code);
    }
    Ok(if counts.succeeded == args.workers && counts.failed == 0 {
        0
    } else {
        1
    })
}

/// What `run` submitted, for its summary.
pub(crate) struct Submitted {
    started: Instant,
    /// Items published.
    pub(crate) total: u64,
    blank: usize,
    dead_before: u64,
}

/// Read the whole input (every line checked first), then publish it with a
/// progress bar.
pub(crate) async fn submit_input(queue: &dyn WorkQueue, input: &str) -> Result<Submitted, Failure> {
    let started = Instant::now();
    let items = read_items(input, queue.capabilities().max_payload)?;
    let total = items.items.len() as u64;
    let dead_before = dead_count(queue).await?;
    let submit = Progress::start("submitted", total);
    let result = publish_all(queue, &items, Some(&submit)).await;
    submit.finish();
    result?;
    Ok(Submitted {
        started,
        total,
        blank: items.blank,
        dead_before,
    })
}

/// A task that moves `progress` to the items no longer in the queue each
/// time the sender ticks; drop the sender and await the task to end it.
pub(crate) fn follow_backlog(
    queue: &Arc<dyn WorkQueue>,
    progress: &Progress,
    total: u64,
) -> (tokio::sync::watch::Sender<()>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = tokio::sync::watch::channel(());
    let queue = Arc::clone(queue);
    let progress = progress.clone();
    let reader = tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            if let Ok(backlog) = queue.backlog().await {
                let left =
                    backlog.ready.value().unwrap_or(0) + backlog.in_flight.value().unwrap_or(0);
                progress.set(total.saturating_sub(left));
            }
        }
    });
    (tx, reader)
}

/// Re-check the queue after the workers ended, print the summary, and give
/// `run`'s exit code: 0 only if every item succeeded and the workers did.
pub(crate) async fn summarize(
    queue: &dyn WorkQueue,
    submitted: &Submitted,
    workers: &str,
    workers_ok: bool,
    signal: Option<u8>,
) -> Result<u8, Failure> {
    let total = submitted.total;
    let after = queue.backlog().await?;
    let left = after.ready.value().unwrap_or(0) + after.in_flight.value().unwrap_or(0);
    let dead_new = dead_count(queue)
        .await?
        .saturating_sub(submitted.dead_before);
    let done = total.saturating_sub(left + dead_new);
    let left = match (after.ready.value(), after.in_flight.value()) {
        (Some(_), Some(_)) => left.to_string(),
        _ => "an unknown number of items (this queue cannot count; workers exited after their idle window)".to_string(),
    };
    eprintln!(
        "runner: {total} items: {done} done, {dead_new} dead-lettered, {left} left in the queue, {} blank lines skipped, in {}; {workers}",
        submitted.blank,
        humantime::format_duration(Duration::from_millis(
            submitted.started.elapsed().as_millis() as u64
        )),
    );
    if dead_new > 0 {
        let letters = queue
            .dead_letters(submitted.dead_before as usize + 20)
            .await
            .unwrap_or_default();
        for letter in letters.iter().skip(submitted.dead_before as usize) {
            eprintln!(
                "  dead: {:?}: {}",
                String::from_utf8_lossy(&letter.message.payload),
                letter.reason
            );
        }
        eprintln!("  (`runner dead list` shows them all; `runner dead requeue` retries them)");
    }
    if let Some(code) = signal {
        eprintln!(
            "runner: stopped by a signal; {left} items stay in the queue for the next `runner work`"
        );
        return Ok(code);
    }
    let drained = after.is_empty() != Some(false);
    if !drained {
        eprintln!(
            "runner: the workers have ended but {left} items are still in the queue: \
             `runner status` shows them, `runner launch` (or `runner work`) finishes them"
        );
    }
    Ok(if dead_new == 0 && drained && workers_ok {
        0
    } else {
        1
    })
}

/// `runner run` on a shared queue: submit, launch, wait, tear down, summarize.
pub(crate) async fn run_shared(
    context: &Context<'_>,
    args: RunArgs,
    queue: Arc<dyn WorkQueue>,
    queue_spec: &str,
) -> Result<u8, Failure> {
    let submitted = submit_input(&*queue, &args.input.input).await?;
    let spec = spec(
        context,
        queue_spec,
        &args.worker,
        (args.workers, args.max_restarts),
        &args.command,
    )?;
    let launcher = LocalLauncher::new();
    let handle = launcher.launch(&spec).await?;
    let progress = Progress::start("done", submitted.total);
    let (tick, reader) = follow_backlog(&queue, &progress, submitted.total);
    let (counts, signal) = supervise(&launcher, &handle, args.worker.grace, || {
        let _ = tick.send(());
    })
    .await?;
    drop(tick);
    let _ = reader.await;
    progress.finish();
    summarize(
        &*queue,
        &submitted,
        &describe(&counts),
        counts.failed == 0,
        signal,
    )
    .await
}

/// Items in the dead-letter place: the backlog's count, or where the backend
/// cannot count (Pub/Sub), the length of its dead-letter listing.
async fn dead_count(queue: &dyn WorkQueue) -> Result<u64, Failure> {
    if let Some(n) = queue.backlog().await?.dead.value() {
        return Ok(n);
    }
    Ok(queue
        .dead_letters(100_000)
        .await
        .map_or(0, |l| l.len() as u64))
}
