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

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::{Instant, sleep, sleep_until};

use crate::job::JobItem;
use crate::{
    Backlog, Count, DeadLetter, Delivery, Message, QueueConfig, QueueErrorKind, WorkQueue,
};

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
        Fut: Future<Output = Arc<dyn WorkQueue>> + Send + 'static,
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

/// Payload bytes, attributes, jobs and ids survive the trip; a first
/// delivery is attempt 1. An item's job comes back as its job, not among
/// its attributes.
pub async fn round_trip(harness: &Harness) {
    let queue = harness.queue("round_trip", 5).await;
    let payload = b"caf\xc3\xa9 \"quoted\" $(x); \x00\xff".to_vec();
    let message = Message::new(payload.clone())
        .with_attribute("origin", "conformance")
        .with_attribute("n", "1");
    let of_job = Message::new("of a job")
        .with_attribute("origin", "conformance")
        .with_job(JobItem::new("round-trip", 7));
    let ids = queue
        .publish(vec![message, of_job.clone()])
        .await
        .expect("publish");
    assert_eq!(ids.len(), 2, "publish returns one id per item");
    let before = Instant::now();
    let mut held = pull_n(harness, &*queue, 2).await;
    assert_eq!(held.len(), 2, "the published items were not delivered");
    // The item without a job first.
    held.sort_by_key(|d| d.job.is_some());
    let delivery = held.remove(0);
    assert_eq!(&delivery.payload[..], &payload[..], "payload bytes changed");
    let want: BTreeMap<_, _> = [("n", "1"), ("origin", "conformance")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(*delivery.attributes, want, "attributes changed");
    assert_eq!(delivery.job, None, "an item without a job got one");
    assert_eq!(
        delivery.id, ids[0],
        "delivery id differs from the published id"
    );
    assert_eq!(delivery.attempt, 1, "a first delivery is attempt 1");
    assert!(delivery.deadline > before, "the deadline is in the future");
    let job_delivery = held.remove(0);
    assert_eq!(
        job_delivery.payload, of_job.payload,
        "payload bytes changed"
    );
    assert_eq!(job_delivery.job, of_job.job, "an item's job changed");
    assert_eq!(
        *job_delivery.attributes, of_job.attributes,
        "an item's attributes changed, or show its job"
    );
    assert_eq!(
        job_delivery.id, ids[1],
        "delivery id differs from the published id"
    );
    assert_eq!(job_delivery.attempt, 1, "a first delivery is attempt 1");
    queue
        .ack(&[delivery.token, job_delivery.token])
        .await
        .expect("ack");
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

/// A token names one delivery, forever: after `dead_letter` and
/// `requeue_dead`, the first delivery's token settles nothing of the item's
/// new delivery (which is attempt 1 again), and nack, extend and
/// dead-letter say it is lost.
pub async fn stale_token_after_requeue_cannot_settle(harness: &Harness) {
    if let Some(why) = harness.stale_tokens_may_settle {
        return gated("stale_token_after_requeue_cannot_settle", why);
    }
    let queue = harness.queue("stale-requeue", 5).await;
    publish(&*queue, &["a"]).await;
    let first = pull_one(&*queue, harness.slack * 4).await.expect("item");
    let report = queue
        .dead_letter(std::slice::from_ref(&first.token), "conformance")
        .await
        .expect("dead_letter");
    assert!(report.lost.is_empty(), "a held lease was lost: {report:?}");
    match queue.requeue_dead().await {
        Err(e) if e.kind() == QueueErrorKind::Unsupported => {
            return gated("stale_token_after_requeue_cannot_settle", "no requeue");
        }
        result => {
            let _ = result.expect("requeue_dead");
        }
    }
    let mut again = None;
    let until = Instant::now() + queue.capabilities().backlog_staleness + harness.slack * 10;
    while again.is_none() && Instant::now() < until {
        again = pull_one(&*queue, harness.slack * 4).await;
    }
    let again = again.expect("the requeued item was not delivered");
    assert_eq!(again.attempt, 1, "a requeued item starts at attempt 1");
    assert_ne!(
        again.token, first.token,
        "a requeued item's delivery has the token of its first delivery"
    );
    let stale = std::slice::from_ref(&first.token);
    // An ack cannot always tell (SQS and Pub/Sub answer success for a stale
    // receipt and delete nothing): what counts for it is that the new
    // delivery stays held, checked below.
    let _ = queue.ack(stale).await.expect("stale ack");
    let reports = [
        (
            "extend_deadline",
            queue
                .extend_deadline(stale, harness.lease)
                .await
                .expect("stale extend"),
        ),
        (
            "nack",
            queue.nack(stale, Duration::ZERO).await.expect("stale nack"),
        ),
        (
            "dead_letter",
            queue
                .dead_letter(stale, "conformance: stale")
                .await
                .expect("stale dead_letter"),
        ),
    ];
    for (call, report) in reports {
        if let Some(why) = harness.stale_calls_unreported {
            gated(
                "stale_token_after_requeue_cannot_settle (the `lost` report)",
                why,
            );
            break;
        }
        assert_eq!(
            report.lost,
            std::slice::from_ref(&first.token),
            "a stale {call} after requeue was not reported lost"
        );
    }
    let report = queue
        .extend_deadline(std::slice::from_ref(&again.token), harness.lease)
        .await
        .expect("extend");
    assert!(
        report.lost.is_empty(),
        "a stale token settled the requeued item's new delivery: {report:?}"
    );
    queue.ack(&[again.token]).await.expect("ack");
    backlog_becomes(
        "stale_token_after_requeue_cannot_settle",
        harness,
        &*queue,
        0,
        0,
        0,
    )
    .await;
}

/// After a lease lapsed and the item went to another holder, the old
/// token's nack, extend and dead_letter report the lease lost and leave
/// the new holder's delivery alone.
pub async fn stale_settle_calls_report_lost(harness: &Harness) {
    if let Some(why) = harness.stale_tokens_may_settle {
        return gated("stale_settle_calls_report_lost", why);
    }
    let queue = harness.queue("stale-lost", 5).await;
    publish(&*queue, &["a"]).await;
    let first = pull_one(&*queue, harness.slack * 4).await.expect("item");
    sleep(harness.lease + harness.slack).await;
    let again = pull_one(&*queue, harness.slack * 4)
        .await
        .expect("redelivery");
    let stale = std::slice::from_ref(&first.token);
    let reports = [
        (
            "nack",
            queue.nack(stale, Duration::ZERO).await.expect("stale nack"),
        ),
        (
            "extend_deadline",
            queue
                .extend_deadline(stale, harness.lease)
                .await
                .expect("stale extend"),
        ),
        (
            "dead_letter",
            queue
                .dead_letter(stale, "conformance: stale")
                .await
                .expect("stale dead_letter"),
        ),
    ];
    for (call, report) in reports {
        if let Some(why) = harness.stale_calls_unreported {
            gated("stale_settle_calls_report_lost (the `lost` report)", why);
            break;
        }
        assert_eq!(
            report.lost,
            std::slice::from_ref(&first.token),
            "a {call} with a lapsed lease's token was not reported lost"
        );
    }
    assert!(
        pull_one(&*queue, harness.slack).await.is_none(),
        "a stale nack gave the new holder's item to another worker"
    );
    let report = queue
        .ack(std::slice::from_ref(&again.token))
        .await
        .expect("ack");
    assert!(
        report.lost.is_empty(),
        "a stale call ended the new holder's lease: {report:?}"
    );
    backlog_becomes("stale_settle_calls_report_lost", harness, &*queue, 0, 0, 0).await;
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

/// Handing an item back (`release`: a shutdown, a preemption) makes it
/// deliverable at once and is no failed attempt: the next delivery has the
/// same attempt number and a new token, more times than `max_attempts`.
pub async fn release_costs_no_attempt(harness: &Harness) {
    let queue = harness.queue("release", 2).await;
    publish(&*queue, &["a"]).await;
    let mut last: Option<crate::LeaseToken> = None;
    for round in 1..=3 {
        let held = pull_one(&*queue, harness.slack * 4)
            .await
            .unwrap_or_else(|| {
                panic!(
                    "round {round}: a handed-back item was not delivered again at once \
                     (or it was buried as if its hand-backs had failed)"
                )
            });
        assert_eq!(
            held.attempt, 1,
            "round {round}: a hand-back was charged as an attempt"
        );
        if let Some(previous) = &last {
            assert_ne!(&held.token, previous, "a token names one delivery");
        }
        let report = queue
            .release(std::slice::from_ref(&held.token))
            .await
            .expect("release");
        assert!(report.lost.is_empty(), "a held lease was lost: {report:?}");
        last = Some(held.token);
    }
    let held = pull_one(&*queue, harness.slack * 4)
        .await
        .expect("the item after its hand-backs");
    queue.ack(&[held.token]).await.expect("ack");
    backlog_becomes("release_costs_no_attempt", harness, &*queue, 0, 0, 0).await;
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
    backlog_becomes("dead_letter_after_max_attempts", harness, &*queue, 0, 0, 1).await;
}

/// `max_attempts` is the queue's rule, kept by the clients that work it: a
/// client that only reads (`runner status`, `runner wait`) with a smaller
/// `max_attempts` of its own buries nothing. Workers open the queue with 3;
/// a reader with 1 reads the backlog and the dead letters after each lapsed
/// lease; the item is still delivered 3 times, then dead.
pub async fn a_reader_does_not_change_max_attempts(harness: &Harness) {
    const ATTEMPTS: u32 = 5;
    let name = Harness::fresh_name("reader-rule");
    // 5: the least every backend accepts (Pub/Sub clamps to 5..=100).
    let worker = harness.open(&name, ATTEMPTS).await;
    let reader = harness.open(&name, 1).await;
    if !worker.capabilities().native_dead_letter {
        return gated(
            "a_reader_does_not_change_max_attempts",
            "no native dead-letter: the workers count attempts, readers cannot",
        );
    }
    publish(&*worker, &["a"]).await;
    for attempt in 1..=ATTEMPTS {
        let held = pull_one(&*worker, harness.lease + harness.slack * 4)
            .await
            .unwrap_or_else(|| {
                panic!(
                    "attempt {attempt} of {ATTEMPTS} was not delivered: a reader with max_attempts 1 \
                     changed the queue"
                )
            });
        assert_eq!(held.attempt, attempt, "attempt count");
        if attempt < ATTEMPTS {
            // Let the lease lapse, then read as `runner status` would.
            sleep(harness.lease + harness.slack).await;
            reader.backlog().await.expect("backlog");
            match reader.dead_letters(10).await {
                Err(e) if e.kind() == QueueErrorKind::Unsupported => {}
                result => assert!(
                    result.expect("dead_letters").is_empty(),
                    "a reader's look buried the item after {attempt} deliveries"
                ),
            }
        } else {
            worker
                .nack(&[held.token], Duration::ZERO)
                .await
                .expect("nack");
        }
    }
    assert!(
        pull_one(&*worker, harness.slack * 2).await.is_none(),
        "an item was delivered more than max_attempts times"
    );
    backlog_becomes(
        "a_reader_does_not_change_max_attempts",
        harness,
        &*worker,
        0,
        0,
        1,
    )
    .await;
}

/// Publish one marked item and fail it (`nack(0)`) up to its last attempt;
/// returns the item and its last delivery, still held.
async fn to_last_attempt(
    harness: &Harness,
    queue: &dyn WorkQueue,
    test: &str,
    max_attempts: u32,
) -> (Message, Delivery) {
    let item = marked_items(test, 1).remove(0);
    queue.publish(vec![item.clone()]).await.expect("publish");
    let mut attempt = 1;
    loop {
        let held = pull_one(queue, harness.slack * 4)
            .await
            .unwrap_or_else(|| panic!("{test}: attempt {attempt} was not delivered"));
        assert_eq!(held.attempt, attempt, "{test}: attempt count");
        if attempt == max_attempts {
            return (item, held);
        }
        queue
            .nack(&[held.token], Duration::ZERO)
            .await
            .expect("nack");
        attempt += 1;
    }
}

/// The item, past its last attempt, is dead, once and whole: a pull of up
/// to `wait` finds nothing (that look is what makes some backends move it:
/// SQS's redrive, Redis's reaping), the listing shows the item and the
/// backlog counts it dead.
async fn ends_dead(
    test: &str,
    harness: &Harness,
    queue: &dyn WorkQueue,
    item: &Message,
    wait: Duration,
) {
    assert!(
        pull_one(queue, wait).await.is_none(),
        "{test}: an item was delivered more than max_attempts times"
    );
    if let Some(letters) = dead_letters_become(harness, queue, 1).await {
        assert_eq!(
            &letters[0].message, item,
            "{test}: the dead item is not the one that failed"
        );
    }
    backlog_becomes(test, harness, queue, 0, 0, 1).await;
}

/// An item whose last attempt's lease lapses (its holder died: no ack, no
/// nack) goes to the dead-letter place: not delivered again, not lost. One
/// more pull after the lapse is allowed to be what moves it.
pub async fn lease_lapse_at_max_attempts_dead_letters(harness: &Harness) {
    const TEST: &str = "lease_lapse_at_max_attempts_dead_letters";
    // 5: the least Pub/Sub's dead-letter policy accepts.
    let queue = harness.queue("lapse-dead", 5).await;
    if !queue.capabilities().native_dead_letter {
        return gated(TEST, "no native dead-letter: a dead holder buries nothing");
    }
    let (item, _dead_holder) = to_last_attempt(harness, &*queue, TEST, 5).await;
    sleep(harness.lease + harness.slack).await;
    ends_dead(TEST, harness, &*queue, &item, harness.slack * 4).await;
}

/// `nack(d)` on the last attempt ends in the dead-letter place, at once or
/// once `d` has passed: the contract allows either, since the worker never
/// nacks a last attempt (it dead-letters it), so this is the queue's own
/// rule for a client that does. Until then the item is counted somewhere
/// (ready, in flight or dead), and it is never delivered again.
pub async fn delayed_nack_at_max_attempts_dead_letters(harness: &Harness) {
    const TEST: &str = "delayed_nack_at_max_attempts_dead_letters";
    let queue = harness.queue("nack-dead", 5).await;
    let caps = queue.capabilities();
    if !caps.native_dead_letter || !caps.delayed_nack {
        return gated(TEST, "no native dead-letter or no delayed nack");
    }
    let (item, last) = to_last_attempt(harness, &*queue, TEST, 5).await;
    let delay = harness.lease;
    queue.nack(&[last.token], delay).await.expect("nack");
    let backlog = queue.backlog().await.expect("backlog");
    if let [Some(ready), Some(in_flight), Some(dead)] = known_counts(TEST, &*queue, &backlog) {
        assert_eq!(
            ready + in_flight + dead,
            1,
            "{TEST}: {backlog:?} right after the nack: the item must be counted once"
        );
    }
    ends_dead(TEST, harness, &*queue, &item, delay + harness.slack * 4).await;
}

/// While a `nack(d)` runs, the item still counts (ready or in flight):
/// every backlog read before it is due shows it, so a drain check never sees
/// an empty queue while an item waits out its backoff.
pub async fn backlog_counts_a_delayed_item(harness: &Harness) {
    const TEST: &str = "backlog_counts_a_delayed_item";
    let queue = harness.queue("backlog-delayed", 5).await;
    let caps = queue.capabilities();
    if !caps.delayed_nack {
        return gated(TEST, "no delayed nack");
    }
    // Longer than the staleness window, so readings taken after the nack
    // show it, and long enough for a few of them.
    let delay = harness.lease + caps.backlog_staleness;
    publish(&*queue, &["a"]).await;
    let held = pull_one(&*queue, harness.slack * 4).await.expect("item");
    let nacked = Instant::now();
    let due = nacked + delay;
    queue.nack(&[held.token], delay).await.expect("nack");
    // Read at each quarter of the delay, as a drain check might.
    let mut readings = 0;
    for quarter in 0..4 {
        sleep_until(nacked + delay * quarter / 4).await;
        if Instant::now() + harness.slack >= due {
            break;
        }
        let backlog = queue.backlog().await.expect("backlog");
        assert_ne!(
            backlog.is_empty(),
            Some(true),
            "{TEST}: the backlog read empty ({backlog:?}) while a nacked item waited out its delay"
        );
        let [ready, in_flight, dead] = known_counts(TEST, &*queue, &backlog);
        if let (Some(ready), Some(in_flight)) = (ready, in_flight) {
            assert_eq!(
                ready + in_flight,
                1,
                "{TEST}: {backlog:?} while a nacked item waited out its delay"
            );
        }
        assert!(
            dead.is_none_or(|n| n == 0),
            "{TEST}: {backlog:?}: nothing died"
        );
        readings += 1;
    }
    assert!(readings > 0, "{TEST}: the delay left no time to read");
    // One pull from before the item is due, waiting past it.
    let wait = (due + harness.slack * 2).saturating_duration_since(Instant::now());
    let again = pull_one(&*queue, wait).await.unwrap_or_else(|| {
        panic!("{TEST}: a pull of {wait:?} came back without the item due within it")
    });
    queue.ack(&[again.token]).await.expect("ack");
    backlog_becomes(TEST, harness, &*queue, 0, 0, 0).await;
}

/// Pull until every item of `want` was delivered (those in `held` count),
/// for up to a lease and slack, then ack them all.
async fn delivered_all(
    test: &str,
    harness: &Harness,
    queue: &dyn WorkQueue,
    want: &[&str],
    mut held: Vec<Delivery>,
) {
    let until = Instant::now() + harness.lease + harness.slack * 4;
    let missing = |held: &[Delivery]| -> Vec<String> {
        want.iter()
            .filter(|item| !held.iter().any(|d| text(d) == **item))
            .map(|item| item.to_string())
            .collect()
    };
    while !missing(&held).is_empty() && Instant::now() < until {
        held.extend(
            queue
                .pull(want.len(), harness.slack * 2)
                .await
                .expect("pull"),
        );
    }
    let missing = missing(&held);
    assert!(
        missing.is_empty(),
        "{test}: a dropped pull swallowed {missing:?}: not delivered again within a lease ({:?}) and slack",
        harness.lease
    );
    let tokens: Vec<_> = held.into_iter().map(|d| d.token).collect();
    queue.ack(&tokens).await.expect("ack");
}

/// A pull dropped before it returns (a worker stopping mid-poll, a
/// `select!` that took another branch) swallows nothing: items published
/// while it waited, and items that were waiting when it started, are all
/// delivered to later pulls. A backend that cannot call back a receive
/// already on the server may have leased them to the dropped call: then
/// they come back after the lease, which the clause waits for (a lease and
/// slack), and nothing longer.
pub async fn dropped_pull_swallows_nothing(harness: &Harness) {
    const TEST: &str = "dropped_pull_swallows_nothing";
    let queue = harness.queue("dropped-pull", 5).await;
    let long = harness.lease * 4;
    // A long poll waiting on an empty queue when items arrive, dropped as
    // soon as their publish returns.
    let mut waiting = queue.pull(10, long);
    let held = match tokio::time::timeout(harness.slack, &mut waiting).await {
        Ok(got) => got.expect("pull"),
        Err(_) => Vec::new(),
    };
    let around = ["around-0", "around-1"];
    publish(&*queue, &around).await;
    drop(waiting);
    delivered_all(TEST, harness, &*queue, &around, held).await;
    // Items waiting, and a pull dropped at its first wait.
    let before = ["before-0", "before-1"];
    publish(&*queue, &before).await;
    let held = match tokio::time::timeout(Duration::ZERO, queue.pull(10, long)).await {
        Ok(got) => got.expect("pull"),
        Err(_) => Vec::new(),
    };
    delivered_all(TEST, harness, &*queue, &before, held).await;
    backlog_becomes(TEST, harness, &*queue, 0, 0, 0).await;
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
    backlog_becomes("dead_letter_moves_item", harness, &*queue, 0, 0, 1).await;
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
    backlog_becomes("ack_is_final", harness, &*queue, 0, 0, 0).await;
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
    backlog_becomes(
        "pull_respects_max",
        harness,
        &*queue,
        10 - tokens.len() as u64,
        0,
        0,
    )
    .await;
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
    backlog_becomes("concurrent_pullers_never_share", harness, &*queue, 0, 0, 0).await;
}

/// The backlog counts ready, in-flight and dead items (exactly, where
/// `exact_backlog` is advertised).
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
    backlog_becomes("backlog_counts", harness, &*queue, 3, 1, 1).await;
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

/// The most bytes [`full_batch_of_largest_items`] sends; a backend whose
/// `max_batch × max_payload` is larger is gated (and says so).
pub const FULL_BATCH_BYTES: usize = 256 * 1024 * 1024;

/// A batch of `max_batch` items of `max_payload` bytes each is published
/// whole, and every item comes back intact: the two limits hold together,
/// not only one at a time.
pub async fn full_batch_of_largest_items(harness: &Harness) {
    let queue = harness.queue("full-batch", 5).await;
    let caps = queue.capabilities();
    let total = caps.max_batch.saturating_mul(caps.max_payload);
    if total > FULL_BATCH_BYTES {
        return gated(
            "full_batch_of_largest_items",
            &format!(
                "max_batch {} x max_payload {} is {total} bytes, over the {FULL_BATCH_BYTES} \
                 bytes the suite sends; this backend's pair of limits is unchecked",
                caps.max_batch, caps.max_payload
            ),
        );
    }
    let batch: Vec<Message> = (0..caps.max_batch)
        .map(|i| {
            let mut payload = vec![b'x'; caps.max_payload];
            let tag = i.to_string();
            payload[..tag.len()].copy_from_slice(tag.as_bytes());
            Message::new(payload)
        })
        .collect();
    let ids = queue
        .publish(batch)
        .await
        .expect("a batch of max_batch items of max_payload bytes each was refused");
    assert_eq!(ids.len(), caps.max_batch, "one id per item");
    let held = pull_n(harness, &*queue, caps.max_batch).await;
    assert_eq!(held.len(), caps.max_batch, "not every item was delivered");
    assert!(
        held.iter().all(|d| d.payload.len() == caps.max_payload),
        "an item of max_payload bytes changed size"
    );
    let tokens: Vec<_> = held.into_iter().map(|d| d.token).collect();
    for chunk in tokens.chunks(caps.max_batch.max(1)) {
        queue.ack(chunk).await.expect("ack");
    }
    backlog_becomes("full_batch_of_largest_items", harness, &*queue, 0, 0, 0).await;
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

/// Items with attributes of their own, for the dead-letter clauses; the
/// even ones are items of a job (with no manifest), which a dead letter,
/// its listing and a requeue must keep.
fn marked_items(test: &str, n: usize) -> Vec<Message> {
    (0..n)
        .map(|i| {
            let item = Message::new(format!("{test}-{i}"))
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

/// Lease every published item and dead-letter it with `reason`.
async fn kill_all(harness: &Harness, queue: &dyn WorkQueue, n: usize, reason: &str) {
    let held = pull_n(harness, queue, n).await;
    assert_eq!(held.len(), n, "published items were not delivered");
    let tokens: Vec<_> = held.into_iter().map(|d| d.token).collect();
    let report = queue
        .dead_letter(&tokens, reason)
        .await
        .expect("dead_letter");
    assert!(
        report.lost.is_empty(),
        "held leases reported lost: {report:?}"
    );
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
        let letters = match queue.dead_letters(n + 10).await {
            Err(e) if e.kind() == QueueErrorKind::Unsupported => return None,
            result => result.expect("dead_letters"),
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

/// Dead letters in a stable order, for comparing two listings.
fn sorted(mut letters: Vec<DeadLetter>) -> Vec<DeadLetter> {
    letters.sort_by(|a, b| a.message.payload.cmp(&b.message.payload));
    letters
}

/// Listing the dead-letter place consumes nothing: two listings show the
/// same items, each with its id, reason, attempts and its own attributes
/// (the driver's dead-letter stamps taken off).
pub async fn dead_letters_listing_does_not_consume(harness: &Harness) {
    let queue = harness.queue("dead-list", 5).await;
    let items = marked_items("dead-list", 2);
    let ids = queue.publish(items.clone()).await.expect("publish");
    kill_all(harness, &*queue, 2, "conformance: exit code 3").await;
    let Some(first) = dead_letters_become(harness, &*queue, 2).await else {
        return gated(
            "dead_letters_listing_does_not_consume",
            "no dead-letter listing",
        );
    };
    let second = dead_letters_become(harness, &*queue, 2)
        .await
        .expect("list");
    let (first, second) = (sorted(first), sorted(second));
    assert_eq!(first, second, "a second listing differs from the first");
    for (letter, (item, id)) in first.iter().zip(items.iter().zip(&ids)) {
        assert_eq!(
            &letter.message, item,
            "a dead item's payload or attributes changed"
        );
        assert_eq!(&letter.id, id, "a dead item lost its id");
        assert_eq!(letter.reason, "conformance: exit code 3");
        assert_eq!(letter.attempts, 1, "dead after one delivery");
    }
    backlog_becomes(
        "dead_letters_listing_does_not_consume",
        harness,
        &*queue,
        0,
        0,
        2,
    )
    .await;
}

/// `requeue_dead` puts every dead item back once, as new work: attempt 1
/// on its next delivery, no duplicates, and exactly the attributes it had
/// before it died.
pub async fn requeue_dead_gives_fresh_items(harness: &Harness) {
    let queue = harness.queue("dead-requeue", 5).await;
    let items = marked_items("dead-requeue", 3);
    queue.publish(items.clone()).await.expect("publish");
    // A second delivery first, so that a kept attempt count would show.
    let held = pull_n(harness, &*queue, 3).await;
    let tokens: Vec<_> = held.into_iter().map(|d| d.token).collect();
    queue.nack(&tokens, Duration::ZERO).await.expect("nack");
    kill_all(harness, &*queue, 3, "conformance: requeue me").await;
    if dead_letters_become(harness, &*queue, 3).await.is_none() {
        return gated("requeue_dead_gives_fresh_items", "no dead-letter listing");
    }
    assert_eq!(queue.requeue_dead().await.expect("requeue_dead"), 3);
    let mut back = pull_n(harness, &*queue, 4).await;
    back.sort_by(|a, b| a.payload.cmp(&b.payload));
    assert_eq!(back.len(), 3, "requeue did not bring back each item once");
    for (delivery, item) in back.iter().zip(&items) {
        assert_eq!(delivery.payload, item.payload, "a requeued item changed");
        assert_eq!(
            *delivery.attributes, item.attributes,
            "a requeued item must have exactly the attributes it had before it died"
        );
        assert_eq!(delivery.job, item.job, "a requeued item lost its job");
        assert_eq!(delivery.attempt, 1, "a requeued item starts at attempt 1");
    }
    let tokens: Vec<_> = back.into_iter().map(|d| d.token).collect();
    queue.ack(&tokens).await.expect("ack");
    dead_letters_become(harness, &*queue, 0).await;
    sleep(harness.lease + harness.slack).await;
    assert!(
        pull_one(&*queue, harness.slack).await.is_none(),
        "a requeued item was delivered twice"
    );
    backlog_becomes("requeue_dead_gives_fresh_items", harness, &*queue, 0, 0, 0).await;
}

/// An item the queue itself dead-letters (after `max_attempts`) is
/// requeued with exactly the attributes it was published with: whatever the
/// backend added on the way is taken off.
pub async fn requeue_after_native_dead_letter_restores_attributes(harness: &Harness) {
    let queue = harness.queue("dead-native", 5).await;
    if !queue.capabilities().native_dead_letter {
        return gated(
            "requeue_after_native_dead_letter_restores_attributes",
            "no native dead-letter",
        );
    }
    let items = marked_items("dead-native", 1);
    queue.publish(items.clone()).await.expect("publish");
    for attempt in 1..=5 {
        let held = pull_one(&*queue, harness.slack * 4)
            .await
            .unwrap_or_else(|| panic!("attempt {attempt} was not delivered"));
        queue
            .nack(&[held.token], Duration::ZERO)
            .await
            .expect("nack");
    }
    // The look for a sixth delivery is what makes some backends (SQS) move it.
    assert!(
        pull_one(&*queue, harness.slack * 2).await.is_none(),
        "an item was delivered more than max_attempts times"
    );
    let Some(letters) = dead_letters_become(harness, &*queue, 1).await else {
        return gated(
            "requeue_after_native_dead_letter_restores_attributes",
            "no dead-letter listing",
        );
    };
    assert_eq!(
        letters[0].message, items[0],
        "the listing shows the backend's own stamps"
    );
    assert_eq!(queue.requeue_dead().await.expect("requeue_dead"), 1);
    let back = pull_one(&*queue, harness.slack * 4)
        .await
        .expect("the requeued item");
    assert_eq!(
        *back.attributes, items[0].attributes,
        "attributes after requeue"
    );
    assert_eq!(back.job, items[0].job, "the job after requeue");
    assert_eq!(back.attempt, 1, "a requeued item starts at attempt 1");
    queue.ack(&[back.token]).await.expect("ack");
}

/// `purge_dead` deletes every dead item: the listing is empty, nothing
/// comes back, and the dead count is 0.
pub async fn purge_dead_empties_the_dead_place(harness: &Harness) {
    let queue = harness.queue("dead-purge", 5).await;
    queue
        .publish(marked_items("dead-purge", 2))
        .await
        .expect("publish");
    kill_all(harness, &*queue, 2, "conformance: purge me").await;
    if dead_letters_become(harness, &*queue, 2).await.is_none() {
        return gated(
            "purge_dead_empties_the_dead_place",
            "no dead-letter listing",
        );
    }
    assert_eq!(queue.purge_dead().await.expect("purge_dead"), 2);
    dead_letters_become(harness, &*queue, 0).await;
    assert_eq!(
        queue.purge_dead().await.expect("purge_dead"),
        0,
        "purge twice"
    );
    assert!(
        pull_one(&*queue, harness.slack).await.is_none(),
        "a purged item was delivered"
    );
    backlog_becomes(
        "purge_dead_empties_the_dead_place",
        harness,
        &*queue,
        0,
        0,
        0,
    )
    .await;
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
            purge_dead_empties_the_dead_place
            lease_lapse_at_max_attempts_dead_letters
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
