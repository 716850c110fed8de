//! What a process's workers did with their attempts, read from each
//! worker's own counts ([`WorkerCounts`], kept by its loop as it goes) and
//! added up at each scrape: nothing is counted here, and nothing on the
//! hot path knows a metrics page exists.
//!
//! Why not prometheus-client's `Counter`, `Gauge` and `Histogram` bumped
//! through the worker's events: each is an atomic of its own (the
//! histogram a mutex), bumped from both of the runtime's threads eight
//! times an item, so cache lines travelled between cores on every item
//! (6.6 % of the no-op loop's throughput); per-thread slabs behind the
//! events still cost 2.8 %, the calls themselves (docs/BENCHMARKS.md,
//! "Worker metrics on against off").

use std::sync::{Arc, Mutex};

use forloop_core::worker::{CountsReading, DURATION_BOUNDS, WorkerCounts};
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

use super::metrics::encode_one;

/// The counts of every worker a process watches, for its `/metrics` page.
#[derive(Debug, Default)]
pub(crate) struct Attempts {
    workers: Mutex<Vec<Arc<WorkerCounts>>>,
}

impl Attempts {
    /// Add `counts` (one worker's, from `Worker::counts`) to the page.
    pub(crate) fn watch(&self, counts: Arc<WorkerCounts>) {
        self.workers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(counts);
    }

    /// Every watched worker's reading added up.
    fn total(&self) -> CountsReading {
        let workers = self
            .workers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut total = CountsReading::default();
        for counts in workers.iter() {
            total += &counts.read();
        }
        total
    }
}

impl prometheus_client::collector::Collector for Attempts {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let t = self.total();
        let counters = [
            (
                "forloop_items_started",
                "Tasks started on items (attempts begun)",
                t.started,
            ),
            (
                "forloop_items_done",
                "Attempts that succeeded and whose ack the queue took",
                t.done,
            ),
            (
                "forloop_items_failed",
                "Attempts that failed and were put back for a retry",
                t.failed,
            ),
            (
                "forloop_items_dead",
                "Items dead-lettered (last attempt failed, or a fatal exit)",
                t.dead,
            ),
            (
                "forloop_items_unsettled",
                "Attempts that succeeded but whose ack the queue did not take (the item runs again)",
                t.unsettled,
            ),
            (
                "forloop_items_handed_back",
                "Items given back to the queue at no cost in attempts (a stop, another job's items)",
                t.handed_back,
            ),
            (
                "forloop_lease_renewals",
                "Lease renewals the queue took",
                t.renewals,
            ),
            (
                "forloop_leases_lost",
                "Leases lost while their task ran (found gone at renewal, or run out unrenewed)",
                t.leases_lost,
            ),
        ];
        for (name, help, value) in counters {
            encode_one(&mut encoder, name, help, None, ConstCounter::new(value))?;
        }
        let buckets: Vec<(f64, u64)> = DURATION_BOUNDS
            .iter()
            .map(|bound| bound.as_secs_f64())
            .chain(std::iter::once(f64::INFINITY))
            .zip(t.durations)
            .collect();
        let count = buckets.iter().map(|(_, c)| c).sum();
        encoder
            .encode_descriptor(
                "forloop_task_duration",
                "How long each attempt ran",
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?
            .encode_histogram::<NoLabelSet>(t.duration_nanos as f64 / 1e9, count, &buckets, None)?;
        let gauge = |n: u64| ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX));
        let gauges = [
            (
                "forloop_slots_busy",
                "Task slots running a task now",
                t.busy,
            ),
            (
                "forloop_slots_free",
                "Task slots free now",
                t.slots.saturating_sub(t.busy),
            ),
        ];
        for (name, help, value) in gauges {
            encode_one(&mut encoder, name, help, None, gauge(value))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use forloop_core::handler::from_fn;
    use forloop_core::worker::{AttemptRecord, Shutdown, WorkerEvents};
    use forloop_core::{Item, MemoryQueue, QueueConfig, Task, WorkQueue, Worker, WorkerConfig};
    use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
    use prometheus_client::registry::Registry;

    use super::*;

    fn page(attempts: &Arc<Attempts>) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Arc::clone(attempts)));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    }

    fn line<'a>(page: &'a str, name: &str) -> &'a str {
        page.lines()
            .find(|l| l.starts_with(name) && l.as_bytes().get(name.len()) == Some(&b' '))
            .unwrap_or_else(|| panic!("no {name} in\n{page}"))
    }

    /// A queue holding `items`, each a number of milliseconds its task
    /// sleeps.
    async fn sleepers(items: &[u64]) -> MemoryQueue {
        let queue = MemoryQueue::new(QueueConfig::new("attempts"));
        let batch = items.iter().map(|ms| Item::new(ms.to_string())).collect();
        queue.publish(batch).await.unwrap();
        queue
    }

    /// A worker with `slots` slots on `queue`, whose tasks sleep.
    fn worker(queue: &MemoryQueue, slots: usize) -> Worker {
        let handler = from_fn(|task: Task| async move {
            let ms: u64 = std::str::from_utf8(&task.item.payload)
                .unwrap()
                .parse()
                .unwrap();
            tokio::time::sleep(Duration::from_millis(ms)).await;
        });
        Worker::new(Arc::new(queue.clone()), Arc::new(handler)).with_config(WorkerConfig {
            concurrency: slots,
            // A task may run past the last bucket's bound (18.6 h).
            max_lease_age: Duration::from_secs(100 * 3600),
            ..WorkerConfig::default()
        })
    }

    /// Two workers of one process on one page: while they run, the busy
    /// and free slots are both workers' together; at the end every count is
    /// the sum of both, and every slot is free.
    #[tokio::test(start_paused = true)]
    async fn the_page_adds_up_every_watched_worker() {
        let queue = sleepers(&[10_000; 4]).await;
        let attempts = Arc::new(Attempts::default());
        let mut runs = Vec::new();
        for _ in 0..2 {
            let worker = worker(&queue, 3);
            attempts.watch(worker.counts());
            runs.push(tokio::spawn(worker.run(Shutdown::new())));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let text = page(&attempts);
        assert_eq!(line(&text, "forloop_slots_busy"), "forloop_slots_busy 4");
        assert_eq!(line(&text, "forloop_slots_free"), "forloop_slots_free 2");
        assert_eq!(
            line(&text, "forloop_items_started_total"),
            "forloop_items_started_total 4"
        );
        for run in runs {
            run.await.unwrap().unwrap();
        }
        let text = page(&attempts);
        for (name, want) in [
            ("forloop_items_started_total", 4),
            ("forloop_items_done_total", 4),
            ("forloop_items_failed_total", 0),
            ("forloop_task_duration_seconds_count", 4),
            ("forloop_slots_busy", 0),
            ("forloop_slots_free", 6),
        ] {
            assert_eq!(line(&text, name), format!("{name} {want}"));
        }
    }

    /// The durations the worker reported, one by one.
    #[derive(Default)]
    struct Elapsed(Mutex<Vec<Duration>>);

    impl WorkerEvents for Elapsed {
        fn attempt_finished(&self, record: &AttemptRecord<'_>) {
            self.0.lock().unwrap().push(record.elapsed);
        }
    }

    /// The duration histogram reads on a scrape exactly as the
    /// prometheus-client one it replaces, fed the same attempts: a run on a
    /// bucket's bound (inclusive), between bounds, past the last bound
    /// (+Inf), and zero.
    #[tokio::test(start_paused = true)]
    async fn durations_read_as_the_client_histogram_does() {
        let queue = sleepers(&[0, 1, 2, 4, 5, 1_000, 70_000_000]).await;
        let attempts = Arc::new(Attempts::default());
        let elapsed = Arc::new(Elapsed::default());
        let worker = worker(&queue, 8).with_events(elapsed.clone());
        attempts.watch(worker.counts());
        worker.run(Shutdown::new()).await.unwrap();

        let theirs = Histogram::new(exponential_buckets(0.001, 4.0, 14));
        for d in elapsed.0.lock().unwrap().iter() {
            theirs.observe(d.as_secs_f64());
        }
        let mut registry = Registry::default();
        registry.register_with_unit(
            "forloop_task_duration",
            "How long each attempt ran",
            Unit::Seconds,
            theirs,
        );
        let mut expected = String::new();
        prometheus_client::encoding::text::encode(&mut expected, &registry).unwrap();
        let histogram = |text: &str| -> (Vec<String>, f64) {
            let lines = text
                .lines()
                .filter(|l| l.starts_with("forloop_task_duration_seconds"));
            let (sum, rest): (Vec<&str>, Vec<&str>) = lines.partition(|l| l.contains("_sum "));
            let sum = sum[0].rsplit(' ').next().unwrap().parse().unwrap();
            (rest.into_iter().map(String::from).collect(), sum)
        };
        let (our_lines, our_sum) = histogram(&page(&attempts));
        let (their_lines, their_sum) = histogram(&expected);
        assert_eq!(our_lines, their_lines);
        assert!(
            our_lines.iter().any(|l| l.contains("le=\"+Inf\"} 7")),
            "{our_lines:?}"
        );
        // The sums agree to float rounding (ours adds whole nanoseconds).
        assert!(
            (our_sum - their_sum).abs() < 1e-6 * their_sum.max(1.0),
            "{our_sum} against {their_sum}"
        );
    }
}
