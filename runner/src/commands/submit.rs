//! Submitting an input: `runner submit` (validate the whole input, then
//! publish it as a job with progress; `--resume` sends only what is
//! missing), and the same for `run`, which remembers what it sent for its
//! summary.

use forloop_core::Backend;
use forloop_core::job::JobStatus;
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
    if let Some(before) = &sent.resumed {
        let now = forloop_core::job::unix_millis();
        if let Some(warning) = retention_warning(driver.name(), before, now) {
            eprintln!("runner: warning: {warning}");
        }
    }
    Ok(0)
}

/// How long `driver`'s queues keep an item that is not acked, where that
/// bounds a job: SQS's 14 days (`queue create` sets its longest), Pub/Sub's
/// 7 (the default, and the emulator's longest; a queue made by `queue
/// create` on GCP keeps 31). Redis and the memory queue keep items until
/// they are acked.
fn retention_of(driver: &str) -> Option<(u64, &'static str)> {
    const DAY: u64 = 24 * 3600 * 1000;
    match driver {
        "sqs" => Some((14 * DAY, "14 days (SQS's longest)")),
        "pubsub" => Some((
            7 * DAY,
            "7 days (Pub/Sub's default; 31 on GCP for a queue made by this release's `runner queue create`)",
        )),
        _ => None,
    }
}

/// Whether job `status` (as a resume found it) cannot finish within its
/// queue's retention at the rate it settled so far: its items were
/// published from `manifest.created` on and are lost once that old, so the
/// remaining ones must settle before then. `None` when it can, when the
/// queue keeps items for ever, or when too little has settled to measure
/// a rate (under 10 items or a second).
pub(crate) fn retention_warning(driver: &str, status: &JobStatus, now_ms: u64) -> Option<String> {
    let (retention, said) = retention_of(driver)?;
    let (first, last) = status.settled_between?;
    let settled = status.settled();
    let span = last.saturating_sub(first);
    if settled < 10 || span < 1000 || status.cancelled.is_some() {
        return None;
    }
    let remaining = status.manifest.total.saturating_sub(settled);
    let per_item = span as f64 / settled as f64;
    let needed = (remaining as f64 * per_item) as u64;
    let lost_at = status.manifest.created * 1000 + retention;
    let left = lost_at.saturating_sub(now_ms);
    (needed > left).then(|| {
        let days = |ms: u64| ms as f64 / (24.0 * 3600.0 * 1000.0);
        format!(
            "job `{}` cannot finish within its queue's retention at the rate measured: {settled} items \
             settled in {:.1} days ({:.2} items/s), {remaining} remain and need {:.1} days more, but its \
             items are kept {said} from when they were sent, {:.1} days from now. Items not done by then \
             are lost: add workers (`runner launch`), or cancel the job and submit the rest as a new one",
            status.manifest.job,
            days(span),
            settled as f64 * 1000.0 / span as f64,
            days(needed),
            days(left),
        )
    })
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

#[cfg(test)]
mod tests {
    use forloop_core::job::Manifest;

    use super::*;

    const DAY: u64 = 24 * 3600 * 1000;

    fn status(total: u64, settled: u64, span: u64) -> JobStatus {
        let mut manifest = Manifest::new("big", total, "d");
        manifest.created = 1_000_000;
        let start = manifest.created * 1000 + 1000;
        JobStatus {
            manifest,
            submitted: total,
            done: settled,
            dead: 0,
            settled_between: Some((start, start + span)),
            cancelled: None,
            halt: Default::default(),
        }
    }

    #[test]
    fn a_job_too_slow_for_its_retention_is_warned_about() {
        let created = 1_000_000 * 1000;
        // 1 M items, 100 000 settled in 2 days: 18 days more, on SQS's 14.
        let slow = status(1_000_000, 100_000, 2 * DAY);
        let warning = retention_warning("sqs", &slow, created + 2 * DAY).expect("a warning");
        for words in ["job `big`", "14 days", "18.0 days more", "runner launch"] {
            assert!(warning.contains(words), "{words}: {warning}");
        }
        // The same rate on Pub/Sub (7 days) and a fast job on both.
        assert!(retention_warning("pubsub", &slow, created + 2 * DAY).is_some());
        let fast = status(1_000_000, 900_000, 2 * DAY);
        assert_eq!(retention_warning("sqs", &fast, created + 2 * DAY), None);
        // No retention: Redis keeps items until acked.
        assert_eq!(retention_warning("redis", &slow, created + 2 * DAY), None);
        // Too little measured.
        assert_eq!(
            retention_warning("sqs", &status(1_000_000, 5, DAY), created),
            None
        );
    }
}
