//! How a worker behaves: its limits, timings and name, each with a
//! default suited to a network queue.

use std::sync::Arc;
use std::time::Duration;

use super::Backoff;

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
    /// Attempts before an item is dead-lettered (default 5).
    pub max_attempts: u32,
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
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            concurrency: 1,
            lease: Duration::from_secs(30),
            max_lease_age: Duration::from_secs(3600),
            max_attempts: 5,
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
        }
    }
}
