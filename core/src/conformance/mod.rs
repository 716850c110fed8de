//! The delivery contract as public test functions (feature `conformance`).
//!
//! A driver's test file is a handful of lines:
//!
//! ```ignore
//! fn harness() -> forloop_core::conformance::Harness {
//!     Harness::new(|config| async move { Arc::new(MyQueue::open(config).await) as Arc<dyn WorkQueue> })
//!         .lease(Duration::from_secs(10))
//! }
//! forloop_core::conformance_tests!(harness);
//! ```
//!
//! Each function checks one clause and panics with what it saw when the
//! queue breaks it. Clauses a backend cannot show are gated by its
//! [`Capabilities`](crate::Capabilities) (printing why), never skipped by hand.
//! Timing is in units of the harness's lease and slack, so the same suite
//! runs on a paused tokio clock (memory) and on real servers.
//!
//! One file per rule of the delivery contract (written at the top of
//! [`crate::queue`]): `delivery` (rules 1 and 2), `leases` (3, and hand-backs),
//! `attempts` (4), `dead` (the dead-letter place), `pull` (5), `backlog` (6),
//! `tokens` (a token names one delivery) and `limits` (what publish refuses).
//! This file holds the harness, the helpers they share and the macro.

mod attempts;
mod backlog;
mod dead;
mod delivery;
mod leases;
mod limits;
mod pull;
mod tokens;

pub use attempts::{
    a_failed_attempt_is_counted_apart_from_lapses, a_reader_does_not_change_max_attempts,
    dead_letter_after_max_attempts, delayed_nack_at_max_attempts_dead_letters,
    lease_lapse_at_max_attempts_dead_letters,
};
pub use backlog::{backlog_counts, backlog_counts_a_delayed_item};
pub use dead::{
    dead_letter_moves_item, dead_letters_listing_does_not_consume,
    filtered_requeue_moves_only_the_picked, purge_dead_empties_the_dead_place,
    requeue_after_native_dead_letter_restores_attributes, requeue_dead_gives_fresh_items,
};
pub use delivery::{ack_is_final, dropped_pull_swallows_nothing, round_trip};
pub use leases::{
    extension_keeps_item_away, nack_delay_returns_after_delay, nack_zero_returns_at_once,
    redelivery_after_deadline, release_costs_no_attempt,
};
pub use limits::{FULL_BATCH_BYTES, full_batch_of_largest_items, oversize_payload_refused};
pub use pull::{concurrent_pullers_never_share, empty_pull_returns_within_wait, pull_respects_max};
pub use tokens::{
    stale_settle_calls_report_lost, stale_token_after_requeue_cannot_settle, stale_token_cannot_ack,
};

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::{Instant, sleep};

use crate::job::{Backend, JobItem};
use crate::{Backlog, Count, DeadLetter, Delivery, Item, QueueConfig, QueueErrorKind, WorkQueue};

type Open = dyn Fn(QueueConfig) -> Pin<Box<dyn Future<Output = Backend> + Send>> + Send + Sync;

/// How the suite reaches a driver: a factory for fresh queues and the timing
/// the backend can keep.
#[derive(Clone)]
pub struct Harness {
    open: Arc<Open>,
    lease: Duration,
    slack: Duration,
    stale_tokens_may_settle: Option<&'static str>,
    stale_calls_unreported: Option<&'static str>,
    least_attempts: u32,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness")
            .field("lease", &self.lease)
            .field("slack", &self.slack)
            .finish_non_exhaustive()
    }
}

static NEXT_QUEUE: AtomicU64 = AtomicU64::new(0);

impl Harness {
    /// A harness whose `open` makes a new, empty queue for each config.
    /// Defaults: 2 s lease, 500 ms slack.
    pub fn new<F, Fut>(open: F) -> Self
    where
        F: Fn(QueueConfig) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Backend> + Send + 'static,
    {
        Self {
            open: Arc::new(move |config| Box::pin(open(config))),
            lease: Duration::from_secs(2),
            slack: Duration::from_millis(500),
            stale_tokens_may_settle: None,
            stale_calls_unreported: None,
            least_attempts: 1,
        }
    }

    /// The lease each test queue grants (at least the backend's minimum).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How late the backend's timers may fire (e.g. emulators that check
    /// deadlines once a second).
    pub fn slack(mut self, slack: Duration) -> Self {
        self.slack = slack;
        self
    }

    /// Mark a backend that cannot tell a stale token from a live one (it
    /// answers success and changes nothing, as Pub/Sub does without
    /// exactly-once delivery): the clauses still check that a stale call
    /// leaves the new delivery alone, but not that it reports `lost`.
    pub fn stale_calls_unreported(mut self, why: &'static str) -> Self {
        self.stale_calls_unreported = Some(why);
        self
    }

    /// Mark a documented backend duplicate: a token from an earlier delivery
    /// may still settle the item.
    pub fn stale_tokens_may_settle(mut self, why: &'static str) -> Self {
        self.stale_tokens_may_settle = Some(why);
        self
    }

    /// The least `max_attempts` the backend's dead-letter rule takes
    /// (Pub/Sub: 5); clauses that need an item buried on its first
    /// delivery fail it this many times less one first. Default 1.
    pub fn least_attempts(mut self, attempts: u32) -> Self {
        self.least_attempts = attempts.max(1);
        self
    }

    /// The least `max_attempts` the backend takes (see [`Harness::least_attempts`]).
    pub fn least_attempts_taken(&self) -> u32 {
        self.least_attempts
    }

    /// The lease each test queue grants.
    pub fn lease_length(&self) -> Duration {
        self.lease
    }

    /// How late the backend's timers may fire.
    pub fn slack_length(&self) -> Duration {
        self.slack
    }

    /// A fresh queue for one test.
    pub async fn queue(&self, test: &str, max_attempts: u32) -> Arc<dyn WorkQueue> {
        self.open(&Self::fresh_name(test), max_attempts).await
    }

    /// A fresh backend (its queue and ledger) for `test`.
    pub async fn backend(&self, test: &str, max_attempts: u32) -> Backend {
        self.open_backend(&Self::fresh_name(test), max_attempts)
            .await
    }

    /// A queue name no other test uses.
    pub fn fresh_name(test: &str) -> String {
        format!(
            "conf-{test}-{}-{}",
            std::process::id(),
            NEXT_QUEUE.fetch_add(1, Ordering::Relaxed)
        )
        .replace('_', "-")
    }

    /// A client of the queue `name`, with its own `max_attempts`. Opening a
    /// name twice must reach the same queue (two processes of one job), so a
    /// factory for an in-process backend keeps its queues by name.
    pub async fn open(&self, name: &str, max_attempts: u32) -> Arc<dyn WorkQueue> {
        self.open_backend(name, max_attempts).await.queue
    }

    /// The backend `name` (its queue and ledger), as [`open`](Self::open) opens it.
    pub async fn open_backend(&self, name: &str, max_attempts: u32) -> Backend {
        let config = QueueConfig::new(name)
            .with_lease(self.lease)
            .with_max_attempts(max_attempts);
        (self.open)(config).await
    }
}

fn gated(test: &str, why: &str) {
    eprintln!("conformance: {test} does not apply to this backend: {why}");
}

async fn publish(queue: &dyn WorkQueue, items: &[&str]) -> Vec<crate::MessageId> {
    let batch = items
        .iter()
        .map(|item| Item::new(item.to_string()))
        .collect();
    queue.publish(batch).await.expect("publish")
}

async fn pull_one(queue: &dyn WorkQueue, wait: Duration) -> Option<Delivery> {
    let mut got = queue.pull(1, wait).await.expect("pull");
    assert!(got.len() <= 1, "pull(1) returned {} items", got.len());
    got.pop()
}

fn text(delivery: &Delivery) -> String {
    String::from_utf8_lossy(&delivery.item.payload).into_owned()
}

/// Clauses already told that their backlog counts could not be checked.
static UNCHECKED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// The counts of a reading, `[ready, in_flight, dead]`, `None` where the
/// backend cannot say. An unknown count is never taken as a match: it fails
/// a backend that advertises `exact_backlog`, and otherwise the clause says
/// (once) that the count went unchecked.
fn known_counts(test: &str, queue: &dyn WorkQueue, backlog: &Backlog) -> [Option<u64>; 3] {
    if queue.capabilities().exact_backlog {
        assert!(
            backlog.is_exact(),
            "{test}: exact_backlog is advertised but {backlog:?} is not exact"
        );
    }
    let counts = [backlog.ready, backlog.in_flight, backlog.dead].map(Count::value);
    let unknown: Vec<&str> = ["ready", "in_flight", "dead"]
        .into_iter()
        .zip(counts)
        .filter_map(|(name, count)| count.is_none().then_some(name))
        .collect();
    let first_time = || {
        UNCHECKED
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(test.to_string())
    };
    if !unknown.is_empty() && first_time() {
        gated(
            &format!("{test} (its backlog check)"),
            &format!(
                "the backlog cannot count {}, so that went unchecked",
                unknown.join(", ")
            ),
        );
    }
    counts
}

/// Reads the backlog until its known counts match, for up to the staleness
/// window (see [`known_counts`] for the unknown ones).
async fn backlog_becomes(
    test: &str,
    harness: &Harness,
    queue: &dyn WorkQueue,
    ready: u64,
    in_flight: u64,
    dead: u64,
) {
    let staleness = queue.capabilities().backlog_staleness;
    let until = Instant::now() + staleness + harness.slack;
    loop {
        let backlog = queue.backlog().await.expect("backlog");
        let counts = known_counts(test, queue, &backlog);
        if counts
            .into_iter()
            .zip([ready, in_flight, dead])
            .all(|(count, want)| count.is_none_or(|n| n == want))
        {
            return;
        }
        assert!(
            Instant::now() < until,
            "{test}: backlog {backlog:?} did not become ready={ready} in_flight={in_flight} dead={dead} within the staleness window"
        );
        sleep(Duration::from_millis(250).min(staleness.max(Duration::from_millis(10)))).await;
    }
}

/// Items with attributes of their own, for the dead-letter clauses; the
/// even ones are items of a job (with no manifest), which a dead letter,
/// its listing and a requeue must keep.
fn marked_items(test: &str, n: usize) -> Vec<Item> {
    (0..n)
        .map(|i| {
            let item = Item::new(format!("{test}-{i}"))
                .with_attribute("origin", "conformance")
                .with_attribute("n", i.to_string());
            if i % 2 == 0 {
                item.with_job(JobItem::new(format!("{test}-job"), i as u64))
            } else {
                item
            }
        })
        .collect()
}

/// Pull until `n` items are held (or a pull comes back empty).
async fn pull_n(harness: &Harness, queue: &dyn WorkQueue, n: usize) -> Vec<Delivery> {
    let mut held = Vec::new();
    while held.len() < n {
        let got = queue
            .pull(n - held.len(), harness.slack * 4)
            .await
            .expect("pull");
        if got.is_empty() {
            break;
        }
        held.extend(got);
    }
    held
}

/// The dead-letter listing once it holds `n` items (a backend may forward
/// them with a delay), or `None` when the backend cannot list.
async fn dead_letters_become(
    harness: &Harness,
    queue: &dyn WorkQueue,
    n: usize,
) -> Option<Vec<DeadLetter>> {
    let until = Instant::now() + queue.capabilities().backlog_staleness + harness.slack * 10;
    loop {
        let letters = match queue.list_dead(n + 10).await {
            Err(e) if e.kind() == QueueErrorKind::Unsupported => return None,
            result => result.expect("list_dead"),
        };
        if letters.len() == n || Instant::now() >= until {
            assert_eq!(
                letters.len(),
                n,
                "the dead-letter place lists {} items, wanted {n}: {letters:?}",
                letters.len()
            );
            return Some(letters);
        }
        sleep(harness.slack).await;
    }
}

/// Every clause, as `#[tokio::test]` functions calling `$harness()`.
///
/// `conformance_tests!(harness)` uses `#[tokio::test]`;
/// `conformance_tests!(harness, #[tokio::test(start_paused = true)])` picks the attribute.
#[macro_export]
macro_rules! conformance_tests {
    ($harness:path) => {
        $crate::conformance_tests!($harness, #[::tokio::test]);
    };
    ($harness:path, #[$attr:meta]) => {
        $crate::__conformance_each!(($harness) (#[$attr])
            round_trip redelivery_after_deadline stale_token_cannot_ack
            stale_token_after_requeue_cannot_settle stale_settle_calls_report_lost
            extension_keeps_item_away release_costs_no_attempt nack_zero_returns_at_once
            nack_delay_returns_after_delay dead_letter_after_max_attempts
            a_reader_does_not_change_max_attempts
            dead_letter_moves_item ack_is_final pull_respects_max
            concurrent_pullers_never_share backlog_counts
            oversize_payload_refused full_batch_of_largest_items
            empty_pull_returns_within_wait
            dead_letters_listing_does_not_consume requeue_dead_gives_fresh_items
            requeue_after_native_dead_letter_restores_attributes
            purge_dead_empties_the_dead_place filtered_requeue_moves_only_the_picked
            lease_lapse_at_max_attempts_dead_letters
            a_failed_attempt_is_counted_apart_from_lapses
            delayed_nack_at_max_attempts_dead_letters backlog_counts_a_delayed_item
            dropped_pull_swallows_nothing);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_each {
    (($harness:path) (#[$attr:meta]) $($name:ident)*) => {
        $(
            #[$attr]
            async fn $name() {
                $crate::conformance::$name(&$harness()).await;
            }
        )*
    };
}
