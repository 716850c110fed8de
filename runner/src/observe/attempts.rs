//! What a worker's attempts did, counted on the hot path without sharing
//! a cache line between threads: every thread that reports an attempt gets
//! a slab of its own and is its only writer (a plain load and store, no
//! locked instruction), and a scrape adds the slabs up.
//!
//! Why not prometheus-client's `Counter`, `Gauge` and `Histogram`: each is
//! an atomic of its own (the histogram a mutex), bumped from both of the
//! runtime's threads eight times an item, so the cache lines travel
//! between cores on every item. On the no-op loop at 2.2 M items/s that
//! cost 6.6 % of the throughput; with these slabs 2.8 % is left, the
//! calls themselves (docs/BENCHMARKS.md, "Worker metrics on against off",
//! says where the rest would go).

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

use super::metrics::encode_one;

/// Upper bounds of the attempt-duration buckets, in nanoseconds: 1 ms to
/// about 18 h, a factor of 4 apart (no-op tasks to long renders), then +Inf.
const BOUNDS: [u64; 14] = {
    let mut bounds = [0u64; 14];
    let mut i = 0;
    let mut bound = 1_000_000u64;
    while i < 14 {
        bounds[i] = bound;
        bound *= 4;
        i += 1;
    }
    bounds
};

/// What an attempt came to, for [`AttemptCounts::finished`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Ending {
    Done,
    Failed,
    Dead,
    Unsettled,
}

/// One thread's counts. Aligned to two cache lines so no two threads'
/// slabs share one (or an adjacent-line prefetch pair).
#[repr(align(128))]
#[derive(Debug, Default)]
struct Slab {
    started: AtomicU64,
    ended: AtomicU64,
    done: AtomicU64,
    failed: AtomicU64,
    dead: AtomicU64,
    unsettled: AtomicU64,
    handed_back: AtomicU64,
    sum_nanos: AtomicU64,
    buckets: [AtomicU64; BOUNDS.len() + 1],
}

/// Slabs of one [`AttemptCounts`]: one per thread that reports, the last
/// shared by any threads past the others (a runtime has a few).
const SLABS: usize = 64;
const SHARED: usize = SLABS - 1;

/// A slab and whether this thread is its only writer.
struct Mine<'a> {
    slab: &'a Slab,
    alone: bool,
}

impl Mine<'_> {
    /// Add `n`: a plain load and store where this thread is the slab's
    /// only writer, an atomic add on the shared one.
    #[inline]
    fn bump(&self, counter: impl Fn(&Slab) -> &AtomicU64, n: u64) {
        let counter = counter(self.slab);
        if self.alone {
            counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
        } else {
            counter.fetch_add(n, Relaxed);
        }
    }
}

/// Counts of one process's attempts, for its `/metrics` page.
#[derive(Debug)]
pub(crate) struct AttemptCounts {
    /// Which counts a thread's cached slab number belongs to.
    id: usize,
    slots: usize,
    /// Slab numbers handed out so far.
    taken: AtomicUsize,
    /// Made up front (64 × 256 bytes): finding one's slab is then an index.
    slabs: Box<[Slab]>,
}

thread_local! {
    /// This thread's slab: (the [`AttemptCounts`]' id, the slab's number).
    /// Plain data with no destructor, so reading it is one load.
    static MINE: Cell<(usize, usize)> = const { Cell::new((usize::MAX, 0)) };
}

impl AttemptCounts {
    /// Counts for workers with `slots` task slots in all.
    pub(crate) fn new(slots: usize) -> Arc<Self> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        Arc::new(Self {
            id: NEXT.fetch_add(1, Relaxed),
            slots,
            taken: AtomicUsize::new(0),
            slabs: (0..SLABS).map(|_| Slab::default()).collect(),
        })
    }

    /// Count on this thread's slab, given it on the thread's first report.
    #[inline]
    fn with(&self, count: impl FnOnce(&Mine<'_>)) {
        let (id, mut n) = MINE.get();
        if id != self.id {
            n = self.taken.fetch_add(1, Relaxed).min(SHARED);
            MINE.set((self.id, n));
        }
        count(&Mine {
            slab: &self.slabs[n],
            alone: n != SHARED,
        });
    }

    #[inline]
    pub(crate) fn started(&self) {
        self.with(|m| m.bump(|s| &s.started, 1));
    }

    #[inline]
    pub(crate) fn ended(&self) {
        self.with(|m| m.bump(|s| &s.ended, 1));
    }

    pub(crate) fn handed_back(&self, count: u64) {
        self.with(|m| m.bump(|s| &s.handed_back, count));
    }

    #[inline]
    pub(crate) fn finished(&self, ending: Ending, elapsed: Duration) {
        let nanos = elapsed
            .as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(elapsed.subsec_nanos()));
        let bucket = BOUNDS.partition_point(|&bound| bound < nanos);
        self.with(|m| {
            m.bump(
                |s| match ending {
                    Ending::Done => &s.done,
                    Ending::Failed => &s.failed,
                    Ending::Dead => &s.dead,
                    Ending::Unsettled => &s.unsettled,
                },
                1,
            );
            m.bump(|s| &s.sum_nanos, nanos);
            m.bump(|s| &s.buckets[bucket], 1);
        });
    }

    /// Every slab added up: a scrape's reading. Each thread's counts are
    /// read one by one, so a reading can hold an attempt's end and not yet
    /// its duration; the next reading agrees.
    fn total(&self) -> Slab {
        let sum = Slab::default();
        for slab in self.slabs.iter() {
            let add = |to: &AtomicU64, from: &AtomicU64| {
                to.fetch_add(from.load(Relaxed), Relaxed);
            };
            add(&sum.started, &slab.started);
            add(&sum.ended, &slab.ended);
            add(&sum.done, &slab.done);
            add(&sum.failed, &slab.failed);
            add(&sum.dead, &slab.dead);
            add(&sum.unsettled, &slab.unsettled);
            add(&sum.handed_back, &slab.handed_back);
            add(&sum.sum_nanos, &slab.sum_nanos);
            for (to, from) in sum.buckets.iter().zip(&slab.buckets) {
                add(to, from);
            }
        }
        sum
    }
}

impl prometheus_client::collector::Collector for AttemptCounts {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let t = self.total();
        let n = |c: &AtomicU64| c.load(Relaxed);
        let counters = [
            (
                "forloop_items_started",
                "Tasks started on items (attempts begun)",
                n(&t.started),
            ),
            (
                "forloop_items_done",
                "Attempts that succeeded and whose ack the queue took",
                n(&t.done),
            ),
            (
                "forloop_items_failed",
                "Attempts that failed and were put back for a retry",
                n(&t.failed),
            ),
            (
                "forloop_items_dead",
                "Items dead-lettered (last attempt failed, or a fatal exit)",
                n(&t.dead),
            ),
            (
                "forloop_items_unsettled",
                "Attempts that succeeded but whose ack the queue did not take (the item runs again)",
                n(&t.unsettled),
            ),
            (
                "forloop_items_handed_back",
                "Items given back to the queue at no cost in attempts (a stop, another job's items)",
                n(&t.handed_back),
            ),
        ];
        for (name, help, value) in counters {
            encode_one(&mut encoder, name, help, None, ConstCounter::new(value))?;
        }
        let buckets: Vec<(f64, u64)> = BOUNDS
            .iter()
            .map(|&b| b as f64 / 1e9)
            .chain(std::iter::once(f64::INFINITY))
            .zip(t.buckets.iter().map(n))
            .collect();
        let count = buckets.iter().map(|(_, c)| c).sum();
        encoder
            .encode_descriptor(
                "forloop_task_duration",
                "How long each attempt ran",
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?
            .encode_histogram::<NoLabelSet>(n(&t.sum_nanos) as f64 / 1e9, count, &buckets, None)?;
        // Started and not yet ended: a task counted on one thread and ended
        // on another is in both sums.
        let busy = n(&t.started).saturating_sub(n(&t.ended));
        let busy = i64::try_from(busy).unwrap_or(i64::MAX);
        let slots = i64::try_from(self.slots).unwrap_or(i64::MAX);
        let gauges = [
            ("forloop_slots_busy", "Task slots running a task now", busy),
            (
                "forloop_slots_free",
                "Task slots free now",
                (slots - busy).max(0),
            ),
        ];
        for (name, help, value) in gauges {
            encode_one(&mut encoder, name, help, None, ConstGauge::new(value))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
    use prometheus_client::registry::Registry;

    /// More threads than slabs share the last one, and nothing is lost.
    #[test]
    fn threads_past_the_slabs_share_the_last_one() {
        let counts = AttemptCounts::new(1);
        std::thread::scope(|scope| {
            for _ in 0..(SLABS + 20) {
                scope.spawn(|| {
                    for _ in 0..100 {
                        counts.started();
                    }
                });
            }
        });
        let text = page(Arc::clone(&counts));
        let want = format!("forloop_items_started_total {}", (SLABS + 20) * 100);
        assert_eq!(line(&text, "forloop_items_started_total"), want);
    }

    fn page(counts: Arc<AttemptCounts>) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(counts));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    }

    fn line<'a>(page: &'a str, name: &str) -> &'a str {
        page.lines()
            .find(|l| l.starts_with(name) && l.as_bytes().get(name.len()) == Some(&b' '))
            .unwrap_or_else(|| panic!("no {name} in\n{page}"))
    }

    /// Counts from several threads add up on a scrape; a task started on
    /// one thread and ended on another leaves no slot busy.
    #[test]
    fn counts_from_many_threads_add_up() {
        let counts = AttemptCounts::new(8);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..1000 {
                        counts.started();
                        counts.finished(Ending::Done, Duration::from_micros(10));
                    }
                    counts.handed_back(2);
                });
                scope.spawn(|| {
                    for _ in 0..1000 {
                        counts.ended();
                    }
                });
            }
        });
        counts.started();
        let text = page(Arc::clone(&counts));
        assert_eq!(
            line(&text, "forloop_items_started_total"),
            "forloop_items_started_total 4001"
        );
        assert_eq!(
            line(&text, "forloop_items_done_total"),
            "forloop_items_done_total 4000"
        );
        assert_eq!(
            line(&text, "forloop_items_handed_back_total"),
            "forloop_items_handed_back_total 8"
        );
        assert_eq!(line(&text, "forloop_slots_busy"), "forloop_slots_busy 1");
        assert_eq!(line(&text, "forloop_slots_free"), "forloop_slots_free 7");
        assert_eq!(
            line(&text, "forloop_task_duration_seconds_count"),
            "forloop_task_duration_seconds_count 4000"
        );
    }

    /// The duration histogram reads on a scrape exactly as the
    /// prometheus-client one it replaces, for the same observations: a
    /// value on a bucket's bound (inclusive), past the last bound (+Inf),
    /// and zero.
    #[test]
    fn durations_read_as_the_client_histogram_does() {
        let counts = AttemptCounts::new(1);
        let theirs = Histogram::new(exponential_buckets(0.001, 4.0, 14));
        let seen = [
            0,
            1_000,
            1_000_001,
            3_999_999,
            4_000_000,
            250_000_000_000_000,
            7,
        ];
        for micros in seen {
            let d = Duration::from_micros(micros);
            counts.finished(Ending::Done, d);
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
        let ours = page(counts);
        let histogram = |text: &str| -> (Vec<String>, f64) {
            let lines = text
                .lines()
                .filter(|l| l.starts_with("forloop_task_duration_seconds"));
            let (sum, rest): (Vec<&str>, Vec<&str>) = lines.partition(|l| l.contains("_sum "));
            let sum = sum[0].rsplit(' ').next().unwrap().parse().unwrap();
            (rest.into_iter().map(String::from).collect(), sum)
        };
        let (our_lines, our_sum) = histogram(&ours);
        let (their_lines, their_sum) = histogram(&expected);
        assert_eq!(our_lines, their_lines);
        // The sums agree to float rounding (ours adds whole nanoseconds).
        assert!(
            (our_sum - their_sum).abs() < 1e-6,
            "{our_sum} against {their_sum}"
        );
    }
}
