//! Making and deleting a queue's topics and subscriptions (`runner queue
//! create`, `runner queue delete`).

use forloop_core::kit::whole_seconds;
use forloop_core::{QueueConfig, QueueError};
use gcloud_gax::grpc::Status;
use gcloud_googleapis::pubsub::v1::DeadLetterPolicy;
use gcloud_pubsub::subscription::SubscriptionConfig;

use crate::client::connect_all;
use crate::error::error;
use crate::ledger::create_siblings;
use crate::{PubsubAddress, PubsubQueue};

impl PubsubQueue {
    /// Create the queue's topics and subscriptions where missing, and the
    /// job ledger's siblings (`NAME-ledger`, `NAME-results`, each a topic
    /// and a subscription with no dead-letter policy). The
    /// subscription's ack deadline is `config.lease` (10 to 600 s) and its
    /// dead-letter policy forwards after `config.max_attempts` deliveries
    /// (clamped to Pub/Sub's 5 to 100). On GCP, the Pub/Sub service agent
    /// needs publisher rights on `NAME-dead` and subscriber rights on
    /// `NAME-workers` for forwarding to work.
    pub async fn create(address: &PubsubAddress, config: &QueueConfig) -> Result<(), QueueError> {
        let (client, _) = connect_all(address).await?;
        let fail = |what: &str, status: Status| error(what, address, status);
        for topic in [address.topic(), address.dead_topic()] {
            let handle = client.topic(&topic);
            if !handle
                .exists(None)
                .await
                .map_err(|s| fail("topic lookup", s))?
            {
                client
                    .create_topic(&topic, None, None)
                    .await
                    .map_err(|s| fail("topic creation", s))?;
            }
        }
        let dead_topic = client.topic(&address.dead_topic());
        let subscriptions = [
            (
                address.subscription(),
                address.topic(),
                SubscriptionConfig {
                    ack_deadline_seconds: whole_seconds(config.lease).clamp(10, 600),
                    dead_letter_policy: Some(DeadLetterPolicy {
                        dead_letter_topic: dead_topic.fully_qualified_name().to_string(),
                        max_delivery_attempts: i32::try_from(config.max_attempts)
                            .unwrap_or(100)
                            .clamp(5, 100),
                    }),
                    ..SubscriptionConfig::default()
                },
            ),
            (
                address.dead_subscription(),
                address.dead_topic(),
                SubscriptionConfig {
                    ack_deadline_seconds: 60,
                    ..SubscriptionConfig::default()
                },
            ),
        ];
        for (name, topic, sub_config) in subscriptions {
            let handle = client.subscription(&name);
            if !handle
                .exists(None)
                .await
                .map_err(|s| fail("subscription lookup", s))?
            {
                client
                    .create_subscription(&name, &topic, sub_config, None)
                    .await
                    .map_err(|s| fail("subscription creation", s))?;
            }
        }
        create_siblings(&client, address).await
    }

    /// Delete the queue's subscriptions and topics, the ledger's siblings
    /// too (items included).
    pub async fn delete(address: &PubsubAddress) -> Result<(), QueueError> {
        let (client, _) = connect_all(address).await?;
        let [books, results] = address.ledger_siblings();
        for name in [
            address.subscription(),
            address.dead_subscription(),
            books.subscription(),
            results.subscription(),
        ] {
            let handle = client.subscription(&name);
            if handle
                .exists(None)
                .await
                .map_err(|s| error("lookup", address, s))?
            {
                handle
                    .delete(None)
                    .await
                    .map_err(|s| error("subscription deletion", address, s))?;
            }
        }
        for name in [
            address.topic(),
            address.dead_topic(),
            books.topic(),
            results.topic(),
        ] {
            let handle = client.topic(&name);
            if handle
                .exists(None)
                .await
                .map_err(|s| error("lookup", address, s))?
            {
                handle
                    .delete(None)
                    .await
                    .map_err(|s| error("topic deletion", address, s))?;
            }
        }
        Ok(())
    }
}
