//! Stragglers (issue 24, `--speculate`): the holder of an item that has run
//! far longer than the job's typical success, with nothing left to pull
//! and idle slots, publishes one copy of it (same job and seq, marked as a
//! copy); the first success settles the item and the ledger counts it
//! once; the other copy is stopped (acked, no receipt) once its worker's
//! reading shows the job complete. Paused clock, memory queue.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use forloop_core::handler::from_fn;
use forloop_core::job::{JobStatus, Ledger, Settled, Submit};
use forloop_core::worker::Shutdown;
use forloop_core::worker::speculate::is_copy;
use forloop_core::{
    Item, MemoryQueue, QueueConfig, Task, TaskOutcome, WorkQueue, Worker, WorkerConfig, WorkerExit,
};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep};

const JOB: &str = "tail";
/// Quick items besides the slow one (`tail-0`).
const QUICK: u64 = 30;
const SLOW: &str = "tail-0";

fn queue() -> MemoryQueue {
    MemoryQueue::new(QueueConfig::new("speculate").with_lease(Duration::from_secs(30)))
        .with_done_receipts()
}

async fn submit(queue: &MemoryQueue) {
    let items: Vec<Item> = (0..=QUICK)
        .map(|i| Item::new(format!("{JOB}-{i}")))
        .collect();
    Submit::new(queue, items)
        .job(&*queue.ledger(), JOB)
        .send()
        .await
        .expect("submit");
}

fn config(name: &str, speculate: bool) -> WorkerConfig {
    WorkerConfig {
        concurrency: 2,
        lease: Duration::from_secs(30),
        poll: Duration::from_millis(200),
        name: Arc::from(name),
        for_jobs: Some(vec![Arc::from(JOB)]),
        speculate,
        ..WorkerConfig::default()
    }
}

/// Runs of each item, by payload.
type Runs = Arc<Mutex<BTreeMap<String, u32>>>;

/// A worker whose quick items take 1 s; the slow item's first run takes
/// `slow` (its node is slow), any later run 1 s.
fn worker(queue: &MemoryQueue, config: WorkerConfig, runs: &Runs, slow: Duration) -> Worker {
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
            let secs = if item == SLOW && n == 1 {
                slow
            } else {
                Duration::from_secs(1)
            };
            sleep(secs).await;
            TaskOutcome::success()
        }
    });
    Worker::new(queue.backend(), Arc::new(handler)).with_config(config)
}

fn spawn(worker: Worker) -> JoinHandle<WorkerExit> {
    tokio::spawn(async move {
        tokio::time::timeout(Duration::from_secs(600), worker.run(Shutdown::new()))
            .await
            .expect("the worker ends within ten minutes")
            .expect("worker")
    })
}

async fn status(ledger: &dyn Ledger) -> JobStatus {
    let jobs = ledger.jobs().await.unwrap();
    jobs.into_iter().find(|j| j.manifest.job == JOB).unwrap()
}

/// Every item done, each (job, seq) with one receipt.
async fn counted_once(queue: &MemoryQueue) {
    let ledger = queue.ledger();
    let status = status(&*ledger).await;
    assert_eq!((status.done, status.dead), (QUICK + 1, 0), "{status:?}");
    let receipts = ledger.receipts(JOB).await.unwrap();
    let seqs: BTreeSet<u64> = receipts.iter().map(|r| r.seq).collect();
    assert_eq!(receipts.len() as u64, QUICK + 1, "one receipt per item");
    assert_eq!(seqs.len() as u64, QUICK + 1);
    assert!(receipts.iter().all(|r| r.state == Settled::Done));
}

/// Two workers of two slots; returns when both ended, and how long after
/// the start.
async fn run_job(queue: &MemoryQueue, speculate: bool, runs: &Runs, slow: Duration) -> Duration {
    submit(queue).await;
    let start = Instant::now();
    let handles = [
        spawn(worker(queue, config("w1", speculate), runs, slow)),
        spawn(worker(queue, config("w2", speculate), runs, slow)),
    ];
    for handle in handles {
        assert_eq!(handle.await.unwrap(), WorkerExit::Drained);
    }
    start.elapsed()
}

/// The quick items end in about 8 s (31 items, 4 slots, 1 s each); the
/// slow one would take 30 s. With `speculate`, its copy (1 s) settles it
/// soon after the 10 s floor, the original is stopped, and every item is
/// counted once.
#[tokio::test(start_paused = true)]
async fn a_straggler_is_copied_and_the_job_ends_well_before_it_would() {
    let queue = queue();
    let runs = Runs::default();
    let took = run_job(&queue, true, &runs, Duration::from_secs(30)).await;
    assert!(
        took < Duration::from_secs(20),
        "the job ended {took:?} after its start: the straggler was not copied"
    );
    assert_eq!(runs.lock().unwrap()[SLOW], 2, "the original and one copy");
    counted_once(&queue).await;
    assert!(queue.dead_items().is_empty());
    // `results` says which copy won: the receipt kept is the copy's.
    let receipts = queue.ledger().receipts(JOB).await.unwrap();
    let copies: Vec<u64> = receipts.iter().filter(|r| r.copy).map(|r| r.seq).collect();
    assert_eq!(copies, [0], "the copy settled the straggler, and only it");
}

/// Off (the default), nothing changes: the job waits for its straggler,
/// which runs once.
#[tokio::test(start_paused = true)]
async fn without_speculate_the_job_waits_for_its_straggler() {
    let queue = queue();
    let runs = Runs::default();
    let took = run_job(&queue, false, &runs, Duration::from_secs(30)).await;
    assert!(took >= Duration::from_secs(30), "{took:?}");
    assert_eq!(runs.lock().unwrap()[SLOW], 1);
    assert!(runs.lock().unwrap().values().all(|&n| n == 1));
    counted_once(&queue).await;
    let receipts = queue.ledger().receipts(JOB).await.unwrap();
    assert!(receipts.iter().all(|r| !r.copy));
}

/// The queue holds nothing: no copy or original left behind.
async fn queue_empty(queue: &MemoryQueue) {
    let backlog = queue.backlog().await.unwrap();
    assert_eq!(backlog.is_empty(), Some(true), "{backlog:?}");
}

/// When each copy of the slow item started, by the paused clock.
#[derive(Debug, Default)]
struct Starts {
    copy: Option<Instant>,
    /// The worker that ran the copy.
    copier: Option<String>,
    /// The worker that runs the original.
    holder: Option<String>,
}

type Shared = Arc<Mutex<Starts>>;

/// A worker named `name`: quick items take 1 s; the slow item's original
/// runs `original(shared)`, its copy `copy(shared)`, a later run 1 s.
fn worker_with(
    queue: &MemoryQueue,
    config: WorkerConfig,
    runs: &Runs,
    shared: &Shared,
    original_secs_after_copy: Option<u64>,
    copy_secs: u64,
) -> Worker {
    let (runs, shared) = (Arc::clone(runs), Arc::clone(shared));
    let name = config.name.to_string();
    let handler = from_fn(move |task: Task| {
        let (runs, shared, name) = (Arc::clone(&runs), Arc::clone(&shared), name.clone());
        async move {
            let item = String::from_utf8_lossy(&task.item.payload).into_owned();
            let n = {
                let mut runs = runs.lock().unwrap();
                let n = runs.entry(item.clone()).or_default();
                *n += 1;
                *n
            };
            if item != SLOW || n > 2 {
                sleep(Duration::from_secs(1)).await;
            } else if is_copy(&task.item) {
                {
                    let mut starts = shared.lock().unwrap();
                    starts.copy = Some(Instant::now());
                    starts.copier = Some(name);
                }
                sleep(Duration::from_secs(copy_secs)).await;
            } else {
                shared.lock().unwrap().holder = Some(name);
                match original_secs_after_copy {
                    // Ends `secs` after its copy started.
                    Some(secs) => loop {
                        let copy = shared.lock().unwrap().copy;
                        if let Some(at) = copy {
                            tokio::time::sleep_until(at + Duration::from_secs(secs)).await;
                            break;
                        }
                        sleep(Duration::from_millis(50)).await;
                    },
                    None => sleep(Duration::from_secs(24 * 3600)).await,
                }
            }
            TaskOutcome::success()
        }
    });
    Worker::new(queue.backend(), Arc::new(handler)).with_config(config)
}

/// Both copies of the straggler succeed at the same instant, on two
/// workers: both write a receipt and ack, and the ledger counts the item
/// once; nothing is left in the queue.
#[tokio::test(start_paused = true)]
async fn both_copies_finishing_together_count_once() {
    let queue = queue();
    let (runs, shared) = (Runs::default(), Shared::default());
    submit(&queue).await;
    let handles = [
        spawn(worker_with(
            &queue,
            config("w1", true),
            &runs,
            &shared,
            Some(2),
            2,
        )),
        spawn(worker_with(
            &queue,
            config("w2", true),
            &runs,
            &shared,
            Some(2),
            2,
        )),
    ];
    for handle in handles {
        assert_eq!(handle.await.unwrap(), WorkerExit::Drained);
    }
    {
        let starts = shared.lock().unwrap();
        assert!(starts.copy.is_some(), "a copy ran");
        assert_ne!(
            starts.copier, starts.holder,
            "the copy ran on another worker"
        );
    }
    assert_eq!(
        runs.lock().unwrap()[SLOW],
        2,
        "the original and one copy, both to the end"
    );
    counted_once(&queue).await;
    queue_empty(&queue).await;
}

/// The worker running the original is SIGKILLed (its run dropped: it hands
/// nothing back) while the copy runs on the other: the copy settles the
/// item and the job completes. The original's lease lapses and the item
/// returns; a worker that takes it later runs it once more, and the
/// ledger still counts it once, keeping the copy's receipt.
#[tokio::test(start_paused = true)]
async fn the_original_holder_killed_while_its_copy_runs() {
    let queue = queue();
    let (runs, shared) = (Runs::default(), Shared::default());
    submit(&queue).await;
    let mut handles = BTreeMap::new();
    for name in ["w1", "w2"] {
        let worker = worker_with(&queue, config(name, true), &runs, &shared, None, 5);
        handles.insert(name, spawn(worker));
    }
    while shared.lock().unwrap().copy.is_none() {
        sleep(Duration::from_millis(100)).await;
    }
    let holder = shared.lock().unwrap().holder.clone().unwrap();
    let holder = handles.remove(holder.as_str()).unwrap();
    holder.abort();
    assert!(holder.await.unwrap_err().is_cancelled());
    let (winner, other) = handles.pop_first().unwrap();
    assert_eq!(other.await.unwrap(), WorkerExit::Drained);
    counted_once(&queue).await;
    let receipt = |receipts: Vec<forloop_core::job::Receipt>| {
        receipts.into_iter().find(|r| r.seq == 0).unwrap()
    };
    let settled = receipt(queue.ledger().receipts(JOB).await.unwrap());
    assert_eq!(&*settled.worker, winner, "the copy settled the item");
    assert!(settled.copy, "its receipt says a copy won");
    // The original's lease (30 s) lapses; the item returns to the queue.
    sleep(Duration::from_secs(31)).await;
    let late = WorkerConfig {
        for_jobs: None,
        ..config("w3", true)
    };
    assert_eq!(
        spawn(worker_with(&queue, late, &runs, &shared, None, 5))
            .await
            .unwrap(),
        WorkerExit::Drained
    );
    assert_eq!(
        runs.lock().unwrap()[SLOW],
        3,
        "the original, its copy, the redelivery"
    );
    counted_once(&queue).await;
    let kept = receipt(queue.ledger().receipts(JOB).await.unwrap());
    assert_eq!(kept, settled, "the first success's receipt stays");
    queue_empty(&queue).await;
    assert!(queue.dead_items().is_empty());
}

/// A copy is for another worker: its holder, alone on the queue, hands it
/// back while it runs the original (its node may be the slow one), and
/// once the original succeeded here, acks the copy without running it.
#[tokio::test(start_paused = true)]
async fn a_worker_never_runs_a_copy_of_its_own_item() {
    let queue = queue();
    let runs = Runs::default();
    submit(&queue).await;
    // Four slots: the quick items are over in 10 s, the straggler runs 60 s.
    let config = WorkerConfig {
        concurrency: 4,
        ..config("w1", true)
    };
    let exit = spawn(worker(&queue, config, &runs, Duration::from_secs(60)));
    assert_eq!(exit.await.unwrap(), WorkerExit::Drained);
    assert_eq!(
        runs.lock().unwrap()[SLOW],
        1,
        "the copy never ran on its holder"
    );
    counted_once(&queue).await;
    queue_empty(&queue).await;
}

/// A copy that fails is dropped, not retried nor dead-lettered: the
/// original is still live, and a dead copy would count the item settled
/// (dead) and stop the original that was about to succeed.
#[tokio::test(start_paused = true)]
async fn a_failing_copy_is_dropped_and_the_original_settles_the_item() {
    let queue = queue();
    let runs = Runs::default();
    submit(&queue).await;
    let config = |name| WorkerConfig {
        max_attempts: 1,
        ..config(name, true)
    };
    let make = |name| {
        let runs = Arc::clone(&runs);
        let handler = from_fn(move |task: Task| {
            let runs = Arc::clone(&runs);
            async move {
                let item = String::from_utf8_lossy(&task.item.payload).into_owned();
                *runs.lock().unwrap().entry(item.clone()).or_default() += 1;
                if is_copy(&task.item) {
                    sleep(Duration::from_secs(1)).await;
                    return TaskOutcome::failed("exit 1").with_exit_code(1);
                }
                let secs = if item == SLOW { 30 } else { 1 };
                sleep(Duration::from_secs(secs)).await;
                TaskOutcome::success()
            }
        });
        Worker::new(queue.backend(), Arc::new(handler)).with_config(config(name))
    };
    let handles = [spawn(make("w1")), spawn(make("w2"))];
    for handle in handles {
        assert_eq!(handle.await.unwrap(), WorkerExit::Drained);
    }
    assert_eq!(runs.lock().unwrap()[SLOW], 2, "the original and its copy");
    assert!(queue.dead_items().is_empty(), "{:?}", queue.dead_items());
    counted_once(&queue).await;
    let receipts = queue.ledger().receipts(JOB).await.unwrap();
    assert!(receipts.iter().all(|r| !r.copy));
    queue_empty(&queue).await;
}
