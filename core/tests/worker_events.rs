//! What a worker's loop counts of itself besides finished attempts (what
//! metrics are made of, `Worker::counts`): slots taken and freed, items
//! handed back, leases renewed and lost. Paused clock, `MemoryQueue`:
//! every count is exact.

use std::sync::Arc;
use std::time::Duration;

use forloop_core::handler::from_fn;
use forloop_core::worker::Shutdown;
use forloop_core::{
    Item, LeaseReport, LeaseToken, MemoryQueue, QueueConfig, QueueDecorator, QueueError, Task,
    WorkQueue, Worker, WorkerConfig, WorkerExit,
};
use tokio::time::sleep;

async fn queue_of(items: &[&str], lease: Duration) -> MemoryQueue {
    let queue = MemoryQueue::new(QueueConfig::new("events").with_lease(lease));
    let batch = items.iter().map(|i| Item::new(i.to_string())).collect();
    queue.publish(batch).await.unwrap();
    queue
}

#[tokio::test(start_paused = true)]
async fn every_slot_taken_is_freed_and_long_tasks_have_their_leases_renewed() {
    let lease = Duration::from_secs(3);
    let queue = queue_of(&["long", "a", "b", "c", "d", "e"], lease).await;
    let handler = from_fn(|task: Task| async move {
        let long = &*task.item.payload == b"long";
        sleep(Duration::from_secs(if long { 30 } else { 1 })).await;
    });
    let config = WorkerConfig {
        lease,
        concurrency: 4,
        ..WorkerConfig::default()
    };
    let worker = Worker::new(Arc::new(queue), Arc::new(handler)).with_config(config);
    let counts = worker.counts();
    let run = tokio::spawn(worker.run(Shutdown::new()));
    sleep(Duration::from_millis(500)).await;
    let running = counts.read();
    assert_eq!(
        (running.busy, running.slots, running.started),
        (4, 4, 4),
        "four slots, all taken"
    );
    sleep(Duration::from_millis(1000)).await;
    let later = counts.read();
    assert_eq!(
        (later.busy, later.started, later.done),
        (3, 6, 3),
        "never more than the slots: the last two started as the first three ended"
    );
    assert_eq!(run.await.unwrap().unwrap(), WorkerExit::Drained);
    let end = counts.read();
    assert_eq!(end.started, 6);
    assert_eq!(end.done, 6);
    assert_eq!((end.busy, end.slots), (0, 4), "every slot taken is freed");
    assert_eq!(end.durations.iter().sum::<u64>(), 6);
    assert_eq!(
        end.duration_nanos, 35_000_000_000,
        "five 1 s tasks, one 30 s"
    );
    // A 30 s task on a 3 s lease, renewed a third before each end.
    assert!(end.renewals >= 10, "renewed {}", end.renewals);
    assert_eq!(end.leases_lost, 0);
    assert_eq!(end.handed_back, 0);
}

#[tokio::test(start_paused = true)]
async fn a_stop_past_the_grace_hands_back_what_runs_and_frees_its_slots() {
    let queue = queue_of(&["a", "b", "c", "d"], Duration::from_secs(30)).await;
    let handler = from_fn(|_task: Task| sleep(Duration::from_secs(600)));
    let config = WorkerConfig {
        concurrency: 2,
        grace: Duration::from_secs(1),
        ..WorkerConfig::default()
    };
    let shutdown = Shutdown::new();
    let worker = Worker::new(Arc::new(queue.clone()), Arc::new(handler)).with_config(config);
    let counts = worker.counts();
    let run = tokio::spawn(worker.run(shutdown.clone()));
    sleep(Duration::from_secs(5)).await;
    shutdown.stop();
    let exit = run.await.unwrap().unwrap();
    assert_eq!(exit, WorkerExit::Stopped { interrupted: 2 });
    let end = counts.read();
    assert_eq!(end.started, 2);
    assert_eq!(end.busy, 0, "interrupted tasks free their slots");
    assert_eq!(end.handed_back, 2);
    assert_eq!(end.done + end.failed + end.dead + end.unsettled, 0);
    let backlog = queue.backlog().await.unwrap();
    assert_eq!(backlog.ready.value(), Some(4), "all four back in the queue");
}

/// A queue whose every lease renewal finds the lease gone (another worker
/// took the item over while this one was cut off).
#[derive(Debug)]
struct Overtaken(MemoryQueue);

#[async_trait::async_trait]
impl QueueDecorator for Overtaken {
    fn inner(&self) -> &dyn WorkQueue {
        &self.0
    }
    async fn extend_lease(
        &self,
        tokens: &[LeaseToken],
        _lease: Duration,
    ) -> Result<LeaseReport, QueueError> {
        Ok(LeaseReport {
            lost: tokens.to_vec(),
        })
    }
}

#[tokio::test(start_paused = true)]
async fn a_lease_found_gone_at_its_renewal_counts_as_lost_and_its_task_stops() {
    let lease = Duration::from_secs(3);
    let queue = queue_of(&["long"], lease).await;
    let handler = from_fn(|_task: Task| sleep(Duration::from_secs(600)));
    let config = WorkerConfig {
        lease,
        ..WorkerConfig::default()
    };
    let shutdown = Shutdown::new();
    let worker = Worker::new(
        forloop_core::Backend::new(Arc::new(Overtaken(queue.clone()))),
        Arc::new(handler),
    )
    .with_config(config);
    let counts = worker.counts();
    let run = tokio::spawn(worker.run(shutdown.clone()));
    sleep(Duration::from_secs(4)).await;
    let seen = counts.read();
    assert_eq!(seen.leases_lost, 1, "{seen:?}");
    assert_eq!(seen.renewals, 0, "{seen:?}");
    assert_eq!(
        (seen.failed, seen.started),
        (1, 2),
        "the task whose lease is gone was stopped, its attempt failed, and the item runs again: {seen:?}"
    );
    shutdown.stop();
    run.await.unwrap().unwrap();
}
