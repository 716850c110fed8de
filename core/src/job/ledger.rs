//! The [`Ledger`] trait: where a backend keeps its jobs' manifests and
//! receipts ([`crate::memory::MemoryLedger`] is the in-process one).

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use serde::Serialize;

use super::{Halt, Manifest, Receipt, ReceiptRef, SeqSet};
use crate::{DeadSelect, LeaseReport, LeaseToken, QueueError, Requeued, WorkQueue};

/// What [`Ledger::begin`] found.
// Made once per submit: its size costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
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
    /// When the job was cancelled (Unix milliseconds; `None`: it was not).
    /// A cancelled job is over: its items still queued are settled
    /// without running.
    pub cancelled: Option<u64>,
    /// Whether the job halted past its `--max-dead`, and the counts its
    /// limit starts from ([`super::halt`]).
    #[serde(skip_serializing_if = "Halt::is_empty")]
    pub halt: Halt,
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

    /// Every item is settled.
    pub fn is_complete(&self) -> bool {
        self.settled() >= self.manifest.total
    }

    /// The job is over: complete, cancelled or halted. No worker waits
    /// for it (a halted job's items wait in the queue for a resume).
    pub fn is_over(&self) -> bool {
        self.is_complete() || self.cancelled.is_some() || self.is_halted()
    }

    /// Every item was sent (a job whose submit stopped part-way is not).
    pub fn is_sealed(&self) -> bool {
        self.submitted >= self.manifest.total
    }

    /// Where the job is in its life.
    pub fn phase(&self) -> JobPhase {
        if self.cancelled.is_some() {
            JobPhase::Cancelled
        } else if self.is_complete() {
            JobPhase::Complete
        } else if self.is_halted() {
            JobPhase::Halted
        } else if self.is_sealed() {
            JobPhase::Running
        } else {
            JobPhase::Unsealed
        }
    }

    /// Items settled per second, between the first and last settlement.
    pub fn rate(&self) -> Option<f64> {
        let (first, last) = self.settled_between?;
        let secs = (last.saturating_sub(first)) as f64 / 1000.0;
        (secs > 0.0 && self.settled() > 1).then(|| (self.settled() - 1) as f64 / secs)
    }
}

/// Where a job is in its life, as every ledger merges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobPhase {
    /// Not every item was sent yet: its submit is under way, or stopped
    /// part-way (then `--resume` sends the rest, or cancel ends it).
    Unsealed,
    /// Every item was sent; some are not settled yet.
    Running,
    /// Every item is settled, done or dead.
    Complete,
    /// Cancelled: its items still queued are settled without running.
    Cancelled,
    /// Halted past its `--max-dead`: its items stay queued, no worker
    /// takes them until `--resume`.
    Halted,
}

impl fmt::Display for JobPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JobPhase::Unsealed => "unsealed",
            JobPhase::Running => "running",
            JobPhase::Complete => "complete",
            JobPhase::Cancelled => "cancelled",
            JobPhase::Halted => "halted",
        })
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
    /// one with another input is an [`crate::QueueErrorKind::Invalid`] error that
    /// says to name the new job.
    async fn begin(&self, manifest: &Manifest) -> Result<Begun, QueueError>;

    /// Record that `seqs` of `job` are in the queue (after their publish
    /// succeeded).
    async fn submitted(&self, job: &str, seqs: &SeqSet) -> Result<(), QueueError>;

    /// Record settlements, before the acks or dead-letters they stand for.
    async fn record(&self, receipts: &[Receipt]) -> Result<(), QueueError>;

    /// Record `receipts`, then ack `tokens` on `queue` (the queue this
    /// ledger was opened with): how a worker settles the items of a job
    /// that succeeded. The receipts come first, so a crash between the two
    /// re-runs an item (its receipt counts once) and never loses its count.
    /// The receipts are borrowed from the worker's finished tasks. The
    /// default makes the two calls; a backend that can do both in one
    /// round trip (Redis: one script) or keep borrowed receipts (the memory
    /// ledger) overrides it, keeping that order or making the two one.
    async fn record_then_ack(
        &self,
        queue: &dyn WorkQueue,
        tokens: &[LeaseToken],
        receipts: &[ReceiptRef<'_>],
    ) -> Result<LeaseReport, QueueError> {
        if !receipts.is_empty() {
            let receipts: Vec<Receipt> = receipts.iter().map(ReceiptRef::to_receipt).collect();
            self.record(&receipts).await?;
        }
        queue.ack(tokens).await
    }

    /// Dead-letter `tokens` on `queue` (the queue this ledger was opened
    /// with) with `reason`, and record `receipts` (one per token, in the
    /// same order; `None` for an item of no job) for the items that really
    /// went: how a worker buries the items of a job. An item is never
    /// counted dead while it is live: a failed call records nothing, and a
    /// token the report names lost (its lease ended: the queue delivers the
    /// item again) gets no receipt. The default dead-letters first, then
    /// records; the backend counts an item it buried at once where it can
    /// ([`crate::MemoryQueue`]), and a ledger that reads the dead place
    /// ([`crate::kit::SheetLedger`]) counts what a crash between the two
    /// left without a receipt. A backend that can do both in one step
    /// (Redis: one script) overrides it.
    async fn record_then_dead_letter(
        &self,
        queue: &dyn WorkQueue,
        tokens: &[LeaseToken],
        reason: &str,
        receipts: &[Option<Receipt>],
    ) -> Result<LeaseReport, QueueError> {
        let report = queue.dead_letter(tokens, reason).await?;
        let buried: Vec<Receipt> = tokens
            .iter()
            .zip(receipts)
            .filter(|(token, _)| !report.lost.contains(token))
            .filter_map(|(_, receipt)| receipt.clone())
            .collect();
        if !buried.is_empty() {
            self.record(&buried).await?;
        }
        Ok(report)
    }

    /// Put every dead item of `queue` (the queue this ledger was opened
    /// with) back to work, each un-counted ([`Ledger::requeued`]) before it
    /// moves: how `runner dead requeue` requeues. Returns how many moved.
    /// The default is for a ledger whose queue un-counts what it requeues
    /// in the same step, under its own lock or script (the memory queue,
    /// Redis); a ledger kept apart from its queue (the sheet ledger)
    /// overrides it.
    async fn requeue_dead(&self, queue: &dyn WorkQueue) -> Result<u64, QueueError> {
        queue.requeue_dead().await
    }

    /// [`Ledger::requeue_dead`] for the dead items `select` picks: the
    /// others stay dead and counted ([`WorkQueue::requeue_dead_where`]).
    /// Each picked item is un-counted in the step that moves it (memory,
    /// Redis: the default) or before its batch moves (the sheet ledger),
    /// so it counts once in its job whatever happens between.
    async fn requeue_dead_where(
        &self,
        queue: &dyn WorkQueue,
        select: &DeadSelect<'_>,
    ) -> Result<Requeued, QueueError> {
        queue.requeue_dead_where(select, None).await
    }

    /// Every job with a manifest, with its counts.
    async fn jobs(&self) -> Result<Vec<JobStatus>, QueueError>;

    /// Cancel `job`: record it as cancelled ([`JobStatus::cancelled`]), so
    /// that workers settle its items still queued without running them and
    /// nobody waits for it. Idempotent; `false`: no such job.
    async fn cancel(&self, job: &str) -> Result<bool, QueueError> {
        let _ = job;
        Err(QueueError::unsupported("cancel a job"))
    }

    /// Halt `job` in `epoch` (the [`Halt::epoch`] of the reading that
    /// found its `--max-dead` passed): from then on no worker takes its
    /// items. Idempotent (the earliest halt of an epoch stays); `false`:
    /// no such job, or it was resumed since (another epoch).
    async fn halt(&self, job: &str, epoch: u64) -> Result<bool, QueueError> {
        let _ = (job, epoch);
        Err(QueueError::unsupported("halt a job"))
    }

    /// Resume a halted `job`: a new epoch whose limit counts from the
    /// job's counts now. `false`: no such job.
    async fn unhalt(&self, job: &str) -> Result<bool, QueueError> {
        let _ = job;
        Err(QueueError::unsupported("resume a halted job"))
    }

    /// Forget `job`: its manifest, item sets and receipts go, and its name
    /// is kept among [`Ledger::forgotten`], so that a worker meeting one of
    /// its items settles it without running it and a reader can tell a
    /// forgotten job from one the server lost. Idempotent; `false`: no
    /// such job.
    async fn forget(&self, job: &str) -> Result<bool, QueueError> {
        let _ = job;
        Err(QueueError::unsupported("forget a job"))
    }

    /// The names of the jobs forgotten with [`Ledger::forget`].
    async fn forgotten(&self) -> Result<Vec<String>, QueueError> {
        Ok(Vec::new())
    }

    /// Un-count the dead receipts `dead` (each as [`Ledger::receipts`]
    /// returned it): their items are being put back to work. Called before
    /// the items move, so an item is never counted dead while it is live;
    /// a receipt written after these (a new death, a success) counts anew.
    async fn requeued(&self, dead: &[Receipt]) -> Result<(), QueueError> {
        let _ = dead;
        Err(QueueError::unsupported("un-count requeued items"))
    }

    /// One job's item sets (`None`: no such job).
    async fn seqs(&self, job: &str) -> Result<Option<JobSeqs>, QueueError>;

    /// One receipt per settled item of `job`, by sequence number. A ledger
    /// in one process's memory may keep the dead items' receipts only (the
    /// memory queue's, unless made with
    /// [`crate::MemoryQueue::with_done_receipts`]); it returns those.
    async fn receipts(&self, job: &str) -> Result<Vec<Receipt>, QueueError>;

    /// What this ledger has asked of the backend so far, where it counts
    /// (the [`crate::kit::SheetLedger`] does); `None` by default.
    fn calls(&self) -> Option<SheetCalls> {
        None
    }

    /// Finish what the ledger does on its own (a look at the dead place
    /// under way) before the process exits, so nothing it holds is left
    /// hidden. The worker calls it on its way out. Default: nothing to do.
    async fn close(&self) {}
}

/// Keep one receipt per item in `receipts` (the rule of [`Settled::replaces`]).
pub(crate) fn keep_receipt(
    receipts: &mut BTreeMap<(std::sync::Arc<str>, u64), Receipt>,
    receipt: &Receipt,
) {
    let key = (receipt.job.clone(), receipt.seq);
    if receipt.replaces(receipts.get(&key)) {
        receipts.insert(key, receipt.clone());
    }
}

/// What a ledger kept in sheets ([`crate::kit::SheetLedger`]) has asked
/// of its queues so far: the cost of the ledger, by call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SheetCalls {
    /// `pull` calls on the siblings.
    pub pulls: u64,
    /// Sheets those pulls brought.
    pub sheets_read: u64,
    /// `publish` calls on the siblings.
    pub publishes: u64,
    /// Sheets published.
    pub sheets_written: u64,
    /// Bytes of the sheets published.
    pub bytes_written: u64,
    /// `ack` calls on the siblings.
    pub acks: u64,
    /// `release` calls on the siblings.
    pub releases: u64,
    /// `list_dead` calls on the main queue.
    pub dead_looks: u64,
}

impl SheetCalls {
    /// Every call to the backend.
    pub fn total(&self) -> u64 {
        self.pulls + self.publishes + self.acks + self.releases + self.dead_looks
    }
}
