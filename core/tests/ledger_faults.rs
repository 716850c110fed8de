//! Only true facts in the ledger (issue 21, scenarios 4 and 5), on a paused
//! clock with the memory queue: a ledger write that fails for good stops
//! the worker (it gives back what it holds and says why), and an item is
//! counted dead only once it is in the dead place.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use forloop_core::handler::from_fn;
use forloop_core::job::{
    Backend, JobItem, JobStatus, Ledger, LedgerDecorator, Manifest, Receipt, ReceiptRef, SeqSet,
};
use forloop_core::{
    Item, LeaseReport, LeaseToken, MemoryQueue, QueueConfig, QueueDecorator, QueueError,
    QueueErrorKind, Task, WorkQueue, Worker, WorkerConfig,
};
use tokio::time::timeout;

/// The memory queue's ledger, whose receipt writes fail for good while
/// `refuse` is on, as SQS answers a deleted `NAME-results`.
#[derive(Debug)]
struct Refusing {
    inner: Arc<dyn Ledger>,
    refuse: AtomicBool,
}

fn results_gone() -> QueueError {
    QueueError::new(
        QueueErrorKind::NotFound,
        "queue `jobs-results` does not exist (a ledger sibling of `jobs`): create it with `runner --queue sqs --name jobs queue create`",
    )
}

#[async_trait]
impl LedgerDecorator for Refusing {
    fn inner(&self) -> &dyn Ledger {
        &*self.inner
    }
    async fn record(&self, receipts: &[Receipt]) -> Result<(), QueueError> {
        if self.refuse.load(Ordering::SeqCst) {
            return Err(results_gone());
        }
        self.inner.record(receipts).await
    }
    async fn record_then_ack(
        &self,
        queue: &dyn WorkQueue,
        tokens: &[LeaseToken],
        receipts: &[ReceiptRef<'_>],
    ) -> Result<LeaseReport, QueueError> {
        if self.refuse.load(Ordering::SeqCst) {
            return Err(results_gone());
        }
        self.inner.record_then_ack(queue, tokens, receipts).await
    }
}

/// The memory queue, whose dead-letter call misbehaves as switched.
#[derive(Debug)]
struct Burying {
    inner: MemoryQueue,
    /// The next dead-letter is refused for good (no permission).
    refuse: AtomicBool,
    /// The next dead-letter comes after the lease ended: the item is
    /// handed back first, so the call finds the lease lost.
    late: AtomicBool,
}

#[async_trait]
impl QueueDecorator for Burying {
    fn inner(&self) -> &dyn WorkQueue {
        &self.inner
    }
    async fn dead_letter(
        &self,
        tokens: &[LeaseToken],
        reason: &str,
    ) -> Result<LeaseReport, QueueError> {
        if self.refuse.swap(false, Ordering::SeqCst) {
            return Err(QueueError::new(
                QueueErrorKind::PermissionDenied,
                "not allowed to send to `jobs-dead` (sqs:SendMessage)",
            ));
        }
        if self.late.swap(false, Ordering::SeqCst) {
            self.inner.release(tokens).await?;
        }
        self.inner.dead_letter(tokens, reason).await
    }
}

fn config() -> WorkerConfig {
    WorkerConfig {
        concurrency: 1,
        lease: Duration::from_secs(3),
        grace: Duration::from_secs(5),
        poll: Duration::from_millis(100),
        idle_window: Duration::from_millis(300),
        max_attempts: 1,
        ..WorkerConfig::default()
    }
}

/// A queue of job `j`'s `items`, begun and submitted in its ledger.
async fn job_queue(items: &[&str]) -> MemoryQueue {
    let queue = MemoryQueue::new(
        QueueConfig::new("jobs")
            .with_lease(Duration::from_secs(3))
            .with_max_attempts(5),
    );
    let ledger = queue.ledger();
    let total = items.len() as u64;
    ledger.begin(&Manifest::new("j", total, "d")).await.unwrap();
    let batch = (0..)
        .zip(items)
        .map(|(seq, item)| Item::new(item.to_string()).with_job(JobItem::new("j", seq)))
        .collect();
    queue.publish(batch).await.unwrap();
    ledger.submitted("j", &SeqSet::first(total)).await.unwrap();
    queue
}

/// (ready, in flight, dead)
async fn counts(queue: &MemoryQueue) -> (u64, u64, u64) {
    let b = queue.backlog().await.unwrap();
    (
        b.ready.value().unwrap(),
        b.in_flight.value().unwrap(),
        b.dead.value().unwrap(),
    )
}

async fn job(ledger: &dyn Ledger) -> JobStatus {
    ledger.jobs().await.unwrap().remove(0)
}

/// Scenario 4: every receipt write fails for good (`NAME-results` deleted).
/// The worker stops on the first, naming the sibling, and gives its items
/// back: none is acked without its receipt, none is dead-lettered.
#[tokio::test(start_paused = true)]
async fn a_receipt_write_that_fails_for_good_stops_the_worker_naming_the_sibling() {
    let queue = job_queue(&["a", "b", "c"]).await;
    let ledger = Arc::new(Refusing {
        inner: queue.ledger(),
        refuse: AtomicBool::new(true),
    });
    let backend = Backend::new(Arc::new(queue.clone())).with_ledger(ledger.clone());
    let worker =
        Worker::new(backend, Arc::new(from_fn(|_task: Task| async {}))).with_config(config());
    let ended = timeout(
        Duration::from_secs(120),
        worker.run(forloop_core::Shutdown::new()),
    )
    .await
    .expect("the worker ends by itself");
    let error = ended.expect_err("a worker whose receipts cannot be written exits with an error");
    assert_eq!(error.kind(), QueueErrorKind::NotFound, "{error}");
    assert!(error.to_string().contains("jobs-results"), "{error}");
    let (ready, in_flight, dead) = counts(&queue).await;
    assert_eq!((ready + in_flight, dead), (3, 0), "every item still to do");
    assert_eq!(in_flight, 0, "what the worker held is given back at once");
    let status = job(&*ledger).await;
    assert_eq!((status.done, status.dead), (0, 0), "{status:?}");
}

/// Scenario 5: a dead-letter refused for good. The item is not counted dead
/// (it is not in the dead place), it is given back, and the worker stops.
#[tokio::test(start_paused = true)]
async fn a_dead_letter_that_fails_counts_nothing_dead_and_stops_the_worker() {
    let inner = job_queue(&["bad"]).await;
    let ledger = inner.ledger();
    let queue = Arc::new(Burying {
        inner: inner.clone(),
        refuse: AtomicBool::new(true),
        late: AtomicBool::new(false),
    });
    let backend = Backend::new(queue).with_ledger(ledger.clone());
    let handler = from_fn(|_task: Task| async { Err::<(), _>("exit code 3") });
    let worker = Worker::new(backend, Arc::new(handler)).with_config(config());
    let ended = timeout(
        Duration::from_secs(120),
        worker.run(forloop_core::Shutdown::new()),
    )
    .await
    .expect("the worker ends by itself");
    let error = ended.expect_err("a dead-letter refused for good ends the worker");
    assert_eq!(error.kind(), QueueErrorKind::PermissionDenied, "{error}");
    assert!(error.to_string().contains("jobs-dead"), "{error}");
    let status = job(&*ledger).await;
    assert_eq!(status.dead, 0, "counted dead while live: {status:?}");
    assert_eq!(counts(&inner).await, (1, 0, 0), "given back, not dead");
}

/// Scenario 5: the dead-letter comes after the lease ended (the queue
/// delivers the item again). No dead receipt is written for it: on its
/// next attempt the ledger does not count it dead; once it really is in
/// the dead place, it is, with the receipt of the attempt that buried it.
#[tokio::test(start_paused = true)]
async fn a_dead_letter_of_a_lost_lease_counts_nothing_until_the_item_is_buried() {
    let inner = job_queue(&["bad"]).await;
    let ledger = inner.ledger();
    let queue = Arc::new(Burying {
        inner: inner.clone(),
        refuse: AtomicBool::new(false),
        late: AtomicBool::new(true),
    });
    let backend = Backend::new(queue).with_ledger(ledger.clone());
    let seen: Arc<Mutex<Vec<(u32, u64)>>> = Arc::default();
    let (seen_by, read) = (Arc::clone(&seen), ledger.clone());
    let handler = from_fn(move |task: Task| {
        let (seen, ledger) = (Arc::clone(&seen_by), read.clone());
        async move {
            let dead = ledger.jobs().await.unwrap()[0].dead;
            seen.lock().unwrap().push((task.attempt, dead));
            Err::<(), _>(format!("exit code {}", task.attempt + 2))
        }
    });
    let worker = Worker::new(backend, Arc::new(handler)).with_config(config());
    timeout(
        Duration::from_secs(120),
        worker.run(forloop_core::Shutdown::new()),
    )
    .await
    .expect("the worker ends by itself")
    .expect("the worker drains the queue");
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.len() >= 2,
        "delivered again after the late dead-letter: {seen:?}"
    );
    assert!(
        seen.iter().all(|&(_, dead)| dead == 0),
        "counted dead while it ran again: {seen:?}"
    );
    let status = job(&*ledger).await;
    assert_eq!(status.dead, 1, "{status:?}");
    let receipts = ledger.receipts("j").await.unwrap();
    assert_eq!(receipts.len(), 1, "{receipts:?}");
    assert_eq!(
        receipts[0]
            .reason
            .as_deref()
            .map(|r| r.contains("exit code")),
        Some(true),
        "the burying attempt's receipt: {receipts:?}"
    );
}
