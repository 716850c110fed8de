//! The end of a `run` on a shared queue: re-read the queue (or the job's
//! ledger, exactly) after the workers ended, print what became of every
//! item and of the workers, and give the exit code.

use std::time::Duration;

use forloop_core::{Backend, WorkQueue};

use super::submit::Submitted;
use crate::Failure;

/// The job's counts, where the run has a job.
pub(crate) async fn job_status(
    backend: &Backend,
    job: Option<&str>,
) -> Option<forloop_core::job::JobStatus> {
    let ledger = backend.ledger.as_ref()?;
    let jobs = ledger.jobs().await.ok()?;
    jobs.into_iter()
        .find(|status| Some(status.manifest.job.as_str()) == job)
}

/// `  causes: exit 1 (48), exit 137 (3)`: what killed a halted job's
/// dead items, read from its receipts.
pub(crate) async fn halt_causes(
    ledger: &dyn forloop_core::job::Ledger,
    status: &forloop_core::job::JobStatus,
) -> String {
    let receipts = ledger
        .receipts(&status.manifest.job)
        .await
        .unwrap_or_default();
    let causes = forloop_core::job::halt::dominant_causes(&receipts, 3);
    let causes: Vec<String> = causes
        .iter()
        .map(|(cause, n)| format!("{cause} ({n})"))
        .collect();
    format!(
        "  causes: {}; `runner results --job {} --state dead` shows each; fix it, then `--resume` continues the job",
        if causes.is_empty() {
            "not recorded".to_string()
        } else {
            causes.join(", ")
        },
        status.manifest.job
    )
}

/// Re-check the queue after the workers ended, print the summary, and give
/// `run`'s exit code: 0 only if every item succeeded and the workers did.
pub(crate) async fn summarize(
    backend: &Backend,
    submitted: &Submitted,
    workers: &str,
    workers_ok: bool,
    signal: Option<u8>,
) -> Result<u8, Failure> {
    let total = submitted.total;
    if let Some(job) = submitted.sent.job.as_deref() {
        let status = job_status(backend, Some(job))
            .await
            .ok_or_else(|| Failure::new(format!("the ledger no longer has job `{job}`")))?;
        return summarize_job(backend, submitted, &status, workers, workers_ok, signal).await;
    }
    let queue = &*backend.queue;
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
                String::from_utf8_lossy(&letter.item.payload),
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
    backend: &Backend,
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
        if let Some(ledger) = &backend.ledger {
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
    if status.is_halted() && !status.is_complete() {
        eprintln!(
            "runner: job `{job}` {}; its {} items left stay in the queue",
            status.halt_line(),
            status.remaining()
        );
        if let Some(ledger) = &backend.ledger {
            eprintln!("{}", halt_causes(&**ledger, status).await);
        }
        return Ok(forloop_core::job::HALTED_EXIT);
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
pub(crate) async fn dead_count(queue: &dyn WorkQueue) -> Result<u64, Failure> {
    if let Some(n) = queue.backlog().await?.dead.value() {
        return Ok(n);
    }
    Ok(queue.list_dead(100_000).await.map_or(0, |l| l.len() as u64))
}
