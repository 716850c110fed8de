//! Halting a failing job (issue 24): a job past its `--max-dead` is halted
//! in the ledger by whichever worker reads it passed; every worker of the
//! job stops taking its items, gives back what it runs at no cost and
//! returns `Halted`; the rest stay queued; a job of another command on the
//! same queue is not affected; a resume continues the same job, its limit
//! counting from there. Paused clock, memory queue.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use forloop_core::handler::from_fn;
use forloop_core::job::{DeadLimit, JobItem, JobStatus, Ledger, Manifest, SeqSet, Settled, Submit};
use forloop_core::worker::Shutdown;
use forloop_core::{
    Item, MemoryQueue, QueueConfig, QueueError, Task, TaskOutcome, WorkQueue, Worker, WorkerConfig,
    WorkerExit,
};

const WORKERS: usize = 4;
const CONCURRENCY: usize = 2;

fn queue() -> MemoryQueue {
    MemoryQueue::new(QueueConfig::new("halting").with_lease(Duration::from_secs(30)))
        .with_done_receipts()
}

fn items(job: &str, n: u64) -> Vec<Item> {
    (0..n).map(|i| Item::new(format!("{job}-{i}"))).collect()
}

/// Submit (or, with `resume`, resume) job `name` of `n` items run by
/// `command`, halting past `limit`.
async fn submit(
    queue: &MemoryQueue,
    ledger: &dyn Ledger,
    (name, n, command): (&str, u64, Option<&str>),
    limit: Option<DeadLimit>,
    resume: bool,
) -> Option<JobStatus> {
    let mut submit = Submit::new(queue, items(name, n)).job(ledger, name);
    if let Some(command) = command {
        submit = submit.command(command);
    }
    submit
        .max_dead(limit)
        .resume(resume)
        .send()
        .await
        .expect("submit")
        .resumed
}

fn config(name: String, job: &str, command: &str) -> WorkerConfig {
    WorkerConfig {
        concurrency: CONCURRENCY,
        lease: Duration::from_secs(30),
        poll: Duration::from_millis(100),
        max_attempts: 1,
        name: Arc::from(name),
        for_jobs: Some(vec![Arc::from(job)]),
        command: Some(Arc::from(command)),
        ..WorkerConfig::default()
    }
}

/// Runs of each item, by payload, across every worker of a test.
type Runs = Arc<Mutex<BTreeMap<String, u32>>>;

/// A worker for `job` whose every attempt fails with exit 1 (or succeeds),
/// after `secs` of paused time, counting its runs in `runs`.
fn worker(queue: &MemoryQueue, cfg: WorkerConfig, fail: bool, secs: u64, runs: &Runs) -> Worker {
    let runs = Arc::clone(runs);
    let handler = from_fn(move |task: Task| {
        let runs = Arc::clone(&runs);
        async move {
            let item = String::from_utf8_lossy(&task.item.payload).into_owned();
            *runs.lock().unwrap().entry(item).or_default() += 1;
            tokio::time::sleep(Duration::from_secs(secs)).await;
            if fail {
                TaskOutcome::failed("HTTP 429 from the download site").with_exit_code(1)
            } else {
                TaskOutcome::success()
            }
        }
    });
    Worker::new(queue.backend(), Arc::new(handler)).with_config(cfg)
}

/// Run `workers` together for at most ten minutes of paused time.
async fn run_all(workers: Vec<Worker>) -> Vec<Result<WorkerExit, QueueError>> {
    let handles: Vec<_> = workers
        .into_iter()
        .map(|worker| {
            tokio::spawn(tokio::time::timeout(
                Duration::from_secs(600),
                worker.run(Shutdown::new()),
            ))
        })
        .collect();
    let mut exits = Vec::new();
    for handle in handles {
        exits.push(
            handle
                .await
                .unwrap()
                .expect("the worker ended within ten minutes"),
        );
    }
    exits
}

async fn status(ledger: &dyn Ledger, job: &str) -> JobStatus {
    let jobs = ledger.jobs().await.unwrap();
    jobs.into_iter().find(|j| j.manifest.job == job).unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_failing_job_halts_within_a_bound_leaves_the_rest_queued_and_resumes() {
    let queue = queue();
    let ledger = queue.ledger();
    let limit = 5;
    submit(
        &queue,
        &*ledger,
        ("bad", 200, Some("fetch")),
        Some(DeadLimit::Items(limit)),
        false,
    )
    .await;
    // Another job on the same queue, of another command (recorded as two
    // submits at the same instant would: `submit` refuses it otherwise):
    // not affected.
    let mut manifest = Manifest::new("good", 20, "digest-good");
    manifest.command = Some("other".into());
    ledger.begin(&manifest).await.unwrap();
    let good: Vec<Item> = (0..20)
        .map(|seq| Item::new(format!("good-{seq}")).with_job(JobItem::new("good", seq)))
        .collect();
    queue.publish(good).await.unwrap();
    ledger
        .submitted("good", &(0..20).collect::<SeqSet>())
        .await
        .unwrap();
    let runs: Runs = Arc::default();
    let mut workers: Vec<Worker> = (0..WORKERS)
        .map(|i| {
            worker(
                &queue,
                config(format!("w{i}"), "bad", "fetch"),
                true,
                1,
                &runs,
            )
        })
        .collect();
    workers.push(worker(
        &queue,
        config("g".into(), "good", "other"),
        false,
        1,
        &runs,
    ));
    let exits = run_all(workers).await;
    for exit in &exits[..WORKERS] {
        assert!(
            matches!(exit, Ok(WorkerExit::Halted)),
            "every worker of the failing job ends halted: {exits:?}"
        );
    }
    assert!(
        matches!(exits[WORKERS], Ok(WorkerExit::Drained)),
        "{exits:?}"
    );

    let bad = status(&*ledger, "bad").await;
    assert!(bad.is_halted(), "{bad:?}");
    eprintln!("halted at {} dead of 200 (limit {limit})", bad.dead);
    // Past the limit only what was in flight when it was passed can die:
    // each worker's slots, plus the one death that passed it.
    let bound = limit + 1 + (WORKERS * CONCURRENCY) as u64;
    assert!(
        bad.dead > limit && bad.dead <= bound,
        "{} dead: the halt must come after {limit} and within {bound}",
        bad.dead
    );
    assert_eq!(bad.done, 0);
    assert_eq!(
        bad.halt_line(),
        format!("halted: {} of 200 dead (limit {limit})", bad.dead)
    );
    let dead_at_halt = bad.dead;
    // The rest wait in the queue, none charged an attempt.
    let backlog = queue.backlog().await.unwrap();
    assert_eq!(
        backlog.ready.value(),
        Some(200 - dead_at_halt),
        "{backlog:?}"
    );
    let good = status(&*ledger, "good").await;
    assert!(good.is_complete() && good.done == 20, "{good:?}");
    let ran_bad = runs
        .lock()
        .unwrap()
        .iter()
        .filter(|(item, _)| item.starts_with("bad-"))
        .map(|(_, n)| u64::from(*n))
        .sum::<u64>();
    assert!(
        ran_bad <= bound,
        "{ran_bad} attempts of `bad` ran: at most {bound}"
    );

    // The cause is fixed; `--resume` continues the same job.
    let resumed = submit(
        &queue,
        &*ledger,
        ("bad", 200, Some("fetch")),
        Some(DeadLimit::Items(limit)),
        true,
    )
    .await
    .expect("an existing job");
    assert!(!resumed.is_halted(), "{resumed:?}");
    let bad = status(&*ledger, "bad").await;
    assert!(!bad.is_halted() && bad.halt.epoch == 1, "{bad:?}");
    let workers: Vec<Worker> = (0..WORKERS)
        .map(|i| {
            worker(
                &queue,
                config(format!("r{i}"), "bad", "fetch"),
                false,
                1,
                &runs,
            )
        })
        .collect();
    let exits = run_all(workers).await;
    assert!(
        exits.iter().all(|e| matches!(e, Ok(WorkerExit::Drained))),
        "{exits:?}"
    );
    let bad = status(&*ledger, "bad").await;
    assert_eq!(
        (bad.done, bad.dead),
        (200 - dead_at_halt, dead_at_halt),
        "{bad:?}"
    );
    assert!(bad.is_complete() && !bad.is_halted(), "{bad:?}");
    // Every item given back ran its next attempt as its first charged one.
    let receipts = ledger.receipts("bad").await.unwrap();
    let done: Vec<_> = receipts
        .iter()
        .filter(|r| r.state == Settled::Done)
        .collect();
    assert_eq!(done.len() as u64, 200 - dead_at_halt);
    assert!(
        done.iter().all(|r| r.attempt == 1),
        "a hand-back at the halt charged an attempt: {:?}",
        done.iter().filter(|r| r.attempt != 1).collect::<Vec<_>>()
    );
}

#[tokio::test(start_paused = true)]
async fn a_percentage_halts_a_job_that_fails_every_item_once_enough_settled() {
    let queue = queue();
    let ledger = queue.ledger();
    // 5 % of 10,000 is 500: the share of settled items decides first, once
    // 100 settled.
    submit(
        &queue,
        &*ledger,
        ("big", 10_000, Some("fetch")),
        Some("5%".parse().unwrap()),
        false,
    )
    .await;
    let runs: Runs = Arc::default();
    let workers: Vec<Worker> = (0..WORKERS)
        .map(|i| {
            worker(
                &queue,
                config(format!("w{i}"), "big", "fetch"),
                true,
                1,
                &runs,
            )
        })
        .collect();
    let exits = run_all(workers).await;
    assert!(
        exits.iter().all(|e| matches!(e, Ok(WorkerExit::Halted))),
        "{exits:?}"
    );
    let big = status(&*ledger, "big").await;
    eprintln!("halted at {} dead of 10,000 (limit 5 %)", big.dead);
    let bound = 100 + (WORKERS * CONCURRENCY) as u64;
    assert!(
        big.is_halted() && big.dead >= 100 && big.dead <= bound,
        "{big:?}: halts once 100 settled, within {bound}"
    );
    assert_eq!(
        big.halt_line(),
        format!("halted: {} of 10,000 dead (limit 5 %)", big.dead)
    );
}
