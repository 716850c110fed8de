//! `DrainDetector`: decides when the queue is drained, the only reason a
//! worker exits 0.
//!
//! Exact backlogs are believed at once. Approximate ones must read empty
//! continuously for the driver's staleness window, with every pull in between
//! empty too. Where the backend cannot count at all (Pub/Sub's emulator), the
//! detector falls back to an idle window of empty pulls and says so.

use std::time::Duration;

use tokio::time::Instant;

use crate::Backlog;

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
}

impl DrainDetector {
    /// A detector for a backend whose counts lag by up to `staleness`, using
    /// `idle_window` of empty pulls when the backend cannot count.
    pub fn new(staleness: Duration, idle_window: Duration) -> Self {
        Self {
            staleness,
            idle_window,
            empty_since: None,
        }
    }

    /// Something was delivered or is running here: the queue is not drained.
    pub fn busy(&mut self) {
        self.empty_since = None;
    }

    /// Judge one backlog reading, taken at `now` after an empty pull.
    pub fn observe(&mut self, backlog: &Backlog, now: Instant) -> DrainState {
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
