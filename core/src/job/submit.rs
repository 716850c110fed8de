//! [`submit_job`]: a whole input sent as one job, once. The manifest goes
//! into the ledger before the first item, every item carries its job and
//! sequence number, and each batch is marked submitted once the queue took
//! it, so a submit that stopped part-way (Ctrl-C, a failed publish) is
//! repeated with `resume` and sends exactly what is missing.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::{Begun, JobItem, JobStatus, Ledger, Manifest, SeqSet};
use crate::{Message, QueueError, QueueErrorKind, WorkQueue};

/// Bytes of an item's limit kept for its job attributes.
pub const JOB_ATTRIBUTES_ROOM: usize = 64 + super::MAX_JOB_NAME;

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
    /// The job's name.
    pub job: String,
    /// Items in the input (the job's N).
    pub total: u64,
    /// Items sent now.
    pub sent: u64,
    /// Where the job existed: its counts before this submit.
    pub resumed: Option<JobStatus>,
}

/// Why [`submit_job`] stopped, and exactly where.
#[derive(Debug, thiserror::Error)]
#[error("{}", describe(self))]
pub struct SubmitError {
    /// The job's name.
    pub job: String,
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
        if sent.is_empty() && unknown.is_empty() {
            return format!("job `{job}`: nothing of the {total} items was sent: {cause}");
        }
        let sent_places = if sent.is_empty() {
            "none".to_string()
        } else {
            places(sent)
        };
        let mut text = format!(
            "job `{job}` stopped part-way: {} of {total} items are in the queue ({unit} {sent_places}): {cause}",
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
        if self.cause.kind() != QueueErrorKind::PayloadTooLarge {
            text.push_str(&format!(
                ". Run the same command with `--resume` (and `--job {job}` if you named it) to send exactly what is missing"
            ));
        }
        text
    }
}

/// Submit `items` as job `job`: check every item, record the manifest,
/// then publish what is not already in the queue or settled (everything,
/// for a new job) in the queue's largest batches, marking each batch
/// submitted once the queue took it. An existing job of the same input
/// is refused unless `resume`; an existing job of another input always is.
/// `stop` ends it between batches (Ctrl-C); `on_batch` hears each batch's
/// size.
#[allow(clippy::too_many_arguments)]
pub async fn submit_job(
    queue: &dyn WorkQueue,
    ledger: &dyn Ledger,
    job: &str,
    items: Vec<Message>,
    command: Option<String>,
    resume: bool,
    stop: &crate::Shutdown,
    mut on_batch: impl FnMut(usize),
) -> Result<SubmitReport, SubmitError> {
    let total = items.len() as u64;
    let fail = |sent: SeqSet, unknown: SeqSet, cause: QueueError| SubmitError {
        job: job.to_string(),
        total,
        sent,
        unknown,
        cause,
    };
    super::check_job_name(job).map_err(|m| {
        fail(
            SeqSet::new(),
            SeqSet::new(),
            QueueError::new(QueueErrorKind::Invalid, m),
        )
    })?;
    let capabilities = queue.capabilities();
    let room = capabilities.max_payload.saturating_sub(JOB_ATTRIBUTES_ROOM);
    crate::queue::check_payload_sizes(&items, room)
        .map_err(|cause| fail(SeqSet::new(), SeqSet::new(), cause))?;
    let mut manifest = Manifest::new(
        job,
        total,
        input_digest(items.iter().map(|m| &m.payload[..])),
    );
    manifest.command = command;
    let begun = ledger
        .begin(&manifest)
        .await
        .map_err(|cause| fail(SeqSet::new(), SeqSet::new(), cause))?;
    let (to_send, resumed) = match begun {
        Begun::New => (SeqSet::first(total), None),
        Begun::Existing(status) if resume => {
            let seqs = ledger
                .seqs(job)
                .await
                .map_err(|cause| fail(SeqSet::new(), SeqSet::new(), cause))?
                .ok_or_else(|| {
                    fail(
                        SeqSet::new(),
                        SeqSet::new(),
                        QueueError::new(
                            QueueErrorKind::NotFound,
                            format!("job `{job}` vanished from the ledger"),
                        ),
                    )
                })?;
            (seqs.unsent(), Some(status))
        }
        Begun::Existing(status) => {
            return Err(fail(
                SeqSet::new(),
                SeqSet::new(),
                QueueError::new(
                    QueueErrorKind::Invalid,
                    format!(
                        "job `{job}` was submitted before ({} of {} done, {} dead, {} sent): add `--resume` to send \
                         only what is missing, or name a new job with `--job NAME` to run everything again",
                        status.done, status.manifest.total, status.dead, status.submitted
                    ),
                ),
            ));
        }
    };
    let mut slots: Vec<Option<Message>> = items.into_iter().map(Some).collect();
    let mut sent = SeqSet::new();
    let mut count = 0u64;
    let order: Vec<u64> = to_send.iter().collect();
    let name: Arc<str> = Arc::from(job);
    for seqs in order.chunks(capabilities.max_batch.max(1)) {
        if stop.is_stopping() {
            return Err(fail(
                sent,
                SeqSet::new(),
                QueueError::new(QueueErrorKind::Other, "stopped by a signal"),
            ));
        }
        let batch: Vec<Message> = seqs
            .iter()
            .map(|&seq| {
                let message = slots[seq as usize].take().expect("each seq once");
                message.with_job(JobItem {
                    job: Arc::clone(&name),
                    seq,
                })
            })
            .collect();
        let batch_seqs: SeqSet = seqs.iter().copied().collect();
        if let Err(cause) = queue.publish(batch).await {
            return Err(fail(sent, batch_seqs, cause));
        }
        if let Err(cause) = ledger.submitted(job, &batch_seqs).await {
            return Err(fail(sent, batch_seqs, cause));
        }
        sent.union(&batch_seqs);
        count += seqs.len() as u64;
        on_batch(seqs.len());
    }
    Ok(SubmitReport {
        job: job.to_string(),
        total,
        sent: count,
        resumed,
    })
}
