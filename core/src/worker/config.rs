//! How a worker behaves: its limits, timings and name, each with a
//! default suited to a network queue.

use std::sync::Arc;
use std::time::Duration;

use super::Backoff;

/// The lapses an item may have by default: ten deliveries whose holder
/// vanished. Generous for preemptions (a spot node lives for hours, an item
/// is held for minutes: ten losses of one item is no bad day but a pattern),
/// and still a bound on an item that kills whatever runs it (exhausts the
/// node's memory, crashes a Rust handler's process), each lapse costing a
/// lease. With the default `--max-attempts 5`, the backend's own limit is
/// 15 deliveries, inside Pub/Sub's 5 to 100.
pub const DEFAULT_MAX_LAPSES: u32 = 10;

/// The deliveries after which the backend should dead-letter an item on
/// its own ([`QueueConfig::max_attempts`](crate::QueueConfig::max_attempts),
/// SQS's `maxReceiveCount`, Pub/Sub's `maxDeliveryAttempts`): every failed
/// attempt and every lapse a worker allows, so that the workers, which tell
/// the two apart, decide each death, and the backend's own limit catches
/// only an item past both (one no worker lived to bury).
pub fn deliveries_allowed(max_attempts: u32, max_lapses: u32) -> u32 {
    max_attempts.saturating_add(max_lapses)
}

/// How a worker behaves. Every field has a default suited to a network queue.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Tasks running at once (default 1).
    pub concurrency: usize,
    /// Lease length each renewal asks for (default 30 s).
    pub lease: Duration,
    /// Longest an item is held before the keeper lets its lease lapse
    /// (default 1 h, as Google's client libraries' max lease duration).
    pub max_lease_age: Duration,
    /// Failed attempts (`f` ran and failed) before an item is dead-lettered
    /// (default 5). Where the backend cannot tell failures from lapses
    /// ([`Delivery::failures`](crate::Delivery::failures) is `None`), every
    /// delivery counts.
    pub max_attempts: u32,
    /// Lapses (a delivery whose lease ended with no answer: its worker
    /// killed, its node lost, its network cut) an item may have; past them
    /// it is dead-lettered, "lost N times", before it runs again (default
    /// [`DEFAULT_MAX_LAPSES`]). A graceful hand-back is no lapse.
    pub max_lapses: u32,
    /// Per-attempt time limit; an attempt over it fails and is retried (default none).
    pub task_timeout: Option<Duration>,
    /// Delay between attempts of a failing item.
    pub backoff: Backoff,
    /// After a stop signal, how long running tasks may still finish (default 10 s,
    /// inside the ~15 s a spot VM gets).
    pub grace: Duration,
    /// Longest wait of one pull (default 1 s): also how often an idle worker
    /// checks for drain.
    pub poll: Duration,
    /// Acks sent in one call at most (default 500, capped by the queue's max batch).
    /// Tasks that finish together are acked together; no ack waits for more.
    pub ack_batch: usize,
    /// After an ack call failed, how long until it is tried again (default
    /// 500 ms); each further failure in a row doubles the wait, up to 10 s.
    pub ack_interval: Duration,
    /// The longest any one queue call may take before it counts as failed
    /// and is retried (default 10 s; pulls get their long poll on top, and
    /// renewals at most a third of the lease).
    pub call_timeout: Duration,
    /// After the grace period, how long the worker may still spend handing
    /// items back and flushing acks before it exits (default 4 s, inside
    /// the 5 s Kubernetes gives past the grace).
    pub settle_budget: Duration,
    /// Where the backend cannot count its backlog: how long pulls must come
    /// back empty before the queue is taken as drained (default 30 s).
    pub idle_window: Duration,
    /// This worker's name in events and the joblog.
    pub name: Arc<str>,
    /// The jobs this worker is for (`run`, `launch`, `work --job`): it
    /// ends when they are over (complete or cancelled), whatever else waits
    /// in the queue, and it runs items of other jobs only where they were
    /// recorded with its own [`command`](Self::command); it hands back the
    /// rest, and items without a job, at no cost in attempts. `None`
    /// (default): every job on the queue, and items without a job; it ends
    /// when every job is over and the queue is empty.
    pub for_jobs: Option<Vec<Arc<str>>>,
    /// The command this worker runs, as a job's manifest records it
    /// ([`crate::job::Manifest::command`]). An item of a job recorded with
    /// another command is handed back, never run under this one. `None`:
    /// the handler is not a command (a Rust function); it runs any job's
    /// items.
    pub command: Option<Arc<str>>,
    /// Stragglers (`--speculate`, default off): the holder of an item of a
    /// job that has run far longer than the job's typical success, when
    /// nothing is left to pull and the job's other remaining items are
    /// fewer than its idle slots, publishes one copy of it; the first
    /// success settles the item (the ledger counts it once), and a task of
    /// a job the ledger shows complete is stopped and acked without a
    /// receipt. See [`crate::worker`], step 9. A command whose effects are
    /// not idempotent may then run twice for one item.
    pub speculate: bool,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            concurrency: 1,
            lease: Duration::from_secs(30),
            max_lease_age: Duration::from_secs(3600),
            max_attempts: 5,
            max_lapses: DEFAULT_MAX_LAPSES,
            task_timeout: None,
            backoff: Backoff::default(),
            grace: Duration::from_secs(10),
            poll: Duration::from_secs(1),
            ack_batch: 500,
            ack_interval: Duration::from_millis(500),
            call_timeout: Duration::from_secs(10),
            settle_budget: Duration::from_secs(4),
            idle_window: Duration::from_secs(30),
            name: Arc::from("worker"),
            for_jobs: None,
            command: None,
            speculate: false,
        }
    }
}
