//! Sending an input as a job, as `submit`, `run` and the launchers do:
//! name it (`--job`, or the queue's name and the input's digest), record its
//! manifest, publish what is missing (everything, unless `--resume`), and
//! say exactly which lines are in the queue when it stops part-way. A
//! queue that keeps no ledger gets the items without a job.

use bytes::Bytes;
use forloop_core::job::{self, JobStatus, SeqSet, SubmitError};
use forloop_core::worker::Shutdown;
use forloop_core::{ErrorChain, Message, WorkQueue};

use super::context::Context;
use crate::Failure;
use crate::cli::JobArgs;
use crate::input::Items;
use crate::progress::Progress;

/// What was sent.
#[derive(Debug, Clone)]
pub(crate) struct Sent {
    /// The job, where the queue keeps jobs.
    pub(crate) job: Option<String>,
    /// Items in the input.
    pub(crate) total: u64,
    /// Items published now.
    pub(crate) sent: u64,
    /// The job's counts before a resume.
    pub(crate) resumed: Option<JobStatus>,
}

/// The job name for `items` on this queue.
pub(crate) fn job_name(
    context: &Context<'_>,
    args: &JobArgs,
    items: &Items,
) -> Result<String, Failure> {
    let name = match &args.job {
        Some(name) => name.clone(),
        None => job::default_job_name(
            &context.name,
            &job::input_digest(items.items.iter().map(|b| &b[..])),
        ),
    };
    job::check_job_name(&name).map_err(|m| Failure::new(format!("--job: {m}")))?;
    Ok(name)
}

/// Publish `items` as a job (or, on a queue without a ledger, as plain
/// items), with progress; `stop` ends it between batches.
pub(crate) async fn send(
    context: &Context<'_>,
    queue: &dyn WorkQueue,
    items: &Items,
    args: &JobArgs,
    command: Option<&[String]>,
    progress: Option<&Progress>,
    stop: &Shutdown,
) -> Result<Sent, Failure> {
    let total = items.items.len() as u64;
    let Some(ledger) = queue.ledger() else {
        if args.resume || args.job.is_some() {
            return Err(Failure::new(
                "this queue keeps no jobs, so --job and --resume cannot be used with it \
                 (for Pub/Sub and SQS, `runner queue create` makes the ledger a job needs)",
            ));
        }
        publish_all(queue, items, progress).await?;
        return Ok(Sent {
            job: None,
            total,
            sent: total,
            resumed: None,
        });
    };
    let name = job_name(context, args, items)?;
    let messages: Vec<Message> = items
        .items
        .iter()
        .map(|b: &Bytes| Message::new(b.clone()))
        .collect();
    let result = job::submit_job(
        queue,
        &*ledger,
        &name,
        messages,
        command.map(|argv| argv.join(" ")),
        args.resume,
        stop,
        |n| {
            if let Some(progress) = progress {
                progress.add(n as u64);
            }
        },
    )
    .await;
    match result {
        Ok(report) => Ok(Sent {
            job: report.job,
            total: report.total,
            sent: report.sent,
            resumed: report.resumed,
        }),
        Err(error) => Err(Failure::new(explain(&error, &items.lines))),
    }
}

/// A stopped submit, in the input's line numbers.
fn explain(error: &SubmitError, lines: &[usize]) -> String {
    error.describe("lines", |set| line_ranges(set, lines))
}

/// Item positions as line numbers: `3-40, 52`.
pub(crate) fn line_ranges(set: &SeqSet, lines: &[usize]) -> String {
    let line = |seq: u64| lines.get(seq as usize).copied().unwrap_or(seq as usize + 1);
    set.ranges()
        .iter()
        .map(|range| {
            let (first, last) = (line(range.start), line(range.end - 1));
            if first == last {
                first.to_string()
            } else {
                format!("{first}-{last}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The largest item `queue` takes from an input: its payload limit, less
/// the room a job's attributes need where it keeps jobs.
pub(crate) fn item_room(queue: &dyn WorkQueue) -> usize {
    let max = queue.capabilities().max_payload;
    if queue.ledger().is_some() {
        max.saturating_sub(forloop_core::job::JOB_ATTRIBUTES_ROOM)
    } else {
        max
    }
}

/// Publish every item, in the queue's largest batches. On a failure part-way,
/// say exactly which lines went in, so the rest can be submitted alone.
async fn publish_all(
    queue: &dyn WorkQueue,
    items: &Items,
    progress: Option<&Progress>,
) -> Result<(), Failure> {
    let batch = queue.capabilities().max_batch.max(1);
    let mut published = 0usize;
    for chunk in items.items.chunks(batch) {
        let messages: Vec<Message> = chunk
            .iter()
            .map(|item: &Bytes| Message::new(item.clone()))
            .collect();
        if let Err(error) = queue.publish(messages).await {
            let message = if published == 0 {
                format!(
                    "publishing failed; nothing was submitted: {}",
                    ErrorChain(&error)
                )
            } else {
                let next_line = items.lines[published];
                format!(
                    "publishing failed after {published} of {} items: {}. Lines before {next_line} are in the queue; \
                     submit the rest with `tail -n +{next_line} FILE | runner submit -`",
                    items.items.len(),
                    ErrorChain(&error)
                )
            };
            return Err(Failure::new(message));
        }
        published += chunk.len();
        if let Some(progress) = progress {
            progress.add(chunk.len() as u64);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_of_items_read_as_line_numbers() {
        // Items on lines 1, 2, 4, 5, 6 (line 3 was blank).
        let lines = [1, 2, 4, 5, 6];
        let set: SeqSet = [0, 1, 2, 4].into_iter().collect();
        assert_eq!(line_ranges(&set, &lines), "1-4, 6");
    }
}
