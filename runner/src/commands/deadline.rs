//! A deadline on every queue call a command makes: a server that stops
//! answering (a black-holed network, a hung process) fails the call
//! within a bound, naming the server, instead of hanging the command.
//! The worker loop keeps its own, shorter deadlines (`WorkerConfig::
//! call_timeout`); these are the outer bound for everything else.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use forloop_core::job::{
    Begun, JobSeqs, JobStatus, Ledger, LedgerDecorator, Manifest, Receipt, ReceiptRef, SeqSet,
};
use forloop_core::{
    Backend, Backlog, DeadLetter, DeadSelect, Delivery, ErrorChain, Item, LeaseReport, LeaseToken,
    MessageId, QueueDecorator, QueueError, QueueErrorKind, RequeueWatch, Requeued, WorkQueue,
};

/// The longest one queue call may take, unless `FORLOOP_CALL_TIMEOUT` says
/// otherwise (a pull gets its wait on top).
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// What a ledger read may wait on top of [`CALL_TIMEOUT`]: a fresh reader
/// waits out sheets another reader holds (up to their lease) before it
/// answers.
const LEDGER_EXTRA: Duration = Duration::from_secs(40);

/// A receipts listing reads the whole ledger, in many calls: its bound is
/// this many call timeouts.
const RECEIPTS_CALLS: u32 = 20;

/// The call timeout: `FORLOOP_CALL_TIMEOUT` (a duration: `30s`, `2m`), or
/// [`CALL_TIMEOUT`].
pub(crate) fn call_timeout() -> Result<Duration, String> {
    match std::env::var("FORLOOP_CALL_TIMEOUT") {
        Ok(text) => humantime::parse_duration(text.trim())
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                format!(
                    "FORLOOP_CALL_TIMEOUT={text:?} is no duration: give one such as 30s or 2m \
                     (the longest one queue call may take)"
                )
            }),
        Err(_) => Ok(CALL_TIMEOUT),
    }
}

/// Run `call`, or fail it as unavailable, naming `server`, once `limit`
/// has passed.
pub(crate) async fn within<T>(
    server: &str,
    limit: Duration,
    what: &str,
    call: impl Future<Output = Result<T, QueueError>>,
) -> Result<T, QueueError> {
    match tokio::time::timeout(limit, call).await {
        Ok(result) => result,
        Err(_) => Err(QueueError::new(
            QueueErrorKind::Unavailable,
            format!(
                "{server} did not answer {what} within {} (is it up and reachable? \
                 FORLOOP_CALL_TIMEOUT sets this bound)",
                humantime::format_duration(limit)
            ),
        )),
    }
}

/// `backend` with a deadline on each call, naming `server` when one passes.
pub(crate) fn bounded(backend: Backend, server: &str, limit: Duration) -> Backend {
    let server: Arc<str> = Arc::from(server);
    Backend {
        queue: Arc::new(DeadlineQueue {
            inner: backend.queue,
            server: server.clone(),
            limit,
        }),
        ledger: backend.ledger.map(|inner| {
            Arc::new(DeadlineLedger {
                inner,
                server,
                limit,
            }) as Arc<dyn Ledger>
        }),
    }
}

#[derive(Debug)]
struct DeadlineQueue {
    inner: Arc<dyn WorkQueue>,
    server: Arc<str>,
    limit: Duration,
}

impl DeadlineQueue {
    async fn within<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<T, QueueError>>,
    ) -> Result<T, QueueError> {
        within(&self.server, self.limit, what, call).await
    }
}

#[async_trait]
impl QueueDecorator for DeadlineQueue {
    fn inner(&self) -> &dyn WorkQueue {
        &*self.inner
    }
    async fn publish(&self, batch: Vec<Item>) -> Result<Vec<MessageId>, QueueError> {
        self.within("a publish", self.inner.publish(batch)).await
    }
    async fn pull(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, QueueError> {
        let limit = self.limit + wait;
        within(&self.server, limit, "a pull", self.inner.pull(max, wait)).await
    }
    async fn ack(&self, tokens: &[LeaseToken]) -> Result<LeaseReport, QueueError> {
        self.within("an ack", self.inner.ack(tokens)).await
    }
    async fn nack(
        &self,
        tokens: &[LeaseToken],
        delay: Duration,
    ) -> Result<LeaseReport, QueueError> {
        self.within("a nack", self.inner.nack(tokens, delay)).await
    }
    async fn release(&self, tokens: &[LeaseToken]) -> Result<LeaseReport, QueueError> {
        self.within("a release", self.inner.release(tokens)).await
    }
    async fn extend_lease(
        &self,
        tokens: &[LeaseToken],
        lease: Duration,
    ) -> Result<LeaseReport, QueueError> {
        self.within("a lease renewal", self.inner.extend_lease(tokens, lease))
            .await
    }
    async fn dead_letter(
        &self,
        tokens: &[LeaseToken],
        reason: &str,
    ) -> Result<LeaseReport, QueueError> {
        self.within("a dead-letter", self.inner.dead_letter(tokens, reason))
            .await
    }
    async fn backlog(&self) -> Result<Backlog, QueueError> {
        self.within("a backlog read", self.inner.backlog()).await
    }
    async fn list_dead(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError> {
        self.within("a dead-letter listing", self.inner.list_dead(limit))
            .await
    }
    async fn requeue_dead(&self) -> Result<u64, QueueError> {
        self.within("a requeue", self.inner.requeue_dead()).await
    }
    async fn purge_dead(&self) -> Result<u64, QueueError> {
        self.within("a purge", self.inner.purge_dead()).await
    }
    async fn requeue_dead_where(
        &self,
        select: &DeadSelect<'_>,
        watch: Option<&dyn RequeueWatch>,
    ) -> Result<Requeued, QueueError> {
        // A whole dead place, moved in batches: the ledger's bound for it.
        let limit = self.limit * RECEIPTS_CALLS + LEDGER_EXTRA;
        let call = self.inner.requeue_dead_where(select, watch);
        within(&self.server, limit, "a dead-place requeue", call).await
    }
}

#[derive(Debug)]
struct DeadlineLedger {
    inner: Arc<dyn Ledger>,
    server: Arc<str>,
    limit: Duration,
}

impl DeadlineLedger {
    async fn within<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<T, QueueError>>,
    ) -> Result<T, QueueError> {
        within(&self.server, self.limit + LEDGER_EXTRA, what, call).await
    }
}

/// Every call under a deadline; a call added to [`Ledger`] later is
/// forwarded by [`LedgerDecorator`] (without one) until it gets its own.
#[async_trait]
impl LedgerDecorator for DeadlineLedger {
    fn inner(&self) -> &dyn Ledger {
        &*self.inner
    }
    async fn begin(&self, manifest: &Manifest) -> Result<Begun, QueueError> {
        self.within("a job ledger write", self.inner.begin(manifest))
            .await
    }
    async fn submitted(&self, job: &str, seqs: &SeqSet) -> Result<(), QueueError> {
        self.within("a job ledger write", self.inner.submitted(job, seqs))
            .await
    }
    async fn record(&self, receipts: &[Receipt]) -> Result<(), QueueError> {
        self.within("a job ledger write", self.inner.record(receipts))
            .await
    }
    async fn record_then_ack(
        &self,
        queue: &dyn WorkQueue,
        tokens: &[LeaseToken],
        receipts: &[ReceiptRef<'_>],
    ) -> Result<LeaseReport, QueueError> {
        let call = self.inner.record_then_ack(queue, tokens, receipts);
        self.within("a job ledger write and ack", call).await
    }
    async fn record_then_dead_letter(
        &self,
        queue: &dyn WorkQueue,
        tokens: &[LeaseToken],
        reason: &str,
        receipts: &[Option<Receipt>],
    ) -> Result<LeaseReport, QueueError> {
        let call = self
            .inner
            .record_then_dead_letter(queue, tokens, reason, receipts);
        self.within("a dead-letter and its receipt", call).await
    }
    async fn requeue_dead(&self, queue: &dyn WorkQueue) -> Result<u64, QueueError> {
        // A whole dead place, moved in batches: the receipts listing's bound.
        let limit = self.limit * RECEIPTS_CALLS + LEDGER_EXTRA;
        let call = self.inner.requeue_dead(queue);
        within(&self.server, limit, "a dead-place requeue", call).await
    }
    async fn requeue_dead_where(
        &self,
        queue: &dyn WorkQueue,
        select: &DeadSelect<'_>,
    ) -> Result<Requeued, QueueError> {
        let limit = self.limit * RECEIPTS_CALLS + LEDGER_EXTRA;
        let call = self.inner.requeue_dead_where(queue, select);
        within(&self.server, limit, "a dead-place requeue", call).await
    }
    async fn jobs(&self) -> Result<Vec<JobStatus>, QueueError> {
        self.within("a job ledger read", self.inner.jobs()).await
    }
    async fn cancel(&self, job: &str) -> Result<bool, QueueError> {
        self.within("a job ledger write", self.inner.cancel(job))
            .await
    }
    async fn forget(&self, job: &str) -> Result<bool, QueueError> {
        self.within("a job ledger write", self.inner.forget(job))
            .await
    }
    async fn forgotten(&self) -> Result<Vec<String>, QueueError> {
        self.within("a job ledger read", self.inner.forgotten())
            .await
    }
    async fn requeued(&self, dead: &[Receipt]) -> Result<(), QueueError> {
        self.within("a job ledger write", self.inner.requeued(dead))
            .await
    }
    async fn seqs(&self, job: &str) -> Result<Option<JobSeqs>, QueueError> {
        self.within("a job ledger read", self.inner.seqs(job)).await
    }
    async fn receipts(&self, job: &str) -> Result<Vec<Receipt>, QueueError> {
        let limit = self.limit * RECEIPTS_CALLS + LEDGER_EXTRA;
        let call = self.inner.receipts(job);
        within(&self.server, limit, "a receipts listing", call).await
    }
}

/// The first pause between retries; each doubles it, up to [`MOST_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(250);
const MOST_PAUSE: Duration = Duration::from_secs(5);

/// `call` again, with backoff, while it fails for a reason that may pass
/// ([`QueueError::is_retryable`]), for `bound` at most; then its error.
pub(crate) async fn retrying<T, F>(
    what: &str,
    bound: Duration,
    mut call: impl FnMut() -> F,
) -> Result<T, QueueError>
where
    F: std::future::Future<Output = Result<T, QueueError>>,
{
    let started = tokio::time::Instant::now();
    let mut pause = FIRST_PAUSE;
    let mut tries = 0;
    loop {
        tries += 1;
        match call().await {
            Ok(value) => return Ok(value),
            Err(error) if error.is_retryable() && started.elapsed() + pause <= bound => {
                tracing::warn!(
                    "{what} failed, trying again in {}: {}",
                    humantime::format_duration(pause),
                    ErrorChain(&error)
                );
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MOST_PAUSE);
            }
            Err(error) if error.is_retryable() && tries > 1 => {
                return Err(QueueError::new(
                    error.kind(),
                    format!(
                        "{what} kept failing for {}: {}",
                        humantime::format_duration(Duration::from_secs(
                            started.elapsed().as_secs()
                        )),
                        ErrorChain(&error)
                    ),
                ));
            }
            Err(error) => return Err(error),
        }
    }
}
