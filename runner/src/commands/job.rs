//! Sending an input as a job, as `submit`, `run` and the launchers do:
//! name it (`--job`, or the queue's name and the input's digest), record its
//! manifest, publish what is missing (everything, unless `--resume`), and
//! say exactly which lines are in the queue when it stops part-way. A
//! queue that keeps no ledger gets the items without a job.

use bytes::Bytes;
use forloop_core::job::{self, JobStatus, SeqSet, Submit, SubmitError};
use forloop_core::worker::Shutdown;
use forloop_core::{Backend, Item};

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
/// items), with progress; `stop` ends it between batches. Both go by
/// core's one path ([`Submit`]).
pub(crate) async fn send(
    context: &Context<'_>,
    backend: &Backend,
    items: &Items,
    args: &JobArgs,
    command: Option<&[String]>,
    progress: Option<&Progress>,
    stop: &Shutdown,
) -> Result<Sent, Failure> {
    if backend.ledger.is_none() && (args.resume || args.job.is_some()) {
        return Err(Failure::new(
            "this queue keeps no jobs, so --job and --resume cannot be used with it \
             (for Pub/Sub and SQS, `runner queue create` makes the ledger a job needs)",
        ));
    }
    let name = match backend.ledger {
        Some(_) => Some(job_name(context, args, items)?),
        None => None,
    };
    let messages: Vec<Item> = items
        .items
        .iter()
        .map(|b: &Bytes| Item::new(b.clone()))
        .collect();
    let mut submit = Submit::new(&*backend.queue, messages)
        .stop(stop)
        .on_batch(|n| {
            if let Some(progress) = progress {
                progress.add(n as u64);
            }
        });
    if let (Some(ledger), Some(name)) = (&backend.ledger, &name) {
        submit = submit
            .job(&**ledger, name)
            .resume(args.resume)
            .keep_receipts(args.keep_receipts)
            .max_dead(args.max_dead);
        if let Some(argv) = command {
            submit = submit.command(argv.join(" "));
        }
    }
    match submit.send().await {
        Ok(report) => Ok(Sent {
            job: report.job,
            total: report.total,
            sent: report.sent,
            resumed: report.resumed,
        }),
        Err(error) => Err(Failure::new(explain(&error, &items.lines))),
    }
}

/// A stopped submit, in the input's line numbers. Plain items go in
/// order, so what went in is the lines before the first that did not: the
/// rest can be sent alone.
fn explain(error: &SubmitError, lines: &[usize]) -> String {
    let text = error.describe("lines", |set| line_ranges(set, lines));
    let sent = error.sent.len() as usize;
    match lines.get(sent) {
        Some(next) if error.job.is_none() && sent > 0 => {
            format!("{text}: `tail -n +{next} FILE | runner submit -` sends them")
        }
        _ => text,
    }
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

/// The largest item `backend` takes from an input: its payload limit, less
/// the room a job's attributes need where it keeps jobs.
pub(crate) fn item_room(backend: &Backend) -> usize {
    let max = backend.queue.capabilities().max_payload;
    if backend.ledger.is_some() {
        max.saturating_sub(forloop_core::job::JOB_ATTRIBUTES_ROOM)
    } else {
        max
    }
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
