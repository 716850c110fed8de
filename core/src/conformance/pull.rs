//! Rule 5 of the delivery contract: no item is held without a lease. A
//! pull returns at most `max` items, never the same item to two pullers,
//! and an empty pull returns within its wait.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::time::Instant;

use super::{Harness, backlog_becomes, publish, text};

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
