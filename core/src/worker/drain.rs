//! `DrainDetector`: decides when the queue is drained, the only reason a
//! worker exits 0.
//!
//! A worker for given jobs ([`DrainDetector::for_jobs`]) is done when they
//! are over (complete, cancelled or forgotten), whatever else is queued.
//!
//! Otherwise jobs first: where the queue keeps a ledger and has jobs, the worker is
//! done when every job is complete (all N items settled), read exactly from
//! the ledger, whatever the backend can count: no staleness window, no idle
//! window. An unfinished job keeps every worker, so nobody exits while one
//! of its items is held, delayed or in flight anywhere. Two things still
//! bring the backlog in: an exact count that shows items (items without a
//! job wait in a queue that can say so), and a worker that has itself run
//! an item without a job (another program's): it ends by the backlog rule
//! below, as if there were no jobs.
//!
//! Exact backlogs are believed at once. Approximate ones must read empty
//! continuously for the driver's staleness window, with every pull in between
//! empty too. Where the backend cannot count at all (Pub/Sub's emulator), the
//! detector falls back to an idle window of empty pulls and says so.
//!
//! Only what was seen counts: a failed backlog read or pull (reported with
//! [`DrainDetector::unreadable`]) starts the empty stretch over, and so does a
//! gap between readings longer than the longest window, so after an outage
//! one empty reading never stands for the minutes nobody looked.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::Backlog;
use crate::job::JobStatus;

/// What one look at the queue found.
#[derive(Debug, Clone, Default)]
pub struct Reading {
    /// The ledger's jobs (`None`: the queue keeps no ledger).
    pub jobs: Option<Vec<JobStatus>>,
    /// The jobs the ledger has forgotten ([`crate::job::Ledger::forgotten`]),
    /// where they were read (only when a job looked for was missing).
    pub forgotten: Option<Vec<String>>,
    /// The backlog, where it was read.
    pub backlog: Option<Backlog>,
}

/// What the detector concluded from one reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainState {
    /// Work remains (or may remain): keep pulling.
    Busy,
    /// Looks empty; waiting for the reading to hold over the window.
    Settling {
        /// When the empty stretch began.
        since: Instant,
        /// How long it must last.
        window: Duration,
    },
    /// Drained: exit 0.
    Drained,
}

/// Watches backlog readings for a stable empty queue.
#[derive(Debug, Clone)]
pub struct DrainDetector {
    staleness: Duration,
    idle_window: Duration,
    empty_since: Option<Instant>,
    /// When the last reading (of any kind) was taken.
    last_reading: Option<Instant>,
    /// This worker ran an item without a job.
    foreign: bool,
    /// The jobs this worker is for, where it was started for some.
    for_jobs: Option<Vec<Arc<str>>>,
}

impl DrainDetector {
    /// A detector for a backend whose counts lag by up to `staleness`, using
    /// `idle_window` of empty pulls when the backend cannot count.
    pub fn new(staleness: Duration, idle_window: Duration) -> Self {
        Self {
            staleness,
            idle_window,
            empty_since: None,
            last_reading: None,
            foreign: false,
            for_jobs: None,
        }
    }

    /// A detector for a worker started for `jobs` (`None`: every job on
    /// the queue): it is drained when those jobs are over (complete,
    /// cancelled or forgotten), whatever else the queue holds.
    pub fn for_jobs(mut self, jobs: Option<&[Arc<str>]>) -> Self {
        self.for_jobs = jobs.map(<[Arc<str>]>::to_vec);
        self
    }

    /// This worker ran an item without a job: from now on it ends by the
    /// backlog rule too.
    pub fn foreign_item(&mut self) {
        self.foreign = true;
    }

    /// Whether complete jobs alone can end this worker.
    pub fn trusts_jobs(&self) -> bool {
        !self.foreign
    }

    /// Judge one look at the queue: jobs first, then the backlog.
    pub fn observe_reading(&mut self, reading: &Reading, now: Instant) -> DrainState {
        let jobs = reading.jobs.as_deref().unwrap_or_default();
        if let (Some(mine), Some(_)) = (&self.for_jobs, &reading.jobs) {
            let over = mine.iter().all(|name| {
                reading.forgotten.iter().flatten().any(|f| **f == **name)
                    || jobs
                        .iter()
                        .any(|job| *job.manifest.job == **name && job.is_over())
            });
            self.last_reading = Some(now);
            return if over {
                DrainState::Drained
            } else {
                self.empty_since = None;
                DrainState::Busy
            };
        }
        if !jobs.is_empty() {
            if jobs.iter().any(|job| !job.is_over()) {
                self.empty_since = None;
                self.last_reading = Some(now);
                return DrainState::Busy;
            }
            // Every job is over and one halted: its items wait in the
            // queue for a resume, so the backlog cannot read empty.
            if self.trusts_jobs() && jobs.iter().any(|job| job.is_halted() && !job.is_complete()) {
                return DrainState::Drained;
            }
            if self.trusts_jobs() {
                let shows_items = reading.backlog.as_ref().is_some_and(|backlog| {
                    backlog.ready.is_exact()
                        && backlog.in_flight.is_exact()
                        && backlog.is_empty() == Some(false)
                });
                return if shows_items {
                    self.busy();
                    DrainState::Busy
                } else {
                    DrainState::Drained
                };
            }
        }
        match &reading.backlog {
            Some(backlog) => self.observe(backlog, now),
            None => DrainState::Busy,
        }
    }

    /// The longest two readings may lie apart and still be one stretch: the
    /// longest window any reading can ask for. Readers must look more often
    /// than this (the worker reads after every empty pull).
    pub fn longest_gap(&self) -> Duration {
        self.staleness.max(self.idle_window)
    }

    /// Something was delivered or is running here: the queue is not drained.
    pub fn busy(&mut self) {
        self.empty_since = None;
    }

    /// A backlog read or a pull failed: nothing is known about the time
    /// since the last reading, so the empty stretch starts over.
    pub fn unreadable(&mut self) {
        self.empty_since = None;
        self.last_reading = None;
    }

    /// Judge one backlog reading, taken at `now` after an empty pull.
    pub fn observe(&mut self, backlog: &Backlog, now: Instant) -> DrainState {
        let previous = self.last_reading.replace(now);
        if previous.is_none_or(|at| now.saturating_duration_since(at) > self.longest_gap()) {
            self.empty_since = None;
        }
        let window = match backlog.is_empty() {
            Some(false) => {
                self.empty_since = None;
                return DrainState::Busy;
            }
            Some(true) if backlog.ready.is_exact() && backlog.in_flight.is_exact() => {
                self.staleness.saturating_sub(backlog.age)
            }
            Some(true) => self.staleness,
            None => self.idle_window.max(self.staleness),
        };
        let since = *self.empty_since.get_or_insert(now);
        if now.saturating_duration_since(since) >= window {
            DrainState::Drained
        } else {
            DrainState::Settling { since, window }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Count;

    fn reading(ready: Count, in_flight: Count) -> Backlog {
        Backlog {
            ready,
            in_flight,
            dead: Count::Exact(0),
            age: Duration::ZERO,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn exact_empty_is_drained_at_once() {
        let mut detector = DrainDetector::new(Duration::ZERO, Duration::from_secs(30));
        let empty = reading(Count::Exact(0), Count::Exact(0));
        assert_eq!(
            detector.observe(&empty, Instant::now()),
            DrainState::Drained
        );
    }

    #[tokio::test(start_paused = true)]
    async fn in_flight_elsewhere_is_not_drained() {
        let mut detector = DrainDetector::new(Duration::ZERO, Duration::from_secs(30));
        let busy = reading(Count::Exact(0), Count::Exact(1));
        assert_eq!(detector.observe(&busy, Instant::now()), DrainState::Busy);
    }

    #[tokio::test(start_paused = true)]
    async fn approximate_empty_must_hold_for_the_staleness_window() {
        let window = Duration::from_secs(60);
        let mut detector = DrainDetector::new(window, Duration::from_secs(30));
        let start = Instant::now();
        let empty = reading(Count::Approximate(0), Count::Approximate(0));
        let full = reading(Count::Approximate(3), Count::Approximate(0));
        assert!(matches!(
            detector.observe(&empty, start),
            DrainState::Settling { .. }
        ));
        // A non-empty reading restarts the window.
        assert_eq!(
            detector.observe(&full, start + Duration::from_secs(59)),
            DrainState::Busy
        );
        let restart = start + Duration::from_secs(61);
        assert!(matches!(
            detector.observe(&empty, restart),
            DrainState::Settling { .. }
        ));
        assert!(matches!(
            detector.observe(&empty, restart + Duration::from_secs(59)),
            DrainState::Settling { .. }
        ));
        assert_eq!(
            detector.observe(&empty, restart + window),
            DrainState::Drained
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_gap_without_readings_is_not_counted_as_empty() {
        // An outage: one empty reading, then nothing for two minutes (pulls
        // and backlog reads failing), then one empty reading. The two minutes
        // were never seen, so they cannot count towards the 60 s window.
        let window = Duration::from_secs(60);
        let mut detector = DrainDetector::new(window, Duration::from_secs(30));
        let empty = reading(Count::Approximate(0), Count::Approximate(0));
        let start = Instant::now();
        assert!(matches!(
            detector.observe(&empty, start),
            DrainState::Settling { .. }
        ));
        let after_outage = start + Duration::from_secs(120);
        assert_eq!(
            detector.observe(&empty, after_outage),
            DrainState::Settling {
                since: after_outage,
                window
            },
            "one empty reading after an outage must start the window over"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_reading_starts_the_empty_stretch_over() {
        let window = Duration::from_secs(60);
        let mut detector = DrainDetector::new(window, Duration::from_secs(30));
        let empty = reading(Count::Approximate(0), Count::Approximate(0));
        let start = Instant::now();
        let mut at = start;
        while at < start + Duration::from_secs(50) {
            assert!(matches!(
                detector.observe(&empty, at),
                DrainState::Settling { .. }
            ));
            at += Duration::from_secs(1);
        }
        detector.unreadable();
        let next = at + Duration::from_secs(1);
        assert_eq!(
            detector.observe(&empty, next),
            DrainState::Settling {
                since: next,
                window
            },
            "the stretch before a failed reading must not count"
        );
        assert_eq!(
            detector.observe(&empty, next + Duration::from_secs(30)),
            DrainState::Settling {
                since: next,
                window
            }
        );
        assert_eq!(detector.observe(&empty, next + window), DrainState::Drained);
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_counts_fall_back_to_the_idle_window_reset_by_work() {
        let mut detector = DrainDetector::new(Duration::ZERO, Duration::from_secs(30));
        let unknown = reading(Count::Unknown, Count::Unknown);
        let start = Instant::now();
        assert!(matches!(
            detector.observe(&unknown, start),
            DrainState::Settling { .. }
        ));
        detector.busy();
        let later = start + Duration::from_secs(31);
        assert!(matches!(
            detector.observe(&unknown, later),
            DrainState::Settling { .. }
        ));
        assert_eq!(
            detector.observe(&unknown, later + Duration::from_secs(30)),
            DrainState::Drained
        );
    }
}
