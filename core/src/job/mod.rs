//! Jobs: a `for` loop's iterations, known to the queue.
//!
//! `submit` names a job, records its [`Manifest`] (how many items, the
//! input's digest, the command) in the backend and stamps every item with
//! the job and its sequence number (its position in the input). A worker,
//! before it acks an item of a job or dead-letters it, writes a [`Receipt`]
//! keyed by (job, seq) to the job's [`Ledger`]: redeliveries, double acks and
//! re-sent receipts count once, and a crash between receipt and ack re-runs
//! an item but never loses its count. So:
//!
//! - **exact end**: a job is complete when `done + dead == total`, read from
//!   the ledger, on backends that cannot count their queue too;
//! - **exact progress**: done, dead and remaining of N;
//! - **results**: one record per item, from any machine;
//! - **resume**: what is done or already queued is not sent again.
//!
//! Items published without a job (by other programs) keep the backlog rule
//! of [`crate::worker::drain`].

mod book;
#[cfg(feature = "conformance")]
pub mod conformance;
mod ledger;
mod seqs;
mod sheets;
mod submit;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

pub use book::Book;
pub use ledger::{Begun, JobSeqs, JobStatus, Ledger, MemoryLedger};
pub use seqs::SeqSet;
pub use sheets::{
    BOOK_SHEET, LEDGER_SUFFIX, MAX_SHEET, RECEIPT_SHEET, RESULTS_SUFFIX, SHEET_ATTRIBUTE,
    SheetCalls, SheetLedger, SheetOptions, book_sheets, sibling_owner,
};
pub use submit::{
    JOB_ATTRIBUTES_ROOM, SubmitError, SubmitReport, default_job_name, input_digest, submit_job,
};

/// The attribute naming an item's job.
pub const JOB_ATTRIBUTE: &str = "forloop-job";
/// The attribute holding an item's sequence number in its job (0-based).
pub const SEQ_ATTRIBUTE: &str = "forloop-seq";

/// The longest job name.
pub const MAX_JOB_NAME: usize = 64;

/// Check a job name: 1 to 64 of `A-Z a-z 0-9 . _ -`, so it fits in every
/// backend's keys, attribute values and resource names.
pub fn check_job_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_JOB_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "job name {name:?} is not valid: use 1 to {MAX_JOB_NAME} letters, digits, '.', '_' or '-'"
        ))
    }
}

/// A job's record in the ledger, written once by `submit` before the first
/// item goes out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The job's name.
    pub job: String,
    /// How many items the job has (its N).
    pub total: u64,
    /// SHA-256 of the input's items, to tell a resumed job from a different one.
    pub digest: String,
    /// The command template, where the job was submitted by `run`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// When it was created (Unix seconds).
    pub created: u64,
}

impl Manifest {
    /// A manifest for `total` items with `digest`, created now.
    pub fn new(job: impl Into<String>, total: u64, digest: impl Into<String>) -> Self {
        Self {
            job: job.into(),
            total,
            digest: digest.into(),
            command: None,
            created: unix_millis() / 1000,
        }
    }
}

/// How an item of a job was settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Settled {
    /// It succeeded and was acked.
    Done,
    /// It was dead-lettered.
    Dead,
}

/// The record of the attempt that settled one item of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    /// The job.
    pub job: String,
    /// The item's sequence number in the job.
    pub seq: u64,
    /// Done or dead.
    pub state: Settled,
    /// Which attempt settled it (1-based).
    pub attempt: u32,
    /// The command's exit code, where there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// How long the attempt ran.
    pub seconds: f64,
    /// The worker that ran it.
    pub worker: String,
    /// The item (cut at [`MAX_RECEIPT_ITEM`] bytes).
    pub item: String,
    /// Why it failed, for dead items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The end of what the command wrote to stderr (at most [`STDERR_TAIL`] bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr_tail: Option<String>,
    /// When it was settled (Unix milliseconds).
    pub at: u64,
}

/// The most of an item a receipt keeps.
pub const MAX_RECEIPT_ITEM: usize = 1024;
/// The most of a command's stderr a receipt keeps: its last bytes.
pub const STDERR_TAIL: usize = 4096;

impl Receipt {
    /// The receipt a backend writes when it dead-letters an item of a job by
    /// itself (its lease lapsed on the last attempt): what the item's
    /// attributes say, with no exit code or stderr.
    pub fn lapsed(
        attributes: &BTreeMap<String, String>,
        payload: &[u8],
        attempt: u32,
        reason: &str,
    ) -> Option<Receipt> {
        let item = JobItem::of(attributes)?;
        Some(Receipt {
            job: item.job,
            seq: item.seq,
            state: Settled::Dead,
            attempt,
            exit_code: None,
            seconds: 0.0,
            worker: String::new(),
            item: cut_item(payload),
            reason: Some(reason.to_string()),
            stderr_tail: None,
            at: unix_millis(),
        })
    }
}

/// An item's place in its job, read from its attributes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JobItem {
    /// The job.
    pub job: String,
    /// Its sequence number.
    pub seq: u64,
}

impl JobItem {
    /// The job and sequence number in `attributes`, if the item has both.
    pub fn of(attributes: &BTreeMap<String, String>) -> Option<JobItem> {
        let job = attributes.get(JOB_ATTRIBUTE)?;
        let seq = attributes.get(SEQ_ATTRIBUTE)?.parse().ok()?;
        Some(JobItem {
            job: job.clone(),
            seq,
        })
    }

    /// Stamp `attributes` with this job and sequence number.
    pub fn stamp(&self, attributes: &mut BTreeMap<String, String>) {
        attributes.insert(JOB_ATTRIBUTE.to_string(), self.job.clone());
        attributes.insert(SEQ_ATTRIBUTE.to_string(), self.seq.to_string());
    }
}

impl fmt::Display for JobItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.job, self.seq)
    }
}

/// `payload` as text, cut at [`MAX_RECEIPT_ITEM`] bytes (on a character boundary).
pub fn cut_item(payload: &[u8]) -> String {
    let text = String::from_utf8_lossy(payload);
    let mut end = text.len().min(MAX_RECEIPT_ITEM);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// Milliseconds since the Unix epoch, by the wall clock.
pub fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
