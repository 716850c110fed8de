//! Stragglers (`--speculate`, [`WorkerConfig::speculate`]): a second copy
//! of an item that runs far longer than its job's items usually do.
//!
//! How a straggler is judged, by the worker that holds it, from what that
//! worker alone knows (no shared state, no extra writes):
//! - *slow*: it has run more than [`SLOW_FACTOR`] times the median of the
//!   last successes this worker settled for the same job (at least
//!   [`MIN_SUCCESSES`] of them), and more than [`FLOOR`];
//! - *the tail*: this worker's last pull came back empty (nothing of any
//!   job is ready, so every remaining item is running somewhere), and the
//!   job's remaining items that this worker does not run, by the ledger
//!   read for the purpose (at most every [`READ_EVERY`]), are fewer than
//!   this worker's idle slots.
//!
//! Then it publishes one copy of the item (same payload, attributes, job
//! and seq, plus the attribute [`COPY_ATTRIBUTE`]), once per item. The
//! copy is an ordinary delivery to whichever worker pulls it. The ledger
//! counts `(job, seq)` once, whoever settles it first; the other copy is
//! made redundant, and is stopped (acked, no receipt: it is not a failure)
//! by its worker once a reading shows the job complete. A copy delivered
//! after its job is complete is acked without running. A copy is never
//! copied again.
//!
//! [`WorkerConfig::speculate`]: super::WorkerConfig::speculate

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::jobs::JobGate;
use super::tasks::Tasks;
use crate::Item;
use crate::job::JobItem;

/// The attribute that marks a speculative copy (value `"1"`).
pub const COPY_ATTRIBUTE: &str = "forloop-copy";
/// How many times the median success an item must have run to be slow.
pub const SLOW_FACTOR: u32 = 3;
/// The successes of a job a worker must have settled to judge its median.
pub const MIN_SUCCESSES: usize = 5;
/// No item younger than this is slow: a copy of a quick item saves little
/// and costs a publish.
pub const FLOOR: Duration = Duration::from_secs(10);
/// How often the holder of a slow item reads the ledger for it.
pub const READ_EVERY: Duration = Duration::from_secs(5);
/// The recent successes kept per job for the median.
const KEPT: usize = 127;

/// Whether `item` is a speculative copy.
pub fn is_copy(item: &Item) -> bool {
    item.attributes.contains_key(COPY_ATTRIBUTE)
}

/// Whether one of `tasks` runs `job`'s item (an original or a copy).
pub(super) fn runs(tasks: &Tasks, job: &JobItem) -> bool {
    tasks.iter().any(|running| {
        running
            .job
            .as_ref()
            .is_some_and(|j| j.seq == job.seq && j.job == job.job)
    })
}

/// What a worker knows for speculation.
#[derive(Debug, Default)]
pub(super) struct Speculation {
    on: bool,
    /// The last successes this worker settled, per job.
    successes: HashMap<Arc<str>, VecDeque<Duration>>,
    /// The items this worker published a copy of.
    copied: HashSet<(Arc<str>, u64)>,
    /// This worker published a copy, and has not yet made its one pull
    /// for copies left behind.
    sweep: bool,
    read_at: Option<Instant>,
}

impl Speculation {
    pub(super) fn new(on: bool) -> Self {
        Self {
            on,
            ..Self::default()
        }
    }

    pub(super) fn on(&self) -> bool {
        self.on
    }

    /// An attempt of `job` succeeded after `elapsed`.
    pub(super) fn succeeded(&mut self, job: Option<&JobItem>, elapsed: Duration) {
        let (true, Some(job)) = (self.on, job) else {
            return;
        };
        let kept = self.successes.entry(Arc::clone(&job.job)).or_default();
        if kept.len() == KEPT {
            kept.pop_front();
        }
        kept.push_back(elapsed);
    }

    /// How long an item of `job` must have run to be slow (`None`: too
    /// few successes to judge).
    fn threshold(&self, job: &str) -> Option<Duration> {
        let kept = self.successes.get(job)?;
        if kept.len() < MIN_SUCCESSES {
            return None;
        }
        let mut sorted: Vec<Duration> = kept.iter().copied().collect();
        sorted.sort_unstable();
        let median = sorted[sorted.len() / 2];
        Some(median.saturating_mul(SLOW_FACTOR).max(FLOOR))
    }

    /// The running items that are slow and not copied yet (nor copies).
    fn slow<'a>(
        &'a self,
        tasks: &'a Tasks,
        now: Instant,
    ) -> impl Iterator<Item = &'a super::tasks::Running> {
        tasks.iter().filter(move |running| {
            let Some(job) = running.job.as_ref().filter(|_| !running.copy) else {
                return false;
            };
            !self.copied.contains(&(Arc::clone(&job.job), job.seq))
                && self
                    .threshold(&job.job)
                    .is_some_and(|at| now.saturating_duration_since(running.started) > at)
        })
    }

    /// Whether the next pull should read the ledger: a slow item waits
    /// for the job's count, or a copied item runs (its job may be
    /// complete already), and the last such reading is [`READ_EVERY`] old.
    pub(super) fn wants_reading(&self, tasks: &Tasks, now: Instant) -> bool {
        if !self.on
            || self
                .read_at
                .is_some_and(|at| now.saturating_duration_since(at) < READ_EVERY)
        {
            return false;
        }
        let copied = tasks.iter().any(|running| {
            running.copy
                || running
                    .job
                    .as_ref()
                    .is_some_and(|job| self.copied.contains(&(Arc::clone(&job.job), job.seq)))
        });
        copied || self.slow(tasks, now).next().is_some()
    }

    /// A pull read the ledger for speculation.
    pub(super) fn read(&mut self, now: Instant) {
        self.read_at = Some(now);
    }

    /// The copies to publish now, after an empty pull and a reading in
    /// `gate`, with `idle` free slots. Each item is copied once.
    pub(super) fn copies(
        &mut self,
        tasks: &Tasks,
        gate: &JobGate,
        idle: usize,
        now: Instant,
    ) -> Vec<Item> {
        if !self.on || idle == 0 {
            return Vec::new();
        }
        let mut copies = Vec::new();
        let slow: Vec<&super::tasks::Running> = self.slow(tasks, now).collect();
        let mut taken = Vec::new();
        for running in slow {
            let Some(job) = &running.job else { continue };
            let Some(remaining) = gate.remaining(&job.job) else {
                continue;
            };
            let mine = tasks
                .iter()
                .filter(|r| r.job.as_ref().is_some_and(|j| j.job == job.job))
                .count() as u64;
            if remaining.saturating_sub(mine) >= idle as u64 {
                continue;
            }
            let mut attributes = running.attributes.as_deref().cloned().unwrap_or_default();
            attributes.insert(COPY_ATTRIBUTE.to_string(), "1".to_string());
            copies.push(Item {
                payload: running.payload.clone(),
                attributes: Arc::new(attributes),
                job: Some(job.clone()),
            });
            taken.push((Arc::clone(&job.job), job.seq));
        }
        self.sweep |= !taken.is_empty();
        self.copied.extend(taken);
        copies
    }

    /// An attempt ended: a success of a job counts towards its median.
    pub(super) fn finished(&mut self, finished: &super::tasks::Finished) {
        if !self.on {
            return;
        }
        if finished.outcome.kind == crate::handler::OutcomeKind::Succeeded {
            self.succeeded(finished.job.as_ref(), finished.elapsed);
        }
        self.ended(finished.job.as_ref());
    }

    /// Whether to make one more pull before ending, for a copy this
    /// worker published that may wait in the queue (its original won
    /// here): the pull acks it (its job is complete) rather than leave it
    /// behind. Once.
    pub(super) fn sweep(&mut self) -> bool {
        std::mem::take(&mut self.sweep)
    }

    /// A running item of this job was settled or stopped: forget its copy.
    pub(super) fn ended(&mut self, job: Option<&JobItem>) {
        if let Some(job) = job
            && !self.copied.is_empty()
        {
            self.copied.remove(&(Arc::clone(&job.job), job.seq));
        }
    }
}
