//! The conformance suite is worth something only if it fails a queue that
//! breaks the contract. Each wrapper here breaks one clause on purpose.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use forloop_core::conformance::{self, Harness};
use forloop_core::job::Backend;
use forloop_core::kit::DeadStamp;
use forloop_core::{
    Backlog, Capabilities, Count, DeadLetter, Delivery, Item, LeaseReport, LeaseToken, MemoryQueue,
    MessageId, QueueConfig, QueueError, QueueErrorKind, WorkQueue,
};
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Flaw {
    AckDoesNothing,
    ExtendDoesNothing,
    NackIgnoresDelay,
    PullIgnoresMax,
    AttemptAlwaysOne,
    NoSizeCheck,
    DeadLetterRequeues,
    ListingConsumes,
    RequeueKeepsStamps,
    RequeueKeepsAttempts,
    RequeueDuplicates,
    PurgeDoesNothing,
    /// A token names the item, not the delivery (Redis's `(id, attempt)`
    /// after a requeue or a key loss): an old token settles a new delivery.
    TokensNameItems,
    /// nack, extend and dead_letter never report a lease lost.
    StaleCallsSayHeld,
    /// A backlog read buries what it finds ready (a reader applying a
    /// `max_attempts` of its own).
    ReaderBuries,
    /// Publish refuses a request over 1 MiB, below `max_batch × max_payload`.
    RequestBytesCapped,
    /// A hand-back is a `nack(0)`: it costs an attempt.
    ReleaseCharges,
    /// A last attempt is leased for 12 hours behind the holder's back
    /// (a receive at the longest visibility): when its holder dies, the item
    /// is neither delivered nor dead.
    LastLeaseHeldForever,
    /// When a last attempt's lease lapses, the item is handed back free,
    /// and delivered again forever.
    LastLapseRedelivers,
    /// `nack(d)` on the last attempt deletes the item.
    DelayedNackAtMaxLoses,
    /// `nack(d)` on the last attempt hands the item back free.
    DelayedNackAtMaxRedelivers,
    /// The backlog counts an item nowhere while its nack's delay runs.
    BacklogHidesDelayed,
    /// A pull receives for 12 hours, then shortens the lease to the
    /// queue's after a round trip: a pull dropped in between hides its
    /// items for 12 hours.
    PullHidesThenShortens,
    /// The backlog says `Unknown` while `exact_backlog` is advertised.
    UnknownBacklog,
    /// A failed attempt is a plain nack: the next delivery reads it as a
    /// lapse, and `--max-attempts` never counts it.
    FailIsNack,
}

/// What the inner queue grants at most: a lease "for ever" in these tests.
const FOREVER: Duration = Duration::from_secs(12 * 3600);

#[derive(Debug)]
struct Broken {
    inner: MemoryQueue,
    flaw: Flaw,
    /// Payloads requeued by `RequeueKeepsAttempts`, with their attempts.
    requeued: Mutex<HashMap<Bytes, u32>>,
    /// `TokensNameItems`: the inner token of each item's latest delivery.
    latest: Mutex<HashMap<LeaseToken, LeaseToken>>,
    /// The config the queue was opened with (its lease and max attempts).
    config: QueueConfig,
    /// Deliveries on their last attempt, with the deadline their holder was told.
    last: Mutex<Vec<(LeaseToken, Instant)>>,
    /// `BacklogHidesDelayed`: when each delayed nack falls due.
    delayed: Mutex<Vec<Instant>>,
}

impl Broken {
    /// Settle through the inner queue, with the flaws of the settle calls.
    async fn settle<'a, F, Fut>(
        &'a self,
        tokens: &[LeaseToken],
        call: F,
    ) -> Result<LeaseReport, QueueError>
    where
        F: FnOnce(Vec<LeaseToken>) -> Fut,
        Fut: Future<Output = Result<LeaseReport, QueueError>> + 'a,
    {
        if self.flaw != Flaw::TokensNameItems {
            return call(tokens.to_vec()).await;
        }
        let inner: Vec<LeaseToken> = {
            let latest = self.latest.lock().unwrap();
            tokens
                .iter()
                .map(|token| latest.get(token).cloned().unwrap_or_else(|| token.clone()))
                .collect()
        };
        let report = call(inner.clone()).await?;
        let lost = tokens
            .iter()
            .zip(&inner)
            .filter(|(_, inner)| report.lost.contains(inner))
            .map(|(outer, _)| outer.clone())
            .collect();
        Ok(LeaseReport { lost })
    }

    /// Whether `token` is a delivery on its last attempt, forgetting it.
    fn take_last(&self, token: &LeaseToken) -> bool {
        let mut last = self.last.lock().unwrap();
        let before = last.len();
        last.retain(|(held, _)| held != token);
        last.len() < before
    }

    /// The flaws of the last attempt, before and after an inner pull.
    async fn last_attempt_flaws(&self, got: &[Delivery]) -> Result<(), QueueError> {
        use Flaw::*;
        if !matches!(
            self.flaw,
            LastLeaseHeldForever
                | LastLapseRedelivers
                | DelayedNackAtMaxLoses
                | DelayedNackAtMaxRedelivers
        ) {
            return Ok(());
        }
        let lapsed: Vec<LeaseToken> = {
            let mut last = self.last.lock().unwrap();
            let now = Instant::now();
            let (lapsed, live) = last.drain(..).partition(|(_, at)| *at <= now);
            *last = live;
            lapsed.into_iter().map(|(token, _)| token).collect()
        };
        if self.flaw == LastLapseRedelivers && !lapsed.is_empty() {
            self.inner.release(&lapsed).await?;
        }
        for delivery in got {
            if delivery.attempt < self.config.max_attempts {
                continue;
            }
            if matches!(self.flaw, LastLeaseHeldForever | LastLapseRedelivers) {
                self.inner
                    .extend_lease(std::slice::from_ref(&delivery.token), FOREVER)
                    .await?;
            }
            self.last
                .lock()
                .unwrap()
                .push((delivery.token.clone(), delivery.deadline));
        }
        Ok(())
    }

    fn hide_lost(&self, report: LeaseReport) -> LeaseReport {
        if self.flaw == Flaw::StaleCallsSayHeld {
            LeaseReport::default()
        } else {
            report
        }
    }

    /// Requeue by hand: every dead item published again, `copies` times,
    /// sealed in the dead-letter envelope when `stamped`.
    async fn requeue_by_hand(&self, stamped: bool, copies: usize) -> Result<u64, QueueError> {
        let letters = self.inner.list_dead(usize::MAX).await?;
        self.inner.purge_dead().await?;
        let mut batch = Vec::new();
        for letter in &letters {
            let stamp = DeadStamp::new(letter.id.clone(), letter.attempts, &letter.reason);
            let message = if stamped {
                stamp.seal(letter.item.clone())
            } else {
                letter.item.clone()
            };
            batch.extend(std::iter::repeat_n(message, copies));
        }
        self.inner.publish(batch).await?;
        Ok(letters.len() as u64)
    }
}

#[async_trait]
impl WorkQueue for Broken {
    fn capabilities(&self) -> Capabilities {
        let mut caps = self.inner.capabilities();
        if self.flaw == Flaw::NoSizeCheck {
            caps.max_payload = 16;
        }
        caps
    }
    async fn publish(&self, batch: Vec<Item>) -> Result<Vec<MessageId>, QueueError> {
        let bytes: usize = batch.iter().map(|m| m.payload.len()).sum();
        if self.flaw == Flaw::RequestBytesCapped && bytes > 1024 * 1024 {
            return Err(QueueError::new(
                QueueErrorKind::Invalid,
                format!("a request of {bytes} bytes is over 1 MiB"),
            ));
        }
        self.inner.publish(batch).await
    }
    async fn pull(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, QueueError> {
        let max = if self.flaw == Flaw::PullIgnoresMax {
            max * 4
        } else {
            max
        };
        if self.flaw == Flaw::LastLapseRedelivers {
            // Look for lapsed last attempts before the inner pull waits.
            self.last_attempt_flaws(&[]).await?;
        }
        let mut got = self.inner.pull(max, wait).await?;
        self.last_attempt_flaws(&got).await?;
        if self.flaw == Flaw::PullHidesThenShortens && !got.is_empty() {
            let tokens: Vec<_> = got.iter().map(|d| d.token.clone()).collect();
            self.inner.extend_lease(&tokens, FOREVER).await?;
            tokio::task::yield_now().await;
            self.inner.extend_lease(&tokens, self.config.lease).await?;
        }
        if self.flaw == Flaw::AttemptAlwaysOne {
            got.iter_mut().for_each(|d| d.attempt = 1);
        }
        let requeued = self.requeued.lock().unwrap();
        for delivery in &mut got {
            delivery.attempt += requeued.get(&delivery.item.payload).copied().unwrap_or(0);
        }
        if self.flaw == Flaw::TokensNameItems {
            let mut latest = self.latest.lock().unwrap();
            for delivery in &mut got {
                let named = LeaseToken::new(String::from_utf8_lossy(&delivery.item.payload));
                latest.insert(named.clone(), std::mem::replace(&mut delivery.token, named));
            }
        }
        Ok(got)
    }
    async fn ack(&self, tokens: &[LeaseToken]) -> Result<LeaseReport, QueueError> {
        if self.flaw == Flaw::AckDoesNothing {
            return Ok(LeaseReport::default());
        }
        self.settle(tokens, |t| async move { self.inner.ack(&t).await })
            .await
    }
    async fn nack(
        &self,
        tokens: &[LeaseToken],
        delay: Duration,
    ) -> Result<LeaseReport, QueueError> {
        let delay = if self.flaw == Flaw::NackIgnoresDelay {
            Duration::ZERO
        } else {
            delay
        };
        if self.flaw == Flaw::BacklogHidesDelayed && !delay.is_zero() {
            self.delayed.lock().unwrap().push(Instant::now() + delay);
        }
        if let [token] = tokens
            && !delay.is_zero()
            && self.take_last(token)
        {
            match self.flaw {
                Flaw::DelayedNackAtMaxLoses => return self.inner.ack(tokens).await,
                Flaw::DelayedNackAtMaxRedelivers => return self.inner.release(tokens).await,
                _ => {}
            }
        }
        let report = self
            .settle(tokens, |t| async move { self.inner.nack(&t, delay).await })
            .await?;
        Ok(self.hide_lost(report))
    }
    async fn fail_attempt(
        &self,
        tokens: &[LeaseToken],
        delay: Duration,
    ) -> Result<LeaseReport, QueueError> {
        if self.flaw == Flaw::FailIsNack {
            return self.inner.nack(tokens, delay).await;
        }
        self.inner.fail_attempt(tokens, delay).await
    }
    async fn release(&self, tokens: &[LeaseToken]) -> Result<LeaseReport, QueueError> {
        if self.flaw == Flaw::ReleaseCharges {
            return self.inner.nack(tokens, Duration::ZERO).await;
        }
        self.inner.release(tokens).await
    }
    async fn extend_lease(
        &self,
        tokens: &[LeaseToken],
        lease: Duration,
    ) -> Result<LeaseReport, QueueError> {
        if self.flaw == Flaw::ExtendDoesNothing {
            return Ok(LeaseReport::default());
        }
        let report = self
            .settle(tokens, |t| async move {
                self.inner.extend_lease(&t, lease).await
            })
            .await?;
        Ok(self.hide_lost(report))
    }
    async fn dead_letter(
        &self,
        tokens: &[LeaseToken],
        reason: &str,
    ) -> Result<LeaseReport, QueueError> {
        if self.flaw == Flaw::DeadLetterRequeues {
            return self.inner.nack(tokens, Duration::ZERO).await;
        }
        let report = self
            .settle(tokens, |t| async move {
                self.inner.dead_letter(&t, reason).await
            })
            .await?;
        Ok(self.hide_lost(report))
    }
    async fn backlog(&self) -> Result<Backlog, QueueError> {
        if self.flaw == Flaw::ReaderBuries {
            let found = self.inner.pull(usize::MAX, Duration::ZERO).await?;
            let tokens: Vec<_> = found.into_iter().map(|d| d.token).collect();
            self.inner
                .dead_letter(&tokens, "buried by a reader")
                .await?;
        }
        let mut backlog = self.inner.backlog().await?;
        match self.flaw {
            Flaw::UnknownBacklog => {
                backlog.ready = Count::Unknown;
                backlog.in_flight = Count::Unknown;
                backlog.dead = Count::Unknown;
            }
            Flaw::BacklogHidesDelayed => {
                let now = Instant::now();
                let waiting = self
                    .delayed
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|at| **at > now)
                    .count();
                let ready = backlog.ready.value().unwrap_or(0);
                backlog.ready = Count::Exact(ready.saturating_sub(waiting as u64));
            }
            _ => {}
        }
        Ok(backlog)
    }
    async fn list_dead(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError> {
        let letters = self.inner.list_dead(limit).await?;
        if self.flaw == Flaw::ListingConsumes {
            self.inner.purge_dead().await?;
        }
        Ok(letters)
    }
    async fn requeue_dead(&self) -> Result<u64, QueueError> {
        match self.flaw {
            Flaw::RequeueKeepsStamps => self.requeue_by_hand(true, 1).await,
            Flaw::RequeueDuplicates => self.requeue_by_hand(false, 2).await,
            Flaw::RequeueKeepsAttempts => {
                let letters = self.inner.list_dead(usize::MAX).await?;
                self.requeued.lock().unwrap().extend(
                    letters
                        .into_iter()
                        .map(|letter| (letter.item.payload, letter.attempts)),
                );
                self.inner.requeue_dead().await
            }
            _ => self.inner.requeue_dead().await,
        }
    }
    async fn purge_dead(&self) -> Result<u64, QueueError> {
        if self.flaw == Flaw::PurgeDoesNothing {
            return Ok(self.inner.list_dead(usize::MAX).await?.len() as u64);
        }
        self.inner.purge_dead().await
    }
}

/// Memory queues by name: opening a name twice reaches one queue, whose
/// config is its first opener's.
fn named_queues() -> impl Fn(QueueConfig) -> MemoryQueue + Send + Sync + 'static {
    let queues: Mutex<HashMap<String, MemoryQueue>> = Mutex::default();
    move |config| {
        queues
            .lock()
            .unwrap()
            .entry(config.name.clone())
            .or_insert_with(|| MemoryQueue::with_max_payload(config, 4096).with_done_receipts())
            .clone()
    }
}

fn broken(flaw: Flaw) -> Harness {
    let queues = named_queues();
    Harness::new(move |config| {
        let broken = Broken {
            inner: queues(config.clone()),
            flaw,
            requeued: Mutex::default(),
            latest: Mutex::default(),
            config,
            last: Mutex::default(),
            delayed: Mutex::default(),
        };
        async move { Backend::new(Arc::new(broken)) }
    })
    .lease(Duration::from_secs(10))
    .slack(Duration::from_millis(10))
}

/// Runs a suite function on its own task and asserts that it panicked.
async fn must_fail<F, Fut>(flaw: Flaw, test: F)
where
    F: FnOnce(Harness) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let outcome = tokio::spawn(test(broken(flaw))).await;
    assert!(
        outcome.as_ref().is_err_and(|e| e.is_panic()),
        "the suite passed a queue whose flaw is {flaw:?}"
    );
}

macro_rules! catches {
    ($name:ident, $flaw:expr, $test:path) => {
        #[tokio::test(start_paused = true)]
        async fn $name() {
            must_fail($flaw, |h| async move { $test(&h).await }).await;
        }
    };
}

catches!(
    ack_that_does_nothing,
    Flaw::AckDoesNothing,
    conformance::ack_is_final
);
catches!(
    extend_that_does_nothing,
    Flaw::ExtendDoesNothing,
    conformance::extension_keeps_item_away
);
catches!(
    nack_that_ignores_delay,
    Flaw::NackIgnoresDelay,
    conformance::nack_delay_returns_after_delay
);
catches!(
    pull_that_prefetches,
    Flaw::PullIgnoresMax,
    conformance::pull_respects_max
);
catches!(
    attempts_that_never_rise,
    Flaw::AttemptAlwaysOne,
    conformance::redelivery_after_deadline
);
catches!(
    size_limit_not_enforced,
    Flaw::NoSizeCheck,
    conformance::oversize_payload_refused
);
catches!(
    dead_letter_that_requeues,
    Flaw::DeadLetterRequeues,
    conformance::dead_letter_moves_item
);
catches!(
    listing_that_consumes,
    Flaw::ListingConsumes,
    conformance::dead_letters_listing_does_not_consume
);
catches!(
    requeue_that_keeps_the_stamps,
    Flaw::RequeueKeepsStamps,
    conformance::requeue_dead_gives_fresh_items
);
catches!(
    requeue_that_keeps_attempts,
    Flaw::RequeueKeepsAttempts,
    conformance::requeue_dead_gives_fresh_items
);
catches!(
    requeue_that_duplicates,
    Flaw::RequeueDuplicates,
    conformance::requeue_dead_gives_fresh_items
);
catches!(
    purge_that_does_nothing,
    Flaw::PurgeDoesNothing,
    conformance::purge_dead_empties_the_dead_place
);
catches!(
    tokens_that_name_items,
    Flaw::TokensNameItems,
    conformance::stale_token_after_requeue_cannot_settle
);
catches!(
    stale_calls_that_say_held,
    Flaw::StaleCallsSayHeld,
    conformance::stale_settle_calls_report_lost
);
catches!(
    reader_that_buries,
    Flaw::ReaderBuries,
    conformance::a_reader_does_not_change_max_attempts
);
catches!(
    release_that_charges_an_attempt,
    Flaw::ReleaseCharges,
    conformance::release_costs_no_attempt
);
catches!(
    request_bytes_below_the_limits,
    Flaw::RequestBytesCapped,
    conformance::full_batch_of_largest_items
);
catches!(
    last_lease_held_forever,
    Flaw::LastLeaseHeldForever,
    conformance::lease_lapse_at_max_attempts_dead_letters
);
catches!(
    last_lapse_redelivers,
    Flaw::LastLapseRedelivers,
    conformance::lease_lapse_at_max_attempts_dead_letters
);
catches!(
    delayed_nack_at_max_loses,
    Flaw::DelayedNackAtMaxLoses,
    conformance::delayed_nack_at_max_attempts_dead_letters
);
catches!(
    delayed_nack_at_max_redelivers,
    Flaw::DelayedNackAtMaxRedelivers,
    conformance::delayed_nack_at_max_attempts_dead_letters
);
catches!(
    backlog_that_hides_delayed_items,
    Flaw::BacklogHidesDelayed,
    conformance::backlog_counts_a_delayed_item
);
catches!(
    pull_that_hides_then_shortens,
    Flaw::PullHidesThenShortens,
    conformance::dropped_pull_swallows_nothing
);
catches!(
    fail_that_is_a_nack,
    Flaw::FailIsNack,
    conformance::a_failed_attempt_is_counted_apart_from_lapses
);
// A clause that never asked for exactness: the unknown counts fail it now.
catches!(
    unknown_counts_with_exact_backlog,
    Flaw::UnknownBacklog,
    conformance::dead_letter_moves_item
);

/// And the unbroken queue passes the same functions, so the failures above
/// come from the flaws, not from the wrapper.
#[tokio::test(start_paused = true)]
async fn honest_wrapper_passes() {
    let queues = named_queues();
    let harness = Harness::new(move |config| {
        let queue = queues(config);
        async move { queue.backend() }
    })
    .lease(Duration::from_secs(10))
    .slack(Duration::from_millis(10));
    conformance::ack_is_final(&harness).await;
    conformance::release_costs_no_attempt(&harness).await;
    conformance::extension_keeps_item_away(&harness).await;
    conformance::nack_delay_returns_after_delay(&harness).await;
    conformance::pull_respects_max(&harness).await;
    conformance::redelivery_after_deadline(&harness).await;
    conformance::oversize_payload_refused(&harness).await;
    conformance::dead_letter_moves_item(&harness).await;
    conformance::dead_letters_listing_does_not_consume(&harness).await;
    conformance::requeue_dead_gives_fresh_items(&harness).await;
    conformance::requeue_after_native_dead_letter_restores_attributes(&harness).await;
    conformance::purge_dead_empties_the_dead_place(&harness).await;
    conformance::stale_token_after_requeue_cannot_settle(&harness).await;
    conformance::stale_settle_calls_report_lost(&harness).await;
    conformance::a_reader_does_not_change_max_attempts(&harness).await;
    conformance::full_batch_of_largest_items(&harness).await;
    conformance::lease_lapse_at_max_attempts_dead_letters(&harness).await;
    conformance::delayed_nack_at_max_attempts_dead_letters(&harness).await;
    conformance::backlog_counts_a_delayed_item(&harness).await;
    conformance::dropped_pull_swallows_nothing(&harness).await;
    conformance::a_failed_attempt_is_counted_apart_from_lapses(&harness).await;
}
