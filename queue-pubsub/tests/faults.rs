//! The Pub/Sub driver under the faults of issue 11, on the official
//! emulator: a dead letter needs a live lease, a hand-back costs no attempt,
//! and a subscription without a dead-letter policy is refused.
//!
//! The emulator's shortest ack deadline is 10 s, so the lapse test takes
//! that long.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use forloop_core::{Item, QueueConfig, WorkQueue};
use forloop_queue_pubsub::{PubsubAddress, PubsubQueue};
use forloop_testkit::servers::PubsubEmulator;
use gcloud_gax::conn::Environment;
use gcloud_pubsub::client::{Client, ClientConfig};
use gcloud_pubsub::subscription::SubscriptionConfig;

fn address(what: &str) -> PubsubAddress {
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "faults-{what}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    );
    PubsubAddress::resolve(Some(&format!("pubsub://faults/{name}")), "")
        .expect("address")
        .with_emulator(PubsubEmulator::shared().host())
}

async fn queue_pair(what: &str, config: QueueConfig) -> (PubsubQueue, PubsubQueue) {
    let address = address(what);
    PubsubQueue::create(&address, &config)
        .await
        .expect("create the queue");
    let one = PubsubQueue::connect(address.clone())
        .await
        .expect("connect");
    let two = PubsubQueue::connect(address).await.expect("connect");
    (one, two)
}

#[tokio::test]
async fn a_worker_whose_lease_lapsed_dead_letters_nothing() {
    let config = QueueConfig::new("x").with_lease(Duration::from_secs(10));
    let (stale, live) = queue_pair("lapsed", config).await;
    stale.publish(vec![Item::new("poison")]).await.unwrap();
    let old = stale.pull(1, Duration::from_secs(5)).await.unwrap();
    assert_eq!(old.len(), 1);
    let new = live.pull(1, Duration::from_secs(15)).await.unwrap();
    assert_eq!(new.len(), 1, "the item comes back after its 10 s lease");
    // The emulator (like GCP without exactly-once delivery) answers a
    // modack on this expired ack id with success: only the driver's own
    // record of the deadline can tell, and a late renewal must not revive it.
    let late = stale
        .extend_lease(&[old[0].token.clone()], Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(late.lost, [old[0].token.clone()], "a late renewal is lost");
    let report = stale
        .dead_letter(&[old[0].token.clone()], "exit 1")
        .await
        .unwrap();
    assert_eq!(
        report.lost,
        [old[0].token.clone()],
        "a lapsed lease is reported lost"
    );
    assert!(
        live.list_dead(10).await.unwrap().is_empty(),
        "a worker without the lease copied the item into the dead queue"
    );
    let report = live
        .dead_letter(&[new[0].token.clone()], "exit 1")
        .await
        .unwrap();
    assert!(report.lost.is_empty());
    let dead = live.list_dead(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, new[0].id, "the letter carries the item's id");
}

#[tokio::test]
async fn a_hand_back_costs_no_attempt() {
    let config = QueueConfig::new("x").with_max_attempts(5);
    let (queue, _) = queue_pair("handback", config).await;
    let ids = queue
        .publish(vec![Item::new("item").with_attribute("k", "v")])
        .await
        .unwrap();
    for round in 0..6 {
        let got = queue.pull(1, Duration::from_secs(5)).await.unwrap();
        assert_eq!(got.len(), 1, "round {round}: the item is not back");
        assert_eq!(got[0].attempt, 1, "round {round}: a hand-back was charged");
        assert_eq!(got[0].id, ids[0], "the item keeps its id");
        assert_eq!(
            got[0].item.attributes.len(),
            1,
            "{:?}",
            got[0].item.attributes
        );
        let report = queue.release(&[got[0].token.clone()]).await.unwrap();
        assert!(report.lost.is_empty());
    }
    let got = queue.pull(1, Duration::from_secs(5)).await.unwrap();
    queue
        .nack(&[got[0].token.clone()], Duration::ZERO)
        .await
        .unwrap();
    let got = queue.pull(1, Duration::from_secs(5)).await.unwrap();
    assert_eq!(got[0].attempt, 2, "a nack is charged");
}

#[tokio::test]
async fn a_subscription_without_a_dead_letter_policy_is_refused_with_the_fix() {
    let address = address("no-policy");
    let config = ClientConfig {
        project_id: Some(address.project.clone()),
        environment: Environment::Emulator(PubsubEmulator::shared().host().to_string()),
        ..ClientConfig::default()
    };
    let client = Client::new(config).await.unwrap();
    let topic = client
        .create_topic(&address.name, None, None)
        .await
        .unwrap();
    client
        .create_subscription(
            &format!("{}-workers", address.name),
            topic.fully_qualified_name(),
            SubscriptionConfig::default(),
            None,
        )
        .await
        .unwrap();
    let error = PubsubQueue::connect(address)
        .await
        .expect_err("a subscription that never dead-letters is refused");
    let text = error.to_string();
    assert!(text.contains("dead-letter policy"), "{text}");
    assert!(text.contains("queue create"), "{text}");
    assert!(
        text.contains("gcloud pubsub subscriptions update"),
        "{text}"
    );
}

#[tokio::test]
async fn a_batch_over_ten_megabytes_is_published_in_pieces() {
    let (queue, _) = queue_pair("big-batch", QueueConfig::new("x")).await;
    // 1000 items of 11 KB: 11 MB, past Pub/Sub's 10 MB per request.
    let item = "x".repeat(11 * 1024);
    let batch: Vec<Item> = (0..1000).map(|_| Item::new(item.clone())).collect();
    let ids = queue.publish(batch).await.expect("published in pieces");
    assert_eq!(ids.len(), 1000);
    let mut seen = 0;
    while seen < 1000 {
        let got = queue.pull(1000, Duration::from_secs(5)).await.unwrap();
        assert!(!got.is_empty(), "only {seen} of 1000 came back");
        seen += got.len();
        let tokens: Vec<_> = got.into_iter().map(|d| d.token).collect();
        queue.ack(&tokens).await.unwrap();
    }
}
