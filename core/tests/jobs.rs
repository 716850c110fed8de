//! Jobs end exactly (issue 12): a worker exits 0 when every job on the queue
//! is complete, read from the ledger, even where the queue cannot count; an
//! item held by a dead worker keeps everyone waiting; a stopped submit is
//! resumed without a duplicate or a gap. Paused clock, memory queue behind
//! a wrapper that hides its counts (as the Pub/Sub emulator does).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use forloop_core::handler::from_fn;
use forloop_core::job::{self, Backend, Ledger, SeqSet, Settled};
use forloop_core::memory::MemoryLedger;
use forloop_core::worker::Shutdown;
use forloop_core::{
    Backlog, Capabilities, CommandTemplate, Count, Item, MemoryQueue, MessageId, QueueConfig,
    QueueDecorator, QueueError, QueueErrorKind, Task, TaskOutcome, WorkQueue, Worker, WorkerConfig,
    WorkerExit,
};
use tokio::time::Instant;

/// A memory queue that cannot count (every backlog count unknown) and
/// whose `fail_publish`-th publish fails.
#[derive(Debug)]
struct Blind {
    inner: MemoryQueue,
    publishes: AtomicU32,
    fail_publish: u32,
    published: Mutex<Vec<u64>>,
}

impl Blind {
    /// The memory queue's ledger, which this queue keeps its jobs in.
    fn ledger(&self) -> Arc<MemoryLedger> {
        self.inner.ledger()
    }

    /// This queue with that ledger, as a worker takes it.
    fn backend(self: &Arc<Self>) -> Backend {
        Backend::new(Arc::clone(self) as Arc<dyn WorkQueue>).with_ledger(self.ledger())
    }

    fn new(lease: Duration) -> Arc<Self> {
        Self::failing_publish(lease, 0)
    }

    fn failing_publish(lease: Duration, fail_publish: u32) -> Arc<Self> {
        Arc::new(Self {
            inner: MemoryQueue::new(QueueConfig::new("jobs").with_lease(lease))
                .with_done_receipts(),
            publishes: AtomicU32::new(0),
            fail_publish,
            published: Mutex::default(),
        })
    }
}

#[async_trait]
impl QueueDecorator for Blind {
    fn inner(&self) -> &dyn WorkQueue {
        &self.inner
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::new(1 << 20, 10)
            .with_lease_range(Duration::from_millis(1), Duration::from_secs(600))
            .with_delayed_nack(true)
            .with_backlog_staleness(Duration::ZERO)
    }
    async fn publish(&self, batch: Vec<Item>) -> Result<Vec<MessageId>, QueueError> {
        if self.publishes.fetch_add(1, Ordering::SeqCst) + 1 == self.fail_publish {
            return Err(QueueError::new(
                QueueErrorKind::Unavailable,
                "publish refused",
            ));
        }
        let seqs = batch.iter().filter_map(|m| m.job.clone());
        self.published.lock().unwrap().extend(seqs.map(|i| i.seq));
        self.inner.publish(batch).await
    }
    async fn backlog(&self) -> Result<Backlog, QueueError> {
        Ok(Backlog {
            ready: Count::Unknown,
            in_flight: Count::Unknown,
            dead: Count::Unknown,
            age: Duration::ZERO,
        })
    }
}

/// What a Rust function returns rides in its item's receipt; a value over
/// what a receipt keeps (1 KiB of JSON) never grows it, whatever the
/// handler (the runner fails such an item, or stores the value, before the
/// worker sees it).
#[tokio::test]
async fn a_functions_value_rides_in_its_receipt_and_one_over_a_kib_stays_out() {
    use forloop_core::handler::{Value, for_str};
    let queue = Blind::new(Duration::from_secs(30));
    submit(&queue, "values", 2, false).await.unwrap();
    let handler = for_str(|item: &str| {
        let pad = if item == "item-1" { 2000 } else { 3 };
        Ok::<_, String>(Value(
            serde_json::json!({"item": item, "pad": "x".repeat(pad)}),
        ))
    });
    let exit = Worker::new(queue.backend(), Arc::new(handler))
        .with_config(config("w"))
        .run(Shutdown::new())
        .await
        .unwrap();
    assert_eq!(exit, WorkerExit::Drained);
    let receipts = queue.ledger().receipts("values").await.unwrap();
    let small = receipts.iter().find(|r| r.seq == 0).unwrap();
    assert_eq!(
        small.value.as_ref().map(|v| v.as_str()),
        Some(r#"{"item":"item-0","pad":"xxx"}"#)
    );
    let large = receipts.iter().find(|r| r.seq == 1).unwrap();
    assert_eq!((large.state, &large.value), (Settled::Done, &None));
}

fn items(n: usize) -> Vec<Item> {
    (0..n).map(|i| Item::new(format!("item-{i}"))).collect()
}

async fn submit(
    queue: &Blind,
    job: &str,
    n: usize,
    resume: bool,
) -> Result<job::SubmitReport, job::SubmitError> {
    let ledger = queue.ledger();
    job::Submit::new(queue, items(n))
        .job(&*ledger, job)
        .resume(resume)
        .send()
        .await
}

fn config(name: &str) -> WorkerConfig {
    WorkerConfig {
        concurrency: 2,
        lease: Duration::from_secs(60),
        poll: Duration::from_millis(500),
        idle_window: Duration::from_secs(1),
        name: Arc::from(name),
        ..WorkerConfig::default()
    }
}

#[tokio::test(start_paused = true)]
async fn a_job_ends_when_every_item_is_settled_where_the_queue_cannot_count() {
    let queue = Blind::new(Duration::from_secs(60));
    submit(&queue, "j", 20, false).await.unwrap();
    let handler = Arc::new(from_fn(|task: Task| async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if &task.item.payload[..] == b"item-7" {
            TaskOutcome::fatal("bad item")
        } else {
            TaskOutcome::success()
        }
    }));
    let started = Instant::now();
    let exit = Worker::new(queue.backend(), handler)
        .with_config(config("w1"))
        .run(Shutdown::new())
        .await
        .unwrap();
    assert_eq!(exit, WorkerExit::Drained);
    // 20 items, 2 at a time, 1 s each: 10 s of work; the end follows the
    // last settlement within one poll, with no idle window.
    let took = started.elapsed();
    assert!(took < Duration::from_secs(11), "took {took:?}");
    let ledger = queue.ledger();
    let jobs = ledger.jobs().await.unwrap();
    assert_eq!(
        (jobs[0].done, jobs[0].dead, jobs[0].is_complete()),
        (19, 1, true)
    );
    let receipts = ledger.receipts("j").await.unwrap();
    assert_eq!(receipts.len(), 20);
    let dead = receipts.iter().find(|r| r.state == Settled::Dead).unwrap();
    assert_eq!(
        (dead.seq, &*dead.item_text(), &*dead.worker),
        (7, "item-7", "w1")
    );
    assert!(
        dead.reason.as_deref().unwrap().contains("bad item"),
        "{dead:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_idle_worker_does_not_exit_while_a_dead_worker_holds_an_item() {
    let queue = Blind::new(Duration::from_secs(60));
    submit(&queue, "j", 3, false).await.unwrap();
    // A worker takes one item and dies (SIGKILL): it never settles, and
    // its 60 s lease must run out before anyone else can run the item.
    let held = queue.pull(1, Duration::from_secs(1)).await.unwrap();
    assert_eq!(held.len(), 1);
    let handler = Arc::new(from_fn(|_task: Task| async { TaskOutcome::success() }));
    let started = Instant::now();
    let exit = Worker::new(queue.backend(), handler)
        .with_config(config("survivor"))
        .run(Shutdown::new())
        .await
        .unwrap();
    assert_eq!(exit, WorkerExit::Drained);
    // Without the ledger the survivor would have exited after its 1 s idle
    // window, and the held item would have come back to nobody.
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(59),
        "exited after {took:?} with an item held"
    );
    assert!(
        took < Duration::from_secs(63),
        "the end lagged the last item: {took:?}"
    );
    let jobs = queue.ledger().jobs().await.unwrap();
    assert_eq!((jobs[0].done, jobs[0].dead), (3, 0));
}

#[tokio::test(start_paused = true)]
async fn a_stopped_submit_resumes_without_duplicates_or_gaps() {
    // max_batch 10: the third publish (items 20..30) fails.
    let queue = Blind::failing_publish(Duration::from_secs(60), 3);
    let error = submit(&queue, "j", 45, false).await.unwrap_err();
    assert_eq!(error.sent, SeqSet::first(20));
    assert_eq!(error.unknown, (20..30).collect());
    let text = error.to_string();
    assert!(
        text.contains("items 1-20") && text.contains("--resume"),
        "{text}"
    );

    // The same command again without --resume is refused, naming the way out.
    let again = submit(&queue, "j", 45, false).await.unwrap_err();
    assert!(again.to_string().contains("--resume"), "{again}");
    // Another input under the same name is refused too.
    let other = submit(&queue, "j", 44, true).await.unwrap_err();
    assert!(other.to_string().contains("--job"), "{other}");

    let report = submit(&queue, "j", 45, true).await.unwrap();
    assert_eq!((report.sent, report.total), (25, 45));
    let mut published = queue.published.lock().unwrap().clone();
    published.sort_unstable();
    assert_eq!(
        published,
        (0..45).collect::<Vec<_>>(),
        "each item exactly once"
    );

    // Run a few, stop, resume: nothing done or queued is sent again.
    let report = submit(&queue, "j", 45, true).await.unwrap();
    assert_eq!(report.sent, 0);
}

#[tokio::test]
async fn fatal_exit_codes_dead_letter_at_once_with_exit_code_and_stderr() {
    let queue = Blind::new(Duration::from_secs(30));
    submit(&queue, "codes", 2, false).await.unwrap();
    let command = CommandTemplate::new([
        "sh",
        "-c",
        r#"if [ "$1" = item-1 ]; then echo "usage: bad id $1" >&2; exit 64; fi"#,
        "sh",
        "{}",
    ])
    .unwrap()
    .with_fatal_exit_codes([2, 64]);
    let exit = Worker::new(queue.backend(), Arc::new(command))
        .with_config(WorkerConfig {
            max_attempts: 5,
            ..config("w")
        })
        .run(Shutdown::new())
        .await
        .unwrap();
    assert_eq!(exit, WorkerExit::Drained);
    let receipts = queue.ledger().receipts("codes").await.unwrap();
    let dead = receipts.iter().find(|r| r.seq == 1).unwrap();
    assert_eq!(
        (dead.state, dead.attempt, dead.exit_code),
        (Settled::Dead, 1, Some(64))
    );
    assert_eq!(dead.stderr_tail.as_deref(), Some("usage: bad id item-1\n"));
    let done = receipts.iter().find(|r| r.seq == 0).unwrap();
    assert_eq!((done.state, done.exit_code), (Settled::Done, Some(0)));
}
