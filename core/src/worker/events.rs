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

/// Watches a worker's attempts: progress bars, joblogs, summaries,
/// metrics. Every call is made on the worker's loop: it must return at
/// once (count, store, hand to a channel), never wait.
pub trait WorkerEvents: Send + Sync {
    /// An attempt ended and its item was settled.
    fn attempt_finished(&self, record: &AttemptRecord<'_>);

    /// A task started on an item: a slot is taken until
    /// [`task_ended`](Self::task_ended).
    fn task_started(&self) {}

    /// A task's slot is free again: it finished, or it was stopped (its
    /// lease let go, the grace over). Called once for each
    /// [`task_started`](Self::task_started).
    fn task_ended(&self) {}

    /// `count` items were handed back to the queue at no cost in attempts
    /// (a stop, items of another job, a worker that is over).
    fn handed_back(&self, _count: usize) {}

    /// Lease renewals answered: `renewed` kept, `lost` found gone (another
    /// worker may have the item now), or a lease that ran out unrenewed.
    fn leases(&self, _renewed: usize, _lost: usize) {}
}

/// Observes nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoEvents;

impl WorkerEvents for NoEvents {
    fn attempt_finished(&self, _record: &AttemptRecord<'_>) {}
}
