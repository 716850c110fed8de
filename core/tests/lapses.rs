//! The preemption budget (issue 24): a lapse (the worker holding an item
//! vanished, its lease ended with no answer) is not a failed attempt.
//! `max_attempts` counts attempts where `f` ran and failed; lapses have
//! their own limit, `max_lapses`, past which the item is dead, "lost N
//! times". A worker is "SIGKILLed" here by dropping its run future: it
//! hands nothing back and its leases lapse, as a killed process's do.
//! Paused clock, memory queue sized as the runner sizes it
//! (`deliveries_allowed`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use forloop_core::handler::from_fn;
use forloop_core::worker::{Shutdown, deliveries_allowed};
use forloop_core::{
    Item, MemoryQueue, QueueConfig, Task, TaskOutcome, WorkQueue, Worker, WorkerConfig, WorkerExit,
};
use tokio::task::JoinHandle;
use tokio::time::sleep;

const LEASE: Duration = Duration::from_secs(30);

fn config(max_attempts: u32, max_lapses: u32, concurrency: usize) -> WorkerConfig {
    WorkerConfig {
        concurrency,
        lease: LEASE,
        max_attempts,
        max_lapses,
        poll: Duration::from_millis(200),
        ..WorkerConfig::default()
    }
}

/// A queue whose own limit is what the runner sets: failed attempts and
/// lapses together.
fn queue(config: &WorkerConfig) -> MemoryQueue {
    MemoryQueue::new(
        QueueConfig::new("lapses")
            .with_lease(LEASE)
            .with_max_attempts(deliveries_allowed(config.max_attempts, config.max_lapses)),
    )
}

/// What a run of an item does.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Run {
    Fail,
    /// Runs until its worker is killed.
    Hang,
    Succeed,
}

/// Runs of each item so far, by payload.
type Runs = Arc<Mutex<BTreeMap<String, u32>>>;

/// A worker whose handler does, on an item's n-th run, `plan(item, n)`
/// (a success takes 20 s).
fn worker(
    queue: &MemoryQueue,
    config: WorkerConfig,
    runs: &Runs,
    plan: fn(&str, u32) -> Run,
) -> Worker {
    worker_on(queue.backend(), config, runs, plan)
}

/// [`worker`] on any backend.
fn worker_on(
    backend: forloop_core::job::Backend,
    config: WorkerConfig,
    runs: &Runs,
    plan: fn(&str, u32) -> Run,
) -> Worker {
    let runs = Arc::clone(runs);
    let handler = from_fn(move |task: Task| {
        let runs = Arc::clone(&runs);
        async move {
            let item = String::from_utf8_lossy(&task.item.payload).into_owned();
            let n = {
                let mut runs = runs.lock().unwrap();
                let n = runs.entry(item.clone()).or_default();
                *n += 1;
                *n
            };
            match plan(&item, n) {
                Run::Fail => TaskOutcome::failed("exit 1").with_exit_code(1),
                Run::Hang => {
                    sleep(Duration::from_secs(24 * 3600)).await;
                    TaskOutcome::success()
                }
                Run::Succeed => {
                    sleep(Duration::from_secs(20)).await;
                    TaskOutcome::success()
                }
            }
        }
    });
    Worker::new(backend, Arc::new(handler)).with_config(config)
}

fn spawn(worker: Worker) -> JoinHandle<WorkerExit> {
    tokio::spawn(async move { worker.run(Shutdown::new()).await.expect("worker") })
}

/// "SIGKILL": the worker's run is dropped where it stands (unless it has
/// ended already).
async fn kill(handle: JoinHandle<WorkerExit>) {
    handle.abort();
    if let Err(error) = handle.await {
        assert!(error.is_cancelled(), "{error}");
    }
}

async fn drain(worker: Worker) {
    let exit = tokio::time::timeout(Duration::from_secs(3600), worker.run(Shutdown::new()))
        .await
        .expect("the last worker drains the queue within an hour")
        .expect("worker");
    assert_eq!(exit, WorkerExit::Drained);
}

fn dead(queue: &MemoryQueue) -> BTreeMap<String, String> {
    queue
        .dead_items()
        .into_iter()
        .map(|d| {
            (
                String::from_utf8_lossy(&d.item.payload).into_owned(),
                d.reason,
            )
        })
        .collect()
}

/// An item on its last failure attempt whose worker is killed: the lapse
/// is no failure, so the item runs again, still on its last failure
/// attempt, and a success then settles it.
#[tokio::test(start_paused = true)]
async fn a_lapse_on_the_last_failure_attempt_charges_nothing() {
    let cfg = config(2, 10, 1);
    let queue = queue(&cfg);
    queue.publish(vec![Item::new("flaky")]).await.unwrap();
    let runs = Runs::default();
    // Run 1 fails; run 2 (the last failure attempt) is killed; run 3
    // succeeds.
    let plan = |_: &str, n: u32| match n {
        1 => Run::Fail,
        2 => Run::Hang,
        _ => Run::Succeed,
    };
    let doomed = spawn(worker(&queue, cfg.clone(), &runs, plan));
    sleep(Duration::from_secs(60)).await;
    assert_eq!(
        runs.lock().unwrap()["flaky"],
        2,
        "failed once, then running"
    );
    kill(doomed).await;
    drain(worker(&queue, cfg, &runs, plan)).await;
    assert_eq!(runs.lock().unwrap()["flaky"], 3);
    assert!(dead(&queue).is_empty(), "dead: {:?}", dead(&queue));
}

/// The same item failing on its third delivery too: it dies on its second
/// failed attempt, the reason counting the lapse apart.
#[tokio::test(start_paused = true)]
async fn an_item_dies_on_its_last_failed_attempt_not_on_its_last_delivery() {
    let cfg = config(3, 10, 1);
    let queue = queue(&cfg);
    queue.publish(vec![Item::new("bad")]).await.unwrap();
    let runs = Runs::default();
    // Run 1 fails, run 2 is killed, runs 3 and 4 fail: three failed
    // attempts, four deliveries.
    let plan = |_: &str, n: u32| if n == 2 { Run::Hang } else { Run::Fail };
    let doomed = spawn(worker(&queue, cfg.clone(), &runs, plan));
    sleep(Duration::from_secs(60)).await;
    kill(doomed).await;
    drain(worker(&queue, cfg, &runs, plan)).await;
    assert_eq!(
        runs.lock().unwrap()["bad"],
        4,
        "three failed attempts and one lapse: the lapse was charged as a failure"
    );
    let reason = &dead(&queue)["bad"];
    assert!(
        reason.contains("on attempt 3 of 3; lost once besides"),
        "{reason}"
    );
}

/// A SIGKILL storm with `max_attempts` 1: every item that failed is dead
/// on its one attempt, and no item that did not fail is, however many
/// times its workers were killed under it.
#[tokio::test(start_paused = true)]
async fn a_sigkill_storm_with_one_attempt_dead_letters_nothing_that_did_not_fail() {
    let cfg = config(1, 10, 2);
    let queue = queue(&cfg);
    let items: Vec<String> = (0..60)
        .map(|i| {
            if i % 6 == 0 {
                format!("bad-{i}")
            } else {
                format!("ok-{i}")
            }
        })
        .collect();
    queue
        .publish(items.iter().map(|i| Item::new(i.clone())).collect())
        .await
        .unwrap();
    let runs = Runs::default();
    let plan = |item: &str, _: u32| {
        if item.starts_with("bad") {
            Run::Fail
        } else {
            Run::Succeed
        }
    };
    // Four storms: three workers of two slots each, killed 25 s in, while
    // the items they took second run (each takes 20 s).
    for _ in 0..4 {
        let workers: Vec<_> = (0..3)
            .map(|_| spawn(worker(&queue, cfg.clone(), &runs, plan)))
            .collect();
        sleep(Duration::from_secs(25)).await;
        for handle in workers {
            kill(handle).await;
        }
        // The killed workers' leases lapse.
        sleep(LEASE).await;
    }
    drain(worker(&queue, cfg, &runs, plan)).await;
    let dead = dead(&queue);
    let expected: std::collections::BTreeSet<&String> =
        items.iter().filter(|i| i.starts_with("bad")).collect();
    assert_eq!(
        dead.keys().collect::<std::collections::BTreeSet<_>>(),
        expected,
        "only the failing items are dead: {dead:?}"
    );
    for reason in dead.values() {
        assert!(reason.contains("on attempt 1 of 1"), "{reason}");
    }
    let killed_under = runs
        .lock()
        .unwrap()
        .iter()
        .filter(|(item, n)| item.starts_with("ok") && **n > 1)
        .count();
    assert!(
        killed_under >= 10,
        "the storm killed workers under {killed_under} items only"
    );
}

/// An item whose every holder vanishes is dead once it lapsed more than
/// `max_lapses` times, "lost N times", without running again.
#[tokio::test(start_paused = true)]
async fn an_item_lost_past_max_lapses_is_dead_lost_n_times() {
    let cfg = config(5, 2, 1);
    let queue = queue(&cfg);
    queue.publish(vec![Item::new("killer")]).await.unwrap();
    let runs = Runs::default();
    let plan = |_: &str, _: u32| Run::Hang;
    for _ in 0..3 {
        let doomed = spawn(worker(&queue, cfg.clone(), &runs, plan));
        sleep(Duration::from_secs(5)).await;
        kill(doomed).await;
        sleep(LEASE).await;
    }
    drain(worker(&queue, cfg, &runs, plan)).await;
    assert_eq!(
        runs.lock().unwrap()["killer"],
        3,
        "it ran again past its lapses"
    );
    let reason = &dead(&queue)["killer"];
    assert!(reason.starts_with("lost 3 times"), "{reason}");
    assert!(reason.contains("--max-lapses 2"), "{reason}");
}

/// A backend whose failed attempt is a copy sent at once (SQS, Pub/Sub):
/// no `delayed_fail`. The memory queue behind it, told every failure with
/// no delay, so the wait is the worker's.
#[derive(Debug)]
struct CopyingQueue {
    inner: MemoryQueue,
    /// The delays the worker asked of `fail_attempt`.
    asked: Mutex<Vec<Duration>>,
}

#[async_trait::async_trait]
impl forloop_core::queue::QueueDecorator for CopyingQueue {
    fn inner(&self) -> &dyn WorkQueue {
        &self.inner
    }
    fn capabilities(&self) -> forloop_core::Capabilities {
        self.inner.capabilities().with_delayed_fail(false)
    }
    async fn fail_attempt(
        &self,
        tokens: &[forloop_core::LeaseToken],
        delay: Duration,
    ) -> Result<forloop_core::LeaseReport, forloop_core::QueueError> {
        self.asked.lock().unwrap().push(delay);
        self.inner.fail_attempt(tokens, Duration::ZERO).await
    }
}

fn copying_worker(
    queue: &Arc<CopyingQueue>,
    config: WorkerConfig,
    runs: &Runs,
    plan: fn(&str, u32) -> Run,
) -> Worker {
    let backend = forloop_core::job::Backend::new(Arc::clone(queue) as Arc<dyn WorkQueue>);
    worker_on(backend, config, runs, plan)
}

/// Where a failed attempt cannot be delayed by the backend, the worker
/// holds the lease for the backoff (the item stays in flight, not ready),
/// then tells the failure with no delay; a stop during that wait tells it
/// at once, so it is not lost as a lapse.
#[tokio::test(start_paused = true)]
async fn a_failure_the_backend_cannot_delay_is_held_for_its_backoff_then_told() {
    let mut cfg = config(5, 10, 1);
    cfg.backoff = forloop_core::worker::Backoff {
        initial: Duration::from_secs(20),
        jitter: 0.0,
        ..forloop_core::worker::Backoff::default()
    };
    let queue = Arc::new(CopyingQueue {
        inner: queue(&cfg),
        asked: Mutex::new(Vec::new()),
    });
    queue.inner.publish(vec![Item::new("flaky")]).await.unwrap();
    let runs = Runs::default();
    let plan = |_: &str, n: u32| if n == 1 { Run::Fail } else { Run::Succeed };
    let started = tokio::time::Instant::now();
    let handle = spawn(copying_worker(&queue, cfg.clone(), &runs, plan));
    sleep(Duration::from_secs(10)).await;
    let backlog = queue.inner.backlog().await.unwrap();
    assert_eq!(
        (backlog.ready.value(), backlog.in_flight.value()),
        (Some(0), Some(1)),
        "during the backoff the failed item is held"
    );
    assert!(
        queue.asked.lock().unwrap().is_empty(),
        "told before its backoff"
    );
    assert_eq!(handle.await.unwrap(), WorkerExit::Drained);
    assert!(
        started.elapsed() >= Duration::from_secs(20),
        "the retry came after {:?}, before its backoff",
        started.elapsed()
    );
    assert_eq!(*queue.asked.lock().unwrap(), [Duration::ZERO]);
    assert_eq!(runs.lock().unwrap()["flaky"], 2);

    // A stop during the wait: the failure is told at once.
    queue.inner.publish(vec![Item::new("again")]).await.unwrap();
    let runs = Runs::default();
    let plan = |_: &str, _: u32| Run::Fail;
    let shutdown = Shutdown::new();
    let worker = copying_worker(&queue, cfg, &runs, plan);
    let running = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { worker.run(shutdown).await.unwrap() }
    });
    sleep(Duration::from_secs(5)).await;
    let stopped_at = tokio::time::Instant::now();
    shutdown.stop();
    assert!(matches!(running.await.unwrap(), WorkerExit::Stopped { .. }));
    assert!(stopped_at.elapsed() < Duration::from_secs(1));
    assert_eq!(
        queue.asked.lock().unwrap().len(),
        2,
        "the failure was not told"
    );
    let held = queue.inner.pull(1, Duration::ZERO).await.unwrap().remove(0);
    assert_eq!(
        (held.attempt, held.failures),
        (2, Some(1)),
        "the failure told at the stop counts"
    );
}
