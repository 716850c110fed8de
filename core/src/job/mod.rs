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

mod backend;
pub(crate) mod book;
#[cfg(feature = "conformance")]
pub mod conformance;
mod dead_filter;
mod decorator;
pub mod halt;
pub(crate) mod ledger;
mod seqs;
mod submit;
mod value;

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use crate::queue::{JOB_ATTRIBUTE, JobItem, LIFE_ATTRIBUTE, SEQ_ATTRIBUTE, wire_attributes};
pub use backend::Backend;
pub use book::Book;
pub use dead_filter::{BadPattern, DeadDetails, DeadFilter};
pub use decorator::LedgerDecorator;
pub use halt::{DeadLimit, HALTED_EXIT, Halt};
pub use ledger::{Begun, JobPhase, JobSeqs, JobStatus, Ledger, SheetCalls};
pub use seqs::SeqSet;
pub use submit::{
    JOB_ATTRIBUTES_ROOM, Submit, SubmitError, SubmitReport, default_job_name, input_digest,
};
pub use value::{ItemValue, MAX_RECEIPT_VALUE};

/// Readings of the ledger in a row that may miss a job before it counts
/// as lost: a ledger kept in sheets can miss one while another reader holds
/// them. The worker and `wait` both go by it.
pub const LOST_AFTER: u32 = 3;

/// The error for job `name`, gone from the ledger without being forgotten
/// for [`LOST_AFTER`] readings: the server lost it. `had`: the reader saw
/// it in the ledger before (else only its items were seen).
pub fn lost_job(name: &str, had: bool) -> crate::QueueError {
    let how = if had {
        "the ledger had it and no longer has it"
    } else {
        "its items are in the queue but the ledger has no record of it"
    };
    crate::QueueError::new(
        crate::QueueErrorKind::NotFound,
        format!(
            "job `{name}` was lost: {how}, and it was not forgotten (the server lost its \
             data: restarted without persistence, flushed, or its keys were evicted). Its \
             items cannot be counted any more; submit it again with `--resume` once the \
             server keeps its data"
        ),
    )
}

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
    /// Keep a receipt (exit code, seconds, worker, item) for every done
    /// item, not only the dead ones (`runner run|submit --keep-receipts`).
    /// A ledger that honours it (Redis's, whose scripts read it from the
    /// manifest, so every worker obeys the job's choice) otherwise keeps
    /// done items as counts only: `results` then shows their state without
    /// details. Dead items keep their receipts always.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_receipts: bool,
    /// How many dead items the job tolerates before it halts
    /// (`runner run|submit --max-dead`; [`halt`]); `None`: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_dead: Option<DeadLimit>,
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
            keep_receipts: false,
            max_dead: None,
        }
    }

    /// This manifest, asking for a receipt for every done item
    /// ([`Manifest::keep_receipts`]).
    pub fn keeping_receipts(mut self) -> Self {
        self.keep_receipts = true;
        self
    }

    /// This manifest, halting its job past `limit` dead items
    /// ([`Manifest::max_dead`]).
    pub fn with_max_dead(mut self, limit: DeadLimit) -> Self {
        self.max_dead = Some(limit);
        self
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

impl Settled {
    /// Whether a receipt settled this way, in `life` ([`JobItem::life`])
    /// and by `worker` (empty: the backend wrote it, [`Receipt::lapsed`]),
    /// replaces the one a ledger keeps for the item (`kept`: its state,
    /// life and worker; `None`: none). One receipt per item: a done one
    /// beats a dead one (the item was requeued and succeeded) and stays;
    /// of two dead ones the later death shows (a later life, or in one
    /// life a worker's receipt over the backend's, with its exit code and
    /// stderr); else the first stays. Every ledger keeps receipts by this
    /// rule, so the order receipts arrive in does not change which shows.
    pub fn replaces(self, life: u64, worker: &str, kept: Option<(Settled, u64, &str)>) -> bool {
        match kept {
            None => true,
            Some((Settled::Done, _, _)) => false,
            Some((Settled::Dead, kept_life, kept_worker)) => match self {
                Settled::Done => true,
                Settled::Dead => (life, !worker.is_empty()) > (kept_life, !kept_worker.is_empty()),
            },
        }
    }
}

/// The record of the attempt that settled one item of a job.
///
/// Built for every item a worker settles, so its parts are shared rather
/// than copied: the job and worker names are reference-counted and the item
/// is the payload's own bytes (see `docs/BENCHMARKS.md`, the ledger's cost).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    /// The job.
    pub job: Arc<str>,
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
    pub worker: Arc<str>,
    /// The item, cut at [`MAX_RECEIPT_ITEM`] bytes ([`cut_item`]); text in
    /// every encoding ([`Receipt::item_text`]).
    #[serde(serialize_with = "item_as_text", deserialize_with = "item_from_text")]
    pub item: Bytes,
    /// Why it failed, for dead items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The end of what the command wrote to stderr (at most [`STDERR_TAIL`] bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr_tail: Option<String>,
    /// When it was settled (Unix milliseconds).
    pub at: u64,
    /// The item's life when it settled ([`JobItem::life`]): 0 until the
    /// item is first requeued from the dead place.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub life: u64,
    /// What `f` returned, when its JSON fits ([`MAX_RECEIPT_VALUE`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<ItemValue>,
    /// Where a larger value is: its object's URL in the output store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_url: Option<String>,
    /// The attempt that settled the item was a speculative copy
    /// (`--speculate`, [`crate::worker::speculate`]), not the original.
    #[serde(default, skip_serializing_if = "is_false")]
    pub copy: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The most of an item a receipt keeps.
pub const MAX_RECEIPT_ITEM: usize = 1024;
/// The most of a command's stderr a receipt keeps: its last bytes.
pub const STDERR_TAIL: usize = 4096;

impl Receipt {
    /// Whether this receipt replaces `kept` ([`Settled::replaces`]).
    pub fn replaces(&self, kept: Option<&Receipt>) -> bool {
        self.state.replaces(
            self.life,
            &self.worker,
            kept.map(|k| (k.state, k.life, &*k.worker)),
        )
    }

    /// Whether `a` and `b` are of one job (a batch's receipts mostly are:
    /// the names are then one `Arc`, and comparing them costs nothing).
    pub fn same_job(a: &Receipt, b: &Receipt) -> bool {
        Arc::ptr_eq(&a.job, &b.job) || a.job == b.job
    }

    /// The receipt a backend writes when it dead-letters an item of a job by
    /// itself (its lease lapsed on the last attempt): the item's job and
    /// payload, with no exit code or stderr.
    pub fn lapsed(job: &JobItem, payload: &[u8], attempt: u32, reason: &str) -> Receipt {
        Receipt {
            job: Arc::clone(&job.job),
            seq: job.seq,
            state: Settled::Dead,
            attempt,
            exit_code: None,
            seconds: 0.0,
            worker: Arc::from(""),
            item: cut_item(&Bytes::copy_from_slice(
                &payload[..payload.len().min(MAX_RECEIPT_ITEM + 1)],
            )),
            reason: Some(reason.to_string()),
            stderr_tail: None,
            at: unix_millis(),
            life: job.life,
            value: None,
            value_url: None,
            copy: false,
        }
    }

    /// The item as text (invalid UTF-8 replaced).
    pub fn item_text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.item)
    }

    /// This receipt, borrowed.
    pub fn borrowed(&self) -> ReceiptRef<'_> {
        ReceiptRef {
            job: &self.job,
            seq: self.seq,
            state: self.state,
            attempt: self.attempt,
            exit_code: self.exit_code,
            seconds: self.seconds,
            worker: &self.worker,
            item: &self.item,
            reason: self.reason.as_deref(),
            stderr_tail: self.stderr_tail.as_deref(),
            at: self.at,
            life: self.life,
            value: self.value.as_ref(),
            value_url: self.value_url.as_deref(),
            copy: self.copy,
        }
    }
}

/// A [`Receipt`] borrowed from what it records: how a worker hands an ack
/// batch's receipts to [`Ledger::record_then_ack`]. Made for every
/// item a worker settles, so making one copies nothing and counts no
/// reference (a ledger in memory keeps it without ever owning it);
/// [`ReceiptRef::to_receipt`] makes the owned one a ledger write needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReceiptRef<'a> {
    /// The job.
    pub job: &'a Arc<str>,
    /// The item's sequence number in the job.
    pub seq: u64,
    /// Done or dead.
    pub state: Settled,
    /// Which attempt settled it (1-based).
    pub attempt: u32,
    /// The command's exit code, where there was one.
    pub exit_code: Option<i32>,
    /// How long the attempt ran.
    pub seconds: f64,
    /// The worker that ran it.
    pub worker: &'a Arc<str>,
    /// The item, cut at [`MAX_RECEIPT_ITEM`] bytes ([`cut_slice`]).
    pub item: &'a [u8],
    /// Why it failed, for dead items.
    pub reason: Option<&'a str>,
    /// The end of what the command wrote to stderr.
    pub stderr_tail: Option<&'a str>,
    /// When it was settled (Unix milliseconds).
    pub at: u64,
    /// The item's life when it settled ([`JobItem::life`]).
    pub life: u64,
    /// What `f` returned, when it fits the receipt.
    pub value: Option<&'a ItemValue>,
    /// Where a larger value is, in the output store.
    pub value_url: Option<&'a str>,
    /// A speculative copy settled the item ([`Receipt::copy`]).
    pub copy: bool,
}

impl ReceiptRef<'_> {
    /// The owned receipt (the item copied).
    pub fn to_receipt(&self) -> Receipt {
        Receipt {
            job: Arc::clone(self.job),
            seq: self.seq,
            state: self.state,
            attempt: self.attempt,
            exit_code: self.exit_code,
            seconds: self.seconds,
            worker: Arc::clone(self.worker),
            item: Bytes::copy_from_slice(self.item),
            reason: self.reason.map(str::to_string),
            stderr_tail: self.stderr_tail.map(str::to_string),
            at: self.at,
            life: self.life,
            value: self.value.cloned(),
            value_url: self.value_url.map(str::to_string),
            copy: self.copy,
        }
    }

    /// Whether `a` and `b` are of one job (see [`Receipt::same_job`]).
    pub fn same_job(a: &ReceiptRef<'_>, b: &ReceiptRef<'_>) -> bool {
        Arc::ptr_eq(a.job, b.job) || a.job == b.job
    }
}

fn item_as_text<S: Serializer>(item: &Bytes, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&String::from_utf8_lossy(item))
}

fn item_from_text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Bytes, D::Error> {
    String::deserialize(deserializer).map(Bytes::from)
}

/// What a receipt keeps of `payload`: all of it, shared, up to
/// [`MAX_RECEIPT_ITEM`] bytes; else a copy of its first bytes, cut on a
/// character boundary where the payload is text (a copy, so that a receipt
/// does not keep a large payload alive).
pub fn cut_item(payload: &Bytes) -> Bytes {
    let kept = cut_slice(payload);
    if kept.len() == payload.len() {
        return payload.clone();
    }
    Bytes::copy_from_slice(kept)
}

/// What a receipt keeps of `payload`: all of it up to [`MAX_RECEIPT_ITEM`]
/// bytes, else its first bytes, cut on a character boundary where the
/// payload is text.
pub fn cut_slice(payload: &[u8]) -> &[u8] {
    if payload.len() <= MAX_RECEIPT_ITEM {
        return payload;
    }
    let mut end = MAX_RECEIPT_ITEM;
    if std::str::from_utf8(&payload[..end]).is_err() {
        // Back off at most 3 bytes to the start of a cut character.
        while end > MAX_RECEIPT_ITEM - 3 && (payload[end] & 0xC0) == 0x80 {
            end -= 1;
        }
    }
    &payload[..end]
}

/// Milliseconds since the Unix epoch, by the wall clock.
pub fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn done_beats_dead_and_of_two_deaths_the_later_shows() {
        use Settled::{Dead, Done};
        assert!(Done.replaces(0, "w", None) && Dead.replaces(0, "w", None));
        assert!(Done.replaces(0, "w", Some((Dead, 5, "w"))));
        assert!(!Dead.replaces(9, "w", Some((Done, 0, "w"))));
        assert!(!Done.replaces(0, "w", Some((Done, 0, "w"))));
        // One death told twice: the first stays.
        assert!(!Dead.replaces(0, "w", Some((Dead, 0, "w"))));
        // A death in a later life (after a requeue) replaces the first.
        assert!(Dead.replaces(7, "w", Some((Dead, 0, "w"))));
        assert!(!Dead.replaces(0, "w", Some((Dead, 7, "w"))));
        // In one life, the worker's receipt beats the backend's.
        assert!(Dead.replaces(0, "w", Some((Dead, 0, ""))));
        assert!(!Dead.replaces(0, "", Some((Dead, 0, "w"))));
    }

    #[test]
    fn a_receipt_shares_a_short_item_and_copies_the_start_of_a_long_one() {
        let short = Bytes::from("video-42");
        let kept = cut_item(&short);
        assert_eq!(kept, short);
        assert_eq!(
            kept.as_ptr(),
            short.as_ptr(),
            "a short item is shared, not copied"
        );

        let long = Bytes::from("x".repeat(MAX_RECEIPT_ITEM + 500));
        let kept = cut_item(&long);
        assert_eq!(kept.len(), MAX_RECEIPT_ITEM);
        assert_ne!(
            kept.as_ptr(),
            long.as_ptr(),
            "a long item's start is copied"
        );
    }

    #[test]
    fn a_cut_item_ends_on_a_character_boundary() {
        // 'é' is two bytes; at odd offsets the 1 KiB cut falls inside one.
        let text = format!("a{}", "é".repeat(MAX_RECEIPT_ITEM));
        let kept = cut_item(&Bytes::from(text));
        assert_eq!(kept.len(), MAX_RECEIPT_ITEM - 1);
        let receipt_text = std::str::from_utf8(&kept).expect("whole characters");
        assert!(receipt_text.ends_with('é'));
    }

    #[test]
    fn a_receipt_encodes_its_item_as_text() {
        let receipt = Receipt {
            job: "j".into(),
            seq: 3,
            state: Settled::Done,
            attempt: 1,
            exit_code: Some(0),
            seconds: 0.5,
            worker: "w/0".into(),
            item: Bytes::from("naïve \"item\""),
            reason: None,
            stderr_tail: None,
            at: 7,
            life: 0,
            value: None,
            value_url: None,
            copy: false,
        };
        let json = serde_json::to_string(&receipt).unwrap();
        assert!(json.contains(r#""item":"naïve \"item\"""#), "{json}");
        let back: Receipt = serde_json::from_str(&json).unwrap();
        assert_eq!(back, receipt);
    }

    #[test]
    fn a_borrowed_receipt_owns_every_field_again() {
        let receipt = Receipt {
            job: "j".into(),
            seq: 3,
            state: Settled::Dead,
            attempt: 2,
            exit_code: Some(-9),
            seconds: 0.25,
            worker: "w/1".into(),
            item: Bytes::from("x"),
            reason: Some("killed".into()),
            stderr_tail: Some("oom".into()),
            at: 11,
            life: 3,
            value: None,
            value_url: None,
            copy: false,
        };
        assert_eq!(receipt.borrowed().to_receipt(), receipt);
    }

    fn attributes(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_job_comes_off_the_wire_attributes_and_goes_back_on() {
        let mut known = None;
        let mut wire = attributes(&[("k", "v"), (JOB_ATTRIBUTE, "j"), (SEQ_ATTRIBUTE, "7")]);
        let job = JobItem::take_from(&mut wire, &mut known).expect("a job");
        assert_eq!(job, JobItem::new("j", 7));
        assert_eq!(
            wire,
            attributes(&[("k", "v")]),
            "the job's keys are taken off"
        );

        let mut again = attributes(&[(JOB_ATTRIBUTE, "j"), (SEQ_ATTRIBUTE, "8")]);
        let second = JobItem::take_from(&mut again, &mut known).expect("a job");
        assert!(Arc::ptr_eq(&job.job, &second.job), "one name per job");

        let message = crate::Item::new("x")
            .with_attribute("k", "v")
            .with_job(job.clone());
        assert_eq!(*message.attributes, attributes(&[("k", "v")]));
        let on_wire = message.wire_attributes();
        assert_eq!(
            *on_wire,
            attributes(&[("k", "v"), (JOB_ATTRIBUTE, "j"), (SEQ_ATTRIBUTE, "7")])
        );
        let back = crate::Item::from_wire("x", on_wire.into_owned(), &mut None);
        assert_eq!(back, message);
        let plain = crate::Item::new("y").with_attribute("k", "v");
        assert!(matches!(plain.wire_attributes(), Cow::Borrowed(_)));
    }

    #[test]
    fn a_malformed_job_stays_in_the_attributes() {
        for pairs in [
            &[(JOB_ATTRIBUTE, "j"), (SEQ_ATTRIBUTE, "seven")][..],
            &[(JOB_ATTRIBUTE, "j"), (SEQ_ATTRIBUTE, "-1")][..],
            &[(JOB_ATTRIBUTE, "j")][..],
            &[(SEQ_ATTRIBUTE, "3")][..],
        ] {
            let mut wire = attributes(pairs);
            assert_eq!(JobItem::take_from(&mut wire, &mut None), None, "{pairs:?}");
            assert_eq!(wire, attributes(pairs), "left as they were");
        }
    }
}
