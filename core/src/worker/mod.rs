//! The worker loop, written once for every backend.
//!
//! What happens to an item, step by step:
//! 1. It is pulled only into a free slot (never prefetched), and its lease is
//!    handed to the lease keeper (`lease.rs`).
//! 2. While the handler runs, the keeper renews the lease a third before it
//!    ends, up to `max_lease_age`. Past that age, or when a renewal goes
//!    unanswered until the deadline, the keeper lets the lease go and the
//!    task is stopped: one copy of a task runs at a time. A max-age stop is
//!    a failed attempt (the lease is still live, so it is nacked as usual).
//! 3. Success: the token joins the ack buffer, which is flushed as soon as
//!    the tasks that finished together are settled (at most `ack_batch` per
//!    call). The lease is kept alive until the ack lands, and only then is
//!    the attempt reported done. A worker killed before that loses only
//!    those acks: at most its in-flight items run again.
//! 4. Failure: nack with exponential [`Backoff`]; on the last attempt, or when
//!    the failure is fatal (the command cannot start), dead-letter it.
//! 5. Stop (SIGTERM/SIGINT): no more pulls; running tasks get `grace` to
//!    finish; then they are dropped (their commands killed) and their items
//!    nacked with delay 0 so another worker takes them at once. Acks and
//!    hand-backs still owed are retried for `settle_budget` past the grace.
//! 6. Before an item runs, the worker's view of the jobs (`jobs.rs`) judges
//!    it: an item of another command's job, or of a job this worker is not
//!    for, is handed back at no cost; one of a cancelled or forgotten job is
//!    acked without running.
//! 7. A job past its `--max-dead` is halted by the worker whose reading of
//!    the ledger shows it (`jobs.rs`): its items are handed back at no
//!    cost from then on; a worker for that job gives back what it runs and
//!    returns [`WorkerExit::Halted`]. A death of an item of a job with a
//!    limit makes the next pull read the ledger.
//! 8. With nothing running, an empty pull and every ack answered, the
//!    [`DrainDetector`] reads the ledger's jobs (and the backlog where it
//!    must); the worker returns [`WorkerExit::Drained`] only when its jobs
//!    are over (a worker for given jobs) or every job is over and nothing
//!    is ready or in flight anywhere; a job the ledger lost fails it. A
//!    pull still open then is waited for where the backend's pull cannot
//!    be dropped ([`crate::Capabilities::cancel_safe_pull`]: a long poll
//!    left at the server leases the next item published to no one), and
//!    what it brings runs.
//! 9. With [`WorkerConfig::speculate`] on, the holder of a straggler (an
//!    item far slower than its job's usual success, with nothing left to
//!    pull and idle slots) publishes one copy of it (`speculate.rs`); the
//!    first success settles the item, the ledger counts it once, and a
//!    task of a job a reading shows complete is stopped and acked without
//!    a receipt, as is a copy delivered once its job is complete.
//!
//! Every queue call has a deadline (`call_timeout`) and none is awaited in
//! front of the tasks: acks, renewals, nacks and hand-backs run beside them
//! (`calls.rs`), so a backend that stops answering freezes nothing: tasks
//! run on, the grace timer and the stop signal are acted on. A queue error
//! that cannot pass (the subscription was deleted) ends the worker after it
//! gave back what it holds and flushed its acks.

mod backoff;
mod calls;
mod config;
mod counts;
pub mod drain;
mod events;
mod jobs;
mod lease;
mod shutdown;
pub mod speculate;
mod tasks;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::OptionFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::time::Instant;
use tracing::{debug, info, warn};

pub use crate::shutdown::Shutdown;
pub use backoff::Backoff;
pub use config::{DEFAULT_MAX_LAPSES, WorkerConfig, deliveries_allowed};
pub use counts::{CountsReading, DURATION_BOUNDS, DURATION_BUCKETS, WorkerCounts};
pub use drain::{DrainDetector, DrainState, Reading};
pub use events::{AttemptRecord, NoEvents, Settlement, WorkerEvents};
pub(crate) use lease::{GiveUp, LeaseKeeper};

use self::calls::{Calls, Done};
use self::jobs::{JobGate, JobsSeen, Verdict};
use self::speculate::Speculation;
use self::tasks::{Finished, TaskStops, Tasks};
use crate::handler::OutcomeKind;
use crate::job::{Backend, Ledger, ReceiptRef, Settled};
use crate::{Delivery, Handler, LeaseToken, QueueError, WorkQueue};

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("queue", &self.queue)
            .field("config", &self.config)
            .finish_non_exhaustive()
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
    /// A job this worker is for passed its `--max-dead` and is halted
    /// ([`crate::job::halt`]): its items stay queued for a resume, and
    /// what this worker ran of it was given back. A worker of the whole
    /// queue returns it when every job is over and one of them halted.
    Halted,
}

/// One worker: a queue, a handler and the policies between them.
pub struct Worker {
    queue: Arc<dyn WorkQueue>,
    /// The queue's jobs, where it keeps them: receipts go here before acks.
    ledger: Option<Arc<dyn Ledger>>,
    handler: Arc<dyn Handler>,
    config: WorkerConfig,
    events: Arc<dyn WorkerEvents>,
    /// What this worker's loop did, counted as it goes: its only writer.
    counts: Arc<WorkerCounts>,
}

/// What a pull brought, with a reading of the ledger's jobs where one was
/// due (an item of a job not known yet, or the last reading is old).
struct Pulled {
    deliveries: Vec<Delivery>,
    jobs: Option<Result<JobsSeen, QueueError>>,
}

type PullFuture = Pin<Box<dyn Future<Output = Result<Pulled, QueueError>> + Send>>;
type BacklogFuture = Pin<Box<dyn Future<Output = Result<Reading, QueueError>> + Send>>;

/// `elapsed` in seconds, cut to whole microseconds (integer work: no
/// rounding call per item).
fn micros(elapsed: Duration) -> f64 {
    elapsed.as_secs() as f64 + f64::from(elapsed.subsec_micros()) / 1e6
}

/// The receipt for settling `finished`, if its item belongs to a job.
/// Its `seconds` are whole microseconds: finer is noise, and every digit
/// is stored once per item.
fn receipt<'a>(
    finished: &'a Finished,
    worker: &'a Arc<str>,
    state: Settled,
    reason: Option<&'a str>,
    at: u64,
) -> Option<ReceiptRef<'a>> {
    let job = finished.job.as_ref()?;
    Some(ReceiptRef {
        job: &job.job,
        seq: job.seq,
        state,
        attempt: finished.attempt,
        exit_code: finished.outcome.exit_code,
        seconds: micros(finished.elapsed),
        worker,
        item: crate::job::cut_slice(&finished.payload),
        reason,
        stderr_tail: finished.outcome.stderr_tail.as_deref(),
        at,
        life: job.life,
        // The receipt's size stays bounded: a larger value is the output
        // store's (`value_url`), or was refused before it came here.
        value: finished
            .outcome
            .value
            .as_ref()
            .filter(|value| value.fits_receipt()),
        value_url: finished.outcome.value_url.as_deref(),
        copy: finished.copy,
    })
}

/// Successes waiting for their ack, and the ack calls in flight.
struct AckBuffer {
    pending: Vec<(LeaseToken, Finished)>,
    in_flight: usize,
    /// After a failed ack: not before then.
    flush_at: Option<Instant>,
    /// Ack calls failed in a row: the retry waits double each time.
    failures: u32,
}

/// The longest wait between two tries of a failing ack: a long outage is
/// not hammered (nor logged) twice a second, and once it ends the acks land
/// well within a lease.
const ACK_RETRY_MAX: Duration = Duration::from_secs(10);

impl AckBuffer {
    /// Every success so far has its ack answered.
    fn is_settled(&self) -> bool {
        self.pending.is_empty() && self.in_flight == 0
    }
}

impl Worker {
    /// A worker on `backend` (its queue, and its ledger where it keeps
    /// jobs: see [`Backend`]) with default config and no observer.
    pub fn new(backend: impl Into<Backend>, handler: Arc<dyn Handler>) -> Self {
        let Backend { queue, ledger } = backend.into();
        Self {
            ledger,
            queue,
            handler,
            config: WorkerConfig::default(),
            events: Arc::new(NoEvents),
            counts: Arc::default(),
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

    /// What this worker's loop did so far, counted as it goes (attempts
    /// and how they ended, durations, hand-backs, leases, busy slots): take
    /// it before [`run`](Self::run) and read it any time, as a metrics page
    /// does at each scrape. Each worker has its own.
    pub fn counts(&self) -> Arc<WorkerCounts> {
        Arc::clone(&self.counts)
    }

    /// Run until the queue is drained or `shutdown` says stop.
    ///
    /// Every queue call has a deadline ([`WorkerConfig::call_timeout`]) and,
    /// but for pulls and backlog reads, runs beside the tasks: nothing the
    /// backend does holds up running tasks, the grace timer or the stop.
    /// Transient queue errors are logged and retried with backoff; an error
    /// that cannot pass (queue missing, permission denied) ends the worker,
    /// after it gave back what it held and flushed its acks.
    pub async fn run(self, shutdown: Shutdown) -> Result<WorkerExit, QueueError> {
        let capabilities = self.queue.capabilities();
        let concurrency = self.config.concurrency.max(1);
        let ack_batch = self
            .config
            .ack_batch
            .clamp(1, capabilities.max_batch.max(1));
        let mut tasks: Tasks = FuturesUnordered::new();
        let mut stops = TaskStops::default();
        let mut calls: Calls<Finished> = FuturesUnordered::new();
        let mut keeper = LeaseKeeper::new(self.config.lease, self.config.max_lease_age);
        let mut drain = DrainDetector::new(capabilities.backlog_staleness, self.config.idle_window)
            .for_jobs(self.config.for_jobs.as_deref());
        let mut gate = JobGate::new(self.config.for_jobs.as_deref(), self.config.command.clone());
        let mut spec = Speculation::new(self.config.speculate);
        // The jobs this worker is for are over: no more pulls, and the
        // worker ends once what it runs has ended.
        let mut scope_over = false;
        // The queue read drained while a pull was open on a backend whose
        // pull cannot be dropped (see `Capabilities::cancel_safe_pull`): no
        // new pull, and the worker ends when that one answers empty.
        let mut ending = false;
        let mut acks = AckBuffer {
            pending: Vec::with_capacity(ack_batch),
            in_flight: 0,
            flush_at: None,
            failures: 0,
        };
        let mut pull: Option<PullFuture> = None;
        let mut backlog: Option<BacklogFuture> = None;
        let mut pull_failures = 0u32;
        let mut pull_not_before: Option<Instant> = None;
        // Nothing runs and the queue looked empty: read the backlog.
        let mut idle = false;
        let mut stopping = false;
        let mut grace_end: Option<Instant> = None;
        let mut interrupted = 0usize;
        let mut fatal: Option<QueueError> = None;
        // Made once: a fresh cancellation future per loop turn costs more
        // than the rest of a no-op item.
        // Cancelled when the worker ends (or is told to stop): failures held
        // for their backoff are told at once (see `settle`).
        let hurry = shutdown.stop.child_token();
        let stopped = shutdown.stop.cancelled();
        let aborted = shutdown.abort.cancelled();
        // One timer for every deadline (lease renewals and give-ups, ack
        // retry, pull retry, grace end), armed for the earliest; it may fire
        // early, never late.
        let timer = tokio::time::sleep(Duration::ZERO);
        let mut timer_at: Option<Instant> = None;
        tokio::pin!(stopped, aborted, timer);

        let exit = loop {
            if !stops.0.is_empty() {
                for finished in self.stop_tasks(&mut tasks, &mut stops) {
                    self.settle(
                        finished,
                        &mut keeper,
                        &mut acks,
                        &mut calls,
                        &capabilities,
                        &hurry,
                    );
                }
            }
            if stopping && tasks.is_empty() && pull.is_none() && backlog.is_none() {
                break None;
            }
            // A ledger read is never dropped half-way: a sheet ledger's
            // reader holds the sheets it pulled until it writes their merge
            // back, and a process gone in between leaves them hidden from
            // every reader for a lease.
            if ending && pull.is_none() && backlog.is_none() {
                break Some(if gate.halted().is_empty() {
                    WorkerExit::Drained
                } else {
                    WorkerExit::Halted
                });
            }
            if scope_over && tasks.is_empty() && pull.is_none() && backlog.is_none() {
                let halted = gate.halted();
                if !halted.is_empty() {
                    warn!(worker = %self.config.name, jobs = ?halted, "halted: the job passed its --max-dead");
                    break Some(WorkerExit::Halted);
                }
                info!(worker = %self.config.name, "the jobs this worker is for are over");
                break Some(WorkerExit::Drained);
            }
            // Read the backlog once nothing runs, the last pull came back
            // empty and our own acks have landed (else they count as ours in
            // flight). A pending pull does not hold the read up: once the
            // backlog reads drained there is nothing for it to bring.
            if !stopping
                && !ending
                && idle
                && tasks.is_empty()
                && backlog.is_none()
                && acks.is_settled()
            {
                idle = false;
                backlog = Some(self.read_end(
                    &capabilities,
                    drain.trusts_jobs(),
                    gate.scope().is_some(),
                    gate.watched(),
                ));
            }
            let now = Instant::now();
            if pull.is_none()
                && !stopping
                && !scope_over
                && !ending
                && tasks.len() < concurrency
                // Nothing runs and the end is being read: a pull opened now
                // is one the worker must wait out if the answer is the end
                // (where pulls cannot be dropped); the reading takes moments.
                && (capabilities.cancel_safe_pull || !tasks.is_empty() || backlog.is_none())
                && pull_not_before.is_none_or(|at| at <= now)
            {
                pull_not_before = None;
                let queue = Arc::clone(&self.queue);
                let (max, wait) = (concurrency - tasks.len(), self.config.poll);
                let limit = wait + self.config.call_timeout;
                let ledger = self.ledger.clone();
                let call_timeout = self.config.call_timeout;
                let wants = gate.wanting_reading(now);
                // A straggler waits for its job's count, or a copied item
                // for its job's end: this pull reads the ledger.
                let for_speculation = self.ledger.is_some() && spec.wants_reading(&tasks, now);
                if for_speculation {
                    spec.read(now);
                }
                pull = Some(Box::pin(async move {
                    let deliveries = calls::within(limit, "a pull", queue.pull(max, wait)).await?;
                    let jobs = match &ledger {
                        Some(ledger)
                            if for_speculation
                                || wants.wants(deliveries.iter().map(|d| d.item.job.as_ref())) =>
                        {
                            let items = deliveries.iter().filter_map(|d| d.item.job.as_ref());
                            let read =
                                JobsSeen::read(&**ledger, &wants.watched, items.map(|j| &j.job));
                            Some(calls::within(call_timeout, "a ledger read", read).await)
                        }
                        _ => None,
                    };
                    Ok(Pulled { deliveries, jobs })
                }));
            }
            if acks.flush_at.is_none() && acks.in_flight == 0 && !acks.pending.is_empty() {
                self.flush_acks(&mut acks, &mut calls, ack_batch);
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
            self.counts.occupancy(tasks.len(), concurrency);
            tokio::select! {
                biased;
                _ = &mut aborted, if !tasks.is_empty() || pull.is_some() => {
                    interrupted += self.interrupt(&mut tasks, &mut keeper, &mut calls);
                    break None;
                }
                _ = &mut stopped, if !stopping => {
                    stopping = true;
                    backlog = None;
                    // From the signal, not from `now`: that was read before
                    // the select and may be long stale by now.
                    grace_end = Some(Instant::now() + self.config.grace);
                    info!(worker = %self.config.name, running = tasks.len(), grace = ?self.config.grace,
                        "stopping: no more pulls; running tasks may finish within the grace period");
                }
                // Before the tasks: a steady stream of short tasks must not
                // starve lease renewals or the grace end.
                _ = &mut timer, if timer_at.is_some() => {
                    timer_at = None;
                    let now = Instant::now();
                    if busy && grace_end.is_some_and(|end| end <= now) {
                        warn!(worker = %self.config.name, running = tasks.len(),
                            "grace period over: stopping running tasks and giving their items back");
                        interrupted += self.interrupt(&mut tasks, &mut keeper, &mut calls);
                        break None;
                    }
                    for (token, why) in keeper.give_ups(now) {
                        if why == GiveUp::Lapsed {
                            self.counts.leases(0, 1);
                        }
                        stops.stop(&token, self.give_up_reason(why));
                    }
                    if keeper.next_due().is_some_and(|due| due <= now) {
                        self.renew(&mut keeper, &mut calls, now);
                    }
                    if acks.flush_at.is_some_and(|at| at <= now) {
                        acks.flush_at = None;
                    }
                }
                Some(done) = calls.next() => {
                    if let Some(error) = self.finished_call(done, &mut acks, &mut keeper, &mut stops, &mut calls) {
                        fatal = Some(error);
                        break None;
                    }
                }
                Some(finished) = tasks.next() => {
                    spec.finished(&finished);
                    self.note_death(&finished, &mut gate);
                    self.settle(finished, &mut keeper, &mut acks, &mut calls, &capabilities, &hurry);
                    // Settle every task that is already done, then ack them
                    // together: batches grow with load, and no ack waits on a
                    // timer (a worker killed then repeats only what it held).
                    let mut burst = 1;
                    while burst < ack_batch {
                        let Some(Some(finished)) = tasks.next().now_or_never() else {
                            break;
                        };
                        spec.finished(&finished);
                        self.note_death(&finished, &mut gate);
                        self.settle(finished, &mut keeper, &mut acks, &mut calls, &capabilities, &hurry);
                        burst += 1;
                    }
                    // The last task ended while a pull waits for work: the
                    // queue had nothing ready since that pull began.
                    idle = tasks.is_empty() && pull.is_some();
                }
                Some(result) = OptionFuture::from(backlog.as_mut()) => {
                    backlog = None;
                    match result {
                        Ok(reading) => {
                            if let Some(jobs) = &reading.jobs {
                                let seen = JobsSeen { jobs: jobs.clone(), forgotten: reading.forgotten.clone() };
                                if let Err(error) = gate.learn(&seen, Instant::now()) {
                                    fatal = Some(error);
                                    break None;
                                }
                            }
                            // A job this worker saw and the ledger no longer
                            // shows is no evidence of an end: look again.
                            let state = if gate.missing() {
                                DrainState::Busy
                            } else {
                                drain.observe_reading(&reading, Instant::now())
                            };
                            match state {
                            // A copy of an item that succeeded here may wait in the
                            // queue: one more pull takes and acks it, rather than
                            // leave it behind the job.
                            DrainState::Drained if spec.sweep() => {
                                debug!(worker = %self.config.name, "one more pull for copies left behind");
                            }
                            DrainState::Drained => {
                                match reading.jobs.as_deref() {
                                    _ if !gate.halted().is_empty() => warn!(worker = %self.config.name,
                                        jobs = ?gate.halted(), "every job is over, and some halted past their --max-dead"),
                                    Some(jobs) if !jobs.is_empty() => info!(worker = %self.config.name,
                                        jobs = jobs.len(), "every job on the queue is complete"),
                                    _ => info!(worker = %self.config.name, "queue drained"),
                                }
                                if pull.is_none() || capabilities.cancel_safe_pull {
                                    break Some(if gate.halted().is_empty() {
                                        WorkerExit::Drained
                                    } else {
                                        WorkerExit::Halted
                                    });
                                }
                                debug!("waiting for the open pull to answer before ending");
                                ending = true;
                            }
                            state => debug!(?reading, ?state, "not drained yet"),
                        }},
                        Err(error) if error.is_retryable() => {
                            warn!(error = %crate::ErrorChain(&error), "could not read the backlog; will try again");
                            // An outage is no evidence of an empty queue.
                            drain.unreadable();
                        }
                        Err(error) => {
                            fatal = Some(error);
                            break None;
                        }
                    }
                }
                Some(result) = OptionFuture::from(pull.as_mut()) => {
                    pull = None;
                    match result {
                        Ok(Pulled { deliveries, jobs }) if deliveries.is_empty() => {
                            pull_failures = 0;
                            if let Some(Ok(seen)) = jobs {
                                let now = Instant::now();
                                if let Err(error) = gate.learn(&seen, now) {
                                    fatal = Some(error);
                                    break None;
                                }
                                if spec.on() {
                                    self.stop_redundant(&mut tasks, &mut keeper, &mut calls, &gate, &mut spec);
                                    let copies = spec.copies(&tasks, &gate, concurrency.saturating_sub(tasks.len()), now);
                                    self.publish_copies(copies, &mut calls);
                                }
                            }
                            idle = tasks.is_empty();
                        }
                        Ok(Pulled { deliveries, jobs }) => {
                            pull_failures = 0;
                            drain.busy();
                            // Work after all: the end is read again later.
                            ending = false;
                            let now = Instant::now();
                            let read = match jobs {
                                Some(Ok(seen)) => match gate.learn(&seen, now) {
                                    Ok(()) => true,
                                    Err(error) => {
                                        let tokens: Vec<_> = deliveries.into_iter().map(|d| d.token).collect();
                                        self.give_back(tokens, &mut calls);
                                        fatal = Some(error);
                                        break None;
                                    }
                                },
                                Some(Err(error)) => {
                                    warn!(error = %crate::ErrorChain(&error), "could not read the jobs; handing back items of jobs not known yet");
                                    false
                                }
                                None => false,
                            };
                            if read && spec.on() {
                                self.stop_redundant(&mut tasks, &mut keeper, &mut calls, &gate, &mut spec);
                            }
                            if read && gate.scope_over() == Some(true) {
                                scope_over = true;
                                if !gate.halted().is_empty() && !tasks.is_empty() {
                                    // Its job halted: what runs goes back at no cost.
                                    interrupted += self.interrupt(&mut tasks, &mut keeper, &mut calls);
                                }
                            }
                            if stopping || scope_over {
                                // A copy made redundant is acked, not handed back.
                                let (discards, backs): (Vec<_>, Vec<_>) =
                                    deliveries.into_iter().partition(|delivery| {
                                        delivery.item.job.as_ref().is_some_and(|job| {
                                            speculate::is_copy(&delivery.item) && gate.complete(job)
                                        })
                                    });
                                self.discard(discards.into_iter().map(|d| d.token).collect(), &mut calls);
                                self.give_back(backs.into_iter().map(|d| d.token).collect(), &mut calls);
                            } else {
                                let (mut backs, mut discards) = (Vec::new(), Vec::new());
                                let mut started = 0usize;
                                let mut unledgered = None;
                                for delivery in deliveries {
                                    let verdict = match (&self.ledger, &delivery.item.job) {
                                        // A copy of an item its job has settled: redundant.
                                        (Some(_), Some(job))
                                            if speculate::is_copy(&delivery.item) && gate.complete(job) =>
                                        {
                                            Verdict::Discard
                                        }
                                        // A copy of an item this worker runs: it is for
                                        // another worker (this one may be the slow node).
                                        (Some(_), Some(job))
                                            if speculate::is_copy(&delivery.item) && speculate::runs(&tasks, job) =>
                                        {
                                            Verdict::HandBack
                                        }
                                        (Some(_), job) => gate.judge(job.as_ref()),
                                        // An item of a job, and no ledger to count it in:
                                        // run, it would hold its job open for ever.
                                        (None, Some(job)) => {
                                            unledgered.get_or_insert_with(|| Arc::clone(&job.job));
                                            Verdict::HandBack
                                        }
                                        (None, None) => Verdict::Run,
                                    };
                                    match verdict {
                                        Verdict::Run => {
                                            started += 1;
                                            if let Some(lapses) = self.past_lapses(&delivery) {
                                                if self.ledger.is_none() || delivery.item.job.is_none() {
                                                    drain.foreign_item();
                                                }
                                                self.bury_lost(delivery, lapses, &mut keeper, &mut gate, &mut calls);
                                            } else if !self.start(&mut tasks, &mut keeper, delivery, now) {
                                                drain.foreign_item();
                                            }
                                        }
                                        Verdict::Discard => discards.push(delivery.token),
                                        Verdict::HandBack => backs.push(delivery.token),
                                    }
                                }
                                self.discard(discards, &mut calls);
                                if started == 0 && !backs.is_empty() {
                                    // Only other workers' items: do not spin on them.
                                    pull_not_before = Some(now + self.config.poll);
                                }
                                self.give_back(backs, &mut calls);
                                if let Some(job) = unledgered {
                                    fatal = Some(QueueError::new(
                                        crate::QueueErrorKind::Invalid,
                                        format!(
                                            "an item of job `{job}` arrived, but this worker was given \
                                             no ledger to record it in, so its job could never complete: \
                                             open the backend with its ledger (`Driver::open`, or the \
                                             driver's `into_backend`) instead of `Backend::new(queue)`"
                                        ),
                                    ));
                                    break None;
                                }
                            }
                        }
                        Err(error) if error.is_retryable() => {
                            pull_failures += 1;
                            let delay = self.config.backoff.delay(pull_failures).min(Duration::from_secs(30));
                            warn!(error = %crate::ErrorChain(&error), retry_in = ?delay, "pull failed; retrying");
                            drain.unreadable();
                            pull_not_before = Some(Instant::now() + delay);
                        }
                        Err(error) => {
                            fatal = Some(error);
                            break None;
                        }
                    }
                }
            }
        };
        if let Some(error) = &fatal {
            warn!(worker = %self.config.name, error = %crate::ErrorChain(error), running = tasks.len(),
                "the queue refused for good: giving back what this worker holds before exiting");
            interrupted += self.interrupt(&mut tasks, &mut keeper, &mut calls);
        }
        // What is left to say to the queue gets the rest of the grace and a
        // little more, and is retried until then; nothing waits past that.
        hurry.cancel();
        let until =
            grace_end.unwrap_or_else(Instant::now).max(Instant::now()) + self.config.settle_budget;
        self.settle_all(calls, acks, &mut keeper, &mut stops, ack_batch, until)
            .await;
        if let Some(ledger) = &self.ledger {
            ledger.close().await;
        }
        self.counts.occupancy(0, concurrency);
        match (fatal, exit) {
            (Some(error), _) => Err(error),
            (None, Some(exit)) => Ok(exit),
            (None, None) => Ok(WorkerExit::Stopped { interrupted }),
        }
    }

    /// Read what decides the end: the ledger's jobs, and the backlog where
    /// it is needed (no jobs; an exact count that can show items without
    /// a job; or this worker ran items without a job).
    fn read_end(
        &self,
        capabilities: &crate::Capabilities,
        trusts_jobs: bool,
        scoped: bool,
        watched: Arc<std::collections::HashSet<Arc<str>>>,
    ) -> BacklogFuture {
        let queue = Arc::clone(&self.queue);
        let ledger = self.ledger.clone();
        let limit = self.config.call_timeout;
        let exact = capabilities.exact_backlog;
        Box::pin(async move {
            let (jobs, forgotten) = match &ledger {
                Some(ledger) => {
                    let read = JobsSeen::read(&**ledger, &watched, []);
                    let seen = calls::within(limit, "a ledger read", read).await?;
                    (Some(seen.jobs), seen.forgotten)
                }
                None => (None, None),
            };
            let by_jobs = jobs.as_deref().is_some_and(|jobs| !jobs.is_empty()) && trusts_jobs;
            let unfinished = jobs
                .as_deref()
                .is_some_and(|jobs| jobs.iter().any(|job| !job.is_over()));
            // A worker for given jobs ends by them alone.
            let backlog = if (scoped && jobs.is_some()) || (by_jobs && !exact) || unfinished {
                None
            } else {
                Some(calls::within(limit, "a backlog read", queue.backlog()).await?)
            };
            Ok(Reading {
                jobs,
                forgotten,
                backlog,
            })
        })
    }

    /// Stop the tasks of jobs the last reading shows complete: another
    /// copy settled their items, so they are redundant; their items are
    /// acked without a receipt (the ledger has one already).
    fn stop_redundant(
        &self,
        tasks: &mut tasks::Tasks,
        keeper: &mut LeaseKeeper,
        calls: &mut Calls<Finished>,
        gate: &JobGate,
        spec: &mut Speculation,
    ) {
        if !tasks
            .iter()
            .any(|running| running.job.as_ref().is_some_and(|job| gate.complete(job)))
        {
            return;
        }
        let mut redundant = Vec::new();
        for running in std::mem::take(tasks) {
            match &running.job {
                Some(job) if gate.complete(job) => {
                    spec.ended(Some(job));
                    keeper.release(&running.token);
                    info!(worker = %self.config.name, job = %job.job, seq = job.seq, copy = running.copy,
                        "stopping a redundant copy: its job is complete, another copy settled the item");
                    redundant.push(running.token.clone());
                }
                _ => tasks.push(running),
            }
        }
        self.discard(redundant, calls);
    }

    /// Publish speculative copies of stragglers ([`speculate`]).
    fn publish_copies(&self, copies: Vec<crate::Item>, calls: &mut Calls<Finished>) {
        if copies.is_empty() {
            return;
        }
        let queue = Arc::clone(&self.queue);
        let limit = self.config.call_timeout;
        let count = copies.len();
        calls.push(Box::pin(async move {
            let result = calls::within(limit, "a copy's publish", queue.publish(copies))
                .await
                .map(|_| ());
            Done::Copied { count, result }
        }));
    }

    /// Tell the gate when `finished` is a death (its last attempt failed,
    /// or it cannot run at all), so a job with a `--max-dead` is read
    /// again before the next items are judged.
    fn note_death(&self, finished: &Finished, gate: &mut JobGate) {
        let dies = match finished.outcome.kind {
            OutcomeKind::Fatal => true,
            OutcomeKind::Failed => finished.failed_attempt() >= self.config.max_attempts,
            OutcomeKind::Succeeded => false,
        };
        if let (true, Some(job)) = (dies, &finished.job) {
            gate.died(job);
        }
    }

    fn give_up_reason(&self, why: GiveUp) -> String {
        match why {
            GiveUp::MaxAge => format!(
                "stopped after {} (--max-lease-age): raise it for tasks that run longer",
                flag_duration(self.config.max_lease_age)
            ),
            GiveUp::Lapsed => "stopped: its lease ran out (the queue did not take a renewal), \
                 so another worker may already run the item"
                .to_string(),
        }
    }

    fn settle(
        &self,
        finished: Finished,
        keeper: &mut LeaseKeeper,
        acks: &mut AckBuffer,
        calls: &mut Calls<Finished>,
        capabilities: &crate::Capabilities,
        hurry: &tokio_util::sync::CancellationToken,
    ) {
        if finished.outcome.kind == OutcomeKind::Succeeded {
            // The keeper goes on renewing the lease until the ack has landed,
            // and the attempt is reported then (see `finished_call`).
            acks.pending.push((finished.token.clone(), finished));
            return;
        }
        // A nack or dead-letter ends this worker's lease either way.
        keeper.release(&finished.token);
        if finished.copy {
            // A speculative copy that failed is dropped: the original is
            // still live, and a dead copy would count the item settled
            // and stop an original on its way to success.
            info!(worker = %self.config.name, "a speculative copy failed; dropped, the original runs on");
            self.discard(vec![finished.token.clone()], calls);
            self.record(&finished, Settlement::Acked);
            return;
        }
        let outcome = &finished.outcome;
        let settlement = match outcome.kind {
            OutcomeKind::Failed if finished.failed_attempt() < self.config.max_attempts => {
                // Backoff by failed attempts: lapses lengthen no wait.
                let failed = finished.failed_attempt();
                let seed = std::hash::BuildHasher::hash_one(
                    &std::collections::hash_map::RandomState::new(),
                    (&*finished.id, finished.attempt),
                );
                let delay = self.config.backoff.jittered(failed, seed);
                let tokens = vec![finished.token.clone()];
                let queue = Arc::clone(&self.queue);
                let (limit, min_lease) = (self.config.call_timeout, capabilities.min_lease);
                // Where the backend counts failures apart, the failure is
                // told as one (`fail_attempt`), so that lapses are not charged.
                let counted = finished.failures.is_some();
                let delayed = if counted {
                    capabilities.delayed_fail
                } else {
                    capabilities.delayed_nack
                } || delay.is_zero();
                let item = String::from_utf8_lossy(&finished.payload).into_owned();
                // A held wait ends early when the worker ends: the failure
                // is told at once rather than left to lapse (a lapse).
                let hurry = hurry.clone();
                let max_lease = capabilities.max_lease;
                calls.push(Box::pin(async move {
                    let result = match (counted, delayed) {
                        (true, true) => {
                            calls::within(
                                limit,
                                "a failed attempt",
                                queue.fail_attempt(&tokens, delay),
                            )
                            .await
                        }
                        (false, true) => {
                            calls::within(limit, "a nack", queue.nack(&tokens, delay)).await
                        }
                        // The lease is held for the delay, then the failure told.
                        (true, false) => {
                            let delay = delay.min(max_lease.saturating_sub(limit));
                            let held = calls::within(
                                limit,
                                "a lease extension",
                                queue.extend_lease(&tokens, delay + limit),
                            )
                            .await;
                            match held {
                                Ok(report) if report.lost.is_empty() => {
                                    tokio::select! {
                                        _ = tokio::time::sleep(delay) => {}
                                        _ = hurry.cancelled() => {}
                                    }
                                    calls::within(
                                        limit,
                                        "a failed attempt",
                                        queue.fail_attempt(&tokens, Duration::ZERO),
                                    )
                                    .await
                                }
                                other => other,
                            }
                        }
                        // No delayed nack: hold the lease for `delay` and let it lapse.
                        (false, false) => {
                            calls::within(
                                limit,
                                "a lease extension",
                                queue.extend_lease(&tokens, delay.max(min_lease)),
                            )
                            .await
                        }
                    };
                    Done::Settle {
                        what: "retry",
                        item,
                        tokens,
                        result,
                    }
                }));
                Settlement::Retrying { delay }
            }
            OutcomeKind::Succeeded | OutcomeKind::Failed | OutcomeKind::Fatal => {
                let why = outcome.reason.as_deref().unwrap_or("failed");
                let reason = if outcome.kind == OutcomeKind::Fatal {
                    format!("{why} (not retried: no attempt can succeed)")
                } else {
                    let lost = match finished.lapses() {
                        Some(0) | None => String::new(),
                        Some(n) => format!("; {} besides", lost_times(n)),
                    };
                    format!(
                        "{why} on attempt {} of {}{lost}",
                        finished.failed_attempt(),
                        self.config.max_attempts
                    )
                };
                self.dead_letter(&finished, reason, calls);
                Settlement::DeadLettered
            }
        };
        self.record(&finished, settlement);
    }

    /// Dead-letter `finished` with `reason`, and only then its receipt.
    fn dead_letter(&self, finished: &Finished, reason: String, calls: &mut Calls<Finished>) {
        let item = String::from_utf8_lossy(&finished.payload).into_owned();
        warn!(%item, %reason, "item dead-lettered");
        let queue = Arc::clone(&self.queue);
        let tokens = vec![finished.token.clone()];
        let limit = self.config.call_timeout;
        let at = crate::job::unix_millis();
        let receipt = receipt(
            finished,
            &self.config.name,
            Settled::Dead,
            Some(&reason),
            at,
        )
        .map(|receipt| receipt.to_receipt());
        let ledger = self.ledger.clone().filter(|_| receipt.is_some());
        calls.push(Box::pin(async move {
            // The item goes to the dead place first, and its receipt
            // is written only for a lease still held: an item is
            // never counted dead while it is live (the ledger does
            // both in one step where it can).
            let result = match &ledger {
                Some(ledger) => {
                    calls::within(
                        limit,
                        "a dead-letter and its receipt",
                        ledger.record_then_dead_letter(
                            &*queue,
                            &tokens,
                            &reason,
                            std::slice::from_ref(&receipt),
                        ),
                    )
                    .await
                }
                None => {
                    calls::within(limit, "a dead-letter", queue.dead_letter(&tokens, &reason)).await
                }
            };
            Done::Settle {
                what: "dead-letter",
                item,
                tokens,
                result,
            }
        }));
    }

    /// A delivery whose item has lapsed more than `--max-lapses` times: it
    /// is dead-lettered, "lost N times", without running again. `None`:
    /// the delivery runs.
    fn past_lapses(&self, delivery: &Delivery) -> Option<u32> {
        delivery
            .lapses()
            .filter(|lapses| *lapses > self.config.max_lapses)
    }

    /// Bury a delivery lost more than `--max-lapses` times (see
    /// [`Worker::past_lapses`]), with its receipt.
    fn bury_lost(
        &self,
        delivery: Delivery,
        lapses: u32,
        keeper: &mut LeaseKeeper,
        gate: &mut JobGate,
        calls: &mut Calls<Finished>,
    ) {
        let job = self.ledger.as_ref().and(delivery.item.job.clone());
        let reason = format!(
            "{}: each time its lease ended with no answer (its worker killed, its node \
             lost or its network cut), past --max-lapses {}; {} failed attempt(s)",
            lost_times(lapses),
            self.config.max_lapses,
            delivery.failures.unwrap_or(0)
        );
        let outcome = crate::TaskOutcome::failed(reason.clone());
        let finished = Finished::unrun(delivery, job, outcome);
        keeper.release(&finished.token);
        if let Some(job) = &finished.job {
            gate.died(job);
        }
        self.dead_letter(&finished, reason, calls);
        self.record(&finished, Settlement::DeadLettered);
    }

    fn record(&self, finished: &Finished, settlement: Settlement) {
        self.counts.finished(settlement, finished.elapsed);
        self.events.attempt_finished(&AttemptRecord {
            id: &finished.id,
            payload: &finished.payload,
            attempt: finished.attempt,
            outcome: &finished.outcome,
            settlement,
            elapsed: finished.elapsed,
            worker: &self.config.name,
        });
    }

    /// Send the buffered acks, at most `ack_batch` a call.
    fn flush_acks(&self, acks: &mut AckBuffer, calls: &mut Calls<Finished>, ack_batch: usize) {
        while !acks.pending.is_empty() {
            // The next batch starts with the room this one had: a vector
            // regrown by doubling copies every finished task again.
            let batch = if acks.pending.len() <= ack_batch {
                let room = acks.pending.capacity();
                std::mem::replace(&mut acks.pending, Vec::with_capacity(room))
            } else {
                let rest = acks.pending.split_off(ack_batch);
                std::mem::replace(&mut acks.pending, rest)
            };
            let queue = Arc::clone(&self.queue);
            let limit = self.config.call_timeout;
            // One clock reading a batch: its items are acked together.
            let at = crate::job::unix_millis();
            // Items carry their job only where the worker has a ledger.
            let ledger = self
                .ledger
                .clone()
                .filter(|_| batch.iter().any(|(_, finished)| finished.job.is_some()));
            let worker = Arc::clone(&self.config.name);
            acks.in_flight += 1;
            calls.push(Box::pin(async move {
                let tokens: Vec<LeaseToken> = batch.iter().map(|(t, _)| t.clone()).collect();
                // The receipts first (or with the ack): a crash between the
                // two re-runs an item, never loses its count.
                let result = if let Some(ledger) = ledger {
                    // Borrowed from the batch: nothing copied or counted
                    // per item; sized once, not regrown by doubling.
                    let mut receipts = Vec::with_capacity(batch.len());
                    receipts.extend(batch.iter().filter_map(|(_, finished)| {
                        receipt(finished, &worker, Settled::Done, None, at)
                    }));
                    calls::within(
                        limit,
                        "a receipt and ack",
                        ledger.record_then_ack(&*queue, &tokens, &receipts),
                    )
                    .await
                } else {
                    calls::within(limit, "an ack", queue.ack(&tokens)).await
                };
                Done::Ack { batch, result }
            }));
        }
    }

    /// Act on a call's answer. Returns the error of a receipt, ack or
    /// dead-letter that failed for good (a ledger sibling deleted, a
    /// permission missing): the worker stops on it, rather than run items
    /// whose settling can only fail, after it gave back what it held.
    fn finished_call(
        &self,
        done: Done<Finished>,
        acks: &mut AckBuffer,
        keeper: &mut LeaseKeeper,
        stops: &mut TaskStops,
        calls: &mut Calls<Finished>,
    ) -> Option<QueueError> {
        match done {
            Done::Ack { batch, result } => {
                acks.in_flight -= 1;
                let retryable = matches!(&result, Err(error) if error.is_retryable());
                if !retryable {
                    acks.failures = 0;
                }
                if !retryable {
                    for (token, _) in &batch {
                        keeper.release(token);
                    }
                }
                match result {
                    Ok(report) => {
                        if !report.lost.is_empty() {
                            warn!(
                                count = report.lost.len(),
                                "acks came after the lease ended; those items will run again"
                            );
                        }
                        for (token, finished) in &batch {
                            let settlement = if report.lost.contains(token) {
                                Settlement::Unsettled
                            } else {
                                Settlement::Acked
                            };
                            self.record(finished, settlement);
                        }
                    }
                    Err(error) if error.is_retryable() => {
                        acks.failures += 1;
                        let interval = self.config.ack_interval;
                        let retry_in = interval
                            .saturating_mul(1 << (acks.failures - 1).min(10))
                            .min(ACK_RETRY_MAX.max(interval));
                        warn!(error = %crate::ErrorChain(&error), pending = batch.len(), ?retry_in, "ack failed; retrying");
                        acks.pending.extend(batch);
                        acks.flush_at = Some(Instant::now() + retry_in);
                    }
                    Err(error) => {
                        warn!(error = %crate::ErrorChain(&error), count = batch.len(),
                            "recording or acking finished items failed for good: giving them back and stopping");
                        for (_, finished) in &batch {
                            self.record(finished, Settlement::Unsettled);
                        }
                        let tokens = batch.into_iter().map(|(token, _)| token).collect();
                        self.give_back(tokens, calls);
                        return Some(error);
                    }
                }
            }
            Done::Renew {
                tokens,
                sent,
                result,
            } => match result {
                Ok(report) => {
                    let lost = tokens.iter().filter(|t| report.lost.contains(*t)).count();
                    self.counts.leases(tokens.len() - lost, lost);
                    for token in &tokens {
                        if report.lost.contains(token) {
                            warn!(
                                ?token,
                                "lease lost while the task runs: stopping it, the queue delivers the item again"
                            );
                            keeper.release(token);
                            stops.stop(token, self.give_up_reason(GiveUp::Lapsed));
                        } else {
                            keeper.renewed(token, sent);
                        }
                    }
                }
                // The keeper tries again at the retry time set when it was sent.
                Err(error) => {
                    warn!(error = %crate::ErrorChain(&error), count = tokens.len(), "could not extend leases");
                }
            },
            Done::Settle {
                what,
                item,
                tokens,
                result,
            } => match result {
                Ok(report) if !report.lost.is_empty() => warn!(
                    %item,
                    "{what} came too late: the lease had already ended, so the queue will deliver the item again"
                ),
                Ok(_) => {}
                Err(error) if what == "dead-letter" && !error.is_retryable() => {
                    warn!(%item, error = %crate::ErrorChain(&error),
                        "dead-letter failed for good: giving the item back and stopping");
                    self.give_back(tokens, calls);
                    return Some(error);
                }
                Err(error) => warn!(
                    %item, error = %crate::ErrorChain(&error),
                    "{what} failed; the item comes back when its lease ends"
                ),
            },
            Done::Copied { count, result } => match result {
                Ok(()) => {
                    info!(worker = %self.config.name, count, "published a speculative copy of a straggler")
                }
                Err(error) => warn!(error = %crate::ErrorChain(&error), count,
                    "could not publish a speculative copy; the original runs on"),
            },
            Done::GiveBack { tokens, result } => {
                if let Err(error) = result {
                    warn!(error = %crate::ErrorChain(&error), count = tokens.len(),
                        "could not give items back; they return when their leases end");
                }
            }
        }
        None
    }

    fn renew(&self, keeper: &mut LeaseKeeper, calls: &mut Calls<Finished>, now: Instant) {
        let due = keeper.due(now);
        if due.is_empty() {
            return;
        }
        let lease = keeper.lease();
        // A renewal that does not answer in time is sent again then, while
        // the lease lasts.
        let limit = self
            .config
            .call_timeout
            .min(lease / 3)
            .max(Duration::from_millis(1));
        for token in &due {
            keeper.retry_at(token, now + limit);
        }
        let queue = Arc::clone(&self.queue);
        calls.push(Box::pin(async move {
            let result =
                calls::within(limit, "a lease extension", queue.extend_lease(&due, lease)).await;
            Done::Renew {
                tokens: due,
                sent: now,
                result,
            }
        }));
    }
}

/// How a dead item's reason says it lapsed `n` times: "lost once", "lost
/// 3 times".
pub fn lost_times(n: u32) -> String {
    match n {
        1 => "lost once".to_string(),
        n => format!("lost {n} times"),
    }
}

/// `1h`, `90s`, `1500ms`: a duration as a flag would be written.
fn flag_duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    if duration.subsec_millis() != 0 {
        format!("{}ms", duration.as_millis())
    } else if secs > 0 && secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else if secs > 0 && secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}
