//! The driver's limits, as `publish` keeps them: an item over
//! `max_payload` refuses the whole batch and names the item, and a full
//! batch of the largest items goes through whole.

use super::{Harness, backlog_becomes, gated, pull_n, pull_one};
use crate::{Item, QueueErrorKind};

/// An oversize item refuses the whole batch, names the item, publishes nothing.
pub async fn oversize_payload_refused(harness: &Harness) {
    let queue = harness.queue("oversize", 5).await;
    let max = queue.capabilities().max_payload;
    let batch = vec![
        Item::new("small"),
        Item::new(vec![b'x'; max + 1]),
        Item::new("small too"),
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
    let exact = Item::new(vec![b'y'; max]);
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
    let batch: Vec<Item> = (0..caps.max_batch)
        .map(|i| {
            let mut payload = vec![b'x'; caps.max_payload];
            let tag = i.to_string();
            payload[..tag.len()].copy_from_slice(tag.as_bytes());
            Item::new(payload)
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
        held.iter()
            .all(|d| d.item.payload.len() == caps.max_payload),
        "an item of max_payload bytes changed size"
    );
    let tokens: Vec<_> = held.into_iter().map(|d| d.token).collect();
    for chunk in tokens.chunks(caps.max_batch.max(1)) {
        queue.ack(chunk).await.expect("ack");
    }
    backlog_becomes("full_batch_of_largest_items", harness, &*queue, 0, 0, 0).await;
}
