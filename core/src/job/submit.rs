//! [`Submit`]: a whole input sent as one job (or as plain items), once. The manifest goes
//! into the ledger before the first item, every item carries its job and
//! sequence number, and each batch is marked submitted once the queue took
//! it, so a submit that stopped part-way (Ctrl-C, a failed publish) is
//! repeated with `resume` and sends exactly what is missing.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::{Begun, JobItem, JobStatus, Ledger, Manifest, SeqSet};
use crate::{Item, QueueError, QueueErrorKind, WorkQueue};

/// Bytes of an item's limit kept for its job attributes.
pub const JOB_ATTRIBUTES_ROOM: usize = 96 + super::MAX_JOB_NAME;

/// The SHA-256 of an input's items (each length-prefixed), in hex.
pub fn input_digest<'a>(items: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut hasher = Sha256::new();
    for item in items {
        hasher.update((item.len() as u64).to_le_bytes());
        hasher.update(item);
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The job name a queue and an input get when none is given: the queue's
/// name (letters, digits, `.`, `_`, `-`; cut to 40) and the input's digest,
/// so running the same command again names the same job.
pub fn default_job_name(queue: &str, digest: &str) -> String {
    let mut base: String = queue
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    base.truncate(40);
    format!("{base}-{}", &digest[..digest.len().min(12)])
}

/// What a submit did.
#[derive(Debug, Clone, PartialEq)]
pub struct SubmitReport {
    /// The job's name (`None`: sent as plain items).
    pub job: Option<String>,
    /// Items in the input (the job's N).
    pub total: u64,
    /// Items sent now.
    pub sent: u64,
    /// Where the job existed: its counts before this submit.
    pub resumed: Option<JobStatus>,
    /// The ids the queue gave the items sent, in order, where
    /// [`Submit::keep_ids`] asked for them (else empty).
    pub ids: Vec<crate::MessageId>,
}

/// Why [`Submit::send`] stopped, and exactly where.
#[derive(Debug, thiserror::Error)]
#[error("{}", describe(self))]
pub struct SubmitError {
    /// The job's name (`None`: plain items).
    pub job: Option<String>,
    /// Items in the input.
    pub total: u64,
    /// Items the queue took and the ledger records as sent.
    pub sent: SeqSet,
    /// Items of a batch whose publish failed or went unrecorded: some may
    /// be in the queue. A resume sends them again (a copy that was in
    /// already is counted once, and may run twice).
    pub unknown: SeqSet,
    /// What went wrong.
    pub cause: QueueError,
}

fn describe(error: &SubmitError) -> String {
    error.describe("items", |set| set.to_string())
}

impl SubmitError {
    /// Say what went in and what to do, naming item positions with
    /// `places` as `unit` (1-based item numbers here; `runner` names the
    /// input's line numbers instead).
    pub fn describe(&self, unit: &str, places: impl Fn(&SeqSet) -> String) -> String {
        let SubmitError {
            job,
            total,
            sent,
            unknown,
            cause,
        } = self;
        let cause = crate::ErrorChain(cause);
        let what = match job {
            Some(job) => format!("job `{job}`"),
            None => "publishing".to_string(),
        };
        if sent.is_empty() && unknown.is_empty() {
            return format!("{what}: nothing of the {total} items was sent: {cause}");
        }
        let sent_places = if sent.is_empty() {
            "none".to_string()
        } else {
            places(sent)
        };
        let mut text = format!(
            "{what} stopped part-way: {} of {total} items are in the queue ({unit} {sent_places}): {cause}",
            sent.len(),
        );
        if !unknown.is_empty() {
            let mut sentence = unit.to_string();
            if let Some(first) = sentence.get_mut(..1) {
                first.make_ascii_uppercase();
            }
            text.push_str(&format!(
                ". {sentence} {} may or may not have gone in",
                places(unknown)
            ));
        }
        match job {
            _ if self.cause.kind() == QueueErrorKind::PayloadTooLarge => {}
            Some(job) => text.push_str(&format!(
                ". Run the same command with `--resume` (and `--job {job}` if you named it) to send exactly what is missing"
            )),
            None => text.push_str(&format!(
                ". Send the rest alone: the {unit} not listed as in the queue"
            )),
        }
        text
    }
}

/// The one way an input goes into a queue, as a job or as plain items:
/// every item checked first (nothing is sent if one is over the payload
/// limit, less a job's room), then, for a job, its manifest recorded and
/// what is not already sent or settled published (everything, for a new
/// job) in the queue's largest batches, each batch marked submitted once
/// the queue took it. An existing job of the same input is refused unless
/// [`resume`](Self::resume); an existing job of another input always is.
/// A [`stop`](Self::stop) signal ends it between batches; a failure says
/// exactly which items went in ([`SubmitError`]).
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use forloop_core::job::Submit;
/// use forloop_core::{MemoryQueue, Item, QueueConfig};
///
/// let queue = MemoryQueue::new(QueueConfig::new("docs"));
/// let ledger = queue.ledger();
/// let items = (0..2500).map(|i| Item::new(i.to_string())).collect();
/// let report = Submit::new(&queue, items).job(&*ledger, "nightly").send().await?;
/// assert_eq!((report.total, report.sent), (2500, 2500));
/// # Ok::<(), forloop_core::job::SubmitError>(())
/// # }).unwrap();
/// ```
#[must_use = "a Submit does nothing until `send` is awaited"]
pub struct Submit<'a> {
    queue: &'a dyn WorkQueue,
    items: Vec<Item>,
    job: Option<(&'a dyn Ledger, &'a str)>,
    command: Option<String>,
    keep_receipts: bool,
    max_dead: Option<super::DeadLimit>,
    resume: bool,
    stop: Option<&'a crate::shutdown::Shutdown>,
    on_batch: Box<dyn FnMut(usize) + Send + 'a>,
    keep_ids: bool,
}

impl std::fmt::Debug for Submit<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Submit")
            .field("queue", &self.queue)
            .field("items", &self.items.len())
            .field("job", &self.job.map(|(_, name)| name))
            .field("resume", &self.resume)
            .finish_non_exhaustive()
    }
}

impl<'a> Submit<'a> {
    /// Send `items` to `queue` as plain items (no job), unless
    /// [`job`](Self::job) names one.
    pub fn new(queue: &'a dyn WorkQueue, items: Vec<Item>) -> Self {
        Self {
            queue,
            items,
            job: None,
            command: None,
            keep_receipts: false,
            max_dead: None,
            resume: false,
            stop: None,
            on_batch: Box::new(|_| {}),
            keep_ids: false,
        }
    }

    /// Send them as job `name`, recorded in `ledger` (the queue's).
    pub fn job(mut self, ledger: &'a dyn Ledger, name: &'a str) -> Self {
        self.job = Some((ledger, name));
        self
    }

    /// Record the command the job's items run under in its manifest.
    pub fn command(mut self, command: impl Into<String>) -> Self {
        self.command = Some(command.into());
        self
    }

    /// Ask the ledger to keep every done item's receipt, not only the
    /// dead ones' ([`Manifest::keep_receipts`], recorded in a new job's
    /// manifest; a resumed job keeps its first choice).
    pub fn keep_receipts(mut self, keep: bool) -> Self {
        self.keep_receipts = keep;
        self
    }

    /// Halt the job past `limit` dead items ([`Manifest::max_dead`],
    /// recorded in a new job's manifest; a resumed job keeps its first
    /// choice).
    pub fn max_dead(mut self, limit: Option<super::DeadLimit>) -> Self {
        self.max_dead = limit;
        self
    }

    /// Continue an existing job of the same input: send only what it
    /// lacks. A halted job is resumed ([`Ledger::unhalt`]): its limit
    /// counts again from its counts now.
    pub fn resume(mut self, resume: bool) -> Self {
        self.resume = resume;
        self
    }

    /// Stop between batches once `stop` is triggered (Ctrl-C).
    pub fn stop(mut self, stop: &'a crate::shutdown::Shutdown) -> Self {
        self.stop = Some(stop);
        self
    }

    /// Hear each sent batch's size (for a progress bar).
    pub fn on_batch(mut self, on_batch: impl FnMut(usize) + Send + 'a) -> Self {
        self.on_batch = Box::new(on_batch);
        self
    }

    /// Keep the ids the queue gives, in [`SubmitReport::ids`].
    pub fn keep_ids(mut self) -> Self {
        self.keep_ids = true;
        self
    }

    /// Check, record and publish; see [`Submit`].
    pub async fn send(self) -> Result<SubmitReport, SubmitError> {
        let Submit {
            queue,
            items,
            job,
            command,
            keep_receipts,
            max_dead,
            resume,
            stop,
            mut on_batch,
            keep_ids,
        } = self;
        let total = items.len() as u64;
        let name = job.map(|(_, name)| name);
        let fail = |sent: SeqSet, unknown: SeqSet, cause: QueueError| SubmitError {
            job: name.map(str::to_string),
            total,
            sent,
            unknown,
            cause,
        };
        let capabilities = queue.capabilities();
        let room = match job {
            Some(_) => capabilities.max_payload.saturating_sub(JOB_ATTRIBUTES_ROOM),
            None => capabilities.max_payload,
        };
        if let Some(name) = name {
            super::check_job_name(name).map_err(|m| {
                fail(
                    SeqSet::new(),
                    SeqSet::new(),
                    QueueError::new(QueueErrorKind::Invalid, m),
                )
            })?;
        }
        crate::queue::check_payload_sizes(&items, room)
            .map_err(|cause| fail(SeqSet::new(), SeqSet::new(), cause))?;
        let (to_send, resumed) = match job {
            Some((ledger, name)) => {
                let mut manifest = Manifest::new(
                    name,
                    total,
                    input_digest(items.iter().map(|m| &m.payload[..])),
                );
                manifest.command = command;
                manifest.keep_receipts = keep_receipts;
                manifest.max_dead = max_dead;
                begin(ledger, &manifest, resume)
                    .await
                    .map_err(|cause| fail(SeqSet::new(), SeqSet::new(), cause))?
            }
            None => (SeqSet::first(total), None),
        };
        let mut slots: Vec<Option<Item>> = items.into_iter().map(Some).collect();
        let mut sent = SeqSet::new();
        let mut ids = Vec::new();
        let mut count = 0u64;
        let order: Vec<u64> = to_send.iter().collect();
        let shared: Option<Arc<str>> = name.map(Arc::from);
        for seqs in order.chunks(capabilities.max_batch.max(1)) {
            if stop.is_some_and(crate::shutdown::Shutdown::is_stopping) {
                return Err(fail(
                    sent,
                    SeqSet::new(),
                    QueueError::new(QueueErrorKind::Other, "stopped by a signal"),
                ));
            }
            let batch: Vec<Item> = seqs
                .iter()
                .map(|&seq| {
                    let message = slots[seq as usize].take().expect("each seq once");
                    match &shared {
                        Some(job) => message.with_job(JobItem::new(Arc::clone(job), seq)),
                        None => message,
                    }
                })
                .collect();
            let batch_seqs: SeqSet = seqs.iter().copied().collect();
            match queue.publish(batch).await {
                Ok(given) if keep_ids => ids.extend(given),
                Ok(_) => {}
                Err(cause) => return Err(fail(sent, batch_seqs, cause)),
            }
            if let Some((ledger, name)) = job
                && let Err(cause) = ledger.submitted(name, &batch_seqs).await
            {
                return Err(fail(sent, batch_seqs, cause));
            }
            sent.union(&batch_seqs);
            count += seqs.len() as u64;
            on_batch(seqs.len());
        }
        Ok(SubmitReport {
            job: name.map(str::to_string),
            total,
            sent: count,
            resumed,
            ids,
        })
    }
}

/// A new job may share a queue with the open jobs (not over) only where
/// they run the same command: a worker hands back items recorded with
/// another command, so two commands on one queue would make their workers
/// pass each other's items back and forth. One open command per queue,
/// then; another queue (`--name`) for another command.
fn refuse_another_command(jobs: &[JobStatus], manifest: &Manifest) -> Result<(), QueueError> {
    let Some(open) = jobs
        .iter()
        .find(|open| !open.is_over() && open.manifest.command != manifest.command)
    else {
        return Ok(());
    };
    let name = &open.manifest.job;
    let sealed = if open.is_sealed() {
        String::new()
    } else {
        format!(
            "; never sealed: its submit stopped after {} of {} items",
            open.submitted, open.manifest.total
        )
    };
    let runs = |command: &Option<String>| match command {
        Some(command) => format!("runs `{command}`"),
        None => "was submitted without a command".to_string(),
    };
    Err(QueueError::new(
        QueueErrorKind::Invalid,
        format!(
            "job `{name}` is still open on this queue ({} of {} settled{sealed}) and {};              job `{}` {}. One queue serves one command at a time (a worker never runs an item              under another job's command): use another queue (--name), wait for `{name}`              to end, or cancel it (`runner job cancel {name}`)",
            open.settled(),
            open.manifest.total,
            runs(&open.manifest.command),
            manifest.job,
            runs(&manifest.command),
        ),
    ))
}

/// Record a job's manifest: what to send (every item for a new job, what
/// is missing for a resumed one) and the counts it had before.
async fn begin(
    ledger: &dyn Ledger,
    manifest: &Manifest,
    resume: bool,
) -> Result<(SeqSet, Option<JobStatus>), QueueError> {
    let job = &manifest.job;
    let jobs = ledger.jobs().await?;
    if !jobs.iter().any(|known| known.manifest.job == *job) {
        refuse_another_command(&jobs, manifest)?;
    }
    match ledger.begin(manifest).await? {
        Begun::New => Ok((SeqSet::first(manifest.total), None)),
        Begun::Existing(mut status) if resume => {
            if status.is_halted() && ledger.unhalt(job).await? {
                tracing::info!(job = %job, "resuming job `{job}`, which was {}; its --max-dead counts \
                    again from here", status.halt_line());
                status.halt.unhalt(status.dead, status.settled());
            }
            let seqs = ledger.seqs(job).await?.ok_or_else(|| {
                QueueError::new(
                    QueueErrorKind::NotFound,
                    format!("job `{job}` vanished from the ledger"),
                )
            })?;
            Ok((seqs.unsent(), Some(status)))
        }
        Begun::Existing(status) => Err(QueueError::new(
            QueueErrorKind::Invalid,
            format!(
                "job `{job}` was submitted before ({} of {} done, {} dead, {} sent): add `--resume` to send \
                 only what is missing, or name a new job with `--job NAME` to run everything again",
                status.done, status.manifest.total, status.dead, status.submitted
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stopped(job: Option<&str>) -> SubmitError {
        SubmitError {
            job: job.map(str::to_string),
            total: 100,
            sent: (0..40).collect(),
            unknown: (40..50).collect(),
            cause: QueueError::new(QueueErrorKind::Unavailable, "connection reset"),
        }
    }

    #[test]
    fn a_stopped_job_says_what_went_in_and_to_resume() {
        let text = stopped(Some("nightly")).describe("lines", |set| set.to_string());
        assert!(
            text.starts_with("job `nightly` stopped part-way: 40 of 100"),
            "{text}"
        );
        assert!(text.contains("may or may not have gone in"), "{text}");
        assert!(
            text.contains("--resume") && text.contains("--job nightly"),
            "{text}"
        );
    }

    #[test]
    fn stopped_plain_items_say_what_went_in_without_a_resume_that_cannot_work() {
        let text = stopped(None).describe("lines", |set| set.to_string());
        assert!(
            text.starts_with("publishing stopped part-way: 40 of 100"),
            "{text}"
        );
        assert!(text.contains("Send the rest alone"), "{text}");
        assert!(
            !text.contains("--resume") && !text.contains("job `"),
            "{text}"
        );
    }
}
