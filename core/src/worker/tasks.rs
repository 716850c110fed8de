//! Running tasks: starting one for a delivery (its handler under the
//! task timeout, a panic caught as a failure) and stopping the ones whose
//! leases the worker let go.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::stream::FuturesUnordered;
use tokio::time::Instant;

use super::{LeaseKeeper, Worker};
use crate::job::JobItem;
use crate::{Delivery, LeaseToken, Task, TaskOutcome};

/// An attempt that ended, with what settling it needs.
pub(super) struct Finished {
    pub(super) token: LeaseToken,
    pub(super) id: crate::MessageId,
    pub(super) payload: Bytes,
    pub(super) attempt: u32,
    /// The failed attempts before this one, where the backend counts them.
    pub(super) failures: Option<u32>,
    pub(super) job: Option<JobItem>,
    /// A speculative copy ([`super::speculate`]).
    pub(super) copy: bool,
    pub(super) outcome: TaskOutcome,
    pub(super) elapsed: Duration,
}

impl Finished {
    /// Which failed attempt this one is, should it fail: counted among
    /// failures where the backend keeps them apart, else among deliveries.
    pub(super) fn failed_attempt(&self) -> u32 {
        self.failures.map_or(self.attempt, |failures| failures + 1)
    }

    /// The deliveries before this one that lapsed, where known.
    pub(super) fn lapses(&self) -> Option<u32> {
        let failures = self.failures?;
        Some(self.attempt.saturating_sub(1).saturating_sub(failures))
    }

    /// A delivery that does not run: it settles at once with `outcome`.
    pub(super) fn unrun(delivery: Delivery, job: Option<JobItem>, outcome: TaskOutcome) -> Self {
        Self {
            copy: super::speculate::is_copy(&delivery.item),
            token: delivery.token,
            id: delivery.id,
            payload: delivery.item.payload,
            attempt: delivery.attempt,
            failures: delivery.failures,
            job,
            outcome,
            elapsed: Duration::ZERO,
        }
    }
}

/// Running tasks. They run on the worker's own task, like
/// `for_each_concurrent`: handlers await I/O and must not block (use
/// `spawn_blocking` for CPU-heavy work); this keeps the per-item cost low.
pub(super) type Tasks = FuturesUnordered<Running>;

fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-text panic".to_string())
}

impl Worker {
    /// Start a task for `delivery`; says whether the item belongs to a job.
    pub(super) fn start(
        &self,
        tasks: &mut Tasks,
        keeper: &mut LeaseKeeper,
        delivery: Delivery,
        now: Instant,
    ) -> bool {
        keeper.hold(delivery.token.clone(), delivery.deadline, now);
        let job = self.ledger.as_ref().and(delivery.item.job.clone());
        let of_job = job.is_some();
        let copy = super::speculate::is_copy(&delivery.item);
        // Kept only where a copy may be made: no count touched per item else.
        let attributes = self
            .config
            .speculate
            .then(|| Arc::clone(&delivery.item.attributes));
        let handler = Arc::clone(&self.handler);
        let timeout = self.config.task_timeout;
        self.counts.started();
        let running = Running {
            token: delivery.token.clone(),
            id: delivery.id.clone(),
            payload: delivery.item.payload.clone(),
            attempt: delivery.attempt,
            failures: delivery.failures,
            job: job.clone(),
            copy,
            attributes,
            started: now,
            future: Box::pin(async move {
                let started = Instant::now();
                let payload = delivery.item.payload.clone();
                let task = Task {
                    id: delivery.id.clone(),
                    item: delivery.item,
                    attempt: delivery.attempt,
                    output_dir: None,
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
                    payload,
                    attempt: delivery.attempt,
                    failures: delivery.failures,
                    job,
                    copy,
                    outcome,
                    elapsed: started.elapsed(),
                }
            }),
        };
        tasks.push(running);
        of_job
    }

    /// Stop the tasks whose leases the worker let go (one copy of a task at
    /// a time): their futures are dropped, which kills a command's process
    /// group, and each attempt ends as failed with the reason. Rare, so the
    /// running set is rebuilt rather than every task carrying a stop signal.
    pub(super) fn stop_tasks(&self, tasks: &mut Tasks, stops: &mut TaskStops) -> Vec<Finished> {
        let mut stopped = Vec::new();
        for running in std::mem::take(tasks) {
            match stops.take(&running.token) {
                Some(reason) => stopped.push(Finished {
                    elapsed: running.started.elapsed(),
                    token: running.token,
                    id: running.id,
                    payload: running.payload,
                    attempt: running.attempt,
                    failures: running.failures,
                    job: running.job,
                    copy: running.copy,
                    outcome: TaskOutcome::failed(reason),
                }),
                None => tasks.push(running),
            }
        }
        stops.0.clear();
        stopped
    }
}

/// Tasks the worker must stop, with why: filled when it lets a lease go,
/// emptied by [`Worker::stop_tasks`] on the same loop turn.
#[derive(Default)]
pub(super) struct TaskStops(pub(super) Vec<(LeaseToken, String)>);

impl TaskStops {
    pub(super) fn stop(&mut self, token: &LeaseToken, reason: String) {
        self.0.push((token.clone(), reason));
    }

    pub(super) fn take(&mut self, token: &LeaseToken) -> Option<String> {
        let at = self.0.iter().position(|(t, _)| t == token)?;
        Some(self.0.swap_remove(at).1)
    }
}

/// A running task, with what the worker needs to stop it from outside.
pub(super) struct Running {
    pub(super) token: LeaseToken,
    pub(super) id: crate::MessageId,
    pub(super) payload: Bytes,
    pub(super) attempt: u32,
    pub(super) failures: Option<u32>,
    pub(super) job: Option<JobItem>,
    /// A speculative copy ([`super::speculate`]).
    pub(super) copy: bool,
    /// The item's attributes, for a copy of it (with `--speculate` only).
    pub(super) attributes: Option<Arc<std::collections::BTreeMap<String, String>>>,
    pub(super) started: Instant,
    pub(super) future: Pin<Box<dyn Future<Output = Finished> + Send>>,
}

impl Future for Running {
    type Output = Finished;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Finished> {
        self.future.as_mut().poll(cx)
    }
}
