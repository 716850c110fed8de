//! Decorators: a queue that wraps another and changes a few of its calls
//! (counts them, logs them, injects faults in a test), written once so that
//! a wrapper names only what it changes and can never drop a call.
//!
//! Hand-written forwarding drops calls silently: a method with a default
//! in [`WorkQueue`] that a wrapper forgets takes the default, not the inner
//! queue's answer (a counting wrapper that forgot the queue's ledger, when
//! the ledger was a queue call, quietly stopped its jobs). Here every call
//! has one forwarding default,
//! and the blanket impl that makes a decorator a [`WorkQueue`] is checked
//! under `clippy::missing_trait_methods`: a call added to the contract
//! later is a lint error here until it is forwarded.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use super::{
    Backlog, Capabilities, DeadLetter, DeadSelect, Delivery, Item, LeaseReport, LeaseToken,
    MessageId, RequeueWatch, Requeued, WorkQueue,
};
use crate::QueueError;

/// A queue that wraps another: implement [`inner`](Self::inner) and the
/// calls you change; every other call goes to the inner queue unchanged,
/// and the wrapper is a [`WorkQueue`] by the blanket impl below.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use forloop_core::queue::QueueDecorator;
/// use forloop_core::{LeaseReport, LeaseToken, MemoryQueue, QueueConfig, QueueError, WorkQueue};
///
/// /// Counts acked items on the way through.
/// #[derive(Debug)]
/// struct Counting {
///     inner: MemoryQueue,
///     acked: AtomicU64,
/// }
///
/// #[async_trait::async_trait]
/// impl QueueDecorator for Counting {
///     fn inner(&self) -> &dyn WorkQueue {
///         &self.inner
///     }
///     async fn ack(&self, tokens: &[LeaseToken]) -> Result<LeaseReport, QueueError> {
///         let report = self.inner.ack(tokens).await?;
///         self.acked.fetch_add((tokens.len() - report.lost.len()) as u64, Ordering::Relaxed);
///         Ok(report)
///     }
/// }
///
/// let queue: Box<dyn WorkQueue> = Box::new(Counting {
///     inner: MemoryQueue::new(QueueConfig::new("q")),
///     acked: AtomicU64::new(0),
/// });
/// assert_eq!(queue.capabilities(), MemoryQueue::new(QueueConfig::new("q")).capabilities());
/// ```
///
/// A type that is a decorator has each call twice in scope (here and on
/// [`WorkQueue`]); call it through `dyn WorkQueue`, as the worker does, or
/// name the trait (`WorkQueue::publish(&queue, batch)`).
#[async_trait]
pub trait QueueDecorator: Send + Sync + fmt::Debug {
    /// The queue this one wraps.
    fn inner(&self) -> &dyn WorkQueue;

    /// [`WorkQueue::capabilities`].
    fn capabilities(&self) -> Capabilities {
        self.inner().capabilities()
    }
    /// [`WorkQueue::publish`].
    async fn publish(&self, batch: Vec<Item>) -> Result<Vec<MessageId>, QueueError> {
        self.inner().publish(batch).await
    }
    /// [`WorkQueue::pull`].
    async fn pull(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, QueueError> {
        self.inner().pull(max, wait).await
    }
    /// [`WorkQueue::ack`].
    async fn ack(&self, tokens: &[LeaseToken]) -> Result<LeaseReport, QueueError> {
        self.inner().ack(tokens).await
    }
    /// [`WorkQueue::nack`].
    async fn nack(
        &self,
        tokens: &[LeaseToken],
        delay: Duration,
    ) -> Result<LeaseReport, QueueError> {
        self.inner().nack(tokens, delay).await
    }
    /// [`WorkQueue::release`].
    async fn release(&self, tokens: &[LeaseToken]) -> Result<LeaseReport, QueueError> {
        self.inner().release(tokens).await
    }
    /// [`WorkQueue::fail_attempt`].
    async fn fail_attempt(
        &self,
        tokens: &[LeaseToken],
        delay: Duration,
    ) -> Result<LeaseReport, QueueError> {
        self.inner().fail_attempt(tokens, delay).await
    }
    /// [`WorkQueue::extend_lease`].
    async fn extend_lease(
        &self,
        tokens: &[LeaseToken],
        lease: Duration,
    ) -> Result<LeaseReport, QueueError> {
        self.inner().extend_lease(tokens, lease).await
    }
    /// [`WorkQueue::dead_letter`].
    async fn dead_letter(
        &self,
        tokens: &[LeaseToken],
        reason: &str,
    ) -> Result<LeaseReport, QueueError> {
        self.inner().dead_letter(tokens, reason).await
    }
    /// [`WorkQueue::backlog`].
    async fn backlog(&self) -> Result<Backlog, QueueError> {
        self.inner().backlog().await
    }
    /// [`WorkQueue::list_dead`].
    async fn list_dead(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError> {
        self.inner().list_dead(limit).await
    }
    /// [`WorkQueue::requeue_dead`].
    async fn requeue_dead(&self) -> Result<u64, QueueError> {
        self.inner().requeue_dead().await
    }
    /// [`WorkQueue::requeue_dead_telling`].
    async fn requeue_dead_telling(&self, watch: &dyn RequeueWatch) -> Result<u64, QueueError> {
        self.inner().requeue_dead_telling(watch).await
    }
    /// [`WorkQueue::purge_dead`].
    async fn purge_dead(&self) -> Result<u64, QueueError> {
        self.inner().purge_dead().await
    }
    /// [`WorkQueue::requeue_dead_where`].
    async fn requeue_dead_where(
        &self,
        select: &DeadSelect<'_>,
        watch: Option<&dyn RequeueWatch>,
    ) -> Result<Requeued, QueueError> {
        self.inner().requeue_dead_where(select, watch).await
    }
}

/// A decorator is a queue: every call goes to its [`QueueDecorator`] form,
/// none falls back to a [`WorkQueue`] default (the lint makes a forgotten
/// call an error).
#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl<D: QueueDecorator> WorkQueue for D {
    fn capabilities(&self) -> Capabilities {
        QueueDecorator::capabilities(self)
    }
    async fn publish(&self, batch: Vec<Item>) -> Result<Vec<MessageId>, QueueError> {
        QueueDecorator::publish(self, batch).await
    }
    async fn pull(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, QueueError> {
        QueueDecorator::pull(self, max, wait).await
    }
    async fn ack(&self, tokens: &[LeaseToken]) -> Result<LeaseReport, QueueError> {
        QueueDecorator::ack(self, tokens).await
    }
    async fn nack(
        &self,
        tokens: &[LeaseToken],
        delay: Duration,
    ) -> Result<LeaseReport, QueueError> {
        QueueDecorator::nack(self, tokens, delay).await
    }
    async fn release(&self, tokens: &[LeaseToken]) -> Result<LeaseReport, QueueError> {
        QueueDecorator::release(self, tokens).await
    }
    async fn fail_attempt(
        &self,
        tokens: &[LeaseToken],
        delay: Duration,
    ) -> Result<LeaseReport, QueueError> {
        QueueDecorator::fail_attempt(self, tokens, delay).await
    }
    async fn extend_lease(
        &self,
        tokens: &[LeaseToken],
        lease: Duration,
    ) -> Result<LeaseReport, QueueError> {
        QueueDecorator::extend_lease(self, tokens, lease).await
    }
    async fn dead_letter(
        &self,
        tokens: &[LeaseToken],
        reason: &str,
    ) -> Result<LeaseReport, QueueError> {
        QueueDecorator::dead_letter(self, tokens, reason).await
    }
    async fn backlog(&self) -> Result<Backlog, QueueError> {
        QueueDecorator::backlog(self).await
    }
    async fn list_dead(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError> {
        QueueDecorator::list_dead(self, limit).await
    }
    async fn requeue_dead(&self) -> Result<u64, QueueError> {
        QueueDecorator::requeue_dead(self).await
    }
    async fn requeue_dead_telling(&self, watch: &dyn RequeueWatch) -> Result<u64, QueueError> {
        QueueDecorator::requeue_dead_telling(self, watch).await
    }
    async fn purge_dead(&self) -> Result<u64, QueueError> {
        QueueDecorator::purge_dead(self).await
    }
    async fn requeue_dead_where(
        &self,
        select: &DeadSelect<'_>,
        watch: Option<&dyn RequeueWatch>,
    ) -> Result<Requeued, QueueError> {
        QueueDecorator::requeue_dead_where(self, select, watch).await
    }
}
