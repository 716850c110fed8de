//! The dead-letter place: `dead_letter` moves a held item there at once;
//! listing it consumes nothing; `requeue_dead` gives fresh items with the
//! attributes they had, and `requeue_dead_where` only the items it picks;
//! `purge_dead` empties it.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, sleep};

use super::{
    Harness, backlog_becomes, dead_letters_become, gated, marked_items, publish, pull_n, pull_one,
    text,
};
use crate::job::{JobItem, Manifest, Receipt, SeqSet};
use crate::{DeadLetter, Delivery, Item, WorkQueue};

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

/// Dead letters in a stable order, for comparing two listings.
fn sorted(mut letters: Vec<DeadLetter>) -> Vec<DeadLetter> {
    letters.sort_by(|a, b| a.item.payload.cmp(&b.item.payload));
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
            &letter.item, item,
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

/// An item's job and seq, whatever its life: a
/// requeue may start the item's next life ([`crate::queue::JobItem::life`]),
/// never an earlier one.
fn place_in_job(item: &Item) -> Option<(&str, u64)> {
    item.job.as_ref().map(|job| (&*job.job, job.seq))
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
    back.sort_by(|a, b| a.item.payload.cmp(&b.item.payload));
    assert_eq!(back.len(), 3, "requeue did not bring back each item once");
    for (delivery, item) in back.iter().zip(&items) {
        assert_eq!(
            delivery.item.payload, item.payload,
            "a requeued item changed"
        );
        assert_eq!(
            delivery.item.attributes, item.attributes,
            "a requeued item must have exactly the attributes it had before it died"
        );
        assert_eq!(
            place_in_job(&delivery.item),
            place_in_job(item),
            "a requeued item lost its job"
        );
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
        letters[0].item, items[0],
        "the listing shows the backend's own stamps"
    );
    assert_eq!(queue.requeue_dead().await.expect("requeue_dead"), 1);
    let back = pull_one(&*queue, harness.slack * 4)
        .await
        .expect("the requeued item");
    assert_eq!(
        back.item.attributes, items[0].attributes,
        "attributes after requeue"
    );
    assert_eq!(
        place_in_job(&back.item),
        place_in_job(&items[0]),
        "the job after requeue"
    );
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

/// A requeue that picks ([`WorkQueue::requeue_dead_where`]; through the
/// backend's ledger where it has one, as `runner dead requeue` does) moves
/// exactly the dead items picked, each back once, at attempt 1, with the
/// attributes it had; every other dead item stays dead and unchanged. An
/// item of a job counts once in it: un-counted as it moves, counted
/// again at its next death.
pub async fn filtered_requeue_moves_only_the_picked(harness: &Harness) {
    const TEST: &str = "filtered_requeue_moves_only_the_picked";
    let backend = harness.backend("dead-where", 5).await;
    let (queue, ledger) = (Arc::clone(&backend.queue), backend.ledger.clone());
    let job = "dead-where-job";
    // Four items of a job (when the backend keeps jobs) and two of none.
    let items: Vec<Item> = (0..6u64)
        .map(|n| {
            let item = Item::new(format!("dead-where-{n}")).with_attribute("n", n.to_string());
            match &ledger {
                Some(_) if n < 4 => item.with_job(JobItem::new(job, n)),
                _ => item,
            }
        })
        .collect();
    if let Some(ledger) = &ledger {
        let manifest = Manifest::new(job, 4, "d").keeping_receipts();
        ledger.begin(&manifest).await.expect("begin");
    }
    queue.publish(items.clone()).await.expect("publish");
    if let Some(ledger) = &ledger {
        ledger
            .submitted(job, &SeqSet::first(4))
            .await
            .expect("submitted");
    }
    // Even items die with exit code 137, odd ones with 1.
    let code = |item: &Item| {
        let n: u64 = item.attributes["n"].parse().expect("n");
        if n.is_multiple_of(2) { 137 } else { 1 }
    };
    let bury = async |held: Vec<Delivery>| {
        for delivery in held {
            let reason = format!("conformance: exit code {}", code(&delivery.item));
            let token = std::slice::from_ref(&delivery.token);
            let report = match (&ledger, &delivery.item.job) {
                (Some(ledger), Some(item)) => {
                    let mut receipt =
                        Receipt::lapsed(item, &delivery.item.payload, delivery.attempt, &reason);
                    receipt.exit_code = Some(code(&delivery.item));
                    receipt.worker = "conformance".into();
                    ledger
                        .record_then_dead_letter(&*queue, token, &reason, &[Some(receipt)])
                        .await
                }
                _ => queue.dead_letter(token, &reason).await,
            };
            assert!(
                report.expect("dead_letter").lost.is_empty(),
                "a held lease was lost"
            );
        }
    };
    let held = pull_n(harness, &*queue, 6).await;
    assert_eq!(held.len(), 6, "published items were not delivered");
    bury(held).await;
    let Some(before) = dead_letters_become(harness, &*queue, 6).await else {
        return gated(TEST, "no dead-letter listing");
    };
    let dead_in_job = async || match &ledger {
        Some(ledger) => {
            let jobs = ledger.jobs().await.expect("jobs");
            let status = jobs
                .iter()
                .find(|j| j.manifest.job == job)
                .expect("the job");
            Some(status.dead)
        }
        None => None,
    };
    if ledger.is_some() {
        assert_eq!(dead_in_job().await, Some(4), "every item of the job died");
    }
    let picked = |letter: &DeadLetter| letter.reason.ends_with("exit code 137");
    // A ledger that reads the dead place may hold some letters hidden for
    // a moment (SQS, Pub/Sub): a requeue run again moves what it missed.
    let until = Instant::now() + harness.lease * 10 + harness.slack * 20;
    let mut moved = 0;
    while moved < 3 {
        let result = match &ledger {
            Some(ledger) => ledger.requeue_dead_where(&*queue, &picked).await,
            None => queue.requeue_dead_where(&picked, None).await,
        };
        // A backend that lists its dead place can requeue some of it.
        let report = result.expect("requeue_dead_where");
        if moved == 0 && report.moved == 3 {
            assert_eq!(report.left, 3, "the letters left dead: {report:?}");
        }
        assert!(report.left <= 3, "left counts a letter twice: {report:?}");
        moved += report.moved;
        assert!(
            moved <= 3,
            "a requeue moved an item it was not asked to: {moved}"
        );
        assert!(
            moved == 3 || Instant::now() < until,
            "the picked dead items never all moved: {moved} of 3"
        );
    }
    let after = dead_letters_become(harness, &*queue, 3)
        .await
        .expect("list");
    let unpicked: Vec<DeadLetter> = before.iter().filter(|l| !picked(l)).cloned().collect();
    assert_eq!(
        sorted(after),
        sorted(unpicked),
        "the letters not picked must stay dead, unchanged"
    );
    if ledger.is_some() {
        assert_eq!(
            dead_in_job().await,
            Some(2),
            "the requeued items of the job are live, so not dead"
        );
    }
    let mut back = pull_n(harness, &*queue, 4).await;
    back.sort_by(|a, b| a.item.payload.cmp(&b.item.payload));
    let wanted: Vec<&Item> = items.iter().filter(|i| code(i) == 137).collect();
    assert_eq!(
        back.iter().map(|d| &d.item.payload).collect::<Vec<_>>(),
        wanted.iter().map(|i| &i.payload).collect::<Vec<_>>(),
        "exactly the picked items come back, each once"
    );
    for (delivery, item) in back.iter().zip(&wanted) {
        assert_eq!(
            delivery.item.attributes, item.attributes,
            "attributes after requeue"
        );
        assert_eq!(place_in_job(&delivery.item), place_in_job(item), "its job");
        assert_eq!(delivery.attempt, 1, "a requeued item starts at attempt 1");
    }
    // Buried again: each counts once.
    bury(back).await;
    dead_letters_become(harness, &*queue, 6).await;
    if ledger.is_some() {
        assert_eq!(
            dead_in_job().await,
            Some(4),
            "an item that died twice counts once"
        );
    }
    assert!(
        pull_one(&*queue, harness.slack).await.is_none(),
        "an item came back that was not requeued"
    );
}
