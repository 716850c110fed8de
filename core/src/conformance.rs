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

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::{Instant, sleep};

use crate::{Count, Delivery, Message, QueueConfig, QueueErrorKind, WorkQueue};

type Open =
    dyn Fn(QueueConfig) -> Pin<Box<dyn Future<Output = Arc<dyn WorkQueue>> + Send>> + Send + Sync;

/// How the suite reaches a driver: a factory for fresh queues and the timing
/// the backend can keep.
#[derive(Clone)]
pub struct Harness {
    open: Arc<Open>,
    lease: Duration,
    slack: Duration,
    stale_tokens_may_settle: Option<&'static str>,
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
        Fut: Future<Output = Arc<dyn WorkQueue>> + Send + 'static,
    {
        Self {
            open: Arc::new(move |config| Box::pin(open(config))),
            lease: Duration::from_secs(2),
            slack: Duration::from_millis(500),
            stale_tokens_may_settle: None,
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

    /// Mark a documented backend duplicate: a token from an earlier delivery
    /// may still settle the item.
    pub fn stale_tokens_may_settle(mut self, why: &'static str) -> Self {
        self.stale_tokens_may_settle = Some(why);
        self
    }

    /// A fresh queue for one test.
    pub async fn queue(&self, test: &str, max_attempts: u32) -> Arc<dyn WorkQueue> {
        let name = format!(
            "conf-{test}-{}-{}",
            std::process::id(),
            NEXT_QUEUE.fetch_add(1, Ordering::Relaxed)
        )
        .replace('_', "-");
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
        .map(|item| Message::new(item.to_string()))
        .collect();
    queue.publish(batch).await.expect("publish")
}

async fn pull_one(queue: &dyn WorkQueue, wait: Duration) -> Option<Delivery> {
    let mut got = queue.pull(1, wait).await.expect("pull");
    assert!(got.len() <= 1, "pull(1) returned {} items", got.len());
    got.pop()
}

fn text(delivery: &Delivery) -> String {
    String::from_utf8_lossy(&delivery.payload).into_owned()
}

/// Reads the backlog until it matches, for up to the staleness window.
async fn backlog_becomes(
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
        let matches = |count: Count, want: u64| count.value().is_none_or(|n| n == want);
        if matches(backlog.ready, ready)
            && matches(backlog.in_flight, in_flight)
            && matches(backlog.dead, dead)
        {
            return;
        }
        assert!(
            Instant::now() < until,
            "backlog {backlog:?} did not become ready={ready} in_flight={in_flight} dead={dead} within the staleness window"
        );
        sleep(Duration::from_millis(250).min(staleness.max(Duration::from_millis(10)))).await;
    }
}

/// Payload bytes, attributes and ids survive the trip; a first delivery is attempt 1.
pub async fn round_trip(harness: &Harness) {
    let queue = harness.queue("round_trip", 5).await;
    let payload = b"caf\xc3\xa9 \"quoted\" $(x); \x00\xff".to_vec();
    let message = Message::new(payload.clone())
        .with_attribute("origin", "conformance")
        .with_attribute("n", "1");
    let ids = queue.publish(vec![message]).await.expect("publish");
    assert_eq!(ids.len(), 1, "publish returns one id per item");
    let before = Instant::now();
    let delivery = pull_one(&*queue, harness.slack * 4)
        .await
        .expect("the published item");
    assert_eq!(&delivery.payload[..], &payload[..], "payload bytes changed");
    let want: BTreeMap<_, _> = [("n", "1"), ("origin", "conformance")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(delivery.attributes, want, "attributes changed");
    assert_eq!(
        delivery.id, ids[0],
        "delivery id differs from the published id"
    );
    assert_eq!(delivery.attempt, 1, "a first delivery is attempt 1");
    assert!(delivery.deadline > before, "the deadline is in the future");
    queue.ack(&[delivery.token]).await.expect("ack");
}

/// An unacked item comes back after its deadline, as a new attempt.
pub async fn redelivery_after_deadline(harness: &Harness) {
    let queue = harness.queue("redelivery", 5).await;
    publish(&*queue, &["a"]).await;
    let first = pull_one(&*queue, harness.slack * 4).await.expect("item");
    assert!(
        pull_one(&*queue, harness.lease / 2).await.is_none(),
        "a leased item was delivered again before its deadline"
    );
    sleep(harness.lease).await;
    let again = pull_one(&*queue, harness.lease + harness.slack * 2)
        .await
        .expect("the unacked item did not come back after its deadline");
    assert_eq!(text(&again), "a");
    assert_eq!(again.attempt, first.attempt + 1, "attempt did not rise");
    assert_ne!(
        again.token, first.token,
        "a redelivery must have a new lease token"
    );
    queue.ack(&[again.token]).await.expect("ack");
}

/// A token whose lease was lost cannot ack the item for its new holder.
pub async fn stale_token_cannot_ack(harness: &Harness) {
    if let Some(why) = harness.stale_tokens_may_settle {
        return gated("stale_token_cannot_ack", why);
    }
    let queue = harness.queue("stale-token", 5).await;
    publish(&*queue, &["a"]).await;
    let first = pull_one(&*queue, harness.slack * 4).await.expect("item");
    sleep(harness.lease + harness.slack).await;
    let again = pull_one(&*queue, harness.slack * 4)
        .await
        .expect("redelivery");
    let report = queue
        .ack(std::slice::from_ref(&first.token))
        .await
        .expect("stale ack");
    let _ = report; // Drivers may or may not know; what counts is the item.
    queue
        .nack(&[again.token], Duration::ZERO)
        .await
        .expect("nack");
    let third = pull_one(&*queue, harness.slack * 4)
        .await
        .expect("an ack with a lost lease's token removed the item");
    assert_eq!(third.attempt, 3);
    queue.ack(&[third.token]).await.expect("ack");
}

/// Extending the deadline keeps the item away; once extensions stop, it returns.
pub async fn extension_keeps_item_away(harness: &Harness) {
    let queue = harness.queue("extension", 5).await;
    publish(&*queue, &["a"]).await;
    let held = pull_one(&*queue, harness.slack * 4).await.expect("item");
    for _ in 0..4 {
        // Renew each half lease: the item is held for two full leases.
        let report = queue
            .extend_deadline(std::slice::from_ref(&held.token), harness.lease)
            .await
            .expect("extend");
        assert!(
            report.lost.is_empty(),
            "a held lease was reported lost: {report:?}"
        );
        assert!(
            pull_one(&*queue, harness.lease / 2).await.is_none(),
            "an extended item was delivered again"
        );
    }
    let again = pull_one(&*queue, harness.lease + harness.slack * 2)
        .await
        .expect("the item did not come back once extensions stopped");
    assert_eq!(again.attempt, 2);
    queue.ack(&[again.token]).await.expect("ack");
}

/// `nack(0)` makes the item deliverable at once.
pub async fn nack_zero_returns_at_once(harness: &Harness) {
    let queue = harness.queue("nack-zero", 5).await;
    publish(&*queue, &["a"]).await;
    let held = pull_one(&*queue, harness.slack * 4).await.expect("item");
    queue
        .nack(&[held.token], Duration::ZERO)
        .await
        .expect("nack");
    let again = pull_one(&*queue, harness.slack * 2)
        .await
        .expect("a nack(0) item did not come back at once");
    assert_eq!(again.attempt, 2);
    queue.ack(&[again.token]).await.expect("ack");
}

/// `nack(d)` brings the item back after about `d`, not before.
pub async fn nack_delay_returns_after_delay(harness: &Harness) {
    let queue = harness.queue("nack-delay", 5).await;
    if !queue.capabilities().delayed_nack {
        return gated("nack_delay_returns_after_delay", "no delayed nack");
    }
    let delay = harness.lease;
    publish(&*queue, &["a"]).await;
    let held = pull_one(&*queue, harness.slack * 4).await.expect("item");
    let nacked_at = Instant::now();
    queue.nack(&[held.token], delay).await.expect("nack");
    assert!(
        pull_one(&*queue, delay.saturating_sub(harness.slack))
            .await
            .is_none(),
        "a nack({delay:?}) item came back early"
    );
    let again = pull_one(&*queue, delay + harness.slack * 2)
        .await
        .expect("the delayed item did not come back");
    let waited = nacked_at.elapsed();
    assert!(
        waited + harness.slack >= delay,
        "came back after {waited:?}, wanted about {delay:?}"
    );
    queue.ack(&[again.token]).await.expect("ack");
}

/// Attempts rise on every delivery; after `max_attempts` the queue itself
/// dead-letters the item and counts it.
pub async fn dead_letter_after_max_attempts(harness: &Harness) {
    // 5: the least Pub/Sub's dead-letter policy accepts.
    let queue = harness.queue("max-attempts", 5).await;
    if !queue.capabilities().native_dead_letter {
        return gated(
            "dead_letter_after_max_attempts",
            "no native dead-letter; the worker dead-letters explicitly",
        );
    }
    publish(&*queue, &["poison"]).await;
    for attempt in 1..=5 {
        let held = pull_one(&*queue, harness.slack * 4)
            .await
            .unwrap_or_else(|| panic!("attempt {attempt} was not delivered"));
        assert_eq!(held.attempt, attempt, "attempt count");
        queue
            .nack(&[held.token], Duration::ZERO)
            .await
            .expect("nack");
    }
    assert!(
        pull_one(&*queue, harness.slack * 2).await.is_none(),
        "an item was delivered more than max_attempts times"
    );
    backlog_becomes(harness, &*queue, 0, 0, 1).await;
}

/// `dead_letter` moves a held item to the dead-letter place at once.
pub async fn dead_letter_moves_item(harness: &Harness) {
    let queue = harness.queue("dead-letter", 5).await;
    publish(&*queue, &["bad", "good"]).await;
    let mut held = queue.pull(2, harness.slack * 4).await.expect("pull");
    if held.len() < 2 {
        held.extend(pull_one(&*queue, harness.slack * 4).await);
    }
    assert_eq!(held.len(), 2, "both items");
    let (bad, good): (Vec<_>, Vec<_>) = held.into_iter().partition(|d| text(d) == "bad");
    queue
        .dead_letter(&[bad[0].token.clone()], "conformance: exit code 1")
        .await
        .expect("dead_letter");
    queue.ack(&[good[0].token.clone()]).await.expect("ack");
    sleep(harness.lease + harness.slack).await;
    assert!(
        pull_one(&*queue, harness.slack).await.is_none(),
        "a dead-lettered item was delivered again"
    );
    backlog_becomes(harness, &*queue, 0, 0, 1).await;
}

/// An acked item never comes back, and acking twice is harmless.
pub async fn ack_is_final(harness: &Harness) {
    let queue = harness.queue("ack-final", 5).await;
    publish(&*queue, &["done", "undone"]).await;
    let mut held = Vec::new();
    while held.len() < 2 {
        let got = queue
            .pull(2 - held.len(), harness.slack * 4)
            .await
            .expect("pull");
        assert!(!got.is_empty(), "published items were not delivered");
        held.extend(got);
    }
    let done = held
        .iter()
        .find(|d| text(d) == "done")
        .expect("done")
        .clone();
    let undone = held
        .iter()
        .find(|d| text(d) == "undone")
        .expect("undone")
        .clone();
    queue
        .ack(std::slice::from_ref(&done.token))
        .await
        .expect("ack");
    queue
        .ack(std::slice::from_ref(&done.token))
        .await
        .expect("a second ack must not fail");
    // Let every lease lapse: only the unacked item may come back.
    sleep(harness.lease + harness.slack).await;
    let mut seen = Vec::new();
    while let Some(delivery) = pull_one(&*queue, harness.slack * 2).await {
        seen.push(text(&delivery));
        queue.ack(&[delivery.token]).await.expect("ack");
    }
    assert_eq!(
        seen,
        ["undone"],
        "acked items came back (or the unacked one did not)"
    );
    let _ = undone;
    backlog_becomes(harness, &*queue, 0, 0, 0).await;
}

/// A pull returns at most `max` items: nothing is held beyond free slots.
pub async fn pull_respects_max(harness: &Harness) {
    let queue = harness.queue("pull-max", 5).await;
    let items: Vec<String> = (0..10).map(|i| format!("item-{i}")).collect();
    let refs: Vec<&str> = items.iter().map(String::as_str).collect();
    publish(&*queue, &refs).await;
    let got = queue.pull(3, harness.slack * 4).await.expect("pull");
    assert!(
        !got.is_empty() && got.len() <= 3,
        "pull(3) returned {} items",
        got.len()
    );
    let tokens: Vec<_> = got.into_iter().map(|d| d.token).collect();
    queue.ack(&tokens).await.expect("ack");
    backlog_becomes(harness, &*queue, 10 - tokens.len() as u64, 0, 0).await;
}

/// Eight concurrent pullers never get the same item while its lease holds.
pub async fn concurrent_pullers_never_share(harness: &Harness) {
    let queue = harness.queue("concurrent", 5).await;
    let total = 200usize;
    let items: Vec<String> = (0..total).map(|i| format!("item-{i}")).collect();
    for chunk in items.chunks(queue.capabilities().max_batch.max(1)) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        publish(&*queue, &refs).await;
    }
    let started = Instant::now();
    let mut pullers = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let queue = Arc::clone(&queue);
        let wait = harness.slack * 2;
        pullers.spawn(async move {
            let mut held = Vec::new();
            loop {
                let got = queue.pull(7, wait).await.expect("pull");
                if got.is_empty() {
                    return held;
                }
                held.extend(got);
            }
        });
    }
    let mut seen = HashSet::new();
    let mut tokens = Vec::new();
    while let Some(held) = pullers.join_next().await {
        for delivery in held.expect("puller") {
            assert!(
                seen.insert(text(&delivery)),
                "two pullers held {} at once",
                text(&delivery)
            );
            tokens.push(delivery.token);
        }
    }
    assert!(
        started.elapsed() < harness.lease,
        "the pull loop outlived the lease ({:?}); use a longer harness lease for this backend",
        started.elapsed()
    );
    assert_eq!(seen.len(), total, "not every item was delivered");
    for chunk in tokens.chunks(queue.capabilities().max_batch.max(1)) {
        queue.ack(chunk).await.expect("ack");
    }
    backlog_becomes(harness, &*queue, 0, 0, 0).await;
}

/// The backlog counts ready, in-flight and dead items.
pub async fn backlog_counts(harness: &Harness) {
    let queue = harness.queue("backlog", 5).await;
    publish(&*queue, &["a", "b", "c", "d", "e"]).await;
    let mut held = Vec::new();
    while held.len() < 2 {
        held.extend(
            queue
                .pull(2 - held.len(), harness.slack * 4)
                .await
                .expect("pull"),
        );
    }
    queue
        .dead_letter(&[held[0].token.clone()], "conformance")
        .await
        .expect("dead_letter");
    backlog_becomes(harness, &*queue, 3, 1, 1).await;
    let backlog = queue.backlog().await.expect("backlog");
    if queue.capabilities().exact_backlog {
        assert!(
            backlog.is_exact(),
            "exact_backlog is advertised but {backlog:?} is not exact"
        );
    }
    queue.ack(&[held[1].token.clone()]).await.expect("ack");
}

/// An oversize item refuses the whole batch, names the item, publishes nothing.
pub async fn oversize_payload_refused(harness: &Harness) {
    let queue = harness.queue("oversize", 5).await;
    let max = queue.capabilities().max_payload;
    let batch = vec![
        Message::new("small"),
        Message::new(vec![b'x'; max + 1]),
        Message::new("small too"),
    ];
    let error = queue
        .publish(batch)
        .await
        .expect_err("an oversize item was accepted");
    assert_eq!(error.kind(), QueueErrorKind::PayloadTooLarge, "{error}");
    assert_eq!(
        error.item_index(),
        Some(1),
        "the error must name the item: {error}"
    );
    assert!(
        error.to_string().contains("item 1"),
        "message must name the item: {error}"
    );
    assert!(
        pull_one(&*queue, harness.slack).await.is_none(),
        "part of a refused batch was published"
    );
    let exact = Message::new(vec![b'y'; max]);
    queue
        .publish(vec![exact])
        .await
        .expect("an item of exactly max_payload bytes is allowed");
}

/// An empty pull returns empty, within about its wait.
pub async fn empty_pull_returns_within_wait(harness: &Harness) {
    let queue = harness.queue("empty-pull", 5).await;
    let wait = harness.slack * 2;
    let started = Instant::now();
    let got = queue.pull(10, wait).await.expect("pull");
    let took = started.elapsed();
    assert!(
        got.is_empty(),
        "an empty queue delivered {} items",
        got.len()
    );
    assert!(
        took <= wait + harness.slack * 2,
        "an empty pull with wait {wait:?} took {took:?}"
    );
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
            extension_keeps_item_away nack_zero_returns_at_once
            nack_delay_returns_after_delay dead_letter_after_max_attempts
            dead_letter_moves_item ack_is_final pull_respects_max
            concurrent_pullers_never_share backlog_counts
            oversize_payload_refused empty_pull_returns_within_wait);
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
