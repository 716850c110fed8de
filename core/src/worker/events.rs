//! What a worker tells its observers: each finished attempt and what the
//! worker did with its item.

use std::time::Duration;

use crate::TaskOutcome;

/// How an attempt ended, from the queue's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// Acked (or queued for the next ack flush).
    Acked,
    /// Nacked; it comes back after `delay`.
    Retrying {
        /// Delay before the next attempt.
        delay: Duration,
    },
    /// Moved to the dead-letter place.
    DeadLettered,
    /// Succeeded, but the queue did not take the ack (the lease had ended,
    /// or the ack failed for good): the item will run again.
    Unsettled,
}

/// One finished attempt, as observers see it.
#[derive(Debug, Clone, Copy)]
pub struct AttemptRecord<'a> {
    /// The item's id.
    pub id: &'a str,
    /// The item.
    pub payload: &'a [u8],
    /// Which attempt this was (1-based).
    pub attempt: u32,
    /// What the handler reported.
    pub outcome: &'a TaskOutcome,
    /// What the worker did with the item.
    pub settlement: Settlement,
    /// How long the attempt ran.
    pub elapsed: Duration,
    /// The worker's name.
    pub worker: &'a str,
}

/// Watches a worker's attempts one by one: progress bars, joblogs,
/// summaries. Every call is made on the worker's loop: it must return at
/// once (count, store, hand to a channel), never wait. Counts (for metrics)
/// need no watcher: the loop keeps them itself ([`Worker::counts`]).
///
/// [`Worker::counts`]: super::Worker::counts
pub trait WorkerEvents: Send + Sync {
    /// An attempt ended and its item was settled.
    fn attempt_finished(&self, record: &AttemptRecord<'_>);
}

/// Observes nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoEvents;

impl WorkerEvents for NoEvents {
    fn attempt_finished(&self, _record: &AttemptRecord<'_>) {}
}
