//! A lease token names one delivery, forever: once its lease is lost (the
//! deadline passed, the item was requeued), the old token settles nothing of
//! the item's new delivery and the calls report it lost.

use std::time::Duration;

use tokio::time::{Instant, sleep};

use super::{Harness, backlog_becomes, gated, publish, pull_one};
use crate::QueueErrorKind;

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
            "extend_lease",
            queue
                .extend_lease(stale, harness.lease)
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
        .extend_lease(std::slice::from_ref(&again.token), harness.lease)
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
            "extend_lease",
            queue
                .extend_lease(stale, harness.lease)
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
