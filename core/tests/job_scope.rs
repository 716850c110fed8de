//! Jobs that share a queue (issue 21): a worker started for a job ends when
//! that job is over, whatever else waits in the queue; an item runs only
//! under its own job's command; a cancelled or forgotten job's items are
//! settled without running; a job the ledger lost stops the worker loudly
//! instead of reading as done. Paused clock, memory queue.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use forloop_core::handler::from_fn;
use forloop_core::job::{Backend, Begun, JobStatus, Ledger, LedgerDecorator, Manifest, SeqSet};
use forloop_core::memory::MemoryLedger;
use forloop_core::worker::Shutdown;
use forloop_core::{
    Item, MemoryQueue, QueueConfig, QueueError, Task, WorkQueue, Worker, WorkerConfig, WorkerExit,
};

/// A memory ledger whose answers a test can bend: a job shown as
/// cancelled, jobs shown as forgotten, or every job lost (as after a
/// Redis FLUSHALL).
#[derive(Debug)]
struct Bent {
    inner: Arc<MemoryLedger>,
    cancelled: Mutex<BTreeSet<String>>,
    forgotten: Mutex<BTreeSet<String>>,
    lost: AtomicBool,
}

impl Bent {
    fn new(inner: Arc<MemoryLedger>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            cancelled: Mutex::default(),
            forgotten: Mutex::default(),
            lost: AtomicBool::new(false),
        })
    }
}

#[async_trait]
impl LedgerDecorator for Bent {
    fn inner(&self) -> &dyn Ledger {
        &*self.inner
    }
    async fn jobs(&self) -> Result<Vec<JobStatus>, QueueError> {
        if self.lost.load(Ordering::SeqCst) {
            return Ok(Vec::new());
        }
        let forgotten = self.forgotten.lock().unwrap().clone();
        let cancelled = self.cancelled.lock().unwrap().clone();
        let mut jobs = self.inner.jobs().await?;
        jobs.retain(|job| !forgotten.contains(&job.manifest.job));
        for job in &mut jobs {
            if cancelled.contains(&job.manifest.job) {
                job.cancelled = Some(1);
            }
        }
        Ok(jobs)
    }
    async fn forgotten(&self) -> Result<Vec<String>, QueueError> {
        Ok(self.forgotten.lock().unwrap().iter().cloned().collect())
    }
}

fn queue() -> MemoryQueue {
    MemoryQueue::new(QueueConfig::new("shared").with_lease(Duration::from_secs(30)))
        .with_done_receipts()
}

/// Record job `name` of `total` items run by `command`, and publish the
/// items `seqs` of it (a job whose submit stopped part-way when fewer).
async fn job(
    queue: &MemoryQueue,
    ledger: &dyn Ledger,
    name: &str,
    total: u64,
    sent: u64,
    command: Option<&str>,
) {
    let mut manifest = Manifest::new(name, total, format!("digest-{name}"));
    manifest.command = command.map(str::to_string);
    assert_eq!(ledger.begin(&manifest).await.unwrap(), Begun::New);
    let items: Vec<Item> = (0..sent)
        .map(|seq| {
            Item::new(format!("{name}-{seq}")).with_job(forloop_core::job::JobItem::new(name, seq))
        })
        .collect();
    queue.publish(items).await.unwrap();
    ledger
        .submitted(name, &(0..sent).collect::<SeqSet>())
        .await
        .unwrap();
}

fn config(name: &str, jobs: Option<&[&str]>, command: Option<&str>) -> WorkerConfig {
    WorkerConfig {
        concurrency: 2,
        lease: Duration::from_secs(30),
        poll: Duration::from_millis(100),
        idle_window: Duration::from_secs(5),
        name: Arc::from(name),
        for_jobs: jobs.map(|jobs| jobs.iter().map(|j| Arc::from(*j)).collect()),
        command: command.map(Arc::from),
        ..WorkerConfig::default()
    }
}

/// A worker on `backend` whose handler records each item it runs.
fn worker(backend: Backend, config: WorkerConfig) -> (Worker, Arc<Mutex<Vec<String>>>) {
    let ran = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&ran);
    let handler = from_fn(move |task: Task| {
        let seen = Arc::clone(&seen);
        async move {
            seen.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&task.item.payload).into_owned());
            Ok::<(), String>(())
        }
    });
    (
        Worker::new(backend, Arc::new(handler)).with_config(config),
        ran,
    )
}

/// Run `worker` for at most ten minutes of paused time.
async fn run_for_ten_minutes(worker: Worker) -> Option<Result<WorkerExit, QueueError>> {
    tokio::time::timeout(Duration::from_secs(600), worker.run(Shutdown::new()))
        .await
        .ok()
}

#[tokio::test(start_paused = true)]
async fn a_worker_for_its_job_ends_when_that_job_is_over_whatever_else_is_queued() {
    let queue = queue();
    let ledger = queue.ledger();
    // Job `stuck`: a submit of 400,000 stopped after 6; same command.
    job(&queue, &*ledger, "stuck", 400_000, 6, Some("cmd")).await;
    job(&queue, &*ledger, "mine", 3, 3, Some("cmd")).await;
    let (worker, ran) = worker(queue.backend(), config("w", Some(&["mine"]), Some("cmd")));
    let exit = run_for_ten_minutes(worker).await;
    assert!(
        matches!(exit, Some(Ok(WorkerExit::Drained))),
        "a worker for job `mine` must end once `mine` is complete, not wait for `stuck` \
         (which can never complete): {exit:?}"
    );
    let ran = ran.lock().unwrap().clone();
    for seq in 0..3 {
        assert!(
            ran.contains(&format!("mine-{seq}")),
            "mine-{seq} ran: {ran:?}"
        );
    }
    let mine = ledger.jobs().await.unwrap();
    let mine = mine.iter().find(|j| j.manifest.job == "mine").unwrap();
    assert!(mine.is_complete(), "{mine:?}");
}

#[tokio::test(start_paused = true)]
async fn an_item_never_runs_under_another_jobs_command() {
    let queue = queue();
    let ledger = queue.ledger();
    job(&queue, &*ledger, "a", 2, 2, Some("cmdA")).await;
    job(&queue, &*ledger, "b", 2, 2, Some("cmdB")).await;
    // A worker for job `b` (cmdB), and one that serves any job with cmdB.
    for jobs in [Some(&["b"][..]), None] {
        let (worker, ran) = worker(queue.backend(), config("w", jobs, Some("cmdB")));
        let stop = Shutdown::new();
        let stopper = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(120)).await;
            stopper.stop();
        });
        let exit = worker.run(stop).await;
        let ran = ran.lock().unwrap().clone();
        assert!(
            ran.iter().all(|item| item.starts_with("b-")),
            "only job b's items may run under cmdB (jobs {jobs:?}): ran {ran:?}"
        );
        assert!(exit.is_ok(), "{exit:?}");
    }
    // Job a's items are still there, for a worker with its command, at no
    // cost in attempts.
    let (worker, ran) = worker(queue.backend(), config("w", Some(&["a"]), Some("cmdA")));
    let exit = run_for_ten_minutes(worker).await;
    assert!(matches!(exit, Some(Ok(WorkerExit::Drained))), "{exit:?}");
    let mut ran = ran.lock().unwrap().clone();
    ran.sort();
    assert_eq!(ran, ["a-0", "a-1"]);
    let status = ledger.jobs().await.unwrap();
    let a = status.iter().find(|j| j.manifest.job == "a").unwrap();
    assert_eq!((a.done, a.dead), (2, 0), "handing back cost no attempt");
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_jobs_items_are_settled_without_running() {
    let queue = queue();
    let bent = Bent::new(queue.ledger());
    job(&queue, &*bent, "gone", 1_000, 5, Some("cmd")).await;
    job(&queue, &*bent, "kept", 2, 2, Some("cmd")).await;
    bent.cancelled.lock().unwrap().insert("gone".to_string());
    let backend = Backend::new(Arc::new(queue.clone()) as Arc<dyn WorkQueue>)
        .with_ledger(bent as Arc<dyn Ledger>);
    let (worker, ran) = worker(backend, config("w", None, Some("cmd")));
    let exit = run_for_ten_minutes(worker).await;
    assert!(
        matches!(exit, Some(Ok(WorkerExit::Drained))),
        "a cancelled job holds no worker: {exit:?}"
    );
    let ran = ran.lock().unwrap().clone();
    assert!(
        ran.iter().all(|item| item.starts_with("kept-")),
        "a cancelled job's items must not run: {ran:?}"
    );
    assert_eq!(ran.len(), 2, "{ran:?}");
    let backlog = queue.backlog().await.unwrap();
    assert_eq!(
        (backlog.ready.value(), backlog.in_flight.value()),
        (Some(0), Some(0)),
        "the cancelled job's items are settled, not left in the queue"
    );
}

#[tokio::test(start_paused = true)]
async fn a_forgotten_jobs_items_are_settled_without_running() {
    let queue = queue();
    let bent = Bent::new(queue.ledger());
    job(&queue, &*bent, "old", 10, 3, None).await;
    bent.forgotten.lock().unwrap().insert("old".to_string());
    let backend = Backend::new(Arc::new(queue.clone()) as Arc<dyn WorkQueue>)
        .with_ledger(bent as Arc<dyn Ledger>);
    let (worker, ran) = worker(backend, config("w", None, None));
    let exit = run_for_ten_minutes(worker).await;
    assert!(matches!(exit, Some(Ok(WorkerExit::Drained))), "{exit:?}");
    assert!(ran.lock().unwrap().is_empty(), "{:?}", ran.lock().unwrap());
}

#[tokio::test(start_paused = true)]
async fn a_job_the_ledger_lost_stops_the_worker_loudly() {
    let queue = queue();
    let bent = Bent::new(queue.ledger());
    job(&queue, &*bent, "big", 20, 20, None).await;
    let backend = Backend::new(Arc::new(queue.clone()) as Arc<dyn WorkQueue>)
        .with_ledger(Arc::clone(&bent) as Arc<dyn Ledger>);
    let lose = Arc::clone(&bent);
    let handler = from_fn(move |task: Task| {
        let lose = Arc::clone(&lose);
        async move {
            // The server loses its keys at the 4th item.
            if task.item.job.as_ref().is_some_and(|j| j.seq == 3) {
                lose.lost.store(true, Ordering::SeqCst);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok::<(), String>(())
        }
    });
    let worker = Worker::new(backend, Arc::new(handler)).with_config(config("w", None, None));
    let exit = run_for_ten_minutes(worker).await;
    match exit {
        Some(Err(error)) => {
            let text = error.to_string();
            assert!(
                text.contains("big") && text.contains("lost"),
                "the error names the job and says it was lost: {text}"
            );
        }
        other => panic!("a job the ledger lost must fail the worker, not end it: {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_worker_for_a_job_the_ledger_lost_fails_instead_of_waiting() {
    let queue = queue();
    let bent = Bent::new(queue.ledger());
    job(&queue, &*bent, "mine", 5, 5, Some("cmd")).await;
    bent.lost.store(true, Ordering::SeqCst);
    let backend = Backend::new(Arc::new(queue.clone()) as Arc<dyn WorkQueue>)
        .with_ledger(Arc::clone(&bent) as Arc<dyn Ledger>);
    let (worker, _) = worker(backend, config("w", Some(&["mine"]), Some("cmd")));
    let exit = run_for_ten_minutes(worker).await;
    assert!(
        matches!(&exit, Some(Err(e)) if e.to_string().contains("mine")),
        "{exit:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_worker_without_a_ledger_refuses_items_of_a_job_instead_of_running_them_uncounted() {
    let queue = queue();
    let ledger = queue.ledger();
    job(&queue, &*ledger, "counted", 2, 2, None).await;
    // The queue alone, as `Backend::new(queue)` gives it: no ledger.
    let backend = Backend::new(Arc::new(queue.clone()) as Arc<dyn WorkQueue>);
    let (worker, ran) = worker(backend, config("w", None, None));
    let exit = run_for_ten_minutes(worker).await;
    assert!(
        matches!(&exit, Some(Err(e)) if e.to_string().contains("`counted`") && e.to_string().contains("ledger")),
        "an item of a job with no ledger to count it must fail the worker, naming the job: {exit:?}"
    );
    assert!(ran.lock().unwrap().is_empty(), "{:?}", ran.lock().unwrap());
    let backlog = queue.backlog().await.unwrap();
    assert_eq!(
        backlog.ready.value(),
        Some(2),
        "the items are handed back, not held or lost"
    );
}
