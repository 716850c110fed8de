//! Rule 4 of the delivery contract: the attempt count rises on each
//! delivery, and after `max_attempts` the queue itself buries the item, once,
//! whichever way its last attempt ended; a client that only reads changes
//! nothing of that rule.

use std::time::Duration;

use tokio::time::sleep;

use super::{
    Harness, backlog_becomes, dead_letters_become, gated, known_counts, marked_items, publish,
    pull_one,
};
use crate::{Delivery, Item, QueueErrorKind, WorkQueue};

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
            match reader.list_dead(10).await {
                Err(e) if e.kind() == QueueErrorKind::Unsupported => {}
                result => assert!(
                    result.expect("list_dead").is_empty(),
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
) -> (Item, Delivery) {
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
    item: &Item,
    wait: Duration,
) {
    assert!(
        pull_one(queue, wait).await.is_none(),
        "{test}: an item was delivered more than max_attempts times"
    );
    if let Some(letters) = dead_letters_become(harness, queue, 1).await {
        assert_eq!(
            &letters[0].item, item,
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

/// A failed attempt ([`WorkQueue::fail_attempt`]) is counted apart from a
/// lapse: the next delivery says how many attempts failed, and the rest of
/// its deliveries lapsed (the holder vanished), which `--max-attempts`
/// does not charge. A hand-back changes neither. The backend's own
/// dead-letter limit still counts every delivery (sized by the runner as
/// `--max-attempts + --max-lapses`).
pub async fn a_failed_attempt_is_counted_apart_from_lapses(harness: &Harness) {
    const TEST: &str = "a_failed_attempt_is_counted_apart_from_lapses";
    let queue = harness.queue("failures", 10).await;
    publish(&*queue, &["flaky"]).await;
    let first = pull_one(&*queue, harness.slack * 4)
        .await
        .expect("first delivery");
    if first.failures.is_none() {
        return gated(TEST, "the backend does not count failures apart");
    }
    assert_eq!((first.attempt, first.failures), (1, Some(0)), "{TEST}");
    queue
        .fail_attempt(std::slice::from_ref(&first.token), Duration::ZERO)
        .await
        .expect("fail_attempt");
    let second = pull_one(&*queue, harness.slack * 4)
        .await
        .unwrap_or_else(|| panic!("{TEST}: a failed attempt with no delay did not come back"));
    assert_eq!(
        (second.attempt, second.failures, second.lapses()),
        (2, Some(1), Some(0)),
        "{TEST}: after one failure"
    );
    // Its holder vanishes: the lease lapses.
    let third = pull_one(&*queue, harness.lease + harness.slack * 4)
        .await
        .unwrap_or_else(|| panic!("{TEST}: a lapsed item did not come back"));
    assert_ne!(third.token, second.token, "a token names one delivery");
    assert_eq!(
        (third.attempt, third.failures, third.lapses()),
        (3, Some(1), Some(1)),
        "{TEST}: a lapse was charged as a failure, or not counted as a delivery"
    );
    queue
        .release(std::slice::from_ref(&third.token))
        .await
        .expect("release");
    let fourth = pull_one(&*queue, harness.slack * 4)
        .await
        .unwrap_or_else(|| panic!("{TEST}: a handed-back item did not come back"));
    assert_eq!(
        (fourth.attempt, fourth.failures),
        (3, Some(1)),
        "{TEST}: a hand-back changed the counts"
    );
    // A failure with a delay, where the backend can delay one.
    let delay = if queue.capabilities().delayed_fail {
        harness.lease
    } else {
        Duration::ZERO
    };
    queue
        .fail_attempt(std::slice::from_ref(&fourth.token), delay)
        .await
        .expect("fail_attempt");
    if !delay.is_zero() {
        assert!(
            pull_one(&*queue, delay / 2).await.is_none(),
            "{TEST}: a delayed failed attempt came back before its delay"
        );
    }
    let fifth = pull_one(&*queue, delay + harness.slack * 4)
        .await
        .unwrap_or_else(|| panic!("{TEST}: the failed item did not come back"));
    assert_eq!(
        (fifth.attempt, fifth.failures, fifth.lapses()),
        (4, Some(2), Some(1)),
        "{TEST}: after two failures and a lapse"
    );
    queue.ack(&[fifth.token]).await.expect("ack");
    backlog_becomes(TEST, harness, &*queue, 0, 0, 0).await;
}
