//! Rules 1 and 2 of the delivery contract: an item is never lost (it
//! survives the trip whole, and a dropped pull swallows nothing) and an
//! acked item is never delivered again.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::{Instant, sleep};

use super::{Harness, backlog_becomes, publish, pull_n, pull_one, text};
use crate::job::JobItem;
use crate::{Delivery, Item, WorkQueue};

/// Payload bytes, attributes, jobs and ids survive the trip; a first
/// delivery is attempt 1. An item's job comes back as its job, not among
/// its attributes.
pub async fn round_trip(harness: &Harness) {
    let queue = harness.queue("round_trip", 5).await;
    let payload = b"caf\xc3\xa9 \"quoted\" $(x); \x00\xff".to_vec();
    let message = Item::new(payload.clone())
        .with_attribute("origin", "conformance")
        .with_attribute("n", "1");
    let of_job = Item::new("of a job")
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
    held.sort_by_key(|d| d.item.job.is_some());
    let delivery = held.remove(0);
    assert_eq!(
        &delivery.item.payload[..],
        &payload[..],
        "payload bytes changed"
    );
    let want: BTreeMap<_, _> = [("n", "1"), ("origin", "conformance")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(*delivery.item.attributes, want, "attributes changed");
    assert_eq!(delivery.item.job, None, "an item without a job got one");
    assert_eq!(
        delivery.id, ids[0],
        "delivery id differs from the published id"
    );
    assert_eq!(delivery.attempt, 1, "a first delivery is attempt 1");
    assert!(delivery.deadline > before, "the deadline is in the future");
    let job_delivery = held.remove(0);
    assert_eq!(
        job_delivery.item.payload, of_job.payload,
        "payload bytes changed"
    );
    assert_eq!(job_delivery.item.job, of_job.job, "an item's job changed");
    assert_eq!(
        job_delivery.item.attributes, of_job.attributes,
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

/// Pull until every item of `want` was delivered (those in `held` count),
/// for up to two leases and slack, then ack them all.
async fn delivered_all(
    test: &str,
    harness: &Harness,
    queue: &dyn WorkQueue,
    want: &[&str],
    mut held: Vec<Delivery>,
) {
    // A lease for the dropped pull, and one more for these pulls: to a
    // server that cannot call back a receive, a pull that ends by its own
    // deadline is a dropped pull too, and what it is handed at that
    // instant is gone for a lease (Pub/Sub's pulls end by the client's
    // clock: tonic enforces the deadline it sends). Waiting longer per pull
    // is no cure: the emulator wakes no waiting pull for a lease that ran
    // out, only for new items.
    let until = Instant::now() + harness.lease * 2 + harness.slack * 4;
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
        "{test}: a dropped pull swallowed {missing:?}: not delivered again within two leases ({:?} each) and slack",
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
/// they come back after the lease. The clause waits two leases and slack
/// (one for the dropped call, one for its own pulls, which end by their
/// deadline the same way), and nothing longer.
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
