//! The worker under queue faults (issue 11, items 2, 7 and 11): a queue call
//! that never answers, a fatal error mid-run, a settlement that fails at
//! the end, a task that outlives its lease. Every test runs on a paused
//! clock against a `MemoryQueue` behind a switchboard of faults, so "never
//! answers" is exact and the limits asserted are the worker's own.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use forloop_core::handler::from_fn;
use forloop_core::job::Backend;
use forloop_core::worker::{AttemptRecord, Settlement, Shutdown, WorkerEvents};
use forloop_core::{
    Backlog, Delivery, Item, LeaseReport, LeaseToken, MemoryQueue, QueueConfig, QueueDecorator,
    QueueError, QueueErrorKind, Task, WorkQueue, Worker, WorkerConfig, WorkerExit,
};
use tokio::time::{Instant, sleep, timeout};

/// Which calls misbehave, switched on and off while a test runs.
#[derive(Debug, Default)]
struct Faults {
    ack_hangs: AtomicBool,
    extend_hangs: AtomicBool,
    backlog_hangs: AtomicBool,
    /// Retryable failures the next acks answer with.
    ack_failures: AtomicU32,
    /// Ack calls made.
    ack_calls: AtomicU32,
    /// The next pull fails for good (the subscription was deleted).
    pull_fatal: AtomicBool,
}

#[derive(Debug)]
struct Faulty {
    inner: MemoryQueue,
    faults: Arc<Faults>,
}

async fn hang<T>() -> T {
    std::future::pending().await
}

#[async_trait]
impl QueueDecorator for Faulty {
    fn inner(&self) -> &dyn WorkQueue {
        &self.inner
    }
    async fn pull(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, QueueError> {
        if self.faults.pull_fatal.swap(false, Ordering::SeqCst) {
            return Err(QueueError::new(
                QueueErrorKind::NotFound,
                "the subscription was deleted",
            ));
        }
        self.inner.pull(max, wait).await
    }
    async fn ack(&self, tokens: &[LeaseToken]) -> Result<LeaseReport, QueueError> {
        self.faults.ack_calls.fetch_add(1, Ordering::SeqCst);
        if self.faults.ack_hangs.load(Ordering::SeqCst) {
            return hang().await;
        }
        let failures = &self.faults.ack_failures;
        if failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(QueueError::new(QueueErrorKind::Unavailable, "ack refused"));
        }
        self.inner.ack(tokens).await
    }
    async fn extend_lease(
        &self,
        tokens: &[LeaseToken],
        lease: Duration,
    ) -> Result<LeaseReport, QueueError> {
        if self.faults.extend_hangs.load(Ordering::SeqCst) {
            return hang().await;
        }
        self.inner.extend_lease(tokens, lease).await
    }
    async fn backlog(&self) -> Result<Backlog, QueueError> {
        if self.faults.backlog_hangs.load(Ordering::SeqCst) {
            return hang().await;
        }
        self.inner.backlog().await
    }
}

/// A faulty memory queue with a 3 s lease, holding `items`.
async fn faulty(items: &[&str]) -> (Arc<Faulty>, Arc<Faults>) {
    let faults = Arc::new(Faults::default());
    let queue = Arc::new(Faulty {
        inner: MemoryQueue::new(
            QueueConfig::new("faults")
                .with_lease(Duration::from_secs(3))
                .with_max_attempts(5),
        ),
        faults: Arc::clone(&faults),
    });
    let batch = items.iter().map(|i| Item::new(i.to_string())).collect();
    queue.publish(batch).await.unwrap();
    (queue, faults)
}

fn config(concurrency: usize) -> WorkerConfig {
    WorkerConfig {
        concurrency,
        lease: Duration::from_secs(3),
        grace: Duration::from_secs(5),
        poll: Duration::from_millis(100),
        idle_window: Duration::from_millis(300),
        ..WorkerConfig::default()
    }
}

/// (ready, in flight, dead)
async fn counts(queue: &Faulty) -> (u64, u64, u64) {
    let b = queue.inner.backlog().await.unwrap();
    (
        b.ready.value().unwrap(),
        b.in_flight.value().unwrap(),
        b.dead.value().unwrap(),
    )
}

#[derive(Default)]
struct Seen(Mutex<Vec<(String, Settlement)>>);

impl WorkerEvents for Seen {
    fn attempt_finished(&self, record: &AttemptRecord<'_>) {
        self.0.lock().unwrap().push((
            String::from_utf8_lossy(record.payload).into_owned(),
            record.settlement,
        ));
    }
}

impl Seen {
    fn all(&self) -> Vec<(String, Settlement)> {
        self.0.lock().unwrap().clone()
    }
}

fn started_items() -> (
    Arc<Mutex<BTreeSet<String>>>,
    impl Fn(Task) -> std::future::Ready<()>,
) {
    let started = Arc::new(Mutex::new(BTreeSet::new()));
    let seen = Arc::clone(&started);
    let handler = move |task: Task| {
        seen.lock()
            .unwrap()
            .insert(String::from_utf8_lossy(&task.item.payload).into_owned());
        std::future::ready(())
    };
    (started, handler)
}

#[tokio::test(start_paused = true)]
async fn an_ack_that_never_answers_does_not_stop_the_other_items() {
    let (queue, faults) = faulty(&["a", "b", "c"]).await;
    faults.ack_hangs.store(true, Ordering::SeqCst);
    let (started, handler) = started_items();
    let worker =
        Worker::new(Backend::new(queue.clone()), Arc::new(from_fn(handler))).with_config(config(1));
    let shutdown = Shutdown::new();
    let run = tokio::spawn(worker.run(shutdown.clone()));
    sleep(Duration::from_secs(20)).await;
    assert_eq!(
        started.lock().unwrap().len(),
        3,
        "every item starts while an ack hangs"
    );
    shutdown.stop();
    let exit = timeout(Duration::from_secs(11), run).await;
    assert!(
        exit.is_ok(),
        "a stopped worker exits within its grace and settle budget"
    );
}

#[tokio::test(start_paused = true)]
async fn sigterm_during_a_renewal_that_never_answers_exits_within_the_grace() {
    let (queue, faults) = faulty(&["long"]).await;
    faults.extend_hangs.store(true, Ordering::SeqCst);
    let handler = from_fn(|_task: Task| sleep(Duration::from_secs(600)));
    let worker = Worker::new(Backend::new(queue.clone()), Arc::new(handler)).with_config(config(1));
    let shutdown = Shutdown::new();
    let run = tokio::spawn(worker.run(shutdown.clone()));
    // The renewal is due at 2 s and hangs from then on.
    sleep(Duration::from_secs(4)).await;
    let stopped_at = Instant::now();
    shutdown.stop();
    let exit = timeout(Duration::from_secs(11), run)
        .await
        .expect("the worker must exit within grace (5 s) plus its settle budget")
        .unwrap()
        .unwrap();
    // The lease lapsed at 3 s with its renewal unanswered, so the task was
    // stopped then (one copy at a time); the stop finds nothing running.
    assert!(matches!(exit, WorkerExit::Stopped { .. }), "{exit:?}");
    assert!(stopped_at.elapsed() <= Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn a_backlog_read_that_never_answers_does_not_ignore_the_stop() {
    let (queue, faults) = faulty(&[]).await;
    faults.backlog_hangs.store(true, Ordering::SeqCst);
    let worker = Worker::new(
        Backend::new(queue.clone()),
        Arc::new(from_fn(|_t: Task| async {})),
    )
    .with_config(config(1));
    let shutdown = Shutdown::new();
    let run = tokio::spawn(worker.run(shutdown.clone()));
    sleep(Duration::from_secs(2)).await;
    shutdown.stop();
    let exit = timeout(Duration::from_secs(1), run)
        .await
        .expect("an idle worker acts on the stop at once")
        .unwrap()
        .unwrap();
    assert_eq!(exit, WorkerExit::Stopped { interrupted: 0 });
}

#[tokio::test(start_paused = true)]
async fn a_fatal_error_hands_back_what_the_worker_holds() {
    let (queue, faults) = faulty(&["held"]).await;
    let handler = from_fn(|_task: Task| sleep(Duration::from_secs(600)));
    // Two slots: one holds `held`, the other keeps pulling.
    let worker = Worker::new(Backend::new(queue.clone()), Arc::new(handler)).with_config(config(2));
    let run = tokio::spawn(worker.run(Shutdown::new()));
    sleep(Duration::from_secs(1)).await;
    assert_eq!(counts(&queue).await, (0, 1, 0));
    faults.pull_fatal.store(true, Ordering::SeqCst);
    let result = timeout(Duration::from_secs(10), run)
        .await
        .expect("a fatal error ends the worker")
        .unwrap();
    let error = result.expect_err("the fatal error is returned");
    assert_eq!(error.kind(), QueueErrorKind::NotFound);
    assert_eq!(
        counts(&queue).await,
        (1, 0, 0),
        "the held item is handed back at once, not left leased"
    );
}

#[tokio::test(start_paused = true)]
async fn the_last_acks_are_retried_within_the_grace() {
    let (queue, faults) = faulty(&["a"]).await;
    let (_, handler) = started_items();
    let worker =
        Worker::new(Backend::new(queue.clone()), Arc::new(from_fn(handler))).with_config(config(1));
    let shutdown = Shutdown::new();
    // Every ack is refused twice before it lands; the stop comes at once.
    faults.ack_failures.store(2, Ordering::SeqCst);
    let run = tokio::spawn(worker.run(shutdown.clone()));
    sleep(Duration::from_millis(1)).await;
    shutdown.stop();
    timeout(Duration::from_secs(11), run)
        .await
        .expect("exits within the grace")
        .unwrap()
        .unwrap();
    assert_eq!(
        counts(&queue).await,
        (0, 0, 0),
        "the ack landed after two refusals: nothing is left to run again"
    );
}

#[tokio::test(start_paused = true)]
async fn done_is_reported_once_the_ack_landed() {
    let (queue, faults) = faulty(&["a"]).await;
    faults.ack_hangs.store(true, Ordering::SeqCst);
    let (_, handler) = started_items();
    let seen = Arc::new(Seen::default());
    let worker = Worker::new(Backend::new(queue.clone()), Arc::new(from_fn(handler)))
        .with_config(config(1))
        .with_events(seen.clone());
    let shutdown = Shutdown::new();
    let run = tokio::spawn(worker.run(shutdown.clone()));
    sleep(Duration::from_secs(1)).await;
    assert!(
        !seen.all().iter().any(|(_, s)| *s == Settlement::Acked),
        "an ack still in flight is not done: {:?}",
        seen.all()
    );
    faults.ack_hangs.store(false, Ordering::SeqCst);
    sleep(Duration::from_secs(15)).await;
    assert_eq!(seen.all(), vec![("a".to_string(), Settlement::Acked)]);
    shutdown.stop();
    let _ = timeout(Duration::from_secs(11), run).await;
}

#[tokio::test(start_paused = true)]
async fn a_task_past_its_max_lease_age_is_stopped_not_left_beside_its_copy() {
    let (queue, _faults) = faulty(&["slow"]).await;
    let runs = Arc::new(AtomicU32::new(0));
    let running = Arc::new(AtomicU32::new(0));
    let most = Arc::new(AtomicU32::new(0));
    let (r, n, m) = (runs.clone(), running.clone(), most.clone());
    let handler = from_fn(move |_task: Task| {
        let (r, n, m) = (r.clone(), n.clone(), m.clone());
        async move {
            r.fetch_add(1, Ordering::SeqCst);
            let now = n.fetch_add(1, Ordering::SeqCst) + 1;
            m.fetch_max(now, Ordering::SeqCst);
            // Decrements even when the worker drops this future.
            struct Done(Arc<AtomicU32>);
            impl Drop for Done {
                fn drop(&mut self) {
                    self.0.fetch_sub(1, Ordering::SeqCst);
                }
            }
            let _done = Done(n);
            sleep(Duration::from_secs(600)).await;
        }
    });
    let config = WorkerConfig {
        max_lease_age: Duration::from_secs(10),
        backoff: forloop_core::worker::Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(100),
            ..Default::default()
        },
        ..config(2)
    };
    let worker = Worker::new(Backend::new(queue.clone()), Arc::new(handler)).with_config(config);
    let shutdown = Shutdown::new();
    let run = tokio::spawn(worker.run(shutdown.clone()));
    sleep(Duration::from_secs(40)).await;
    assert!(runs.load(Ordering::SeqCst) >= 2, "the item came back");
    assert_eq!(
        most.load(Ordering::SeqCst),
        1,
        "never two copies of one item at once"
    );
    shutdown.abort();
    let _ = timeout(Duration::from_secs(11), run).await;
}

/// The memory queue lives in the worker's process, so a SIGKILL takes the
/// queue with it and nothing is left to lose or run again: the end-to-end
/// "SIGKILL during the ack flush" has no memory form. Its in-process
/// equivalent: a worker dropped (its task aborted, no goodbye to the queue)
/// while its acks hang, and a second worker on the same queue.
#[tokio::test(start_paused = true)]
async fn a_worker_dropped_while_its_acks_hang_loses_nothing() {
    let (queue, faults) = faulty(&["a", "b", "c"]).await;
    faults.ack_hangs.store(true, Ordering::SeqCst);
    let runs = Arc::new(Mutex::new(std::collections::BTreeMap::<String, u32>::new()));
    let counted = Arc::clone(&runs);
    let handler = Arc::new(from_fn(move |task: Task| {
        *counted
            .lock()
            .unwrap()
            .entry(String::from_utf8_lossy(&task.item.payload).into_owned())
            .or_default() += 1;
        std::future::ready(())
    }));
    let first = tokio::spawn(
        Worker::new(Backend::new(queue.clone()), handler.clone())
            .with_config(config(2))
            .run(Shutdown::new()),
    );
    sleep(Duration::from_secs(1)).await;
    assert_eq!(
        counts(&queue).await,
        (0, 3, 0),
        "every item ran and waits on its ack"
    );
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());

    faults.ack_hangs.store(false, Ordering::SeqCst);
    let exit = timeout(
        Duration::from_secs(30),
        Worker::new(Backend::new(queue.clone()), handler)
            .with_config(config(2))
            .run(Shutdown::new()),
    )
    .await
    .expect("the second worker drains")
    .unwrap();
    assert_eq!(exit, WorkerExit::Drained);
    assert_eq!(counts(&queue).await, (0, 0, 0));
    let runs = runs.lock().unwrap().clone();
    assert_eq!(
        runs,
        [("a", 2), ("b", 2), ("c", 2)]
            .map(|(i, n)| (i.to_string(), n))
            .into(),
        "each item ran once more, because its ack never landed"
    );
}

/// An outage answers every ack at once with a retryable error: the worker
/// retries with backoff (one warning a retry), not at a fixed rate for as
/// long as the outage lasts, and the ack lands soon once it ends.
#[tokio::test(start_paused = true)]
async fn acks_refused_through_an_outage_are_retried_with_backoff() {
    let (queue, faults) = faulty(&["a"]).await;
    faults.ack_failures.store(u32::MAX, Ordering::SeqCst);
    let (_, handler) = started_items();
    let worker =
        Worker::new(Backend::new(queue.clone()), Arc::new(from_fn(handler))).with_config(config(1));
    let shutdown = Shutdown::new();
    let run = tokio::spawn(worker.run(shutdown.clone()));
    sleep(Duration::from_secs(60)).await;
    let calls = faults.ack_calls.load(Ordering::SeqCst);
    // Doubling from 500 ms to at most 10 s: 0.5 + 1 + 2 + 4 + 8, then every
    // 10 s: 10 calls in a minute. A fixed 500 ms would be 120.
    assert!(
        (5..=12).contains(&calls),
        "{calls} ack calls in a 60 s outage"
    );
    faults.ack_failures.store(0, Ordering::SeqCst);
    sleep(Duration::from_secs(11)).await;
    assert_eq!(
        counts(&queue).await,
        (0, 0, 0),
        "the ack lands within one retry once the outage ends"
    );
    shutdown.stop();
    let _ = timeout(Duration::from_secs(11), run).await;
}

/// A long poll kept at the server, as SQS and Pub/Sub keep theirs: it goes
/// on (here on a task of its own) after the client stops waiting for it,
/// and whatever it takes then is leased to no one until its lease ends.
#[derive(Debug)]
struct ServerPoll {
    inner: Arc<MemoryQueue>,
    open: Arc<AtomicU32>,
}

#[async_trait]
impl QueueDecorator for ServerPoll {
    fn inner(&self) -> &dyn WorkQueue {
        &*self.inner
    }
    fn capabilities(&self) -> forloop_core::Capabilities {
        let mut capabilities = self.inner.capabilities();
        capabilities.cancel_safe_pull = false;
        capabilities
    }
    /// A reading takes a moment, as over a network.
    async fn backlog(&self) -> Result<Backlog, QueueError> {
        sleep(Duration::from_millis(300)).await;
        self.inner.backlog().await
    }
    async fn pull(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, QueueError> {
        let inner = Arc::clone(&self.inner);
        let open = Arc::clone(&self.open);
        open.fetch_add(1, Ordering::SeqCst);
        let poll = tokio::spawn(async move {
            let until = Instant::now() + wait;
            loop {
                let taken = inner.pull(max, Duration::ZERO).await;
                if taken.as_ref().map_or(true, |t| !t.is_empty()) || Instant::now() >= until {
                    open.fetch_sub(1, Ordering::SeqCst);
                    return taken;
                }
                sleep(Duration::from_millis(50)).await;
            }
        });
        poll.await.expect("the server's poll")
    }
}

/// Issue 21, item 9: a worker that ends while its long poll is open at the
/// server must not leave that poll to take the next item published (for a
/// whole lease, and an attempt charged): it waits for the poll's answer,
/// and runs what it brings.
#[tokio::test(start_paused = true)]
async fn an_ending_worker_leaves_no_long_poll_behind_to_hide_the_next_item() {
    let inner = Arc::new(MemoryQueue::new(
        QueueConfig::new("q").with_lease(Duration::from_secs(60)),
    ));
    let queue = Arc::new(ServerPoll {
        inner: Arc::clone(&inner),
        open: Arc::default(),
    });
    let batch = (0..4).map(|i| Item::new(format!("item-{i}"))).collect();
    queue.publish(batch).await.unwrap();
    let (started, handler) = started_items();
    let config = WorkerConfig {
        poll: Duration::from_secs(2),
        ..config(4)
    };
    let worker =
        Worker::new(Backend::new(queue.clone()), Arc::new(from_fn(handler))).with_config(config);
    let exit = timeout(Duration::from_secs(30), worker.run(Shutdown::new()))
        .await
        .expect("the worker ends")
        .unwrap();
    assert_eq!(exit, WorkerExit::Drained);
    assert_eq!(started.lock().unwrap().len(), 4);
    assert_eq!(
        queue.open.load(Ordering::SeqCst),
        0,
        "the worker ended with a long poll open at the server"
    );

    // The next job's item, published right after the worker ended, is
    // there for the next worker, which comes a moment later.
    inner.publish(vec![Item::new("next")]).await.unwrap();
    sleep(Duration::from_millis(500)).await;
    let next = inner.pull(10, Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        next.len(),
        1,
        "the ended worker's long poll took the next item for a lease"
    );
}
