//! The conformance suite is worth something only if it fails a queue that
//! breaks the contract. Each wrapper here breaks one clause on purpose.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use forloop_core::conformance::{self, Harness};
use forloop_core::kit::DeadStamp;
use forloop_core::{
    Backlog, Capabilities, DeadLetter, Delivery, LeaseReport, LeaseToken, MemoryQueue, Message,
    MessageId, QueueError, WorkQueue,
};

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
}

#[derive(Debug)]
struct Broken {
    inner: MemoryQueue,
    flaw: Flaw,
    /// Payloads requeued by `RequeueKeepsAttempts`, with their attempts.
    requeued: Mutex<HashMap<Bytes, u32>>,
}

impl Broken {
    /// Requeue by hand: every dead item published again, `copies` times,
    /// sealed in the dead-letter envelope when `stamped`.
    async fn requeue_by_hand(&self, stamped: bool, copies: usize) -> Result<u64, QueueError> {
        let letters = self.inner.dead_letters(usize::MAX).await?;
        self.inner.purge_dead().await?;
        let mut batch = Vec::new();
        for letter in &letters {
            let stamp = DeadStamp::new(letter.id.clone(), letter.attempts, &letter.reason);
            let message = if stamped {
                stamp.seal(letter.message.clone())
            } else {
                letter.message.clone()
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
    async fn publish(&self, batch: Vec<Message>) -> Result<Vec<MessageId>, QueueError> {
        self.inner.publish(batch).await
    }
    async fn pull(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, QueueError> {
        let max = if self.flaw == Flaw::PullIgnoresMax {
            max * 4
        } else {
            max
        };
        let mut got = self.inner.pull(max, wait).await?;
        if self.flaw == Flaw::AttemptAlwaysOne {
            got.iter_mut().for_each(|d| d.attempt = 1);
        }
        let requeued = self.requeued.lock().unwrap();
        for delivery in &mut got {
            delivery.attempt += requeued.get(&delivery.payload).copied().unwrap_or(0);
        }
        Ok(got)
    }
    async fn ack(&self, tokens: &[LeaseToken]) -> Result<LeaseReport, QueueError> {
        if self.flaw == Flaw::AckDoesNothing {
            return Ok(LeaseReport::default());
        }
        self.inner.ack(tokens).await
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
        self.inner.nack(tokens, delay).await
    }
    async fn release(&self, tokens: &[LeaseToken]) -> Result<LeaseReport, QueueError> {
        self.inner.release(tokens).await
    }
    async fn extend_deadline(
        &self,
        tokens: &[LeaseToken],
        lease: Duration,
    ) -> Result<LeaseReport, QueueError> {
        if self.flaw == Flaw::ExtendDoesNothing {
            return Ok(LeaseReport::default());
        }
        self.inner.extend_deadline(tokens, lease).await
    }
    async fn dead_letter(
        &self,
        tokens: &[LeaseToken],
        reason: &str,
    ) -> Result<LeaseReport, QueueError> {
        if self.flaw == Flaw::DeadLetterRequeues {
            return self.inner.nack(tokens, Duration::ZERO).await;
        }
        self.inner.dead_letter(tokens, reason).await
    }
    async fn backlog(&self) -> Result<Backlog, QueueError> {
        self.inner.backlog().await
    }
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError> {
        let letters = self.inner.dead_letters(limit).await?;
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
                let letters = self.inner.dead_letters(usize::MAX).await?;
                self.requeued.lock().unwrap().extend(
                    letters
                        .into_iter()
                        .map(|letter| (letter.message.payload, letter.attempts)),
                );
                self.inner.requeue_dead().await
            }
            _ => self.inner.requeue_dead().await,
        }
    }
    async fn purge_dead(&self) -> Result<u64, QueueError> {
        if self.flaw == Flaw::PurgeDoesNothing {
            return Ok(self.inner.dead_letters(usize::MAX).await?.len() as u64);
        }
        self.inner.purge_dead().await
    }
}

fn broken(flaw: Flaw) -> Harness {
    Harness::new(move |config| async move {
        Arc::new(Broken {
            inner: MemoryQueue::with_max_payload(config, 4096),
            flaw,
            requeued: Mutex::default(),
        }) as Arc<dyn WorkQueue>
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

/// And the unbroken queue passes the same functions, so the failures above
/// come from the flaws, not from the wrapper.
#[tokio::test(start_paused = true)]
async fn honest_wrapper_passes() {
    let harness = Harness::new(|config| async move {
        Arc::new(MemoryQueue::with_max_payload(config, 4096)) as Arc<dyn WorkQueue>
    })
    .lease(Duration::from_secs(10))
    .slack(Duration::from_millis(10));
    conformance::ack_is_final(&harness).await;
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
}
