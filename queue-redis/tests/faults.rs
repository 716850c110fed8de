//! Faults a conformance clause cannot stage: lost keys, many tokens at once,
//! large dead lists, deleting a queue. Each test owns its redis-server.

use std::time::Duration;

use forloop_core::{Message, QueueConfig, WorkQueue};
use forloop_queue_redis::RedisQueue;
use forloop_testkit::servers::RedisServer;

async fn queue(server: &RedisServer, name: &str, max_attempts: u32) -> RedisQueue {
    let config = QueueConfig::new(name)
        .with_lease(Duration::from_secs(30))
        .with_max_attempts(max_attempts);
    RedisQueue::connect(server.url(), config)
        .await
        .expect("connect to redis")
}

/// Issue 11 item 1: a server that lost its keys hands out the same ids
/// again; a token from before the loss must not settle the new delivery.
#[tokio::test]
async fn a_token_from_before_a_key_loss_cannot_settle_a_new_item() {
    let server = RedisServer::local(false);
    let queue = queue(&server, "key-loss", 5).await;
    queue.publish(vec![Message::new("old")]).await.unwrap();
    let old = queue
        .pull(1, Duration::from_secs(1))
        .await
        .unwrap()
        .remove(0);

    server.flushall();
    queue.publish(vec![Message::new("new")]).await.unwrap();
    let new = queue
        .pull(1, Duration::from_secs(1))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(&new.payload[..], b"new");

    for report in [
        queue.ack(std::slice::from_ref(&old.token)).await.unwrap(),
        queue
            .nack(std::slice::from_ref(&old.token), Duration::ZERO)
            .await
            .unwrap(),
        queue
            .extend_deadline(std::slice::from_ref(&old.token), Duration::from_secs(1))
            .await
            .unwrap(),
        queue
            .dead_letter(std::slice::from_ref(&old.token), "stale")
            .await
            .unwrap(),
    ] {
        assert_eq!(
            report.lost,
            std::slice::from_ref(&old.token),
            "a token from before the key loss settled the new item"
        );
    }
    let report = queue.ack(std::slice::from_ref(&new.token)).await.unwrap();
    assert!(
        report.lost.is_empty(),
        "the new holder lost its lease: {report:?}"
    );
}
