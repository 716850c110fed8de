//! What one worker's loop did, counted by the loop itself as it goes:
//! attempts started and how each ended, how long each ran, items handed
//! back, lease renewals, and the slots busy now. A metrics page (or any
//! watcher) reads them when it is asked ([`Worker::counts`]).
//!
//! Why the loop counts and nobody else: every count below is written from
//! the worker's own future, which only one thread polls at a time, so a
//! count is a plain load and store on memory no other worker writes. The
//! hot path pays no locked instruction, no cache line shared between
//! cores and no call through an observer (docs/BENCHMARKS.md, "Worker
//! metrics on against off", has the figures that led here).
//!
//! [`Worker::counts`]: super::Worker::counts

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use super::Settlement;

/// Upper bounds (inclusive) of the attempt-duration buckets: 1 ms to about
/// 18 h, a factor of 4 apart (no-op tasks to long renders); a last bucket
/// holds the longer ones.
pub const DURATION_BOUNDS: [Duration; 14] = {
    let mut bounds = [Duration::ZERO; 14];
    let mut i = 0;
    let mut millis = 1u64;
    while i < 14 {
        bounds[i] = Duration::from_millis(millis);
        millis *= 4;
        i += 1;
    }
    bounds
};

/// How many duration buckets a reading holds: one per bound, and the last
/// for attempts longer than every bound.
pub const DURATION_BUCKETS: usize = DURATION_BOUNDS.len() + 1;

/// The bucket of an attempt that ran `nanos`: the first whose bound is at
/// least that. The bounds are 1 ms × 4^k, so it is k rounded up, read off
/// the bit length of the whole milliseconds below `nanos`: no search.
#[inline]
fn bucket_of(nanos: u64) -> usize {
    let millis = nanos.saturating_sub(1) / 1_000_000;
    let bits = u64::BITS - millis.leading_zeros();
    (bits.div_ceil(2) as usize).min(DURATION_BUCKETS - 1)
}

/// One worker's counts. Only that worker's loop writes them; anyone may
/// read them at any time ([`read`](Self::read)). Aligned to two cache lines,
/// so no other worker's counts share one.
#[repr(align(128))]
#[derive(Debug, Default)]
pub struct WorkerCounts {
    started: AtomicU64,
    done: AtomicU64,
    failed: AtomicU64,
    dead: AtomicU64,
    unsettled: AtomicU64,
    handed_back: AtomicU64,
    renewals: AtomicU64,
    leases_lost: AtomicU64,
    busy: AtomicU64,
    slots: AtomicU64,
    duration_nanos: AtomicU64,
    durations: [AtomicU64; DURATION_BUCKETS],
}

/// Add `n` to a count only its worker's loop writes: a plain load and
/// store, no locked instruction. The loop is one future, polled by one
/// thread at a time (a move to another thread synchronises), so no add is
/// lost; a reader sees each count whole.
#[inline]
fn bump(count: &AtomicU64, n: u64) {
    count.store(count.load(Relaxed).wrapping_add(n), Relaxed);
}

impl WorkerCounts {
    #[inline]
    pub(super) fn started(&self) {
        bump(&self.started, 1);
    }

    /// An attempt ended and its item was settled.
    #[inline]
    pub(super) fn finished(&self, settlement: Settlement, elapsed: Duration) {
        let nanos = elapsed
            .as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(elapsed.subsec_nanos()));
        bump(
            match settlement {
                Settlement::Acked => &self.done,
                Settlement::Retrying { .. } => &self.failed,
                Settlement::DeadLettered => &self.dead,
                Settlement::Unsettled => &self.unsettled,
            },
            1,
        );
        bump(&self.duration_nanos, nanos);
        bump(&self.durations[bucket_of(nanos)], 1);
    }

    pub(super) fn handed_back(&self, count: usize) {
        bump(&self.handed_back, count as u64);
    }

    pub(super) fn leases(&self, renewed: usize, lost: usize) {
        bump(&self.renewals, renewed as u64);
        bump(&self.leases_lost, lost as u64);
    }

    /// The loop's tasks now (set once a loop turn, before it waits, and
    /// zero once the worker has returned), and the slots it has.
    pub(super) fn occupancy(&self, busy: usize, slots: usize) {
        self.busy.store(busy as u64, Relaxed);
        self.slots.store(slots as u64, Relaxed);
    }

    /// What the counts say now. Each is read on its own, so a reading taken
    /// while the worker runs may hold an attempt's end and not yet its
    /// duration; the next reading agrees.
    pub fn read(&self) -> CountsReading {
        let n = |count: &AtomicU64| count.load(Relaxed);
        CountsReading {
            started: n(&self.started),
            done: n(&self.done),
            failed: n(&self.failed),
            dead: n(&self.dead),
            unsettled: n(&self.unsettled),
            handed_back: n(&self.handed_back),
            renewals: n(&self.renewals),
            leases_lost: n(&self.leases_lost),
            busy: n(&self.busy),
            slots: n(&self.slots),
            duration_nanos: n(&self.duration_nanos),
            durations: std::array::from_fn(|i| n(&self.durations[i])),
        }
    }
}

/// A reading of one worker's [`WorkerCounts`], or of several added up
/// (`+=`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CountsReading {
    /// Tasks started on items (attempts begun).
    pub started: u64,
    /// Attempts that succeeded and were acked (or queued for the next ack).
    pub done: u64,
    /// Attempts that failed and were put back for a retry.
    pub failed: u64,
    /// Items dead-lettered.
    pub dead: u64,
    /// Attempts that succeeded but whose ack the queue did not take (the
    /// item runs again).
    pub unsettled: u64,
    /// Items given back to the queue at no cost in attempts (a stop, items
    /// of another job, a worker that is over).
    pub handed_back: u64,
    /// Lease renewals the queue took.
    pub renewals: u64,
    /// Leases lost while their task ran: found gone at a renewal, or run
    /// out unrenewed.
    pub leases_lost: u64,
    /// Tasks running now.
    pub busy: u64,
    /// Task slots of the worker (its concurrency), from when it starts
    /// running.
    pub slots: u64,
    /// Every settled attempt's run time added up, in nanoseconds.
    pub duration_nanos: u64,
    /// Settled attempts by run time: `durations[i]` ran at most
    /// `DURATION_BOUNDS[i]` and more than the bound before it; the last
    /// holds those longer than every bound.
    pub durations: [u64; DURATION_BUCKETS],
}

impl std::ops::AddAssign<&CountsReading> for CountsReading {
    fn add_assign(&mut self, other: &CountsReading) {
        self.started += other.started;
        self.done += other.done;
        self.failed += other.failed;
        self.dead += other.dead;
        self.unsettled += other.unsettled;
        self.handed_back += other.handed_back;
        self.renewals += other.renewals;
        self.leases_lost += other.leases_lost;
        self.busy += other.busy;
        self.slots += other.slots;
        self.duration_nanos += other.duration_nanos;
        for (to, from) in self.durations.iter_mut().zip(&other.durations) {
            *to += from;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bucket found without a search is the one a search over the
    /// bounds finds (the first bound at least the duration), on and around
    /// every bound, at zero, and far past the last.
    #[test]
    fn the_bucket_is_the_first_bound_at_least_the_duration() {
        let bounds: Vec<u64> = DURATION_BOUNDS
            .iter()
            .map(|b| b.as_nanos() as u64)
            .collect();
        let searched = |nanos: u64| bounds.partition_point(|&bound| bound < nanos);
        let mut probes = vec![0, 1, 999_999, u64::MAX / 2, u64::MAX];
        for &bound in &bounds {
            probes.extend([bound - 1, bound, bound + 1, bound + bound / 2]);
        }
        for nanos in probes {
            assert_eq!(bucket_of(nanos), searched(nanos), "{nanos} ns");
        }
    }

    #[test]
    fn a_reading_holds_what_was_counted_and_readings_add_up() {
        let counts = WorkerCounts::default();
        counts.started();
        counts.started();
        counts.finished(Settlement::Acked, Duration::from_millis(3));
        counts.finished(Settlement::DeadLettered, Duration::from_secs(1));
        counts.handed_back(2);
        counts.leases(5, 1);
        counts.occupancy(1, 4);
        let one = counts.read();
        assert_eq!((one.started, one.done, one.dead, one.failed), (2, 1, 1, 0));
        assert_eq!((one.handed_back, one.renewals, one.leases_lost), (2, 5, 1));
        assert_eq!((one.busy, one.slots), (1, 4));
        assert_eq!(one.duration_nanos, 1_003_000_000);
        assert_eq!(one.durations[1], 1, "3 ms is in the 4 ms bucket");
        assert_eq!(one.durations[5], 1, "1 s is in the 1.024 s bucket");
        let mut sum = one;
        sum += &one;
        assert_eq!((sum.started, sum.slots, sum.durations[5]), (4, 8, 2));
    }
}
