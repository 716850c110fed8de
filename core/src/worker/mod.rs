//! The worker loop, written once for every backend.
//!
//! What happens to an item, step by step:
//! 1. It is pulled only into a free slot (never prefetched), and its lease is
//!    handed to the [`LeaseKeeper`].
//! 2. While the handler runs, the keeper renews the lease a third before it
//!    ends, up to `max_lease_age`.
//! 3. Success: the token joins the ack buffer, which is flushed as soon as
//!    the tasks that finished together are settled (at most `ack_batch` per
//!    call). A worker killed before the flush loses only those acks: at most
//!    its in-flight items run again.
//! 4. Failure: nack with exponential [`Backoff`]; on the last attempt, or when
//!    the failure is fatal (the command cannot start), dead-letter it.
//! 5. Stop (SIGTERM/SIGINT): no more pulls; running tasks get `grace` to
//!    finish; then they are dropped (their commands killed) and their items
//!    nacked with delay 0 so another worker takes them at once; acks flushed.
//! 6. With nothing running and an empty pull, the [`DrainDetector`] reads the
//!    backlog; the worker returns [`WorkerExit::Drained`] only when nothing is
//!    ready and nothing is in flight anywhere.

pub mod backoff;
pub mod drain;
pub mod lease;

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::OptionFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use backoff::Backoff;
pub use drain::{DrainDetector, DrainState};
pub use lease::LeaseKeeper;

use crate::handler::OutcomeKind;
use crate::{Delivery, Handler, LeaseToken, QueueError, Task, TaskOutcome, WorkQueue};

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
    /// After an ack call failed, how long until it is tried again (default 500 ms).
    pub ack_interval: Duration,
    /// Where the backend cannot count its backlog: how long pulls must come
    /// back empty before the queue is taken as drained (default 30 s).
    pub idle_window: Duration,
    /// This worker's name in events and the joblog.
    pub name: Arc<str>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("queue", &self.queue)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
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
            idle_window: Duration::from_secs(30),
            name: Arc::from("worker"),
        }
    }
}

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

/// Watches a worker's attempts: progress bars, joblogs, summaries.
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

/// Tells workers to stop: `stop` starts a graceful shutdown, `abort` cuts the
/// grace short (a second Ctrl-C).
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    stop: CancellationToken,
    abort: CancellationToken,
}

impl Shutdown {
    /// A fresh, untriggered shutdown.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stop pulling; let running tasks finish within the grace period.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Stop now: drop running tasks and give their items back.
    pub fn abort(&self) {
        self.stop.cancel();
        self.abort.cancel();
    }

    /// Whether a stop was requested.
    pub fn is_stopping(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Wait until a stop is requested.
    pub async fn stopping(&self) {
        self.stop.cancelled().await;
    }
}

/// Why a worker returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerExit {
    /// The queue is drained: nothing ready, nothing in flight anywhere.
    Drained,
    /// A stop was requested; `interrupted` tasks were cut short and their
    /// items given back.
    Stopped {
        /// Tasks dropped at the end of the grace period.
        interrupted: usize,
    },
}

/// One worker: a queue, a handler and the policies between them.
pub struct Worker {
    queue: Arc<dyn WorkQueue>,
    handler: Arc<dyn Handler>,
    config: WorkerConfig,
    events: Arc<dyn WorkerEvents>,
}

struct Finished {
    token: LeaseToken,
    id: crate::MessageId,
    payload: Bytes,
    attempt: u32,
    outcome: TaskOutcome,
    elapsed: Duration,
}

/// Running tasks. They run on the worker's own task, like
/// `for_each_concurrent`: handlers await I/O and must not block (use
/// `spawn_blocking` for CPU-heavy work); this keeps the per-item cost low.
type Tasks = FuturesUnordered<Pin<Box<dyn Future<Output = Finished> + Send>>>;

type PullFuture = Pin<Box<dyn Future<Output = Result<Vec<Delivery>, QueueError>> + Send>>;

fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-text panic".to_string())
}

/// Buffered acks and when they must go out.
struct AckBuffer {
    tokens: Vec<LeaseToken>,
    flush_at: Option<Instant>,
}

impl Worker {
    /// A worker with default config and no observer.
    pub fn new(queue: Arc<dyn WorkQueue>, handler: Arc<dyn Handler>) -> Self {
        Self {
            queue,
            handler,
            config: WorkerConfig::default(),
            events: Arc::new(NoEvents),
        }
    }

    /// Use `config`.
    pub fn with_config(mut self, config: WorkerConfig) -> Self {
        self.config = config;
        self
    }

    /// Report attempts to `events`.
    pub fn with_events(mut self, events: Arc<dyn WorkerEvents>) -> Self {
        self.events = events;
        self
    }

    /// Run until the queue is drained or `shutdown` says stop.
    ///
    /// Transient queue errors are logged and retried with backoff; an error
    /// that cannot pass (queue missing, permission denied) ends the worker.
    pub async fn run(self, shutdown: Shutdown) -> Result<WorkerExit, QueueError> {
        let capabilities = self.queue.capabilities();
        let concurrency = self.config.concurrency.max(1);
        let ack_batch = self
            .config
            .ack_batch
            .clamp(1, capabilities.max_batch.max(1));
        let mut tasks: Tasks = FuturesUnordered::new();
        let mut keeper = LeaseKeeper::new(self.config.lease, self.config.max_lease_age);
        let mut drain = DrainDetector::new(capabilities.backlog_staleness, self.config.idle_window);
        let mut acks = AckBuffer {
            tokens: Vec::with_capacity(ack_batch),
            flush_at: None,
        };
        let mut pull: Option<PullFuture> = None;
        let mut pull_failures = 0u32;
        let mut pull_not_before: Option<Instant> = None;
        // Nothing runs and the queue looked empty: read the backlog.
        let mut idle = false;
        let mut stopping = false;
        let mut grace_end: Option<Instant> = None;
        let mut interrupted = 0usize;
        // Made once: a fresh cancellation future per loop turn costs more
        // than the rest of a no-op item.
        let stopped = shutdown.stop.cancelled();
        let aborted = shutdown.abort.cancelled();
        // One timer for every deadline (lease renewals, ack flush, pull retry,
        // grace end), armed for the earliest; it may fire early, never late.
        let timer = tokio::time::sleep(Duration::ZERO);
        let mut timer_at: Option<Instant> = None;
        tokio::pin!(stopped, aborted, timer);

        loop {
            if stopping && tasks.is_empty() && pull.is_none() {
                break;
            }
            // A pending pull does not hold up the check: once the backlog reads
            // drained there is nothing for it to bring, and dropping it leaves
            // at worst an item leased until its deadline, never lost.
            if !stopping && idle && tasks.is_empty() {
                idle = false;
                self.flush_acks(&mut acks).await;
                match self.queue.backlog().await {
                    Ok(backlog) => match drain.observe(&backlog, Instant::now()) {
                        DrainState::Drained => {
                            info!(worker = %self.config.name, "queue drained");
                            return Ok(WorkerExit::Drained);
                        }
                        state => debug!(?backlog, ?state, "not drained yet"),
                    },
                    Err(error) if error.is_retryable() => {
                        warn!(error = %crate::ErrorChain(&error), "could not read the backlog; will try again")
                    }
                    Err(error) => return Err(error),
                }
            }
            let now = Instant::now();
            if pull.is_none()
                && !stopping
                && tasks.len() < concurrency
                && pull_not_before.is_none_or(|at| at <= now)
            {
                pull_not_before = None;
                let queue = Arc::clone(&self.queue);
                let (max, wait) = (concurrency - tasks.len(), self.config.poll);
                pull = Some(Box::pin(async move { queue.pull(max, wait).await }));
            }
            let busy = !tasks.is_empty() || pull.is_some();
            let next = [
                keeper.next_due(),
                acks.flush_at,
                pull_not_before.filter(|_| pull.is_none()),
                grace_end.filter(|_| busy),
            ]
            .into_iter()
            .flatten()
            .min();
            if let Some(next) = next
                && timer_at.is_none_or(|armed| next < armed)
            {
                timer.as_mut().reset(next);
                timer_at = Some(next);
            }
            tokio::select! {
                biased;
                _ = &mut aborted, if !tasks.is_empty() || pull.is_some() => {
                    interrupted += self.interrupt(&mut tasks, &mut keeper).await;
                    break;
                }
                _ = &mut stopped, if !stopping => {
                    stopping = true;
                    // From the signal, not from `now`: that was read before
                    // the select and may be long stale by now.
                    grace_end = Some(Instant::now() + self.config.grace);
                    info!(worker = %self.config.name, running = tasks.len(), grace = ?self.config.grace,
                        "stopping: no more pulls; running tasks may finish within the grace period");
                }
                Some(finished) = tasks.next() => {
                    self.settle(finished, &mut keeper, &mut acks, ack_batch, &capabilities).await;
                    // Settle every task that is already done, then ack them
                    // together: batches grow with load, and no ack waits on a
                    // timer (a worker killed then repeats only what it held).
                    let mut burst = 1;
                    while burst < ack_batch {
                        let Some(Some(finished)) = tasks.next().now_or_never() else {
                            break;
                        };
                        self.settle(finished, &mut keeper, &mut acks, ack_batch, &capabilities).await;
                        burst += 1;
                    }
                    self.flush_acks(&mut acks).await;
                    // The last task ended while a pull waits for work: the
                    // queue had nothing ready since that pull began.
                    idle = tasks.is_empty() && pull.is_some();
                }
                Some(result) = OptionFuture::from(pull.as_mut()) => {
                    pull = None;
                    match result {
                        Ok(deliveries) if deliveries.is_empty() => {
                            pull_failures = 0;
                            idle = tasks.is_empty();
                        }
                        Ok(deliveries) => {
                            pull_failures = 0;
                            drain.busy();
                            if stopping {
                                let tokens: Vec<_> = deliveries.into_iter().map(|d| d.token).collect();
                                self.give_back(&tokens).await;
                            } else {
                                let now = Instant::now();
                                for delivery in deliveries {
                                    self.start(&mut tasks, &mut keeper, delivery, now);
                                }
                            }
                        }
                        Err(error) if error.is_retryable() => {
                            pull_failures += 1;
                            let delay = self.config.backoff.delay(pull_failures).min(Duration::from_secs(30));
                            warn!(error = %crate::ErrorChain(&error), retry_in = ?delay, "pull failed; retrying");
                            pull_not_before = Some(Instant::now() + delay);
                        }
                        Err(error) => return Err(error),
                    }
                }
                _ = &mut timer, if timer_at.is_some() => {
                    timer_at = None;
                    let now = Instant::now();
                    if busy && grace_end.is_some_and(|end| end <= now) {
                        warn!(worker = %self.config.name, running = tasks.len(),
                            "grace period over: stopping running tasks and giving their items back");
                        interrupted += self.interrupt(&mut tasks, &mut keeper).await;
                        break;
                    }
                    if keeper.next_due().is_some_and(|due| due <= now) {
                        self.renew(&mut keeper).await;
                    }
                    if acks.flush_at.is_some_and(|at| at <= now) {
                        self.flush_acks(&mut acks).await;
                    }
                }
            }
        }
        self.flush_acks(&mut acks).await;
        Ok(WorkerExit::Stopped { interrupted })
    }

    fn start(&self, tasks: &mut Tasks, keeper: &mut LeaseKeeper, delivery: Delivery, now: Instant) {
        keeper.hold(delivery.token.clone(), delivery.deadline, now);
        let handler = Arc::clone(&self.handler);
        let timeout = self.config.task_timeout;
        tasks.push(Box::pin(async move {
            let started = Instant::now();
            let task = Task {
                id: delivery.id.clone(),
                payload: delivery.payload.clone(),
                attributes: delivery.attributes,
                attempt: delivery.attempt,
            };
            let run = AssertUnwindSafe(handler.handle(task)).catch_unwind();
            let result = match timeout {
                Some(limit) => match tokio::time::timeout(limit, run).await {
                    Ok(result) => result,
                    Err(_) => Ok(TaskOutcome::failed(format!(
                        "timed out after {limit:?} (--task-timeout)"
                    ))),
                },
                None => run.await,
            };
            let outcome = result.unwrap_or_else(|panic| {
                TaskOutcome::failed(format!("the handler panicked: {}", panic_message(&*panic)))
            });
            Finished {
                token: delivery.token,
                id: delivery.id,
                payload: delivery.payload,
                attempt: delivery.attempt,
                outcome,
                elapsed: started.elapsed(),
            }
        }));
    }

    async fn settle(
        &self,
        finished: Finished,
        keeper: &mut LeaseKeeper,
        acks: &mut AckBuffer,
        ack_batch: usize,
        capabilities: &crate::Capabilities,
    ) {
        keeper.release(&finished.token);
        let outcome = &finished.outcome;
        let settlement = match outcome.kind {
            OutcomeKind::Succeeded => {
                acks.tokens.push(finished.token.clone());
                if acks.tokens.len() >= ack_batch {
                    self.flush_acks(acks).await;
                }
                Settlement::Acked
            }
            OutcomeKind::Failed if finished.attempt < self.config.max_attempts => {
                let seed = std::hash::BuildHasher::hash_one(
                    &std::collections::hash_map::RandomState::new(),
                    (&*finished.id, finished.attempt),
                );
                let delay = self.config.backoff.jittered(finished.attempt, seed);
                let tokens = [finished.token.clone()];
                let result = if capabilities.delayed_nack || delay.is_zero() {
                    self.queue.nack(&tokens, delay).await
                } else {
                    // No delayed nack: hold the lease for `delay` and let it lapse.
                    self.queue
                        .extend_deadline(&tokens, delay.max(capabilities.min_deadline))
                        .await
                };
                self.report("retry", &finished, result);
                Settlement::Retrying { delay }
            }
            OutcomeKind::Failed | OutcomeKind::Fatal => {
                let why = outcome.reason.as_deref().unwrap_or("failed");
                let reason = if outcome.kind == OutcomeKind::Fatal {
                    format!("{why} (not retried: no attempt can succeed)")
                } else {
                    format!(
                        "{why} on attempt {} of {}",
                        finished.attempt, self.config.max_attempts
                    )
                };
                let result = self
                    .queue
                    .dead_letter(std::slice::from_ref(&finished.token), &reason)
                    .await;
                self.report("dead-letter", &finished, result);
                warn!(item = %String::from_utf8_lossy(&finished.payload), %reason, "item dead-lettered");
                Settlement::DeadLettered
            }
        };
        self.events.attempt_finished(&AttemptRecord {
            id: &finished.id,
            payload: &finished.payload,
            attempt: finished.attempt,
            outcome,
            settlement,
            elapsed: finished.elapsed,
            worker: &self.config.name,
        });
    }

    fn report(
        &self,
        what: &str,
        finished: &Finished,
        result: Result<crate::LeaseReport, QueueError>,
    ) {
        match result {
            Ok(report) if !report.lost.is_empty() => warn!(
                item = %String::from_utf8_lossy(&finished.payload),
                "{what} came too late: the lease had already ended, so the queue will deliver the item again"
            ),
            Ok(_) => {}
            Err(error) => warn!(
                item = %String::from_utf8_lossy(&finished.payload), error = %crate::ErrorChain(&error),
                "{what} failed; the item comes back when its lease ends"
            ),
        }
    }

    async fn flush_acks(&self, acks: &mut AckBuffer) {
        acks.flush_at = None;
        if acks.tokens.is_empty() {
            return;
        }
        match self.queue.ack(&acks.tokens).await {
            Ok(report) => {
                if !report.lost.is_empty() {
                    warn!(
                        count = report.lost.len(),
                        "acks came after the lease ended; those items will run again"
                    );
                }
                acks.tokens.clear();
            }
            Err(error) if error.is_retryable() => {
                warn!(error = %crate::ErrorChain(&error), pending = acks.tokens.len(), "ack failed; retrying shortly");
                acks.flush_at = Some(Instant::now() + self.config.ack_interval);
            }
            Err(error) => {
                warn!(error = %crate::ErrorChain(&error), dropped = acks.tokens.len(), "ack failed for good; those items will run again");
                acks.tokens.clear();
            }
        }
    }

    async fn renew(&self, keeper: &mut LeaseKeeper) {
        let now = Instant::now();
        let due = keeper.due(now);
        if due.is_empty() {
            return;
        }
        let lease = keeper.lease();
        match self.queue.extend_deadline(&due, lease).await {
            Ok(report) => {
                for token in &due {
                    if report.lost.contains(token) {
                        warn!(
                            ?token,
                            "lease lost while the task runs: the item may run twice"
                        );
                        keeper.release(token);
                    } else {
                        keeper.renewed(token, now);
                    }
                }
            }
            // The keeper tries again on its next tick, while time is left.
            Err(error) => {
                warn!(error = %crate::ErrorChain(&error), count = due.len(), "could not extend leases");
                let retry_at = now + (lease / 10).min(Duration::from_secs(1));
                for token in &due {
                    keeper.retry_at(token, retry_at);
                }
            }
        }
    }

    /// Drop every running task and give its item back at once.
    async fn interrupt(&self, tasks: &mut Tasks, keeper: &mut LeaseKeeper) -> usize {
        // Dropping a task's future stops its work (command handlers kill
        // their process group).
        tasks.clear();
        let tokens = keeper.tokens();
        for token in &tokens {
            keeper.release(token);
        }
        self.give_back(&tokens).await;
        tokens.len()
    }

    async fn give_back(&self, tokens: &[LeaseToken]) {
        if tokens.is_empty() {
            return;
        }
        if let Err(error) = self.queue.nack(tokens, Duration::ZERO).await {
            warn!(error = %crate::ErrorChain(&error), count = tokens.len(), "could not give items back; they return when their leases end");
        }
    }
}
