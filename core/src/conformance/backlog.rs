//! Rule 6 of the delivery contract, what drain reads: the backlog counts
//! ready, in-flight and dead items, and a nacked item still counts while it
//! waits out its delay.

use tokio::time::{Instant, sleep_until};

use super::{Harness, backlog_becomes, gated, known_counts, publish, pull_one};

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
