//! The queue's [`Ledger`] (stub).

use async_trait::async_trait;
use forloop_core::job::{Begun, JobSeqs, JobStatus, Ledger, Manifest, Receipt, SeqSet};
use forloop_core::{QueueError, QueueErrorKind};

/// The jobs of one Redis queue.
#[derive(Debug)]
pub struct RedisLedger;

fn todo() -> QueueError {
    QueueError::new(QueueErrorKind::Unsupported, "the redis ledger is a stub")
}

#[async_trait]
impl Ledger for RedisLedger {
    async fn begin(&self, _: &Manifest) -> Result<Begun, QueueError> {
        Err(todo())
    }
    async fn submitted(&self, _: &str, _: &SeqSet) -> Result<(), QueueError> {
        Err(todo())
    }
    async fn record(&self, _: &[Receipt]) -> Result<(), QueueError> {
        Err(todo())
    }
    async fn jobs(&self) -> Result<Vec<JobStatus>, QueueError> {
        Err(todo())
    }
    async fn seqs(&self, _: &str) -> Result<Option<JobSeqs>, QueueError> {
        Err(todo())
    }
    async fn receipts(&self, _: &str) -> Result<Vec<Receipt>, QueueError> {
        Err(todo())
    }
}
