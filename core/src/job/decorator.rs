//! Ledger decorators: a ledger that wraps another and changes a few of its
//! calls (a deadline on each, a fault in a test), written once so that a
//! wrapper names only what it changes and can never drop a call: the
//! counterpart of [`crate::QueueDecorator`]. A hand-written wrapper that
//! forgot [`Ledger::cancel`] would answer "cannot cancel" from the trait's
//! default instead of the inner ledger's answer; here every call forwards,
//! and the blanket impl is checked under `clippy::missing_trait_methods`.

use std::fmt;

use async_trait::async_trait;

use super::{Begun, JobSeqs, JobStatus, Ledger, Manifest, Receipt, ReceiptRef, SeqSet, SheetCalls};
use crate::{DeadSelect, LeaseReport, LeaseToken, QueueError, Requeued, WorkQueue};

/// A ledger that wraps another: implement [`inner`](Self::inner) and the
/// calls you change; every other call goes to the inner ledger unchanged,
/// and the wrapper is a [`Ledger`] by the blanket impl below.
#[async_trait]
pub trait LedgerDecorator: Send + Sync + fmt::Debug {
    /// The ledger this one wraps.
    fn inner(&self) -> &dyn Ledger;

    /// [`Ledger::begin`].
    async fn begin(&self, manifest: &Manifest) -> Result<Begun, QueueError> {
        self.inner().begin(manifest).await
    }
    /// [`Ledger::submitted`].
    async fn submitted(&self, job: &str, seqs: &SeqSet) -> Result<(), QueueError> {
        self.inner().submitted(job, seqs).await
    }
    /// [`Ledger::record`].
    async fn record(&self, receipts: &[Receipt]) -> Result<(), QueueError> {
        self.inner().record(receipts).await
    }
    /// [`Ledger::record_then_ack`].
    async fn record_then_ack(
        &self,
        queue: &dyn WorkQueue,
        tokens: &[LeaseToken],
        receipts: &[ReceiptRef<'_>],
    ) -> Result<LeaseReport, QueueError> {
        self.inner().record_then_ack(queue, tokens, receipts).await
    }
    /// [`Ledger::record_then_dead_letter`].
    async fn record_then_dead_letter(
        &self,
        queue: &dyn WorkQueue,
        tokens: &[LeaseToken],
        reason: &str,
        receipts: &[Option<Receipt>],
    ) -> Result<LeaseReport, QueueError> {
        self.inner()
            .record_then_dead_letter(queue, tokens, reason, receipts)
            .await
    }
    /// [`Ledger::requeue_dead`].
    async fn requeue_dead(&self, queue: &dyn WorkQueue) -> Result<u64, QueueError> {
        self.inner().requeue_dead(queue).await
    }
    /// [`Ledger::requeue_dead_where`].
    async fn requeue_dead_where(
        &self,
        queue: &dyn WorkQueue,
        select: &DeadSelect<'_>,
    ) -> Result<Requeued, QueueError> {
        self.inner().requeue_dead_where(queue, select).await
    }
    /// [`Ledger::jobs`].
    async fn jobs(&self) -> Result<Vec<JobStatus>, QueueError> {
        self.inner().jobs().await
    }
    /// [`Ledger::cancel`].
    async fn cancel(&self, job: &str) -> Result<bool, QueueError> {
        self.inner().cancel(job).await
    }
    /// [`Ledger::halt`].
    async fn halt(&self, job: &str, epoch: u64) -> Result<bool, QueueError> {
        self.inner().halt(job, epoch).await
    }
    /// [`Ledger::unhalt`].
    async fn unhalt(&self, job: &str) -> Result<bool, QueueError> {
        self.inner().unhalt(job).await
    }
    /// [`Ledger::forget`].
    async fn forget(&self, job: &str) -> Result<bool, QueueError> {
        self.inner().forget(job).await
    }
    /// [`Ledger::forgotten`].
    async fn forgotten(&self) -> Result<Vec<String>, QueueError> {
        self.inner().forgotten().await
    }
    /// [`Ledger::requeued`].
    async fn requeued(&self, dead: &[Receipt]) -> Result<(), QueueError> {
        self.inner().requeued(dead).await
    }
    /// [`Ledger::seqs`].
    async fn seqs(&self, job: &str) -> Result<Option<JobSeqs>, QueueError> {
        self.inner().seqs(job).await
    }
    /// [`Ledger::receipts`].
    async fn receipts(&self, job: &str) -> Result<Vec<Receipt>, QueueError> {
        self.inner().receipts(job).await
    }
    /// [`Ledger::calls`].
    fn calls(&self) -> Option<SheetCalls> {
        self.inner().calls()
    }
    /// [`Ledger::close`].
    async fn close(&self) {
        self.inner().close().await
    }
}

/// A decorator is a ledger: every call goes to its [`LedgerDecorator`]
/// form, none falls back to a [`Ledger`] default (the lint makes a
/// forgotten call an error).
#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl<D: LedgerDecorator> Ledger for D {
    async fn begin(&self, manifest: &Manifest) -> Result<Begun, QueueError> {
        LedgerDecorator::begin(self, manifest).await
    }
    async fn submitted(&self, job: &str, seqs: &SeqSet) -> Result<(), QueueError> {
        LedgerDecorator::submitted(self, job, seqs).await
    }
    async fn record(&self, receipts: &[Receipt]) -> Result<(), QueueError> {
        LedgerDecorator::record(self, receipts).await
    }
    async fn record_then_ack(
        &self,
        queue: &dyn WorkQueue,
        tokens: &[LeaseToken],
        receipts: &[ReceiptRef<'_>],
    ) -> Result<LeaseReport, QueueError> {
        LedgerDecorator::record_then_ack(self, queue, tokens, receipts).await
    }
    async fn record_then_dead_letter(
        &self,
        queue: &dyn WorkQueue,
        tokens: &[LeaseToken],
        reason: &str,
        receipts: &[Option<Receipt>],
    ) -> Result<LeaseReport, QueueError> {
        LedgerDecorator::record_then_dead_letter(self, queue, tokens, reason, receipts).await
    }
    async fn requeue_dead(&self, queue: &dyn WorkQueue) -> Result<u64, QueueError> {
        LedgerDecorator::requeue_dead(self, queue).await
    }
    async fn requeue_dead_where(
        &self,
        queue: &dyn WorkQueue,
        select: &DeadSelect<'_>,
    ) -> Result<Requeued, QueueError> {
        LedgerDecorator::requeue_dead_where(self, queue, select).await
    }
    async fn jobs(&self) -> Result<Vec<JobStatus>, QueueError> {
        LedgerDecorator::jobs(self).await
    }
    async fn cancel(&self, job: &str) -> Result<bool, QueueError> {
        LedgerDecorator::cancel(self, job).await
    }
    async fn halt(&self, job: &str, epoch: u64) -> Result<bool, QueueError> {
        LedgerDecorator::halt(self, job, epoch).await
    }
    async fn unhalt(&self, job: &str) -> Result<bool, QueueError> {
        LedgerDecorator::unhalt(self, job).await
    }
    async fn forget(&self, job: &str) -> Result<bool, QueueError> {
        LedgerDecorator::forget(self, job).await
    }
    async fn forgotten(&self) -> Result<Vec<String>, QueueError> {
        LedgerDecorator::forgotten(self).await
    }
    async fn requeued(&self, dead: &[Receipt]) -> Result<(), QueueError> {
        LedgerDecorator::requeued(self, dead).await
    }
    async fn seqs(&self, job: &str) -> Result<Option<JobSeqs>, QueueError> {
        LedgerDecorator::seqs(self, job).await
    }
    async fn receipts(&self, job: &str) -> Result<Vec<Receipt>, QueueError> {
        LedgerDecorator::receipts(self, job).await
    }
    fn calls(&self) -> Option<SheetCalls> {
        LedgerDecorator::calls(self)
    }
    async fn close(&self) {
        LedgerDecorator::close(self).await
    }
}
