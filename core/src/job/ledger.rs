//! The [`Ledger`] trait: where a backend keeps its jobs' manifests and
//! receipts, and [`MemoryLedger`], the in-process one.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use serde::Serialize;

use super::{Book, Manifest, Receipt, SeqSet, Settled};
use crate::{QueueError, QueueErrorKind};

/// What [`Ledger::begin`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Begun {
    /// The job is new; its manifest is recorded.
    New,
    /// The job exists with the same input: a resume, or a repeated submit.
    Existing(JobStatus),
}

/// A job's counts, as the ledger has them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobStatus {
    /// The job's manifest.
    pub manifest: Manifest,
    /// Items known to be in the queue or past it.
    pub submitted: u64,
    /// Items that succeeded.
    pub done: u64,
    /// Items dead-lettered (and not done since).
    pub dead: u64,
    /// The first and last settlement (Unix milliseconds).
    pub settled_between: Option<(u64, u64)>,
}

impl JobStatus {
    /// Done or dead.
    pub fn settled(&self) -> u64 {
        self.done + self.dead
    }

    /// Items not settled yet.
    pub fn remaining(&self) -> u64 {
        self.manifest.total.saturating_sub(self.settled())
    }

    /// Every item is settled: the job is over.
    pub fn is_complete(&self) -> bool {
        self.settled() >= self.manifest.total
    }

    /// Every item was sent (a job whose submit stopped part-way is not).
    pub fn is_sealed(&self) -> bool {
        self.submitted >= self.manifest.total
    }

    /// Items settled per second, between the first and last settlement.
    pub fn rate(&self) -> Option<f64> {
        let (first, last) = self.settled_between?;
        let secs = (last.saturating_sub(first)) as f64 / 1000.0;
        (secs > 0.0 && self.settled() > 1).then(|| (self.settled() - 1) as f64 / secs)
    }
}

/// A job's item sets, for `--resume`.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSeqs {
    /// The job's manifest.
    pub manifest: Manifest,
    /// Items known to be in the queue or past it.
    pub submitted: SeqSet,
    /// Items that succeeded.
    pub done: SeqSet,
    /// Items dead-lettered.
    pub dead: SeqSet,
}

impl JobSeqs {
    /// Items neither known to be queued nor settled: what a resume sends.
    pub fn unsent(&self) -> SeqSet {
        let mut sent = self.submitted.clone();
        sent.union(&self.done);
        sent.union(&self.dead);
        sent.missing_below(self.manifest.total)
    }
}

/// Where a backend keeps its jobs: manifests, which items went in, and one
/// receipt per settled item. Kept in the backend itself (no other service),
/// readable from any machine. Every write is idempotent: a receipt for an
/// item already counted changes no count, so callers retry freely.
#[async_trait]
pub trait Ledger: Send + Sync + fmt::Debug {
    /// Record a job's manifest, before its first item is published. An
    /// existing job with the same total and digest is [`Begun::Existing`];
    /// one with another input is an [`QueueErrorKind::Invalid`] error that
    /// says to name the new job.
    async fn begin(&self, manifest: &Manifest) -> Result<Begun, QueueError>;

    /// Record that `seqs` of `job` are in the queue (after their publish
    /// succeeded).
    async fn submitted(&self, job: &str, seqs: &SeqSet) -> Result<(), QueueError>;

    /// Record settlements, before the acks or dead-letters they stand for.
    async fn record(&self, receipts: &[Receipt]) -> Result<(), QueueError>;

    /// Every job with a manifest, with its counts.
    async fn jobs(&self) -> Result<Vec<JobStatus>, QueueError>;

    /// One job's item sets (`None`: no such job).
    async fn seqs(&self, job: &str) -> Result<Option<JobSeqs>, QueueError>;

    /// One receipt per settled item of `job`, by sequence number.
    async fn receipts(&self, job: &str) -> Result<Vec<Receipt>, QueueError>;

    /// What this ledger has asked of the backend so far, where it counts
    /// (the [`super::SheetLedger`] does); `None` by default.
    fn calls(&self) -> Option<super::SheetCalls> {
        None
    }

    /// Finish what the ledger does on its own (a look at the dead place
    /// under way) before the process exits, so nothing it holds is left
    /// hidden. The worker calls it on its way out. Default: nothing to do.
    async fn close(&self) {}
}

/// The ledger of one process: the memory queue's, and a reference for the
/// others' tests.
#[derive(Debug, Default)]
pub struct MemoryLedger {
    state: Mutex<MemoryState>,
}

#[derive(Debug, Default)]
struct MemoryState {
    book: Book,
    /// By job, then by seq: items mostly settle near their input order,
    /// so a dense vector beats a map keyed by (job, seq) per item.
    receipts: std::collections::HashMap<String, Slots>,
}

/// One job's kept receipts, by seq.
#[derive(Debug)]
struct Slots {
    job: Arc<str>,
    slots: Vec<Option<Kept>>,
}

/// A receipt as the memory ledger keeps it: job and seq are its slot's
/// place, and what only some attempts have (a reason, a stderr tail) is
/// boxed, so a slot is about half a [`Receipt`] (at a million items ~90
/// MB rather than ~150 MB, the page faults of which were most of what a
/// job cost the memory queue; docs/BENCHMARKS.md).
#[derive(Debug, Clone)]
struct Kept {
    worker: Arc<str>,
    item: Bytes,
    at: u64,
    seconds: f64,
    exit_code: Option<i32>,
    attempt: u32,
    state: Settled,
    /// The reason and the stderr tail, when there is either.
    said: Option<Box<(Option<String>, Option<String>)>>,
}

impl Kept {
    fn of(receipt: &Receipt) -> Self {
        let said = (receipt.reason.is_some() || receipt.stderr_tail.is_some())
            .then(|| Box::new((receipt.reason.clone(), receipt.stderr_tail.clone())));
        Self {
            worker: Arc::clone(&receipt.worker),
            item: receipt.item.clone(),
            at: receipt.at,
            seconds: receipt.seconds,
            exit_code: receipt.exit_code,
            attempt: receipt.attempt,
            state: receipt.state,
            said,
        }
    }

    fn receipt(&self, job: &Arc<str>, seq: u64) -> Receipt {
        let (reason, stderr_tail) = self.said.as_deref().cloned().unwrap_or_default();
        Receipt {
            job: Arc::clone(job),
            seq,
            state: self.state,
            attempt: self.attempt,
            exit_code: self.exit_code,
            seconds: self.seconds,
            worker: Arc::clone(&self.worker),
            item: self.item.clone(),
            reason,
            stderr_tail,
            at: self.at,
        }
    }
}

impl MemoryLedger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Record receipts at once (no await): for a queue that dead-letters in
    /// its own code.
    pub fn record_now(&self, receipts: &[Receipt]) {
        let mut state = self.state();
        state.book.settle(receipts);
        let MemoryState {
            book,
            receipts: kept,
        } = &mut *state;
        for run in receipts.chunk_by(|a, b| a.job == b.job) {
            let job = &*run[0].job;
            // Kept only for the job's own items: a stray seq (up to 2^64)
            // must not size the vector.
            let total = book
                .jobs
                .get(job)
                .and_then(|entry| entry.manifest.as_ref())
                .map_or(0, |manifest| manifest.total);
            if !kept.contains_key(job) {
                // Sized for the whole job at once: growing by doubling
                // would copy every receipt kept so far.
                let size = usize::try_from(total).unwrap_or(0).min(MAX_PRESIZED);
                let slots = Slots {
                    job: Arc::clone(&run[0].job),
                    slots: Vec::with_capacity(size),
                };
                kept.insert(job.to_string(), slots);
            }
            let slots = &mut kept.get_mut(job).expect("just made").slots;
            for receipt in run {
                let Some(seq) = (receipt.seq < total)
                    .then(|| usize::try_from(receipt.seq).ok())
                    .flatten()
                else {
                    continue;
                };
                if slots.len() <= seq {
                    slots.resize(seq + 1, None);
                }
                let slot = &mut slots[seq];
                if receipt.state.replaces(slot.as_ref().map(|kept| kept.state)) {
                    *slot = Some(Kept::of(receipt));
                }
            }
        }
    }
}

/// The most receipt slots made at once for one job (16 M): past it, the
/// vector grows as receipts come.
const MAX_PRESIZED: usize = 1 << 24;

#[async_trait]
impl Ledger for MemoryLedger {
    async fn begin(&self, manifest: &Manifest) -> Result<Begun, QueueError> {
        self.state()
            .book
            .begin(manifest)
            .map_err(|message| QueueError::new(QueueErrorKind::Invalid, message))
    }

    async fn submitted(&self, job: &str, seqs: &SeqSet) -> Result<(), QueueError> {
        self.state().book.submitted(job, seqs);
        Ok(())
    }

    async fn record(&self, receipts: &[Receipt]) -> Result<(), QueueError> {
        self.record_now(receipts);
        Ok(())
    }

    async fn jobs(&self) -> Result<Vec<JobStatus>, QueueError> {
        Ok(self.state().book.status())
    }

    async fn seqs(&self, job: &str) -> Result<Option<JobSeqs>, QueueError> {
        Ok(self.state().book.seqs(job))
    }

    async fn receipts(&self, job: &str) -> Result<Vec<Receipt>, QueueError> {
        let state = self.state();
        Ok(state
            .receipts
            .get(job)
            .map(|kept| {
                let job = &kept.job;
                (0u64..)
                    .zip(&kept.slots)
                    .filter_map(|(seq, slot)| slot.as_ref().map(|k| k.receipt(job, seq)))
                    .collect()
            })
            .unwrap_or_default())
    }
}

/// Keep one receipt per item in `receipts` (the rule of [`Settled::replaces`]).
pub(crate) fn keep_receipt(
    receipts: &mut BTreeMap<(std::sync::Arc<str>, u64), Receipt>,
    receipt: &Receipt,
) {
    let key = (receipt.job.clone(), receipt.seq);
    if receipt
        .state
        .replaces(receipts.get(&key).map(|kept| kept.state))
    {
        receipts.insert(key, receipt.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_slot_is_much_smaller_than_a_receipt_and_gives_it_back_whole() {
        // The memory ledger keeps one slot per item of a job: its size is
        // what a million items cost in memory.
        let (slot, whole) = (
            std::mem::size_of::<Option<Kept>>(),
            std::mem::size_of::<Option<Receipt>>(),
        );
        assert!(slot * 3 <= whole * 2, "{slot} bytes a slot against {whole}");
        let mut receipt = Receipt {
            job: "j".into(),
            seq: 1,
            state: Settled::Dead,
            attempt: 3,
            exit_code: Some(2),
            seconds: 1.5,
            worker: "w/0".into(),
            item: Bytes::from_static(b"it"),
            reason: Some("exit code 2".into()),
            stderr_tail: Some("boom".into()),
            at: 7,
        };
        let kept = Kept::of(&receipt);
        assert_eq!(kept.receipt(&receipt.job, 1), receipt);
        (receipt.reason, receipt.stderr_tail) = (None, None);
        let kept = Kept::of(&receipt);
        assert!(kept.said.is_none());
        assert_eq!(kept.receipt(&receipt.job, 1), receipt);
    }
}
