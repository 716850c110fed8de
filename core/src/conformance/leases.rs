//! Rule 3 of the delivery contract, and handing an item back: an unacked
//! item comes back after its deadline, an extension keeps it away, `nack(0)`
//! brings it back at once and `nack(d)` after about `d`; a release costs no
//! attempt.

use std::time::Duration;

use tokio::time::{Instant, sleep};

use super::{Harness, backlog_becomes, gated, publish, pull_one, text};

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

/// Extending the deadline keeps the item away; once extensions stop, it returns.
pub async fn extension_keeps_item_away(harness: &Harness) {
    let queue = harness.queue("extension", 5).await;
    publish(&*queue, &["a"]).await;
    let held = pull_one(&*queue, harness.slack * 4).await.expect("item");
    for _ in 0..4 {
        // Renew each half lease: the item is held for two full leases.
        let report = queue
            .extend_lease(std::slice::from_ref(&held.token), harness.lease)
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
