//! The work queue: the one trait every backend implements, and the types of
//! the delivery contract.
//!
//! # Delivery contract
//!
//! Every driver keeps these promises; `forloop_core::conformance` checks them.
//!
//! 1. At least once: an item is never lost while the server keeps its data.
//! 2. An acked item is never delivered again (unless the backend documents a
//!    duplicate, which its conformance run then marks).
//! 3. An unacked item comes back after its deadline; [`WorkQueue::extend_lease`]
//!    keeps it away; `nack(0)` brings it back at once and `nack(d)` after about `d`.
//! 4. The attempt count rises on each delivery; once an item has been delivered
//!    [`QueueConfig::max_attempts`] times and is released again (deadline,
//!    nack), it goes to the dead-letter place and [`Backlog::dead`] counts it.
//! 5. No item is held without a lease: a pull returns at most `max` items, so a
//!    worker that asks only for its free slots prefetches nothing.
//! 6. Drain: a worker exits 0 only when the work is known to be done. A
//!    worker for given jobs ([`WorkerConfig::for_jobs`](crate::WorkerConfig::for_jobs):
//!    `run`, `work --job`) is done when those jobs are over (complete,
//!    cancelled or forgotten), whatever else the queue holds. A worker of
//!    the whole queue, where the backend's [`Ledger`](crate::job::Ledger)
//!    has jobs, when every job is over (each of its N items settled, done or
//!    dead, or the job cancelled), read exactly from the ledger, with no
//!    exact count still showing items. A job the ledger lost (gone without
//!    being forgotten) is never done: the worker fails. A queue without jobs, and a worker
//!    that has run an item without one (another producer's), end by the
//!    backlog: `ready == 0 && in_flight == 0`, stable over the driver's
//!    [`Capabilities::backlog_staleness`], a count the backend cannot give
//!    never taken as zero (the worker's `DrainDetector` decides).
//!
//! Words: a *lease* is a worker's hold on a delivery, of some length
//! ([`WorkQueue::extend_lease`], [`Capabilities::max_lease`]); its
//! *deadline* is the instant the lease ends ([`Delivery::deadline`]).
//! Listing, requeueing and purging the dead-letter place are
//! [`WorkQueue::list_dead`], [`WorkQueue::requeue_dead`] and
//! [`WorkQueue::purge_dead`]; [`WorkQueue::dead_letter`] moves held items there.
//!
//! A lease token names one delivery, not the item: once the lease is lost
//! (deadline passed, item delivered again), the old token can no longer ack,
//! nack or extend, and the call reports it in [`LeaseReport::lost`].

mod decorator;
mod job_item;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::time::Instant;

use crate::QueueError;

pub use decorator::QueueDecorator;
pub use job_item::{JOB_ATTRIBUTE, JobItem, LIFE_ATTRIBUTE, SEQ_ATTRIBUTE, wire_attributes};

/// One item of work as it travels: the payload bytes, the item's own
/// string attributes and its place in a job, if it has one. What a
/// producer publishes, what a [`Delivery`] carries and what a handler's
/// [`Task`](crate::Task) holds: one type, so nothing is copied field by
/// field on the way from the queue to `f`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Item {
    /// The item itself.
    pub payload: Bytes,
    /// Key/value metadata that travels with the item: the item's own, never
    /// the job's ([`Item::job`]). Shared, so that handing them on (to the
    /// handler, to a dead letter) copies nothing.
    pub attributes: Arc<BTreeMap<String, String>>,
    /// The job the item belongs to and its sequence number there. On the
    /// wire it travels as two attributes ([`Item::wire_attributes`]).
    pub job: Option<JobItem>,
}

impl Item {
    /// An item with `payload`, no attributes and no job.
    pub fn new(payload: impl Into<Bytes>) -> Self {
        Self {
            payload: payload.into(),
            attributes: no_attributes(),
            job: None,
        }
    }

    /// Add one attribute.
    pub fn with_attribute(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.attributes).insert(key.into(), value.into());
        self
    }

    /// Make it an item of a job.
    pub fn with_job(mut self, job: JobItem) -> Self {
        self.job = Some(job);
        self
    }

    /// The attributes as a backend carries them: the item's own plus, for an
    /// item of a job, [`JOB_ATTRIBUTE`] and
    /// [`SEQ_ATTRIBUTE`] (a copy only then). What a driver that
    /// stores attributes writes.
    pub fn wire_attributes(&self) -> Cow<'_, BTreeMap<String, String>> {
        wire_attributes(self.job.as_ref(), &self.attributes)
    }

    /// The item a backend's payload and attributes carry: a job in the
    /// attributes moves to [`Item::job`] ([`JobItem::take_from`], which
    /// shares the job's name with `known`). What a driver that stores
    /// attributes reads.
    pub fn from_wire(
        payload: impl Into<Bytes>,
        mut attributes: BTreeMap<String, String>,
        known: &mut Option<Arc<str>>,
    ) -> Self {
        let job = JobItem::take_from(&mut attributes, known);
        Self {
            payload: payload.into(),
            attributes: if attributes.is_empty() {
                no_attributes()
            } else {
                Arc::new(attributes)
            },
            job,
        }
    }
}

/// The attributes of an item that has none: one shared map, so an item
/// without attributes costs no allocation for them.
fn no_attributes() -> Arc<BTreeMap<String, String>> {
    static NONE: std::sync::LazyLock<Arc<BTreeMap<String, String>>> =
        std::sync::LazyLock::new(Arc::default);
    Arc::clone(&NONE)
}

/// The backend's id of a published item.
pub type MessageId = Arc<str>;

/// Names one delivery of one item. Opaque to everyone but the driver that
/// made it: text (a receipt handle, an ack id) or a pair of numbers.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaseToken(TokenRepr);

#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum TokenRepr {
    Text(Arc<str>),
    Numbers(u64, u64),
}

impl LeaseToken {
    /// Wrap a driver's token text.
    pub fn new(token: impl Into<Arc<str>>) -> Self {
        Self(TokenRepr::Text(token.into()))
    }

    /// A token made of two numbers (no allocation), e.g. item id and attempt.
    pub fn from_numbers(a: u64, b: u64) -> Self {
        Self(TokenRepr::Numbers(a, b))
    }

    /// The text of a token made with [`LeaseToken::new`].
    pub fn as_text(&self) -> Option<&str> {
        match &self.0 {
            TokenRepr::Text(text) => Some(text),
            TokenRepr::Numbers(..) => None,
        }
    }

    /// The numbers of a token made with [`LeaseToken::from_numbers`].
    pub fn as_numbers(&self) -> Option<(u64, u64)> {
        match self.0 {
            TokenRepr::Numbers(a, b) => Some((a, b)),
            TokenRepr::Text(_) => None,
        }
    }
}

impl fmt::Debug for LeaseToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            TokenRepr::Text(text) => write!(f, "LeaseToken({text})"),
            TokenRepr::Numbers(a, b) => write!(f, "LeaseToken({a}.{b})"),
        }
    }
}

/// One item handed to one worker under a lease.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The backend's id of the item (stable across redeliveries).
    pub id: MessageId,
    /// The item: payload, attributes and job.
    pub item: Item,
    /// The lease: ack, nack or extend with it.
    pub token: LeaseToken,
    /// 1 on the first delivery, then one more on each redelivery.
    pub attempt: u32,
    /// Of the deliveries before this one, how many ended as failed attempts
    /// ([`WorkQueue::fail_attempt`]): where the backend keeps that count apart from
    /// its deliveries. The others (`attempt - 1 - failures`) were *lapses*:
    /// leases that ended with no answer (the holder killed, its node lost,
    /// its network cut), which `--max-attempts` does not charge. `None`: the
    /// backend does not keep it, and every delivery counts as an attempt.
    pub failures: Option<u32>,
    /// When the lease ends unless extended, on the tokio clock.
    pub deadline: Instant,
}

impl Delivery {
    /// The deliveries before this one whose lease ended with no answer,
    /// where the backend counts failures apart (see [`Delivery::failures`]).
    pub fn lapses(&self) -> Option<u32> {
        let failures = self.failures?;
        Some(self.attempt.saturating_sub(1).saturating_sub(failures))
    }
}

/// What the queue knew about the tokens of an ack, nack or extension.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseReport {
    /// Tokens whose lease had already ended (or that were already settled):
    /// the call did nothing for them. Drivers that cannot tell leave this empty.
    pub lost: Vec<LeaseToken>,
}

/// An item in the dead-letter place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The item's id.
    pub id: MessageId,
    /// The item: payload, attributes and job.
    pub item: Item,
    /// How many times it was delivered.
    pub attempts: u32,
    /// Why it is here.
    pub reason: String,
}

/// One count of a [`Backlog`], with how far it can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// The backend knows the number exactly.
    Exact(u64),
    /// The backend's estimate (e.g. SQS's Approximate* attributes).
    Approximate(u64),
    /// The backend cannot say (e.g. Pub/Sub's emulator, which has no metrics).
    Unknown,
}

impl Count {
    /// The number, if there is one.
    pub fn value(self) -> Option<u64> {
        match self {
            Count::Exact(n) | Count::Approximate(n) => Some(n),
            Count::Unknown => None,
        }
    }

    /// Whether this is an exact count.
    pub fn is_exact(self) -> bool {
        matches!(self, Count::Exact(_))
    }
}

/// How much work a queue holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    /// Waiting for a worker, including items whose redelivery is delayed by a nack.
    pub ready: Count,
    /// Leased to a worker and not yet acked.
    pub in_flight: Count,
    /// In the dead-letter place.
    pub dead: Count,
    /// How old the reading already was when the backend answered.
    pub age: Duration,
}

impl Backlog {
    /// Whether every count is exact.
    pub fn is_exact(&self) -> bool {
        self.ready.is_exact() && self.in_flight.is_exact() && self.dead.is_exact()
    }

    /// `Some(true)` when nothing is ready and nothing is in flight,
    /// `Some(false)` when something is, `None` when the backend cannot say.
    pub fn is_empty(&self) -> Option<bool> {
        match (self.ready.value(), self.in_flight.value()) {
            (Some(0), Some(0)) => Some(true),
            (Some(r), Some(f)) if r + f > 0 => Some(false),
            (Some(r), None) | (None, Some(r)) if r > 0 => Some(false),
            _ => None,
        }
    }
}

/// What a backend can do; the runner checks flags against these up front and
/// the conformance suite runs only what a driver advertises.
///
/// Non-exhaustive, so a new capability is not a breaking change for
/// drivers: build one with [`Capabilities::new`] and the `with_*` methods.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// Largest payload in bytes.
    pub max_payload: usize,
    /// Most messages in one publish call.
    pub max_batch: usize,
    /// Longest lease one extension can ask for.
    pub max_lease: Duration,
    /// Shortest lease the backend accepts (Pub/Sub: 10 s).
    pub min_lease: Duration,
    /// The queue itself dead-letters an item released after `max_attempts`
    /// deliveries, even when no worker lived to do it (crash loops).
    pub native_dead_letter: bool,
    /// `nack(tokens, d)` with `d > 0` delays redelivery. Without it the
    /// worker falls back to extending the lease by `d` and letting it lapse.
    pub delayed_nack: bool,
    /// [`WorkQueue::backlog`] counts are exact.
    pub exact_backlog: bool,
    /// How long a backlog reading may lag the truth; the drain detector needs
    /// empty readings spanning this long before it believes them.
    pub backlog_staleness: Duration,
    /// The longest redelivery delay `nack` honours (Pub/Sub: 600 s);
    /// `None`: any. The runner refuses a `--max-backoff` above it rather
    /// than have retries come back sooner than asked.
    pub max_nack_delay: Option<Duration>,
    /// The attempts after which the queue itself dead-letters an item, as
    /// it is set on the queue (SQS's `maxReceiveCount`, Pub/Sub's
    /// `maxDeliveryAttempts`), where the queue keeps such a count. The
    /// runner warns when a worker's `--max-attempts` differs.
    pub queue_max_attempts: Option<u32>,
    /// A [`WorkQueue::pull`] dropped before it answers has taken nothing:
    /// the queue is in this process and takes items in one step. Where it
    /// is not (SQS's and Pub/Sub's long polls go on at the server after the
    /// client leaves, and lease what arrives meanwhile to no one; a Redis
    /// pull's script may be on its way), a worker that ends waits for its
    /// open pull to answer, and runs what it brings, instead of leaving it
    /// to hide the next item published for a whole lease. Default: `false`.
    pub cancel_safe_pull: bool,
    /// `fail_attempt(tokens, d)` with `d > 0` delays redelivery by `d`. Without it
    /// (a backend whose failure is a copy published again, which it cannot
    /// delay), the worker holds the lease for `d` and then fails with 0.
    pub delayed_fail: bool,
}

impl Default for Capabilities {
    fn default() -> Self {
        Self {
            max_payload: 256 * 1024,
            max_batch: 100,
            max_lease: Duration::from_secs(600),
            min_lease: Duration::from_secs(1),
            native_dead_letter: false,
            delayed_nack: false,
            exact_backlog: false,
            backlog_staleness: Duration::from_secs(60),
            max_nack_delay: None,
            queue_max_attempts: None,
            cancel_safe_pull: false,
            delayed_fail: false,
        }
    }
}

impl Capabilities {
    /// A backend's size limits, with the defaults for everything else:
    /// leases of 1 s to 10 min, no native dead letter, no delayed nack,
    /// approximate counts trusted after 60 s.
    pub fn new(max_payload: usize, max_batch: usize) -> Self {
        Self {
            max_payload,
            max_batch,
            ..Self::default()
        }
    }

    /// The shortest and longest lease the backend accepts.
    pub fn with_lease_range(mut self, min: Duration, max: Duration) -> Self {
        self.min_lease = min;
        self.max_lease = max;
        self
    }

    /// Whether the queue itself dead-letters after `max_attempts`.
    pub fn with_native_dead_letter(mut self, native: bool) -> Self {
        self.native_dead_letter = native;
        self
    }

    /// Whether `nack(tokens, d)` delays redelivery by `d`.
    pub fn with_delayed_nack(mut self, delayed: bool) -> Self {
        self.delayed_nack = delayed;
        self
    }

    /// The longest redelivery delay `nack` honours.
    pub fn with_max_nack_delay(mut self, max: Duration) -> Self {
        self.max_nack_delay = Some(max);
        self
    }

    /// The attempts after which the queue itself dead-letters, as set on it.
    pub fn with_queue_max_attempts(mut self, attempts: Option<u32>) -> Self {
        self.queue_max_attempts = attempts;
        self
    }

    /// A pull dropped before it answers has taken nothing (see
    /// [`Capabilities::cancel_safe_pull`]).
    pub fn with_cancel_safe_pull(mut self) -> Self {
        self.cancel_safe_pull = true;
        self
    }

    /// Whether `fail_attempt(tokens, d)` delays redelivery by `d`.
    pub fn with_delayed_fail(mut self, delayed: bool) -> Self {
        self.delayed_fail = delayed;
        self
    }

    /// Exact backlog counts, true the moment they are read.
    pub fn with_exact_backlog(mut self) -> Self {
        self.exact_backlog = true;
        self.backlog_staleness = Duration::ZERO;
        self
    }

    /// Approximate counts that may lag the truth by up to `staleness`.
    pub fn with_backlog_staleness(mut self, staleness: Duration) -> Self {
        self.exact_backlog = false;
        self.backlog_staleness = staleness;
        self
    }
}

/// How one client opens one queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueConfig {
    /// The job's queue name (`--name`, default `forloop`).
    pub name: String,
    /// The lease a pull grants, where the backend lets the client choose it.
    pub lease: Duration,
    /// Deliveries after which a released item is dead-lettered.
    pub max_attempts: u32,
}

impl QueueConfig {
    /// Defaults: 30 s lease, 5 attempts.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            lease: Duration::from_secs(30),
            max_attempts: 5,
        }
    }

    /// Set the lease.
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Set the attempts before dead-lettering.
    pub fn with_max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts;
        self
    }
}

/// A queue of work items with leases. Object safe: use it as `Arc<dyn WorkQueue>`.
///
/// Drivers map their backend's primitives onto these calls and nothing more:
/// retries, backoff, lease keeping and drain detection belong to the worker.
#[async_trait]
pub trait WorkQueue: Send + Sync + fmt::Debug {
    /// What this backend can do.
    fn capabilities(&self) -> Capabilities;

    /// Publish a batch of at most `capabilities().max_batch` items; returns
    /// their ids in order. An item over `max_payload` refuses the whole batch
    /// before anything is sent, with [`QueueError::payload_too_large`].
    async fn publish(&self, batch: Vec<Item>) -> Result<Vec<MessageId>, QueueError>;

    /// Lease at most `max` items, waiting up to `wait` for the first one.
    /// Returns an empty list when nothing came within `wait`.
    async fn pull(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, QueueError>;

    /// Settle deliveries for good. Acking twice is harmless.
    async fn ack(&self, tokens: &[LeaseToken]) -> Result<LeaseReport, QueueError>;

    /// Give deliveries back, to be delivered again after `delay` (0: at once).
    async fn nack(&self, tokens: &[LeaseToken], delay: Duration)
    -> Result<LeaseReport, QueueError>;

    /// Hand deliveries back without charging an attempt: the next delivery
    /// of each item reports the attempt this one did, and `max_attempts`
    /// counts only deliveries that were nacked or lapsed. What the worker
    /// calls when it stops (a preemption, SIGTERM) with items it did not
    /// run to the end. Required, with no default, so that a decorator
    /// cannot silently turn it into a charged `nack`.
    async fn release(&self, tokens: &[LeaseToken]) -> Result<LeaseReport, QueueError>;

    /// Give deliveries back as failed attempts (`f` ran and failed), to be
    /// delivered again after `delay` (0: at once) with
    /// [`Delivery::failures`] one more, so that `--max-attempts` counts
    /// failures and not lapses. The queue's own dead-lettering (rule 4)
    /// still counts every delivery. Default: a backend that does not count
    /// failures apart nacks (its deliveries say `failures: None`).
    async fn fail_attempt(
        &self,
        tokens: &[LeaseToken],
        delay: Duration,
    ) -> Result<LeaseReport, QueueError> {
        self.nack(tokens, delay).await
    }

    /// Set the deadline of held deliveries to `now + lease`.
    async fn extend_lease(
        &self,
        tokens: &[LeaseToken],
        lease: Duration,
    ) -> Result<LeaseReport, QueueError>;

    /// Move held deliveries to the dead-letter place now, with a reason a
    /// person will read there.
    async fn dead_letter(
        &self,
        tokens: &[LeaseToken],
        reason: &str,
    ) -> Result<LeaseReport, QueueError>;

    /// Count ready, in-flight and dead items.
    async fn backlog(&self) -> Result<Backlog, QueueError>;

    /// Up to `limit` items of the dead-letter place, oldest first; listing
    /// consumes nothing. Required, with no default, so that a decorator
    /// cannot silently drop it: a backend without a listable dead-letter
    /// place returns [`QueueError::unsupported`].
    async fn list_dead(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError>;

    /// Put every dead item back to work with a fresh attempt count and the
    /// attributes it had before it died; returns how many.
    async fn requeue_dead(&self) -> Result<u64, QueueError>;

    /// [`WorkQueue::requeue_dead`], telling `watch` of each batch before it
    /// moves (a ledger kept apart from the queue un-counts the items there:
    /// an error from `watch` stops the requeue before the batch moves). An
    /// item of a job goes back in its next life ([`JobItem::next_life`]).
    /// Default: unsupported (a queue that keeps its ledger in the same
    /// place un-counts within `requeue_dead` itself).
    async fn requeue_dead_telling(&self, watch: &dyn RequeueWatch) -> Result<u64, QueueError> {
        let _ = watch;
        Err(QueueError::unsupported(
            "requeue dead items telling a ledger of each batch",
        ))
    }

    /// Delete every dead item for good; returns how many.
    async fn purge_dead(&self) -> Result<u64, QueueError>;

    /// Put back to work the dead items `select` picks, each as
    /// [`WorkQueue::requeue_dead`] does (a fresh attempt count, the
    /// attributes it had before it died, an item of a job in its next
    /// life); every other dead item stays dead, untouched and, where the
    /// backend keeps an order, in its place. `watch`, where given, is told
    /// of each batch of picked items before it moves (as
    /// [`WorkQueue::requeue_dead_telling`]); a queue that un-counts what
    /// it requeues in the same step (memory, Redis) refuses one. Items
    /// dead-lettered while the call runs may or may not be looked at.
    /// `select` may be called with the queue's lock held: it must not
    /// call the queue. Default: unsupported.
    async fn requeue_dead_where(
        &self,
        select: &DeadSelect<'_>,
        watch: Option<&dyn RequeueWatch>,
    ) -> Result<Requeued, QueueError> {
        let _ = (select, watch);
        Err(QueueError::unsupported(
            "requeue only some of the dead items",
        ))
    }
}

/// Picks the dead letters [`WorkQueue::requeue_dead_where`] puts back to
/// work (`true`: this one goes back).
pub type DeadSelect<'a> = dyn Fn(&DeadLetter) -> bool + Send + Sync + 'a;

/// What [`WorkQueue::requeue_dead_where`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requeued {
    /// Dead items put back to work.
    pub moved: u64,
    /// Dead items looked at and left dead (each once, whatever its copies).
    pub left: u64,
}

/// Told of each batch of dead items before
/// [`WorkQueue::requeue_dead_telling`] moves it back to work.
#[async_trait]
pub trait RequeueWatch: Send + Sync {
    /// `letters` (as [`WorkQueue::list_dead`] shows them, in the life they
    /// died in) are about to go back to work; an error stops the requeue
    /// with them still dead.
    async fn before_requeue(&self, letters: &[DeadLetter]) -> Result<(), QueueError>;
}

/// A shared queue is a queue: every call forwards, none falls back to a
/// default (the lint makes a forgotten method a compile error).
#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl<Q: WorkQueue + ?Sized> WorkQueue for Arc<Q> {
    fn capabilities(&self) -> Capabilities {
        (**self).capabilities()
    }
    async fn publish(&self, batch: Vec<Item>) -> Result<Vec<MessageId>, QueueError> {
        (**self).publish(batch).await
    }
    async fn pull(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, QueueError> {
        (**self).pull(max, wait).await
    }
    async fn ack(&self, tokens: &[LeaseToken]) -> Result<LeaseReport, QueueError> {
        (**self).ack(tokens).await
    }
    async fn nack(
        &self,
        tokens: &[LeaseToken],
        delay: Duration,
    ) -> Result<LeaseReport, QueueError> {
        (**self).nack(tokens, delay).await
    }
    async fn release(&self, tokens: &[LeaseToken]) -> Result<LeaseReport, QueueError> {
        (**self).release(tokens).await
    }
    async fn fail_attempt(
        &self,
        tokens: &[LeaseToken],
        delay: Duration,
    ) -> Result<LeaseReport, QueueError> {
        (**self).fail_attempt(tokens, delay).await
    }
    async fn extend_lease(
        &self,
        tokens: &[LeaseToken],
        lease: Duration,
    ) -> Result<LeaseReport, QueueError> {
        (**self).extend_lease(tokens, lease).await
    }
    async fn dead_letter(
        &self,
        tokens: &[LeaseToken],
        reason: &str,
    ) -> Result<LeaseReport, QueueError> {
        (**self).dead_letter(tokens, reason).await
    }
    async fn backlog(&self) -> Result<Backlog, QueueError> {
        (**self).backlog().await
    }
    async fn list_dead(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError> {
        (**self).list_dead(limit).await
    }
    async fn requeue_dead(&self) -> Result<u64, QueueError> {
        (**self).requeue_dead().await
    }
    async fn requeue_dead_telling(&self, watch: &dyn RequeueWatch) -> Result<u64, QueueError> {
        (**self).requeue_dead_telling(watch).await
    }
    async fn purge_dead(&self) -> Result<u64, QueueError> {
        (**self).purge_dead().await
    }
    async fn requeue_dead_where(
        &self,
        select: &DeadSelect<'_>,
        watch: Option<&dyn RequeueWatch>,
    ) -> Result<Requeued, QueueError> {
        (**self).requeue_dead_where(select, watch).await
    }
}

/// Refuse a batch with an oversize item before anything is sent: the check
/// every driver's `publish` starts with.
pub fn check_payload_sizes(batch: &[Item], max_payload: usize) -> Result<(), QueueError> {
    match batch
        .iter()
        .position(|message| message.payload.len() > max_payload)
    {
        Some(index) => Err(QueueError::payload_too_large(
            index,
            batch[index].payload.len(),
            max_payload,
        )),
        None => Ok(()),
    }
}
