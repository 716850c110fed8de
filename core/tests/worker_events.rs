//! What a worker tells its observers besides finished attempts (what
//! metrics are made of): slots taken and freed, items handed back, leases
//! renewed and lost. Paused clock, `MemoryQueue`: every count is exact.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use forloop_core::handler::from_fn;
use forloop_core::worker::{AttemptRecord, Shutdown, WorkerEvents};
use forloop_core::{
    Item, MemoryQueue, QueueConfig, Task, WorkQueue, Worker, WorkerConfig, WorkerExit,
};
use tokio::time::sleep;

#[derive(Default)]
struct Counts {
    finished: AtomicUsize,
    started: AtomicUsize,
    ended: AtomicUsize,
    busiest: AtomicUsize,
    handed_back: AtomicUsize,
    renewed: AtomicUsize,
    lost: AtomicUsize,
}

impl WorkerEvents for Counts {
    fn attempt_finished(&self, _record: &AttemptRecord<'_>) {
        self.finished.fetch_add(1, Ordering::SeqCst);
    }
    fn task_started(&self) {
        let started = self.started.fetch_add(1, Ordering::SeqCst) + 1;
        let busy = started - self.ended.load(Ordering::SeqCst);
        self.busiest.fetch_max(busy, Ordering::SeqCst);
    }
    fn task_ended(&self) {
        self.ended.fetch_add(1, Ordering::SeqCst);
    }
    fn handed_back(&self, count: usize) {
        self.handed_back.fetch_add(count, Ordering::SeqCst);
    }
    fn leases(&self, renewed: usize, lost: usize) {
        self.renewed.fetch_add(renewed, Ordering::SeqCst);
        self.lost.fetch_add(lost, Ordering::SeqCst);
    }
}

impl Counts {
    fn get(&self, counter: &AtomicUsize) -> usize {
        counter.load(Ordering::SeqCst)
    }
}

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
    let counts = Arc::new(Counts::default());
    let config = WorkerConfig {
        lease,
        concurrency: 4,
        ..WorkerConfig::default()
    };
    let exit = Worker::new(Arc::new(queue), Arc::new(handler))
        .with_config(config)
        .with_events(counts.clone())
        .run(Shutdown::new())
        .await
        .unwrap();
    assert_eq!(exit, WorkerExit::Drained);
    assert_eq!(counts.get(&counts.started), 6);
    assert_eq!(counts.get(&counts.ended), 6, "every slot taken is freed");
    assert_eq!(counts.get(&counts.finished), 6);
    assert_eq!(counts.get(&counts.busiest), 4, "never more than the slots");
    // A 30 s task on a 3 s lease, renewed a third before each end.
    assert!(
        counts.get(&counts.renewed) >= 10,
        "renewed {}",
        counts.get(&counts.renewed)
    );
    assert_eq!(counts.get(&counts.lost), 0);
    assert_eq!(counts.get(&counts.handed_back), 0);
}

#[tokio::test(start_paused = true)]
async fn a_stop_past_the_grace_hands_back_what_runs_and_frees_its_slots() {
    let queue = queue_of(&["a", "b", "c", "d"], Duration::from_secs(30)).await;
    let handler = from_fn(|_task: Task| sleep(Duration::from_secs(600)));
    let counts = Arc::new(Counts::default());
    let config = WorkerConfig {
        concurrency: 2,
        grace: Duration::from_secs(1),
        ..WorkerConfig::default()
    };
    let shutdown = Shutdown::new();
    let run = tokio::spawn(
        Worker::new(Arc::new(queue.clone()), Arc::new(handler))
            .with_config(config)
            .with_events(counts.clone())
            .run(shutdown.clone()),
    );
    sleep(Duration::from_secs(5)).await;
    shutdown.stop();
    let exit = run.await.unwrap().unwrap();
    assert_eq!(exit, WorkerExit::Stopped { interrupted: 2 });
    assert_eq!(counts.get(&counts.started), 2);
    assert_eq!(
        counts.get(&counts.ended),
        2,
        "interrupted tasks free their slots"
    );
    assert_eq!(counts.get(&counts.handed_back), 2);
    assert_eq!(counts.get(&counts.finished), 0);
    let backlog = queue.backlog().await.unwrap();
    assert_eq!(backlog.ready.value(), Some(4), "all four back in the queue");
}
