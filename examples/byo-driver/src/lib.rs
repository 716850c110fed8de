//! Bring your own driver.
//!
//! A driver is two small pieces: a [`WorkQueue`] (here `CountingQueue`, a
//! [`QueueDecorator`] that counts what is published and acked and forwards
//! every call to the memory queue: swap the inner queue for your backend's
//! client and implement [`WorkQueue`] itself) and a [`Driver`] that the
//! runner's registry finds by name (`--queue counting`) or URL scheme
//! (`--queue counting://anything`). `src/bin/my-runner.rs` is the whole
//! binary: `runner::main_with(Registry::builtin().with(CountingDriver))`.
#![deny(missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use forloop_core::{
    Backend, Driver, Item, LeaseReport, LeaseToken, MemoryQueue, MessageId, QueueAddress,
    QueueConfig, QueueDecorator, QueueError, WorkQueue,
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

/// A decorator names only the calls it changes: every other call goes to
/// the inner queue by [`QueueDecorator`]'s defaults, so a call the contract
/// adds later cannot be dropped here.
#[async_trait]
impl<Q: WorkQueue> QueueDecorator for CountingQueue<Q> {
    fn inner(&self) -> &dyn WorkQueue {
        &self.inner
    }

    async fn publish(&self, batch: Vec<Item>) -> Result<Vec<MessageId>, QueueError> {
        let ids = self.inner.publish(batch).await?;
        let total = self
            .published
            .fetch_add(ids.len() as u64, Ordering::Relaxed)
            + ids.len() as u64;
        tracing::info!("counting: {total} items published");
        Ok(ids)
    }

    async fn ack(&self, tokens: &[LeaseToken]) -> Result<LeaseReport, QueueError> {
        let report = self.inner.ack(tokens).await?;
        let acked = (tokens.len() - report.lost.len()) as u64;
        let total = self.acked.fetch_add(acked, Ordering::Relaxed) + acked;
        tracing::info!("counting: {total} items acked");
        Ok(report)
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

    /// The queue with the ledger its jobs go to: here the memory queue's,
    /// beside the decorator (your backend's own, or none: then `--job`
    /// is refused and workers end by the backlog).
    async fn open(
        &self,
        _address: &QueueAddress,
        config: QueueConfig,
    ) -> Result<Backend, QueueError> {
        let inner = MemoryQueue::new(config);
        let ledger = inner.ledger();
        Ok(Backend::new(Arc::new(CountingQueue::new(inner))).with_ledger(ledger))
    }
}
