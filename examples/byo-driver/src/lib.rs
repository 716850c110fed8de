//! Bring your own driver.
//!
//! A driver is two small pieces: a [`WorkQueue`] (here `CountingQueue`, a
//! decorator that counts every call and forwards to the memory queue: swap
//! the inner queue for your backend's client) and a [`Driver`] that the
//! runner's registry finds by name (`--queue counting`) or URL scheme
//! (`--queue counting://anything`). `src/bin/my-runner.rs` is the whole
//! binary: `runner::main_with(Registry::builtin().with(CountingDriver))`.
#![deny(missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use forloop_core::{
    Backlog, Capabilities, DeadLetter, Delivery, Driver, LeaseReport, LeaseToken, MemoryQueue,
    Message, MessageId, QueueAddress, QueueConfig, QueueError, WorkQueue,
};

/// Counts calls on the way through to any queue.
#[derive(Debug)]
pub struct CountingQueue<Q> {
    inner: Q,
    published: AtomicU64,
    acked: AtomicU64,
}

impl<Q> CountingQueue<Q> {
    /// Wrap `inner`.
    pub fn new(inner: Q) -> Self {
        Self {
            inner,
            published: AtomicU64::new(0),
            acked: AtomicU64::new(0),
        }
    }

    /// Items published so far.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl<Q: WorkQueue> WorkQueue for CountingQueue<Q> {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn publish(&self, batch: Vec<Message>) -> Result<Vec<MessageId>, QueueError> {
        let ids = self.inner.publish(batch).await?;
        let total = self
            .published
            .fetch_add(ids.len() as u64, Ordering::Relaxed)
            + ids.len() as u64;
        tracing::info!("counting: {total} items published");
        Ok(ids)
    }

    async fn pull(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, QueueError> {
        self.inner.pull(max, wait).await
    }

    async fn ack(&self, tokens: &[LeaseToken]) -> Result<LeaseReport, QueueError> {
        let report = self.inner.ack(tokens).await?;
        let acked = (tokens.len() - report.lost.len()) as u64;
        let total = self.acked.fetch_add(acked, Ordering::Relaxed) + acked;
        tracing::info!("counting: {total} items acked");
        Ok(report)
    }

    async fn nack(
        &self,
        tokens: &[LeaseToken],
        delay: Duration,
    ) -> Result<LeaseReport, QueueError> {
        self.inner.nack(tokens, delay).await
    }

    async fn release(&self, tokens: &[LeaseToken]) -> Result<LeaseReport, QueueError> {
        self.inner.release(tokens).await
    }

    async fn extend_deadline(
        &self,
        tokens: &[LeaseToken],
        lease: Duration,
    ) -> Result<LeaseReport, QueueError> {
        self.inner.extend_deadline(tokens, lease).await
    }

    async fn dead_letter(
        &self,
        tokens: &[LeaseToken],
        reason: &str,
    ) -> Result<LeaseReport, QueueError> {
        self.inner.dead_letter(tokens, reason).await
    }

    async fn backlog(&self) -> Result<Backlog, QueueError> {
        self.inner.backlog().await
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError> {
        self.inner.dead_letters(limit).await
    }

    async fn requeue_dead(&self) -> Result<u64, QueueError> {
        self.inner.requeue_dead().await
    }

    async fn purge_dead(&self) -> Result<u64, QueueError> {
        self.inner.purge_dead().await
    }
}

/// The registry entry: `--queue counting` or `--queue counting://...`.
#[derive(Debug, Default)]
pub struct CountingDriver;

#[async_trait]
impl Driver for CountingDriver {
    fn name(&self) -> &str {
        "counting"
    }

    fn claims(&self, address: &QueueAddress) -> bool {
        address.scheme() == Some("counting")
    }

    fn in_process(&self) -> bool {
        true // It wraps the memory queue; a network backend says false.
    }

    async fn open(
        &self,
        _address: &QueueAddress,
        config: QueueConfig,
    ) -> Result<Arc<dyn WorkQueue>, QueueError> {
        Ok(Arc::new(CountingQueue::new(MemoryQueue::new(config))))
    }
}
