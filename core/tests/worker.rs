//! The worker loop keeps its semantics: slots, leases, retries, dead letters,
//! shutdown and drain. Everything but the command test runs on a paused
//! tokio clock against `MemoryQueue`, so every timing here is exact.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use forloop_core::handler::{OutcomeKind, from_fn};
use forloop_core::worker::{AttemptRecord, Backoff, Settlement, Shutdown, WorkerEvents};
use forloop_core::{
    CommandTemplate, Handler, Item, MemoryQueue, QueueConfig, Task, TaskOutcome, WorkQueue, Worker,
    WorkerConfig, WorkerExit,
};
use tokio::time::{Instant, sleep};

/// One finished attempt, as the worker reported it.
#[derive(Debug, Clone)]
struct Attempt {
    item: String,
    attempt: u32,
    outcome: TaskOutcome,
    settlement: Settlement,
    elapsed: Duration,
    at: Instant,
}

#[derive(Default)]
struct Recorder(Mutex<Vec<Attempt>>);

impl WorkerEvents for Recorder {
    fn attempt_finished(&self, record: &AttemptRecord<'_>) {
        self.0.lock().unwrap().push(Attempt {
            item: String::from_utf8_lossy(record.payload).into_owned(),
            attempt: record.attempt,
            outcome: record.outcome.clone(),
            settlement: record.settlement,
            elapsed: record.elapsed,
            at: Instant::now(),
        });
    }
}

impl Recorder {
    fn attempts(&self) -> Vec<Attempt> {
        self.0.lock().unwrap().clone()
    }

    fn settlements(&self) -> Vec<Settlement> {
        self.attempts().iter().map(|a| a.settlement).collect()
    }
}

fn queue_with(lease: Duration, max_attempts: u32) -> MemoryQueue {
    MemoryQueue::new(
        QueueConfig::new("test")
            .with_lease(lease)
            .with_max_attempts(max_attempts),
    )
}

async fn publish(queue: &MemoryQueue, items: &[&str]) {
    let batch = items
        .iter()
        .map(|item| Item::new(item.to_string()))
        .collect();
    queue.publish(batch).await.unwrap();
}

/// (ready, in flight, dead)
async fn backlog(queue: &MemoryQueue) -> (u64, u64, u64) {
    let backlog = queue.backlog().await.unwrap();
    (
        backlog.ready.value().unwrap(),
        backlog.in_flight.value().unwrap(),
        backlog.dead.value().unwrap(),
    )
}

fn item(task: &Task) -> String {
    String::from_utf8_lossy(&task.item.payload).into_owned()
}

fn worker(
    queue: &MemoryQueue,
    handler: impl Handler,
    config: WorkerConfig,
) -> (Worker, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let worker = Worker::new(Arc::new(queue.clone()), Arc::new(handler))
        .with_config(config)
        .with_events(recorder.clone());
    (worker, recorder)
}

/// Sets a flag when dropped: proves a handler's future was dropped, not left running.
struct DropFlag(Arc<AtomicUsize>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test(start_paused = true)]
async fn every_item_runs_once_with_at_most_c_running_and_at_most_c_leased() {
    const C: usize = 3;
    let queue = queue_with(Duration::from_secs(30), 5);
    let items: Vec<String> = (0..20).map(|i| i.to_string()).collect();
    publish(
        &queue,
        &items.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;

    let runs = Arc::new(Mutex::new(HashMap::<String, u32>::new()));
    let running = Arc::new(AtomicUsize::new(0));
    let max_running = Arc::new(AtomicUsize::new(0));
    let max_in_flight = Arc::new(AtomicU64::new(0));
    let handler = {
        let (q, runs, running, max_running, max_in_flight) = (
            queue.clone(),
            runs.clone(),
            running.clone(),
            max_running.clone(),
            max_in_flight.clone(),
        );
        from_fn(move |task: Task| {
            let (q, runs, running, max_running, max_in_flight) = (
                q.clone(),
                runs.clone(),
                running.clone(),
                max_running.clone(),
                max_in_flight.clone(),
            );
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                max_running.fetch_max(now, Ordering::SeqCst);
                let in_flight = q.backlog().await.unwrap().in_flight.value().unwrap();
                max_in_flight.fetch_max(in_flight, Ordering::SeqCst);
                *runs.lock().unwrap().entry(item(&task)).or_default() += 1;
                // Uneven durations, so slots free up one at a time.
                let n: u64 = item(&task).parse().unwrap();
                sleep(Duration::from_millis(100 + 37 * (n % 5))).await;
                running.fetch_sub(1, Ordering::SeqCst);
            }
        })
    };
    let config = WorkerConfig {
        concurrency: C,
        // Ack at once: a finished item waiting in the ack buffer is still
        // leased, and this test counts leases held for running tasks.
        ack_batch: 1,
        ..WorkerConfig::default()
    };
    let (worker, events) = worker(&queue, handler, config);

    assert_eq!(
        worker.run(Shutdown::new()).await.unwrap(),
        WorkerExit::Drained
    );

    let runs = runs.lock().unwrap().clone();
    assert_eq!(runs.len(), items.len(), "every item ran: {runs:?}");
    assert!(
        runs.values().all(|&n| n == 1),
        "each exactly once: {runs:?}"
    );
    assert_eq!(max_running.load(Ordering::SeqCst), C, "C tasks ran at once");
    let max_in_flight = max_in_flight.load(Ordering::SeqCst);
    assert!(
        max_in_flight <= C as u64,
        "the worker held {max_in_flight} leases with {C} slots: it prefetched"
    );
    let attempts = events.attempts();
    assert_eq!(attempts.len(), items.len());
    assert!(
        attempts
            .iter()
            .all(|a| a.attempt == 1 && a.settlement == Settlement::Acked)
    );
    assert_eq!(backlog(&queue).await, (0, 0, 0), "acks flushed");
}

#[tokio::test(start_paused = true)]
async fn buffered_acks_are_flushed_before_the_drain_exit() {
    let queue = queue_with(Duration::from_secs(30), 5);
    publish(&queue, &["a", "b", "c", "d", "e"]).await;
    let handler = from_fn(|_task: Task| sleep(Duration::from_secs(1)));
    let config = WorkerConfig {
        concurrency: 2,
        ack_batch: 1000,
        ack_interval: Duration::from_secs(3600),
        ..WorkerConfig::default()
    };
    let (worker, events) = worker(&queue, handler, config);
    let start = Instant::now();

    assert_eq!(
        worker.run(Shutdown::new()).await.unwrap(),
        WorkerExit::Drained
    );

    assert!(
        start.elapsed() < Duration::from_secs(10),
        "drained without waiting for the ack interval, took {:?}",
        start.elapsed()
    );
    assert_eq!(events.attempts().len(), 5, "no item ran twice");
    assert_eq!(backlog(&queue).await, (0, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn the_lease_keeper_holds_an_item_for_ten_leases() {
    let lease = Duration::from_secs(3);
    let queue = queue_with(lease, 5);
    publish(&queue, &["long"]).await;
    let handler = from_fn(move |_task: Task| sleep(lease * 10));
    let config = WorkerConfig {
        lease,
        ..WorkerConfig::default()
    };
    let (worker, events) = worker(&queue, handler, config);
    let run = tokio::spawn(worker.run(Shutdown::new()));
    let start = Instant::now();
    sleep(Duration::from_millis(100)).await;
    assert_eq!(
        backlog(&queue).await,
        (0, 1, 0),
        "the worker holds the item"
    );

    // Another worker polls the queue the whole time the task runs.
    let mut stolen = Vec::new();
    while !run.is_finished() && start.elapsed() < lease * 12 {
        stolen.extend(queue.pull(1, Duration::from_millis(500)).await.unwrap());
    }

    assert!(stolen.is_empty(), "redelivered while running: {stolen:?}");
    assert_eq!(run.await.unwrap().unwrap(), WorkerExit::Drained);
    let attempts = events.attempts();
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert_eq!(attempts[0].attempt, 1);
    assert_eq!(attempts[0].settlement, Settlement::Acked);
    assert!(attempts[0].elapsed >= lease * 10);
    assert_eq!(backlog(&queue).await, (0, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn an_item_held_past_max_lease_age_is_redelivered() {
    let lease = Duration::from_secs(3);
    let max_age = Duration::from_secs(10);
    let queue = queue_with(lease, 5);
    publish(&queue, &["stuck"]).await;
    let handler = from_fn(|_task: Task| sleep(Duration::from_secs(60)));
    let config = WorkerConfig {
        lease,
        max_lease_age: max_age,
        ..WorkerConfig::default()
    };
    let (worker, events) = worker(&queue, handler, config);
    let run = tokio::spawn(worker.run(Shutdown::new()));
    let start = Instant::now();
    sleep(Duration::from_millis(100)).await;
    assert_eq!(
        backlog(&queue).await,
        (0, 1, 0),
        "the worker holds the item"
    );

    let redelivered = loop {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "never redelivered"
        );
        if let Some(delivery) = queue.pull(1, Duration::from_secs(1)).await.unwrap().pop() {
            break delivery;
        }
    };

    let taken_at = start.elapsed();
    assert_eq!(redelivered.attempt, 2);
    assert!(
        taken_at >= max_age && taken_at <= max_age + lease,
        "redelivered after {taken_at:?}, expected within [{max_age:?}, {:?}]",
        max_age + lease
    );
    queue.ack(&[redelivered.token]).await.unwrap();
    assert_eq!(run.await.unwrap().unwrap(), WorkerExit::Drained);
    assert_eq!(events.attempts().len(), 1);
    assert_eq!(backlog(&queue).await, (0, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn failures_retry_with_exponential_backoff_then_dead_letter() {
    let queue = queue_with(Duration::from_secs(30), 3);
    publish(&queue, &["bad"]).await;
    let times = Arc::new(Mutex::new(Vec::new()));
    let handler = from_fn({
        let times = times.clone();
        move |_task: Task| {
            times.lock().unwrap().push(Instant::now());
            async { Err::<(), _>("boom") }
        }
    });
    let config = WorkerConfig {
        max_attempts: 3,
        backoff: Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(3600),
            factor: 2.0,
            // Exact delays, so the gaps can be checked to the millisecond.
            jitter: 0.0,
        },
        ..WorkerConfig::default()
    };
    let (worker, events) = worker(&queue, handler, config);

    assert_eq!(
        worker.run(Shutdown::new()).await.unwrap(),
        WorkerExit::Drained
    );

    let times = times.lock().unwrap().clone();
    assert_eq!(times.len(), 3, "three attempts");
    for (gap, backoff) in times.windows(2).map(|w| w[1] - w[0]).zip([1, 2]) {
        let backoff = Duration::from_secs(backoff);
        assert!(
            gap >= backoff && gap < backoff + Duration::from_millis(50),
            "gap {gap:?}, backoff {backoff:?}"
        );
    }
    assert_eq!(
        events.settlements(),
        [
            Settlement::Retrying {
                delay: Duration::from_secs(1)
            },
            Settlement::Retrying {
                delay: Duration::from_secs(2)
            },
            Settlement::DeadLettered,
        ]
    );
    let dead = queue.dead_items();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].item.payload, "bad");
    assert_eq!(dead[0].attempts, 3);
    assert!(dead[0].reason.contains("boom"), "{}", dead[0].reason);
    assert!(dead[0].reason.contains("attempt 3"), "{}", dead[0].reason);
    assert_eq!(backlog(&queue).await, (0, 0, 1));
}

#[tokio::test(start_paused = true)]
async fn a_fatal_outcome_dead_letters_at_once() {
    let queue = queue_with(Duration::from_secs(30), 5);
    publish(&queue, &["unparsable"]).await;
    let calls = Arc::new(AtomicU32::new(0));
    let handler = from_fn({
        let calls = calls.clone();
        move |_task: Task| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { TaskOutcome::fatal("cannot parse the item") }
        }
    });
    let (worker, events) = worker(&queue, handler, WorkerConfig::default());
    let start = Instant::now();

    assert_eq!(
        worker.run(Shutdown::new()).await.unwrap(),
        WorkerExit::Drained
    );

    assert_eq!(calls.load(Ordering::SeqCst), 1, "never retried");
    let attempts = events.attempts();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].settlement, Settlement::DeadLettered);
    assert_eq!(
        attempts[0].at, start,
        "dead-lettered without a backoff wait"
    );
    let dead = queue.dead_items();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attempts, 1);
    assert!(
        dead[0].reason.contains("cannot parse the item"),
        "{}",
        dead[0].reason
    );
    assert_eq!(backlog(&queue).await, (0, 0, 1));
}

#[tokio::test(start_paused = true)]
async fn an_attempt_over_the_task_timeout_fails_and_is_retried() {
    let queue = queue_with(Duration::from_secs(30), 5);
    publish(&queue, &["slow once"]).await;
    let handler = from_fn(|task: Task| async move {
        if task.attempt == 1 {
            sleep(Duration::from_secs(3600)).await;
        }
    });
    let config = WorkerConfig {
        task_timeout: Some(Duration::from_secs(1)),
        ..WorkerConfig::default()
    };
    let (worker, events) = worker(&queue, handler, config);

    assert_eq!(
        worker.run(Shutdown::new()).await.unwrap(),
        WorkerExit::Drained
    );

    let attempts = events.attempts();
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(attempts[0].outcome.kind, OutcomeKind::Failed);
    let reason = attempts[0].outcome.reason.as_deref().unwrap_or_default();
    assert!(reason.contains("timed out"), "{reason}");
    assert!(attempts[0].elapsed >= Duration::from_secs(1));
    assert!(attempts[0].elapsed < Duration::from_secs(2));
    assert!(matches!(
        attempts[0].settlement,
        Settlement::Retrying { .. }
    ));
    assert_eq!(
        (attempts[1].attempt, attempts[1].settlement),
        (2, Settlement::Acked)
    );
    assert_eq!(backlog(&queue).await, (0, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_panicking_handler_is_retried_and_the_worker_lives() {
    let queue = queue_with(Duration::from_secs(30), 5);
    publish(&queue, &["fragile"]).await;
    let handler = from_fn(|task: Task| async move {
        if task.attempt == 1 {
            panic!("kaboom");
        }
    });
    let (worker, events) = worker(&queue, handler, WorkerConfig::default());

    assert_eq!(
        worker.run(Shutdown::new()).await.unwrap(),
        WorkerExit::Drained
    );

    let attempts = events.attempts();
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    let reason = attempts[0].outcome.reason.as_deref().unwrap_or_default();
    assert!(
        reason.contains("panicked") && reason.contains("kaboom"),
        "{reason}"
    );
    assert!(matches!(
        attempts[0].settlement,
        Settlement::Retrying { .. }
    ));
    assert_eq!(
        (attempts[1].attempt, attempts[1].settlement),
        (2, Settlement::Acked)
    );
    assert_eq!(backlog(&queue).await, (0, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn stop_lets_short_tasks_finish_and_pulls_nothing_more() {
    let queue = queue_with(Duration::from_secs(30), 5);
    publish(&queue, &["1", "3"]).await;
    let started = Arc::new(AtomicUsize::new(0));
    let handler = from_fn({
        let started = started.clone();
        move |task: Task| {
            started.fetch_add(1, Ordering::SeqCst);
            let secs: u64 = item(&task).parse().unwrap();
            sleep(Duration::from_secs(secs))
        }
    });
    // Both items fill both slots; when "1" ends, a slot is free while "3" runs.
    let config = WorkerConfig {
        concurrency: 2,
        grace: Duration::from_secs(10),
        ..WorkerConfig::default()
    };
    let (worker, events) = worker(&queue, handler, config);
    let shutdown = Shutdown::new();
    let run = tokio::spawn(worker.run(shutdown.clone()));
    sleep(Duration::from_millis(500)).await;
    assert_eq!(started.load(Ordering::SeqCst), 2);

    shutdown.stop();
    let stopped_at = Instant::now();
    publish(&queue, &["late"]).await;
    let exit = run.await.unwrap().unwrap();

    assert_eq!(exit, WorkerExit::Stopped { interrupted: 0 });
    assert!(
        stopped_at.elapsed() < Duration::from_secs(3),
        "returned once the tasks ended, not at the end of the grace"
    );
    assert_eq!(events.settlements(), [Settlement::Acked, Settlement::Acked]);
    assert_eq!(
        backlog(&queue).await,
        (1, 0, 0),
        "acks flushed; `late` ready"
    );
    let late = queue.pull(1, Duration::ZERO).await.unwrap();
    assert_eq!(late[0].item.payload, "late");
    assert_eq!(late[0].attempt, 1, "the stopped worker never pulled it");
}

#[tokio::test(start_paused = true)]
async fn stop_interrupts_tasks_longer_than_grace_and_gives_their_items_back() {
    let queue = queue_with(Duration::from_secs(30), 5);
    publish(&queue, &["a", "b"]).await;
    let dropped = Arc::new(AtomicUsize::new(0));
    let handler = from_fn({
        let dropped = dropped.clone();
        move |_task: Task| {
            let guard = DropFlag(dropped.clone());
            async move {
                sleep(Duration::from_secs(3600)).await;
                drop(guard);
            }
        }
    });
    let grace = Duration::from_secs(5);
    let config = WorkerConfig {
        concurrency: 2,
        grace,
        ..WorkerConfig::default()
    };
    let (worker, events) = worker(&queue, handler, config);
    let shutdown = Shutdown::new();
    let run = tokio::spawn(worker.run(shutdown.clone()));
    // Long after the loop last woke: the grace must count from the signal.
    sleep(Duration::from_secs(8)).await;
    assert_eq!(backlog(&queue).await, (0, 2, 0));

    shutdown.stop();
    let stopped_at = Instant::now();
    let exit = run.await.unwrap().unwrap();

    assert_eq!(exit, WorkerExit::Stopped { interrupted: 2 });
    assert_eq!(
        stopped_at.elapsed(),
        grace,
        "cut short exactly at the grace"
    );
    assert_eq!(dropped.load(Ordering::SeqCst), 2, "the tasks were dropped");
    assert!(events.attempts().is_empty());
    assert_eq!(
        backlog(&queue).await,
        (2, 0, 0),
        "given back at once, not after the 30 s lease"
    );
    let again = queue.pull(2, Duration::ZERO).await.unwrap();
    assert_eq!(again.len(), 2);
    // Handing an item back costs no attempt (contract 8).
    assert!(again.iter().all(|d| d.attempt == 1));
}

#[tokio::test(start_paused = true)]
async fn abort_cuts_the_grace_short() {
    let queue = queue_with(Duration::from_secs(30), 5);
    publish(&queue, &["a", "b"]).await;
    let handler = from_fn(|_task: Task| sleep(Duration::from_secs(3600)));
    let config = WorkerConfig {
        concurrency: 2,
        grace: Duration::from_secs(600),
        ..WorkerConfig::default()
    };
    let (worker, _events) = worker(&queue, handler, config);
    let shutdown = Shutdown::new();
    let run = tokio::spawn(worker.run(shutdown.clone()));
    sleep(Duration::from_secs(1)).await;
    shutdown.stop();
    sleep(Duration::from_secs(1)).await;
    assert!(!run.is_finished(), "still in its grace period");

    shutdown.abort();
    let aborted_at = Instant::now();
    let exit = run.await.unwrap().unwrap();

    assert_eq!(exit, WorkerExit::Stopped { interrupted: 2 });
    assert_eq!(aborted_at.elapsed(), Duration::ZERO);
    assert_eq!(backlog(&queue).await, (2, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn an_idle_worker_waits_for_items_in_flight_elsewhere() {
    let queue = queue_with(Duration::from_secs(60), 5);
    publish(&queue, &["elsewhere"]).await;
    let held = queue.pull(1, Duration::ZERO).await.unwrap().pop().unwrap();
    let (worker, events) = worker(
        &queue,
        from_fn(|_task: Task| async {}),
        WorkerConfig::default(),
    );
    let run = tokio::spawn(worker.run(Shutdown::new()));

    sleep(Duration::from_secs(20)).await;
    assert!(!run.is_finished(), "returned while an item was in flight");

    queue.ack(&[held.token]).await.unwrap();
    let acked_at = Instant::now();
    assert_eq!(run.await.unwrap().unwrap(), WorkerExit::Drained);
    assert!(
        acked_at.elapsed() <= WorkerConfig::default().poll,
        "drained {:?} after the ack",
        acked_at.elapsed()
    );
    assert!(events.attempts().is_empty());
}

#[tokio::test(start_paused = true)]
async fn two_workers_over_one_item_end_right_after_its_ack() {
    let queue = queue_with(Duration::from_secs(30), 5);
    publish(&queue, &["only"]).await;
    let task_time = Duration::from_millis(10);
    let handler = || from_fn(move |_task: Task| async move { sleep(task_time).await });
    let (first, _) = worker(&queue, handler(), WorkerConfig::default());
    let (second, _) = worker(&queue, handler(), WorkerConfig::default());
    let start = Instant::now();
    let first = tokio::spawn(first.run(Shutdown::new()));
    let second = tokio::spawn(second.run(Shutdown::new()));
    assert_eq!(first.await.unwrap().unwrap(), WorkerExit::Drained);
    assert_eq!(second.await.unwrap().unwrap(), WorkerExit::Drained);
    assert!(
        start.elapsed() < task_time + Duration::from_millis(50),
        "two workers over one {task_time:?} item took {:?}: the idle one waited out its poll",
        start.elapsed()
    );
}

/// Real processes: a normal clock.
#[tokio::test]
async fn a_command_template_acks_exit_0_and_retries_other_exit_codes() {
    let queue = queue_with(Duration::from_secs(30), 2);
    publish(&queue, &["ok", "nope"]).await;
    let handler = CommandTemplate::new(["test", "{}", "=", "ok"]).unwrap();
    let config = WorkerConfig {
        concurrency: 2,
        max_attempts: 2,
        backoff: Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(10),
            factor: 1.0,
            jitter: 0.0,
        },
        poll: Duration::from_millis(50),
        ..WorkerConfig::default()
    };
    let (worker, events) = worker(&queue, handler, config);

    let exit = tokio::time::timeout(Duration::from_secs(30), worker.run(Shutdown::new()))
        .await
        .expect("the worker drained in time")
        .unwrap();

    assert_eq!(exit, WorkerExit::Drained);
    let mut seen: Vec<_> = events
        .attempts()
        .into_iter()
        .map(|a| (a.item, a.attempt, a.outcome.exit_code, a.settlement))
        .collect();
    seen.sort_by_key(|(item, attempt, ..)| (item.clone(), *attempt));
    let retry = Settlement::Retrying {
        delay: Duration::from_millis(10),
    };
    assert_eq!(
        seen,
        [
            ("nope".to_string(), 1, Some(1), retry),
            ("nope".to_string(), 2, Some(1), Settlement::DeadLettered),
            ("ok".to_string(), 1, Some(0), Settlement::Acked),
        ]
    );
    let dead = queue.dead_items();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].item.payload, "nope");
    assert!(dead[0].reason.contains("exit code 1"), "{}", dead[0].reason);
    assert_eq!(backlog(&queue).await, (0, 0, 1));
}

#[tokio::test(start_paused = true)]
async fn items_that_fail_together_are_retried_spread_over_the_jitter() {
    let queue = queue_with(Duration::from_secs(60), 3);
    let names: Vec<String> = (0..20).map(|i| format!("item-{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    publish(&queue, &names).await;
    let start = Instant::now();
    // Each item fails once, then succeeds; the retry times are recorded.
    let retried = Arc::new(Mutex::new(Vec::new()));
    let handler = from_fn({
        let retried = retried.clone();
        move |task: Task| {
            let first = task.attempt == 1;
            if !first {
                retried.lock().unwrap().push(Instant::now() - start);
            }
            async move {
                if first {
                    Err::<(), _>("downstream is down")
                } else {
                    Ok(())
                }
            }
        }
    });
    let config = WorkerConfig {
        concurrency: 20,
        backoff: Backoff {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(60),
            factor: 2.0,
            jitter: 0.5,
        },
        ..WorkerConfig::default()
    };
    let (worker, _events) = worker(&queue, handler, config);
    assert_eq!(
        worker.run(Shutdown::new()).await.unwrap(),
        WorkerExit::Drained
    );
    let retried = retried.lock().unwrap().clone();
    assert_eq!(retried.len(), 20);
    // Within [5 s, 10 s] (plus the worker's poll), and not all at once.
    for at in &retried {
        assert!(
            *at >= Duration::from_secs(5) && *at <= Duration::from_millis(11_000),
            "retried at {at:?}"
        );
    }
    let spread = *retried.iter().max().unwrap() - *retried.iter().min().unwrap();
    assert!(
        spread >= Duration::from_secs(2),
        "retries spread over only {spread:?}"
    );
}
