//! What `run`, `launch` and the Kubernetes path share: submit the input
//! with progress, follow the backlog, summarize the end, and the worker
//! settings a launch hands to its workers. The local and Kubernetes paths
//! depend on this module; it depends on neither.

use std::sync::Arc;
use std::time::Duration;

use forloop_core::WorkQueue;
use tokio::time::Instant;

use forloop_core::worker::Shutdown;

use super::Context;
use super::job::Sent;
use crate::Failure;
use crate::cli::{RunArgs, WorkerOpts};
use crate::input::{ItemRules, read_items};
use crate::progress::Progress;

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
    if !opts.fatal_exit_codes.is_empty() {
        let codes: Vec<String> = opts.fatal_exit_codes.iter().map(i32::to_string).collect();
        settings.push(("fatal-exit-codes", codes.join(",")));
    }
    if let Some(mode) = opts.serve {
        let mode = clap::ValueEnum::to_possible_value(&mode).expect("no hidden values");
        settings.push(("serve", mode.get_name().to_string()));
    }
    settings
}

/// What `run` submitted, for its summary.
pub(crate) struct Submitted {
    started: Instant,
    /// Items in the input.
    pub(crate) total: u64,
    /// The job and what was sent.
    pub(crate) sent: Sent,
    blank: usize,
    dead_before: u64,
}

/// Read `run`'s whole input (every line checked first, as an argument of
/// its command too), then publish it with a progress bar.
pub(crate) async fn submit_input(
    context: &Context<'_>,
    queue: &dyn WorkQueue,
    args: &RunArgs,
) -> Result<Submitted, Failure> {
    let started = Instant::now();
    let rules = ItemRules::command(
        super::item_room(queue),
        &args.command,
        args.allow_dash_items,
    );
    let items = read_items(&args.input.input, &rules)?;
    let total = items.items.len() as u64;
    let dead_before = dead_count(queue).await?;
    let submit = Progress::start("submitted", total);
    let stop = Shutdown::new();
    let signals = crate::signals::listen_during_submit(stop.clone());
    let result = super::job::send(
        context,
        queue,
        &items,
        &args.job,
        Some(&args.command),
        Some(&submit),
        &stop,
    )
    .await;
    submit.finish();
    let sent = result.map_err(|f| f.with_code(signals.exit_code().unwrap_or(1)))?;
    if let (Some(job), Some(before)) = (&sent.job, &sent.resumed) {
        eprintln!(
            "runner: resuming job `{job}`: {} of {total} done, {} dead; sent the {} items not done or queued",
            before.done, before.dead, sent.sent
        );
    }
    Ok(Submitted {
        started,
        total,
        sent,
        blank: items.blank,
        dead_before,
    })
}

/// The job's counts, where the run has a job.
async fn job_status(
    queue: &dyn WorkQueue,
    job: Option<&str>,
) -> Option<forloop_core::job::JobStatus> {
    let ledger = queue.ledger()?;
    let jobs = ledger.jobs().await.ok()?;
    jobs.into_iter()
        .find(|status| Some(status.manifest.job.as_str()) == job)
}

/// A task that moves `progress` to the items no longer in the queue each
/// time the sender ticks; drop the sender and await the task to end it.
/// With a job, the progress is its settled items, from the ledger.
pub(crate) fn follow_backlog(
    queue: &Arc<dyn WorkQueue>,
    progress: &Progress,
    submitted: &Submitted,
) -> (tokio::sync::watch::Sender<()>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = tokio::sync::watch::channel(());
    let queue = Arc::clone(queue);
    let progress = progress.clone();
    let total = submitted.total;
    let job = submitted.sent.job.clone();
    let reader = tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            if job.is_some() {
                if let Some(status) = job_status(&*queue, job.as_deref()).await {
                    progress.set(status.settled());
                }
                continue;
            }
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
    if let Some(job) = submitted.sent.job.as_deref() {
        let status = job_status(queue, Some(job))
            .await
            .ok_or_else(|| Failure::new(format!("the ledger no longer has job `{job}`")))?;
        return summarize_job(queue, submitted, &status, workers, workers_ok, signal).await;
    }
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
            .list_dead(submitted.dead_before as usize + 20)
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

/// The summary of a run with a job: exact, from the ledger.
async fn summarize_job(
    queue: &dyn WorkQueue,
    submitted: &Submitted,
    status: &forloop_core::job::JobStatus,
    workers: &str,
    workers_ok: bool,
    signal: Option<u8>,
) -> Result<u8, Failure> {
    let job = &status.manifest.job;
    eprintln!(
        "runner: {} items: {} done, {} dead-lettered, {} left in the queue, {} blank lines skipped, in {}; {workers}; job `{job}`",
        status.manifest.total,
        status.done,
        status.dead,
        status.remaining(),
        submitted.blank,
        humantime::format_duration(Duration::from_millis(
            submitted.started.elapsed().as_millis() as u64
        )),
    );
    if status.dead > 0 {
        if let Some(ledger) = queue.ledger() {
            let receipts = ledger.receipts(job).await.unwrap_or_default();
            let dead = receipts
                .iter()
                .filter(|r| r.state == forloop_core::job::Settled::Dead);
            for receipt in dead.take(20) {
                eprintln!(
                    "  dead: {:?}: {}",
                    receipt.item_text(),
                    receipt.reason.as_deref().unwrap_or("dead-lettered")
                );
            }
        }
        eprintln!(
            "  (`runner results --job {job} --state dead` shows each with its exit code and stderr; \
             `runner dead requeue` retries them)"
        );
    }
    if let Some(code) = signal {
        eprintln!(
            "runner: stopped by a signal; {} items of job `{job}` are not done: \
             the same command with `--resume` finishes them",
            status.remaining()
        );
        return Ok(code);
    }
    if !status.is_complete() {
        eprintln!(
            "runner: the workers have ended but {} items are still in the queue (not settled in job `{job}`): \
             `runner status` shows them, `runner launch` (or `runner work`) finishes them",
            status.remaining()
        );
    }
    Ok(if status.dead == 0 && status.is_complete() && workers_ok {
        0
    } else {
        1
    })
}

/// Items in the dead-letter place: the backlog's count, or where the backend
/// cannot count (Pub/Sub), the length of its dead-letter listing.
async fn dead_count(queue: &dyn WorkQueue) -> Result<u64, Failure> {
    if let Some(n) = queue.backlog().await?.dead.value() {
        return Ok(n);
    }
    Ok(queue.list_dead(100_000).await.map_or(0, |l| l.len() as u64))
}
