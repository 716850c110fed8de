//! `queue create` keeps unacked messages as long as Pub/Sub allows (issue
//! 21 item 8): 31 days on GCP on every subscription it makes, the queue's,
//! the dead place's and the ledger siblings', not the 7-day default that
//! lost the items of a long job. The emulator refuses more than 7 days
//! ("message_retention_duration out of bounds"): there the driver falls
//! back to 7, read back here.

use std::time::Duration;

use forloop_core::QueueConfig;
use forloop_queue_pubsub::{PubsubAddress, PubsubQueue};
use forloop_testkit::servers::PubsubEmulator;
use gcloud_gax::conn::Environment;
use gcloud_pubsub::client::{Client, ClientConfig};

#[tokio::test]
async fn queue_create_sets_the_longest_retention_on_every_subscription() {
    let name = format!("retention-{}", std::process::id());
    let address = PubsubAddress::resolve(Some(&format!("pubsub://retention/{name}")), "")
        .expect("address")
        .with_emulator(PubsubEmulator::shared().host());
    PubsubQueue::create(&address, &QueueConfig::new("x"))
        .await
        .expect("create the queue");
    let client = Client::new(ClientConfig {
        project_id: Some(address.project.clone()),
        environment: Environment::Emulator(PubsubEmulator::shared().host().to_string()),
        ..ClientConfig::default()
    })
    .await
    .unwrap();
    for subscription in [
        format!("{name}-workers"),
        format!("{name}-dead-keep"),
        format!("{name}-ledger-workers"),
        format!("{name}-results-workers"),
    ] {
        let (_, config) = client
            .subscription(&subscription)
            .config(None)
            .await
            .unwrap_or_else(|e| panic!("{subscription}: {e}"));
        assert_eq!(
            config.message_retention_duration,
            Some(Duration::from_secs(7 * 24 * 3600)),
            "{subscription}: the emulator's longest"
        );
    }
}
