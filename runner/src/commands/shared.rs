//! What `run`, `launch` and the Kubernetes path share: submit the input
//! with progress, follow the backlog, summarize the end, and the worker
//! settings a launch hands to its workers. The local and Kubernetes paths
//! depend on this module; it depends on neither.

use std::sync::Arc;
use std::time::Duration;

use forloop_core::WorkQueue;
use tokio::time::Instant;

use super::publish_all;
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
    if let Some(mode) = opts.serve {
        let mode = clap::ValueEnum::to_possible_value(&mode).expect("no hidden values");
        settings.push(("serve", mode.get_name().to_string()));
    }
    settings
}

/// What `run` submitted, for its summary.
pub(crate) struct Submitted {
    started: Instant,
    /// Items published.
    pub(crate) total: u64,
    blank: usize,
    dead_before: u64,
}

/// Read `run`'s whole input (every line checked first, as an argument of
/// its command too), then publish it with a progress bar.
pub(crate) async fn submit_input(
    queue: &dyn WorkQueue,
    args: &RunArgs,
) -> Result<Submitted, Failure> {
    let started = Instant::now();
    let rules = ItemRules::command(
        queue.capabilities().max_payload,
        &args.command,
        args.allow_dash_items,
    );
    let items = read_items(&args.input.input, &rules)?;
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
