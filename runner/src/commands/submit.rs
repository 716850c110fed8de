//! Submitting an input: `runner submit` (validate the whole input, then
//! publish it as a job with progress; `--resume` sends only what is
//! missing), and the same for `run`, which remembers what it sent for its
//! summary.

use forloop_core::Backend;
use forloop_core::worker::Shutdown;
use tokio::time::Instant;

use super::context::Context;
use super::job::{Sent, item_room, send};
use super::summary::dead_count;
use crate::Failure;
use crate::cli::{RunArgs, SubmitArgs};
use crate::input::{ItemRules, read_items};
use crate::progress::Progress;
use crate::signals;

pub(crate) async fn submit(context: &Context<'_>, args: SubmitArgs) -> Result<u8, Failure> {
    let (driver, address) = context.driver("submit", None)?;
    let backend = context
        .open(&*driver, &address, context.queue_config(None))
        .await?;
    let items = read_items(&args.input.input, &ItemRules::queue(item_room(&backend)))?;
    let stop = Shutdown::new();
    let signals = signals::listen_during_submit(stop.clone());
    let progress = Progress::start("submitted", items.items.len() as u64);
    let result = send(
        context,
        &backend,
        &items,
        &args.job,
        None,
        Some(&progress),
        &stop,
    )
    .await;
    progress.finish();
    let sent = result.map_err(|f| f.with_code(signals.exit_code().unwrap_or(1)))?;
    let job = match (&sent.job, &sent.resumed) {
        (Some(job), Some(before)) => format!(
            "; resumed job `{job}` of {} items: {} were done, {} dead, {} queued",
            sent.total,
            before.done,
            before.dead,
            before.submitted.saturating_sub(before.settled()),
        ),
        (Some(job), None) => format!("; job `{job}`"),
        (None, _) => String::new(),
    };
    eprintln!(
        "submitted {} items to {} (queue `{}`{job}; {} blank lines skipped)",
        sent.sent,
        driver.redact(&address),
        context.name,
        items.blank
    );
    Ok(0)
}

/// What `run` submitted, for its summary.
pub(crate) struct Submitted {
    pub(crate) started: Instant,
    /// Items in the input.
    pub(crate) total: u64,
    /// The job and what was sent.
    pub(crate) sent: Sent,
    pub(crate) blank: usize,
    pub(crate) dead_before: u64,
}

/// Read `run`'s whole input (every line checked first, as an argument of
/// its command too), then publish it with a progress bar.
pub(crate) async fn submit_input(
    context: &Context<'_>,
    backend: &Backend,
    args: &RunArgs,
) -> Result<Submitted, Failure> {
    let started = Instant::now();
    let rules = ItemRules::command(item_room(backend), &args.command, args.allow_dash_items);
    let items = read_items(&args.input.input, &rules)?;
    let total = items.items.len() as u64;
    let dead_before = dead_count(&*backend.queue).await?;
    let submit = Progress::start("submitted", total);
    let stop = Shutdown::new();
    let signals = signals::listen_during_submit(stop.clone());
    let result = send(
        context,
        backend,
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
