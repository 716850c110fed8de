//! The ledger clauses are worth something only if they fail a ledger that
//! keeps a false fact. Each wrapper here breaks one clause on purpose (over
//! the memory queue's own ledger), and the clause must fail it; the honest
//! wrapper passes them all.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use forloop_core::conformance::Harness;
use forloop_core::job::conformance;
use forloop_core::job::{Backend, Ledger, LedgerDecorator, Receipt, Settled};
use forloop_core::{LeaseReport, LeaseToken, MemoryQueue, QueueConfig, QueueError, WorkQueue};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Flaw {
    None,
    /// `requeued` changes nothing: a requeued item stays counted dead.
    RequeueKeepsDeaths,
    /// The first dead receipt of an item stays: a later death never shows.
    FirstDeathStays,
    /// The receipt first, then the dead-letter (the old worker's order):
    /// a late dead-letter leaves a live item counted dead.
    ReceiptBeforeBurial,
    /// The requeue moves the items and leaves them counted dead (as the
    /// queue-level requeue did before it went through the ledger).
    RequeueRecountsAfterMoving,
    /// `cancel` says yes and records nothing.
    CancelRecordsNothing,
    /// `forget` says yes and removes nothing.
    ForgetRemovesNothing,
}

#[derive(Debug)]
struct Wrong {
    inner: Arc<dyn Ledger>,
    flaw: Flaw,
    /// Dead receipts seen, by (job, seq), for `FirstDeathStays`.
    dead: Mutex<HashMap<(Arc<str>, u64), ()>>,
}

#[async_trait]
impl LedgerDecorator for Wrong {
    fn inner(&self) -> &dyn Ledger {
        &*self.inner
    }
    async fn record(&self, receipts: &[Receipt]) -> Result<(), QueueError> {
        if self.flaw == Flaw::FirstDeathStays {
            let kept: Vec<Receipt> = {
                let mut seen = self.dead.lock().unwrap();
                receipts
                    .iter()
                    .filter(|r| {
                        r.state != Settled::Dead
                            || seen.insert((r.job.clone(), r.seq), ()).is_none()
                    })
                    .cloned()
                    .collect()
            };
            return self.inner.record(&kept).await;
        }
        self.inner.record(receipts).await
    }
    async fn record_then_dead_letter(
        &self,
        queue: &dyn WorkQueue,
        tokens: &[LeaseToken],
        reason: &str,
        receipts: &[Option<Receipt>],
    ) -> Result<LeaseReport, QueueError> {
        if self.flaw == Flaw::ReceiptBeforeBurial {
            let all: Vec<Receipt> = receipts.iter().flatten().cloned().collect();
            self.inner.record(&all).await?;
            return queue.dead_letter(tokens, reason).await;
        }
        if self.flaw == Flaw::FirstDeathStays {
            let report = queue.dead_letter(tokens, reason).await?;
            let buried: Vec<Receipt> = tokens
                .iter()
                .zip(receipts)
                .filter(|(t, _)| !report.lost.contains(t))
                .filter_map(|(_, r)| r.clone())
                .collect();
            LedgerDecorator::record(self, &buried).await?;
            return Ok(report);
        }
        self.inner
            .record_then_dead_letter(queue, tokens, reason, receipts)
            .await
    }
    async fn requeue_dead(&self, queue: &dyn WorkQueue) -> Result<u64, QueueError> {
        if self.flaw == Flaw::RequeueRecountsAfterMoving {
            let letters = queue.list_dead(1000).await?;
            let moved = self.inner.requeue_dead(queue).await?;
            let deaths: Vec<Receipt> = letters
                .iter()
                .filter_map(|l| {
                    let job = l.item.job.as_ref()?;
                    // Counted in whatever life the item is in now.
                    let job = job.clone().in_life(u64::MAX / 2);
                    Some(Receipt::lapsed(
                        &job,
                        &l.item.payload,
                        l.attempts,
                        &l.reason,
                    ))
                })
                .collect();
            self.inner.record(&deaths).await?;
            return Ok(moved);
        }
        self.inner.requeue_dead(queue).await
    }
    async fn cancel(&self, job: &str) -> Result<bool, QueueError> {
        if self.flaw == Flaw::CancelRecordsNothing {
            return Ok(self
                .inner
                .jobs()
                .await?
                .iter()
                .any(|j| j.manifest.job == job));
        }
        self.inner.cancel(job).await
    }
    async fn forget(&self, job: &str) -> Result<bool, QueueError> {
        if self.flaw == Flaw::ForgetRemovesNothing {
            return Ok(self
                .inner
                .jobs()
                .await?
                .iter()
                .any(|j| j.manifest.job == job));
        }
        self.inner.forget(job).await
    }
    async fn requeued(&self, dead: &[Receipt]) -> Result<(), QueueError> {
        if self.flaw == Flaw::RequeueKeepsDeaths {
            return Ok(());
        }
        self.inner.requeued(dead).await
    }
}

/// Memory queues by name, each with one wrapped ledger (two clients of a
/// name share both).
fn harness(flaw: Flaw) -> Harness {
    let open: Mutex<HashMap<String, Backend>> = Mutex::default();
    Harness::new(move |config: QueueConfig| {
        let backend = open
            .lock()
            .unwrap()
            .entry(config.name.clone())
            .or_insert_with(|| {
                let queue = MemoryQueue::with_max_payload(config, 4096).with_done_receipts();
                let ledger = Arc::new(Wrong {
                    inner: queue.ledger(),
                    flaw,
                    dead: Mutex::default(),
                });
                Backend::new(Arc::new(queue)).with_ledger(ledger)
            })
            .clone();
        async move { backend }
    })
    .lease(Duration::from_secs(10))
    .slack(Duration::from_millis(10))
}

/// Runs a clause on its own task and asserts that it panicked.
async fn must_fail<F, Fut>(flaw: Flaw, test: F)
where
    F: FnOnce(Harness) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let outcome = tokio::spawn(test(harness(flaw))).await;
    assert!(
        outcome.as_ref().is_err_and(|e| e.is_panic()),
        "the ledger clauses passed a ledger whose flaw is {flaw:?}"
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
    a_requeue_that_keeps_the_deaths,
    Flaw::RequeueKeepsDeaths,
    conformance::ledger_requeued_items_count_again_and_the_later_death_shows
);
catches!(
    a_first_death_that_stays,
    Flaw::FirstDeathStays,
    conformance::ledger_requeued_items_count_again_and_the_later_death_shows
);
catches!(
    a_receipt_written_before_the_burial,
    Flaw::ReceiptBeforeBurial,
    conformance::ledger_counts_dead_only_what_is_in_the_dead_place
);
catches!(
    a_requeue_that_counts_the_deaths_again,
    Flaw::RequeueRecountsAfterMoving,
    conformance::ledger_counts_dead_only_what_is_in_the_dead_place
);
catches!(
    a_cancel_that_records_nothing,
    Flaw::CancelRecordsNothing,
    conformance::ledger_cancels_and_forgets_jobs
);
catches!(
    a_forget_that_removes_nothing,
    Flaw::ForgetRemovesNothing,
    conformance::ledger_cancels_and_forgets_jobs
);

#[tokio::test(start_paused = true)]
async fn the_honest_wrapper_passes_every_clause() {
    let h = harness(Flaw::None);
    conformance::ledger_cancels_and_forgets_jobs(&h).await;
    conformance::ledger_requeued_items_count_again_and_the_later_death_shows(&h).await;
    conformance::ledger_counts_dead_only_what_is_in_the_dead_place(&h).await;
    conformance::ledger_counts_each_item_once(&h).await;
}
