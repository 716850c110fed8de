//! `MemoryQueue`: the embedded default. Everything a real backend does, in
//! one process, on the tokio clock, so tests can pause time and step through
//! deadlines exactly.
//!
//! Layout: one mutex over a map of live items, a FIFO of ready ids, and two
//! min-heaps (lease deadlines, delayed nacks) with lazy deletion: extending a
//! lease pushes a new heap entry, and a popped entry that no longer matches its
//! item is ignored. Expired leases are reaped at the start of every call, so
//! the state is always as of `now`.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::MemoryLedger;
#[cfg(doc)]
use crate::job::Ledger;
use crate::job::{Backend, JobItem, Receipt};
use crate::queue::{
    Backlog, Capabilities, Count, DeadLetter, Delivery, Item, LeaseReport, LeaseToken, MessageId,
    QueueConfig, WorkQueue, check_payload_sizes,
};
use crate::{QueueError, QueueErrorKind};

/// Live items by id. Ids are handed out in sequence and items mostly finish
/// in about that order, so a deque indexed by `id - base` keeps neighbours
/// together in memory (a hash map costs a cache miss per lookup).
#[derive(Debug, Default)]
struct Slab {
    /// The id of `slots[0]`; `base + slots.len()` is the next id.
    base: u64,
    slots: VecDeque<Option<Stored>>,
}

impl Slab {
    fn insert(&mut self, id: u64, item: Stored) {
        debug_assert_eq!(
            id,
            self.base + self.slots.len() as u64,
            "ids are sequential"
        );
        self.slots.push_back(Some(item));
    }

    fn get(&self, id: &u64) -> Option<&Stored> {
        let index = id.checked_sub(self.base)?;
        self.slots.get(usize::try_from(index).ok()?)?.as_ref()
    }

    fn get_mut(&mut self, id: &u64) -> Option<&mut Stored> {
        let index = id.checked_sub(self.base)?;
        self.slots.get_mut(usize::try_from(index).ok()?)?.as_mut()
    }

    fn remove(&mut self, id: &u64) -> Option<Stored> {
        let index = usize::try_from(id.checked_sub(self.base)?).ok()?;
        let item = self.slots.get_mut(index)?.take();
        while matches!(self.slots.front(), Some(None)) {
            self.slots.pop_front();
            self.base += 1;
        }
        item
    }

    fn reserve(&mut self, additional: usize) {
        self.slots.reserve(additional);
    }
}

#[derive(Debug)]
enum State {
    Ready,
    Scheduled(Instant),
    Leased(Instant),
}

#[derive(Debug)]
struct Stored {
    id: MessageId,
    /// As published: its attributes are shared with every delivery (a pull
    /// copies none) and its job kept as is (no attribute text).
    item: Item,
    /// Deliveries so far; with the id, what a lease token names.
    attempts: u32,
    /// Deliveries handed back with `release`, which cost no attempt.
    free: u32,
    /// Deliveries given back with `fail`: attempts where `f` ran and failed.
    failed: u32,
    state: State,
}

impl Stored {
    fn new(id: MessageId, item: Item) -> Self {
        Self {
            id,
            item,
            attempts: 0,
            free: 0,
            failed: 0,
            state: State::Ready,
        }
    }

    /// The attempts charged: deliveries that were not handed back.
    fn charged(&self) -> u32 {
        self.attempts - self.free
    }
}

#[derive(Debug, Default)]
struct Inner {
    items: Slab,
    ready: VecDeque<u64>,
    /// (deadline, id, attempt) of each lease granted by a pull, oldest
    /// first: every grant is `now + lease`, so this stays sorted.
    granted: VecDeque<(Instant, u64, u32)>,
    /// (deadline, id, attempt) of each extension (any length, so a heap).
    leases: BinaryHeap<Reverse<(Instant, u64, u32)>>,
    /// (due, id) of each delayed nack.
    scheduled: BinaryHeap<Reverse<(Instant, u64)>>,
    dead: Vec<DeadLetter>,
    /// The jobs of this queue; an item buried here gets its dead receipt.
    ledger: Arc<MemoryLedger>,
    /// The last job name read off an item's attributes (another program
    /// may publish a job's items with the wire attributes), shared by the
    /// items of that job.
    known_job: Option<Arc<str>>,
    next_id: u64,
    leased: u64,
    delayed: u64,
}

/// The in-process queue: exact backlog, real per-item deadlines on the tokio
/// clock, delayed nack, attempt counts and a dead-letter list.
///
/// It lives and dies with its process: `runner run` uses it with worker tasks
/// in the same process.
#[derive(Debug, Clone)]
pub struct MemoryQueue {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    inner: Mutex<Inner>,
    /// Wakes long-polling pullers when items become ready, and when a
    /// settlement leaves the queue idle (nothing ready, held or delayed), so
    /// a job's end follows its last ack at once.
    arrivals: Notify,
    config: QueueConfig,
    capabilities: Capabilities,
}

impl MemoryQueue {
    /// Default payload limit: 1 MiB.
    pub const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;

    /// A new empty queue.
    pub fn new(config: QueueConfig) -> Self {
        Self::with_max_payload(config, Self::DEFAULT_MAX_PAYLOAD)
    }

    /// A new empty queue that refuses payloads over `max_payload` bytes.
    pub fn with_max_payload(config: QueueConfig, max_payload: usize) -> Self {
        let capabilities = Capabilities {
            max_payload,
            max_batch: 10_000,
            max_lease: Duration::from_secs(12 * 3600),
            min_lease: Duration::from_millis(1),
            native_dead_letter: true,
            delayed_nack: true,
            exact_backlog: true,
            backlog_staleness: Duration::ZERO,
            max_nack_delay: None,
            queue_max_attempts: None,
            cancel_safe_pull: true,
            delayed_fail: true,
        };
        Self {
            shared: Arc::new(Shared {
                inner: Mutex::new(Inner {
                    ledger: Arc::new(MemoryLedger::without_done_receipts()),
                    ..Inner::default()
                }),
                arrivals: Notify::new(),
                config,
                capabilities,
            }),
        }
    }

    /// Keep a receipt for every settled item of a job, done ones too, for
    /// [`Ledger::receipts`] to return (by default only the dead items'
    /// are kept: see [`MemoryLedger`]). Call it on a new queue, before
    /// [`ledger`](Self::ledger) hands the ledger out.
    pub fn with_done_receipts(self) -> Self {
        self.lock().0.ledger = Arc::new(MemoryLedger::new());
        self
    }

    /// This queue's ledger: its jobs, kept in this process beside it.
    pub fn ledger(&self) -> Arc<MemoryLedger> {
        Arc::clone(&self.lock().0.ledger)
    }

    /// This queue and its ledger, as a worker or `submit` takes them.
    pub fn backend(&self) -> Backend {
        Backend::new(Arc::new(self.clone())).with_ledger(self.ledger())
    }

    /// The items in the dead-letter place, oldest first.
    pub fn dead_items(&self) -> Vec<DeadLetter> {
        self.lock().0.dead.clone()
    }

    /// The state as of now. `now` is read under the lock, so lease grants
    /// enter `granted` in deadline order even with concurrent pullers.
    fn lock(&self) -> (MutexGuard<'_, Inner>, Instant) {
        let mut inner = self
            .shared
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        inner.advance(now, self.shared.config.max_attempts);
        (inner, now)
    }
}

/// Why a pull found nothing to lease. A queue that ran dry ends long polls at
/// once (a waiting one is woken by the settlement that emptied it): only a
/// new publish could bring work, and the caller wants to know now, to check
/// for drain, so a run's end follows its last ack within a task switch. An
/// empty queue that never had items is still long-polled.
#[derive(Debug)]
struct Empty {
    /// When the next lease or delayed nack falls due.
    next_event: Option<Instant>,
    /// Every published item is settled (see `Inner::ran_dry`).
    ran_dry: bool,
}

/// Why an item whose lease lapsed is released.
const LEASE_ENDED: &str = "its lease ended with no answer";

fn token(id: u64, attempt: u32) -> LeaseToken {
    LeaseToken::from_numbers(id, u64::from(attempt))
}

fn parse_token(token: &LeaseToken) -> Option<(u64, u32)> {
    let (id, attempt) = token.as_numbers()?;
    Some((id, u32::try_from(attempt).ok()?))
}

impl Inner {
    /// Bring the state to `now`: lapse expired leases, release due nacks.
    fn advance(&mut self, now: Instant, max_attempts: u32) {
        while let Some(&(deadline, id, attempt)) = self.granted.front() {
            if deadline > now {
                break;
            }
            self.granted.pop_front();
            self.lapse(id, attempt, now, max_attempts);
        }
        while let Some(&Reverse((deadline, id, attempt))) = self.leases.peek() {
            if deadline > now {
                break;
            }
            self.leases.pop();
            self.lapse(id, attempt, now, max_attempts);
        }
        while let Some(&Reverse((due, id))) = self.scheduled.peek() {
            if due > now {
                break;
            }
            self.scheduled.pop();
            if let Some(item) = self.items.get_mut(&id)
                && matches!(item.state, State::Scheduled(at) if at == due)
            {
                item.state = State::Ready;
                self.delayed -= 1;
                self.ready.push_back(id);
            }
        }
    }

    /// A lease entry fell due: if it is still the item's current lease, the
    /// item is released.
    fn lapse(&mut self, id: u64, attempt: u32, now: Instant, max_attempts: u32) {
        let lapsed = matches!(
            self.items.get(&id),
            Some(Stored { state: State::Leased(current), attempts, .. })
                if *attempts == attempt && *current <= now
        );
        if lapsed {
            self.leased -= 1;
            self.release(id, max_attempts, LEASE_ENDED);
        }
    }

    /// Whether a lease entry still describes its item's current lease.
    fn is_live(&self, id: u64, attempt: u32) -> bool {
        matches!(
            self.items.get(&id),
            Some(Stored { state: State::Leased(_), attempts, .. }) if *attempts == attempt
        )
    }

    /// Drop lease entries of settled items once they far outnumber live
    /// leases, so memory follows what is held, not throughput × lease.
    fn compact(&mut self) {
        let limit = 4 * self.leased as usize + 4096;
        if self.granted.len() > limit {
            let mut granted = std::mem::take(&mut self.granted);
            granted.retain(|&(_, id, attempt)| self.is_live(id, attempt));
            self.granted = granted;
        }
        if self.leases.len() > limit {
            let mut leases = std::mem::take(&mut self.leases).into_vec();
            leases.retain(|Reverse((_, id, attempt))| self.is_live(*id, *attempt));
            self.leases = leases.into();
        }
    }

    /// An item stopped being leased: deliver it again, or dead-letter it if it
    /// has had all its attempts.
    fn release(&mut self, id: u64, max_attempts: u32, why: &str) {
        let Some(item) = self.items.get_mut(&id) else {
            return;
        };
        if item.charged() >= max_attempts {
            let attempts = item.charged();
            let reason = if why == LEASE_ENDED {
                // Its last delivery lapsed too: a lapse past the budget.
                let lost = attempts - item.failed.min(attempts);
                format!(
                    "{} ({why}; {attempts} deliveries, {failed} of them failed attempts: \
                     the queue's own limit is {max_attempts} deliveries)",
                    crate::worker::lost_times(lost),
                    failed = item.failed
                )
            } else {
                format!("{why} after {attempts} deliveries (max attempts {max_attempts})")
            };
            self.bury(id, reason);
        } else {
            item.state = State::Ready;
            self.ready.push_back(id);
        }
    }

    fn bury(&mut self, id: u64, reason: String) {
        if let Some(item) = self.items.remove(&id) {
            let attempts = item.charged();
            if let Some(job) = &item.item.job {
                let receipt = Receipt::lapsed(job, &item.item.payload, attempts, &reason);
                self.ledger.record_now(std::slice::from_ref(&receipt));
            }
            self.dead.push(DeadLetter {
                id: Arc::clone(&item.id),
                item: item.item,
                attempts,
                reason,
            });
        }
    }

    /// Put `dead` back to work, each un-counted first and in its next life.
    fn requeue(&mut self, dead: Vec<DeadLetter>) -> u64 {
        let count = dead.len() as u64;
        // Un-counted under the lock that moves them: never counted
        // dead while live. Each starts a new life, so its next death
        // counts again.
        let deaths: Vec<Receipt> = dead
            .iter()
            .filter_map(|letter| {
                let job = letter.item.job.as_ref()?;
                let payload = &letter.item.payload;
                Some(Receipt::lapsed(
                    job,
                    payload,
                    letter.attempts,
                    &letter.reason,
                ))
            })
            .collect();
        if !deaths.is_empty() {
            self.ledger.requeued_now(&deaths);
        }
        for mut letter in dead {
            if let Some(job) = letter.item.job.take() {
                let life = job.next_life();
                letter.item.job = Some(job.in_life(life));
            }
            // Requeued items start over: fresh ids keep the slab in order.
            let id = self.next_id;
            self.next_id += 1;
            let item = Stored::new(letter.id, letter.item);
            self.items.insert(id, item);
            self.ready.push_back(id);
        }
        count
    }

    /// Take the item a token leases, if the lease is still held.
    fn held(&mut self, token: &LeaseToken) -> Option<u64> {
        let (id, attempt) = parse_token(token)?;
        let item = self.items.get(&id)?;
        (item.attempts == attempt && matches!(item.state, State::Leased(_))).then_some(id)
    }

    /// Nothing ready, held or delayed: only a publish can bring work.
    fn is_idle(&self) -> bool {
        self.ready.is_empty() && self.leased == 0 && self.delayed == 0
    }

    /// Items were published and every one is settled (acked or dead): the
    /// job on this queue has run dry, and a pull says so at once.
    fn ran_dry(&self) -> bool {
        self.next_id > 0 && self.is_idle()
    }

    fn next_event(&self) -> Option<Instant> {
        let granted = self.granted.front().map(|(at, _, _)| *at);
        let extended = self.leases.peek().map(|Reverse((at, _, _))| *at);
        let nack = self.scheduled.peek().map(|Reverse((at, _))| *at);
        [granted, extended, nack].into_iter().flatten().min()
    }
}

impl MemoryQueue {
    /// Lease up to `max` ready items. Returns them (possibly none, once `now`
    /// has reached `until`), or what to wait for.
    fn take(&self, max: usize, until: Instant) -> Result<Vec<Delivery>, Empty> {
        let (mut inner, now) = self.lock();
        let deadline = now + self.shared.config.lease;
        let mut out = Vec::with_capacity(max.min(inner.ready.len()));
        while out.len() < max {
            let Some(id) = inner.ready.pop_front() else {
                break;
            };
            let Some(item) = inner.items.get_mut(&id) else {
                continue;
            };
            item.attempts += 1;
            item.state = State::Leased(deadline);
            let attempt = item.attempts;
            out.push(Delivery {
                id: Arc::clone(&item.id),
                item: item.item.clone(),
                token: token(id, attempt),
                attempt: item.charged(),
                failures: Some(item.failed),
                deadline,
            });
            inner.granted.push_back((deadline, id, attempt));
            inner.leased += 1;
        }
        inner.compact();
        if !out.is_empty() || now >= until {
            Ok(out)
        } else {
            Err(Empty {
                next_event: inner.next_event(),
                ran_dry: inner.ran_dry(),
            })
        }
    }

    /// Apply `settle` to every held token, collecting the lost ones. A
    /// settlement that leaves the queue idle wakes waiting pullers: they
    /// return empty at once instead of waiting out their poll.
    fn settle(
        &self,
        tokens: &[LeaseToken],
        mut settle: impl FnMut(&mut Inner, u64),
    ) -> LeaseReport {
        let (mut inner, _) = self.lock();
        let mut report = LeaseReport::default();
        for token in tokens {
            match inner.held(token) {
                Some(id) => settle(&mut inner, id),
                None => report.lost.push(token.clone()),
            }
        }
        let ran_dry = report.lost.len() < tokens.len() && inner.ran_dry();
        drop(inner);
        if ran_dry {
            self.shared.arrivals.notify_waiters();
        }
        report
    }
}

impl MemoryQueue {
    /// Nack (`failed`: as a failed attempt, counted under the same lock):
    /// delivered again after `delay`, or buried past the queue's limit.
    fn reschedule(&self, tokens: &[LeaseToken], delay: Duration, failed: bool) -> LeaseReport {
        let max_attempts = self.shared.config.max_attempts;
        let due = Instant::now() + delay;
        let why = if failed { "it failed" } else { "it was nacked" };
        let report = self.settle(tokens, |inner, id| {
            inner.leased -= 1;
            let item = inner.items.get_mut(&id).expect("held items exist");
            item.failed += u32::from(failed);
            if delay.is_zero() || item.charged() >= max_attempts {
                inner.release(id, max_attempts, why);
            } else {
                item.state = State::Scheduled(due);
                inner.scheduled.push(Reverse((due, id)));
                inner.delayed += 1;
            }
        });
        self.shared.arrivals.notify_waiters();
        report
    }
}

/// The memory queue with its ledger: a worker given the queue keeps its jobs.
impl From<MemoryQueue> for Backend {
    fn from(queue: MemoryQueue) -> Self {
        queue.backend()
    }
}

/// The memory queue with its ledger: a worker given the queue keeps its jobs.
impl From<Arc<MemoryQueue>> for Backend {
    fn from(queue: Arc<MemoryQueue>) -> Self {
        let ledger = queue.ledger();
        Backend::new(queue).with_ledger(ledger)
    }
}

#[async_trait]
impl WorkQueue for MemoryQueue {
    fn capabilities(&self) -> Capabilities {
        self.shared.capabilities.clone()
    }

    async fn publish(&self, batch: Vec<Item>) -> Result<Vec<MessageId>, QueueError> {
        check_payload_sizes(&batch, self.shared.capabilities.max_payload)?;
        if batch.len() > self.shared.capabilities.max_batch {
            return Err(QueueError::new(
                QueueErrorKind::Invalid,
                format!(
                    "a batch of {} items is over the memory queue's batch limit of {}",
                    batch.len(),
                    self.shared.capabilities.max_batch
                ),
            ));
        }
        let ids = {
            let (mut inner, _) = self.lock();
            let mut ids = Vec::with_capacity(batch.len());
            inner.items.reserve(batch.len());
            for mut message in batch {
                if !message.attributes.is_empty() {
                    // A job written as attributes, as on any other backend,
                    // becomes the item's job (the field, where set, wins).
                    let attributes = Arc::make_mut(&mut message.attributes);
                    let stamped = JobItem::take_from(attributes, &mut inner.known_job);
                    message.job = message.job.or(stamped);
                }
                let id = inner.next_id;
                inner.next_id += 1;
                let message_id: MessageId = Arc::from(id.to_string());
                ids.push(Arc::clone(&message_id));
                let item = Stored::new(message_id, message);
                inner.items.insert(id, item);
                inner.ready.push_back(id);
            }
            ids
        };
        self.shared.arrivals.notify_waiters();
        Ok(ids)
    }

    async fn pull(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, QueueError> {
        let until = Instant::now() + wait;
        // Fast path: items are ready, no need to listen for arrivals.
        let mut next_event = match self.take(max, until) {
            Ok(out) => return Ok(out),
            Err(Empty { ran_dry: true, .. }) => return Ok(Vec::new()),
            Err(Empty { next_event, .. }) => next_event,
        };
        loop {
            let arrival = self.shared.arrivals.notified();
            tokio::pin!(arrival);
            // Listen before waiting, so an arrival in between is not missed.
            if next_event.is_some_and(|at| at <= Instant::now()) || arrival.as_mut().enable() {
                // An event is due or an arrival came: look now.
            } else {
                let wake = next_event.map_or(until, |at| at.min(until));
                tokio::select! {
                    _ = &mut arrival => {}
                    _ = tokio::time::sleep_until(wake) => {}
                }
            }
            next_event = match self.take(max, until) {
                Ok(out) => return Ok(out),
                Err(Empty { ran_dry: true, .. }) => return Ok(Vec::new()),
                Err(Empty { next_event, .. }) => next_event,
            };
        }
    }

    async fn ack(&self, tokens: &[LeaseToken]) -> Result<LeaseReport, QueueError> {
        Ok(self.settle(tokens, |inner, id| {
            inner.items.remove(&id);
            inner.leased -= 1;
        }))
    }

    async fn nack(
        &self,
        tokens: &[LeaseToken],
        delay: Duration,
    ) -> Result<LeaseReport, QueueError> {
        Ok(self.reschedule(tokens, delay, false))
    }

    async fn fail_attempt(
        &self,
        tokens: &[LeaseToken],
        delay: Duration,
    ) -> Result<LeaseReport, QueueError> {
        Ok(self.reschedule(tokens, delay, true))
    }

    async fn release(&self, tokens: &[LeaseToken]) -> Result<LeaseReport, QueueError> {
        let report = self.settle(tokens, |inner, id| {
            inner.leased -= 1;
            let item = inner.items.get_mut(&id).expect("held items exist");
            // The token stays unique (deliveries still count up); only the
            // attempt charged does not move.
            item.free += 1;
            item.state = State::Ready;
            inner.ready.push_back(id);
        });
        self.shared.arrivals.notify_waiters();
        Ok(report)
    }

    async fn extend_lease(
        &self,
        tokens: &[LeaseToken],
        lease: Duration,
    ) -> Result<LeaseReport, QueueError> {
        let deadline = Instant::now() + lease.min(self.shared.capabilities.max_lease);
        Ok(self.settle(tokens, |inner, id| {
            let item = inner.items.get_mut(&id).expect("held items exist");
            item.state = State::Leased(deadline);
            let attempt = item.attempts;
            inner.leases.push(Reverse((deadline, id, attempt)));
        }))
    }

    async fn dead_letter(
        &self,
        tokens: &[LeaseToken],
        reason: &str,
    ) -> Result<LeaseReport, QueueError> {
        Ok(self.settle(tokens, |inner, id| {
            inner.leased -= 1;
            inner.bury(id, reason.to_string());
        }))
    }

    async fn list_dead(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError> {
        Ok(self.lock().0.dead.iter().take(limit).cloned().collect())
    }

    async fn requeue_dead(&self) -> Result<u64, QueueError> {
        let count = {
            let (mut inner, _) = self.lock();
            let dead = std::mem::take(&mut inner.dead);
            inner.requeue(dead)
        };
        self.shared.arrivals.notify_waiters();
        Ok(count)
    }

    /// Picked and moved under the lock every burial takes: a letter
    /// dead-lettered at this moment is either looked at and moved (if
    /// picked) or buried after, and stays dead.
    async fn requeue_dead_where(
        &self,
        select: &crate::DeadSelect<'_>,
        watch: Option<&dyn crate::RequeueWatch>,
    ) -> Result<crate::Requeued, QueueError> {
        if watch.is_some() {
            return Err(QueueError::unsupported(
                "tell a ledger of a requeue: the memory queue un-counts what it moves itself",
            ));
        }
        let done = {
            let (mut inner, _) = self.lock();
            let (picked, left): (Vec<DeadLetter>, Vec<DeadLetter>) =
                std::mem::take(&mut inner.dead)
                    .into_iter()
                    .partition(|l| select(l));
            inner.dead = left;
            crate::Requeued {
                left: inner.dead.len() as u64,
                moved: inner.requeue(picked),
            }
        };
        if done.moved > 0 {
            self.shared.arrivals.notify_waiters();
        }
        Ok(done)
    }

    async fn purge_dead(&self) -> Result<u64, QueueError> {
        let (mut inner, _) = self.lock();
        let count = inner.dead.len() as u64;
        inner.dead.clear();
        Ok(count)
    }

    async fn backlog(&self) -> Result<Backlog, QueueError> {
        let (inner, _) = self.lock();
        Ok(Backlog {
            ready: Count::Exact(inner.ready.len() as u64 + inner.delayed),
            in_flight: Count::Exact(inner.leased),
            dead: Count::Exact(inner.dead.len() as u64),
            age: Duration::ZERO,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::Ledger;

    fn queue() -> MemoryQueue {
        MemoryQueue::new(QueueConfig::new("test").with_lease(Duration::from_secs(30)))
    }

    #[tokio::test]
    async fn done_receipts_are_kept_only_when_asked() {
        for (queue, kept) in [(queue(), 0), (queue().with_done_receipts(), 1)] {
            let ledger = queue.ledger();
            let manifest = crate::job::Manifest::new("j", 1, "d");
            ledger.begin(&manifest).await.unwrap();
            let message = Item::new("x").with_job(JobItem::new("j", 0));
            queue.publish(vec![message]).await.unwrap();
            let held = queue.pull(1, Duration::ZERO).await.unwrap().pop().unwrap();
            let job = held.item.job.clone().unwrap();
            let receipt = Receipt {
                life: 0,
                job: job.job,
                seq: job.seq,
                state: crate::job::Settled::Done,
                attempt: 1,
                exit_code: Some(0),
                seconds: 0.5,
                worker: "w".into(),
                item: held.item.payload.clone(),
                reason: None,
                stderr_tail: None,
                at: 1,
                value: None,
                value_url: None,
                copy: false,
            };
            let report = ledger
                .record_then_ack(&queue, &[held.token], &[receipt.borrowed()])
                .await
                .unwrap();
            assert!(report.lost.is_empty());
            assert_eq!(ledger.receipts("j").await.unwrap().len(), kept);
            let status = &ledger.jobs().await.unwrap()[0];
            assert!(status.is_complete(), "{status:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_ack_ends_a_waiting_pull_at_once() {
        let queue = queue();
        queue.publish(vec![Item::new("only")]).await.unwrap();
        let held = queue.pull(1, Duration::ZERO).await.unwrap().pop().unwrap();
        let waiting = tokio::spawn({
            let queue = queue.clone();
            async move {
                let out = queue.pull(1, Duration::from_secs(20)).await.unwrap();
                (out.len(), Instant::now())
            }
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!waiting.is_finished(), "a pull returned with an item held");

        queue.ack(&[held.token]).await.unwrap();
        let acked_at = Instant::now();
        let (pulled, returned_at) = waiting.await.unwrap();
        assert_eq!(pulled, 0);
        assert!(
            returned_at - acked_at < Duration::from_millis(5),
            "the waiting pull returned {:?} after the last ack, not at once",
            returned_at - acked_at
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_filtered_requeue_keeps_the_rest_dead_in_their_order() {
        let queue = queue();
        let items = ["a", "b", "c", "d", "e"].map(Item::new).to_vec();
        queue.publish(items).await.unwrap();
        for held in queue.pull(5, Duration::ZERO).await.unwrap() {
            let reason = match &held.item.payload[..] {
                b"a" | b"d" => "exit code 137",
                _ => "exit code 1",
            };
            queue.dead_letter(&[held.token], reason).await.unwrap();
        }
        let picked = |l: &DeadLetter| l.reason.ends_with("137");
        let report = queue.requeue_dead_where(&picked, None).await.unwrap();
        assert_eq!(report, crate::Requeued { moved: 2, left: 3 });
        let dead: Vec<_> = queue
            .dead_items()
            .into_iter()
            .map(|l| l.item.payload)
            .collect();
        assert_eq!(dead, ["b", "c", "e"], "the rest stay dead, in order");
        let back = queue.pull(5, Duration::ZERO).await.unwrap();
        let back: Vec<_> = back
            .iter()
            .map(|d| (&d.item.payload[..], d.attempt))
            .collect();
        assert_eq!(back, [(&b"a"[..], 1), (&b"d"[..], 1)]);
        // Its own un-count is in the step that moves: no ledger to tell.
        struct Nobody;
        #[async_trait::async_trait]
        impl crate::RequeueWatch for Nobody {
            async fn before_requeue(&self, _: &[DeadLetter]) -> Result<(), QueueError> {
                Ok(())
            }
        }
        let refused = queue.requeue_dead_where(&picked, Some(&Nobody)).await;
        assert_eq!(
            refused.unwrap_err().kind(),
            crate::QueueErrorKind::Unsupported
        );
        assert_eq!(
            queue.dead_items().len(),
            3,
            "a refused requeue moves nothing"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_dead_letter_that_empties_the_queue_ends_a_waiting_pull() {
        let queue = queue();
        queue.publish(vec![Item::new("poison")]).await.unwrap();
        let held = queue.pull(1, Duration::ZERO).await.unwrap().pop().unwrap();
        let waiting = tokio::spawn({
            let queue = queue.clone();
            async move { queue.pull(1, Duration::from_secs(20)).await.unwrap() }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        let start = Instant::now();
        queue.dead_letter(&[held.token], "bad").await.unwrap();
        assert!(waiting.await.unwrap().is_empty());
        assert!(start.elapsed() < Duration::from_millis(5));
    }

    #[tokio::test(start_paused = true)]
    async fn an_ack_that_leaves_work_keeps_the_pull_waiting() {
        let queue = queue();
        queue
            .publish(vec![Item::new("a"), Item::new("b")])
            .await
            .unwrap();
        let held = queue.pull(2, Duration::ZERO).await.unwrap();
        let waiting = tokio::spawn({
            let queue = queue.clone();
            async move { queue.pull(1, Duration::from_secs(20)).await.unwrap() }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        queue.ack(&[held[0].token.clone()]).await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            !waiting.is_finished(),
            "returned while an item was still held"
        );
        queue
            .nack(&[held[1].token.clone()], Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(waiting.await.unwrap().len(), 1, "the nacked item is pulled");
    }

    #[tokio::test(start_paused = true)]
    async fn a_pull_after_the_last_ack_returns_at_once_until_the_next_publish() {
        let queue = queue();
        queue.publish(vec![Item::new("only")]).await.unwrap();
        let held = queue.pull(1, Duration::ZERO).await.unwrap().pop().unwrap();
        queue.ack(&[held.token]).await.unwrap();
        let start = Instant::now();
        assert!(
            queue
                .pull(1, Duration::from_secs(20))
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "a dry queue is not long-polled"
        );

        queue.publish(vec![Item::new("more")]).await.unwrap();
        let held = queue.pull(1, Duration::ZERO).await.unwrap().pop().unwrap();
        let waiting = tokio::spawn({
            let queue = queue.clone();
            async move { queue.pull(1, Duration::from_secs(20)).await.unwrap() }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiting.is_finished(), "returned while an item was held");
        queue.nack(&[held.token], Duration::ZERO).await.unwrap();
        assert_eq!(waiting.await.unwrap().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pull_on_an_empty_queue_still_waits_for_items() {
        let queue = queue();
        let waiting = tokio::spawn({
            let queue = queue.clone();
            async move { queue.pull(1, Duration::from_secs(20)).await.unwrap() }
        });
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(!waiting.is_finished());
        queue.publish(vec![Item::new("late")]).await.unwrap();
        assert_eq!(waiting.await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_hand_back_costs_no_attempt_and_its_token_stays_spent() {
        let queue = MemoryQueue::new(QueueConfig::new("m").with_max_attempts(1));
        queue.publish(vec![Item::new("x")]).await.unwrap();
        let first = queue.pull(1, Duration::ZERO).await.unwrap().remove(0);
        assert!(
            queue
                .release(std::slice::from_ref(&first.token))
                .await
                .unwrap()
                .lost
                .is_empty()
        );
        let second = queue.pull(1, Duration::ZERO).await.unwrap().remove(0);
        assert_eq!(second.attempt, 1, "the hand-back was charged");
        assert_ne!(second.token, first.token, "a token names one delivery");
        let stale = queue.ack(std::slice::from_ref(&first.token)).await.unwrap();
        assert_eq!(stale.lost, [first.token]);
        queue.nack(&[second.token], Duration::ZERO).await.unwrap();
        let backlog = queue.backlog().await.unwrap();
        assert_eq!(
            backlog.dead,
            Count::Exact(1),
            "its one charged attempt was its last"
        );
    }
}
